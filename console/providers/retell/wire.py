"""Retell AI wire formats (webhooks, inbound-call webhook, custom functions).

Models are deliberately loose: Retell adds fields often and the API moved twice
in 2026, so unknown keys are kept (`extra="allow"`) and everything we do not
strictly need is optional. Only the fields the console reads are typed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from console.core.events import Role

# Events Retell documents for voice calls; anything else is kept as `raw`.
CALL_EVENTS = frozenset(
    {
        "call_started",
        "call_ended",
        "call_analyzed",
        "transcript_updated",
        "transfer_started",
        "transfer_bridged",
        "transfer_cancelled",
        "transfer_ended",
    }
)
SPEECH_ROLES: dict[str, Role] = {"agent": "assistant", "user": "user"}
# Items of transcript_with_tool_calls that are utterances (the rest are tool calls, dtmf, ...).
UTTERANCE_ROLES = frozenset({"agent", "user", "transfer_target"})


class _Loose(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


# A word time beyond this (seconds from the call's start) is not a word time: it is dropped.
MAX_WORD_TIME_S = 7 * 24 * 3600


class Word(_Loose):
    word: str | None = None
    start: float | None = None  # seconds from call start
    end: float | None = None

    @field_validator("start", "end")
    @classmethod
    def _a_time_in_the_call(cls, value: float | None) -> float | None:
        """NaN, infinities, negative or absurd times carry no timing: treated as absent."""
        if value is None or not (0 <= value <= MAX_WORD_TIME_S):
            return None
        return value


class Utterance(_Loose):
    """An item of `transcript_object` (agent, user or transfer_target speech)."""

    role: str
    content: str | None = None
    words: list[Word] = Field(default_factory=list)

    @property
    def first_word_start(self) -> float | None:
        return next((w.start for w in self.words if w.start is not None), None)

    @property
    def last_word_end(self) -> float | None:
        return next((w.end for w in reversed(self.words) if w.end is not None), None)


class CallCost(_Loose):
    combined_cost: float | None = None  # cents


class CallAnalysis(_Loose):
    call_summary: str | None = None
    in_voicemail: bool | None = None
    user_sentiment: str | None = None
    call_successful: bool | None = None
    custom_analysis_data: Any = None


class RetellCall(_Loose):
    """The call object (the same shape get-call returns); all times are epoch ms."""

    call_id: str
    call_type: str | None = None
    agent_id: str | None = None
    direction: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    call_status: str | None = None
    start_timestamp: float | None = None
    end_timestamp: float | None = None
    duration_ms: float | None = None
    disconnection_reason: str | None = None
    transcript: str | None = None
    transcript_object: list[Utterance] | None = None
    # Speech items plus tool_call_invocation / tool_call_result / dtmf / ... items.
    transcript_with_tool_calls: list[dict[str, Any]] | None = None
    call_cost: CallCost | None = None
    call_analysis: CallAnalysis | None = None
    metadata: dict[str, Any] | None = None


class CallInbound(_Loose):
    """`call_inbound` body of the inbound-call webhook; it carries no call id."""

    agent_id: str | None = None
    agent_version: int | str | None = None
    from_number: str | None = None
    to_number: str | None = None


class FunctionCall(_Loose):
    """Body of a custom-function request with the default (full) payload."""

    name: str
    args: dict[str, Any] | None = None
    call: RetellCall | None = None
