"""The tool-call handler interface: every tool call a platform sends passes here.

Providers turn a request into a `ToolBatch`; a `ToolCallHandler` decides every
call in it and returns one `ToolOutcome` per call, in order; the provider then
renders the platform's reply from the outcomes. The gate (hold / approve / edit
/ override / reject) is one such handler; `NoToolHandler` and
`ForwardingToolHandler` (in `console.core.forward`) are the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from console.core import strictjson
from console.core.events import DecidedBy, Decision, ToolDecided

RAW_ARGUMENTS_KEY = "_raw_arguments"


def decode_arguments(value: Any) -> dict[str, Any]:
    """Tool arguments as an object: objects as-is, JSON strings decoded.

    A model can emit broken JSON (e.g. cut off by the tool-arg token cap); the
    call must still be shown and answered, so the text is kept under
    RAW_ARGUMENTS_KEY instead of dropping the call.
    """
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        decoded: Any = text
        for _ in range(2):  # a second level for double-encoded strings
            if not isinstance(decoded, str):
                break
            try:
                # strict: a string nested too deeply or holding a lone surrogate stays text
                decoded = strictjson.loads(decoded)
            except ValueError:
                break
        if isinstance(decoded, dict):
            return decoded
    return {RAW_ARGUMENTS_KEY: value}


ToolDialect = Literal["vapi-tool-calls", "vapi-function-call", "retell-function"]


@dataclass(frozen=True)
class ToolCall:
    tool_call_id: str
    name: str
    arguments: dict[str, Any]
    # The tool's JSON Schema for its arguments, when the platform sent one (Vapi's
    # toolWithToolCallList[].function.parameters): the TUI checks edited arguments against it.
    arguments_schema: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ToolBatch:
    """One platform request carrying one or more tool calls."""

    provider: str
    dialect: ToolDialect
    call_id: str | None
    calls: tuple[ToolCall, ...]
    # How long the platform waits for this HTTP answer (from the payload's
    # tool/server config when present, else the documented default).
    platform_timeout_s: float
    # The original delivery, so a handler can pass it on to the user's server.
    raw_body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    path: str = ""
    method: str = "POST"
    content_type: str = "application/json"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolOutcome:
    tool_call_id: str
    name: str
    decision: Decision
    by: DecidedBy
    result: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    arguments_sent: dict[str, Any] | None = None
    operator: str | None = None  # who decided, when `by` is "operator" and consoles name themselves

    def event(self, *, provider: str, call_id: str | None, at: datetime) -> ToolDecided:
        """The `tool.decided` event that records this outcome (the one place it is built)."""
        return ToolDecided(
            at=at,
            provider=provider,
            call_id=call_id,
            tool_call_id=self.tool_call_id,
            name=self.name,
            decision=self.decision,
            by=self.by,
            result=self.result,
            error=self.error,
            latency_ms=self.latency_ms,
            arguments=self.arguments_sent,
            operator=self.operator,
        )


class ToolCallHandler(Protocol):
    async def decide(self, batch: ToolBatch) -> list[ToolOutcome]:
        """Return exactly one outcome per call in `batch.calls`, in the same order."""
        ...


NO_HANDLER_MESSAGE = "No tool handler is configured in voice-console, so this tool was not run."


class NoToolHandler:
    """Without a gate or a forward target every call is refused, honestly, by rule."""

    async def decide(self, batch: ToolBatch) -> list[ToolOutcome]:
        return [
            ToolOutcome(
                tool_call_id=call.tool_call_id,
                name=call.name,
                decision="rejected",
                by="rule",
                error=NO_HANDLER_MESSAGE,
                latency_ms=0.0,
            )
            for call in batch.calls
        ]
