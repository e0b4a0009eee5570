"""The webhook pipeline is the one owner of a tool call: a redelivery joins the decision its
first delivery is making, takes the call over when that delivery is abandoned (the receiver
cancels a handler past its timeout, and at shutdown), and is answered from the history once
decided. Driven on a real receiver with its SQLite history and gate; deliveries go through
`pipeline.handle`, as the receiver's route handlers call it, so a delivery can be cancelled."""

from __future__ import annotations

import asyncio
import json

import pytest

from console.core.events import event_json
from console.core.gate import CallHeld, CallSettled, GateEvent, OperatorDecision
from console.core.http_types import Request
from console.core.policy import Policy, ToolRule
from console.store import queries
from tests.helpers.receiver import vapi_headers
from tests.helpers.secrets import PAYLOADS, VAPI_SECRET

PARALLEL = json.loads((PAYLOADS / "vapi" / "tool-calls.parallel.json").read_text())
IDS = [c["id"] for c in PARALLEL["message"]["toolCallList"]]
CALL_ID = PARALLEL["message"]["call"]["id"]
BODY = json.dumps(PARALLEL).encode()


def delivery(service) -> Request:
    headers = tuple((name.lower(), value) for name, value in vapi_headers(service, BODY).items())
    return Request("POST", "/webhook/vapi", headers, BODY)


async def held(service, count: int) -> None:
    async with asyncio.timeout(5):
        while len(service.gate.pending()) < count:
            await asyncio.sleep(0.01)


async def test_a_redelivery_takes_the_call_over_when_the_first_delivery_is_abandoned(start_receiver):
    service, _ = await start_receiver(policy=Policy.default("hold"))
    seen: list[GateEvent] = []
    service.gate.subscribe(seen.append)
    first = asyncio.create_task(service.pipeline.handle("vapi", delivery(service)))
    await held(service, 2)
    retry = asyncio.create_task(service.pipeline.handle("vapi", delivery(service)))
    await asyncio.sleep(0.1)
    assert len(service.gate.pending()) == 2  # joined: no second pending call
    first.cancel()  # as the receiver does with a handler past its timeout
    with pytest.raises(asyncio.CancelledError):
        await first
    await held(service, 2)  # held again, now for the redelivery
    for tool_call_id in IDS:
        assert service.gate.resolve(tool_call_id, OperatorDecision("rejected", reason="Not today."))
    response = await retry
    results = json.loads(response.body)["results"]
    assert [r["toolCallId"] for r in results] == IDS and all("Not today." in r["error"] for r in results)
    # Each call: held, abandoned with the first delivery, held again, decided by the operator.
    kinds = [(type(e).__name__, e.outcome.by if isinstance(e, CallSettled) else "") for e in seen]
    assert kinds.count(("CallHeld", "")) == 4 and kinds.count(("CallSettled", "timeout")) == 2
    assert kinds.count(("CallSettled", "operator")) == 2
    await asyncio.sleep(0.1)  # the group commit
    detail = await queries.get_call(service.store, CALL_ID)
    assert {(t["decision"], t["by"]) for t in detail["tool_calls"]} == {("rejected", "operator")}
    decided = [e for e in detail["events"] if e["kind"] == "tool.decided"]
    assert len(decided) == 2  # recorded once each: the abandoned delivery recorded nothing


async def test_a_decided_call_is_answered_from_the_history_and_never_run_twice(start_receiver, tool_server):
    service, _ = await start_receiver(
        policy=Policy(tools={"default": ToolRule(action="approve")}), forward={"to": tool_server.url}
    )
    first = await service.pipeline.handle("vapi", delivery(service))
    again = await service.pipeline.handle("vapi", delivery(service))
    assert json.loads(again.body) == json.loads(first.body)
    assert len(tool_server.received) == 1
    assert not service.gate.pending()


async def test_the_gate_alone_holds_each_call_once_for_joined_redeliveries(start_receiver):
    """Three deliveries of the same calls at once: one pending call each, one decision, three answers."""
    service, _ = await start_receiver(policy=Policy.default("hold"))
    held_events: list[GateEvent] = []
    service.gate.subscribe(lambda event: held_events.append(event) if isinstance(event, CallHeld) else None)
    deliveries = [asyncio.create_task(service.pipeline.handle("vapi", delivery(service))) for _ in range(3)]
    await held(service, 2)
    await asyncio.sleep(0.1)
    assert len(held_events) == 2
    for tool_call_id in IDS:
        service.gate.resolve(tool_call_id, OperatorDecision("overridden", result='{"ok": true}'))
    answers = [json.loads((await task).body) for task in deliveries]
    assert answers[0] == answers[1] == answers[2]
    assert [json.loads(r["result"]) for r in answers[0]["results"]] == [{"ok": True}, {"ok": True}]


async def test_events_are_masked_once_and_the_history_and_live_consumers_get_the_same(start_receiver):
    """A transcript that repeats the webhook secret, and a raw message carrying the call's live
    URLs: the history and the live consumer get the same masked JSON, and nothing else."""
    service, live = await start_receiver()
    control = "https://phone-call-websocket.example/7f3c-secret-path/control"
    call = {"id": "call-masked", "monitor": {"controlUrl": control, "listenUrl": "wss://x.example/9a-path/listen"}}
    messages = [
        {"type": "transcript", "transcriptType": "final", "role": "user", "transcript": f"my code is {VAPI_SECRET}"},
        # Not modelled: kept raw (without its `call`), here with the live URLs in the message itself.
        {"type": "language-changed", "language": "es", "monitor": call["monitor"]},
    ]
    for message in messages:
        body = json.dumps({"message": {**message, "timestamp": 1771320600000, "call": call}}).encode()
        response = await service.pipeline.handle(
            "vapi", Request("POST", "/webhook/vapi", _headers(service, body), body)
        )
        assert response.status == 200
    await asyncio.sleep(0.1)  # the group commit
    stored = (await queries.get_call(service.store, "call-masked"))["events"]
    shown = [json.loads(event_json(event)) for event in live]
    assert sorted(map(json.dumps, shown)) == sorted(map(json.dumps, stored))
    text = json.dumps(shown)
    assert VAPI_SECRET not in text and "7f3c-secret-path" not in text and "9a-path" not in text
    assert "phone-call-websocket.example" in text  # the host stays: scheme://host/…


def _headers(service, body: bytes) -> tuple[tuple[str, str], ...]:
    return tuple((name.lower(), value) for name, value in vapi_headers(service, body).items())
