"""Read-only views of the history, in the JSON shapes of the `history` contract."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

from console.core.replays import REPLAY_MARK, replay_call_id
from console.store.db import Store, iso_from_epoch

CALL_LIST_FIELDS = (
    "call_id",
    "provider",
    "status",
    "started_at",
    "ended_at",
    "ended_reason",
    "barge_ins",
    "tool_calls",
)
_TIME_FIELDS = frozenset({"started_at", "ended_at", "status_at", "first_seen_at", "last_event_at", "at"})


def _row_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {key: iso_from_epoch(row[key]) if key in _TIME_FIELDS else row[key] for key in row.keys()}


async def list_calls(
    store: Store, limit: int = 50, offset: int = 0, provider: str | None = None
) -> list[dict[str, Any]]:
    """Most recent first (by when the call was first seen)."""
    where, params = ("WHERE provider = ?", [provider]) if provider else ("", [])
    rows = await store.fetchall(
        f"SELECT {', '.join(CALL_LIST_FIELDS)} FROM calls {where}"
        " ORDER BY first_seen_at DESC, call_id DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [_row_dict(row) for row in rows]


async def count_calls(store: Store, provider: str | None = None) -> int:
    where, params = ("WHERE provider = ?", [provider]) if provider else ("", [])
    row = await store.fetchone(f"SELECT count(*) AS n FROM calls {where}", params)
    return row["n"] if row is not None else 0


# Events of replayed calls (recorded under the call id marked `↻`), for filters on `events`.
NOT_REPLAYED = f"(call_id IS NULL OR substr(call_id, 1, 1) != '{REPLAY_MARK}')"


def call_ids(call_id: str, include_replays: bool) -> tuple[str, ...]:
    """The call's own id, and with `include_replays` the id its replays were recorded under."""
    marked = replay_call_id(call_id)
    return (call_id, marked) if include_replays and marked is not None and marked != call_id else (call_id,)


async def get_call(store: Store, call_id: str, *, include_replays: bool = False) -> dict[str, Any] | None:
    """`{call, events, tool_calls}` for one call, or None when it is unknown.

    With `include_replays`, the events and tool calls that replays of it left in
    this history come too, in time order, each with `"replay": true`.
    """
    call = await _call_row(store, call_id)
    if call is None:
        return None
    ids = call_ids(call_id, include_replays)
    events = await store.fetchall(
        f"SELECT call_id, data FROM events WHERE call_id IN ({','.join('?' * len(ids))}) ORDER BY at, id", ids
    )
    tool_calls = await _tool_calls(store, call_id)
    for replayed in ids[1:]:
        tool_calls += [{**tool, "replay": True} for tool in await _tool_calls(store, replayed)]
    return {
        "call": call,
        "events": [_marked(json.loads(event["data"]), event["call_id"] != call_id) for event in events],
        "tool_calls": tool_calls,
    }


def _marked(event: dict[str, Any], replay: bool) -> dict[str, Any]:
    if replay:
        event["replay"] = True
    return event


async def count_replayed_events(store: Store, call_id: str) -> int:
    """Events recorded by replays of `call_id` (left out of `get_call` unless asked for)."""
    marked = replay_call_id(call_id)
    if marked == call_id:
        return 0
    row = await store.fetchone("SELECT count(*) AS n FROM events WHERE call_id = ?", (marked,))
    return row["n"] if row is not None else 0


async def find_call(store: Store, text: str, limit: int = 10) -> tuple[str | None, list[str]]:
    """The call `text` names: `(call_id, [])`; `(None, candidates)` when it is ambiguous;
    `(None, [])` when no call matches.

    `text` is a full call id or any unique prefix of one. The console's short ids
    leave out a leading `call_`, so a prefix also matches after it. At most
    `limit` + 1 candidates are returned (more than `limit`: there are more).
    """
    if not text:
        return None, []
    exact = await store.fetchone(
        "SELECT call_id FROM calls WHERE call_id = ?1"
        " UNION ALL SELECT call_id FROM deliveries WHERE call_id = ?1 LIMIT 1",
        (text,),
    )
    if exact is not None:
        return text, []
    # A range on the primary key (not LIKE: ids may hold % or _, and LIKE ignores case).
    prefixes = [text] if text.startswith("call_") else [text, "call_" + text]
    found: list[str] = []
    for prefix in prefixes:
        rows = await store.fetchall(
            "SELECT call_id FROM calls WHERE call_id >= ? AND call_id < ? ORDER BY call_id LIMIT ?",
            (prefix, prefix + "\U0010ffff", limit + 1),
        )
        found += [row["call_id"] for row in rows if row["call_id"].startswith(prefix)]
    found = sorted(set(found))[: limit + 1]
    if len(found) == 1:
        return found[0], []
    return None, found


async def call_timeline(
    store: Store, call_id: str, limit: int = 1000, *, partials: bool = False, raw: bool = False
) -> dict[str, Any] | None:
    """Like `get_call`, bounded for a screen: at most `limit` events in time order
    (partial transcripts left out unless `partials`, `raw` events — messages no
    normalizer knows — unless `raw`), plus `hidden_partials`, `hidden_raw` and
    `more` (events past the limit). None when the call is unknown."""
    call = await _call_row(store, call_id)
    if call is None:
        return None
    hidden_kinds = [kind for kind, shown in (("transcript.partial", partials), ("raw", raw)) if not shown]
    skip = "".join(f" AND kind != '{kind}'" for kind in hidden_kinds)
    events = await store.fetchall(
        f"SELECT data FROM events WHERE call_id = ?{skip} ORDER BY at, id LIMIT ?", (call_id, limit + 1)
    )
    counts = await store.fetchone(
        "SELECT count(*) AS total, coalesce(sum(kind = 'transcript.partial'), 0) AS partial,"
        " coalesce(sum(kind = 'raw'), 0) AS raw FROM events WHERE call_id = ?",
        (call_id,),
    )
    assert counts is not None
    hidden_partials = 0 if partials else counts["partial"]
    hidden_raw = 0 if raw else counts["raw"]
    shown = counts["total"] - hidden_partials - hidden_raw
    return {
        "call": call,
        "events": [json.loads(event["data"]) for event in events[:limit]],
        "tool_calls": await _tool_calls(store, call_id),
        "hidden_partials": hidden_partials,
        "hidden_raw": hidden_raw,
        "more": max(0, shown - limit),
    }


async def _call_row(store: Store, call_id: str) -> dict[str, Any] | None:
    row = await store.fetchone(
        "SELECT call_id, provider, status, started_at, ended_at, ended_reason, summary, cost, duration_s,"
        " barge_ins, tool_calls, first_seen_at, last_event_at FROM calls WHERE call_id = ?",
        (call_id,),
    )
    return None if row is None else _row_dict(row)


async def _tool_calls(store: Store, call_id: str) -> list[dict[str, Any]]:
    tools = await store.fetchall(
        "SELECT tool_call_id, name, arguments, decision, decided_by, result, error, latency_ms FROM tool_calls"
        " WHERE call_id = ? ORDER BY coalesce(requested_at, decided_at), tool_call_id",
        (call_id,),
    )
    return [
        {
            "tool_call_id": t["tool_call_id"],
            "name": t["name"],
            "arguments": None if t["arguments"] is None else json.loads(t["arguments"]),
            "decision": t["decision"],
            "by": t["decided_by"],
            "result": t["result"],
            "error": t["error"],
            "latency_ms": t["latency_ms"],
        }
        for t in tools
    ]


def fts_query(text: str) -> str | None:
    """Every word as a quoted prefix term, ANDed: user punctuation can never be FTS syntax.

    Tokens without a letter or digit index nothing, so they are left out; None
    when nothing searchable is left.
    """
    terms = ['"' + token.replace('"', '""') + '"*' for token in text.split() if any(ch.isalnum() for ch in token)]
    return " AND ".join(terms) or None


def _like_pattern(token: str) -> str:
    escaped = token.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search(store: Store, text: str, limit: int = 50) -> list[dict[str, Any]]:
    """Final transcript lines containing every word of `text`, most recent first.

    FTS5 when available (words match at word starts); otherwise, or when the
    query has no words at all, a case-insensitive LIKE on every token.
    """
    return [
        {key: hit[key] for key in ("call_id", "at", "role", "text")}
        for hit in await search_page(store, text, limit=limit)
    ]


def _like_filter(text: str) -> tuple[str, list[Any]] | None:
    """The LIKE fallback's WHERE clause on `transcripts` and its parameters; None for no words."""
    tokens = text.split()
    if not tokens:
        return None
    return " AND ".join("text LIKE ? ESCAPE '\\'" for _ in tokens), [_like_pattern(token) for token in tokens]


async def search_page(store: Store, text: str, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """One page of `search`, each hit with its transcript `id` (a stable key for a screen)."""
    if limit <= 0:
        return []
    if store.fts_enabled and (match := fts_query(text)) is not None:
        # The id subquery lets FTS5 walk its index newest first and stop at the page.
        rows = await store.fetchall(
            "SELECT id, call_id, at, role, text FROM transcripts WHERE id IN ("
            " SELECT rowid FROM transcripts_fts WHERE transcripts_fts MATCH ? ORDER BY rowid DESC LIMIT ? OFFSET ?"
            ") ORDER BY id DESC",
            (match, limit, max(0, offset)),
        )
    else:
        found = _like_filter(text)
        if found is None:
            return []
        where, params = found
        rows = await store.fetchall(
            f"SELECT id, call_id, at, role, text FROM transcripts WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit, max(0, offset)],
        )
    return [_row_dict(row) for row in rows]


async def count_search(store: Store, text: str) -> int:
    """How many final transcript lines `search` would find with no limit."""
    if store.fts_enabled and (match := fts_query(text)) is not None:
        # Counted in the index alone: no join back to the transcripts table.
        row = await store.fetchone("SELECT count(*) AS n FROM transcripts_fts WHERE transcripts_fts MATCH ?", (match,))
        return row["n"] if row is not None else 0
    found = _like_filter(text)
    if found is None:
        return 0
    where, params = found
    row = await store.fetchone(f"SELECT count(*) AS n FROM transcripts WHERE {where}", params)
    return row["n"] if row is not None else 0


async def rejected(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """Requests the receiver refused (bad signature, bad payload), newest first."""
    rows = await store.fetchall(
        "SELECT id, at, provider, route, method, path, client, reason, headers, body_size, body_excerpt"
        " FROM rejected_requests ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    out = []
    for row in rows:
        item = _row_dict(row)
        item["headers"] = json.loads(row["headers"])
        out.append(item)
    return out


async def counts(store: Store) -> dict[str, int]:
    """Row counts keyed by table name, plus `duplicates` (deliveries seen before)."""
    row = await store.fetchone(
        "SELECT (SELECT count(*) FROM calls) AS calls,"
        " (SELECT count(*) FROM events) AS events,"
        " (SELECT count(*) FROM deliveries) AS deliveries,"
        # Counting originals walks the small partial dedupe index, not the bodies.
        " (SELECT count(*) FROM deliveries) - (SELECT count(*) FROM deliveries WHERE duplicate_of IS NULL)"
        " AS duplicates,"
        " (SELECT count(*) FROM rejected_requests) AS rejected_requests,"
        " (SELECT count(*) FROM tool_calls) AS tool_calls,"
        " (SELECT count(*) FROM transcripts) AS transcripts"
    )
    assert row is not None
    return {key: row[key] for key in row.keys()}


async def call_event_pages(
    store: Store, call_id: str, page: int = 500, *, include_replays: bool = False
) -> AsyncIterator[list[sqlite3.Row]]:
    """A call's event rows (`id`, `at`, `data`) in time order, a page at a time (the (call_id, at) index);
    with `include_replays`, its replays' events interleaved."""
    ids = call_ids(call_id, include_replays)
    marks = ",".join("?" * len(ids))
    last_at, last_id = float("-inf"), 0
    while True:
        rows = await store.fetchall(
            f"SELECT id, at, data FROM events WHERE call_id IN ({marks}) AND (at, id) > (?, ?) ORDER BY at, id LIMIT ?",
            (*ids, last_at, last_id, page),
        )
        if not rows:
            return
        yield rows
        last_at, last_id = rows[-1]["at"], rows[-1]["id"]


async def count_events(store: Store, call_id: str | None = None) -> int:
    """How many events one call has, or the whole history without replays (what an export writes)."""
    where, params = ("WHERE call_id = ?", (call_id,)) if call_id is not None else (f"WHERE {NOT_REPLAYED}", ())
    row = await store.fetchone(f"SELECT count(*) AS n FROM events {where}", params)
    return row["n"] if row is not None else 0


async def delivery(store: Store, delivery_id: int) -> sqlite3.Row | None:
    """One accepted request as stored (body, headers and reply redacted)."""
    return await store.fetchone(
        "SELECT path, message_type, call_id, headers, body, duplicate_of, reply_status, reply_body, reply_ms"
        " FROM deliveries WHERE id = ?",
        (delivery_id,),
    )


async def delivery_events(store: Store, delivery_id: int) -> list[str]:
    """The normalized events (JSON) one delivery produced, in order."""
    rows = await store.fetchall("SELECT data FROM events WHERE delivery_id = ? ORDER BY id", (delivery_id,))
    return [row["data"] for row in rows]


async def rejected_request(store: Store, at: float, route: str) -> sqlite3.Row | None:
    """The refused request received at `at` (Unix seconds) on `route`, as stored (redacted)."""
    return await store.fetchone(
        "SELECT path, client, reason, headers, body_size, body_excerpt FROM rejected_requests"
        " WHERE at = ? AND route = ? ORDER BY id DESC LIMIT 1",
        (at, route),
    )
