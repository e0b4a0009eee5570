"""What every tap session shares (`console.providers.base.TapSession`): frames and malformed frames
counted per side, the first few malformed ones reported, and the record of the socket's close."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from console.core.events import Event, Raw
from console.providers.base import TapSide

# Each side's malformed (or oversize) frames reported one by one up to this many; the rest are counted.
MALFORMED_REPORTED = 5
# The largest frame a tap takes from either side; a larger one closes the socket with 1009 (a frame is
# held whole before it is passed on, and each side queues up to a few dozen).
MAX_FRAME_BYTES = 1024 * 1024


def size(count: int) -> str:
    """A byte count for people: 312 bytes, 200 KB, 1 MiB."""
    if count >= 1024 * 1024 and count % (1024 * 1024) == 0:
        return f"{count // (1024 * 1024)} MiB"
    if count >= 1024:
        return f"{count / 1024:.0f} KB"
    return f"{count} bytes"


class WatchedSocket:
    """A tap session's bookkeeping; a provider's session sets the class names and adds its own frames."""

    provider: ClassVar[str]
    what: ClassVar[str]  # the socket, for people: "custom-LLM socket", "media stream"
    prefix: ClassVar[str]  # of its records' types: "llm", "stream"
    side_names: ClassVar[dict[TapSide, str]]  # who sends on each side, for people
    side_keys: ClassVar[dict[TapSide, str]]  # the same in the close record's keys: frames_from_<key>
    # A frame far larger than the platform's own: relayed, but counted and reported as oversize.
    large_frame: ClassVar[int]

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.frames: dict[TapSide, int] = {"platform": 0, "agent": 0}
        self.malformed: dict[TapSide, int] = {"platform": 0, "agent": 0}
        self.oversize: dict[TapSide, int] = {"platform": 0, "agent": 0}
        self.stalls: dict[TapSide, int] = {"platform": 0, "agent": 0}

    def _raw(self, type_: str, at: datetime, **data: Any) -> Raw:
        return Raw(at=at, provider=self.provider, call_id=self.call_id or None, type=type_, data=data)

    def _counted(self, side: TapSide, frame: str | bytes, at: datetime) -> list[Event]:
        """Count a frame each side sent; an oversize one is reported (it was relayed all the same)."""
        self.frames[side] += 1
        if len(frame) * 4 <= self.large_frame:  # the usual frame: small whatever its characters (no encoding)
            return []
        length = len(frame) if isinstance(frame, (bytes, bytearray)) else len(frame.encode())
        if length <= self.large_frame:
            return []
        self.oversize[side] += 1
        count = self.oversize[side]
        if count > MALFORMED_REPORTED:
            return []
        sender = self.side_names[side]
        note = (
            f"oversize {self.what} frame from {sender}: {size(length)} (relayed; over {size(self.large_frame)} is "
            f"unusual here, over {size(MAX_FRAME_BYTES)} closes the socket)"
        )
        return [self._raw(f"{self.prefix}.oversize", at, note=note, sent_by=sender, bytes=length, count=count)]

    def _malformed(self, side: TapSide, why: str, at: datetime) -> list[Event]:
        self.malformed[side] += 1
        count = self.malformed[side]
        if count > MALFORMED_REPORTED:
            return []
        sender = self.side_names[side]
        note = f"malformed {self.what} frame from {sender}: {why[:200]} (relayed as it was)"
        return [self._raw(f"{self.prefix}.malformed", at, note=note, sent_by=sender, problem=why[:300], count=count)]

    def stalled(self, side: TapSide, waited_s: float, at: datetime) -> list[Event]:
        """`side` is not reading; the first few stalls are reported, all counted."""
        self.stalls[side] += 1
        count = self.stalls[side]
        if count > MALFORMED_REPORTED:
            return []
        slow, other = self.side_names[side], self.side_names["agent" if side == "platform" else "platform"]
        note = (
            f"{slow} is not reading the {self.what}: a frame from {other} has waited {waited_s:.1f} s to be passed on "
            f"({other} is held back meanwhile; nothing is buffered past the sockets' bounded queues)"
        )
        return [
            self._raw(f"{self.prefix}.stalled", at, note=note, slow_side=slow, waited_s=round(waited_s, 3), count=count)
        ]

    def _closed_record(self, side: TapSide | None, code: int, reason: str, at: datetime, **extra: Any) -> Raw:
        """`<prefix>.closed`: who closed it, how, and what passed each way."""
        by = self.side_names[side] if side is not None else "the console"
        malformed = self.malformed["platform"] + self.malformed["agent"]
        note = f"{self.what} closed by {by}: {code}" + (f" {reason}" if reason else "")
        if malformed:
            note += f"; {malformed} malformed frame(s)"
        counts = {
            f"{kind}_{self.side_keys[each]}": counted[each]
            for kind, counted in (
                ("frames_from", self.frames),
                ("malformed_from", self.malformed),
                ("oversize_from", self.oversize),
                ("stalls_of", self.stalls),
            )
            for each in ("platform", "agent")
        }
        return self._raw(
            f"{self.prefix}.closed", at, note=note, closed_by=by, code=code, reason=reason, **counts, **extra
        )
