"""The live-calls and function-calls tables: rows built from core state, never from widgets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from rich.text import Text
from textual.widgets.data_table import ColumnKey

from console.core.calls import CallState, short_id
from console.core.events import ToolDecided, utc_now
from console.core.gate import PendingCall
from console.tui.widgets.table import WindowTable, cell_width
from console.tui.widgets.transcript import short_json

MAX_CALL_ROWS = 100
# The arguments column gets what the pane has left after the other columns, at least this;
# what no pane shows is cut before (the transcript and the dialogs show them whole).
MIN_ARGUMENTS_WIDTH = 12
MAX_ARGUMENTS_SHOWN = 400
SPEAKING = {
    frozenset(): "",
    frozenset({"assistant"}): "agent",
    frozenset({"user"}): "caller",
    frozenset({"assistant", "user"}): "both",
}
STATUS_STYLE = {"in-progress": "bold green", "ringing": "yellow", "queued": "dim", "forwarding": "cyan", "ended": "dim"}


def seconds(value: float) -> str:
    value = max(0, int(value))
    return f"{value // 60}:{value % 60:02d}"


class LiveCallsTable(WindowTable):
    # Short labels: at 80 columns every column fits.
    COLUMNS = [
        ("call", "call"),
        ("status", "status"),
        ("speaking", "speaking"),
        ("barge_ins", "barge-ins"),
        ("latency", "turn ms"),
        ("pending", "waiting"),
        ("duration", "time"),
        ("provider", "via"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(self.COLUMNS, id=id)

    @staticmethod
    def rows_for(
        calls: Iterable[CallState],
        pending: dict[str, int],
        now: datetime | None = None,
        instances: Mapping[str, str] | None = None,
    ) -> list[tuple[str, tuple[object, ...]]]:
        """`instances`: in team mode, which receiver has each call (shown with its platform)."""
        now = now or utc_now()
        ordered = sorted(calls, key=lambda c: (c.status == "ended", -(c.first_at or now).timestamp()))
        out: list[tuple[str, tuple[object, ...]]] = []
        for call in ordered[:MAX_CALL_ROWS]:
            start, last = call.first_at or now, call.last_at or now
            duration = (last if call.status == "ended" else now) - start
            waiting = pending.get(call.call_id, 0)
            out.append(
                (
                    call.call_id,
                    (
                        short_id(call.call_id),
                        Text(call.status or "?", style=STATUS_STYLE.get(call.status or "", "")),
                        Text(SPEAKING.get(frozenset(call.speaking), ""), style="bold"),
                        Text(str(call.barge_ins), style="bold red" if call.barge_ins else "dim"),
                        f"{call.last_turn_latency_ms:.0f}" if call.last_turn_latency_ms is not None else "—",
                        Text(f"⏳ {waiting}", style="bold yellow") if waiting else Text("—", style="dim"),
                        seconds(duration.total_seconds()),
                        f"{call.provider} @ {instances[call.call_id]}"
                        if instances and call.call_id in instances
                        else call.provider,
                    ),
                )
            )
        return out


class FunctionCallsTable(WindowTable):
    """Pending calls first (oldest first, live countdown), then decided ones (newest first).
    The most useful columns come first; arguments last, as wide as the pane has room for."""

    COLUMNS = [
        ("call", "call"),
        ("tool", "tool"),
        ("state", "state"),
        ("by", "by"),
        ("latency", "ms"),
        ("arguments", "arguments"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(self.COLUMNS, id=id)
        self._refit = False

    def arguments_width(self, rows: Sequence[tuple[str, tuple[object, ...]]] = (), *, fresh: bool = False) -> int:
        """The cells the arguments can have: the row's room after the other columns, as wide
        as their widest cell in `rows` (and, unless `fresh`, as they are shown now)."""
        used = 0
        for index, (key, column) in enumerate(self.columns.items()):
            if key.value != "arguments":
                widest = max(
                    [
                        column.label.cell_len if fresh else column.content_width,
                        *(cell_width(cells[index]) for _, cells in rows),
                    ]
                )
                used += widest + 2 * self.cell_padding
        room = self.scrollable_content_region.width - used - 2 * self.cell_padding
        return max(MIN_ARGUMENTS_WIDTH, room)

    def on_resize(self) -> None:
        super().on_resize()
        self._refit = True  # narrower arguments only narrow their column in a rebuild

    def sync(self, rows: Sequence[tuple[str, tuple[object, ...]]], *, rebuild: bool = False) -> None:
        """WindowTable.sync, with the arguments (the last cell) cut with … where the row ends."""
        refit, self._refit = self._refit, False
        rebuild = rebuild or refit or [key for key, _ in rows] != [key for key, _ in self._shown]
        room = self.arguments_width(rows, fresh=rebuild)
        shown = self.columns.get(ColumnKey("arguments"))  # still as wide as longer arguments were
        rebuild = rebuild or (shown is not None and shown.content_width > room)
        super().sync([(key, (*cells[:-1], cut(cells[-1], room))) for key, cells in rows], rebuild=rebuild)

    @staticmethod
    def rows_for(
        pending: Iterable[PendingCall], decided: Iterable[tuple[ToolDecided, dict | None]], now: datetime | None = None
    ) -> list[tuple[str, tuple[object, ...]]]:
        now = now or utc_now()
        out: list[tuple[str, tuple[object, ...]]] = []
        for call in pending:
            state = Text(f"⏳ {call.remaining_s(now):4.1f}s", style="bold yellow")
            if call.stalling:
                state.append(" ⚠ stalling", style="bold red")
            out.append(
                (
                    call.tool_call_id,
                    (
                        short_id(call.call_id),
                        call.name,
                        state,
                        Text(f"→{call.on_timeout}", style="dim"),
                        "",
                        Text(short_json(call.arguments, MAX_ARGUMENTS_SHOWN)),
                    ),
                )
            )
        for event, requested in decided:
            arguments = event.arguments if event.arguments is not None else requested
            if event.decision == "ran":  # the agent's own server ran it: seen, not decided here
                state = Text(
                    "↪ ran" if event.error is None else "↪ ran, failed", style="cyan" if event.error is None else "red"
                )
            else:
                good = event.decision in ("approved", "edited", "overridden")
                state = Text(("✓ " if good else "✗ ") + event.decision, style="green" if good else "red")
            by = Text(event.operator or event.by, style="bold red" if event.by == "timeout" else "")
            out.append(
                (
                    event.tool_call_id,
                    (
                        short_id(event.call_id),
                        event.name,
                        state,
                        by,
                        f"{event.latency_ms:.0f}" if event.latency_ms is not None else "",
                        Text(short_json(arguments, MAX_ARGUMENTS_SHOWN) if arguments else ""),
                    ),
                )
            )
        return out


def cut(cell: object, width: int) -> object:
    """`cell` ending in … where `width` cells end (Text keeps its style)."""
    if not isinstance(cell, Text) or cell.cell_len <= width:
        return cell
    cell = cell.copy()
    cell.truncate(width, overflow="ellipsis")
    return cell
