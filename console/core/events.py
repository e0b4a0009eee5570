"""The one normalized event model.

Every provider message becomes zero or more of these events; the store, `serve`
(NDJSON) and the TUI only ever read this shape, never a provider wire format.
The JSON form (`event.model_dump(mode="json")`) is a contract: every event has
`kind`, `at`, `provider` and `call_id`, plus the fields of its kind.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Union

import json

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, field_validator

Provider = Literal["vapi", "retell", "twilio"]
CallStatusValue = Literal["queued", "ringing", "in-progress", "forwarding", "ended"]
Role = Literal["user", "assistant"]
Decision = Literal["approved", "edited", "overridden", "rejected"]
DecidedBy = Literal["operator", "rule", "timeout"]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class _EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    provider: Provider
    call_id: str | None = None
    # The contract JSON, computed once: the store and every live consumer share it.
    _json: str | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # Field values only: the cached JSON is not part of an event's identity.
        return type(self) is type(other) and self.__dict__ == other.__dict__

    @field_validator("at")
    @classmethod
    def _at_is_utc(cls, value: datetime) -> datetime:
        return to_utc(value)


class CallStatus(_EventBase):
    kind: Literal["call.status"] = "call.status"
    status: CallStatusValue
    ended_reason: str | None = None


class SpeechStarted(_EventBase):
    kind: Literal["speech.started"] = "speech.started"
    role: Role
    turn: int | None = None


class SpeechStopped(_EventBase):
    kind: Literal["speech.stopped"] = "speech.stopped"
    role: Role
    turn: int | None = None


class TranscriptPartial(_EventBase):
    kind: Literal["transcript.partial"] = "transcript.partial"
    role: Role
    text: str


class TranscriptFinal(_EventBase):
    kind: Literal["transcript.final"] = "transcript.final"
    role: Role
    text: str


class BargeIn(_EventBase):
    kind: Literal["barge_in"] = "barge_in"
    cut_text: str | None = None
    # How it was seen: "user-interrupted", "speech-overlap", "turntaking", ...
    source: str | None = None
    turn_id: str | None = None  # the interrupted LLM turn, when the platform names it


class ToolRequested(_EventBase):
    kind: Literal["tool.requested"] = "tool.requested"
    tool_call_id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolDecided(_EventBase):
    kind: Literal["tool.decided"] = "tool.decided"
    tool_call_id: str
    name: str
    decision: Decision
    by: DecidedBy
    result: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    arguments: dict[str, Any] | None = None  # the arguments as sent on, when passed through


class CallHang(_EventBase):
    kind: Literal["call.hang"] = "call.hang"


class CallEnded(_EventBase):
    kind: Literal["call.ended"] = "call.ended"
    reason: str | None = None
    summary: str | None = None
    cost: float | None = None
    duration_s: float | None = None


class Raw(_EventBase):
    """Anything we do not model, kept verbatim so nothing is silently dropped."""

    kind: Literal["raw"] = "raw"
    type: str
    data: dict[str, Any] = Field(default_factory=dict)


Event = Annotated[
    Union[
        CallStatus,
        SpeechStarted,
        SpeechStopped,
        TranscriptPartial,
        TranscriptFinal,
        BargeIn,
        ToolRequested,
        ToolDecided,
        CallHang,
        CallEnded,
        Raw,
    ],
    Field(discriminator="kind"),
]

EVENT_KINDS: tuple[str, ...] = (
    "call.status",
    "speech.started",
    "speech.stopped",
    "transcript.partial",
    "transcript.final",
    "barge_in",
    "tool.requested",
    "tool.decided",
    "call.hang",
    "call.ended",
    "raw",
)

_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form (e.g. read back from the history)."""
    return _event_adapter.validate_python(data)


def event_from_json(text: str | bytes) -> Event:
    return _event_adapter.validate_json(text)


def event_to_dict(event: Event) -> dict[str, Any]:
    """The contract JSON shape; `kind` first for readable NDJSON."""
    data = event.model_dump(mode="json", exclude_none=True)
    data.setdefault("call_id", None)
    return {"kind": data.pop("kind"), **data}


def event_json(event: Event) -> str:
    """`event_to_dict` as compact JSON text, cached on the (immutable) event."""
    cached = event._json
    if cached is None:
        cached = json.dumps(event_to_dict(event), ensure_ascii=False, separators=(",", ":"))
        event._json = cached
    return cached
