"""Retell wire models -> normalized events.

Pure functions plus one small bounded memory (`SeenOnce`): transcript_updated
repeats the whole transcript at every turn, so non-speech transcript items (tool
invocations and results, DTMF, transfer-target speech, ...) are emitted as `raw`
once per call instead of once per delivery. Repeated speech finals are left to
the call tracker, which de-duplicates them by (call, role, at, text).

Retell's webhooks carry no speech or interruption events, but every word of
`transcript_object` has its start and end: `speech_events` derives who spoke
when, and a `barge_in` wherever the caller started talking before the agent's
last word (see its docstring).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from pydantic import ValidationError

from console.core.events import (
    BargeIn,
    CallEnded,
    CallStatus,
    Event,
    Raw,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
)
from console.providers.retell.wire import SPEECH_ROLES, UTTERANCE_ROLES, RetellCall, Utterance

PROVIDER: Final = "retell"
# Above this an epoch number is taken as milliseconds (year 5138 in seconds).
_MS_THRESHOLD = 100_000_000_000


def epoch_to_dt(value: float | None) -> datetime | None:
    """Retell times are epoch ms; tolerate seconds and reject nonsense."""
    if value is None or value <= 0:
        return None
    seconds = value / 1000 if value >= _MS_THRESHOLD else value
    try:
        return datetime.fromtimestamp(seconds, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


class SeenOnce:
    """A bounded set answering "is this the first time?" (oldest keys forgotten first)."""

    def __init__(self, limit: int = 20_000) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def first(self, key: str) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._limit:
            self._keys.popitem(last=False)
        return True


def _item_key(call_id: str, item: dict[str, Any]) -> str:
    canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return call_id + ":" + hashlib.sha256(canonical.encode()).hexdigest()


def _speech(call: RetellCall) -> list[Utterance]:
    if call.transcript_object is not None:
        return call.transcript_object
    utterances = []
    for item in call.transcript_with_tool_calls or []:
        role = item.get("role")
        if isinstance(role, str) and role in UTTERANCE_ROLES:  # a non-str role may be unhashable
            try:
                utterances.append(Utterance.model_validate(item))
            except ValidationError:
                continue  # one odd item must not cost the rest; the delivery itself is stored
    return utterances


def utterance_count(call: RetellCall | None) -> int:
    return len(_speech(call)) if call is not None else 0


def transcript_events(call: RetellCall, fallback_at: datetime, seen: SeenOnce) -> list[Event]:
    """Finals for agent/user speech, `raw` (once per call) for every other transcript item.

    An utterance is dated call start + its first word's start. Without word
    times it takes the previous utterance's end (or the call start), which only
    depends on the transcript so far, so repeated deliveries give the same `at`.
    """
    start = epoch_to_dt(call.start_timestamp)
    events: list[Event] = []
    cursor = start or fallback_at
    for utt in _speech(call):
        first = utt.first_word_start
        at = start + timedelta(seconds=first) if start is not None and first is not None else cursor
        last = utt.last_word_end
        cursor = start + timedelta(seconds=last) if start is not None and last is not None else at
        role = SPEECH_ROLES.get(utt.role)
        if role is not None:
            if utt.content and utt.content.strip():
                events.append(
                    TranscriptFinal(at=at, provider=PROVIDER, call_id=call.call_id, role=role, text=utt.content)
                )
        else:
            item = utt.model_dump(mode="json", exclude_none=True)
            if seen.first(_item_key(call.call_id, item)):
                events.append(Raw(at=at, provider=PROVIDER, call_id=call.call_id, type=utt.role, data=item))
    for item in call.transcript_with_tool_calls or []:
        role = item.get("role")
        if not isinstance(role, str) or role in UTTERANCE_ROLES:
            continue  # speech was handled above
        if seen.first(_item_key(call.call_id, item)):
            events.append(Raw(at=fallback_at, provider=PROVIDER, call_id=call.call_id, type=role, data=item))
    return events


def speech_events(call: RetellCall, seen: SeenOnce, *, complete: bool) -> list[Event]:
    """`speech.started`/`speech.stopped` per agent or user utterance from its word times, and a
    `barge_in` wherever the user's first word starts while an agent utterance is still going:
    `cut_text` is the agent's words from that moment on (what the caller talked over), `at`
    the user's first word. Each is emitted once per call however often the transcript repeats
    or in whatever order deliveries arrive. The last utterance may still grow, so its speech
    events wait for the next update unless `complete` (the call ended); its barge-in does not.
    The barge-in comes before the user's `speech.started` it explains, so the call tracker
    keeps this one (with its cut text) and not the overlap it would derive itself.
    """
    start = epoch_to_dt(call.start_timestamp)
    if start is None:
        return []
    spoken = [
        (utt, SPEECH_ROLES[utt.role], first, last)
        for utt in _speech(call)
        if utt.role in SPEECH_ROLES
        and (first := utt.first_word_start) is not None
        and (last := utt.last_word_end) is not None
    ]
    timed: list[tuple[float, int, Event]] = []  # (seconds from call start, order at a tie, event)
    cid = call.call_id
    for index, (_, role, first, last) in enumerate(spoken):
        if role == "user":
            for agent, agent_role, agent_first, agent_last in spoken:
                if agent_role == "assistant" and agent_first < first < agent_last:
                    if seen.first(f"{cid}:barge:{first}"):
                        cut = " ".join(
                            w.word for w in agent.words if w.word and w.start is not None and w.start >= first
                        )
                        barge = BargeIn(
                            at=start + timedelta(seconds=first),
                            provider=PROVIDER,
                            call_id=cid,
                            cut_text=cut or None,
                            source="word-timings",
                        )
                        timed.append((first, 0, barge))
                    break
        if (complete or index < len(spoken) - 1) and seen.first(f"{cid}:speech:{role}:{first}"):
            # At a tie, one speaker stopping goes before another starting (no overlap, so no barge-in
            # derived from it); a zero-length utterance still starts before it stops.
            timed.append(
                (
                    first,
                    2,
                    SpeechStarted(at=start + timedelta(seconds=first), provider=PROVIDER, call_id=cid, role=role),
                )
            )
            stop_order = 1 if last > first else 3
            stopped = SpeechStopped(at=start + timedelta(seconds=last), provider=PROVIDER, call_id=cid, role=role)
            timed.append((last, stop_order, stopped))
    return [event for _, _, event in sorted(timed, key=lambda item: (item[0], item[1]))]


def _duration_s(call: RetellCall) -> float | None:
    if call.duration_ms is not None:
        return call.duration_ms / 1000
    if call.start_timestamp and call.end_timestamp:
        return max(0.0, (call.end_timestamp - call.start_timestamp) / 1000)
    return None


def _cost_usd(call: RetellCall) -> float | None:
    # Retell reports cents; the normalized `cost` is in US dollars like Vapi's.
    if call.call_cost is None or call.call_cost.combined_cost is None:
        return None
    return round(call.call_cost.combined_cost / 100, 6)


def call_ended(call: RetellCall, at: datetime, *, summary: bool) -> CallEnded:
    return CallEnded(
        at=at,
        provider=PROVIDER,
        call_id=call.call_id,
        reason=call.disconnection_reason,
        summary=call.call_analysis.call_summary if summary and call.call_analysis else None,
        cost=_cost_usd(call),
        duration_s=_duration_s(call),
    )


def call_events(event: str, call: RetellCall, body: dict[str, Any], at: datetime, seen: SeenOnce) -> list[Event]:
    """Events for one Retell call webhook; `at` is the delivery's own time."""
    cid = call.call_id
    started = epoch_to_dt(call.start_timestamp)
    ended = epoch_to_dt(call.end_timestamp) or at
    if event == "call_started":
        return [CallStatus(at=started or at, provider=PROVIDER, call_id=cid, status="in-progress")]
    if event == "call_ended":
        return [
            CallStatus(
                at=ended, provider=PROVIDER, call_id=cid, status="ended", ended_reason=call.disconnection_reason
            ),
            call_ended(call, ended, summary=False),
            *transcript_events(call, at, seen),
            *speech_events(call, seen, complete=True),
        ]
    if event == "call_analyzed":
        return [call_ended(call, ended, summary=True)]
    if event == "transcript_updated":
        return [*transcript_events(call, at, seen), *speech_events(call, seen, complete=False)]
    raw: list[Event] = [Raw(at=at, provider=PROVIDER, call_id=cid, type=event, data=body)]
    # A transfer moves the call out of the agent's hands and, if cancelled, back.
    if event == "transfer_started":
        return [CallStatus(at=at, provider=PROVIDER, call_id=cid, status="forwarding"), *raw]
    if event == "transfer_cancelled":
        return [CallStatus(at=at, provider=PROVIDER, call_id=cid, status="in-progress"), *raw]
    return raw


def delivery_time(event: str, body: dict[str, Any], call: RetellCall | None, received_at: datetime) -> datetime:
    """event_timestamp, else the call time the event is about, else the receipt time."""
    stamp = body.get("event_timestamp")
    if isinstance(stamp, (int, float)) and not isinstance(stamp, bool):
        when = epoch_to_dt(stamp)
        if when is not None:
            return when
    if call is not None:
        if event == "call_started":
            when = epoch_to_dt(call.start_timestamp)
        elif event in ("call_ended", "call_analyzed"):
            when = epoch_to_dt(call.end_timestamp) or epoch_to_dt(call.start_timestamp)
        else:
            when = None
        if when is not None:
            return when
    return received_at


def function_call_id(call_id: str | None, name: str, args: dict[str, Any], utterances: int) -> str:
    """Stable across Retell's retries of the same request, new for a later call with the same args."""
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    material = "\x1f".join((call_id or "", name, canonical, str(utterances)))
    return "rt_" + hashlib.sha256(material.encode()).hexdigest()[:24]
