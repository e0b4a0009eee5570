"""A DataTable kept in step with a bounded window of rows, without per-event appends."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Text
from textual.cache import LRUCache
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist


# Render caches hold this many screens' worth of rows (the cursor row and hover variants).
CACHE_SCREENS = 3
MIN_CACHED_LINES = 50
# How long a table waits for a row it was asked to follow (a dialed call) to arrive.
FOLLOW_FOR_S = 30.0


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


def same_cell(value: object, before: object) -> bool:
    """Equal as shown: `Text.__eq__` ignores the text's own style (a status changing colour)."""
    if isinstance(value, Text) and isinstance(before, Text):
        return value.plain == before.plain and value.style == before.style and value.spans == before.spans
    return type(value) is type(before) and value == before


def cell_width(value: object) -> int:
    if isinstance(value, Text):
        return value.cell_len
    return cell_len(value if isinstance(value, str) else str(value))


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
        for cache in (self._row_render_cache, self._row_renderable_cache, self._line_cache,
                      self._cell_render_cache, self._offset_cache, self._ordered_row_cache):
            unlink(cache)
        self._row_render_cache = RingFreeCache(lines)
        self._row_renderable_cache = RingFreeCache(lines)
        self._line_cache = RingFreeCache(lines)
        self._cell_render_cache = RingFreeCache(lines * max(1, len(self._columns)))
        # One entry each, but that entry is every row: a ring of one still holds them all.
        self._offset_cache = RingFreeCache(1)
        self._ordered_row_cache = RingFreeCache(1)

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

    def sync(self, rows: Sequence[tuple[str, tuple[object, ...]]]) -> None:
        rows = list(rows)
        if [key for key, _ in rows] == [key for key, _ in self._shown]:
            for (key, cells), (_, old) in zip(rows, self._shown, strict=True):
                for (column, _), value, before in zip(self._columns, cells, old, strict=True):
                    if not same_cell(value, before):
                        self.update_cell(key, column, value, update_width=self._widens(column, value))
            self._shown = rows
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
        if selected in keys:
            self.move_cursor(row=keys.index(selected), animate=False)
