"""The gate inside the running receiver, over real sockets: the platform's request
stays open while the operator decides through the control API; deadlines,
duplicates, broken tool servers and `hang` all end in a valid, recorded answer."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx

from console.core.gate import CallStalling
from console.core.http_types import Request, Response
from console.core.policy import Policy, ToolRule
from console.receiver.http import HttpServer, Router
from console.store import queries
from tests.helpers.receiver import vapi_headers
from tests.helpers.secrets import PAYLOADS, RETELL_KEY

PARALLEL = json.loads((PAYLOADS / "vapi" / "tool-calls.parallel.json").read_text())
IDS = [c["id"] for c in PARALLEL["message"]["toolCallList"]]
CALL_ID = PARALLEL["message"]["call"]["id"]


def body_with(**message_overrides) -> bytes:
    data = json.loads(json.dumps(PARALLEL))
    data["message"].update(message_overrides)
    return json.dumps(data).encode()


async def wait_pending(service, count: int) -> list[dict]:
    for _ in range(200):
        pending = [call.to_dict() for call in service.gate.pending()]
        if len(pending) >= count:
            return pending
        await asyncio.sleep(0.02)
    raise AssertionError("the calls never became pending")


async def control(service, client: httpx.AsyncClient, payload: dict) -> httpx.Response:
    return await client.post(
        "/control/decide", json=payload, headers={"authorization": f"Bearer {service.control_token}"}
    )


async def test_edit_and_override_through_the_control_api(start_receiver, tool_server):
    seen = tool_server.received
    service, _ = await start_receiver(policy=Policy.default("hold"), forward={"to": tool_server.url})
    async with httpx.AsyncClient(base_url=service.server.url, timeout=30) as client:
        body = body_with()
        platform = asyncio.create_task(client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body)))
        await wait_pending(service, 2)
        edited = await control(
            service,
            client,
            {"tool_call_id": IDS[0], "decision": "edit", "arguments": {"patient": "Ana Muñoz", "dob": "1990-02-03"}},
        )
        assert edited.status_code == 200
        overridden = await control(
            service, client, {"tool_call_id": IDS[1], "decision": "override", "result": {"slots": ["09:30"]}}
        )
        assert overridden.status_code == 200
        bad = await control(service, client, {"tool_call_id": IDS[1], "decision": "edit"})
        assert bad.status_code == 400
        response = await platform
    results = response.json()["results"]
    assert [r["toolCallId"] for r in results] == IDS
    assert json.loads(results[1]["result"]) == {"slots": ["09:30"]}
    # Only the edited call reached the tool server, with the new arguments.
    assert len(seen) == 1
    sent = json.loads(seen[0].body)["message"]["toolCallList"]
    assert [c["id"] for c in sent] == [IDS[0]]
    args = sent[0]["function"]["arguments"]
    assert (json.loads(args) if isinstance(args, str) else args)["patient"] == "Ana Muñoz"
    detail = await queries.get_call(service.store, CALL_ID)
    decided = {t["tool_call_id"]: (t["decision"], t["by"]) for t in detail["tool_calls"]}
    assert decided == {IDS[0]: ("edited", "operator"), IDS[1]: ("overridden", "operator")}


async def test_no_decision_is_answered_at_the_deadline_and_recorded_as_timeout(start_receiver):
    policy = Policy(tools={"default": ToolRule(action="hold", timeout_seconds=1, on_timeout="reject")})
    service, _ = await start_receiver(policy=policy)
    body = body_with()
    async with httpx.AsyncClient(base_url=service.server.url, timeout=30) as client:
        started = time.monotonic()
        response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
    assert 0.9 < time.monotonic() - started < 5
    assert all(r["error"] == "The operator did not answer in time." for r in response.json()["results"])
    detail = await queries.get_call(service.store, CALL_ID)
    assert {(t["decision"], t["by"]) for t in detail["tool_calls"]} == {("rejected", "timeout")}


async def test_deadline_follows_the_platform_timeout_not_the_policy(start_receiver):
    policy = Policy(tools={"default": ToolRule(action="hold", timeout_seconds=120, on_timeout="reject")})
    service, _ = await start_receiver(policy=policy)
    data = json.loads(body_with())
    for tool in data["message"]["toolWithToolCallList"]:
        tool["server"]["timeoutSeconds"] = 3  # Vapi gives us 3 s
    body = json.dumps(data).encode()
    async with httpx.AsyncClient(base_url=service.server.url, timeout=30) as client:
        started = time.monotonic()
        response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
    assert time.monotonic() - started < 3
    assert response.status_code == 200 and len(response.json()["results"]) == 2


async def test_duplicate_delivery_while_pending_joins_and_the_handler_runs_once(start_receiver, tool_server):
    # The pipeline joins a redelivery to the pending decision; a later one is answered from SQLite.
    seen = tool_server.received
    service, _ = await start_receiver(policy=Policy.default("hold"), forward={"to": tool_server.url})
    body = body_with()
    async with httpx.AsyncClient(base_url=service.server.url, timeout=30) as client:
        first = asyncio.create_task(client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body)))
        await wait_pending(service, 2)
        second = asyncio.create_task(client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body)))
        await asyncio.sleep(0.2)
        assert len(service.gate.pending()) == 2, "the retry joined; no new pending calls"
        for tool_call_id in IDS:
            assert (
                await control(service, client, {"tool_call_id": tool_call_id, "decision": "approve"})
            ).status_code == 200
        one, two = await first, await second
        third = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
    assert one.json() == two.json() == third.json()
    assert len(seen) == 1


async def test_tool_server_with_the_wrong_shape_still_gives_a_valid_reply(start_receiver, tool_server):
    async def wrong(request: Request) -> Response:
        return Response.json(200, {"result": "booked"})  # legacy shape, not {"results": [...]}

    tool_server.answer = wrong
    service, _ = await start_receiver(forward={"to": tool_server.url})
    body = body_with()
    async with httpx.AsyncClient(base_url=service.server.url, timeout=30) as client:
        response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
    results = response.json()["results"]
    assert [r["toolCallId"] for r in results] == IDS
    assert all('"results"' in r["error"] and "\n" not in r["error"] for r in results)
    detail = await queries.get_call(service.store, CALL_ID)
    assert all('"results"' in t["error"] for t in detail["tool_calls"])


async def test_hang_marks_stalling_and_filler_speaks_through_the_control_url(start_receiver):
    said: list[dict] = []

    async def control_url(request: Request) -> Response:
        said.append(json.loads(request.body))
        return Response.json(200, {})

    router = Router()
    router.add("POST", "/call/control", control_url)
    vapi_control = HttpServer(router, port=0)
    await vapi_control.start()
    service, _ = await start_receiver(policy=Policy.default("hold"), gate={"filler_after_seconds": 0.2})
    try:
        events: list = []
        service.gate.subscribe(events.append)
        data = json.loads(body_with())
        data["message"]["call"]["monitor"] = {"controlUrl": f"{vapi_control.url}/call/control"}
        body = json.dumps(data).encode()
        hang = json.dumps(
            {"message": {"type": "hang", "timestamp": int(time.time() * 1000), "call": {"id": CALL_ID}}}
        ).encode()
        async with httpx.AsyncClient(base_url=service.server.url, timeout=30) as client:
            platform = asyncio.create_task(
                client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
            )
            await wait_pending(service, 2)
            assert (
                await client.post("/webhook/vapi", content=hang, headers=vapi_headers(service, hang))
            ).status_code == 200
            assert all(call["stalling"] for call in await wait_pending(service, 2))
            for _ in range(100):
                if said:
                    break
                await asyncio.sleep(0.02)
            for tool_call_id in IDS:
                await control(service, client, {"tool_call_id": tool_call_id, "decision": "reject", "reason": "No."})
            await platform
        assert said and said[0]["type"] == "say" and said[0]["content"]
        assert any(isinstance(event, CallStalling) for event in events)
    finally:
        await vapi_control.close()


def test_bad_policy_file_exits_2_naming_file_and_key(tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[tools.refund]\naction = "sometimes"\n')
    result = subprocess.run(
        [sys.executable, "-m", "console", "serve", "--port", "0", "--policy", str(policy)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert str(policy) in result.stderr and "tools.refund.action" in result.stderr
    assert "Traceback" not in result.stderr


async def test_retell_function_and_legacy_function_call_pass_the_gate(start_receiver, tool_server):
    from console.providers.retell import sign_retell

    async def answer(request: Request) -> Response:
        data = json.loads(request.body)
        if "message" in data:  # Vapi legacy function-call
            return Response.json(200, {"result": {"sent": data["message"]["functionCall"]["name"]}})
        return Response.json(200, {"result": f"ran {data.get('name')} with {json.dumps(data.get('args'))}"})

    tool_server.answer = answer
    seen = tool_server.received
    service, _ = await start_receiver(policy=Policy.default("hold"), forward={"to": tool_server.url})
    retell = (PAYLOADS / "retell" / "function_call.json").read_bytes()
    legacy = (PAYLOADS / "vapi" / "function-call.json").read_bytes()
    async with httpx.AsyncClient(base_url=service.server.url, timeout=30) as client:
        retell_reply = asyncio.create_task(
            client.post(
                "/webhook/retell/function",
                content=retell,
                headers={
                    "content-type": "application/json",
                    "x-retell-signature": sign_retell(retell, RETELL_KEY, int(time.time() * 1000)),
                },
            )
        )
        legacy_reply = asyncio.create_task(
            client.post("/webhook/vapi", content=legacy, headers=vapi_headers(service, legacy))
        )
        pending = await wait_pending(service, 2)
        by_provider = {call["provider"]: call["tool_call_id"] for call in pending}
        assert (
            await control(
                service,
                client,
                {"tool_call_id": by_provider["retell"], "decision": "edit", "arguments": {"edited": True}},
            )
        ).status_code == 200
        assert (
            await control(service, client, {"tool_call_id": by_provider["vapi"], "decision": "approve"})
        ).status_code == 200
        retell_response, legacy_response = await retell_reply, await legacy_reply
    assert retell_response.status_code == 200 and '{"edited": true}' in retell_response.json()["result"]
    assert json.loads(legacy_response.json()["result"]) == {
        "sent": json.loads(legacy)["message"]["functionCall"]["name"]
    }
    assert len(seen) == 2
