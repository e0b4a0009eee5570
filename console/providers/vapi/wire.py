"""Vapi server-message wire models (reference/vapi.md §2), tolerant by design.

Every model allows unknown fields: Vapi adds fields often, and anything we do
not read is kept on the model (and in the raw body) rather than rejected. The
envelope parts (`call`, `assistant`, `phoneNumber`, `customer`, `artifact`)
and the timestamp are *lenient*: a malformed value becomes None instead of
failing the whole message, so a request-type message stays answerable.
Type-specific fields of informational messages are validated normally; the
normalizer turns a failure into a `raw` event instead of rejecting the body.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    WrapValidator,
)

from console.core.events import to_utc
from console.core.tools import decode_arguments

# --- time -------------------------------------------------------------------


def epoch_seconds(value: float) -> float:
    """A Unix time in seconds, whatever its unit, guessed from its magnitude.

    1e11 s is the year 5138 and 1e11 ms is 1973, so the ranges cannot overlap
    for any realistic date.
    """
    magnitude = abs(value)
    if magnitude >= 1e17:
        return value / 1e9  # nanoseconds
    if magnitude >= 1e14:
        return value / 1e6  # microseconds
    if magnitude >= 1e11:
        return value / 1e3  # milliseconds (Vapi's message timestamps)
    return value


def _from_epoch(value: float) -> datetime | None:
    if not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(epoch_seconds(value), UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_vapi_time(value: Any) -> datetime | None:
    """Epoch number (ms or s), numeric string or ISO 8601 string -> aware UTC; else None."""
    kind = type(value)
    if kind is int or kind is float or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        # The common case first (Vapi sends epoch ms).
        try:
            return _from_epoch(float(value))
        except OverflowError:  # an int too large for a float (JSON allows any length)
            return None
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            return _from_epoch(float(text))
        except ValueError:
            pass
        try:
            return to_utc(datetime.fromisoformat(text))
        except ValueError:
            return None
    return None


# --- lenient building blocks ---------------------------------------------------

T = TypeVar("T")


def _none_on_error(value: Any, handler: Any) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


# A field that becomes None instead of failing its model when malformed.
Lenient = Annotated[T | None, WrapValidator(_none_on_error)]
# A Vapi timestamp in any documented form; unparsable -> None.
VapiTime = Annotated[datetime | None, PlainValidator(parse_vapi_time)]

_ROLE_ALIASES = {"bot": "assistant", "agent": "assistant", "customer": "user"}


def _role(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.strip().lower()
        return _ROLE_ALIASES.get(lowered, lowered)
    return value


Role = Annotated[Literal["user", "assistant"], BeforeValidator(_role)]
_ROLES = frozenset({"user", "assistant"})


def role_value(value: Any) -> str | None:
    """What `Role` validates `value` to, or None where `Role` would fail."""
    if type(value) is str:
        role = _role(value)
        if role in _ROLES:
            return role
    return None


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --- envelope ------------------------------------------------------------------


class VapiServer(_Wire):
    """`Server` config: where messages go and how long Vapi waits."""

    url: Lenient[str] = None
    timeoutSeconds: Lenient[float] = None
    credentialId: Lenient[str] = None


class VapiCall(_Wire):
    """`message.call`: a snapshot from call creation; only `id` is trustworthy (§1.4)."""

    id: Lenient[str] = None
    orgId: Lenient[str] = None
    type: Lenient[str] = None
    status: Lenient[str] = None
    endedReason: Lenient[str] = None
    createdAt: VapiTime = None
    startedAt: VapiTime = None
    endedAt: VapiTime = None
    cost: Lenient[float] = None


class VapiAssistant(_Wire):
    """The resolved assistant config (CreateAssistantDTO); we only read a few bits."""

    name: Lenient[str] = None
    server: Lenient[VapiServer] = None
    serverUrl: Lenient[str] = None  # pre-2025 form


class VapiPhoneNumber(_Wire):
    id: Lenient[str] = None
    number: Lenient[str] = None
    provider: Lenient[str] = None
    server: Lenient[VapiServer] = None


class VapiArtifact(_Wire):
    transcript: Lenient[str] = None
    messages: Lenient[list[Any]] = None
    messagesOpenAIFormatted: Lenient[list[Any]] = None
    recordingUrl: Lenient[str] = None
    stereoRecordingUrl: Lenient[str] = None
    performanceMetrics: Lenient[dict[str, Any]] = None


# Keys dropped from `raw` event data: large, repeated on every message, and
# already kept in the stored raw body.
ENVELOPE_KEYS: frozenset[str] = frozenset({"call", "assistant", "phoneNumber", "customer", "artifact"})


class ServerMessage(_Wire):
    """Fields shared by every server message; also the model for unknown types."""

    type: str
    timestamp: VapiTime = None
    call: Lenient[VapiCall] = None
    assistant: Lenient[VapiAssistant] = None
    phoneNumber: Lenient[VapiPhoneNumber] = None
    customer: Lenient[dict[str, Any]] = None
    artifact: Lenient[VapiArtifact] = None
    assistantVersion: Any = None

    @property
    def call_id(self) -> str | None:
        return self.call.id if self.call and self.call.id else None


# --- informational messages that become typed events ---------------------------


class StatusUpdateMessage(ServerMessage):
    status: str
    endedReason: Lenient[str] = None
    destination: Any = None


class SpeechUpdateMessage(ServerMessage):
    status: Literal["started", "stopped"]
    role: Role
    turn: int | None = None


class TranscriptMessage(ServerMessage):
    """`transcript` and `transcript[transcriptType="final"]`."""

    role: Role
    transcriptType: Literal["partial", "final"] | None = None
    transcript: str
    isFiltered: bool | None = None
    originalTranscript: str | None = None


class UserInterruptedMessage(ServerMessage):
    turnId: str | None = None


class HangMessage(ServerMessage):
    pass


class VapiAnalysis(_Wire):
    summary: Lenient[str] = None
    structuredData: Any = None
    successEvaluation: Any = None


class VapiCost(_Wire):
    type: Lenient[str] = None
    cost: Lenient[float] = None
    minutes: Lenient[float] = None


class EndOfCallReportMessage(ServerMessage):
    """New layout: `artifact` + `analysis`; old (2024): `summary`, `transcript`,
    `messages`, `recordingUrl` at the top. Every field is lenient: a malformed
    cost must not hide the fact that the call ended."""

    endedReason: Lenient[str] = None
    analysis: Lenient[VapiAnalysis] = None
    cost: Lenient[float] = None
    costs: Lenient[list[Lenient[VapiCost]]] = None
    startedAt: VapiTime = None
    endedAt: VapiTime = None
    durationSeconds: Lenient[float] = None
    durationMs: Lenient[float] = None
    durationMinutes: Lenient[float] = None
    # old top-level layout
    summary: Lenient[str] = None
    transcript: Lenient[str] = None
    recordingUrl: Lenient[str] = None
    stereoRecordingUrl: Lenient[str] = None
    messages: Lenient[list[Any]] = None


# --- tool calls -----------------------------------------------------------------


class ToolCallFunction(_Wire):
    name: Lenient[str] = None
    arguments: Any = None
    parameters: Any = None


class ToolCallItem(_Wire):
    """One tool call in any of the three documented shapes (§4.1):
    OAS `{id, type, function: {name, arguments: str}}`, captured traffic with
    `arguments` as an object, and the prose form `{id, name, parameters|arguments}`."""

    id: Lenient[str] = None
    type: Lenient[str] = None
    function: Lenient[ToolCallFunction] = None
    name: Lenient[str] = None
    arguments: Any = None
    parameters: Any = None

    @property
    def tool_name(self) -> str | None:
        return (self.function.name if self.function else None) or self.name

    @property
    def raw_arguments(self) -> Any:
        # Documented precedence: function.arguments ?? arguments ?? function.parameters ?? parameters.
        candidates = (
            self.function.arguments if self.function else None,
            self.arguments,
            self.function.parameters if self.function else None,
            self.parameters,
        )
        return next((value for value in candidates if value is not None), None)


class ToolWithToolCall(_Wire):
    """`toolWithToolCallList[i]`: the tool's config plus the call it made."""

    type: Lenient[str] = None
    name: Lenient[str] = None  # prose form
    function: Lenient[ToolCallFunction] = None  # here `parameters` is the JSON Schema
    async_: Lenient[bool] = Field(default=None, alias="async")
    server: Lenient[VapiServer] = None
    toolCall: Lenient[ToolCallItem] = None

    @property
    def tool_name(self) -> str | None:
        return (self.function.name if self.function else None) or self.name


class ToolCallsMessage(ServerMessage):
    # Items stay untyped here so one bad item cannot spoil the others.
    toolCallList: Lenient[list[Any]] = None
    toolCalls: Lenient[list[Any]] = None  # legacy duplicate of toolCallList
    toolWithToolCallList: Lenient[list[Any]] = None

    def tools_with_calls(self) -> list[ToolWithToolCall]:
        tools = []
        for entry in self.toolWithToolCallList or ():
            try:
                tools.append(ToolWithToolCall.model_validate(entry))
            except ValidationError:
                continue
        return tools


class FunctionCallPayload(_Wire):
    name: str
    parameters: Any = None  # a JSON string (EVT-old) or an object (EX flask)
    arguments: Any = None


class FunctionCallMessage(ServerMessage):
    """Legacy pre-tools `function-call` (§4.4)."""

    functionCall: FunctionCallPayload


# --- request messages answered from config ---------------------------------------


class AssistantRequestMessage(ServerMessage):
    pass


class TransferDestinationRequestMessage(ServerMessage):
    pass


class HandoffDestinationRequestMessage(ServerMessage):
    parameters: Any = None


class KnowledgeBaseRequestMessage(ServerMessage):
    messages: Lenient[list[Any]] = None
    messagesOpenAIFormatted: Lenient[list[Any]] = None


class VoiceRequestMessage(ServerMessage):
    text: Lenient[str] = None
    sampleRate: Lenient[int] = None


class EndpointingRequestMessage(ServerMessage):
    messages: Lenient[list[Any]] = None
    messagesOpenAIFormatted: Lenient[list[Any]] = None


class CampaignPredialMessage(ServerMessage):
    campaignId: Lenient[str] = None
    contact: Any = None


# --- informational messages kept as raw events -------------------------------------


class ConversationUpdateMessage(ServerMessage):
    messages: Lenient[list[Any]] = None
    messagesOpenAIFormatted: Lenient[list[Any]] = None


class ModelOutputMessage(ServerMessage):
    output: Any = None  # a token string or a tool-call object [unverified shape]
    turnId: Lenient[str] = None


class AssistantSpeechStartedMessage(ServerMessage):
    text: Lenient[str] = None  # the whole turn so far, not a delta
    turn: Lenient[int] = None
    source: Lenient[str] = None
    timing: Any = None


class AssistantStartedMessage(ServerMessage):
    newAssistant: Any = None


class TransferUpdateMessage(ServerMessage):
    destination: Any = None
    toAssistant: Any = None
    fromAssistant: Any = None
    toStepRecord: Any = None
    fromStepRecord: Any = None


class PhoneCallControlMessage(ServerMessage):
    request: Lenient[str] = None  # "forward" | "hang-up"
    destination: Any = None


class LanguageChangeDetectedMessage(ServerMessage):
    language: Lenient[str] = None


class VoiceInputMessage(ServerMessage):
    input: Lenient[str] = None


class ChatMessage(ServerMessage):
    chat: Any = None


class SessionMessage(ServerMessage):
    session: Any = None


class CallArtifactUploadMessage(ServerMessage):
    artifacts: Lenient[list[Any]] = None


TRANSCRIPT_FINAL_ONLY = 'transcript[transcriptType="final"]'

# Every documented type -> its model. Anything else parses as `ServerMessage`.
MESSAGE_MODELS: dict[str, type[ServerMessage]] = {
    "assistant-request": AssistantRequestMessage,
    "status-update": StatusUpdateMessage,
    "speech-update": SpeechUpdateMessage,
    "transcript": TranscriptMessage,
    TRANSCRIPT_FINAL_ONLY: TranscriptMessage,
    "user-interrupted": UserInterruptedMessage,
    "model-output": ModelOutputMessage,
    "conversation-update": ConversationUpdateMessage,
    "tool-calls": ToolCallsMessage,
    "function-call": FunctionCallMessage,
    "hang": HangMessage,
    "end-of-call-report": EndOfCallReportMessage,
    "transfer-destination-request": TransferDestinationRequestMessage,
    "handoff-destination-request": HandoffDestinationRequestMessage,
    "transfer-update": TransferUpdateMessage,
    "phone-call-control": PhoneCallControlMessage,
    "knowledge-base-request": KnowledgeBaseRequestMessage,
    "language-change-detected": LanguageChangeDetectedMessage,
    "language-changed": LanguageChangeDetectedMessage,
    "voice-input": VoiceInputMessage,
    "voice-request": VoiceRequestMessage,
    "call.endpointing.request": EndpointingRequestMessage,
    "assistant.speechStarted": AssistantSpeechStartedMessage,
    "assistant.started": AssistantStartedMessage,
    "chat.created": ChatMessage,
    "chat.deleted": ChatMessage,
    "session.created": SessionMessage,
    "session.updated": SessionMessage,
    "session.deleted": SessionMessage,
    "call.deleted": ServerMessage,
    "call.delete.failed": ServerMessage,
    "call.artifact.upload": CallArtifactUploadMessage,
    "campaign.predial": CampaignPredialMessage,
}


def parse_message(message: dict[str, Any]) -> ServerMessage:
    """Validate one `message` object with its type's model (raises ValidationError)."""
    model = MESSAGE_MODELS.get(message.get("type", ""), ServerMessage)
    return model.model_validate(message)


# --- tool-call arguments -------------------------------------------------------------

# Where arguments that are not a JSON object end up, so the operator still sees them.
# One decoder for tool arguments, shared with the forwarder (which must tell an
# edit from the platform's own encoding).
coerce_arguments = decode_arguments
