"""Who spoke when, per call: the model behind the barge-in timeline.

Built from normalized events only: `speech.started` / `speech.stopped` give the
caller's and the agent's speech intervals (when a platform sends no speech
events for a role, its transcripts stand in: the first partial opens an
interval, the final closes it); `barge_in` puts a mark where the caller cut the
agent off. Per turn it measures the latency (caller stops -> agent starts) and,
per barge-in, the time the agent took to stop talking (barge-in -> agent's
speech.stopped). Everything is bounded: intervals, turns and marks per call,
and calls per book.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from statistics import median

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

ROLES = ("user", "assistant")
MAX_INTERVALS = 240  # per role: far more than a minute of turns
MAX_TURNS = 120
MAX_MARKS = 120
MAX_CALLS = 200
# A platform may report the interruption a little after the agent's voice stopped.
LATE_BARGE_IN = timedelta(seconds=2.0)
# The record a tap writes when the operator cuts the agent off (`x`): its own mark, never a barge-in
# (it is not the caller's, and the agent's time-to-stop does not apply).
OPERATOR_CUT_OFF = "operator.cut_off"


@dataclass
class Interval:
    role: str
    start: datetime
    stop: datetime | None = None  # None: still speaking

    def overlaps(self, begin: datetime, end: datetime) -> bool:
        return self.start < end and (self.stop is None or self.stop > begin)


@dataclass(frozen=True)
class Turn:
    """The caller stopped, then the agent started: the wait the caller heard."""

    user_stopped_at: datetime
    agent_started_at: datetime

    @property
    def latency_ms(self) -> float:
        return (self.agent_started_at - self.user_stopped_at).total_seconds() * 1000


@dataclass
class BargeMark:
    at: datetime
    cut_text: str | None = None
    agent_stopped_at: datetime | None = None  # None: the agent has not stopped yet
    # False while the agent has no speech events on this call (only transcripts): when it stopped is unknown.
    measured: bool = True
    source: str | None = None  # how it was seen ("talked-over": the agent never stopped for the caller)

    @property
    def time_to_stop_ms(self) -> float | None:
        if self.agent_stopped_at is None:
            return None
        return max(0.0, (self.agent_stopped_at - self.at).total_seconds() * 1000)


@dataclass(frozen=True)
class CutOffMark:
    """The operator cut the agent off: `dropped_ms` of its queued audio never played."""

    at: datetime
    dropped_ms: float | None = None
    cut_text: str | None = None


@dataclass
class CallTimeline:
    call_id: str
    lanes: dict[str, deque[Interval]] = field(
        default_factory=lambda: {role: deque(maxlen=MAX_INTERVALS) for role in ROLES}
    )
    turns: deque[Turn] = field(default_factory=lambda: deque(maxlen=MAX_TURNS))
    barge_ins: deque[BargeMark] = field(default_factory=lambda: deque(maxlen=MAX_MARKS))
    cut_offs: deque[CutOffMark] = field(default_factory=lambda: deque(maxlen=MAX_MARKS))
    first_at: datetime | None = None
    last_at: datetime | None = None
    ended_at: datetime | None = None
    version: int = 0
    _speech_seen: set[str] = field(default_factory=set)  # roles with real speech events
    _user_stopped_at: datetime | None = None

    # --- building -------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        at = event.at
        if self.first_at is None or at < self.first_at:
            self.first_at = at
        if self.last_at is None or at > self.last_at:
            self.last_at = at
        if isinstance(event, SpeechStarted):
            self._speech_seen.add(event.role)
            self._started(event.role, at)
        elif isinstance(event, SpeechStopped):
            self._speech_seen.add(event.role)
            self._stopped(event.role, at)
        elif isinstance(event, TranscriptPartial) and event.role not in self._speech_seen:
            if not self.speaking(event.role):
                self._started(event.role, at)
        elif isinstance(event, TranscriptFinal) and event.role not in self._speech_seen:
            if not self.speaking(event.role):
                self._started(event.role, at)
            self._stopped(event.role, at)
        elif isinstance(event, BargeIn):
            self._barge_in(event)
        elif isinstance(event, Raw) and event.type == OPERATOR_CUT_OFF:
            dropped, cut = event.data.get("dropped_ms"), event.data.get("cut")
            self.cut_offs.append(
                CutOffMark(
                    at,
                    float(dropped) if isinstance(dropped, (int, float)) else None,
                    str(cut) if cut else None,
                )
            )
        elif (isinstance(event, CallStatus) and event.status == "ended") or isinstance(event, CallEnded):
            if self.ended_at is None:
                self.ended_at = at
                for role in ROLES:  # nobody speaks on a call that is over
                    if self.speaking(role):
                        self._stopped(role, at)
        else:
            return
        self.version += 1

    def speaking(self, role: str) -> bool:
        lane = self.lanes[role]
        return bool(lane) and lane[-1].stop is None

    def _started(self, role: str, at: datetime) -> None:
        if self.speaking(role):
            return  # a repeated "started": the interval is already open
        self.lanes[role].append(Interval(role, at))
        if role == "assistant" and self._user_stopped_at is not None and at >= self._user_stopped_at:
            self.turns.append(Turn(self._user_stopped_at, at))
            self._user_stopped_at = None

    def _stopped(self, role: str, at: datetime) -> None:
        lane = self.lanes[role]
        if self.speaking(role):
            lane[-1].stop = max(at, lane[-1].start)
        if role == "user":
            self._user_stopped_at = at
        elif role in self._speech_seen:
            # Time-to-stop only from the agent's real speech events: a lane drawn from its transcript
            # stops when the text arrives, which would read as a made-up "stopped after 0 ms".
            for mark in self.barge_ins:
                if mark.agent_stopped_at is None and mark.at <= at:
                    mark.agent_stopped_at, mark.measured = at, True

    def _barge_in(self, event: BargeIn) -> None:
        mark = BargeMark(event.at, event.cut_text, measured="assistant" in self._speech_seen, source=event.source)
        self.barge_ins.append(mark)
        if not mark.measured:
            return  # settled by the agent's first real speech.stopped, if one comes
        # Which agent interval was cut: the one speaking at the mark, or one that
        # stopped just before the platform's (late) report of it.
        for interval in reversed(self.lanes["assistant"]):
            if interval.start > event.at:
                continue
            if interval.stop is None:
                break  # still speaking: its speech.stopped will settle the mark
            if interval.stop >= event.at - LATE_BARGE_IN:
                mark.agent_stopped_at = interval.stop
            break

    # --- reading --------------------------------------------------------------------------

    def intervals(self, role: str, begin: datetime, end: datetime) -> list[Interval]:
        return [interval for interval in self.lanes[role] if interval.overlaps(begin, end)]

    def marks(self, begin: datetime, end: datetime) -> list[BargeMark]:
        return [mark for mark in self.barge_ins if begin <= mark.at <= end]

    def cut_offs_between(self, begin: datetime, end: datetime) -> list[CutOffMark]:
        return [mark for mark in self.cut_offs if begin <= mark.at <= end]

    def turns_between(self, begin: datetime, end: datetime) -> list[Turn]:
        return [turn for turn in self.turns if begin <= turn.agent_started_at <= end]

    def latency_summary(self) -> tuple[float | None, float | None]:
        """(last, median) latency over the kept turns, in ms."""
        values = [turn.latency_ms for turn in self.turns]
        return (values[-1], median(values)) if values else (None, None)

    def time_to_stop_summary(self) -> tuple[float | None, float | None]:
        """(last, median) time-to-stop over the settled barge-ins, in ms."""
        values = [ms for mark in self.barge_ins if (ms := mark.time_to_stop_ms) is not None]
        return (values[-1], median(values)) if values else (None, None)

    def window_end(self, now: datetime) -> datetime:
        """The right edge of the view: now for a live call, its last moment once it ended."""
        if self.ended_at is not None and self.last_at is not None:
            return min(now, self.last_at)
        return now


class TimelineBook:
    """The timelines of the most recently active calls."""

    def __init__(self, max_calls: int = MAX_CALLS) -> None:
        self._calls: OrderedDict[str, CallTimeline] = OrderedDict()
        self._max_calls = max_calls

    def __len__(self) -> int:
        return len(self._calls)

    def get(self, call_id: str | None) -> CallTimeline | None:
        return self._calls.get(call_id) if call_id else None

    def apply(self, events: Iterable[Event]) -> set[str]:
        """Feed a batch; the ids of the calls whose timeline changed."""
        changed: set[str] = set()
        for event in events:
            if not event.call_id:
                continue
            timeline = self._calls.get(event.call_id)
            if timeline is None:
                timeline = self._calls[event.call_id] = CallTimeline(event.call_id)
                if len(self._calls) > self._max_calls:
                    self._calls.popitem(last=False)
            else:
                self._calls.move_to_end(event.call_id)
            before = timeline.version
            timeline.apply(event)
            if timeline.version != before:
                changed.add(event.call_id)
        return changed


def lane_cells(
    intervals: Sequence[Interval], begin: datetime, end: datetime, columns: int, now: datetime | None = None
) -> list[bool]:
    """Which of `columns` equal slices of [begin, end) someone in this lane spoke in.
    An open interval runs to `now` (default: `end`)."""
    if columns <= 0 or end <= begin:
        return []
    span = (end - begin).total_seconds()
    cells = [False] * columns
    for interval in intervals:
        stop = interval.stop or now or end
        first = (interval.start - begin).total_seconds() / span * columns
        last = (stop - begin).total_seconds() / span * columns
        if last <= 0 or first >= columns:
            continue
        lo = max(0, math.floor(first))
        hi = min(columns - 1, max(lo, math.ceil(last) - 1))  # a short burst still shows
        for column in range(lo, hi + 1):
            cells[column] = True
    return cells


def column_of(at: datetime, begin: datetime, end: datetime, columns: int) -> int | None:
    """The column a moment falls in, or None outside the window."""
    if columns <= 0 or not begin <= at <= end or end <= begin:
        return None
    fraction = (at - begin).total_seconds() / (end - begin).total_seconds()
    return min(columns - 1, int(fraction * columns))
