"""The barge-in timeline of the selected call: caller and agent speech lanes over
the last minute, red marks where the caller cut in, per-turn latency under the
agent's starts, then time-to-stop per barge-in. One widget, one `render()`;
the screen calls `show()` on its 100 ms flush and it repaints only on change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from rich.text import Text
from textual.widget import Widget

from console.core.timeline import CallTimeline, column_of, lane_cells

WINDOW = timedelta(seconds=60)
LABEL = 7  # "caller " / "agent  "
STYLE_CALLER = "yellow"
STYLE_AGENT = "cyan"
STYLE_OVERLAP = "bold red"
STYLE_MARK = "bold red"
STYLE_LATENCY = "green"
STYLE_DIM = "dim"
MARK = "↯"  # one cell wide (⚡ takes two and would push the row out of line)
CUT = "✂"  # the operator cut the agent off (x); one cell wide too
STYLE_CUT = "bold magenta"


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} ms"


class BargeTimeline(Widget):
    DEFAULT_CSS = """
    BargeTimeline { height: 1fr; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.timeline: CallTimeline | None = None
        self.now: datetime | None = None
        self.levels: Levels | None = None
        self._shown: tuple[object, ...] | None = None

    def show(self, timeline: CallTimeline | None, now: datetime, levels: Levels | None = None) -> None:
        """Repaint if the call or its model changed or (for a live call) the lanes moved by a
        column (~1.4 s at 160 columns; it was every 250 ms, for the same picture)."""
        end = timeline.window_end(now) if timeline is not None else now
        column_s = WINDOW.total_seconds() / max(10, self.size.width - LABEL)
        key = (id(timeline), timeline.version if timeline else -1, int(end.timestamp() / column_s), self.size)
        self.timeline, self.now, self.levels = timeline, now, levels
        if key != self._shown:
            self._shown = key
            self.refresh()

    def render(self) -> Text:
        timeline, now = self.timeline, self.now
        width = max(0, self.size.width)
        if timeline is None or now is None:
            return Text("No call selected: pick one in Live calls.", style=STYLE_DIM)
        return render_timeline(timeline, now, width, self.size.height, self.levels)


def append_runs(out: Text, cells: list[tuple[str, str]]) -> None:
    """Append (char, style) cells, one span per run of a style: a span per cell made
    the pane's every repaint cost a few ms."""
    start = 0
    for end in range(1, len(cells) + 1):
        if end == len(cells) or cells[end][1] != cells[start][1]:
            out.append("".join(char for char, _ in cells[start:end]), style=cells[start][1])
            start = end


LEVEL_GLYPHS = "▁▂▃▄▅▆▇█"
Levels = Mapping[str, Sequence[tuple[datetime, float]]]  # role -> (when, linear RMS), oldest first


def level_cells(
    levels: Sequence[tuple[datetime, float]], begin: datetime, end: datetime, columns: int
) -> list[str | None]:
    """Per column, a glyph for the loudest level in it (log scale, 100 → ▁ … 10,000 → █); None: no audio."""
    cells: list[float | None] = [None] * columns
    for at, rms in levels:
        column = column_of(at, begin, end, columns)
        if column is not None and (cells[column] is None or rms > (cells[column] or 0)):
            cells[column] = rms
    glyphs: list[str | None] = []
    for loudest in cells:
        if loudest is None:
            glyphs.append(None)
            continue
        scaled = (math.log10(max(loudest, 1.0)) - 2) / 2  # 100 -> 0, 10,000 -> 1
        glyphs.append(LEVEL_GLYPHS[min(len(LEVEL_GLYPHS) - 1, max(0, int(scaled * len(LEVEL_GLYPHS))))])
    return glyphs


def render_timeline(
    timeline: CallTimeline, now: datetime, width: int, height: int, levels: Levels | None = None
) -> Text:
    """The whole pane as text: lanes, marks, axis, summary, then recent turns as room allows. With
    `levels` (a call whose audio passes through a tap) the lanes show each side's level as it was."""
    columns = max(10, width - LABEL)
    end = timeline.window_end(now)
    begin = end - WINDOW
    caller = lane_cells(timeline.intervals("user", begin, end), begin, end, columns, now=end)
    agent = lane_cells(timeline.intervals("assistant", begin, end), begin, end, columns, now=end)
    heard = (
        {role: level_cells(levels.get(role, ()), begin, end, columns) for role in ("user", "assistant")}
        if (levels)
        else {}
    )
    no_level: list[str | None] = [None] * columns

    out = Text(no_wrap=True, overflow="crop")
    out.append("caller ".ljust(LABEL), style=f"bold {STYLE_CALLER}")
    append_runs(
        out,
        [
            (glyph or "█", STYLE_CALLER) if filled else (glyph or "·", STYLE_DIM)
            for filled, glyph in zip(caller, heard.get("user", no_level), strict=True)
        ],
    )
    out.append("\n")
    out.append("agent ".ljust(LABEL), style=f"bold {STYLE_AGENT}")
    # where both talk, the agent's lane turns red: the caller is talking over it
    append_runs(
        out,
        [
            (glyph or "█", STYLE_OVERLAP if over else STYLE_AGENT) if filled else (glyph or "·", STYLE_DIM)
            for filled, over, glyph in zip(agent, caller, heard.get("assistant", no_level), strict=True)
        ],
    )
    out.append("\n")

    # marks row: ↯ at barge-ins, then latency numbers at the agent's starts where they fit
    marks = [" "] * columns
    styles = [""] * columns
    for mark in timeline.marks(begin, end):
        column = column_of(mark.at, begin, end, columns)
        if column is not None:
            marks[column], styles[column] = MARK, STYLE_MARK
    for cut in timeline.cut_offs_between(begin, end):
        column = column_of(cut.at, begin, end, columns)
        if column is not None:
            marks[column], styles[column] = CUT, STYLE_CUT
    for turn in timeline.turns_between(begin, end):
        column = column_of(turn.agent_started_at, begin, end, columns)
        label = f"{turn.latency_ms:.0f}"
        if column is None or len(label) > columns:
            continue
        column = min(column, columns - len(label))  # at the right edge, end the label there
        span = range(max(0, column - 1), min(columns, column + len(label) + 1))
        if all(marks[i] == " " for i in span):
            for offset, char in enumerate(label):
                marks[column + offset], styles[column + offset] = char, STYLE_LATENCY
    out.append("".ljust(LABEL))
    append_runs(out, list(zip(marks, styles, strict=True)))
    out.append("\n")

    # axis: -60s ... now (or "end" once the call is over)
    axis = [" "] * columns
    for seconds in (60, 45, 30, 15):
        column = int((WINDOW.total_seconds() - seconds) / WINDOW.total_seconds() * columns)
        for offset, char in enumerate(f"-{seconds}s"):
            if column + offset < columns:
                axis[column + offset] = char
    edge = "end" if timeline.ended_at is not None else "now"
    axis[columns - len(edge) :] = list(edge)
    out.append("".ljust(LABEL) + "".join(axis), style=STYLE_DIM)

    lines = 4
    last_latency, median_latency = timeline.latency_summary()
    last_stop, median_stop = timeline.time_to_stop_summary()
    if height > lines:
        out.append("\n")
        out.append("latency ", style="bold")
        out.append(f"last {ms(last_latency)} · median {ms(median_latency)}", style=STYLE_LATENCY)
        out.append(f" ({len(timeline.turns)} turns)", style=STYLE_DIM)
        lines += 1
    if height > lines:
        out.append("\n")
        out.append("barge-ins ", style="bold")
        out.append(str(len(timeline.barge_ins)), style=STYLE_MARK if timeline.barge_ins else "")
        out.append(" · time-to-stop ", style="bold")
        out.append(f"last {ms(last_stop)} · median {ms(median_stop)}")
        lines += 1

    # newest first: each barge-in with its time-to-stop, each turn with its latency
    recent: list[tuple[datetime, Text]] = []
    for mark in timeline.barge_ins:
        line = Text("⚡ barge-in", style=STYLE_MARK)
        stop = mark.time_to_stop_ms
        if stop is not None and mark.source == "talked-over":
            line.append(f"  agent talked over the caller for {ms(stop)}", style="bold red")
        elif stop is not None:
            line.append(f"  agent stopped after {ms(stop)}")
        elif mark.measured:
            line.append("  agent still talking", style="bold yellow")
        else:
            line.append("  time-to-stop unknown (no speech events yet)", style=STYLE_DIM)
        if mark.cut_text:
            line.append("  cut: ", style=STYLE_DIM)
            line.append(mark.cut_text, style="strike red")
        recent.append((mark.at, line))
    for cut in timeline.cut_offs:
        line = Text(f"{CUT} cut off by the operator", style=STYLE_CUT)
        if cut.dropped_ms:
            line.append(f"  {ms(cut.dropped_ms)} of the agent's audio dropped")
        elif cut.dropped_ms == 0:
            line.append("  nothing was playing", style=STYLE_DIM)
        if cut.cut_text:
            line.append("  cut: ", style=STYLE_DIM)
            line.append(cut.cut_text, style="strike red")
        recent.append((cut.at, line))
    for turn in timeline.turns:
        recent.append((turn.agent_started_at, Text(f"turn latency {turn.latency_ms:.0f} ms", style=STYLE_LATENCY)))
    recent.sort(key=lambda item: item[0], reverse=True)
    for at, line in recent[: max(0, height - lines)]:
        out.append("\n")
        out.append(at.astimezone().strftime("%H:%M:%S") + " ", style=STYLE_DIM)
        out.append_text(line)
    return out
