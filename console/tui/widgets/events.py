"""The Events pane: every webhook delivery with its signature verdict, our reply
and timing, plus the console's own notes; filterable, raw JSON on demand.

`DeliveryLog` is a bounded model (the last `cap` rows) fed in batches by the
screen's flush; `DeliveryView` draws only the visible rows (Line API), so a
flood of deliveries costs one refresh per flush, never a widget per row.
The raw view reads the stored (redacted) request back from SQLite by id.
"""

from __future__ import annotations

import json
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.events import Click
from textual.geometry import Size
from textual.screen import ModalScreen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input, Static

from console.services.pipeline import DeliverySeen
from console.store import queries
from console.tui.widgets.scrolling import resize_virtual

DELIVERY_CAP = 2000
# The pane's counts ("1234 ok") change with every delivery; a border title repaints the whole pane
# with its scrollbar, every frame at 1,000 events/s. Counts are retitled at most this often.
COUNTS_EVERY_S = 1.0
RAW_BODY_LIMIT = 64 * 1024  # characters shown in the raw view; the rest is cut (it stays in the history)

# column widths (cells) of a delivery row, after the time: the verdict and our answer
# first, so a narrow pane still shows what matters
W_VERDICT, W_STATUS, W_MS, W_PROVIDER, W_TYPE, W_CALL = 5, 3, 7, 6, 20, 8
W_INSTANCE = 9  # the team's receiver that answered (team mode only)

STYLE_TIME = Style(dim=True)
STYLE_OK = Style(color="green")
STYLE_BAD = Style(color="red", bold=True)
STYLE_REASON = Style(color="red")
STYLE_NOTE = Style(dim=True, italic=True)
STYLE_DUP = Style(color="yellow")
STYLE_INSTANCE = Style(color="cyan")


@dataclass(frozen=True, slots=True)
class LogRow:
    """A delivery, or a note from the console itself (warnings, operator actions)."""

    at: datetime
    seen: DeliverySeen | None = None
    note: str = ""

    @property
    def haystack(self) -> str:
        """What the filter matches against: provider, route, type, call, verdict, reason, status."""
        seen = self.seen
        if seen is None:
            return f"note {self.note}".lower()
        return " ".join(
            str(part)
            for part in (
                seen.provider,
                seen.route,
                seen.message_type or "",
                seen.call_id or "",
                seen.verdict,
                seen.reason or "",
                seen.status,
                "duplicate" if seen.duplicate else "",
                seen.instance or "",
            )
        ).lower()


def clock(at: datetime) -> str:
    return at.astimezone().strftime("%H:%M:%S.%f")[:-3]


def fit(text: str, width: int) -> str:
    return text[: width - 1] + "…" if len(text) > width else text.ljust(width)


def route_label(seen: DeliverySeen) -> str:
    """The route without its provider prefix (`retell.function` -> function); "" for the main webhook."""
    return seen.route.split(".", 1)[1] if "." in seen.route else ""


def elapsed(value: float) -> str:
    return f"{value:.1f}ms" if value < 10 else f"{value:.0f}ms"


def row_segments(row: LogRow) -> list[Segment]:
    out = [Segment(clock(row.at), STYLE_TIME), Segment(" ")]
    seen = row.seen
    if seen is None:
        out.append(Segment("· " + row.note, STYLE_NOTE))
        return out
    good = seen.verdict == "ok"
    verdict = "✓ ok" if good else ("✗ sig" if (seen.reason or "").startswith("authentication") else "✗ bad")
    call = (seen.call_id or "—").removeprefix("call_")
    out += [
        Segment(fit(verdict, W_VERDICT) + " ", STYLE_OK if good else STYLE_BAD),
        Segment(str(seen.status).rjust(W_STATUS) + " ", STYLE_OK if seen.status < 400 else STYLE_BAD),
        Segment(elapsed(seen.elapsed_ms).rjust(W_MS) + " "),
        Segment(fit(seen.provider, W_PROVIDER) + " "),
        *([Segment(fit(seen.instance, W_INSTANCE) + " ", STYLE_INSTANCE)] if seen.instance is not None else []),
        Segment(fit(seen.message_type or ("—" if good else "refused"), W_TYPE) + " "),
        Segment(call[:W_CALL]),
    ]
    if route_label(seen):
        out.append(Segment(" " + route_label(seen), STYLE_TIME))
    if seen.duplicate:
        out.append(Segment(" duplicate", STYLE_DUP))
    if seen.reason:
        out.append(Segment(" " + seen.reason, STYLE_REASON))
    return out


def header(team: bool = False) -> str:
    """The columns' names; a team console's rows say which receiver answered ("at")."""
    return " ".join(
        [
            fit("time", 12),
            fit("sig", W_VERDICT),
            "ans".rjust(W_STATUS),
            "took".rjust(W_MS),
            fit("via", W_PROVIDER),
            *([fit("at", W_INSTANCE)] if team else []),
            fit("message", W_TYPE),
            "call",
        ]
    )


class DeliveryLog:
    """The last `cap` rows and the filtered window over them. No Textual here."""

    def __init__(self, cap: int = DELIVERY_CAP) -> None:
        self.cap = cap
        self.rows: deque[LogRow] = deque(maxlen=cap)
        self.visible: list[LogRow] = []
        self.filter = ""
        self._added = 0  # rows ever added; row n (0-based) is kept while n >= _added - cap
        self._visible_numbers: list[int] = []

    def add(self, rows: Iterable[LogRow]) -> int:
        """Append a batch; how many rows were dropped from the front of `visible`."""
        rows = list(rows)
        first = self._added
        self._added += len(rows)
        self.rows.extend(rows)
        needle = self.filter
        for number, row in enumerate(rows, first):
            if not needle or needle in row.haystack:
                self.visible.append(row)
                self._visible_numbers.append(number)
        # What fell out of the last `cap` rows leaves the filtered window too.
        gone = bisect_left(self._visible_numbers, self._added - self.cap)
        if gone:
            del self.visible[:gone]
            del self._visible_numbers[:gone]
        return gone

    def set_filter(self, text: str) -> None:
        self.filter = text.strip().lower()
        needle = self.filter
        first = self._added - len(self.rows)
        kept = [(number, row) for number, row in enumerate(self.rows, first) if not needle or needle in row.haystack]
        self._visible_numbers = [number for number, _ in kept]
        self.visible = [row for _, row in kept]


class DeliveryView(ScrollView, can_focus=True):
    """Draws the visible rows of a `DeliveryLog`; a row cursor; follows new rows at the end."""

    COMPONENT_CLASSES = {"delivery-view--cursor"}
    DEFAULT_CSS = """
    DeliveryView { background: $surface; overflow-x: hidden; }
    /* Solid, as the tables' cursor (app.tcss): a blend rounds away in 256 colours. */
    DeliveryView > .delivery-view--cursor { background: $primary-darken-2; color: $text; text-style: bold; }
    DeliveryView:focus > .delivery-view--cursor { background: $primary; color: $text; text-style: bold; }
    """
    BINDINGS = [
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "cursor(-10)", "Page up", show=False),
        Binding("pagedown", "cursor(10)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
    ]

    def __init__(self, model: DeliveryLog, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.cursor = -1  # -1: follow the newest row
        # Finished lines by row (id -> (row, strip)): following the end, each flush shifts
        # every line; a row is drawn once, not again on every flush while it scrolls by.
        self._lines: dict[int, tuple[LogRow, Strip]] = {}
        self._lines_look: tuple[object, ...] = ()

    @property
    def selected(self) -> LogRow | None:
        rows = self.model.visible
        if not rows:
            return None
        return rows[self.cursor] if 0 <= self.cursor < len(rows) else rows[-1]

    def _cursor_index(self) -> int:
        return self.cursor if self.cursor >= 0 else len(self.model.visible) - 1

    def rows_changed(self, dropped: int = 0) -> None:
        """After the model changed: resize, keep the cursor on its row, follow the end."""
        if self.cursor >= 0:
            self.cursor = max(0, self.cursor - dropped)
        resize_virtual(self, Size(self.size.width, len(self.model.visible)))
        if self.cursor < 0:
            self._follow()
        self.refresh()

    def _follow(self) -> None:
        # After the next layout pass: the new virtual size must be known to scroll to its end.
        self.call_after_refresh(self.scroll_end, animate=False, immediate=True, x_axis=False)

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self.model.visible))
        if self.cursor < 0:  # shown again (a tab switch) or resized: back to the newest rows
            self._follow()

    def action_cursor(self, delta: int) -> None:
        count = len(self.model.visible)
        if not count:
            return
        index = min(count - 1, max(0, self._cursor_index() + delta))
        self.cursor = -1 if index == count - 1 and delta > 0 else index
        self._scroll_to_cursor()

    def action_cursor_to(self, index: int) -> None:
        count = len(self.model.visible)
        self.cursor = -1 if index < 0 or count == 0 else 0
        self._scroll_to_cursor()

    def _scroll_to_cursor(self) -> None:
        index = self._cursor_index()
        height = self.scrollable_content_region.height
        if index < self.scroll_y:
            self.scroll_to(y=index, animate=False, immediate=True)
        elif index >= self.scroll_y + height:
            self.scroll_to(y=index - height + 1, animate=False, immediate=True)
        self.refresh()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def on_click(self, event: Click) -> None:
        index = int(self.scroll_y) + event.y
        if 0 <= index < len(self.model.visible):
            self.cursor = index
            self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.size.width
        base = self.rich_style
        rows = self.model.visible
        if index >= len(rows):
            return Strip.blank(width, base)
        row = rows[index]
        on_cursor = index == self._cursor_index() and (self.has_focus or self.cursor >= 0)
        cursor_style = self.get_component_rich_style("delivery-view--cursor") if on_cursor else None
        look = (width, scroll_x, base)
        if look != self._lines_look:  # resized, scrolled sideways or restyled (a theme)
            self._lines, self._lines_look = {}, look
        cached = None if on_cursor else self._lines.get(id(row))
        if cached is not None and cached[0] is row:
            return cached[1]
        strip = Strip(row_segments(row))
        if cursor_style is not None:
            strip = strip.apply_style(cursor_style).crop_extend(scroll_x, scroll_x + width, cursor_style)
        else:
            strip = strip.crop_extend(scroll_x, scroll_x + width, base)
        strip = strip.apply_style(base)
        if cursor_style is None:
            self._remember_line(row, strip, scroll_y)
        return strip

    def _remember_line(self, row: LogRow, strip: Strip, scroll_y: int) -> None:
        if len(self._lines) >= 3 * max(self.size.height, 10):  # keep what is on screen now
            shown = {id(on_screen) for on_screen in self.model.visible[scroll_y : scroll_y + self.size.height]}
            self._lines = {key: line for key, line in self._lines.items() if key in shown}
        self._lines[id(row)] = (row, strip)


StoreGetter = Callable[[], Any]  # -> the open history Store, or None


class EventsPane(Vertical):
    """Header, the delivery view and a filter line (shown by `/`)."""

    BINDINGS = [
        Binding(
            "slash", "filter", "Filter", tooltip="show only deliveries matching a text (provider, type, call, verdict)"
        ),
        Binding("v", "raw", "Raw JSON", tooltip="the selected delivery as stored: body, headers, our reply"),
        Binding("enter", "raw", "Raw JSON", show=False),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, store: StoreGetter, *, cap: int = DELIVERY_CAP, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = DeliveryLog(cap)
        self._store = store
        self.counts = {"ok": 0, "rejected": 0}
        self._counts_shown_at = -COUNTS_EVERY_S
        self._counts_due: Timer | None = None
        self._team = False

    def compose(self) -> ComposeResult:
        yield Static(Text(header(), style="bold"), id="events-header")
        yield DeliveryView(self.model, id="events")
        yield Input(
            placeholder="filter: provider, type, call, ok/rejected… (enter keeps, escape clears)", id="events-filter"
        )

    @property
    def view(self) -> DeliveryView:
        return self.query_one(DeliveryView)

    def add(self, seen: Sequence[DeliverySeen], notes: Sequence[tuple[datetime, str]] = ()) -> None:
        """One batch from the screen's flush."""
        rows = [LogRow(at, note=text) for at, text in notes]
        rows += [LogRow(item.at, seen=item) for item in seen]
        if not rows:
            return
        for item in seen:
            self.counts["ok" if item.verdict == "ok" else "rejected"] += 1
        if not self._team and any(item.instance is not None for item in seen):
            self._team = True  # the team's deliveries: the column of who answered
            self.query_one("#events-header", Static).update(Text(header(team=True), style="bold"))
        self.view.rows_changed(self.model.add(rows))
        if seen and self._counts_due is None:  # notes alone change no count
            wait = self._counts_shown_at + COUNTS_EVERY_S - time.monotonic()
            if wait <= 0:
                self._subtitle()
            else:
                self._counts_due = self.set_timer(wait, self._counts_due_now)

    def _counts_due_now(self) -> None:
        self._counts_due = None
        self._subtitle()

    def _subtitle(self) -> None:
        self._counts_shown_at = time.monotonic()
        if self._counts_due is not None:  # a filter changed: shown now, with the counts
            self._counts_due.stop()
            self._counts_due = None
        parent = self.parent
        if not isinstance(parent, Widget):
            return
        parts = [f"{self.counts['ok']} ok"]
        if self.counts["rejected"]:
            parts.append(f"{self.counts['rejected']} rejected")
        if self.model.filter:
            parts.append(f"filter “{self.model.filter}”: {len(self.model.visible)} shown")
        parent.border_subtitle = " · ".join(parts)

    # --- filter ---------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#events-filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "events-filter":
            event.stop()
            self.apply_filter(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "events-filter":
            event.stop()
            if not event.value.strip():
                event.input.display = False
            self.view.focus()

    def apply_filter(self, text: str) -> None:
        self.model.set_filter(text)
        self.view.cursor = -1
        self.view.rows_changed()
        self._subtitle()

    def action_clear_filter(self) -> None:
        box = self.query_one("#events-filter", Input)
        box.value = ""
        box.display = False
        self.apply_filter("")
        self.view.focus()

    # --- raw view -------------------------------------------------------------------------

    def action_raw(self) -> None:
        row = self.view.selected
        if row is None or row.seen is None:
            self.notify("Select a delivery first (the notes have no raw form).", severity="warning")
            return
        self.app.push_screen(RawDeliveryScreen(row.seen, self._store()))


class RawDeliveryScreen(ModalScreen[None]):
    """The stored request (redacted), its headers, our reply and the events it became."""

    DEFAULT_CSS = """
    RawDeliveryScreen { align: center middle; }
    #raw-box { width: 90%; height: 90%; border: thick $accent; background: $surface; padding: 0 1; }
    #raw-scroll { height: 1fr; }
    """
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close", show=False),
        Binding("v", "close", "Close", show=False),
    ]

    def __init__(self, seen: DeliverySeen, store: Any) -> None:
        super().__init__()
        self.seen = seen
        self.store = store
        self.text = ""  # what is shown, for tests and copy

    def compose(self) -> ComposeResult:
        with Vertical(id="raw-box") as box:
            box.border_title = f"{self.seen.verdict} · {self.seen.route} · {self.seen.message_type or 'refused'}"
            box.border_subtitle = "escape: close"
            with VerticalScroll(id="raw-scroll"):
                yield Static("loading from the history…", id="raw-body")

    def on_mount(self) -> None:
        self.load()

    @work(exclusive=True, group="raw-delivery", exit_on_error=False)
    async def load(self) -> None:
        try:
            self.text = await raw_delivery_text(self.store, self.seen)
        except Exception as exc:  # a closed or broken history: say so in the dialog
            self.text = f"Could not read this delivery from the history: {exc}"
        self.query_one("#raw-body", Static).update(
            Syntax(self.text, "json", word_wrap=True, theme="ansi_dark", background_color="default")
        )

    def action_close(self) -> None:
        self.dismiss(None)


def _headers(stored: str) -> str:
    """The stored `[[name, value], ...]` as one JSON object (a repeated header keeps all its values)."""
    merged: dict[str, Any] = {}
    for name, value in json.loads(stored):
        if name in merged:
            merged[name] = [*merged[name], value] if isinstance(merged[name], list) else [merged[name], value]
        else:
            merged[name] = value
    return json.dumps(merged, indent=2, ensure_ascii=False)


def _pretty(body: bytes | str | None) -> str:
    if body is None:
        return "null"
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    if len(text) > RAW_BODY_LIMIT:
        text = text[:RAW_BODY_LIMIT] + f"\n… cut at {RAW_BODY_LIMIT} characters (the history keeps it all)"
    return text


async def raw_delivery_text(store: Any, seen: DeliverySeen) -> str:
    """The stored form of one delivery, as readable text. Everything comes from SQLite,
    where bodies, headers and replies were redacted before they were written."""
    if store is None:
        return "The history is not open."
    if seen.instance is not None:
        return (
            f"This request was answered by {seen.instance}, another receiver of the team: its raw form is "
            f"in that receiver's history (`voice-console history` there). This console keeps the team's "
            "events, not the requests."
        )
    summary = {
        "at": seen.at.isoformat(),
        "provider": seen.provider,
        "route": seen.route,
        "method": seen.method,
        "verdict": seen.verdict,
        "reason": seen.reason,
        "auth": seen.auth_scheme,
        "reply_status": seen.status,
        "elapsed_ms": round(seen.elapsed_ms, 2),
    }
    if seen.delivery_id is None:
        row = await queries.rejected_request(store, seen.at.timestamp(), seen.route)
        if row is None:
            return "This refused request is not in the history (yet)."
        parts = [
            "// refused request",
            json.dumps({**summary, "path": row["path"], "client": row["client"]}, indent=2),
            "// headers (redacted)",
            _headers(row["headers"]),
            f"// body: {row['body_size']} bytes, first 2 KB (redacted)",
            _pretty(row["body_excerpt"]),
        ]
        return "\n".join(parts)
    row = await queries.delivery(store, seen.delivery_id)
    if row is None:
        return f"Delivery {seen.delivery_id} is not in the history."
    events = await queries.delivery_events(store, seen.delivery_id)
    header = {
        **summary,
        "delivery_id": seen.delivery_id,
        "path": row["path"],
        "call_id": row["call_id"],
        "duplicate_of": row["duplicate_of"],
    }
    reply = row["reply_body"]
    parts = [
        "// delivery",
        json.dumps(header, indent=2),
        "// headers (redacted)",
        _headers(row["headers"]),
        "// body (redacted)",
        _pretty(row["body"]),
        f"// our reply: {row['reply_status'] or seen.status}"
        + (f" in {row['reply_ms']:.1f} ms" if row["reply_ms"] is not None else ""),
        _pretty(reply) if reply is not None else "(not written to the history yet)",
        f"// normalized events ({len(events)})",
        json.dumps([json.loads(event) for event in events], indent=2, ensure_ascii=False),
    ]
    return "\n".join(parts)
