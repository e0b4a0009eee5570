"""The transcript of one call: partial text replaced by the final, barge-ins and
tool calls inline. `CallTranscript` is the model (fed in batches by the app);
`TranscriptPane` renders the selected call's model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.core.events import (
    BargeIn,
    CallEnded,
    CallStatus,
    Event,
    ToolDecided,
    ToolRequested,
    TranscriptFinal,
    TranscriptPartial,
)
from console.tui.widgets.scrolling import resize_virtual

MAX_ENTRIES = 400
PLACEHOLDER = "Waiting for a call…"
ROLE_LABEL = {"assistant": "agent", "user": "caller"}
ROLE_STYLE = {"assistant": "bold cyan", "user": "bold yellow"}
# The pane wraps tool arguments and results to its width; these only bound a runaway value.
ARGUMENT_LIMIT, OUTCOME_LIMIT = 200, 400


def short_json(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": ")) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tool_call_text(name: str, arguments: dict[str, Any]) -> str:
    """`book(day=Tue, time=09:30)`: a tool call on one line."""
    args = ", ".join(f"{key}={short_json(value, ARGUMENT_LIMIT)}" for key, value in arguments.items())
    return f"{name}({args})"


@dataclass
class Entry:
    kind: str  # speech | barge | tool | note
    role: str = ""
    text: str = ""
    final: bool = True
    tool_call_id: str = ""
    decision: str = ""  # for tools: "" while pending


class CallTranscript:
    """What the transcript pane shows for one call; bounded."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.entries: list[Entry] = []
        self.version = 0
        self._partial: dict[str, Entry] = {}  # role -> the entry still streaming
        self._tools: dict[str, Entry] = {}

    def apply(self, event: Event) -> None:
        if isinstance(event, TranscriptPartial):
            entry = self._partial.get(event.role)
            if entry is None:
                entry = self._partial[event.role] = self._add(Entry("speech", event.role, event.text, final=False))
            entry.text = event.text
        elif isinstance(event, TranscriptFinal):
            entry = self._partial.pop(event.role, None)
            if entry is None:
                self._add(Entry("speech", event.role, event.text))
            else:
                entry.text, entry.final = event.text, True
        elif isinstance(event, BargeIn):
            self._add(Entry("barge", text=event.cut_text or ""))
        elif isinstance(event, ToolRequested):
            text = tool_call_text(event.name, event.arguments)
            if (known := self._tools.get(event.tool_call_id)) is not None:
                known.text = text  # decided before its request was shown (a key pressed within a flush)
            else:
                self._tools[event.tool_call_id] = self._add(Entry("tool", text=text, tool_call_id=event.tool_call_id))
        elif isinstance(event, ToolDecided):
            entry = self._tools.get(event.tool_call_id)
            if entry is None:
                entry = self._tools[event.tool_call_id] = self._add(
                    Entry("tool", text=f"{event.name}(…)", tool_call_id=event.tool_call_id)
                )
            if event.decision == "edited" and event.arguments is not None:
                # What the tool ran with, not what the agent asked for.
                entry.text = "✎ " + tool_call_text(event.name, event.arguments)
            outcome = event.result if event.result is not None else event.error
            entry.decision = f"{event.decision} by {event.operator or event.by}" + (
                f": {short_json(outcome, OUTCOME_LIMIT)}" if outcome else ""
            )
        elif isinstance(event, CallStatus) and event.status != "in-progress":
            self._add(
                Entry("note", text=f"call {event.status}" + (f" ({event.ended_reason})" if event.ended_reason else ""))
            )
        elif isinstance(event, CallEnded) and event.summary:
            self._add(Entry("note", text=f"summary: {event.summary}"))
        else:
            return
        self.version += 1

    def _add(self, entry: Entry) -> Entry:
        self.entries.append(entry)
        if len(self.entries) > MAX_ENTRIES:
            dropped = self.entries[: len(self.entries) - MAX_ENTRIES]
            del self.entries[: len(dropped)]
            for gone in dropped:
                self._tools.pop(gone.tool_call_id, None)
                for role, open_entry in list(self._partial.items()):
                    if open_entry is gone:
                        del self._partial[role]
        return entry

    def render(self) -> Table:
        """A two-column grid: who (or what), then the text with a hanging indent."""
        grid = Table.grid(padding=(0, 1), expand=True)
        grid.add_column(width=7, justify="right", no_wrap=True)
        grid.add_column(ratio=1)
        for entry in self.entries:
            if entry.kind == "speech":
                text = Text(entry.text, style="" if entry.final else "italic dim")
                if not entry.final:
                    text.append(" …", style="dim")
                grid.add_row(
                    Text(ROLE_LABEL.get(entry.role, entry.role), style=ROLE_STYLE.get(entry.role, "bold")), text
                )
            elif entry.kind == "barge":
                text = Text("barge-in ", style="bold red")
                if entry.text:
                    text.append("cut: ", style="red")
                    text.append(entry.text, style="strike red")
                else:
                    text.append("the caller talked over the agent", style="red")
                grid.add_row(Text("⚡", style="bold red"), text)
            elif entry.kind == "tool":
                text = Text(entry.text, style="magenta")
                if entry.decision:
                    good = entry.decision.startswith(("approved", "edited", "overridden", "ran by"))
                    text.append(f"  → {entry.decision}", style="green" if good else "red")
                else:
                    text.append("  ⏳ waiting for a decision", style="bold yellow")
                grid.add_row(Text("tool", style="bold magenta"), text)
            else:
                grid.add_row(Text("·", style="dim"), Text(entry.text, style="dim"))
        return grid

    def plain(self) -> str:
        return "\n".join(f"{entry.kind}:{entry.role}:{entry.text}:{entry.decision}" for entry in self.entries)


class TranscriptPane(ScrollView, can_focus=True):
    """Shows one `CallTranscript`; follows the end unless the operator scrolled up.

    Line API: the transcript is rendered to lines once per change and only the
    visible ones are painted, a repaint of this pane alone. Only a scrollbar
    appearing or going makes Textual lay out the whole screen. (A Static here
    made every update, and every change of the selected call, a full-screen
    layout pass: at 100 calls, several a second.)
    """

    DEFAULT_CSS = """
    TranscriptPane {
        overflow-x: hidden;
        /* Always there: a scrollbar that comes and goes as the selected call changes
           lays out the whole screen (~30 ms) each time. */
        overflow-y: scroll;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._transcript: CallTranscript | None = None
        self._shown: tuple[str, int] | None = None
        self._lines: list[Strip] = []
        self._width = 0

    def show(self, transcript: CallTranscript | None) -> None:
        key = (transcript.call_id, transcript.version) if transcript is not None else None
        if key == self._shown:
            return
        following = self.scroll_y >= self.max_scroll_y - 1 or (self._shown or ("",))[0] != (key or ("",))[0]
        self._shown = key
        self._transcript = transcript
        self._render_lines()
        if following:
            self.scroll_end(animate=False, immediate=True, force=True, x_axis=False)

    @property
    def text(self) -> str:
        """What the pane shows, as plain text (for tests and screen readers)."""
        return "\n".join(strip.text.rstrip() for strip in self._lines)

    def _render_lines(self) -> None:
        width = self.scrollable_content_region.width
        self._width = width
        if width <= 0:  # not laid out yet: rendered on the first resize
            self._lines = []
            return
        renderable = self._transcript.render() if self._transcript is not None else Text(PLACEHOLDER)
        console = self.app.console
        lines = console.render_lines(
            renderable, self.app.console_options.update(width=width, height=None), style=self.rich_style, pad=True
        )
        self._lines = [Strip(line, width) for line in lines]
        size = Size(width, len(self._lines))
        if resize_virtual(self, size):
            # A scroll made before a new scrollbar was laid out leaves its thumb behind.
            self.call_after_refresh(self._place_scrollbar)
        self.refresh()

    def _place_scrollbar(self) -> None:
        if self.show_vertical_scrollbar:
            self.vertical_scrollbar.position = self.scroll_y

    def on_resize(self) -> None:
        if self.scrollable_content_region.width != self._width:
            following = self.scroll_y >= self.max_scroll_y - 1
            self._render_lines()
            if following:
                self.scroll_end(animate=False, immediate=True, force=True, x_axis=False)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        if self.is_mounted:  # a theme change: the colours are baked into the lines
            self._render_lines()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        if index >= len(self._lines):
            return Strip.blank(width, self.rich_style)
        line = self._lines[index].crop_extend(scroll_x, scroll_x + width, self.rich_style)
        return line.apply_offsets(scroll_x, index)
