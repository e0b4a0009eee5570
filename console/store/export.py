"""Stream the normalized events out of the history as JSON lines or CSV.

Pages through the events table by key (id, or (at, id) for one call) so a
history of millions of events is never held in memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

# Histories written before monitor URLs were masked at write time still get them masked here.
from console.redact import mask_monitor_urls
from console.store.db import Store
from console.store.queries import NOT_REPLAYED, call_event_pages

ExportFormat = Literal["jsonl", "csv"]


class TextSink(Protocol):
    """Where an export is written: a text file, or anything with its `write`."""

    def write(self, text: str, /) -> int: ...


CSV_COLUMNS = ("at", "provider", "call_id", "kind", "role", "text", "detail")
_PAGE = 2000


def csv_row(event: dict[str, Any]) -> list[str]:
    """The CSV columns of one event; `detail` holds every other field as JSON ('' when none)."""
    rest = {k: v for k, v in event.items() if k not in CSV_COLUMNS}
    return [
        event.get("at") or "",
        event.get("provider") or "",
        event.get("call_id") or "",
        event.get("kind") or "",
        event.get("role") or "",
        event.get("text") or "",
        json.dumps(rest, ensure_ascii=False, separators=(",", ":")) if rest else "",
    ]


async def _pages(store: Store, call_id: str | None, include_replays: bool) -> AsyncIterator[list[str]]:
    if call_id is None:
        last_id = 0
        only_own = "" if include_replays else f" AND {NOT_REPLAYED}"
        while True:
            rows = await store.fetchall(
                f"SELECT id, data FROM events WHERE id > ?{only_own} ORDER BY id LIMIT ?", (last_id, _PAGE)
            )
            if not rows:
                return
            yield [mask_monitor_urls(row["data"]) for row in rows]
            last_id = rows[-1]["id"]
    else:
        # One call reads in time order, like `history show`.
        async for rows in call_event_pages(store, call_id, _PAGE, include_replays=include_replays):
            yield [mask_monitor_urls(row["data"]) for row in rows]


async def export(
    store: Store,
    out: TextSink,
    fmt: ExportFormat = "jsonl",
    call_id: str | None = None,
    *,
    include_replays: bool = False,
) -> int:
    """Write every event (or one call's) to `out`; returns the number of rows written.

    Events that `voice-console replay` left in this history (call ids marked `↻`)
    are left out unless `include_replays`: the export is what the platforms sent.
    """
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"unknown export format {fmt!r} (expected jsonl or csv)")
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    count = 0
    async for page in _pages(store, call_id, include_replays):
        if writer is None:
            # Stored data is already the compact event JSON: written as is, monitor URLs masked.
            out.write("\n".join(page) + "\n")
        else:
            writer.writerows(csv_row(json.loads(data)) for data in page)
        count += len(page)
    return count
