"""The one normalized event model.

Every provider message becomes zero or more of these events; the store, `serve`
(NDJSON) and the TUI only ever read this shape, never a provider wire format.
The JSON form (`event.model_dump(mode="json")`) is a contract: every event has
`kind`, `at`, `provider` and `call_id`, plus the fields of its kind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

# A provider's name as its spec declares it (console.providers.registry): the core names none.
Provider = str
CallStatusValue = Literal["queued", "ringing", "in-progress", "forwarding", "ended"]
Role = Literal["user", "assistant"]
# "interrupted" (by "crash" or "shutdown"): voice-console stopped while the call was
# still undecided; written by the history at the next start (or at a clean close).
# "ran": the agent's own server ran the tool (seen through a tap), the console did not gate it.
Decision = Literal["approved", "edited", "overridden", "rejected", "interrupted", "ran"]
DecidedBy = Literal["operator", "rule", "timeout", "crash", "shutdown", "agent"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    tzinfo = value.tzinfo
    if tzinfo is UTC:
        return value
    if tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class _EventBase(BaseModel):
    # The contract JSON, computed once: the store and every live consumer share it.
    # A plain slot rather than a PrivateAttr: pydantic initialises private
    # attributes in Python on every construction, which the hot path pays per event;
    # an unset slot costs nothing until `event_json` fills it. (Not copied by
    # model_copy/pickle, so a copy never carries a stale cached JSON.)
    __slots__ = ("_json_cache",)

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: datetime
    provider: Provider
    call_id: str | None = None

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
    # Where it was seen when not in the platform's webhooks: "llm-tap" (a relayed live socket).
    source: str | None = None


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
    operator: str | None = None  # who decided (user@host), when `by` is "operator" and the console named one


class CallHang(_EventBase):
    kind: Literal["call.hang"] = "call.hang"


class CallEnded(_EventBase):
    kind: Literal["call.ended"] = "call.ended"
    reason: str | None = None
    summary: str | None = None
    cost: float | None = None
    duration_s: float | None = None


class Raw(_EventBase):
    """Anything we do not model, kept verbatim so nothing is silently dropped. A `note` in `data`
    is one line for the operator (the console shows it in the Events pane)."""

    kind: Literal["raw"] = "raw"
    type: str
    data: dict[str, Any] = Field(default_factory=dict)


Event = Annotated[
    CallStatus
    | SpeechStarted
    | SpeechStopped
    | TranscriptPartial
    | TranscriptFinal
    | BargeIn
    | ToolRequested
    | ToolDecided
    | CallHang
    | CallEnded
    | Raw,
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


# What json.dumps(value, ensure_ascii=False, separators=(",", ":")) does for a
# dict, minus building a JSONEncoder and its C encoder on every call. The C
# encoder is built once without circular-reference markers (a stale marker left
# by a failed call could break later ones): event dicts come from JSON-shaped data.
_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# Not in the stubs: the C accelerator is an implementation detail (None without it).
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode: Callable[[Any], str]
if _c_make_encoder is not None:
    _c_encode_dict = _c_make_encoder(
        None, _json_encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, True
    )

    def _encode(value: dict[str, Any]) -> str:
        return "".join(_c_encode_dict(value, 0))

else:  # pragma: no cover
    _encode = _json_encoder.encode


def compact_json(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False, separators=(",", ":"))`, cheaper for
    the dicts and lists of the ingest hot path (same output)."""
    if type(value) is dict or type(value) is list:
        return _encode(value)
    return _json_encoder.encode(value)


_json_cache_slot = _EventBase.__dict__["_json_cache"]  # the slot's descriptor: no BaseModel.__getattr__ detour


def event_json(event: Event) -> str:
    """`event_to_dict` as compact JSON text, cached on the (immutable) event."""
    try:
        return _json_cache_slot.__get__(event)
    except AttributeError:
        cached = _encode(event_to_dict(event))
        _json_cache_slot.__set__(event, cached)
        return cached
