"""Twilio Media Streams, sans-I/O: JSON text frames in, normalized events out.

`MediaStreamSession.feed` takes one WebSocket text frame at a time. Control
frames (start, stop, dtmf, mark) become `raw` events; media frames feed a small
energy VAD per track (mu-law -> linear PCM, RMS per 20 ms, hysteresis in time)
that yields `speech.started` / `speech.stopped`. Media frames themselves never
become events: 50 a second per track would drown the history.

A malformed frame is counted and ignored, never raised: one bad frame must not
tear down the call's audio socket.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from console.core.events import Event, Raw, Role, SpeechStarted, SpeechStopped, to_utc
from console.providers.twilio.wire import (
    STREAM_EVENTS,
    DtmfFrame,
    MarkFrame,
    MediaFrame,
    StartFrame,
    StopFrame,
    stream_frame_adapter,
)

PROVIDER: Final = "twilio"
SAMPLE_RATE = 8000
TRACK_ROLES: dict[str, Role] = {"inbound": "user", "outbound": "assistant"}

# -- G.711 mu-law -------------------------------------------------------------------

_BIAS = 0x84
_CLIP = 32635


def _ulaw_to_linear(byte: int) -> int:
    byte = ~byte & 0xFF
    exponent = (byte >> 4) & 0x07
    sample = (((byte & 0x0F) << 3) + _BIAS) << exponent
    sample -= _BIAS
    return -sample if byte & 0x80 else sample


ULAW_TO_LINEAR: tuple[int, ...] = tuple(_ulaw_to_linear(b) for b in range(256))
_ULAW_SQUARE: tuple[int, ...] = tuple(v * v for v in ULAW_TO_LINEAR)


def ulaw_decode(data: bytes) -> list[int]:
    """mu-law bytes -> 16-bit linear PCM samples."""
    return [ULAW_TO_LINEAR[b] for b in data]


def _linear_to_ulaw(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(int(sample)), _CLIP) + _BIAS
    exponent = max(magnitude.bit_length() - 8, 0)  # position of the top bit above bit 7
    exponent = min(exponent, 7)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_encode(samples: Iterable[int]) -> bytes:
    """16-bit linear PCM samples -> mu-law bytes (for tests and the simulator)."""
    return bytes(_linear_to_ulaw(s) for s in samples)


def ulaw_rms(data: bytes) -> float:
    """RMS of the decoded linear samples (0 for empty input)."""
    if not data:
        return 0.0
    return math.sqrt(sum(map(_ULAW_SQUARE.__getitem__, data)) / len(data))


# -- VAD ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VadSettings:
    # Linear RMS: quiet phone lines sit around 50-300, speech well above 1000.
    threshold_rms: float = 700.0
    frame_ms: int = 20
    start_ms: int = 100  # this long above the threshold before speech starts
    stop_ms: int = 400  # this long below it before speech stops


SpeechEdge = tuple[Literal["start", "stop"], float]  # (edge, ms since stream start)


class TrackVad:
    """Hysteresis over 20 ms RMS frames for one track; times are stream milliseconds."""

    def __init__(self, settings: VadSettings) -> None:
        self._s = settings
        self._frame_bytes = SAMPLE_RATE * settings.frame_ms // 1000
        self._start_frames = max(1, math.ceil(settings.start_ms / settings.frame_ms))
        self._stop_frames = max(1, math.ceil(settings.stop_ms / settings.frame_ms))
        self._pending = bytearray()
        self._pending_ms = 0.0  # stream time of the first pending byte
        self._cursor_ms = 0.0  # stream time just after the last analysed frame
        self._run = 0  # consecutive frames disagreeing with `speaking`
        self._run_ms = 0.0  # when that run began
        self.speaking = False
        self.turns = 0
        self.last_rms = 0.0  # the last analysed frame's level (linear RMS)

    @property
    def cursor_ms(self) -> float:
        return self._cursor_ms

    def push(self, audio: bytes, timestamp_ms: float | None) -> list[SpeechEdge]:
        if not self._pending:
            self._pending_ms = float(timestamp_ms) if timestamp_ms is not None else self._cursor_ms
        self._pending += audio
        edges: list[SpeechEdge] = []
        size = self._frame_bytes
        while len(self._pending) >= size:
            frame = bytes(self._pending[:size])
            del self._pending[:size]
            frame_ms = self._pending_ms
            self._pending_ms += self._s.frame_ms
            self._cursor_ms = self._pending_ms
            self.last_rms = ulaw_rms(frame)
            loud = self.last_rms >= self._s.threshold_rms
            if loud == self.speaking:
                self._run = 0
                continue
            if self._run == 0:
                self._run_ms = frame_ms
            self._run += 1
            if not self.speaking and self._run >= self._start_frames:
                self.speaking, self._run = True, 0
                self.turns += 1
                edges.append(("start", self._run_ms))
            elif self.speaking and self._run >= self._stop_frames:
                self.speaking, self._run = False, 0
                edges.append(("stop", self._run_ms))
        return edges

    def close(self) -> SpeechEdge | None:
        """End of stream: close open speech at the last quiet run, else at the end of audio."""
        if not self.speaking:
            return None
        self.speaking = False
        end = self._run_ms if self._run else self._cursor_ms
        self._run = 0
        return ("stop", end)


# -- session --------------------------------------------------------------------------


class MediaStreamSession:
    """State of one Twilio Media Streams WebSocket."""

    def __init__(self, vad: VadSettings | None = None) -> None:
        self._vad_settings = vad or VadSettings()
        self._vads: dict[str, TrackVad] = {}
        self._base: datetime | None = None  # wall time of stream time 0
        self.call_id: str | None = None
        self.stream_sid: str | None = None
        self.account_sid: str | None = None
        self.custom_parameters: dict[str, Any] = {}
        self.tracks: list[str] = []
        self.media_format: dict[str, Any] = {}
        self.protocol: str | None = None
        self.stopped = False
        self.frames = 0
        self.media_frames = 0
        self.bad_frames = 0  # not JSON, wrong shape, bad base64
        self.ignored_frames = 0  # unknown event or track, or anything after stop
        self.last_error: str | None = None
        # `sequenceNumber` counts up by one across every frame after `connected`: one at or below the
        # last is out of order (its audio is kept from the VAD, which runs forward), one beyond skips frames.
        self.last_sequence: int | None = None
        self.out_of_order = 0
        self.skipped = 0
        self.last_order_problem: str | None = None

    def feed(self, text_frame: str | bytes, received_at: datetime) -> list[Event]:
        self.frames += 1
        received_at = to_utc(received_at)
        try:
            data = json.loads(text_frame)
            if not isinstance(data, dict):
                raise ValueError("a frame must be a JSON object")
            if data.get("event") not in STREAM_EVENTS:
                self.ignored_frames += 1
                return []
            if self.stopped:
                self.ignored_frames += 1
                return []
            frame = stream_frame_adapter.validate_python(data)
            if self._base is None:
                self._base = received_at
            in_order = self._in_order(frame.sequence_number)
            if isinstance(frame, MediaFrame):
                return self._media(frame) if in_order else []
            if isinstance(frame, StartFrame):
                return self._start(frame, data, received_at)
            if isinstance(frame, StopFrame):
                return self._stop(frame, data, received_at)
            if isinstance(frame, (DtmfFrame, MarkFrame)):
                return [self._raw(f"stream.{frame.event}", data, received_at)]
            self.protocol = getattr(frame, "protocol", None)  # connected
            return []
        except (ValueError, TypeError) as exc:  # JSONDecodeError, ValidationError, binascii.Error
            self.bad_frames += 1
            self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            return []

    def _in_order(self, sequence: str | int | None) -> bool:
        """Whether a frame's `sequenceNumber` follows the last one (a frame without one is taken as is)."""
        try:
            number = int(sequence) if sequence is not None else None
        except ValueError:
            return True
        last = self.last_sequence
        if number is None:
            return True
        if last is not None and number <= last:
            self.out_of_order += 1
            self.last_order_problem = f"out of order: sequenceNumber {number} after {last}"
            return False
        if last is not None and number > last + 1:
            self.skipped += number - last - 1
            self.last_order_problem = f"{number - last - 1} frame(s) missing: sequenceNumber {number} after {last}"
        self.last_sequence = number
        return True

    # -- frames ---------------------------------------------------------------

    def _start(self, frame: StartFrame, data: dict[str, Any], received_at: datetime) -> list[Event]:
        info = frame.start
        self.call_id = info.call_sid or self.call_id
        self.stream_sid = info.stream_sid or frame.stream_sid
        self.account_sid = info.account_sid
        self.custom_parameters = dict(info.custom_parameters)
        self.tracks = list(info.tracks)
        self.media_format = dict(info.media_format)
        self._base = received_at  # media timestamps count from the stream start
        return [self._raw("stream.start", data, received_at)]

    def _media(self, frame: MediaFrame) -> list[Event]:
        self.media_frames += 1
        track = frame.media.track.removesuffix("_track")
        role = TRACK_ROLES.get(track)
        if role is None:
            self.ignored_frames += 1
            return []
        audio = base64.b64decode(frame.media.payload, validate=True)
        vad = self._vads.get(track)
        if vad is None:
            vad = self._vads[track] = TrackVad(self._vad_settings)
        return [self._speech(edge, role, vad.turns) for edge in vad.push(audio, frame.media.timestamp)]

    def _stop(self, frame: StopFrame, data: dict[str, Any], received_at: datetime) -> list[Event]:
        self.call_id = self.call_id or frame.stop.call_sid
        events: list[Event] = []
        for track, vad in self._vads.items():
            edge = vad.close()
            if edge is not None:
                events.append(self._speech(edge, TRACK_ROLES[track], vad.turns))
        self.stopped = True
        events.append(self._raw("stream.stop", data, received_at))
        return events

    # -- events ---------------------------------------------------------------

    def _at(self, stream_ms: float) -> datetime:
        assert self._base is not None  # set by the first valid frame
        return self._base + timedelta(milliseconds=stream_ms)

    def _speech(self, edge: SpeechEdge, role: Role, turn: int) -> Event:
        kind, ms = edge
        cls = SpeechStarted if kind == "start" else SpeechStopped
        return cls(at=self._at(ms), provider=PROVIDER, call_id=self.call_id, role=role, turn=turn)

    def _raw(self, type_: str, data: dict[str, Any], received_at: datetime) -> Raw:
        return Raw(at=received_at, provider=PROVIDER, call_id=self.call_id, type=type_, data=data)

    def level(self, track: str) -> float | None:
        """The last 20 ms frame's level on `track` ("inbound"/"outbound"), linear RMS; None before any."""
        vad = self._vads.get(track)
        return vad.last_rms if vad is not None and vad.cursor_ms > 0 else None

    def stats(self) -> dict[str, Any]:
        return {
            "frames": self.frames,
            "media_frames": self.media_frames,
            "bad_frames": self.bad_frames,
            "ignored_frames": self.ignored_frames,
            "last_error": self.last_error,
            "out_of_order": self.out_of_order,
            "skipped": self.skipped,
        }
