"""The live-calls and function-calls tables: rows built from core state, never from widgets."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from rich.text import Text

from console.core.calls import CallState
from console.core.events import ToolDecided, utc_now
from console.core.gate import PendingCall
from console.tui.widgets.table import WindowTable
from console.tui.widgets.transcript import short_json

MAX_CALL_ROWS = 100
SPEAKING = {frozenset(): "", frozenset({"assistant"}): "agent", frozenset({"user"}): "caller",
            frozenset({"assistant", "user"}): "both"}
STATUS_STYLE = {"in-progress": "bold green", "ringing": "yellow", "queued": "dim", "forwarding": "cyan",
                "ended": "dim"}


def short_id(value: str | None, size: int = 8) -> str:
    if not value:
        return "—"
    value = value.removeprefix("call_")
    return value[:size]


def seconds(value: float) -> str:
    value = max(0, int(value))
    return f"{value // 60}:{value % 60:02d}"


class LiveCallsTable(WindowTable):
    COLUMNS = [("call", "call"), ("status", "status"), ("speaking", "speaking"), ("barge_ins", "barge-ins"),
               ("latency", "last turn ms"), ("pending", "tools waiting"), ("duration", "time"), ("provider", "via")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(self.COLUMNS, id=id)

    @staticmethod
    def rows(calls: Iterable[CallState], pending: dict[str, int], now: datetime | None = None
             ) -> list[tuple[str, tuple[object, ...]]]:
        now = now or utc_now()
        ordered = sorted(calls, key=lambda c: (c.status == "ended", -(c.first_at or now).timestamp()))
        out = []
        for call in ordered[:MAX_CALL_ROWS]:
            start, last = call.first_at or now, call.last_at or now
            duration = (last if call.status == "ended" else now) - start
            waiting = pending.get(call.call_id, 0)
            out.append((call.call_id, (
                short_id(call.call_id),
                Text(call.status or "?", style=STATUS_STYLE.get(call.status or "", "")),
                Text(SPEAKING.get(frozenset(call.speaking), ""), style="bold"),
                Text(str(call.barge_ins), style="bold red" if call.barge_ins else "dim"),
                f"{call.last_turn_latency_ms:.0f}" if call.last_turn_latency_ms is not None else "—",
                Text(f"⏳ {waiting}", style="bold yellow") if waiting else Text("—", style="dim"),
                seconds(duration.total_seconds()),
                call.provider,
            )))
        return out


class FunctionCallsTable(WindowTable):
    """Pending calls first (oldest first, live countdown), then decided ones (newest first).
    The most useful columns come first; arguments last, where a narrow pane cuts them."""

    COLUMNS = [("call", "call"), ("tool", "tool"), ("state", "state"), ("by", "by"), ("latency", "ms"),
               ("arguments", "arguments")]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(self.COLUMNS, id=id)

    @staticmethod
    def rows(pending: Iterable[PendingCall], decided: Iterable[tuple[ToolDecided, dict | None]],
             now: datetime | None = None) -> list[tuple[str, tuple[object, ...]]]:
        now = now or utc_now()
        out: list[tuple[str, tuple[object, ...]]] = []
        for call in pending:
            state = Text(f"⏳ {call.remaining_s(now):4.1f}s", style="bold yellow")
            if call.stalling:
                state.append(" ⚠ stalling", style="bold red")
            out.append((call.tool_call_id, (short_id(call.call_id), call.name, state,
                                            Text(f"→{call.on_timeout}", style="dim"), "",
                                            short_json(call.arguments, 40))))
        for event, requested in decided:
            arguments = event.arguments if event.arguments is not None else requested
            good = event.decision in ("approved", "edited", "overridden")
            state = Text(("✓ " if good else "✗ ") + event.decision, style="green" if good else "red")
            by = Text(event.by, style="bold red" if event.by == "timeout" else "")
            out.append((event.tool_call_id, (short_id(event.call_id), event.name, state, by,
                                             f"{event.latency_ms:.0f}" if event.latency_ms is not None else "",
                                             short_json(arguments, 40) if arguments else "")))
        return out
