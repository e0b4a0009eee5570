"""The History screen (`h`): past calls a page at a time, full-text search, a call's
whole timeline, export to a file, and replay into the main screen.

Everything shown is read from SQLite on demand through `console.store.queries`
into bounded tables (one page each); nothing is appended per event. The reads
use the receiver's own `Store` (its reader connection runs on its own thread);
an export opens a second `Store` in a thread worker, so neither the queries
nor the file writes ever block the UI loop.

A replay is started through the console's `ReplayController` (console/tui/replay.py);
the screen then closes with `ReplayStarted`, and the main screen follows the call.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.widgets.data_table import ColumnKey

from console.store import queries
from console.store.db import Store, StoreError
from console.store.export import ExportFormat, export
from console.tui.messages import ReplayStarted
from console.tui.replay import ReplayController
from console.tui.widgets.panes import short_id
from console.tui.widgets.prompt import PromptScreen
from console.tui.widgets.table import WindowTable
from console.tui.widgets.transcript import ROLE_LABEL, ROLE_STYLE, short_json

PAGE_SIZE = 20
LIST_TIME = "%m-%d %H:%M"  # the lists are narrow; the timeline shows the full date
# (key, label, width): together with the cell padding they fill the 66-cell list pane (app.tcss).
CALL_COLUMNS = [
    ("started", "started", 11),
    ("call", "call", 9),
    ("via", "via", 6),
    ("status", "status", 11),
    ("time", "time", 6),
    ("barge_ins", "⚡", 2),
    ("tools", "tools", 5),
]
HIT_TEXT_WIDTH = 29
HIT_COLUMNS = [("at", "at", 11), ("call", "call", 8), ("role", "who", 6), ("text", "text", HIT_TEXT_WIDTH + 2)]
MAX_TIMELINE_EVENTS = 1000
EXPORT_FORMATS: dict[str, ExportFormat] = {".jsonl": "jsonl", ".csv": "csv"}
STATUS_STYLE = {
    "in-progress": "bold green",
    "ringing": "yellow",
    "queued": "dim",
    "forwarding": "cyan",
    "ended": "dim",
    "unknown": "bold italic dark_orange",
}
# How a status reads in the lists: `unknown` (the console stopped before the call's end
# was seen) must never pass for a call that ended or is still going.
STATUS_LABEL = {"unknown": "? unknown"}


def status_text(status: str | None) -> Text:
    if not status:
        return Text("?", style="dim")
    return Text(STATUS_LABEL.get(status, status), style=STATUS_STYLE.get(status, ""))


# --- the timeline of a past call -------------------------------------------------------------------


def _parse(iso: str | None) -> datetime | None:
    if not iso:
        return None
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        return None


def local_time(iso: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    at = _parse(iso)
    if at is None:
        return "—"
    return at.astimezone().strftime(fmt)


def snippet(text: str, words: list[str], width: int = 44) -> Text:
    """`width` cells of one transcript line around its first match, the matches highlighted."""
    text = " ".join(text.split())
    pattern = re.compile(r"(?i)\b(" + "|".join(re.escape(word) for word in words) + ")") if words else None
    found = pattern.search(text) if pattern else None
    start = 0
    if found is not None and found.start() > width // 3 and len(text) > width:
        start = min(found.start() - width // 3, len(text) - width + 1)
    cut = text[start : start + width]
    shown = Text(("…" if start else "") + cut + ("…" if start + width < len(text) else ""))
    if pattern is not None:
        shown.highlight_regex(pattern, "bold reverse")
    return shown


def span(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "—"
    whole = int(seconds)
    return (
        f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
        if whole >= 3600
        else f"{whole // 60}:{whole % 60:02d}"
    )


def relative(seconds: float) -> str:
    sign = "-" if seconds < 0 else "+"
    seconds = abs(seconds)
    minutes, rest = divmod(seconds, 60)
    return f"{sign}{int(minutes)}:{rest:06.3f}"


def call_duration(call: dict[str, Any]) -> float | None:
    if call.get("duration_s") is not None:
        return float(call["duration_s"])
    start, end = _parse(call.get("started_at")), _parse(call.get("ended_at"))
    return (end - start).total_seconds() if start and end else None


def describe_event(event: dict[str, Any]) -> tuple[Text, Text]:
    """The label and the detail of one timeline row."""
    kind = event.get("kind", "")
    if kind == "call.status":
        reason = event.get("ended_reason")
        return Text("status", style="bold"), Text(
            event.get("status", "") + (f" ({reason})" if reason else ""),
            style=STATUS_STYLE.get(event.get("status", ""), ""),
        )
    if kind in ("transcript.final", "transcript.partial"):
        role = event.get("role", "")
        final = kind == "transcript.final"
        return (
            Text(ROLE_LABEL.get(role, role), style=ROLE_STYLE.get(role, "bold")),
            Text(event.get("text", ""), style="" if final else "italic dim"),
        )
    if kind in ("speech.started", "speech.stopped"):
        role = ROLE_LABEL.get(event.get("role", ""), event.get("role", ""))
        verb = "starts" if kind == "speech.started" else "stops"
        return Text("speech", style="dim"), Text(f"{role} {verb} speaking", style="dim")
    if kind == "barge_in":
        detail = Text()
        if event.get("cut_text"):
            detail.append("cut: ", style="red")
            detail.append(event["cut_text"], style="strike red")
        else:
            detail.append("the caller talked over the agent", style="red")
        return Text("⚡ barge-in", style="bold red"), detail
    if kind == "tool.requested":
        args = ", ".join(f"{key}={short_json(value, 40)}" for key, value in (event.get("arguments") or {}).items())
        detail = Text(f"{event.get('name', '')}({args})", style="magenta")
        detail.append(f"  {short_id(event.get('tool_call_id'), 12)}", style="dim")
        return Text("tool call", style="bold magenta"), detail
    if kind == "tool.decided":
        decision = event.get("decision", "")
        good = decision in ("approved", "edited", "overridden")
        detail = Text(f"{event.get('name', '')} ", style="magenta")
        detail.append(
            f"{decision} by {event.get('by', '')}",
            style="bold red" if event.get("by") == "timeout" else "green" if good else "red",
        )
        if event.get("latency_ms") is not None:
            detail.append(f" in {event['latency_ms']:.0f} ms", style="dim")
        outcome = event.get("error") if event.get("error") is not None else event.get("result")
        if outcome:
            detail.append(f" → {short_json(outcome, 120)}")
        return Text("decision", style="bold magenta"), detail
    if kind == "call.hang":
        return Text("hang", style="bold yellow"), Text("the platform reported a hang (the agent went quiet)")
    if kind == "call.ended":
        parts = [event.get("reason") or "ended"]
        if event.get("duration_s") is not None:
            parts.append(f"{event['duration_s']:.1f} s")
        if event.get("cost") is not None:
            parts.append(f"cost {event['cost']:.4f}")
        detail = Text(" · ".join(parts), style="bold")
        if event.get("summary"):
            detail.append(f"\n{event['summary']}", style="")
        return Text("ended", style="bold"), detail
    if kind == "raw":
        return Text("raw", style="dim"), Text(str(event.get("type", "")), style="dim")
    return Text(kind, style="dim"), Text("")


def timeline_view(detail: dict[str, Any]) -> Group:
    """A past call: its facts, its tool calls with decisions, then every event in order."""
    call = detail["call"]
    title = Text(call["call_id"], style="bold")
    title.append(f" · {call['provider']} · ", style="dim")
    title.append_text(status_text(call["status"]))
    if call.get("ended_reason"):
        title.append(f" ({call['ended_reason']})", style="dim")
    facts = Text(style="dim")
    facts.append(
        f"started {local_time(call.get('started_at') or call.get('first_seen_at'))} · "
        f"{span(call_duration(call))} long · {call['barge_ins']} barge-ins · {call['tool_calls']} tool calls"
    )
    if call.get("cost") is not None:
        facts.append(f" · cost {call['cost']:.4f}")
    parts: list[Any] = [title, facts]
    if call.get("summary"):
        parts.append(Text.assemble(("summary ", "bold"), call["summary"]))
    if detail["tool_calls"]:
        tools = Table.grid(padding=(0, 1), expand=True)
        tools.add_column(max_width=24, no_wrap=True, overflow="ellipsis")
        tools.add_column(ratio=1)
        for tool in detail["tool_calls"]:
            decision = tool["decision"] or "pending"
            good = decision in ("approved", "edited", "overridden")
            outcome = tool["error"] if tool["error"] is not None else tool["result"]
            line = Text(
                f"{decision}" + (f" by {tool['by']}" if tool["by"] else ""),
                style="bold red" if tool["by"] == "timeout" else "green" if good else "red",
            )
            if tool["latency_ms"] is not None:
                line.append(f" in {tool['latency_ms']:.0f} ms", style="dim")
            if outcome:
                line.append(f" → {short_json(outcome, 80)}", style="dim")
            tools.add_row(Text(tool["name"], style="magenta"), line)
        parts += [Text("tool calls", style="bold underline"), tools]
    events = detail["events"]
    heading = Text("timeline", style="bold underline")
    if detail.get("hidden_partials"):
        heading.append(f"  ({detail['hidden_partials']} partial transcripts not shown; a: show them)", style="dim")
    if detail.get("hidden_raw"):
        heading.append(f"  ({detail['hidden_raw']} raw messages not shown; r: show them)", style="dim")
    parts.append(heading)
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(width=11, justify="right", no_wrap=True)
    grid.add_column(width=11, no_wrap=True)
    grid.add_column(ratio=1)
    origin = _parse(events[0]["at"]) if events else None
    for event in events:
        at = _parse(event.get("at"))
        offset = relative((at - origin).total_seconds()) if at and origin else ""
        label, text = describe_event(event)
        grid.add_row(Text(offset, style="dim"), label, text)
    if not events:
        grid.add_row("", Text("no events", style="dim"), "")
    parts.append(grid)
    if detail.get("more"):
        parts.append(Text(f"… {detail['more']} more events: export the call (e) to see them all.", style="dim"))
    return Group(*parts)


# --- export --------------------------------------------------------------------------------


def export_path_problem(text: str) -> str | None:
    path = Path(text.strip()).expanduser()
    if not text.strip():
        return "Type a file path."
    if path.is_dir():
        return f"{path} is a folder: add a file name ending in .jsonl or .csv."
    if path.suffix.lower() not in EXPORT_FORMATS:
        return "End the file name in .jsonl or .csv: that picks the format."
    return None


def default_export_path(call_id: str | None, now: datetime | None = None) -> Path:
    """A new file in the working directory, named after the call (or the time, for everything)."""
    if call_id is not None:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", call_id)[:80]
        return Path.cwd() / f"voice-console-call-{name}.jsonl"
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path.cwd() / f"voice-console-history-{stamp}.jsonl"


class _CountingWriter:
    """Counts the lines written through it (one per event, near enough for progress)."""

    def __init__(self, out: TextIO, tick: Callable[[int], None]) -> None:
        self._out = out
        self._tick = tick
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        self._tick(self.lines)
        return self._out.write(text)


# --- the screen ---------------------------------------------------------------------------


class HistoryScreen(Screen[ReplayStarted | None]):
    """Calls from the history, a page at a time; search; the selected call's timeline.
    Closes with `ReplayStarted` when it started a replay (else with nothing)."""

    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("slash", "focus_search", "Search"),
        Binding("left_square_bracket", "page(-1)", "Prev page"),
        Binding("right_square_bracket", "page(1)", "Next page"),
        Binding("p", "replay", "Replay"),
        Binding("plus,equals_sign", "speed(1)", "Faster", show=False),
        Binding("minus", "speed(-1)", "Slower", show=False),
        Binding("e", "export(False)", "Export call"),
        Binding("E", "export(True)", "Export all"),
        Binding("a", "toggle_partials", "Partials", show=False),
        # Off the footer (it is full at 120 columns); the status line and the help (f1) list it.
        Binding(
            "r",
            "toggle_raw",
            "Raw messages",
            show=False,
            tooltip="show or hide the timeline's raw rows: messages no normalizer knows, e.g. model-output",
        ),
    ]

    def __init__(self, store: Callable[[], Store | None], db_path: Path, replay: ReplayController | None) -> None:
        super().__init__()
        self._store = store
        self.db_path = Path(db_path)
        self.replay = replay
        self.page = 0
        self.total = 0
        self.query_text = ""  # the search shown, "" for the call list
        self.selected_call: str | None = None
        self.show_partials = False  # the timeline's partial transcripts (each final line repeats them)
        self.show_raw = False  # messages no normalizer knows (e.g. model-output): noise unless asked for
        self._hit_calls: dict[str, str] = {}  # search row key -> call id
        self._note = ""  # the export's progress or outcome, shown instead of the key help for a while
        self._note_until = 0.0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(
            placeholder="Search transcripts: type words and press enter (escape: back to the calls)",
            id="history-search",
        )
        with Horizontal(id="history-body"):
            with Vertical(id="history-list-pane", classes="pane") as pane:
                pane.border_title = "Calls"
                yield WindowTable([(key, label) for key, label, _ in CALL_COLUMNS], id="history-calls")
                yield WindowTable([(key, label) for key, label, _ in HIT_COLUMNS], id="history-hits")
            with Vertical(id="history-detail-pane", classes="pane") as pane:
                pane.border_title = "Timeline"
                with VerticalScroll(id="history-detail"):
                    yield Static("Select a call to see its timeline.", id="history-timeline")
        yield Static("", id="history-status")
        yield Footer()

    def on_mount(self) -> None:
        # Fixed widths: the pages never jump sideways, and DataTable never shows a row it
        # rendered before measuring its columns (it caches those until the row changes).
        for table_id, columns in (("#history-calls", CALL_COLUMNS), ("#history-hits", HIT_COLUMNS)):
            table = self.query_one(table_id, WindowTable)
            for key, _, width in columns:
                column = table.columns[ColumnKey(key)]
                column.width, column.auto_width = width, False
        self.query_one("#history-hits").display = False
        self.query_one("#history-calls").focus()
        self.load_page()
        self._show_status()
        self.set_interval(0.5, self._show_status)

    # --- reading -------------------------------------------------------------------------

    def store(self) -> Store | None:
        store = self._store()
        if store is None:
            self.query_one("#history-timeline", Static).update(
                "The history opens once the receiver has started; trying again…"
            )
            self.set_timer(0.5, self.load_page)
        return store

    @work(exclusive=True, group="history-page", exit_on_error=False)
    async def load_page(self) -> None:
        store = self.store()
        if store is None:
            return
        pane = self.query_one("#history-list-pane")
        if self.query_text:
            self.total = await queries.count_search(store, self.query_text)
            self._clamp_page()
            hits = await queries.search_page(store, self.query_text, PAGE_SIZE, self.page * PAGE_SIZE)
            self._hit_calls = {str(hit["id"]): hit["call_id"] or "" for hit in hits}
            words = [word for word in self.query_text.split() if any(c.isalnum() for c in word)]
            rows: list[tuple[str, tuple[object, ...]]] = []
            for hit in hits:
                text = snippet(hit["text"], words, HIT_TEXT_WIDTH)
                role = hit["role"]
                rows.append(
                    (
                        str(hit["id"]),
                        (
                            local_time(hit["at"], LIST_TIME),
                            short_id(hit["call_id"], 8),
                            Text(ROLE_LABEL.get(role, role), style=ROLE_STYLE.get(role, "")),
                            text,
                        ),
                    )
                )
            self.query_one("#history-hits", WindowTable).sync(rows)
            pane.border_title = f"Search: {self.query_text}"
            what = "lines"
        else:
            self.total = await queries.count_calls(store)
            self._clamp_page()
            calls = await queries.list_calls(store, limit=PAGE_SIZE, offset=self.page * PAGE_SIZE)
            rows = [
                (
                    c["call_id"],
                    (
                        local_time(c["started_at"], LIST_TIME) if c["started_at"] else Text("—", style="dim"),
                        short_id(c["call_id"], 9),
                        c["provider"],
                        status_text(c["status"]),
                        span(call_duration(c)),
                        Text(str(c["barge_ins"]), style="bold red" if c["barge_ins"] else "dim"),
                        Text(str(c["tool_calls"]), style="" if c["tool_calls"] else "dim"),
                    ),
                )
                for c in calls
            ]
            self.query_one("#history-calls", WindowTable).sync(rows)
            pane.border_title = "Calls"
            what = "calls"
        first = self.page * PAGE_SIZE + 1 if self.total else 0
        last = min(self.total, (self.page + 1) * PAGE_SIZE)
        pane.border_subtitle = f"page {self.page + 1} · {what} {first}–{last} of {self.total}"
        if not self.total:
            self.query_one("#history-timeline", Static).update(
                f"No transcript line matches {self.query_text!r}." if self.query_text else "No calls recorded yet."
            )
        self._follow_cursor()

    def _clamp_page(self) -> None:
        pages = max(1, -(-self.total // PAGE_SIZE))
        self.page = min(max(self.page, 0), pages - 1)

    def _table(self) -> WindowTable:
        return self.query_one("#history-hits" if self.query_text else "#history-calls", WindowTable)

    def _call_at_cursor(self) -> str | None:
        key = self._table().selected_key
        if key is None:
            return None
        return self._hit_calls.get(key) if self.query_text else key

    def _follow_cursor(self) -> None:
        call_id = self._call_at_cursor()
        if call_id and call_id != self.selected_call:
            self.selected_call = call_id
            self.load_detail(call_id)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id in ("history-calls", "history-hits"):
            event.stop()
            self._follow_cursor()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id in ("history-calls", "history-hits"):
            event.stop()
            self.query_one("#history-detail", VerticalScroll).focus()

    @work(exclusive=True, group="history-detail", exit_on_error=False)
    async def load_detail(self, call_id: str) -> None:
        await asyncio.sleep(0.05)  # a held arrow key: only the row it stops on is read
        store = self._store()
        if store is None:
            return
        detail = await queries.call_timeline(
            store, call_id, MAX_TIMELINE_EVENTS, partials=self.show_partials, raw=self.show_raw
        )
        pane = self.query_one("#history-detail-pane")
        body = self.query_one("#history-timeline", Static)
        if detail is None:
            body.update(f"No call {call_id} in the history.")
            return
        pane.border_title = f"Timeline · {short_id(call_id, 12)}"
        body.update(timeline_view(detail))
        self.query_one("#history-detail", VerticalScroll).scroll_home(animate=False)

    # --- actions ---------------------------------------------------------------------------

    def action_back(self) -> None:
        if self.focused is self.query_one("#history-search", Input) or self.focused is self.query_one(
            "#history-detail", VerticalScroll
        ):
            self._table().focus()
        elif self.query_text:
            self._set_query("")
        else:
            self.app.pop_screen()

    def action_focus_search(self) -> None:
        self.query_one("#history-search", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "history-search":
            event.stop()
            self._set_query(event.value.strip())
            self._table().focus()

    def _set_query(self, text: str) -> None:
        self.query_text = text
        self.page = 0
        self.selected_call = None
        self.query_one("#history-search", Input).value = text
        self.query_one("#history-calls").display = not text
        self.query_one("#history-hits").display = bool(text)
        self.load_page()

    def action_toggle_partials(self) -> None:
        self.show_partials = not self.show_partials
        if self.selected_call:
            self.load_detail(self.selected_call)

    def action_toggle_raw(self) -> None:
        self.show_raw = not self.show_raw
        self.notify("Raw messages shown in the timeline." if self.show_raw else "Raw messages hidden.", timeout=2)
        if self.selected_call:
            self.load_detail(self.selected_call)

    def action_page(self, step: int) -> None:
        pages = max(1, -(-self.total // PAGE_SIZE))
        target = min(max(self.page + step, 0), pages - 1)
        if target != self.page:
            self.page = target
            self.load_page()

    def action_speed(self, step: int) -> None:
        if self.replay is not None:
            self.replay.change_speed(step)
            self._show_status()

    def action_replay(self) -> None:
        call_id = self._call_at_cursor()
        store = self._store()
        if call_id is None or store is None:
            self.notify("Select a call to replay.", severity="warning")
            return
        if self.replay is None:
            self.notify("Replay is not available here.", severity="warning")
            return
        self.dismiss(ReplayStarted(self.replay.start(store, call_id)))  # the main screen follows it

    def action_export(self, everything: bool) -> None:
        call_id = None if everything else self._call_at_cursor()
        if not everything and call_id is None:
            self.notify("Select a call to export (or E for the whole history).", severity="warning")
            return
        what = "the whole history" if call_id is None else f"call {call_id}"
        prompt = PromptScreen(
            f"Export {what}",
            "Write to (.jsonl or .csv picks the format):",
            str(default_export_path(call_id)),
            check=export_path_problem,
            live_check=True,
        )

        def chosen(path: str | None) -> None:
            if path is not None:
                target = Path(path.strip()).expanduser()
                self.export_to(target, EXPORT_FORMATS[target.suffix.lower()], call_id)

        self.app.push_screen(prompt, chosen)

    # --- export (a thread: the file writes stay off the UI loop) -----------------------------

    @work(thread=True, exclusive=True, group="history-export", exit_on_error=False)
    def export_to(self, path: Path, fmt: ExportFormat, call_id: str | None) -> None:
        self.app.call_from_thread(self._export_note, _markup_safe(f"exporting to {path}…"))
        try:
            rows = asyncio.run(self._export(path, fmt, call_id))
        except OSError as exc:
            self.app.call_from_thread(self._export_failed, f"Cannot write {path}: {exc.strerror or exc}")
        except (StoreError, ValueError) as exc:
            self.app.call_from_thread(self._export_failed, f"The export failed: {exc}")
        else:
            self.app.call_from_thread(self._export_done, path, fmt, rows)

    async def _export(self, path: Path, fmt: ExportFormat, call_id: str | None) -> int:
        last = [0.0]

        def tick(lines: int) -> None:
            now = asyncio.get_running_loop().time()
            if now - last[0] >= 0.2:
                last[0] = now
                self.app.call_from_thread(
                    self._export_note, _markup_safe(f"exporting to {path}: {lines:,} of {total:,} events…")
                )

        async with await Store.open(self.db_path) as store:
            # The same events the export writes: a whole-history export leaves replays out.
            total = await queries.count_events(store, call_id)
            created = not path.exists()
            try:
                # This loop is the export thread's own: blocking file writes are fine here.
                with open(path, "w", encoding="utf-8", newline="") as handle:  # noqa: ASYNC230
                    return await export(store, _CountingWriter(handle, tick), fmt, call_id=call_id)
            except BaseException:
                if created:
                    path.unlink(missing_ok=True)  # no half-written file left behind
                raise

    def _export_note(self, text: str, *, keep_s: float = 30.0) -> None:
        self._note, self._note_until = text, time.monotonic() + keep_s
        self._show_status()

    def _export_failed(self, message: str) -> None:
        self._export_note(f"[b red]{_markup_safe(message)}[/]", keep_s=15)
        self.notify(message, title="Export failed", severity="error", timeout=10)

    def _export_done(self, path: Path, fmt: str, rows: int) -> None:
        message = f"Exported {rows:,} events as {fmt} to {path}"
        self._export_note(_markup_safe(message), keep_s=10)
        self.notify(message, title="Export done")

    def _show_status(self) -> None:
        status = self.query_one("#history-status", Static)
        if self._note and time.monotonic() < self._note_until:
            status.update(self._note)
            return
        keys = "/ search · [ ] page · p replay · +/- speed · e export call · E all · a partials · r raw · esc back"
        replay = self.replay.describe() if self.replay is not None else ""
        status.update(f"{replay}  ·  {keys}" if replay else keys)


def _markup_safe(text: str) -> str:
    return text.replace("[", r"\[")
