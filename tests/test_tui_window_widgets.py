"""The widgets the screen feeds on every flush, under Pilot: `WindowTable` (a
DataTable kept in step with a window of rows), `TranscriptPane` and `DeliveryView` (Line API).
Their cost at 100 calls is measured by bench/tui_load.py; these pin the behaviour."""

from __future__ import annotations

import gc
import math
import weakref
from datetime import UTC, datetime

from rich.console import Console
from rich.text import Text
from textual.app import App, ComposeResult
from textual.cache import LRUCache

from console.core.events import BargeIn, ToolDecided, ToolRequested, TranscriptFinal, TranscriptPartial
from console.services.pipeline import DeliverySeen
from console.tui.widgets.events import DeliveryLog, DeliveryView, EventsPane, LogRow
from console.tui.widgets.table import CACHE_SCREENS, MIN_CACHED_LINES, RingFreeCache, WindowTable, same_cell
from console.tui.widgets.timeline import LABEL, WINDOW, BargeTimeline, append_runs, render_timeline
from console.tui.widgets.transcript import CallTranscript, TranscriptPane

AT = datetime(2026, 2, 17, 9, 30, tzinfo=UTC)
COMMON = {"at": AT, "provider": "vapi", "call_id": "c1"}


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield WindowTable([("call", "call"), ("state", "state")], id="table")


class PaneApp(App[None]):
    CSS = "TranscriptPane { width: 60; height: 6; }"

    def compose(self) -> ComposeResult:
        yield TranscriptPane(id="pane")


def count_layouts(app: App) -> list[int]:
    """Every full-screen layout pass from now on (the cost the pane avoids)."""
    passes: list[int] = []
    screen = app.screen
    original = screen._refresh_layout

    def counted(*args, **kwargs):
        passes.append(1)
        return original(*args, **kwargs)

    screen._refresh_layout = counted
    return passes


def width_of(table: WindowTable, column: str) -> int:
    return next(c.content_width for c in table.columns.values() if c.key.value == column)


def test_same_cell_sees_a_change_of_style_that_text_equality_ignores():
    assert Text("ended", style="dim") == Text("ended", style="bold green")  # why same_cell exists
    assert not same_cell(Text("ended", style="dim"), Text("ended", style="bold green"))
    assert same_cell(Text("ended", style="dim"), Text("ended", style="dim"))
    assert not same_cell("1", 1) and same_cell("—", "—")


async def test_window_table_updates_cells_in_place_and_keeps_the_cursor():
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(WindowTable)
        table.sync([("a", ("a", Text("ringing", style="yellow"))), ("b", ("b", Text("queued")))])
        await pilot.press("down")
        assert table.selected_key == "b"
        table.sync([("a", ("a", Text("in-progress", style="bold green"))), ("b", ("b", Text("queued", style="dim")))])
        await pilot.pause()
        assert str(table.get_row("a")[1]) == "in-progress"
        assert table.get_row("b")[1].style == "dim"  # restyled, same text: still updated
        assert table.selected_key == "b"
        # New keys: rebuilt, the selected row found again by key.
        table.sync([("c", ("c", "new")), ("b", ("b", "queued"))])
        await pilot.pause()
        assert [row.key.value for row in table.ordered_rows] == ["c", "b"] and table.selected_key == "b"


async def test_window_table_follows_a_row_that_has_not_arrived_yet():
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(WindowTable)
        table.sync([("a", ("a", "live")), ("b", ("b", "live"))])
        await pilot.press("down")
        table.follow("dialed")  # not there yet: the cursor stays where the operator put it
        await pilot.pause()
        assert table.selected_key == "b"
        table.sync([("a", ("a", "live")), ("b", ("b", "live")), ("dialed", ("dialed", "ringing"))])
        await pilot.pause()
        assert table.selected_key == "dialed"
        await pilot.press("up")  # followed once: later syncs keep the operator's choice
        table.sync([("a", ("a", "live")), ("b", ("b", "ended")), ("dialed", ("dialed", "live")), ("c", ("c", "new"))])
        await pilot.pause()
        assert table.selected_key == "b"
        table.follow("a")  # already shown: selected at once
        await pilot.pause()
        assert table.selected_key == "a"
        table.follow("never", within_s=0)  # a call that never came: forgotten, nothing moves
        await pilot.pause(0.01)
        table.sync([("a", ("a", "live")), ("never", ("never", "late"))])
        await pilot.pause()
        assert table.selected_key == "a"


async def test_window_table_widens_at_once_and_shrinks_only_at_a_rebuild():
    app = TableApp()
    async with app.run_test() as pilot:
        table = app.query_one(WindowTable)
        table.sync([("a", ("a", "x" * 20)), ("b", ("b", "y"))])
        await pilot.pause()
        assert width_of(table, "state") == 20
        table.sync([("a", ("a", "x" * 30)), ("b", ("b", "y"))])  # wider: the column follows
        await pilot.pause()
        assert width_of(table, "state") == 30
        table.sync([("a", ("a", "x")), ("b", ("b", "y"))])  # narrower: no whole-column re-measure
        await pilot.pause()
        assert width_of(table, "state") == 30 and str(table.get_row("a")[1]) == "x"
        table.sync([("b", ("b", "y")), ("d", ("d", "zzz"))])  # rebuilt: fits the rows it has
        await pilot.pause()
        assert width_of(table, "state") == len("state")


async def test_window_table_fits_its_columns_in_the_sync_itself():
    """DataTable measures new rows when its own message queue goes idle, which needs a message to
    the table; one that gets none after a sync (an attached console on a quiet receiver) kept its
    columns at their headers' widths. The widths are right as soon as sync returns."""
    app = TableApp()
    async with app.run_test() as pilot:
        await pilot.pause()
        table = app.query_one(WindowTable)
        table.sync([("a", ("a", "x" * 12))])
        assert width_of(table, "state") == 12 and table.virtual_size.width >= 12
        table.sync([("a", ("a", "x" * 20))])  # widened in place
        assert width_of(table, "state") == 20
        table.sync([("b", ("b", "y" * 15)), ("a", ("a", "x" * 3))])  # rebuilt
        assert width_of(table, "state") == 15 and width_of(table, "call") == len("call")


async def test_window_table_measures_cells_as_datatable_does():
    """WindowTable measures one-line cells by their text (DataTable asks Rich's console, which
    looks up the terminal's size per cell): the same widths for markup, styles, wide characters."""
    from textual.widgets import DataTable

    rows = [(cells[0], tuple("" if cell is None else cell for cell in cells)) for cells in CELLS]
    app = FixedTableApp()
    async with app.run_test(size=(200, 20)) as pilot:
        table = app.query_one(WindowTable)
        table.sync(rows)
        reference = DataTable()
        await app.mount(reference)
        reference.add_columns(*(label for _, label in table._columns))
        for key, cells in rows:
            reference.add_row(*cells, key=key)
        await pilot.pause()
        assert [c.content_width for c in table.ordered_columns] == [c.content_width for c in reference.ordered_columns]
        assert table.virtual_size == reference.virtual_size


class FixedTableApp(App[None]):
    CSS = "WindowTable { height: 8; width: 70; }"

    def compose(self) -> ComposeResult:
        yield WindowTable([("call", "call"), ("state", "state"), ("clock", "clock"), ("note", "note")], id="table")


CELLS = [
    ("plain", "in-progress", "0:12", "ok"),
    ("markup", "[b]bold[/b] and [red]red[/red]", Text("9:59", justify="right"), Text("⏳ 3.5s", style="bold yellow")),
    ("styled", Text("ended", style="dim"), Text("1:00:00", justify="center"), Text("—", style="dim")),
    ("wide", "通話中 ☎", Text("12", justify="left", style="green"), ""),
    ("long", Text("a very long status that the column cannot hold", overflow="ellipsis"), "x" * 40, None),
]


async def test_window_table_cells_are_drawn_as_datatable_draws_them():
    """WindowTable draws one-line cells itself (no Rich layout engine, cached by content);
    every cell -- header, cursor, hover, zebra, cropped, justified, markup, wide -- must come
    out as the same segments DataTable's own renderer makes."""
    from rich.segment import Segment
    from textual.widgets import DataTable

    app = FixedTableApp()
    async with app.run_test(size=(90, 20)) as pilot:
        table = app.query_one(WindowTable)
        table.sync([(cells[0], cells) for cells in CELLS])
        await pilot.pause()
        for column in table.columns.values():
            if column.key.value == "note":  # a fixed, narrow column: long cells are cropped
                column.width, column.auto_width = 10, False
        table.refresh()
        await pilot.pause()
        compared = 0
        for row in range(-1, len(CELLS)):
            base = table.get_component_styles("datatable--header").rich_style if row == -1 else table.rich_style
            for column, shown in enumerate(table.ordered_columns):
                width = shown.get_render_width(table)
                for cursor in (False, True):
                    for hover in (False, True):
                        ours = table._render_cell(row, column, base, width, cursor, hover)
                        stock = DataTable._render_cell(table, row, column, base, width, cursor, hover)
                        assert [list(Segment.simplify(line)) for line in ours] == [
                            list(Segment.simplify(line)) for line in stock
                        ], (row, column, cursor, hover)
                        compared += 1
        assert compared == (len(CELLS) + 1) * 4 * 4
        # and the screen shows them
        assert "in-progress" in "".join(s.text for s in table.render_line(1))


async def test_a_row_that_only_moved_is_not_laid_out_again(monkeypatch):
    """A call starting reorders the live calls: its cells are the same text at a new row, so only
    where they are (the click's row and column) changes, not how they are laid out."""
    app = FixedTableApp()
    async with app.run_test(size=(90, 20)) as pilot:
        table = app.query_one(WindowTable)
        rows = [(cells[0], tuple("" if c is None else c for c in cells)) for cells in CELLS[:3]]
        table.sync(rows)
        await pilot.pause()
        laid_out: list[object] = []
        original = WindowTable._cell_line
        monkeypatch.setattr(
            WindowTable, "_cell_line", lambda self, value, *a: laid_out.append(value) or original(self, value, *a)
        )
        table.sync(list(reversed(rows)))  # the same rows, the other way round
        await pilot.pause()
        assert laid_out == [] and "in-progress" in "".join(s.text for s in table.render_line(3))
        for row in range(len(rows)):
            for column in range(len(table.columns)):
                shown = table.ordered_columns[column]
                cell = table._render_cell(row, column, table.rich_style, shown.get_render_width(table))
                assert all(s.style.meta == {"row": row, "column": column} for s in cell[0] if s.style), (row, column)


async def test_rows_coming_and_going_do_not_lay_out_the_screen():
    """DataTable assigns its virtual size when rows change, which lays out the whole screen
    (~30 ms at 160x48); a table whose CSS fixes its size only updates its scrollbars."""
    app = FixedTableApp()
    async with app.run_test(size=(90, 20)) as pilot:
        table = app.query_one(WindowTable)
        table.sync([(f"c{n}", (f"c{n}", "live", "0:01", "")) for n in range(20)])
        await pilot.pause()
        layouts = count_layouts(app)
        for size in (25, 18, 30):
            table.sync([(f"c{n}", (f"c{n}", "live", "0:02", "")) for n in range(size)])
            await pilot.pause()
            assert table.virtual_size.height == size + 1  # the header too
            assert table.vertical_scrollbar.window_virtual_size == size + 1
        assert layouts == []
        table.move_cursor(row=29, animate=False)  # scrolling knows the new size
        await pilot.pause()
        assert table.selected_key == "c29" and table.scroll_y == table.max_scroll_y > 0


class Rendered:
    """Stands in for a cached row: something a weak reference can watch."""


def test_a_cleared_cache_frees_its_entries_at_once_without_a_garbage_collection():
    stock, ring_free = LRUCache(10), RingFreeCache(10)
    watched = {}
    for cache in (stock, ring_free):
        entries = [Rendered() for _ in range(5)]
        for n, entry in enumerate(entries):
            cache[n] = entry
        watched[cache.__class__.__name__] = [weakref.ref(entry) for entry in entries]
        del entries, entry
    gc.disable()
    try:
        stock.clear()
        ring_free.clear()
        # Textual's LRUCache drops its ring of links whole: a cycle, alive until a full collection.
        assert all(ref() is not None for ref in watched["LRUCache"])
        assert all(ref() is None for ref in watched["RingFreeCache"])
        ring_free[1] = Rendered()  # still a working cache afterwards
        assert ring_free.get(1) is not None and len(ring_free) == 1
    finally:
        gc.enable()
        gc.collect()
    assert all(ref() is None for ref in watched["LRUCache"])


async def test_window_table_render_caches_stay_within_a_few_screens_while_it_ticks():
    """A live table changes a cell every tick; DataTable keys its caches by update count,
    so with its stock sizes (10,000 cells) they only ever fill. Ours hold a few screens."""
    app = TableApp()
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.query_one(WindowTable)
        rows = [(f"c{n}", (f"c{n}", "0 s")) for n in range(60)]
        for tick in range(150):
            table.sync([(key, (call, f"{tick} s")) for key, (call, _) in rows])
            await pilot.pause()
            if tick % 10 == 0:
                await pilot.press("down" if tick % 20 else "up")
        lines = CACHE_SCREENS * MIN_CACHED_LINES  # the table is shorter than the floor
        assert isinstance(table._line_cache, RingFreeCache) and isinstance(table._ordered_row_cache, RingFreeCache)
        assert table._line_cache.maxsize == lines and len(table._line_cache) <= lines
        assert len(table._row_render_cache) <= lines and len(table._row_renderable_cache) <= lines
        assert 0 < len(table._cells_by_content) <= lines * 2  # our cell cache (DataTable's is bypassed)
        assert str(table.get_row("c59")[1]) == "149 s"  # and it still shows the latest values
        await pilot.resize_terminal(80, 120)  # taller than the floor: room for three screens of it
        await pilot.pause()
        assert table._line_cache.maxsize == CACHE_SCREENS * table.size.height > lines


def booking_transcript(turns: int) -> CallTranscript:
    model = CallTranscript("c1")
    for n in range(turns):
        model.apply(TranscriptFinal(role="assistant" if n % 2 else "user", text=f"turn {n}", **COMMON))
    return model


async def test_transcript_pane_shows_the_model_and_follows_the_end():
    app = PaneApp()
    async with app.run_test() as pilot:
        pane = app.query_one(TranscriptPane)
        await pilot.pause()
        assert "Waiting for a call" in pane.text
        model = booking_transcript(10)
        pane.show(model)
        await pilot.pause()
        assert pane.text.splitlines()[0].split() == ["caller", "turn", "0"]
        assert len(pane.text.splitlines()) == 10 and pane.max_scroll_y == 10 - pane.size.height
        assert pane.scroll_y == pane.max_scroll_y  # the newest line is in view
        assert pane.vertical_scrollbar.position == pane.scroll_y  # and the thumb is where the view is
        model.apply(BargeIn(cut_text="Before I look", **COMMON))
        pane.show(model)
        await pilot.pause()
        assert (
            "barge-in cut: Before I look" in pane.text and pane.scroll_y == pane.max_scroll_y == 11 - pane.size.height
        )


async def test_transcript_pane_leaves_an_operator_who_scrolled_up_where_they_are():
    app = PaneApp()
    async with app.run_test() as pilot:
        pane = app.query_one(TranscriptPane)
        model = booking_transcript(12)
        await pilot.pause()
        pane.show(model)
        await pilot.pause()
        pane.scroll_to(y=0, animate=False)
        await pilot.pause()
        model.apply(TranscriptFinal(role="user", text="one more", **COMMON))
        pane.show(model)
        await pilot.pause()
        assert pane.scroll_y == 0 and "one more" in pane.text
        # Another call is always shown from its end.
        other = CallTranscript("c2")
        for n in range(12):
            other.apply(TranscriptFinal(role="user", text=f"other {n}", **{**COMMON, "call_id": "c2"}))
        pane.show(other)
        await pilot.pause()
        assert pane.scroll_y == pane.max_scroll_y > 0


async def test_a_change_within_a_line_repaints_without_a_layout():
    app = PaneApp()
    async with app.run_test() as pilot:
        pane = app.query_one(TranscriptPane)
        model = CallTranscript("c1")
        model.apply(ToolRequested(tool_call_id="t1", name="book", arguments={}, **COMMON))
        model.apply(TranscriptPartial(role="user", text="Nine", **COMMON))
        await pilot.pause()
        pane.show(model)
        await pilot.pause()
        size = pane.virtual_size
        model.apply(TranscriptPartial(role="user", text="Nine thirty", **COMMON))
        model.apply(ToolDecided(tool_call_id="t1", name="book", decision="approved", by="rule", **COMMON))
        layouts = count_layouts(app)
        pane.show(model)
        await pilot.pause()
        assert "Nine thirty" in pane.text and "approved by rule" in pane.text
        assert pane.virtual_size == size and layouts == []


async def test_switching_calls_repaints_without_a_layout():
    app = PaneApp()
    async with app.run_test() as pilot:
        pane = app.query_one(TranscriptPane)
        long_call, longer_call = booking_transcript(12), CallTranscript("c2")
        for n in range(20):
            longer_call.apply(TranscriptFinal(role="user", text=f"other {n}", **{**COMMON, "call_id": "c2"}))
        await pilot.pause()
        pane.show(long_call)
        await pilot.pause()
        layouts = count_layouts(app)
        pane.show(longer_call)
        await pilot.pause()
        assert "other 19" in pane.text and pane.scroll_y == pane.max_scroll_y == 20 - pane.size.height
        assert pane.vertical_scrollbar.window_virtual_size == 20 and pane.vertical_scrollbar.position == pane.scroll_y
        assert layouts == []
        pane.show(booking_transcript(2))  # fits: the scrollbar stays (no layout either), at the top
        await pilot.pause()
        assert layouts == [] and pane.show_vertical_scrollbar and pane.scroll_y == 0
        assert [line.split() for line in pane.text.splitlines()] == [["caller", "turn", "0"], ["agent", "turn", "1"]]


async def test_transcript_pane_rewraps_when_it_gets_narrower():
    app = PaneApp()
    async with app.run_test(size=(80, 24)) as pilot:
        pane = app.query_one(TranscriptPane)
        model = CallTranscript("c1")
        model.apply(TranscriptFinal(role="assistant", text="Thanks for calling Sunrise Dental, this is Ava.", **COMMON))
        await pilot.pause()
        pane.show(model)
        await pilot.pause()
        wide = len(pane.text.splitlines())
        pane.styles.width = 24
        await pilot.pause()
        await pilot.pause()
        lines = pane.text.splitlines()
        assert len(lines) > wide and all(len(line) <= pane.size.width for line in lines)
        assert " ".join(" ".join(lines).split()) == "agent Thanks for calling Sunrise Dental, this is Ava."


class LogApp(App[None]):
    CSS = "DeliveryView { width: 70; height: 5; }"

    def compose(self) -> ComposeResult:
        yield DeliveryView(DeliveryLog(100), id="log")


def delivery(n: int) -> LogRow:
    seen = DeliverySeen(
        AT,
        "vapi",
        "vapi",
        "POST",
        "/webhook/vapi",
        "speech-update",
        f"call_{n:04d}",
        "ok",
        None,
        "secret",
        200,
        0.5,
        delivery_id=n,
    )
    return LogRow(AT, seen=seen)


async def test_delivery_view_draws_a_row_once_while_it_scrolls_by(monkeypatch):
    """Following the end, every flush shifts every line; each row is drawn once and its
    finished line reused, until the look changes (here: the width)."""
    import console.tui.widgets.events as events

    drawn: list[int] = []
    draw = events.row_segments
    monkeypatch.setattr(events, "row_segments", lambda row: (drawn.append(row.seen.delivery_id), draw(row))[1])
    app = LogApp()
    async with app.run_test() as pilot:
        view = app.query_one(DeliveryView)
        app.set_focus(None)  # unfocused and following: no cursor line (that one is drawn fresh)
        await pilot.pause()
        for n in range(1, 31):  # 30 flushes of one delivery each, the view following the end
            view.rows_changed(view.model.add([delivery(n)]))
            await pilot.pause()
        assert sorted(set(drawn)) == sorted(drawn)  # never the same row twice
        assert 30 in drawn and "call_0030"[5:] in "".join(seg.text for seg in view.render_line(4))
        drawn.clear()
        view.styles.width = 40  # a narrower pane: the visible rows are drawn again, cropped
        await pilot.pause()
        assert sorted(drawn) == [26, 27, 28, 29, 30]
        assert all(view.render_line(y).cell_length == 40 for y in range(5))


class TimelineApp(App[None]):
    CSS = "BargeTimeline { width: 67; height: 8; }"

    def compose(self) -> ComposeResult:
        yield BargeTimeline(id="timeline")


def live_timeline():
    from console.core.calls import CallTracker
    from console.core.timeline import TimelineBook
    from tests.helpers.pinned import CALL_ID, script

    book = TimelineBook()
    book.apply(CallTracker().process(script()))
    return book.get(CALL_ID)


async def test_timeline_repaints_when_its_lanes_move_a_column_not_every_flush():
    from tests.helpers.pinned import PINNED_NOW

    app = TimelineApp()
    async with app.run_test() as pilot:
        widget = app.query_one(BargeTimeline)
        timeline = live_timeline()
        assert timeline.ended_at is None  # live: its window moves with the clock
        column_s = WINDOW.total_seconds() / (widget.size.width - LABEL)  # columns count from the epoch
        repaints: list[int] = []
        refresh = widget.refresh
        widget.refresh = lambda *args, **kwargs: (repaints.append(1), refresh(*args, **kwargs))[1]
        edge = math.ceil(PINNED_NOW.timestamp() / column_s) * column_s

        def at(columns: float) -> datetime:  # just past a column edge, plus some columns
            return datetime.fromtimestamp(edge + column_s * (0.05 + columns), UTC)

        widget.show(timeline, at(0))
        widget.show(timeline, at(0.4))  # flushes within a column: one repaint
        widget.show(timeline, at(0.9))
        assert len(repaints) == 1
        widget.show(timeline, at(1))  # the lanes moved a column
        assert len(repaints) == 2
        timeline.version += 1  # something happened on the call
        widget.show(timeline, at(1.1))
        assert len(repaints) == 3
        await pilot.pause()
        assert "caller" in widget.render().plain


def test_timeline_cells_are_appended_one_span_per_run_with_the_same_styles():
    from tests.helpers.pinned import PINNED_NOW

    cells = [("█", "yellow")] * 3 + [("·", "dim")] * 2 + [("█", "yellow"), ("↯", "bold red"), (" ", "")]
    runs, per_cell = Text(), Text()
    append_runs(runs, cells)
    for char, style in cells:
        per_cell.append(char, style=style)
    assert runs.plain == per_cell.plain == "███··█↯ " and len(runs.spans) == 4
    console = Console()
    assert [runs.get_style_at_offset(console, i) for i in range(len(cells))] == [
        per_cell.get_style_at_offset(console, i) for i in range(len(cells))
    ]
    # a whole pane: a few spans per row, not one per column
    assert len(render_timeline(live_timeline(), PINNED_NOW, 67, 8).spans) < 67


class EventsApp(App[None]):
    def compose(self) -> ComposeResult:
        from textual.containers import Vertical

        with Vertical(id="events-pane"):
            yield EventsPane(lambda: None, id="events-log")


async def test_the_events_counts_are_retitled_at_most_once_a_second():
    """The pane's "N ok" changes with every delivery and a border title repaints the whole pane (its
    scrollbar too): at 1,000 events/s that was a full-pane repaint every frame. The first batch is
    counted at once; a burst within the second after it is counted once, when the second is over."""
    from console.tui.widgets.events import COUNTS_EVERY_S

    app = EventsApp()
    async with app.run_test() as pilot:
        pane, parent = app.query_one(EventsPane), app.query_one("#events-pane")
        pane.add([delivery(0).seen])
        assert parent.border_subtitle == "1 ok"
        for n in range(1, 50):  # a burst of batches, one per flush
            pane.add([delivery(n).seen])
        await pilot.pause(COUNTS_EVERY_S / 2)
        assert parent.border_subtitle == "1 ok" and pane.counts["ok"] == 50 and len(pane.model.rows) == 50
        await pilot.pause(COUNTS_EVERY_S / 2 + 0.3)
        assert parent.border_subtitle == "50 ok"
