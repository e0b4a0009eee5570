"""Twilio wire formats: voice/status webhook parameters and Media Streams frames.

Webhook parameters arrive form-encoded; repeated names are kept (the signature
covers every value) and whitespace is never stripped. Models keep unknown keys,
because Twilio adds parameters over time.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from console.core import strictjson
from console.core.events import CallStatusValue
from console.providers.base import BadPayload

FormPairs = list[tuple[str, str]]

# Twilio CallStatus -> normalized status. Terminal values become the ended_reason.
STATUS_MAP: dict[str, CallStatusValue] = {
    "queued": "queued",
    "initiated": "queued",
    "ringing": "ringing",
    "in-progress": "in-progress",
    "answered": "in-progress",  # StatusCallbackEvent name, in case it shows up as a status
    "completed": "ended",
    "busy": "ended",
    "failed": "ended",
    "no-answer": "ended",
    "canceled": "ended",
}


def parse_form(body: bytes) -> FormPairs:
    """application/x-www-form-urlencoded -> ordered (name, value) pairs, repeats kept."""
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPayload(f"The form body is not valid UTF-8 form encoding ({exc}).") from None


def parse_json_params(body: bytes) -> FormPairs:
    """A JSON object body (the bodySHA256 variant) as pairs; lists become repeated names."""
    try:
        data = strictjson.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPayload(f"The body is not JSON ({exc}).") from None
    if not isinstance(data, dict):
        raise BadPayload("A Twilio JSON body must be a JSON object.")
    pairs: FormPairs = []
    for name, value in data.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, item if isinstance(item, str) else json.dumps(item)))
    return pairs


def first_values(pairs: FormPairs) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        out.setdefault(name, value)
    return out


def pairs_as_dict(pairs: FormPairs) -> dict[str, str | list[str]]:
    """For `raw` events: a single value stays a string, repeats become a list."""
    out: dict[str, str | list[str]] = {}
    for name, value in pairs:
        if name not in out:
            out[name] = value
        else:
            prev = out[name]
            out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
    return out


class CallParams(BaseModel):
    """Voice webhook and status-callback parameters (first value of each name)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    call_sid: str = Field(alias="CallSid", min_length=1)
    account_sid: str | None = Field(None, alias="AccountSid")
    from_: str | None = Field(None, alias="From")
    to: str | None = Field(None, alias="To")
    call_status: str | None = Field(None, alias="CallStatus")
    direction: str | None = Field(None, alias="Direction")
    parent_call_sid: str | None = Field(None, alias="ParentCallSid")
    # Status callbacks only.
    timestamp: str | None = Field(None, alias="Timestamp")  # RFC 2822, UTC
    sequence_number: str | None = Field(None, alias="SequenceNumber")
    call_duration: str | None = Field(None, alias="CallDuration")  # seconds
    callback_source: str | None = Field(None, alias="CallbackSource")
    sip_response_code: str | None = Field(None, alias="SipResponseCode")


# -- Media Streams ---------------------------------------------------------------


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class StartInfo(_Loose):
    stream_sid: str | None = Field(None, alias="streamSid")
    account_sid: str | None = Field(None, alias="accountSid")
    call_sid: str | None = Field(None, alias="callSid")
    tracks: list[str] = Field(default_factory=list)
    custom_parameters: dict[str, Any] = Field(default_factory=dict, alias="customParameters")
    media_format: dict[str, Any] = Field(default_factory=dict, alias="mediaFormat")


class MediaInfo(_Loose):
    track: str = "inbound"
    chunk: str | int | None = None
    timestamp: int | None = None  # ms since the stream started (a string on the wire)
    payload: str  # base64 of raw 8 kHz mu-law


class DtmfInfo(_Loose):
    track: str | None = None
    digit: str


class MarkInfo(_Loose):
    name: str


class StopInfo(_Loose):
    account_sid: str | None = Field(None, alias="accountSid")
    call_sid: str | None = Field(None, alias="callSid")


class _Frame(_Loose):
    sequence_number: str | int | None = Field(None, alias="sequenceNumber")
    stream_sid: str | None = Field(None, alias="streamSid")


class ConnectedFrame(_Frame):
    event: Literal["connected"]
    protocol: str | None = None
    version: str | None = None


class StartFrame(_Frame):
    event: Literal["start"]
    start: StartInfo


class MediaFrame(_Frame):
    event: Literal["media"]
    media: MediaInfo


class DtmfFrame(_Frame):
    event: Literal["dtmf"]
    dtmf: DtmfInfo


class MarkFrame(_Frame):
    event: Literal["mark"]
    mark: MarkInfo


class StopFrame(_Frame):
    event: Literal["stop"]
    stop: StopInfo = Field(default_factory=lambda: StopInfo())


StreamFrame = Annotated[
    ConnectedFrame | StartFrame | MediaFrame | DtmfFrame | MarkFrame | StopFrame,
    Field(discriminator="event"),
]
STREAM_EVENTS = frozenset({"connected", "start", "media", "dtmf", "mark", "stop"})
stream_frame_adapter: TypeAdapter[StreamFrame] = TypeAdapter(StreamFrame)
