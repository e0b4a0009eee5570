"""The tool-call gate, for real: asyncio timing, an operator resolving from another
task, and the user's tool server on loopback behind `ForwardingToolHandler`.

Timeouts are a few hundred milliseconds so the whole file stays fast.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from console.core.forward import ForwardingToolHandler
from console.core.gate import (
    ABANDONED_ERROR,
    DEFAULT_REJECT_REASON,
    FORWARD_TIMEOUT_ERROR,
    NO_FORWARD_RESULT,
    CallHeld,
    CallSettled,
    CallStalling,
    GateEvent,
    OperatorDecision,
    PendingCall,
    ToolGate,
)
from console.core.policy import Policy, ToolRule
from console.core.tools import ToolBatch, ToolCall, ToolCallHandler, ToolOutcome
from tests.helpers.tool_server import ToolServer

CALL_ID = "call-7"


@pytest.fixture
async def forward(tool_server: ToolServer) -> AsyncIterator[ForwardingToolHandler]:
    async with httpx.AsyncClient() as client:
        yield ForwardingToolHandler(tool_server.url, client)


# --- helpers ---------------------------------------------------------------------------------------


def policy(**rules: ToolRule) -> Policy:
    return Policy(tools={"default": ToolRule(action="hold", timeout_seconds=5), **rules})


def call(tool_call_id: str, name: str = "book", **arguments: Any) -> ToolCall:
    return ToolCall(tool_call_id, name, arguments or {"date": "2026-02-17"})


def batch(*calls: ToolCall, timeout_s: float = 4.0, call_id: str | None = CALL_ID) -> ToolBatch:
    # No raw body: the forwarder writes a minimal tool-calls body for exactly these calls.
    return ToolBatch("vapi", "vapi-tool-calls", call_id, calls, timeout_s)


def ran_result(name: str, arguments: dict[str, Any]) -> str:
    return json.dumps({"ran": name, "with": arguments}, separators=(",", ":"), ensure_ascii=False)


class Recorder:
    """The gate's events as (kind, the pending call or the outcome)."""

    def __init__(self, gate: ToolGate) -> None:
        self.events: list[tuple[str, Any]] = []
        self.pending_seen = asyncio.Event()
        self.unsubscribe = gate.subscribe(self)

    def __call__(self, event: GateEvent) -> None:
        match event:
            case CallHeld(call):
                self.events.append(("pending", call))
                self.pending_seen.set()
            case CallStalling(call):
                self.events.append(("stalling", call))
            case CallSettled(outcome):
                self.events.append(("resolved", outcome))

    def kinds(self) -> list[tuple[str, str]]:
        return [(kind, item.tool_call_id) for kind, item in self.events]

    def resolved(self) -> list[ToolOutcome]:
        return [item for kind, item in self.events if kind == "resolved"]


async def until_pending(gate: ToolGate, *ids: str) -> None:
    async with asyncio.timeout(2):
        while {p.tool_call_id for p in gate.pending()} < set(ids):
            await asyncio.sleep(0.005)


async def timed(coro: Any) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result = await coro
    return result, loop.time() - started


# --- rules -------------------------------------------------------------------------------------------


async def test_rule_approve_passes_through_to_the_tool_server(
    tool_server: ToolServer, forward: ForwardingToolHandler
) -> None:
    gate = ToolGate(policy(book=ToolRule(action="approve")), forward=forward)
    (outcome,) = await gate.decide(batch(call("t1")))
    assert (outcome.decision, outcome.by, outcome.error) == ("approved", "rule", None)
    assert outcome.result == ran_result("book", {"date": "2026-02-17"})
    assert outcome.arguments_sent == {"date": "2026-02-17"}
    assert outcome.latency_ms is not None and outcome.latency_ms >= 0
    assert tool_server.ran == ["t1"] and gate.pending() == []


async def test_rule_reject_and_override_never_reach_the_tool_server(
    tool_server: ToolServer, forward: ForwardingToolHandler
) -> None:
    gate = ToolGate(
        policy(
            refund=ToolRule(action="reject", reason="Refunds need a manager."),
            book=ToolRule(action="override", result='{\n  "booked": true\n}'),
        ),
        forward=forward,
    )
    refused, overridden = await gate.decide(batch(call("t1", "refund"), call("t2", "book")))
    assert (refused.decision, refused.by, refused.error) == ("rejected", "rule", "Refunds need a manager.")
    assert (overridden.decision, overridden.by, overridden.error) == ("overridden", "rule", None)
    assert overridden.result == '{"booked":true}'  # stored on one line
    assert refused.result is None and refused.arguments_sent is None and overridden.arguments_sent is None
    assert tool_server.requests == []


async def test_approve_without_a_tool_server_says_so_or_answers_the_rules_result() -> None:
    gate = ToolGate(policy(look=ToolRule(action="approve"), book=ToolRule(action="approve", result="booked")))
    look, book = await gate.decide(batch(call("t1", "look"), call("t2", "book")))
    assert (look.decision, look.by, look.result, look.error) == ("approved", "rule", NO_FORWARD_RESULT, None)
    assert "\n" not in NO_FORWARD_RESULT and "no tool server" in NO_FORWARD_RESULT
    assert (book.decision, book.result) == ("approved", "booked")


# --- hold and the operator ---------------------------------------------------------------------------


OPERATOR_CASES = {
    "approved": (
        OperatorDecision("approved"),
        "approved",
        ran_result("book", {"date": "2026-02-17"}),
        None,
        {"date": "2026-02-17"},
    ),
    "edited": (
        OperatorDecision("edited", arguments={"date": "2026-02-18"}),
        "edited",
        ran_result("book", {"date": "2026-02-18"}),
        None,
        {"date": "2026-02-18"},
    ),
    "overridden": (
        OperatorDecision("overridden", result={"booked": False, "note": "full"}),
        "overridden",
        '{"booked":false,"note":"full"}',
        None,
        None,
    ),
    "rejected": (
        OperatorDecision("rejected", reason="We are closed that day."),
        "rejected",
        None,
        "We are closed that day.",
        None,
    ),
    "rejected-default": (OperatorDecision("rejected"), "rejected", None, DEFAULT_REJECT_REASON, None),
}


@pytest.mark.parametrize("case", sorted(OPERATOR_CASES))
async def test_hold_then_an_operator_decides_from_another_task(
    case: str, tool_server: ToolServer, forward: ForwardingToolHandler
) -> None:
    decision, expected, result, error, sent = OPERATOR_CASES[case]
    gate = ToolGate(policy(), forward=forward)
    recorder = Recorder(gate)

    async def operator() -> None:
        await recorder.pending_seen.wait()
        (pending,) = gate.pending()
        assert (pending.tool_call_id, pending.name, pending.call_id) == ("t1", "book", CALL_ID)
        assert pending.on_timeout == "reject"
        await asyncio.sleep(0.1)
        assert gate.resolve("t1", decision) is True

    decided, _ = await asyncio.gather(gate.decide(batch(call("t1"))), operator())
    (outcome,) = decided
    assert (outcome.decision, outcome.by, outcome.result, outcome.error, outcome.arguments_sent) == (
        expected,
        "operator",
        result,
        error,
        sent,
    )
    assert outcome.latency_ms is not None and 90 <= outcome.latency_ms < 2000
    assert tool_server.ran == (["t1"] if sent is not None else [])
    if sent is not None:
        assert tool_server.requests[0][0][2] == sent  # what the tool server really got
    assert gate.pending() == [] and gate.get("t1") is None
    assert recorder.kinds() == [("pending", "t1"), ("resolved", "t1")]
    assert recorder.resolved() == [outcome]


@pytest.mark.parametrize(
    ("on_timeout", "decision", "result", "error"),
    [
        ("approve", "approved", ran_result("book", {"date": "2026-02-17"}), None),
        ("reject", "rejected", None, "Nobody was there to approve it."),
        ("override", "overridden", "fallback", None),
    ],
)
async def test_no_answer_applies_on_timeout_recorded_as_a_timeout(
    on_timeout: str,
    decision: str,
    result: str | None,
    error: str | None,
    tool_server: ToolServer,
    forward: ForwardingToolHandler,
) -> None:
    rule = ToolRule(
        action="hold",
        timeout_seconds=0.2,
        on_timeout=on_timeout,  # type: ignore[arg-type]
        reason="Nobody was there to approve it.",
        result="fallback",
    )
    gate = ToolGate(policy(book=rule), forward=forward)
    (outcome,), elapsed = await timed(gate.decide(batch(call("t1"))))
    assert (outcome.decision, outcome.by, outcome.result, outcome.error) == (decision, "timeout", result, error)
    assert 0.18 <= elapsed < 1.0
    assert tool_server.ran == (["t1"] if on_timeout == "approve" else [])
    assert gate.pending() == []
    assert gate.resolve("t1", OperatorDecision("approved")) is False  # too late, and not an operator decision


async def test_the_platform_deadline_caps_the_hold_and_leaves_time_to_forward(
    tool_server: ToolServer, forward: ForwardingToolHandler
) -> None:
    # 15 s for a human, but the platform waits 2.6 s: the answer must leave by 2.6 - 1.5 = 1.1 s.
    rule = ToolRule(action="hold", timeout_seconds=15, on_timeout="approve")
    gate = ToolGate(policy(book=rule), forward=forward)
    recorder = Recorder(gate)
    (outcome,), elapsed = await timed(gate.decide(batch(call("t1"), timeout_s=2.6)))
    pending = recorder.events[0][1]
    window = (pending.deadline_at - pending.requested_at).total_seconds()
    assert 0.5 < window <= 1.1 - 1.1 / 3  # a third of the budget is kept for the tool server
    assert elapsed < 1.1
    assert (outcome.decision, outcome.by, outcome.error) == ("approved", "timeout", None)
    assert tool_server.ran == ["t1"]


async def test_the_deadline_holds_without_a_tool_server_too() -> None:
    gate = ToolGate(policy(book=ToolRule(action="hold", timeout_seconds=15)), safety_margin_s=1.0)
    (outcome,), elapsed = await timed(gate.decide(batch(call("t1"), timeout_s=1.5)))
    assert elapsed < 0.5 and (outcome.decision, outcome.by) == ("rejected", "timeout")


# --- batches -----------------------------------------------------------------------------------------


async def test_parallel_calls_are_decided_independently_and_forwarded_together(
    tool_server: ToolServer, forward: ForwardingToolHandler
) -> None:
    gate = ToolGate(policy(lookup=ToolRule(action="approve")), forward=forward)
    calls = (
        call("a", "book"),
        call("b", "refund", amount=40),
        call("c", "lookup", phone="+1415"),
        call("d", "sms", to="+1"),
    )

    async def operator() -> None:
        await until_pending(gate, "a", "b", "d")
        assert [p.tool_call_id for p in gate.pending()] == ["a", "b", "d"]  # oldest first
        gate.resolve("b", OperatorDecision("rejected", reason="Too much."))
        await asyncio.sleep(0.05)
        gate.resolve("d", OperatorDecision("edited", arguments={"to": "+2", "text": "hi"}))
        gate.resolve("a", OperatorDecision("approved"))

    (a, b, c, d), _ = await asyncio.gather(gate.decide(batch(*calls)), operator())
    assert [o.tool_call_id for o in (a, b, c, d)] == ["a", "b", "c", "d"]
    assert [(o.decision, o.by) for o in (a, b, c, d)] == [
        ("approved", "operator"),
        ("rejected", "operator"),
        ("approved", "rule"),
        ("edited", "operator"),
    ]
    assert b.error == "Too much." and b.result is None
    # Exactly one request to the tool server, with only the passed calls, edits applied, in order.
    assert tool_server.requests == [
        [
            ("a", "book", {"date": "2026-02-17"}),
            ("c", "lookup", {"phone": "+1415"}),
            ("d", "sms", {"to": "+2", "text": "hi"}),
        ]
    ]
    assert d.result == ran_result("sms", {"to": "+2", "text": "hi"}) and d.arguments_sent == {"to": "+2", "text": "hi"}
    assert b.latency_ms is not None and d.latency_ms is not None and b.latency_ms < d.latency_ms


async def test_a_tool_server_that_is_down_gives_errors_before_the_deadline(
    forward: ForwardingToolHandler, tool_server: ToolServer
) -> None:
    assert tool_server.server is not None
    await tool_server.server.close()
    gate = ToolGate(policy(book=ToolRule(action="approve")), forward=forward)
    (outcome,), elapsed = await timed(gate.decide(batch(call("t1"), timeout_s=2.5)))
    assert (outcome.decision, outcome.by, outcome.result) == ("approved", "rule", None)
    assert outcome.error is not None and "unreachable" in outcome.error
    assert elapsed < 1.0


async def test_a_slow_tool_server_is_cut_off_before_the_deadline(
    tool_server: ToolServer, forward: ForwardingToolHandler
) -> None:
    tool_server.delay_s = 5
    gate = ToolGate(policy(), forward=forward)

    async def operator() -> None:
        await until_pending(gate, "t1")
        gate.resolve("t1", OperatorDecision("edited", arguments={"date": "2026-02-20"}))

    ((outcome,), elapsed), _ = await asyncio.gather(timed(gate.decide(batch(call("t1"), timeout_s=2.5))), operator())
    assert elapsed < 1.0  # 2.5 s platform timeout - 1.5 s margin
    assert (outcome.decision, outcome.by, outcome.result) == ("edited", "operator", None)
    assert outcome.arguments_sent == {"date": "2026-02-20"}
    assert outcome.error in (FORWARD_TIMEOUT_ERROR, f"the tool server at {tool_server.url} did not answer in time")
    assert tool_server.ran == ["t1"]


class Exploding:
    async def decide(self, batch: ToolBatch) -> list[ToolOutcome]:
        raise RuntimeError("boom")


async def test_a_broken_forward_handler_still_answers_every_call() -> None:
    handler: ToolCallHandler = Exploding()
    gate = ToolGate(policy(book=ToolRule(action="approve")), forward=handler)
    (outcome,) = await gate.decide(batch(call("t1")))
    assert (outcome.decision, outcome.by) == ("approved", "rule")
    assert outcome.error is not None and "RuntimeError" in outcome.error


# --- idempotency ---------------------------------------------------------------------------------


async def test_the_same_call_twice_in_one_batch_is_decided_and_run_once(
    tool_server: ToolServer, forward: ForwardingToolHandler
) -> None:
    """Redeliveries are joined by the webhook pipeline (tests/test_pipeline.py); within one
    batch the gate itself decides an id once and answers both places with it."""
    gate = ToolGate(policy(book=ToolRule(action="approve")), forward=forward)
    first, second = await gate.decide(batch(call("t1"), call("t1")))
    assert first == second and first.decision == "approved"
    assert tool_server.ran == ["t1"]


# --- operator side: stalling, events, invalid decisions -----------------------------------------------


async def test_mark_stalling_flags_the_calls_of_that_call_once() -> None:
    gate = ToolGate(policy())
    recorder = Recorder(gate)
    task = asyncio.create_task(gate.decide(batch(call("t1"), call("t2"))))
    other = asyncio.create_task(gate.decide(batch(call("t3"), call_id="another-call")))
    await until_pending(gate, "t1", "t2", "t3")
    marked = gate.mark_stalling(CALL_ID)
    assert [p.tool_call_id for p in marked] == ["t1", "t2"] and all(p.stalling for p in marked)
    assert gate.get("t3") is not None and gate.get("t3").stalling is False  # type: ignore[union-attr]
    assert [p.tool_call_id for p in gate.mark_stalling(CALL_ID)] == ["t1", "t2"]
    assert [e for e in recorder.kinds() if e[0] == "stalling"] == [("stalling", "t1"), ("stalling", "t2")]
    assert gate.mark_stalling("unknown") == []
    assert gate.get("t1").to_dict()["stalling"] is True  # type: ignore[union-attr]
    for tool_call_id in ("t1", "t2", "t3"):
        gate.resolve(tool_call_id, OperatorDecision("rejected"))
    await asyncio.gather(task, other)


async def test_subscribers_can_leave_and_cannot_break_the_gate() -> None:
    gate = ToolGate(policy(book=ToolRule(action="approve", result="ok")))
    recorder = Recorder(gate)

    def broken(event: GateEvent) -> None:
        raise RuntimeError("a bad consumer")

    gate.subscribe(broken)
    (outcome,) = await gate.decide(batch(call("t1")))
    assert outcome.result == "ok" and recorder.kinds() == [("resolved", "t1")]
    recorder.unsubscribe()
    recorder.unsubscribe()  # twice is harmless
    await gate.decide(batch(call("t2")))
    assert recorder.kinds() == [("resolved", "t1")]


async def test_invalid_decisions_raise_and_late_ones_are_refused() -> None:
    gate = ToolGate(policy())
    task = asyncio.create_task(gate.decide(batch(call("t1"))))
    await until_pending(gate, "t1")
    with pytest.raises(ValueError, match="arguments"):
        gate.resolve("t1", OperatorDecision("edited"))
    with pytest.raises(ValueError, match="result"):
        gate.resolve("t1", OperatorDecision("overridden"))
    with pytest.raises(ValueError, match="unknown decision"):
        gate.resolve("t1", OperatorDecision("maybe"))  # type: ignore[arg-type]
    assert gate.get("t1") is not None  # still pending after the bad attempts
    assert gate.resolve("nope", OperatorDecision("approved")) is False
    assert gate.resolve("t1", OperatorDecision("overridden", result="fine")) is True
    assert gate.resolve("t1", OperatorDecision("approved")) is False  # already decided
    (outcome,) = await task
    assert (outcome.decision, outcome.result) == ("overridden", "fine")


async def test_pending_call_is_json_able_with_a_countdown() -> None:
    gate = ToolGate(policy(book=ToolRule(action="hold", timeout_seconds=2)))
    task = asyncio.create_task(gate.decide(batch(call("t1"), timeout_s=20)))
    await until_pending(gate, "t1")
    pending = gate.get("t1")
    assert isinstance(pending, PendingCall)
    data = json.loads(json.dumps(pending.to_dict()))
    assert data["tool_call_id"] == "t1" and data["provider"] == "vapi" and data["call_id"] == CALL_ID
    assert data["arguments"] == {"date": "2026-02-17"} and data["on_timeout"] == "reject"
    assert data["requested_at"].endswith("+00:00") and 1.5 < data["remaining_s"] <= 2
    assert pending.remaining_s(pending.deadline_at) == 0.0
    gate.resolve("t1", OperatorDecision("approved"))
    await task


# --- filler and cancellation ---------------------------------------------------------------------------


async def test_the_filler_runs_once_per_call_still_pending_and_its_errors_are_swallowed() -> None:
    said: list[str] = []

    async def filler(pending: PendingCall) -> None:
        said.append(pending.tool_call_id)
        raise RuntimeError("control URL down")

    gate = ToolGate(policy(book=ToolRule(action="hold", timeout_seconds=0.3)), filler=filler, filler_after_s=0.1)
    task = asyncio.create_task(gate.decide(batch(call("t1"), call("t2"))))
    await until_pending(gate, "t1", "t2")
    gate.resolve("t1", OperatorDecision("approved"))  # decided before the filler is due
    slow, timed_out = await task
    assert said == ["t2"]
    assert (slow.by, timed_out.by) == ("operator", "timeout")


async def test_cancelling_decide_abandons_its_pending_calls() -> None:
    gate = ToolGate(policy())
    recorder = Recorder(gate)
    task = asyncio.create_task(gate.decide(batch(call("t1"), call("t2", "lookup"))))
    await until_pending(gate, "t1", "t2")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.pending() == []
    abandoned = recorder.resolved()
    assert [o.tool_call_id for o in abandoned] == ["t1", "t2"]
    assert all((o.decision, o.by, o.error) == ("rejected", "timeout", ABANDONED_ERROR) for o in abandoned)
    assert gate.resolve("t1", OperatorDecision("approved")) is False
    # Nothing was remembered: a later delivery is decided afresh.
    fresh = asyncio.create_task(gate.decide(batch(call("t1"))))
    await until_pending(gate, "t1")
    gate.resolve("t1", OperatorDecision("overridden", result="later"))
    assert (await fresh)[0].result == "later"
