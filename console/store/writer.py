"""The writer's side of the history: prepared writes (serialised and redacted by the
caller, so the writer thread only runs SQL), and the one transaction a batch of them
becomes (ids assigned under the write lock, one executemany per table)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from console.store.calls import COUNT_TOOL_CALLS, UPSERT_CALL, CallAggregate

log = logging.getLogger(__name__)

_IN_CHUNK = 500  # values per `IN (...)` lookup
# Messages to and from the writer process: a 4-byte length, then a pickle.
WIRE_LENGTH = struct.Struct("!I")
# The kinds whose fields reach the derived tables (transcripts, tool_calls, calls).
_KINDS_WITH_FIELDS = frozenset({"transcript.final", "tool.requested", "tool.decided", "call.status", "call.ended"})


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class DeliveryReceipt:
    delivery_id: int
    duplicate: bool
    first_event_id: int | None = None  # the history id of its first event (the rest follow in order)


# --- prepared writes -------------------------------------------------------
# Serialisation and redaction happen in the caller, before queueing, so a bad
# value fails its own caller at once and the writer only runs SQL.


@dataclass(slots=True)
class EventRow:
    call_id: str | None
    provider: str
    kind: str
    at: float
    data: str
    # The redacted event dict, for the derived tables; None: read from `data` when needed
    # (what the writer process gets, to keep the pickle small).
    fields: dict[str, Any] | None


@dataclass(slots=True)
class DeliveryOp:
    row: tuple[Any, ...]  # deliveries columns from received_at to replay_run
    dedupe_key: str
    events: list[EventRow]


@dataclass(slots=True)
class EventsOp:
    events: list[EventRow]
    delivery_id: int | None


@dataclass(slots=True)
class ToolRequestsOp:
    rows: list[tuple[Any, ...]]
    call_id: str | None
    provider: str
    at: float


@dataclass(slots=True)
class RowOp:
    """A single-row statement: a reply update or a rejected request."""

    table: str  # "reply" | "rejected"
    row: tuple[Any, ...]


Payload = DeliveryOp | EventsOp | ToolRequestsOp | RowOp


@dataclass(slots=True)
class Op:
    payload: Payload
    future: asyncio.Future[Any] | None  # None: nobody waits (metadata written in passing)


# --- the writer process's wire ---------------------------------------------
# Plain tuples pickle about seven times faster than the dataclasses above (0.6 µs
# against 4.4 µs for a delivery), on both sides of the socket.


def _events_to_wire(events: list[EventRow]) -> list[tuple[Any, ...]]:
    return [(e.call_id, e.provider, e.kind, e.at, e.data) for e in events]  # the child reads fields from data


def _events_from_wire(events: list[tuple[Any, ...]]) -> list[EventRow]:
    return [EventRow(call_id, provider, kind, at, data, None) for call_id, provider, kind, at, data in events]


def to_wire(p: Payload) -> tuple[Any, ...]:
    if isinstance(p, DeliveryOp):
        return ("d", p.row, p.dedupe_key, _events_to_wire(p.events))
    if isinstance(p, EventsOp):
        return ("e", _events_to_wire(p.events), p.delivery_id)
    if isinstance(p, ToolRequestsOp):
        return ("t", p.rows, p.call_id, p.provider, p.at)
    return ("r", p.table, p.row)


def from_wire(t: tuple[Any, ...]) -> Payload:
    tag = t[0]
    if tag == "d":
        return DeliveryOp(t[1], t[2], _events_from_wire(t[3]))
    if tag == "e":
        return EventsOp(_events_from_wire(t[1]), t[2])
    if tag == "t":
        return ToolRequestsOp(t[1], t[2], t[3], t[4])
    return RowOp(t[1], t[2])


def results_to_wire(results: list[Any]) -> list[Any]:
    return [(r.delivery_id, r.duplicate, r.first_event_id) if isinstance(r, DeliveryReceipt) else r for r in results]


def results_from_wire(results: list[Any]) -> list[Any]:
    return [DeliveryReceipt(*r) if type(r) is tuple else r for r in results]


@dataclass
class Plan:
    """Rows for one transaction, one list per statement, so each runs as one executemany."""

    next_delivery: int
    next_event: int
    session_id: int | None = None  # the receiving process that owns new tool requests
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    transcripts: list[tuple[Any, ...]] = field(default_factory=list)
    tool_requests: list[tuple[Any, ...]] = field(default_factory=list)
    tool_decisions: list[tuple[Any, ...]] = field(default_factory=list)
    calls: dict[str, CallAggregate] = field(default_factory=dict)
    tool_call_counts: set[str] = field(default_factory=set)
    replies: list[tuple[Any, ...]] = field(default_factory=list)
    rejected: list[tuple[Any, ...]] = field(default_factory=list)

    def call(self, call_id: str, provider: str, at: float) -> CallAggregate:
        agg = self.calls.get(call_id)
        if agg is None:
            agg = self.calls[call_id] = CallAggregate(provider=provider, first=at, last=at)
        return agg

    def add_events(self, rows: Iterable[EventRow], delivery_id: int | None) -> None:
        for r in rows:
            event_id = self.next_event
            self.next_event += 1
            self.events.append((event_id, delivery_id, r.call_id, r.provider, r.kind, r.at, r.data))
            d = r.fields
            if d is None:
                d = json.loads(r.data) if r.kind in _KINDS_WITH_FIELDS else {}
            if r.kind == "transcript.final":
                self.transcripts.append((event_id, r.call_id, r.at, d["role"], d["text"]))
            elif r.kind == "tool.requested":
                self.tool_requests.append(
                    (
                        d["tool_call_id"],
                        r.call_id,
                        r.provider,
                        d["name"],
                        dumps(d.get("arguments", {})),
                        r.at,
                        self.session_id,
                    )
                )
                if r.call_id:
                    self.tool_call_counts.add(r.call_id)
            elif r.kind == "tool.decided":
                sent = d.get("arguments")
                self.tool_decisions.append(
                    (
                        d["tool_call_id"],
                        r.call_id,
                        r.provider,
                        d["name"],
                        d["decision"],
                        d["by"],
                        d.get("result"),
                        d.get("error"),
                        d.get("latency_ms"),
                        r.at,
                        None if sent is None else dumps(sent),
                    )
                )
            if r.call_id:
                self.call(r.call_id, r.provider, r.at).absorb(r.kind, r.at, d)


INSERT_DELIVERY = """
INSERT INTO deliveries (id, received_at, provider, route, method, path, message_type, call_id,
                        auth_scheme, headers, body, body_sha256, dedupe_key, replay_run, duplicate_of)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
INSERT_EVENT = "INSERT INTO events (id, delivery_id, call_id, provider, kind, at, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
INSERT_TRANSCRIPT = "INSERT INTO transcripts (event_id, call_id, at, role, text) VALUES (?, ?, ?, ?, ?)"
# The first request wins; a row made earlier by an out-of-order decision gets its gaps filled.
# A call interrupted by a crash and requested again (the platform retried) is
# pending again, owned by the session deciding it now; its tool.decided
# "interrupted" event stays in the timeline.
UPSERT_TOOL_REQUEST = """
INSERT INTO tool_calls (tool_call_id, call_id, provider, name, arguments, requested_at, session_id)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tool_call_id) DO UPDATE SET
    call_id = coalesce(tool_calls.call_id, excluded.call_id),
    arguments = coalesce(tool_calls.arguments, excluded.arguments),
    requested_at = coalesce(tool_calls.requested_at, excluded.requested_at),
    session_id = CASE WHEN tool_calls.decision IS NULL OR tool_calls.decision = 'interrupted'
                      THEN excluded.session_id ELSE tool_calls.session_id END,
    decided_by = CASE WHEN tool_calls.decision = 'interrupted' THEN NULL ELSE tool_calls.decided_by END,
    error = CASE WHEN tool_calls.decision = 'interrupted' THEN NULL ELSE tool_calls.error END,
    decided_at = CASE WHEN tool_calls.decision = 'interrupted' THEN NULL ELSE tool_calls.decided_at END,
    decision = CASE WHEN tool_calls.decision = 'interrupted' THEN NULL ELSE tool_calls.decision END
"""
UPSERT_TOOL_DECISION = """
INSERT INTO tool_calls (tool_call_id, call_id, provider, name, decision, decided_by, result, error,
                        latency_ms, decided_at, arguments_sent)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (tool_call_id) DO UPDATE SET
    call_id = coalesce(tool_calls.call_id, excluded.call_id),
    decision = excluded.decision,
    decided_by = excluded.decided_by,
    result = excluded.result,
    error = excluded.error,
    latency_ms = excluded.latency_ms,
    decided_at = excluded.decided_at,
    arguments_sent = excluded.arguments_sent
"""
UPDATE_REPLY = "UPDATE deliveries SET reply_status = ?, reply_body = ?, reply_ms = ? WHERE id = ?"
INSERT_REJECTED = """
INSERT INTO rejected_requests (at, provider, route, method, path, client, reason, headers, body_size, body_excerpt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def write_transaction(conn: sqlite3.Connection, payloads: list[Payload], session_id: int | None = None) -> list[Any]:
    """Runs on the writer thread: BEGIN IMMEDIATE, apply everything, COMMIT (or ROLLBACK)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = apply_payloads(conn, payloads, session_id)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except Exception:
                log.exception("history rollback failed")
        raise
    return results


def apply_payloads(conn: sqlite3.Connection, payloads: list[Payload], session_id: int | None = None) -> list[Any]:
    # Ids are assigned here (we hold the write lock) so one executemany per
    # table suffices and events can point at their delivery.
    max_delivery, max_event = conn.execute(
        "SELECT coalesce((SELECT max(id) FROM deliveries), 0), coalesce((SELECT max(id) FROM events), 0)"
    ).fetchone()
    plan = Plan(next_delivery=max_delivery + 1, next_event=max_event + 1, session_id=session_id)
    originals = _originals(conn, {p.dedupe_key for p in payloads if isinstance(p, DeliveryOp)})

    results: list[Any] = []
    for p in payloads:
        result: Any = None
        if isinstance(p, DeliveryOp):
            delivery_id = plan.next_delivery
            plan.next_delivery += 1
            original = originals.setdefault(p.dedupe_key, delivery_id)
            duplicate = original != delivery_id
            plan.deliveries.append((delivery_id, *p.row, original if duplicate else None))
            first_event = plan.next_event if p.events and not duplicate else None
            if not duplicate:
                plan.add_events(p.events, delivery_id)
            result = DeliveryReceipt(delivery_id, duplicate, first_event)
        elif isinstance(p, EventsOp):
            result = plan.next_event if p.events else None  # the first event's id
            plan.add_events(p.events, p.delivery_id)
        elif isinstance(p, ToolRequestsOp):
            plan.tool_requests.extend(p.rows)
            if p.call_id:
                plan.call(p.call_id, p.provider, p.at).touch(p.at)
                plan.tool_call_counts.add(p.call_id)
        elif p.table == "reply":
            plan.replies.append(p.row)
        else:
            plan.rejected.append(p.row)
        results.append(result)

    statements: list[tuple[str, list[tuple[Any, ...]]]] = [
        (INSERT_DELIVERY, plan.deliveries),
        (INSERT_EVENT, plan.events),
        (INSERT_TRANSCRIPT, plan.transcripts),
        (UPSERT_TOOL_REQUEST, plan.tool_requests),
        (UPSERT_TOOL_DECISION, plan.tool_decisions),
        (UPSERT_CALL, [(*agg.row(call_id), plan.session_id) for call_id, agg in plan.calls.items()]),
        (COUNT_TOOL_CALLS, [(call_id,) for call_id in plan.tool_call_counts]),
        (UPDATE_REPLY, plan.replies),
        (INSERT_REJECTED, plan.rejected),
    ]
    for sql, rows in statements:
        if rows:
            conn.executemany(sql, rows)
    return results


def _originals(conn: sqlite3.Connection, keys: set[str]) -> dict[str, int]:
    """dedupe_key -> id of the first delivery with it, for keys already stored."""
    found: dict[str, int] = {}
    wanted = list(keys)
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT dedupe_key, id FROM deliveries WHERE duplicate_of IS NULL AND dedupe_key IN ({marks})",
            chunk,
        )
        found.update((key, delivery_id) for key, delivery_id in rows)
    return found


def settle(op: Op, result: Any = None, *, exc: BaseException | None = None) -> None:
    if op.future is None:
        if exc is not None:
            log.warning("a background history write failed: %s", exc)
        return
    if op.future.done():  # the caller gave up waiting; the write stands regardless
        return
    if exc is not None:
        op.future.set_exception(exc)
    else:
        op.future.set_result(result)
