"""The tool-call gate: every tool call is approved, edited, overridden or rejected
— by a rule, an operator or the clock — before the platform stops waiting.

`ToolGate.decide` is a `ToolCallHandler`. For each call it applies the policy
rule; a `hold` becomes a `PendingCall` that an operator settles with `resolve`
(from the TUI or the control API). Whatever happens — nobody answers, the tool
server hangs, the request is abandoned — `decide` returns one outcome per call
before `platform_timeout_s - safety_margin_s`, and a decision the clock made is
recorded as `by="timeout"`, never as an operator's.

Everything runs on the event loop: call `resolve`, `mark_stalling` and
`subscribe` from the loop's thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from console.core.events import DecidedBy, Decision, utc_now
from console.core.forward import one_line
from console.core.policy import Policy, ToolRule
from console.core.tools import ToolBatch, ToolCall, ToolCallHandler, ToolOutcome

log = logging.getLogger(__name__)

OperatorChoice = Literal["approved", "edited", "overridden", "rejected"]

# Spoken by the assistant when an operator rejects without giving a reason.
DEFAULT_REJECT_REASON = "A human operator declined this request."
NO_FORWARD_RESULT = (
    "The call was approved, but voice-console has no tool server configured (--forward-to), so the tool was not run."
)
ABANDONED_ERROR = "The request was abandoned before a decision was made (the platform stopped waiting)."
GATE_FAILED_ERROR = "The tool could not be run: voice-console failed while deciding it."
FORWARD_TIMEOUT_ERROR = "The tool server did not answer before the platform's deadline."
NO_ANSWER_ERROR = "The tool server gave no answer for this call."
# Time kept for forwarding an approved call: at most this, at most a third of the budget.
FORWARD_RESERVE_S = 2.0
# decide() finishes this much before its budget: the caller measured the same
# deadline from a moment earlier and must never be the one that times out.
_FINISH_SLACK_S = 0.05
# A platform timeout below the safety margin still leaves a sliver to answer in.
_MIN_BUDGET_S = 0.5


SETTLED_KEPT = 1000  # recent outcomes kept, to tell a late decision who decided first


@dataclass(frozen=True)
class OperatorDecision:
    decision: OperatorChoice
    arguments: dict[str, Any] | None = None  # required for "edited"
    result: Any = None  # required for "overridden"; any JSON-able or text, stored as a one-line string
    reason: str | None = None  # for "rejected": what the assistant may say (a default if None)
    operator: str | None = None  # who decided (user@host), when several consoles may decide


@dataclass
class PendingCall:
    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    provider: str
    call_id: str | None
    requested_at: datetime  # UTC
    deadline_at: datetime  # UTC
    on_timeout: str  # approve | reject | override (from the policy rule)
    stalling: bool = False  # the platform sent `hang` for this call's call_id
    arguments_schema: dict[str, Any] | None = None  # the tool's JSON Schema, when the platform sent one

    def remaining_s(self, now: datetime | None = None) -> float:
        now = now if now is not None else utc_now()
        return max(0.0, (self.deadline_at - now).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool_call_id": self.tool_call_id,
            "name": self.name,
            "arguments": self.arguments,
            "provider": self.provider,
            "call_id": self.call_id,
            "requested_at": self.requested_at.isoformat(),
            "deadline_at": self.deadline_at.isoformat(),
            "remaining_s": round(self.remaining_s(), 3),
            "on_timeout": self.on_timeout,
            "stalling": self.stalling,
            "arguments_schema": self.arguments_schema,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingCall:
        """The call as `to_dict()` wrote it (a console attached to the receiver holding it)."""
        return cls(
            tool_call_id=str(data["tool_call_id"]),
            name=str(data["name"]),
            arguments=dict(data.get("arguments") or {}),
            provider=str(data["provider"]),
            call_id=data.get("call_id"),
            requested_at=datetime.fromisoformat(data["requested_at"]),
            deadline_at=datetime.fromisoformat(data["deadline_at"]),
            on_timeout=str(data.get("on_timeout") or "reject"),
            stalling=bool(data.get("stalling")),
            arguments_schema=data.get("arguments_schema"),
        )


@dataclass(frozen=True, slots=True)
class CallHeld:
    """A tool call waits for an operator."""

    call: PendingCall


@dataclass(frozen=True, slots=True)
class CallStalling:
    """The platform reports the call stalling (Vapi's `hang`) while this held call waits."""

    call: PendingCall


@dataclass(frozen=True, slots=True)
class CallDecided:
    """An operator decided a held call: it leaves the pending list now (its outcome follows once it
    is answered: an approval after the tool ran). Consoles other than the deciding one learn it here."""

    call: PendingCall
    decision: OperatorDecision


@dataclass(frozen=True, slots=True)
class CallSettled:
    """A tool call's outcome is final (by rule, operator or timeout), or it was abandoned."""

    outcome: ToolOutcome


# What the gate tells its subscribers (the TUI, serve's log).
GateEvent = CallHeld | CallStalling | CallDecided | CallSettled


@dataclass(frozen=True)
class _Verdict:
    """What was decided for one call, before any forwarding."""

    decision: Decision
    by: DecidedBy
    at: float  # loop time of the decision
    arguments: dict[str, Any] | None = None  # for approved/edited: what is passed on
    result: str | None = None
    error: str | None = None
    operator: str | None = None

    @property
    def passes_through(self) -> bool:
        return self.decision in ("approved", "edited")


@dataclass
class _Held:
    pending: PendingCall
    rule: ToolRule
    until: float  # loop time when the rule's on_timeout applies
    # Set by resolve(): the operator's decision, stamped with the loop time it was made.
    verdict: asyncio.Future[_Verdict]
    filler: asyncio.Task[None] | None = None


@dataclass
class _Run:
    """One decide() call's own calls (those not joined to an earlier delivery)."""

    batch: ToolBatch
    calls: list[ToolCall]
    started: float  # loop time
    deadline: float  # loop time by which every outcome must exist
    final: dict[str, ToolOutcome] = field(default_factory=dict)


class ToolGate:
    """Decides tool calls by policy and operator, always before the platform's deadline."""

    def __init__(
        self,
        policy: Policy,
        *,
        forward: ToolCallHandler | None = None,
        safety_margin_s: float = 1.5,
        filler: Callable[[PendingCall], Awaitable[None]] | None = None,
        filler_after_s: float | None = None,
        clock: Callable[[], datetime] = utc_now,
        present: Callable[[GateEvent], GateEvent] | None = None,
    ) -> None:
        """`present` turns each event into what subscribers see (the service masks secrets in it)."""
        self.policy = policy
        self._present = present
        self.forward = forward
        self.safety_margin_s = safety_margin_s
        self._filler = filler
        self._filler_after_s = filler_after_s or 0.0
        self._clock = clock
        self._held: dict[str, _Held] = {}  # insertion order = oldest first
        self._settled: OrderedDict[str, ToolOutcome] = OrderedDict()  # the last SETTLED_KEPT outcomes
        self._subscribers: list[Callable[[GateEvent], None]] = []

    # --- for the operator side --------------------------------------------------------------

    def pending(self) -> list[PendingCall]:
        return [held.pending for held in self._held.values()]

    def get(self, tool_call_id: str) -> PendingCall | None:
        held = self._held.get(tool_call_id)
        return held.pending if held is not None else None

    def resolve(self, tool_call_id: str, decision: OperatorDecision) -> bool:
        """Settle a pending call. False if it is unknown or already decided (or timed out)."""
        verdict = _operator_verdict(decision)  # an invalid decision raises, known call or not
        held = self._held.get(tool_call_id)
        if held is None or held.verdict.done():
            return False
        del self._held[tool_call_id]  # no longer pending from this moment on
        if verdict.decision == "approved":
            verdict = replace(verdict, arguments=held.pending.arguments)
        held.verdict.set_result(replace(verdict, at=held.verdict.get_loop().time()))
        self._emit(CallDecided(held.pending, decision))
        return True

    def mark_stalling(self, call_id: str) -> list[PendingCall]:
        """A Vapi `hang` arrived for `call_id`: flag its pending calls (and tell subscribers once)."""
        marked = []
        for held in self._held.values():
            if held.pending.call_id == call_id:
                if not held.pending.stalling:
                    held.pending.stalling = True
                    self._emit(CallStalling(held.pending))
                marked.append(held.pending)
        return marked

    def subscribe(self, callback: Callable[[GateEvent], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    # --- the handler ------------------------------------------------------------------------

    async def decide(self, batch: ToolBatch) -> list[ToolOutcome]:
        """One outcome per call of `batch`, before its deadline. Redeliveries are the caller's
        to join (the webhook pipeline does: one decision per tool call, recorded once); the
        same id twice in one batch is decided once and answers both."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget = max(batch.platform_timeout_s - self.safety_margin_s, min(_MIN_BUDGET_S, batch.platform_timeout_s / 2))
        deadline = started + max(0.0, budget - _FINISH_SLACK_S)
        own: dict[str, ToolCall] = {}
        for call in batch.calls:
            own.setdefault(call.tool_call_id, call)
        outcomes: dict[str, ToolOutcome] = {}
        await self._run(_Run(batch, list(own.values()), started, deadline), outcomes)
        return [outcomes[call.tool_call_id] for call in batch.calls]

    async def _run(self, run: _Run, outcomes: dict[str, ToolOutcome]) -> None:
        """Decide, forward and publish `run.calls`; on cancellation, abandon what is left."""
        try:
            await self._decide_own(run)
        except asyncio.CancelledError:
            self._abandon(run, ABANDONED_ERROR, "timeout")
            raise
        except Exception:
            # A bug here must not strand the platform: answer.
            log.exception("tool gate failed")
            run.final.update(self._abandon(run, GATE_FAILED_ERROR, "rule"))
        outcomes.update(run.final)

    async def _decide_own(self, run: _Run) -> None:
        loop = asyncio.get_running_loop()
        verdicts: dict[str, _Verdict] = {}
        held: list[_Held] = []
        for call in run.calls:
            rule = self.policy.rule_for(call.name)
            if rule.action == "hold":
                held.append(self._hold(run, call, rule))
            else:
                verdicts[call.tool_call_id] = _rule_verdict(rule, call, loop.time())

        # Each answer is published as soon as it is final; pass-through waits for the whole batch.
        self._finish(run, [c for c in run.calls if c.tool_call_id in verdicts], verdicts)

        async def settle(item: _Held) -> None:
            verdict = await self._await_verdict(item)
            verdicts[item.pending.tool_call_id] = verdict
            self._finish(run, [c for c in run.calls if c.tool_call_id == item.pending.tool_call_id], verdicts)

        if held:
            await asyncio.gather(*(settle(item) for item in held))

        passing = [c for c in run.calls if verdicts[c.tool_call_id].passes_through]
        if passing:
            await self._pass_through(run, passing, verdicts)

    def _hold(self, run: _Run, call: ToolCall, rule: ToolRule) -> _Held:
        loop = asyncio.get_running_loop()
        now = loop.time()
        window = run.deadline - now
        if self.forward is not None:
            # Keep time to run the tool if the call ends up approved.
            window -= min(FORWARD_RESERVE_S, (run.deadline - run.started) / 3)
        wait_s = max(0.0, min(rule.timeout_seconds, window))
        requested_at = self._clock()
        pending = PendingCall(
            tool_call_id=call.tool_call_id,
            name=call.name,
            arguments=call.arguments,
            provider=run.batch.provider,
            call_id=run.batch.call_id,
            requested_at=requested_at,
            deadline_at=requested_at + timedelta(seconds=wait_s),
            on_timeout=rule.on_timeout,
            arguments_schema=call.arguments_schema,
        )
        item = _Held(pending, rule, now + wait_s, loop.create_future())
        self._held[call.tool_call_id] = item
        if self._filler is not None:
            item.filler = loop.create_task(self._run_filler(pending))
        self._emit(CallHeld(pending))
        return item

    async def _await_verdict(self, item: _Held) -> _Verdict:
        loop = asyncio.get_running_loop()
        try:
            # asyncio.wait leaves the future alone on timeout; it is cancelled below, after
            # the call stops being pending, so a late resolve() cleanly returns False.
            await asyncio.wait({item.verdict}, timeout=max(0.0, item.until - loop.time()))
            if item.verdict.done():
                return item.verdict.result()
            # Nobody decided: the rule's default applies, recorded as a timeout.
            self._held.pop(item.pending.tool_call_id, None)
            item.verdict.cancel()
            call = ToolCall(item.pending.tool_call_id, item.pending.name, item.pending.arguments)
            return _timeout_verdict(item.rule, call, loop.time())
        finally:
            if item.filler is not None:
                item.filler.cancel()

    async def _run_filler(self, pending: PendingCall) -> None:
        assert self._filler is not None
        try:
            await asyncio.sleep(self._filler_after_s)
            if pending.tool_call_id in self._held:
                await self._filler(pending)
        except Exception:  # the filler is a courtesy; it must never affect the decision
            log.exception("tool gate filler failed for %s", pending.tool_call_id)

    async def _pass_through(self, run: _Run, calls: list[ToolCall], verdicts: dict[str, _Verdict]) -> None:
        loop = asyncio.get_running_loop()
        sent = [replace(c, arguments=verdicts[c.tool_call_id].arguments or {}) for c in calls]
        answers: dict[str, tuple[str | None, str | None]]
        if self.forward is None:
            answers = {c.tool_call_id: (_rule_result(self.policy.rule_for(c.name)), None) for c in sent}
        else:
            answers = await self._forward(run, sent)
        for call in calls:
            result, error = answers[call.tool_call_id]
            verdicts[call.tool_call_id] = replace(
                verdicts[call.tool_call_id], result=result, error=error, at=loop.time()
            )
        self._finish(run, calls, verdicts, forwarded=True)

    async def _forward(self, run: _Run, sent: list[ToolCall]) -> dict[str, tuple[str | None, str | None]]:
        """(result, error) per call from the tool server, in whatever time is left."""
        assert self.forward is not None
        loop = asyncio.get_running_loop()
        remaining = run.deadline - loop.time()
        if remaining <= 0:
            return {c.tool_call_id: (None, FORWARD_TIMEOUT_ERROR) for c in sent}
        # Only the passed calls, with their final arguments, and only the time that is left.
        sub_batch = replace(run.batch, calls=tuple(sent), platform_timeout_s=remaining)
        try:
            async with asyncio.timeout(remaining):
                answered = await self.forward.decide(sub_batch)
            by_id = {o.tool_call_id: o for o in answered}
        except TimeoutError:
            return {c.tool_call_id: (None, FORWARD_TIMEOUT_ERROR) for c in sent}
        except Exception as exc:  # a broken handler still yields an answer per call
            log.exception("tool forward failed")
            failed = f"The tool could not be run: the tool handler failed ({type(exc).__name__})."
            return {c.tool_call_id: (None, failed) for c in sent}
        answers: dict[str, tuple[str | None, str | None]] = {}
        for call in sent:
            outcome = by_id.get(call.tool_call_id)
            if outcome is None:
                answers[call.tool_call_id] = (None, NO_ANSWER_ERROR)
            else:
                answers[call.tool_call_id] = (outcome.result, outcome.error)
        return answers

    def _finish(
        self, run: _Run, calls: Iterable[ToolCall], verdicts: dict[str, _Verdict], *, forwarded: bool = False
    ) -> None:
        """Make each call's outcome final, publish it and remember it (pass-through: once forwarded)."""
        for call in calls:
            verdict = verdicts[call.tool_call_id]
            if verdict.passes_through and not forwarded:
                continue
            outcome = ToolOutcome(
                tool_call_id=call.tool_call_id,
                name=call.name,
                decision=verdict.decision,
                by=verdict.by,
                result=verdict.result,
                error=verdict.error,
                latency_ms=_ms(verdict.at - run.started),
                arguments_sent=verdict.arguments if verdict.passes_through else None,
                operator=verdict.operator,
            )
            run.final[call.tool_call_id] = outcome
            self._remember(outcome)
            self._emit(CallSettled(outcome))

    def _abandon(self, run: _Run, error: str, by: DecidedBy) -> dict[str, ToolOutcome]:
        """Drop every call of `run` that has no final outcome yet and tell subscribers (a
        redelivery may still decide it: the pipeline hands it over)."""
        loop = asyncio.get_running_loop()
        dropped: dict[str, ToolOutcome] = {}
        for call in run.calls:
            if call.tool_call_id in run.final:
                continue
            held = self._held.pop(call.tool_call_id, None)
            if held is not None:
                if held.filler is not None:
                    held.filler.cancel()
                if not held.verdict.done():
                    held.verdict.cancel()
            outcome = ToolOutcome(
                tool_call_id=call.tool_call_id,
                name=call.name,
                decision="rejected",
                by=by,
                error=error,
                latency_ms=_ms(loop.time() - run.started),
            )
            dropped[call.tool_call_id] = outcome
            self._remember(outcome)
            self._emit(CallSettled(outcome))
        return dropped

    def _remember(self, outcome: ToolOutcome) -> None:
        self._settled[outcome.tool_call_id] = outcome
        if len(self._settled) > SETTLED_KEPT:
            self._settled.popitem(last=False)

    def settled(self, tool_call_id: str) -> ToolOutcome | None:
        """How a recently settled call was decided (and by whom): what a late decision is told."""
        return self._settled.get(tool_call_id)

    def _emit(self, event: GateEvent) -> None:
        if self._present is not None and self._subscribers:
            event = self._present(event)
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:  # a subscriber must never break the gate
                log.exception("tool gate subscriber failed")


# --- verdicts -------------------------------------------------------------------------------


def _rule_result(rule: ToolRule) -> str:
    """What a pass-through answers without a tool server."""
    return one_line(rule.result) if rule.result is not None else NO_FORWARD_RESULT


def _rule_verdict(rule: ToolRule, call: ToolCall, at: float) -> _Verdict:
    return _apply(rule.action, rule, call, at, by="rule")


def _timeout_verdict(rule: ToolRule, call: ToolCall, at: float) -> _Verdict:
    return _apply(rule.on_timeout, rule, call, at, by="timeout")


def _apply(action: str, rule: ToolRule, call: ToolCall, at: float, *, by: DecidedBy) -> _Verdict:
    if action == "approve":
        return _Verdict("approved", by, at, arguments=call.arguments)
    if action == "override":
        return _Verdict("overridden", by, at, result=one_line(rule.result))
    return _Verdict("rejected", by, at, error=rule.refusal(timed_out=by == "timeout"))


def _operator_verdict(decision: OperatorDecision, at: float = 0.0) -> _Verdict:
    """Check an operator's decision (ValueError if it cannot be carried out)."""
    kind = decision.decision
    if kind not in get_args(OperatorChoice):
        raise ValueError(f"unknown decision {kind!r}: expected approved, edited, overridden or rejected")
    if kind == "edited":
        if not isinstance(decision.arguments, dict):
            raise ValueError('an "edited" decision needs the new arguments as a JSON object')
        return _Verdict("edited", "operator", at, arguments=decision.arguments, operator=decision.operator)
    if kind == "overridden":
        if decision.result is None:
            raise ValueError('an "overridden" decision needs a result')
        return _Verdict("overridden", "operator", at, result=one_line(decision.result), operator=decision.operator)
    if kind == "rejected":
        reason = one_line(decision.reason) if decision.reason and decision.reason.strip() else DEFAULT_REJECT_REASON
        return _Verdict("rejected", "operator", at, error=reason, operator=decision.operator)
    return _Verdict("approved", "operator", at, operator=decision.operator)


def _ms(seconds: float) -> float:
    return round(max(0.0, seconds) * 1000, 2)
