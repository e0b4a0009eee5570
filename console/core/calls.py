"""Live call state derived from normalized events, across deliveries.

Providers normalize one message at a time; some facts only appear across
messages. The tracker sits between the providers and the store and:
- derives a `barge_in` when the user starts speaking while the assistant speaks,
  and keeps exactly one `barge_in` per interruption whether it was seen as
  Vapi's `user-interrupted`, as overlapping speech, or both;
- fills `cut_text` (what the assistant did not get to say) when it is known:
  the model's output for the turn minus what was already spoken;
- drops transcript finals already seen (platforms resend whole transcripts);
- keeps per-call status by the events' own timestamps, because deliveries can
  arrive late and out of order, and per-turn latency (user stops -> assistant starts).

State is bounded: at most `max_calls` calls, least recently active evicted.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from console.core.events import (
    BargeIn,
    CallEnded,
    CallStatus,
    Event,
    Raw,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
)

# Two sightings of one interruption (user-interrupted and overlapping speech)
# arrive within a second or two of each other.
BARGE_IN_WINDOW = timedelta(seconds=2.0)
# One utterance told twice, live by a tap and later by the webhooks' transcript, lands this close.
SAME_UTTERANCE_WINDOW = timedelta(seconds=60)
_MAX_INTERVALS = 64
_MAX_FINALS = 4096
# How long after its end a call keeps what dedupes late deliveries (finals, model
# output, speech spans); then only its summary stays, so 2000 ended calls stay small.
ENDED_KEEP_DETAIL = timedelta(minutes=2)


def short_id(value: str | None, size: int = 8) -> str:
    """A call id as the console shows it: its first characters, without Retell's `call_` prefix."""
    if not value:
        return "—"
    value = value.removeprefix("call_")
    return value[:size]


# An attached console's stand-in for a call's control URL: the receiver knows it and steers through it.
HELD_BY_RECEIVER = "held by the receiver"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_iso(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


@dataclass
class CallState:
    call_id: str
    provider: str
    status: str | None = None
    status_at: datetime | None = None
    ended_reason: str | None = None
    first_at: datetime | None = None
    last_at: datetime | None = None
    barge_ins: int = 0
    speaking: set[str] = field(default_factory=set)  # roles speaking now
    last_turn_latency_ms: float | None = None
    # Vapi's `call.monitor.controlUrl`: a capability (whoever has it steers the call),
    # so it stays out of repr and is shown only masked.
    control_url: str | None = field(default=None, repr=False)
    # internals
    _assistant_spans: deque[list[datetime | None]] = field(default_factory=lambda: deque(maxlen=_MAX_INTERVALS))
    _user_stopped_at: datetime | None = None
    _barge_in_times: deque[datetime] = field(default_factory=lambda: deque(maxlen=_MAX_INTERVALS))
    _finals: set[tuple[str, str, str]] = field(default_factory=set)
    _finals_order: deque[tuple[str, str, str]] = field(default_factory=deque)
    # (role, text) -> finals not yet matched by the other source: [(at, source)]
    _unmatched_finals: dict[tuple[str, str], deque[tuple[datetime, str | None]]] = field(default_factory=dict)
    _model_output: dict[str, str] = field(default_factory=dict)  # turnId -> text produced
    _last_turn_id: str | None = None
    _spoken_text: str = ""  # what the assistant has said in its current turn

    def summary(self) -> dict[str, Any]:
        """What a console attached to this receiver shows of the call: its summary fields, and
        whether a control URL is known (never the URL: it is a capability the receiver keeps)."""
        return {
            "call_id": self.call_id,
            "provider": self.provider,
            "status": self.status,
            "status_at": _iso(self.status_at),
            "ended_reason": self.ended_reason,
            "first_at": _iso(self.first_at),
            "last_at": _iso(self.last_at),
            "barge_ins": self.barge_ins,
            "speaking": sorted(self.speaking),
            "last_turn_latency_ms": self.last_turn_latency_ms,
            "controllable": self.control_url is not None,
        }

    @classmethod
    def from_summary(cls, data: dict[str, Any]) -> CallState:
        """The call as `summary()` described it; a known control URL stands as `HELD_BY_RECEIVER`."""
        return cls(
            call_id=str(data["call_id"]),
            provider=str(data["provider"]),
            status=data.get("status"),
            status_at=_parse_iso(data.get("status_at")),
            ended_reason=data.get("ended_reason"),
            first_at=_parse_iso(data.get("first_at")),
            last_at=_parse_iso(data.get("last_at")),
            barge_ins=int(data.get("barge_ins") or 0),
            speaking=set(data.get("speaking") or ()),
            last_turn_latency_ms=data.get("last_turn_latency_ms"),
            control_url=HELD_BY_RECEIVER if data.get("controllable") else None,
        )

    def forget_details(self) -> None:
        """Drop what only matters while deliveries can still arrive; the summary fields stay."""
        self._assistant_spans.clear()
        self._barge_in_times.clear()
        self._finals.clear()
        self._finals_order.clear()
        self._unmatched_finals.clear()
        self._model_output.clear()
        self._spoken_text = ""

    def assistant_speaking_at(self, at: datetime) -> bool:
        for start, stop in reversed(self._assistant_spans):
            if start is not None and start <= at and (stop is None or stop > at):
                return True
        return False


class CallTracker:
    def __init__(self, max_calls: int = 2000) -> None:
        self._calls: OrderedDict[str, CallState] = OrderedDict()
        self._max_calls = max_calls
        # Control URLs learnt before the call's first event (e.g. from the dial answer).
        self._early_control_urls: OrderedDict[str, str] = OrderedDict()
        self._ended: deque[tuple[datetime, str]] = deque()  # (ended at, call id), oldest first

    def get(self, call_id: str) -> CallState | None:
        return self._calls.get(call_id)

    def note_control_url(self, call_id: str, url: str) -> None:
        """Remember a call's live-control URL (from a webhook or the dial answer)."""
        state = self._calls.get(call_id)
        if state is not None:
            state.control_url = url
            return
        self._early_control_urls[call_id] = url
        if len(self._early_control_urls) > 64:
            self._early_control_urls.popitem(last=False)

    def control_url(self, call_id: str | None) -> str | None:
        """The call's live-control URL, however it was learnt (webhooks, the dial answer)."""
        if call_id is None:
            return None
        state = self._calls.get(call_id)
        return state.control_url if state is not None else self._early_control_urls.get(call_id)

    def calls(self) -> list[CallState]:
        return list(self._calls.values())

    def forget(self, call_id: str) -> None:
        """Drop a call's state: its next event starts it afresh (a call replayed once more)."""
        self._calls.pop(call_id, None)

    def _state(self, event: Event) -> CallState | None:
        if event.call_id is None:
            return None
        state = self._calls.get(event.call_id)
        if state is None:
            state = CallState(
                event.call_id, event.provider, control_url=self._early_control_urls.pop(event.call_id, None)
            )
            self._calls[event.call_id] = state
            if len(self._calls) > self._max_calls:
                self._calls.popitem(last=False)
        else:
            self._calls.move_to_end(event.call_id)
        return state

    def process(self, events: list[Event]) -> list[Event]:
        """Return the events to keep for one delivery, with derived ones added."""
        out: list[Event] = []
        if events and self._ended:
            self._forget_ended_before(events[-1].at - ENDED_KEEP_DETAIL)
        for event in events:
            state = self._state(event)
            if state is None:
                out.append(event)
                continue
            if state.first_at is None or event.at < state.first_at:
                state.first_at = event.at
            if state.last_at is None or event.at > state.last_at:
                state.last_at = event.at
            out.extend(self._apply(state, event))
        return out

    def _forget_ended_before(self, cutoff: datetime) -> None:
        while self._ended and self._ended[0][0] < cutoff:
            _, call_id = self._ended.popleft()
            state = self._calls.get(call_id)
            if state is not None and state.status == "ended":
                state.forget_details()

    def _mark_ended(self, state: CallState, at: datetime) -> None:
        self._ended.append((at, state.call_id))
        if len(self._ended) > self._max_calls:
            self._ended.popleft()

    def _apply(self, state: CallState, event: Event) -> list[Event]:
        if isinstance(event, CallStatus):
            # "ended" is terminal whatever the clocks say (Twilio dates callbacks to the second).
            if state.status == "ended" and event.status != "ended":
                return [event]
            if state.status_at is None or event.at >= state.status_at or event.status == "ended":
                if event.status == "ended" and state.status != "ended":
                    self._mark_ended(state, event.at)
                state.status, state.status_at = event.status, event.at
                if event.ended_reason:
                    state.ended_reason = event.ended_reason
            return [event]
        if isinstance(event, CallEnded):
            # An end-of-call report ends the call even when no "ended" status came first.
            if state.status != "ended":
                self._mark_ended(state, event.at)
                state.status, state.status_at = "ended", event.at
            if event.reason:
                state.ended_reason = event.reason
            state.speaking.clear()
            return [event]
        if isinstance(event, SpeechStarted):
            return self._speech_started(state, event)
        if isinstance(event, SpeechStopped):
            state.speaking.discard(event.role)
            if event.role == "assistant":
                for span in reversed(state._assistant_spans):
                    if span[1] is None and span[0] is not None and span[0] <= event.at:
                        span[1] = event.at
                        break
            else:
                state._user_stopped_at = event.at
            return [event]
        if isinstance(event, BargeIn):
            return self._barge_in(state, event)
        if isinstance(event, TranscriptFinal):
            key = (event.role, event.text, event.at.isoformat())
            if key in state._finals:
                return []
            state._finals.add(key)
            state._finals_order.append(key)
            if len(state._finals_order) > _MAX_FINALS:
                state._finals.discard(state._finals_order.popleft())
            if self._told_by_the_other_source(state, event):
                return []
            if event.role == "assistant":
                state._spoken_text = event.text
            return [event]
        if isinstance(event, TranscriptPartial):
            if event.role == "assistant":
                state._spoken_text = event.text
            return [event]
        if isinstance(event, Raw):
            self._observe_raw(state, event)
            return [event]
        return [event]

    def _speech_started(self, state: CallState, event: SpeechStarted) -> list[Event]:
        out: list[Event] = [event]
        if event.role == "assistant":
            state._assistant_spans.append([event.at, None])
            state._spoken_text = ""
            if state._user_stopped_at is not None and event.at >= state._user_stopped_at:
                state.last_turn_latency_ms = (event.at - state._user_stopped_at).total_seconds() * 1000
                state._user_stopped_at = None
        elif state.assistant_speaking_at(event.at):
            derived = BargeIn(
                at=event.at,
                provider=event.provider,
                call_id=event.call_id,
                source="speech-overlap",
            )
            out.extend(self._barge_in(state, derived))
        state.speaking.add(event.role)
        return out

    @staticmethod
    def _told_by_the_other_source(state: CallState, event: TranscriptFinal) -> bool:
        """Whether this utterance was already shown by the other source (the tap's live view or the
        webhooks' transcript): each utterance once, while a repeated "Yes." still counts twice."""
        twin = (event.role, event.text)
        told = state._unmatched_finals.get(twin)
        if told is not None:
            for index, (at, source) in enumerate(told):
                if source != event.source and abs(at - event.at) <= SAME_UTTERANCE_WINDOW:
                    del told[index]
                    return True
        else:
            if len(state._unmatched_finals) >= _MAX_FINALS:
                state._unmatched_finals.pop(next(iter(state._unmatched_finals)))
            told = state._unmatched_finals[twin] = deque(maxlen=8)
        told.append((event.at, event.source))
        return False

    def _barge_in(self, state: CallState, event: BargeIn) -> list[Event]:
        for seen in state._barge_in_times:
            if abs(seen - event.at) <= BARGE_IN_WINDOW:
                return []  # the same interruption, already recorded
        state._barge_in_times.append(event.at)
        state.barge_ins += 1
        if event.cut_text is None:
            cut = self._cut_text(state, event.turn_id)
            if cut:
                event = event.model_copy(update={"cut_text": cut})
        return [event]

    def _observe_raw(self, state: CallState, event: Raw) -> None:
        data: dict[str, Any] = event.data
        if event.type == "model-output":
            turn = str(data.get("turnId") or data.get("turn_id") or "")
            output = data.get("output")
            if isinstance(output, str):
                state._model_output[turn] = state._model_output.get(turn, "") + output
                state._last_turn_id = turn
                if len(state._model_output) > _MAX_INTERVALS:
                    state._model_output.pop(next(iter(state._model_output)))
        elif event.type == "assistant.speechStarted":
            text = data.get("text")
            if isinstance(text, str):
                state._spoken_text = text  # the whole turn so far, not a delta

    @staticmethod
    def _cut_text(state: CallState, turn_id: str | None = None) -> str | None:
        turn_id = turn_id if turn_id in state._model_output else state._last_turn_id
        if turn_id is None:
            return None
        intended = state._model_output.get(turn_id, "").strip()
        spoken = state._spoken_text.strip()
        if not intended:
            return None
        if not spoken:
            return intended
        if intended.startswith(spoken):
            return intended[len(spoken) :].strip() or None
        return None
