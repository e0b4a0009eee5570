"""What a Twilio Media Stream shows while the console relays it to the user's agent (sans-I/O).

A `<Connect><Stream>` carries the caller's audio from Twilio to the agent and the agent's
audio back (reference/retell-twilio.md §7). The caller's side goes through the existing
VAD (`MediaStreamSession`). The agent's side is not speech when it arrives: Twilio queues
the agent's media and plays it in order at 8 kHz, so this keeps a **playback clock** — the
wall time the queued audio will have finished, moved on by each `media` payload (a μ-law
byte is 1/8 ms), cut short by `clear`, and put right by Twilio's `mark` echoes (the audio
before a mark has played when its echo comes back).

From the two sides, per call and live:
- `speech.started/stopped` for the caller (VAD) and the agent (the playback clock);
- a `barge_in` when the caller starts speaking while agent audio is playing, emitted once it
  is settled: by the agent's `clear` (time-to-stop = caller start → clear; the cut text is
  the names of the marks the clear discarded, when the agent names its marks), or by the
  queued audio running out without a clear — "the agent talked over the caller for N ms";
- DTMF digits, marks, start/stop as records;
- each side's audio level (linear RMS, the loudest per 100 ms, the last minute: `levels`), kept
  here for the live timeline and never written to the history.

Media payloads are never turned into events (50 frames a second per side). Malformed or
unknown frames from either side are counted and reported, never raised.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar

from console.core.events import BargeIn, Event, Raw, Role, SpeechStarted, SpeechStopped
from console.core.timeline import OPERATOR_CUT_OFF
from console.providers.base import TapSide
from console.providers.taps import MALFORMED_REPORTED, WatchedSocket
from console.providers.twilio.stream import MediaStreamSession, ulaw_rms

PROVIDER = "twilio"
# Twilio starts playing what it is sent at once; a little jitter before a caller's start still counts.
_PLAY_SLACK = timedelta(milliseconds=20)
LEVEL_BUCKET_S = 0.1
LEVELS_KEPT = 600  # a minute of 100 ms buckets per side


@dataclass
class _AgentAudio:
    """One stretch of the agent's audio as Twilio plays it."""

    started: datetime
    ends: datetime  # when its queued audio will have played (moves as more arrives)
    stopped: datetime | None = None  # when it actually stopped: a clear, or the queue running out
    cleared: bool = False
    marks: list[tuple[str, datetime]] = field(default_factory=list)  # pending: name, when reached
    cut_marks: list[str] = field(default_factory=list)  # what a clear discarded


class TwilioStreamTap(WatchedSocket):
    """One call's Media Stream, watched (`console.providers.base.TapSession`)."""

    provider = PROVIDER
    what = "media stream"
    prefix = "stream"
    side_names: ClassVar[dict[TapSide, str]] = {"platform": "Twilio", "agent": "the agent"}
    side_keys: ClassVar[dict[TapSide, str]] = {"platform": "twilio", "agent": "agent"}
    large_frame = 64 * 1024  # Twilio's frames carry 20 ms (under 1 KB); 64 KB of agent audio is ~6 s at once

    def __init__(self, call_id: str = "") -> None:
        super().__init__(call_id)  # learnt from the `start` frame (the stream URL names no call)
        self.stream = MediaStreamSession()
        self.barge_ins = 0
        self.talked_over = 0
        self.stream_sid: str | None = None
        self._order_reports = 0
        self._audio: _AgentAudio | None = None  # the agent's current (or last) stretch of audio
        self._barge_in_at: datetime | None = None  # the caller's start, not yet settled
        self._held: list[Event] = []  # the caller's speech events while a barge-in is being settled
        # role -> (bucket start, loudest linear RMS in it), oldest first: the timeline's level lanes
        self.levels: dict[Role, deque[tuple[datetime, float]]] = {
            "user": deque(maxlen=LEVELS_KEPT),
            "assistant": deque(maxlen=LEVELS_KEPT),
        }

    # -- frames ---------------------------------------------------------------------------

    def seen(self, side: TapSide, frame: str | bytes, received_at: datetime) -> list[Event]:
        events = self._counted(side, frame, received_at) + self._played_out(received_at)
        if isinstance(frame, (bytes, bytearray)):
            return events + self._malformed(side, "a binary frame (Media Streams frames are JSON text)", received_at)
        if side == "platform":
            return events + self._from_twilio(frame, received_at)
        return events + self._from_agent(frame, received_at)

    def closed(self, side: TapSide | None, code: int, reason: str, at: datetime) -> list[Event]:
        events = self._played_out(at + timedelta(days=1))  # whatever was queued has played or never will
        events += self._held
        self._held = []
        events.append(
            self._closed_record(
                side,
                code,
                reason,
                at,
                barge_ins=self.barge_ins,
                talked_over=self.talked_over,
                out_of_order_from_twilio=self.stream.out_of_order,
                skipped_by_twilio=self.stream.skipped,
            )
        )
        return events

    def operator_says(self, content: str, at: datetime) -> tuple[str, list[Event]]:
        raise ValueError("a Twilio media stream cannot speak text: `s` redirects the call with <Say>")

    def operator_clears(self, at: datetime) -> tuple[str, list[Event]]:
        """The operator cuts the agent off: Twilio's `clear` on the platform's side."""
        frame = json.dumps({"event": "clear", "streamSid": self.stream_sid or ""})
        events = self._clear(at, by="operator")
        return frame, events

    # -- Twilio -> agent ------------------------------------------------------------------

    def _from_twilio(self, frame: str, at: datetime) -> list[Event]:
        stream = self.stream
        bad_before = stream.bad_frames + stream.ignored_frames
        order_before = stream.out_of_order + stream.skipped
        found = stream.feed(frame, at)
        if stream.call_id and not self.call_id:
            self.call_id = stream.call_id
        self.stream_sid = stream.stream_sid or self.stream_sid
        if stream.bad_frames + stream.ignored_frames > bad_before:
            why = stream.last_error if stream.bad_frames else "an unknown event, or a frame after stop"
            return self._malformed("platform", why or "malformed", at)
        if stream.out_of_order + stream.skipped > order_before:
            found = [*self._out_of_order(stream.last_order_problem or "", at), *found]
        if (level := self.stream.level("inbound")) is not None:
            self._level("user", at, level)
        events: list[Event] = []
        for event in found:
            if event.call_id is None and self.call_id:
                event = event.model_copy(update={"call_id": self.call_id})
            if isinstance(event, SpeechStarted) and event.role == "user":
                events += self._caller_started(event)
            elif isinstance(event, SpeechStopped) and event.role == "user" and self._barge_in_at is not None:
                self._held.append(event)  # after its start, which waits for the barge-in
            else:
                events.append(event)
            if isinstance(event, Raw) and event.type == "stream.mark":
                self._mark_echoed(str(event.data.get("mark", {}).get("name", "")), at)
        return events

    def _out_of_order(self, problem: str, at: datetime) -> list[Event]:
        """A frame out of order or after a gap: relayed as it came; the first few reported, all counted."""
        self._order_reports += 1
        if self._order_reports > MALFORMED_REPORTED:
            return []
        count = self._order_reports
        note = f"media stream frame from Twilio {problem} (relayed as it came; late audio kept from the VAD)"
        return [self._raw("stream.out_of_order", at, note=note, problem=problem, count=count)]

    def _caller_started(self, start: SpeechStarted) -> list[Event]:
        """The caller starts speaking: a barge-in if the agent's audio was playing then. Its events wait
        until it is settled, so the barge-in comes first (the call tracker would otherwise take the
        caller's start over the agent for an interruption of its own, without what is known here)."""
        at = start.at
        audio = self._audio
        if self._barge_in_at is not None:
            self._held.append(start)
            return []
        if audio is None or not (audio.started - _PLAY_SLACK <= at):
            return [start]
        end = audio.stopped if audio.stopped is not None else audio.ends
        if at >= end:
            return [start]
        self._barge_in_at = at
        self._held.append(start)
        if audio.stopped is not None:  # the agent already stopped (it saw the caller first): settled now
            return self._settle(audio)
        return []

    def _mark_echoed(self, name: str, at: datetime) -> None:
        """Twilio played the audio before `name`: put the clock right by how far it was off."""
        audio = self._audio
        if audio is None or audio.stopped is not None:
            return
        for index, (pending, expected) in enumerate(audio.marks):
            if pending == name:
                drift = at - expected
                audio.ends += drift
                audio.marks = [(n, when + drift) for n, when in audio.marks[index + 1 :]]
                return

    # -- agent -> Twilio ------------------------------------------------------------------

    def _from_agent(self, frame: str, at: datetime) -> list[Event]:
        try:
            data = json.loads(frame)
        except ValueError as exc:
            return self._malformed("agent", f"not JSON ({exc})", at)
        event = data.get("event") if isinstance(data, dict) else None
        if event == "media":
            payload = data.get("media", {}).get("payload") if isinstance(data.get("media"), dict) else None
            try:
                audio = base64.b64decode(str(payload), validate=True) if payload is not None else b""
            except (binascii.Error, ValueError):
                return self._malformed("agent", "media payload is not base64", at)
            if not audio:
                return self._malformed("agent", "media without a payload", at)
            playing_from = max(self._audio.ends, at) if self._audio and self._audio.stopped is None else at
            self._level("assistant", playing_from, ulaw_rms(audio))  # heard when Twilio plays it
            return self._queued(len(audio) / 8, at)
        if event == "mark":
            name = data.get("mark", {}).get("name") if isinstance(data.get("mark"), dict) else None
            if not isinstance(name, str):
                return self._malformed("agent", "mark without a name", at)
            if self._audio is not None and self._audio.stopped is None:
                self._audio.marks.append((name, self._audio.ends))
            return []
        if event == "clear":
            return self._clear(at, by="agent")
        return self._malformed("agent", f"unknown event {event!r} (Twilio answers it with error 31924)", at)

    def _queued(self, ms: float, at: datetime) -> list[Event]:
        events: list[Event] = []
        audio = self._audio
        if audio is None or audio.stopped is not None:
            audio = self._audio = _AgentAudio(started=at, ends=at)
            events.append(SpeechStarted(at=at, provider=PROVIDER, call_id=self.call_id or None, role="assistant"))
        audio.ends = max(audio.ends, at) + timedelta(milliseconds=ms)
        return events

    def _clear(self, at: datetime, *, by: str) -> list[Event]:
        """A `clear` from the agent, or the operator's (`x`): Twilio drops the queued audio."""
        audio = self._audio
        playing = audio is not None and audio.stopped is None and audio.ends > at
        dropped_ms = round((audio.ends - at).total_seconds() * 1000) if audio is not None and playing else 0
        events: list[Event] = []
        if audio is not None and playing:
            audio.stopped, audio.cleared = at, True
            levels = self.levels["assistant"]
            while levels and levels[-1][0] > at:  # never played: Twilio dropped it
                levels.pop()
            audio.cut_marks = [name for name, _ in audio.marks]
            audio.marks = []
            events.append(SpeechStopped(at=at, provider=PROVIDER, call_id=self.call_id or None, role="assistant"))
        if by == "operator":
            cut = ", ".join(audio.cut_marks) if audio is not None and playing else ""
            note = (
                f"the operator cut the agent off (clear): {dropped_ms} ms of its queued audio dropped"
                + (f" ({cut})" if cut else "")
                if playing
                else "the operator sent clear: the agent was not playing anything"
            )
            events.insert(0, self._raw(OPERATOR_CUT_OFF, at, note=note, dropped_ms=dropped_ms, cut=cut or None))
        else:
            events.insert(0, self._raw("stream.clear", at, by=by))
        if audio is not None and playing and self._barge_in_at is not None:
            events += self._settle(audio)
        return events

    def _played_out(self, now: datetime) -> list[Event]:
        """The agent's queued audio that finished playing before `now`: its stop, and a barge-in
        it never cleared for."""
        audio = self._audio
        if audio is None or audio.stopped is not None or audio.ends > now:
            return []
        audio.stopped = audio.ends
        events: list[Event] = [
            SpeechStopped(at=audio.ends, provider=PROVIDER, call_id=self.call_id or None, role="assistant")
        ]
        if self._barge_in_at is not None:
            events += self._settle(audio)
        return events

    def _settle(self, audio: _AgentAudio) -> list[Event]:
        at = self._barge_in_at
        assert at is not None and audio.stopped is not None
        self._barge_in_at = None
        self.barge_ins += 1
        overlap_ms = round((audio.stopped - at).total_seconds() * 1000)
        base = {"at": at, "provider": PROVIDER, "call_id": self.call_id or None}
        held, self._held = self._held, []
        if audio.cleared:
            cut = ", ".join(audio.cut_marks) or None
            note = f"barge-in: the agent stopped {overlap_ms} ms after the caller cut in (clear)"
            return [
                BargeIn(**base, cut_text=cut, source="media-stream"),
                *held,
                self._raw("stream.barge_in", audio.stopped, note=note, time_to_stop_ms=overlap_ms, cleared=True),
            ]
        self.talked_over += 1
        note = f"the agent talked over the caller for {overlap_ms} ms: it never sent clear"
        return [
            BargeIn(**base, source="talked-over"),
            *held,
            self._raw("stream.barge_in", audio.stopped, note=note, time_to_stop_ms=overlap_ms, cleared=False),
        ]

    # -- helpers ---------------------------------------------------------------------------

    def _level(self, role: Role, at: datetime, rms: float) -> None:
        levels = self.levels[role]
        bucket = datetime.fromtimestamp(int(at.timestamp() / LEVEL_BUCKET_S) * LEVEL_BUCKET_S, tz=at.tzinfo)
        if levels and levels[-1][0] == bucket:
            if rms > levels[-1][1]:
                levels[-1] = (bucket, rms)
        elif not levels or bucket > levels[-1][0]:
            levels.append((bucket, rms))
