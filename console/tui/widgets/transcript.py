"""The transcript of one call: partial text replaced by the final, barge-ins and
tool calls inline. `CallTranscript` is the model (fed in batches by the app);
`TranscriptPane` renders the selected call's model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from console.core.events import BargeIn, CallEnded, CallStatus, Event, ToolDecided, ToolRequested, TranscriptFinal, TranscriptPartial

MAX_ENTRIES = 400
ROLE_LABEL = {"assistant": "agent", "user": "caller"}
ROLE_STYLE = {"assistant": "bold cyan", "user": "bold yellow"}


def short_json(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": ")) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
            args = ", ".join(f"{key}={short_json(value, 40)}" for key, value in event.arguments.items())
            self._tools[event.tool_call_id] = self._add(
                Entry("tool", text=f"{event.name}({args})", tool_call_id=event.tool_call_id))
        elif isinstance(event, ToolDecided):
            entry = self._tools.get(event.tool_call_id)
            if entry is None:
                entry = self._tools[event.tool_call_id] = self._add(
                    Entry("tool", text=f"{event.name}(…)", tool_call_id=event.tool_call_id))
            outcome = event.result if event.result is not None else event.error
            entry.decision = f"{event.decision} by {event.by}" + (f": {short_json(outcome, 90)}" if outcome else "")
        elif isinstance(event, CallStatus) and event.status != "in-progress":
            self._add(Entry("note", text=f"call {event.status}" + (f" ({event.ended_reason})" if event.ended_reason else "")))
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
                grid.add_row(Text(ROLE_LABEL.get(entry.role, entry.role), style=ROLE_STYLE.get(entry.role, "bold")),
                             text)
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
                    good = entry.decision.startswith(("approved", "edited", "overridden"))
                    text.append(f"  → {entry.decision}", style="green" if good else "red")
                else:
                    text.append("  ⏳ waiting for a decision", style="bold yellow")
                grid.add_row(Text("tool", style="bold magenta"), text)
            else:
                grid.add_row(Text("·", style="dim"), Text(entry.text, style="dim"))
        return grid

    def plain(self) -> str:
        return "\n".join(f"{entry.kind}:{entry.role}:{entry.text}:{entry.decision}" for entry in self.entries)


class TranscriptPane(VerticalScroll):
    """Shows one `CallTranscript`; follows the end unless the operator scrolled up."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._body = Static("Waiting for a call…", id="transcript-body")
        self._shown: tuple[str, int] | None = None

    def compose(self):
        yield self._body

    def show(self, transcript: CallTranscript | None) -> None:
        key = (transcript.call_id, transcript.version) if transcript is not None else None
        if key == self._shown:
            return
        following = self.scroll_y >= self.max_scroll_y - 1 or (self._shown or ("",))[0] != (key or ("",))[0]
        self._shown = key
        self._body.update(transcript.render() if transcript is not None else "Waiting for a call…")
        if following:
            self.call_after_refresh(self.scroll_end, animate=False)

