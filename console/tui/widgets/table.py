"""A DataTable kept in step with a bounded window of rows, without per-event appends."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import cast

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist, RowKey

from console.tui.widgets.scrolling import resize_virtual

# Render caches hold this many screens' worth of rows (the cursor row and hover variants).
CACHE_SCREENS = 3
MIN_CACHED_LINES = 50
# How long a table waits for a row it was asked to follow (a dialed call) to arrive.
FOLLOW_FOR_S = 30.0
# In the selected row's first cell, where its left padding was: a cue that needs no colour
# (a 16-colour terminal or a palette of its own may round the cursor's band away).
CURSOR_MARK = "▶"


class RingFreeCache(LRUCache):
    """An LRUCache whose `clear()` leaves no cyclic garbage.

    LRUCache keeps its entries in a ring of linked lists; its `clear()` drops the
    ring whole, and a ring is a reference cycle, so every cached row, line and
    segment waits for a full garbage collection -- at 100 live calls the tables
    are rebuilt every second or two, ~100,000 objects a collection and ~100 ms the
    operator's key presses waited. Emptying each link first lets reference
    counting free them at once.
    """

    __slots__ = ()

    def clear(self) -> None:
        unlink(self)


def unlink(cache: LRUCache) -> None:
    """Empty any LRUCache link by link (see RingFreeCache)."""
    for link in cache._cache.values():
        link.clear()
    LRUCache.clear(cache)


def cell_token(value: object) -> object:
    """What a cell shows, as a cache key; None for what only DataTable's own renderer draws."""
    if isinstance(value, str):
        return None if "\n" in value else value
    if isinstance(value, Text):
        return (value.plain, value.style, tuple(value.spans), value.justify, value.overflow)
    return None


def same_cell(value: object, before: object) -> bool:
    """Equal as shown: `Text.__eq__` ignores the text's own style (a status changing colour)."""
    if isinstance(value, Text) and isinstance(before, Text):
        return value.plain == before.plain and value.style == before.style and value.spans == before.spans
    return type(value) is type(before) and value == before


def cell_width(value: object) -> int:
    """A one-line cell's width as DataTable lays it out (a str is markup)."""
    if isinstance(value, Text):
        return value.cell_len
    if isinstance(value, str):
        return Text.from_markup(value).cell_len if "[" in value else cell_len(value)
    return cell_len(str(value))


class WindowTable(DataTable):
    """A row-cursor table whose whole content is replaced by `sync(rows)`.

    `rows` is the full window, each `(key, cells)`; unchanged keys in the same
    order only get their changed cells updated, so a timer can call `sync`
    often without rebuilding the table or losing the cursor. An updated cell
    only widens its column: asking DataTable to re-measure a cell that got
    narrower makes it measure the whole column, for every such cell (a clock
    column at 100 rows: 10,000 measurements per sync). Columns shrink back to
    fit at the next rebuild.
    """

    def __init__(self, columns: Sequence[tuple[str, str]], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._columns = list(columns)
        self._shown: list[tuple[str, tuple[object, ...]]] = []
        self._follow: tuple[str, float] | None = None  # (key, until): select it when it arrives
        self._cells_by_content = RingFreeCache(MIN_CACHED_LINES * max(1, len(self._columns)))
        self._cells_placed = RingFreeCache(MIN_CACHED_LINES * max(1, len(self._columns)))

    @property
    def virtual_size(self) -> Size:
        return Widget.virtual_size.__get__(self, Widget)

    @virtual_size.setter
    def virtual_size(self, size: Size) -> None:
        # DataTable assigns this whenever rows come or go, and the reactive lays out the
        # whole screen: ~30 ms at 160x48, the loop's longest step under load, a key pressed
        # meanwhile waits. A table whose size its CSS fixes only needs its scrollbars told.
        if self.styles.auto_dimensions:
            Widget.virtual_size.__set__(self, size)
        else:
            resize_virtual(self, size)

    def on_mount(self) -> None:
        for key, label in self._columns:
            self.add_column(label, key=key)
        self._fit_caches()

    def on_resize(self) -> None:
        self._fit_caches()

    def _fit_caches(self) -> None:
        """Render caches sized to what can be on screen, cleared without garbage cycles.
        DataTable's own hold 10,000 cells and 1,000 rows and lines; their keys carry the
        table's update count, so a table updated every tick never hits the old entries,
        only fills them up -- tens of MB of segments the collector has to walk."""
        lines = CACHE_SCREENS * max(self.size.height, MIN_CACHED_LINES)
        if isinstance(self._line_cache, RingFreeCache) and self._line_cache.maxsize == lines:
            return
        # DataTable's private cache attributes (textual is pinned below 9; the widget tests
        # check them). New caches, not a smaller maxsize: a full LRUCache never shrinks.
        for cache in (
            self._row_render_cache,
            self._row_renderable_cache,
            self._line_cache,
            self._cell_render_cache,
            self._offset_cache,
            self._ordered_row_cache,
            self._cells_by_content,
            self._cells_placed,
        ):
            unlink(cache)
        self._row_render_cache = RingFreeCache(lines)
        self._row_renderable_cache = RingFreeCache(lines)
        self._line_cache = RingFreeCache(lines)
        self._cell_render_cache = RingFreeCache(lines * max(1, len(self._columns)))
        # One entry each, but that entry is every row: a ring of one still holds them all.
        self._offset_cache = RingFreeCache(1)
        self._ordered_row_cache = RingFreeCache(1)
        self._cells_by_content = RingFreeCache(lines * max(1, len(self._columns)))
        self._cells_placed = RingFreeCache(lines * max(1, len(self._columns)))

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        """DataTable's cell, drawn without Rich's layout engine and cached by what it shows.

        DataTable keys its cell cache by its update count, so one changed cell (a call's
        clock, every second) redraws every cell on screen, each through Rich's padding
        and wrapping: 6 ms a repaint for the live-calls table, in the frame a key press
        waits for. A one-line cell is text cropped or padded to the column: same
        segments (`tests/test_tui_window_widgets.py` compares them), a fraction of the time.
        """
        header = row_index == -1
        row_key = self._header_row_key if header else self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None or column_index < 0 or self.fixed_rows or self.fixed_columns:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        if header:
            value: object = self.columns[column_key].label
            if self.header_height != 1:
                return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        else:
            row = self.rows.get(row_key)
            if row is None or row.height != 1:
                return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
            value = self._data[row_key].get(column_key)
            value = "" if value is None else value
        token = cell_token(value)
        if token is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        component_style, post_style = self._get_styles_to_render_cell(
            header,
            False,
            False,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        shown = (token, width, base_style, component_style, post_style)
        key = (row_index, column_index, shown)
        lines = self._cells_placed.get(key)
        if lines is None:
            line = self._cells_by_content.get(shown)
            if line is None:  # a token means the value is one-line str or Text (`cell_token`)
                line = self._cell_line(cast("str | Text", value), width, base_style + component_style, post_style)
                self._cells_by_content[shown] = line
            # Where it is: the click's row and column, kept apart so that rows that only moved
            # (a call starting reorders the live calls) are not laid out again.
            meta = Style.from_meta({"row": row_index, "column": column_index})
            lines = [[Segment(text, meta if style is None else style + meta, control) for text, style, control in line]]
            self._cells_placed[key] = lines
        return lines

    def _cell_line(self, value: str | Text, width: int, style: Style, post_style: Style) -> list[Segment]:
        """One line as Rich would lay it out (`Padding` around no-wrap text, `Lines.justify`)."""
        padding = self.cell_padding
        room = max(0, width - 2 * padding)
        text = Text.from_markup(value, end="") if isinstance(value, str) else value.copy()
        overflow = text.overflow or "fold"
        justify = text.justify
        if justify == "left":
            text.truncate(room, overflow=overflow, pad=True)
        elif justify in ("right", "center"):
            text.rstrip()
            text.truncate(room, overflow=overflow)
            gap = room - text.cell_len
            text.pad_left(gap if justify == "right" else gap // 2)
            if justify == "center":
                text.pad_right(room - text.cell_len)
        else:
            text.truncate(room, overflow=overflow)
        line = Text(end="")  # as Rich's join does: the text's own style becomes a span (render skips it)
        line.append_text(text)
        segments = list(line.render(self.app.console, end=""))
        if text.cell_len < room:
            segments.append(Segment(" " * (room - text.cell_len)))
        if padding:
            segments = [Segment(" " * padding), *segments, Segment(" " * padding)]
        return list(Segment.apply_style(segments, style, post_style))

    def render_line(self, y: int) -> Strip:
        """DataTable's line; the cursor row gets CURSOR_MARK in place of its first cell."""
        strip = super().render_line(y)
        if not (self.show_cursor and self.cursor_type == "row" and self.row_count):
            return strip
        if y < self.header_height or y - self.header_height + int(self.scroll_y) != self.cursor_row:
            return strip
        first = next((segment for segment in strip if segment.cell_length), None)
        if first is None or first.text[:1] != " ":
            return strip
        return Strip([Segment(CURSOR_MARK, first.style), *strip.crop(1, strip.cell_length)], strip.cell_length)

    @property
    def selected_key(self) -> str | None:
        if not self._shown or self.cursor_row < 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except (CellDoesNotExist, RowDoesNotExist):
            return None

    def follow(self, key: str, within_s: float = FOLLOW_FOR_S) -> None:
        """Select `key` now if it is shown, else when a sync brings it within `within_s`
        (a call just dialed shows once the platform reports it)."""
        keys = [shown for shown, _ in self._shown]
        if key in keys:
            self._follow = None
            self.move_cursor(row=keys.index(key), animate=False)
        else:
            self._follow = (key, time.monotonic() + within_s)

    def _widens(self, column: str, value: object) -> bool:
        shown = self.columns.get(ColumnKey(column))
        return shown is None or cell_width(value) > shown.content_width

    def sync(self, rows: Sequence[tuple[str, tuple[object, ...]]], *, rebuild: bool = False) -> None:
        """Show `rows`; `rebuild`: lay the table out anew even if the same keys are shown
        (columns fitted to narrower cells, e.g. after a resize)."""
        rows = list(rows)
        if not rebuild and [key for key, _ in rows] == [key for key, _ in self._shown]:
            for (key, cells), (_, old) in zip(rows, self._shown, strict=True):
                for (column, _), value, before in zip(self._columns, cells, old, strict=True):
                    if not same_cell(value, before):
                        self.update_cell(key, column, value, update_width=self._widens(column, value))
            self._shown = rows
            self._measure_now()
            return
        selected = self.selected_key
        self.clear()
        for shown in self.columns.values():  # fit the new rows (clear keeps the widest ever seen)
            if shown.auto_width:
                shown.content_width = shown.label.cell_len
        self._shown = rows
        for key, cells in rows:  # a bounded window, rebuilt only when its rows change
            self.add_row(*cells, key=key)
        keys = [key for key, _ in rows]
        if self._follow is not None:
            key, until = self._follow
            if time.monotonic() > until:  # it never came in time: the operator has moved on
                self._follow = None
            elif key in keys:
                selected, self._follow = key, None
        self._measure_now()
        if selected in keys:
            self.move_cursor(row=keys.index(selected), animate=False)

    def _measure_now(self) -> None:
        """Fit the columns to the new rows and widened cells now. DataTable does it when its
        message queue next goes idle, which only follows a message to the table itself: a
        table nothing else happens to (a console attached to a quiet receiver) kept its
        columns at their headers' widths."""
        if not (self._require_update_dimensions or self._updated_cells):
            return
        # Cells are only flagged when wider than their column (`_widens`): measuring their rows
        # can only widen it, as DataTable would.
        rows = self._new_rows | {cell.row_key for cell in self._updated_cells}
        self._new_rows.clear()
        self._updated_cells.clear()
        self._require_update_dimensions = False
        self._update_dimensions(rows)

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        """DataTable's, with one-line cells measured by their text: DataTable measures each
        cell through Rich's console, whose options look up the terminal's size every time
        (a quarter of a busy console's table refresh). Other rows are DataTable's to measure."""
        others: list[RowKey] = []
        columns = self.ordered_columns
        for row_key in new_rows:
            row = self.rows.get(row_key)
            if row is None:  # gone again before it was measured
                continue
            if row.height != 1 or row.label is not None:
                others.append(row_key)
                continue
            cells = self._data[row_key]
            for column in columns:
                value = cells.get(column.key)
                width = cell_width("" if value is None else value)
                if width > column.content_width:
                    column.content_width = width
        super()._update_dimensions(others)  # with none left: only the virtual size
