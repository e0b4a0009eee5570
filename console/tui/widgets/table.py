"""A DataTable kept in step with a bounded window of rows, without per-event appends."""

from __future__ import annotations

from collections.abc import Sequence

from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist


class WindowTable(DataTable):
    """A row-cursor table whose whole content is replaced by `sync(rows)`.

    `rows` is the full window, each `(key, cells)`; unchanged keys in the same
    order only get their changed cells updated, so a timer can call `sync`
    often without rebuilding the table or losing the cursor.
    """

    def __init__(self, columns: Sequence[tuple[str, str]], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._columns = list(columns)
        self._shown: list[tuple[str, tuple[object, ...]]] = []

    def on_mount(self) -> None:
        for key, label in self._columns:
            self.add_column(label, key=key)

    @property
    def selected_key(self) -> str | None:
        if not self._shown or self.cursor_row < 0:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except (CellDoesNotExist, RowDoesNotExist):
            return None

    def sync(self, rows: Sequence[tuple[str, tuple[object, ...]]]) -> None:
        rows = list(rows)
        if [key for key, _ in rows] == [key for key, _ in self._shown]:
            for (key, cells), (_, old) in zip(rows, self._shown, strict=True):
                for (column, _), value, before in zip(self._columns, cells, old, strict=True):
                    if value != before:
                        self.update_cell(key, column, value, update_width=True)
            self._shown = rows
            return
        selected = self.selected_key
        self.clear()
        self._shown = rows
        for key, cells in rows:  # a bounded window, rebuilt only when its rows change
            self.add_row(*cells, key=key)
        keys = [key for key, _ in rows]
        if selected in keys:
            self.move_cursor(row=keys.index(selected), animate=False)
