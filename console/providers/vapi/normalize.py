"""Vapi server message -> normalized events, tool batch and config reply.

Rules:
- an unknown type is never rejected: it becomes a `raw` event;
- an informational message with malformed known fields becomes a `raw` event
  too (`Inbound.extra["malformed"]` says why);
- only a request that cannot be answered (a tool call without id and name)
  raises BadPayload;
- every event: provider "vapi", call_id = message.call.id, at = the message
  timestamp (UTC) or the receipt time when it has none.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from console.config import VapiSettings
from console.core.events import (
    BargeIn,
    CallEnded,
    CallHang,
    CallStatus,
    CallStatusValue,
    Event,
    Raw,
    SpeechStarted,
    SpeechStopped,
    ToolRequested,
    TranscriptFinal,
    TranscriptPartial,
)
from console.core.http_types import Response
from console.core.tools import ToolBatch, ToolCall
from console.providers.base import BadPayload, Inbound
from console.providers.vapi import replies
from console.providers.vapi.wire import (
    ENVELOPE_KEYS,
    TRANSCRIPT_FINAL_ONLY,
    EndOfCallReportMessage,
    FunctionCallMessage,
    ServerMessage,
    SpeechUpdateMessage,
    StatusUpdateMessage,
    ToolCallItem,
    ToolCallsMessage,
    ToolWithToolCall,
    TranscriptMessage,
    UserInterruptedMessage,
    VoiceRequestMessage,
    coerce_arguments,
    parse_vapi_time,
    role_value,
)

PROVIDER = "vapi"

_STATUS_MAP: dict[str, CallStatusValue] = {
    "scheduled": "queued",
    "queued": "queued",
    "ringing": "ringing",
    "in-progress": "in-progress",
    "forwarding": "forwarding",
    "ended": "ended",
}
_MAX_SERVER_TIMEOUT_S = 300.0  # Vapi's documented upper bound for Server.timeoutSeconds


def raw_data(message: dict[str, Any]) -> dict[str, Any]:
    """The message minus the bulky envelope (kept in the stored raw body anyway)."""
    return {key: value for key, value in message.items() if key not in ENVELOPE_KEYS}


def describe_validation_error(err: ValidationError, limit: int = 3) -> str:
    parts = []
    for item in err.errors()[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "message"
        parts.append(f"{where}: {item['msg']}")
    more = len(err.errors()) - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


class _Context:
    """One message being normalized. The envelope model is built only when a
    handler needs more than `call.id` and `timestamp` (tool calls, replies)."""

    __slots__ = ("message", "settings", "call_id", "at", "_envelope")

    def __init__(
        self,
        message: dict[str, Any],
        settings: VapiSettings,
        call_id: str | None,
        at: datetime,
        envelope: ServerMessage | None = None,
    ) -> None:
        self.message = message
        self.settings = settings
        self.call_id = call_id
        self.at = at
        self._envelope = envelope

    @property
    def envelope(self) -> ServerMessage:
        if self._envelope is None:
            self._envelope = ServerMessage.model_validate(self.message)  # every envelope field is lenient
        return self._envelope

    @property
    def type(self) -> str:
        return self.message["type"]

    def base(self) -> dict[str, Any]:
        return {"at": self.at, "provider": PROVIDER, "call_id": self.call_id}

    def raw(self) -> Raw:
        return Raw(**self.base(), type=self.type, data=raw_data(self.message))

    def inbound(self, events: list[Event], **kwargs: Any) -> Inbound:
        return Inbound(
            provider=PROVIDER, message_type=self.type, call_id=self.call_id, at=self.at, events=events, **kwargs
        )

    def raw_inbound(self, **kwargs: Any) -> Inbound:
        return self.inbound([self.raw()], **kwargs)

    def malformed(self, err: ValidationError) -> Inbound:
        return self.raw_inbound(extra={"malformed": describe_validation_error(err)})


def _fast_call_id(message: dict[str, Any]) -> tuple[bool, str | None]:
    """(ok, call id) read straight from the dict, exactly as `ServerMessage` would
    read it; ok is False for a shape the fast read does not cover."""
    call = message.get("call")
    if call is None:
        return True, None
    if type(call) is not dict:
        return False, None
    call_id = call.get("id")
    if type(call_id) is str:
        return True, call_id or None
    return True, None  # Lenient: a malformed id is None, the rest of `call` still parses


def normalize_message(message: dict[str, Any], *, received_at: datetime, settings: VapiSettings) -> Inbound:
    """Normalize one `message` object (already checked to have a string `type`).

    The returned tool batch has no request bits (raw body, headers); the
    provider adds them.
    """
    ok, call_id = _fast_call_id(message)
    if ok and type(message.get("type")) is str:
        # The same values ServerMessage yields (every envelope field is lenient
        # and `timestamp` is parse_vapi_time), without building the model.
        timestamp = parse_vapi_time(message.get("timestamp"))
        ctx = _Context(message, settings, call_id, timestamp or received_at)
    else:
        envelope = ServerMessage.model_validate(message)  # every envelope field is lenient
        ctx = _Context(message, settings, envelope.call_id, envelope.timestamp or received_at, envelope)
    inbound = _HANDLERS.get(ctx.type, _raw)(ctx)
    # Every message carries call.monitor: the live-control capability travels beside the
    # events, never in them (events are stored), and the call tracker keeps it.
    if (control_url := control_url_of(message)) is not None:
        inbound.extra["control_url"] = control_url
    return inbound


# --- informational ---------------------------------------------------------------


def _raw(ctx: _Context) -> Inbound:
    return ctx.raw_inbound()


# The fast paths below read the dict directly when every field the message model
# declares has the plain type it expects; anything else goes through the model,
# which keeps its coercions and turns a failure into a `raw` event.


def _status_update(ctx: _Context) -> Inbound:
    message = ctx.message
    status = message.get("status")
    if type(status) is str:
        ended_reason = message.get("endedReason")
        call = message.get("call")
        call_reason = call.get("endedReason") if type(call) is dict else None
        return _status_inbound(
            ctx,
            status,
            ended_reason if type(ended_reason) is str else None,  # Lenient[str]
            call_reason if type(call_reason) is str else None,
        )
    try:
        msg = StatusUpdateMessage.model_validate(message)
    except ValidationError as err:
        return ctx.malformed(err)
    return _status_inbound(ctx, msg.status, msg.endedReason, msg.call.endedReason if msg.call else None)


def _status_inbound(ctx: _Context, wire_status: str, ended_reason: str | None, call_reason: str | None) -> Inbound:
    status = _STATUS_MAP.get(wire_status)
    if status is None:  # not-found, deletion-failed, anything new
        return ctx.raw_inbound()
    reason = None
    if status == "ended":
        reason = ended_reason or call_reason
    return ctx.inbound([CallStatus(**ctx.base(), status=status, ended_reason=reason)])


def control_url_of(message: dict[str, Any]) -> str | None:
    """`call.monitor.controlUrl` when it is an http(s) URL, else None."""
    call = message.get("call")
    monitor = call.get("monitor") if type(call) is dict else None
    url = monitor.get("controlUrl") if type(monitor) is dict else None
    return url if type(url) is str and url.startswith(("http://", "https://")) else None


def _speech_update(ctx: _Context) -> Inbound:
    message = ctx.message
    status = message.get("status")
    role = role_value(message.get("role"))
    turn = message.get("turn")
    if (
        (status == "started" or status == "stopped")
        and type(status) is str
        and role
        and (turn is None or type(turn) is int)
    ):
        event_type = SpeechStarted if status == "started" else SpeechStopped
        return ctx.inbound([event_type(**ctx.base(), role=role, turn=turn)])
    try:
        msg = SpeechUpdateMessage.model_validate(message)
    except ValidationError as err:
        return ctx.malformed(err)
    event_type = SpeechStarted if msg.status == "started" else SpeechStopped
    return ctx.inbound([event_type(**ctx.base(), role=msg.role, turn=msg.turn)])


_TRANSCRIPT_TYPES = (None, "partial", "final")


def _transcript(ctx: _Context) -> Inbound:
    message = ctx.message
    role = role_value(message.get("role"))
    text = message.get("transcript")
    transcript_type = message.get("transcriptType")
    is_filtered = message.get("isFiltered")
    original = message.get("originalTranscript")
    if (
        role
        and type(text) is str
        and transcript_type in _TRANSCRIPT_TYPES
        and (transcript_type is None or type(transcript_type) is str)
        and (is_filtered is None or type(is_filtered) is bool)
        and (original is None or type(original) is str)
    ):
        return _transcript_inbound(ctx, role, text, transcript_type)
    try:
        msg = TranscriptMessage.model_validate(message)
    except ValidationError as err:
        return ctx.malformed(err)
    return _transcript_inbound(ctx, msg.role, msg.transcript, msg.transcriptType)


def _transcript_inbound(ctx: _Context, role: str, text: str, transcript_type: str | None) -> Inbound:
    # The bracketed type is the finals-only subscription.
    kind = transcript_type or ("final" if ctx.type == TRANSCRIPT_FINAL_ONLY else None)
    if kind is None:
        return ctx.raw_inbound(extra={"malformed": "transcriptType is missing"})
    event_type = TranscriptFinal if kind == "final" else TranscriptPartial
    return ctx.inbound([event_type(**ctx.base(), role=role, text=text)])


def _user_interrupted(ctx: _Context) -> Inbound:
    turn_id = ctx.message.get("turnId")
    if turn_id is not None and type(turn_id) is not str:
        try:
            turn_id = UserInterruptedMessage.model_validate(ctx.message).turnId
        except ValidationError as err:
            return ctx.malformed(err)
    # cut_text is not in the message: the call tracker derives it from the
    # model-output / assistant.speechStarted raw events of the same turnId.
    extra = {"turn_id": turn_id} if turn_id else {}
    return ctx.inbound([BargeIn(**ctx.base(), source="user-interrupted", turn_id=turn_id)], extra=extra)


def _hang(ctx: _Context) -> Inbound:
    return ctx.inbound([CallHang(**ctx.base())])


def _end_of_call_report(ctx: _Context) -> Inbound:
    msg = EndOfCallReportMessage.model_validate(ctx.message)  # every field lenient
    reason = msg.endedReason or (msg.call.endedReason if msg.call else None)
    summary = (msg.analysis.summary if msg.analysis else None) or msg.summary
    events: list[Event] = [
        CallStatus(**ctx.base(), status="ended", ended_reason=reason),
        CallEnded(
            **ctx.base(), reason=reason, summary=summary, cost=_report_cost(msg), duration_s=_report_duration(msg)
        ),
    ]
    return ctx.inbound(events)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _report_cost(msg: EndOfCallReportMessage) -> float | None:
    cost = _finite(msg.cost)
    if cost is not None:
        return cost
    parts = [_finite(item.cost) for item in msg.costs or () if item is not None]
    known = [part for part in parts if part is not None]
    return sum(known) if known else None


def _report_duration(msg: EndOfCallReportMessage) -> float | None:
    """durationSeconds (old), else durationMs / durationMinutes, else endedAt - startedAt,
    else the longest per-component billed minutes."""
    seconds, millis, minutes = _finite(msg.durationSeconds), _finite(msg.durationMs), _finite(msg.durationMinutes)
    if seconds is not None:
        return seconds
    if millis is not None:
        return millis / 1000
    if minutes is not None:
        return minutes * 60
    started = msg.startedAt or (msg.call.startedAt if msg.call else None)
    ended = msg.endedAt or (msg.call.endedAt if msg.call else None)
    if started and ended and ended >= started:
        return (ended - started).total_seconds()
    billed = [_finite(item.minutes) for item in msg.costs or () if item is not None]
    known = [value for value in billed if value is not None]
    return max(known) * 60 if known else None


# --- tool calls ---------------------------------------------------------------------


def _server_timeout(server: Any) -> float | None:
    value = getattr(server, "timeoutSeconds", None) if server is not None else None
    if value is None or not math.isfinite(value) or value <= 0:
        return None
    return min(value, _MAX_SERVER_TIMEOUT_S)


def _platform_timeout(ctx: _Context, tool_servers: list[Any]) -> float:
    """The smallest configured deadline that may apply, else Vapi's default (20 s).

    Vapi uses the tool's server, else the assistant's, else the phone number's;
    taking the smallest present one errs on the side of answering in time.
    """
    envelope = ctx.envelope
    candidates = [
        *(_server_timeout(server) for server in tool_servers),
        _server_timeout(envelope.assistant.server if envelope.assistant else None),
        _server_timeout(envelope.phoneNumber.server if envelope.phoneNumber else None),
    ]
    present = [value for value in candidates if value is not None]
    return min(present) if present else ctx.settings.default_tool_timeout_seconds


def _parse_tool_item(
    raw: Any,
    names_by_id: dict[str, str],
    schemas: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]] = ({}, {}),
) -> ToolCall | None:
    if not isinstance(raw, dict):
        return None
    item = ToolCallItem.model_validate(raw)  # every field lenient
    if not item.id:
        return None
    name = item.tool_name or names_by_id.get(item.id)
    if not name:
        return None
    by_id, by_name = schemas
    return ToolCall(
        tool_call_id=item.id,
        name=name,
        arguments=coerce_arguments(item.raw_arguments),
        arguments_schema=by_id.get(item.id) or by_name.get(name),
    )


def _argument_schemas(tools: list[ToolWithToolCall]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Each tool's `function.parameters` (its JSON Schema): by tool call id, and by tool name."""
    by_id: dict[str, dict[str, Any]] = {}
    by_name: dict[str, dict[str, Any]] = {}
    for tool in tools:
        schema = tool.function.parameters if tool.function else None
        if not isinstance(schema, dict):
            continue
        if tool.tool_name:
            by_name.setdefault(tool.tool_name, schema)
        if tool.toolCall and tool.toolCall.id:
            by_id[tool.toolCall.id] = schema
    return by_id, by_name


def extract_tool_calls(msg: ToolCallsMessage) -> tuple[list[ToolCall], list[Any]]:
    """(calls, unparsable items) from the first list that yields a call.

    Order: toolCallList -> toolCalls (a legacy duplicate: never merged, so no
    call appears twice) -> toolWithToolCallList[*].toolCall. A prose-form item
    without a name borrows it from its toolWithToolCallList entry.
    """
    tools = msg.tools_with_calls()
    names_by_id = {
        tool.toolCall.id: tool.tool_name for tool in tools if tool.toolCall and tool.toolCall.id and tool.tool_name
    }
    sources: list[list[Any]] = [
        msg.toolCallList or [],
        msg.toolCalls or [],
        [entry.get("toolCall") if isinstance(entry, dict) else entry for entry in msg.toolWithToolCallList or ()],
    ]
    schemas = _argument_schemas(tools)
    first_unparsed: list[Any] | None = None
    for items in sources:
        if not items:
            continue
        calls: list[ToolCall] = []
        unparsed: list[Any] = []
        seen: set[str] = set()
        for raw in items:
            call = _parse_tool_item(raw, names_by_id, schemas)
            if call is None:
                unparsed.append(raw)
            elif call.tool_call_id not in seen:
                seen.add(call.tool_call_id)
                calls.append(call)
        if calls:
            return calls, unparsed
        if first_unparsed is None:
            first_unparsed = unparsed
    return [], first_unparsed or []


def _tool_calls(ctx: _Context) -> Inbound:
    msg = ToolCallsMessage.model_validate(ctx.message)  # every field lenient
    calls, unparsed = extract_tool_calls(msg)
    if not calls:
        raise BadPayload(
            "tool-calls message has no tool call with an id and a function name "
            "(looked in toolCallList, toolCalls and toolWithToolCallList)"
        )
    events: list[Event] = [
        ToolRequested(**ctx.base(), tool_call_id=call.tool_call_id, name=call.name, arguments=call.arguments)
        for call in calls
    ]
    extra: dict[str, Any] = {}
    if unparsed:
        # Nothing silently dropped: what could not be read is shown as raw.
        events.append(Raw(**ctx.base(), type=ctx.type, data={"unparsed_tool_calls": unparsed}))
        extra["unparsed_tool_calls"] = len(unparsed)
    tool_servers = [tool.server for tool in msg.tools_with_calls()]
    batch = ToolBatch(
        provider=PROVIDER,
        dialect="vapi-tool-calls",
        call_id=ctx.call_id,
        calls=tuple(calls),
        platform_timeout_s=_platform_timeout(ctx, tool_servers),
    )
    return ctx.inbound(events, tool_batch=batch, extra=extra)


def function_call_id(call_id: str | None, name: str, arguments: dict[str, Any], timestamp: Any) -> str:
    """A stable id for a legacy function call (which has none): a redelivery of
    the same message gets the same id, so it de-duplicates and re-attaches."""
    canonical = json.dumps(
        [call_id, name, arguments, timestamp], sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return "fc_" + hashlib.sha256(canonical.encode()).hexdigest()[:24]


def _function_call(ctx: _Context) -> Inbound:
    try:
        msg = FunctionCallMessage.model_validate(ctx.message)
    except ValidationError as err:
        raise BadPayload(
            f"function-call message has no usable functionCall ({describe_validation_error(err)})"
        ) from None
    if not msg.functionCall.name:
        raise BadPayload("function-call message has an empty functionCall.name")
    function = msg.functionCall
    raw_args = function.parameters if function.parameters is not None else function.arguments
    arguments = coerce_arguments(raw_args)
    call = ToolCall(
        tool_call_id=function_call_id(ctx.call_id, function.name, arguments, ctx.message.get("timestamp")),
        name=function.name,
        arguments=arguments,
    )
    batch = ToolBatch(
        provider=PROVIDER,
        dialect="vapi-function-call",
        call_id=ctx.call_id,
        calls=(call,),
        platform_timeout_s=_platform_timeout(ctx, []),
    )
    event = ToolRequested(**ctx.base(), tool_call_id=call.tool_call_id, name=call.name, arguments=call.arguments)
    return ctx.inbound([event], tool_batch=batch)


# --- requests answered from config ---------------------------------------------------


def _answered(reply: Callable[[_Context], Response]) -> Callable[[_Context], Inbound]:
    """A request answered from config: a raw event for the timeline plus the reply."""

    def handle(ctx: _Context) -> Inbound:
        return ctx.raw_inbound(reply=reply(ctx))

    return handle


def _voice_request_reply(ctx: _Context) -> Response:
    msg = VoiceRequestMessage.model_validate(ctx.message)  # every field lenient
    return replies.voice_request_reply(msg.sampleRate)


_HANDLERS: dict[str, Callable[[_Context], Inbound]] = {
    "status-update": _status_update,
    "speech-update": _speech_update,
    "transcript": _transcript,
    TRANSCRIPT_FINAL_ONLY: _transcript,
    "user-interrupted": _user_interrupted,
    "hang": _hang,
    "end-of-call-report": _end_of_call_report,
    "tool-calls": _tool_calls,
    "function-call": _function_call,
    "assistant-request": _answered(lambda ctx: replies.assistant_request_reply(ctx.settings)),
    "transfer-destination-request": _answered(lambda ctx: replies.transfer_destination_reply(ctx.settings)),
    "handoff-destination-request": _answered(lambda ctx: replies.handoff_destination_reply(ctx.settings)),
    "knowledge-base-request": _answered(lambda ctx: replies.knowledge_base_reply()),
    "call.endpointing.request": _answered(lambda ctx: replies.endpointing_reply()),
    "campaign.predial": _answered(lambda ctx: replies.campaign_predial_reply()),
    "voice-request": _answered(_voice_request_reply),
    # Everything else (conversation-update, model-output, assistant.speechStarted,
    # transfer-update, chat.*, session.*, unknown types, ...) is `_raw`.
}
