"""The durable history: one SQLite file, one writer task with group commit.

Every write is queued as an operation and its caller awaits a future that
resolves only after the COMMIT that includes it, so "a 2xx is sent only after
the event is committed" holds without paying one transaction per request: the
writer drains everything queued and runs it as one transaction (executemany per
table). Reads go through a second connection: in WAL mode they never block the
writer and only ever see committed data.

Timestamps are stored as REAL Unix epoch seconds (UTC): indexable, compact and
readable in SQL with `datetime(at, 'unixepoch', 'subsec')`. The normalized
event JSON in `events.data` keeps the ISO form of the contract.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import socket
import sqlite3
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from console.core.events import Event, compact_json, event_json, event_to_dict, to_utc
from console.core.tools import ToolCall, ToolOutcome
from console.redact import Redactor, mask_url

log = logging.getLogger(__name__)

__all__ = [
    "DeliveryReceipt",
    "DeliveryRecord",
    "INTERRUPTED",
    "MIGRATIONS",
    "Session",
    "Store",
    "StoreClosed",
    "StoreError",
    "UNKNOWN",
    "epoch",
    "iso_from_epoch",
    "mask_monitor_urls",
]

# Ordered schema steps; step N brings the database to PRAGMA user_version N.
# Shipped steps are never edited: append a new step instead.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE deliveries (
            id            INTEGER PRIMARY KEY,
            received_at   REAL    NOT NULL,
            provider      TEXT    NOT NULL,
            route         TEXT    NOT NULL,
            method        TEXT    NOT NULL,
            path          TEXT    NOT NULL,
            message_type  TEXT,
            call_id       TEXT,
            auth_scheme   TEXT,
            headers       TEXT    NOT NULL,  -- JSON [[name, value], ...], redacted
            body          BLOB    NOT NULL,  -- raw request body, redacted
            body_sha256   TEXT    NOT NULL,  -- of the body as received
            dedupe_key    TEXT    NOT NULL,
            duplicate_of  INTEGER REFERENCES deliveries(id),
            reply_status  INTEGER,
            reply_body    BLOB,              -- redacted
            reply_ms      REAL
        )
        """,
        # Only first deliveries are unique; repeats point at them via duplicate_of.
        "CREATE UNIQUE INDEX deliveries_dedupe ON deliveries(dedupe_key) WHERE duplicate_of IS NULL",
        """
        CREATE TABLE events (
            id           INTEGER PRIMARY KEY,
            delivery_id  INTEGER REFERENCES deliveries(id),
            call_id      TEXT,
            provider     TEXT NOT NULL,
            kind         TEXT NOT NULL,
            at           REAL NOT NULL,
            data         TEXT NOT NULL       -- event_to_dict() JSON, redacted
        )
        """,
        "CREATE INDEX events_call_at ON events(call_id, at)",
        """
        CREATE TABLE calls (
            call_id        TEXT PRIMARY KEY,
            provider       TEXT NOT NULL,
            status         TEXT,
            status_at      REAL,             -- `at` of the event that set status
            started_at     REAL,
            ended_at       REAL,
            ended_reason   TEXT,
            summary        TEXT,
            cost           REAL,
            duration_s     REAL,
            barge_ins      INTEGER NOT NULL DEFAULT 0,
            tool_calls     INTEGER NOT NULL DEFAULT 0,
            first_seen_at  REAL NOT NULL,
            last_event_at  REAL NOT NULL
        )
        """,
        "CREATE INDEX calls_recent ON calls(first_seen_at, call_id)",
        "CREATE INDEX calls_provider_recent ON calls(provider, first_seen_at, call_id)",
        """
        CREATE TABLE transcripts (
            id        INTEGER PRIMARY KEY,
            event_id  INTEGER NOT NULL REFERENCES events(id),
            call_id   TEXT,
            at        REAL NOT NULL,
            role      TEXT NOT NULL,
            text      TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE tool_calls (
            tool_call_id    TEXT PRIMARY KEY,
            call_id         TEXT,
            provider        TEXT NOT NULL,
            name            TEXT NOT NULL,
            arguments       TEXT,            -- JSON, as requested
            requested_at    REAL,
            decision        TEXT,
            decided_by      TEXT,            -- operator | rule | timeout
            result          TEXT,
            error           TEXT,
            latency_ms      REAL,
            decided_at      REAL,
            arguments_sent  TEXT             -- JSON, as passed on (edited)
        )
        """,
        "CREATE INDEX tool_calls_call ON tool_calls(call_id, requested_at)",
        """
        CREATE TABLE rejected_requests (
            id            INTEGER PRIMARY KEY,
            at            REAL    NOT NULL,
            provider      TEXT,
            route         TEXT    NOT NULL,
            method        TEXT    NOT NULL,
            path          TEXT    NOT NULL,
            client        TEXT    NOT NULL,
            reason        TEXT    NOT NULL,
            headers       TEXT    NOT NULL,  -- JSON, redacted
            body_size     INTEGER NOT NULL,
            body_excerpt  TEXT               -- first 2 KB, redacted
        )
        """,
        "CREATE INDEX rejected_at ON rejected_requests(at)",
    ),
    (
        # One row per receiving process (serve, the TUI) while it runs: a tool call
        # still undecided when its process died is marked interrupted at the next start.
        """
        CREATE TABLE sessions (
            id          INTEGER PRIMARY KEY,
            pid         INTEGER NOT NULL,
            host        TEXT    NOT NULL,
            proc_start  TEXT,                -- /proc/<pid>/stat start time: a reused pid is not us
            started_at  REAL    NOT NULL,
            ended_at    REAL,
            end_reason  TEXT                 -- closed | crashed
        )
        """,
        "ALTER TABLE tool_calls ADD COLUMN session_id INTEGER REFERENCES sessions(id)",
        "CREATE INDEX tool_calls_undecided ON tool_calls(session_id) WHERE decision IS NULL",
    ),
    (
        # The receiving session that last recorded each call: a call still open when that
        # session ends (no end event seen) is closed as `unknown` (see `_close_open_calls`).
        "ALTER TABLE calls ADD COLUMN session_id INTEGER REFERENCES sessions(id)",
        "CREATE INDEX calls_open ON calls(session_id) WHERE status IS NULL OR status NOT IN ('ended', 'unknown')",
        # A delivery re-posted by `voice-console replay` carries its run id in the
        # X-Voice-Console-Replay header; NULL for the platform's own deliveries.
        "ALTER TABLE deliveries ADD COLUMN replay_run TEXT",
    ),
)

# The full-text index is not a migration step: whether FTS5 exists depends on
# the SQLite build opening the file, so it is (re)created or detached at open.
_FTS_TABLE = (
    "CREATE VIRTUAL TABLE transcripts_fts USING fts5("
    "text, content='transcripts', content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
)
_FTS_TRIGGERS = {
    "transcripts_fts_ai": """
        CREATE TRIGGER transcripts_fts_ai AFTER INSERT ON transcripts BEGIN
            INSERT INTO transcripts_fts(rowid, text) VALUES (new.id, new.text);
        END""",
    "transcripts_fts_ad": """
        CREATE TRIGGER transcripts_fts_ad AFTER DELETE ON transcripts BEGIN
            INSERT INTO transcripts_fts(transcripts_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END""",
    "transcripts_fts_au": """
        CREATE TRIGGER transcripts_fts_au AFTER UPDATE OF text ON transcripts BEGIN
            INSERT INTO transcripts_fts(transcripts_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO transcripts_fts(rowid, text) VALUES (new.id, new.text);
        END""",
}

_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_BUSY_TIMEOUT_MS = 5000
_MAX_BATCH = 2048  # ops per transaction; bounds latency and SQL parameter lists
_IN_CHUNK = 500  # values per `IN (...)` lookup
EXCERPT_BYTES = 2048


class StoreError(Exception):
    """The history database cannot be used (newer schema, not a database, ...)."""


class StoreClosed(StoreError):
    """A write or read was attempted after `close()`."""


def epoch(value: datetime) -> float:
    return to_utc(value).timestamp()


def iso_from_epoch(value: float | None) -> str | None:
    """The same ISO form pydantic writes in event JSON (`...Z`, microseconds when set)."""
    if value is None:
        return None
    text = datetime.fromtimestamp(value, tz=UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


# A Vapi call's listen and control URLs (call.monitor) are capabilities: whoever
# has one can hear or steer the live call. They are only needed while the call
# runs (the receiver takes them from the request in memory), so what is written
# keeps scheme://host/… only: the history, its raw view, exports and replays.
_MONITOR_KEYS = r'"(?:listenUrl|controlUrl|listen_url|control_url)"\s*:\s*'
_MONITOR_URL = re.compile(f'({_MONITOR_KEYS})"((?:[^"\\\\]|\\\\.)*)"')
_MONITOR_URL_BYTES = re.compile(_MONITOR_URL.pattern.encode())


def _masked_value(raw: str) -> str:
    try:
        url = json.loads(f'"{raw}"')
    except ValueError:
        return "<url hidden>"
    return json.dumps(mask_url(url), ensure_ascii=False)[1:-1] if isinstance(url, str) else raw


def mask_monitor_urls(text: str) -> str:
    """JSON text with every listenUrl/controlUrl value masked (a cheap no-op when there is none)."""
    if 'Url"' not in text and '_url"' not in text:
        return text
    return _MONITOR_URL.sub(lambda m: f'{m.group(1)}"{_masked_value(m.group(2))}"', text)


def _mask_monitor_bytes(body: bytes) -> bytes:
    if b'Url"' not in body and b'_url"' not in body:
        return body
    return _MONITOR_URL_BYTES.sub(
        lambda m: m.group(1) + b'"' + _masked_value(m.group(2).decode("utf-8", "replace")).encode() + b'"', body
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class DeliveryRecord:
    """One accepted webhook request, as received."""

    provider: str
    route: str
    method: str
    path: str
    message_type: str | None
    call_id: str | None
    received_at: datetime
    body: bytes
    headers: Sequence[tuple[str, str]]
    auth_scheme: str | None
    dedupe_key: str | None = None  # None: sha256 of route + body
    replay_run: str | None = None  # X-Voice-Console-Replay: re-posted by `voice-console replay`


@dataclass(frozen=True)
class DeliveryReceipt:
    delivery_id: int
    duplicate: bool


# --- prepared writes -------------------------------------------------------
# Serialisation and redaction happen in the caller, before queueing, so a bad
# value fails its own caller at once and the writer only runs SQL.


@dataclass(slots=True)
class _EventRow:
    call_id: str | None
    provider: str
    kind: str
    at: float
    data: str
    fields: dict[str, Any]  # the redacted event dict, for the derived tables


@dataclass(slots=True)
class _DeliveryOp:
    row: tuple[Any, ...]  # deliveries columns from received_at to replay_run
    dedupe_key: str
    events: list[_EventRow]


@dataclass(slots=True)
class _EventsOp:
    events: list[_EventRow]
    delivery_id: int | None


@dataclass(slots=True)
class _ToolRequestsOp:
    rows: list[tuple[Any, ...]]
    call_id: str | None
    provider: str
    at: float


@dataclass(slots=True)
class _RowOp:
    """A single-row statement: a reply update or a rejected request."""

    table: str  # "reply" | "rejected"
    row: tuple[Any, ...]


_Payload = _DeliveryOp | _EventsOp | _ToolRequestsOp | _RowOp


@dataclass(slots=True)
class _Op:
    payload: _Payload
    future: asyncio.Future[Any] | None  # None: nobody waits (metadata written in passing)


@dataclass(slots=True)
class _CallAgg:
    """What one transaction's events say about one call (merged by SQL upsert)."""

    provider: str
    first: float
    last: float
    status: str | None = None
    status_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    ended_reason: str | None = None
    summary: str | None = None
    cost: float | None = None
    duration_s: float | None = None
    barge_ins: int = 0

    def touch(self, at: float) -> None:
        self.first = min(self.first, at)
        self.last = max(self.last, at)

    def set_status(self, status: str, at: float) -> None:
        # Ties go to the later arrival; older events never overwrite newer ones,
        # and "ended" is terminal (platform clocks differ: Twilio dates to the second).
        if self.status == "ended" and status != "ended":
            return
        if self.status_at is None or at >= self.status_at or status == "ended":
            self.status, self.status_at = status, at

    def mark_ended(self, at: float, reason: str | None) -> None:
        self.ended_at = at if self.ended_at is None else min(self.ended_at, at)
        if reason is not None:
            self.ended_reason = reason

    def absorb(self, kind: str, at: float, d: dict[str, Any]) -> None:
        self.touch(at)
        if kind == "call.status":
            status = d["status"]
            self.set_status(status, at)
            if status == "in-progress":
                self.started_at = at if self.started_at is None else min(self.started_at, at)
            elif status == "ended":
                self.mark_ended(at, d.get("ended_reason"))
        elif kind == "call.ended":
            # An end-of-call report means the call is over even if no status said so.
            self.set_status("ended", at)
            self.mark_ended(at, d.get("reason"))
            for name in ("summary", "cost", "duration_s"):
                if d.get(name) is not None:
                    setattr(self, name, d[name])
        elif kind == "barge_in":
            self.barge_ins += 1

    def row(self, call_id: str) -> tuple[Any, ...]:
        return (
            call_id,
            self.provider,
            self.status,
            self.status_at,
            self.started_at,
            self.ended_at,
            self.ended_reason,
            self.summary,
            self.cost,
            self.duration_s,
            self.barge_ins,
            self.first,
            self.last,
        )


@dataclass
class _Plan:
    """Rows for one transaction, one list per statement, so each runs as one executemany."""

    next_delivery: int
    next_event: int
    session_id: int | None = None  # the receiving process that owns new tool requests
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    transcripts: list[tuple[Any, ...]] = field(default_factory=list)
    tool_requests: list[tuple[Any, ...]] = field(default_factory=list)
    tool_decisions: list[tuple[Any, ...]] = field(default_factory=list)
    calls: dict[str, _CallAgg] = field(default_factory=dict)
    tool_call_counts: set[str] = field(default_factory=set)
    replies: list[tuple[Any, ...]] = field(default_factory=list)
    rejected: list[tuple[Any, ...]] = field(default_factory=list)

    def call(self, call_id: str, provider: str, at: float) -> _CallAgg:
        agg = self.calls.get(call_id)
        if agg is None:
            agg = self.calls[call_id] = _CallAgg(provider=provider, first=at, last=at)
        return agg

    def add_events(self, rows: Iterable[_EventRow], delivery_id: int | None) -> None:
        for r in rows:
            event_id = self.next_event
            self.next_event += 1
            self.events.append((event_id, delivery_id, r.call_id, r.provider, r.kind, r.at, r.data))
            d = r.fields
            if r.kind == "transcript.final":
                self.transcripts.append((event_id, r.call_id, r.at, d["role"], d["text"]))
            elif r.kind == "tool.requested":
                self.tool_requests.append(
                    (
                        d["tool_call_id"],
                        r.call_id,
                        r.provider,
                        d["name"],
                        _dumps(d.get("arguments", {})),
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
                        None if sent is None else _dumps(sent),
                    )
                )
            if r.call_id:
                self.call(r.call_id, r.provider, r.at).absorb(r.kind, r.at, d)


_INSERT_DELIVERY = """
INSERT INTO deliveries (id, received_at, provider, route, method, path, message_type, call_id,
                        auth_scheme, headers, body, body_sha256, dedupe_key, replay_run, duplicate_of)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_EVENT = "INSERT INTO events (id, delivery_id, call_id, provider, kind, at, data) VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_TRANSCRIPT = "INSERT INTO transcripts (event_id, call_id, at, role, text) VALUES (?, ?, ?, ?, ?)"
# The first request wins; a row made earlier by an out-of-order decision gets its gaps filled.
# A call interrupted by a crash and requested again (the platform retried) is
# pending again, owned by the session deciding it now; its tool.decided
# "interrupted" event stays in the timeline.
_UPSERT_TOOL_REQUEST = """
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
_UPSERT_TOOL_DECISION = """
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
# Deliveries can arrive out of order: status only moves to a newer `at`; the
# two-argument min/max are wrapped in coalesce because they return NULL on NULL.
# A call closed as `unknown` (its session stopped with no end seen) takes the platform's
# late end report as the truth; any other event a receiving session records for it
# means it is live after all. Interruption markers (no session) leave it unknown.
_UPSERT_CALL = """
INSERT INTO calls (call_id, provider, status, status_at, started_at, ended_at, ended_reason,
                   summary, cost, duration_s, barge_ins, first_seen_at, last_event_at, session_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_id) DO UPDATE SET
    status = CASE WHEN calls.status = 'ended' THEN 'ended'
                  WHEN excluded.status = 'ended' THEN 'ended'
                  WHEN calls.status = 'unknown' THEN
                       CASE WHEN excluded.session_id IS NULL THEN 'unknown'
                            ELSE coalesce(excluded.status, 'in-progress') END
                  WHEN excluded.status_at >= coalesce(calls.status_at, excluded.status_at)
                  THEN excluded.status ELSE calls.status END,
    status_at = max(coalesce(calls.status_at, excluded.status_at), coalesce(excluded.status_at, calls.status_at)),
    started_at = min(coalesce(calls.started_at, excluded.started_at), coalesce(excluded.started_at, calls.started_at)),
    ended_at = min(coalesce(calls.ended_at, excluded.ended_at), coalesce(excluded.ended_at, calls.ended_at)),
    ended_reason = CASE WHEN calls.status = 'unknown' AND (excluded.status = 'ended' OR excluded.session_id IS NOT NULL)
                        THEN excluded.ended_reason
                        ELSE coalesce(excluded.ended_reason, calls.ended_reason) END,
    summary = coalesce(excluded.summary, calls.summary),
    cost = coalesce(excluded.cost, calls.cost),
    duration_s = coalesce(excluded.duration_s, calls.duration_s),
    barge_ins = calls.barge_ins + excluded.barge_ins,
    first_seen_at = min(calls.first_seen_at, excluded.first_seen_at),
    last_event_at = max(calls.last_event_at, excluded.last_event_at),
    session_id = coalesce(excluded.session_id, calls.session_id)
"""
# Distinct requested ids: the tool_calls primary key already de-duplicates redeliveries.
_COUNT_TOOL_CALLS = """
UPDATE calls SET tool_calls = (
    SELECT count(*) FROM tool_calls WHERE tool_calls.call_id = ?1 AND requested_at IS NOT NULL
) WHERE call_id = ?1
"""
_UPDATE_REPLY = "UPDATE deliveries SET reply_status = ?, reply_body = ?, reply_ms = ? WHERE id = ?"
_INSERT_REJECTED = """
INSERT INTO rejected_requests (at, provider, route, method, path, client, reason, headers, body_size, body_excerpt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


class Store:
    """The history database. Open with `await Store.open(path)`; always close it."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        redactor: Redactor,
        commit_interval_ms: float,
        fts_enabled: bool,
        session: Session | None = None,
    ) -> None:
        self.path = path
        self._db = writer
        self._reader = reader
        self._redactor = redactor
        self.session = session
        self._session_id = session.id if session is not None else None
        self._interval = max(0.0, commit_interval_ms) / 1000
        self._fts_enabled = fts_enabled
        self._pending: deque[_Op] = deque()
        self._wakeup = asyncio.Event()
        self._want = 1  # wake the writer once this many ops are queued
        self._closing = False
        self._closed = False
        self._writer_task = asyncio.create_task(self._run_writer(), name=f"store-writer:{path.name}")

    # --- opening and closing ---------------------------------------------

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        redactor: Redactor | None = None,
        synchronous: str = "NORMAL",
        commit_interval_ms: float = 2.0,
        fts: bool = True,
        session: bool = False,
    ) -> Store:
        """Open (creating if needed) and migrate the database.

        `fts=False` uses the LIKE search even when FTS5 is available (tests,
        and a way out should the index ever be suspect).

        `session=True` is for the receiving process (serve, the TUI): it registers
        itself in `sessions`, owns the tool calls and calls it records, and first marks
        every tool call that a dead process left undecided as interrupted and every call
        it left open (no end seen) as `unknown` (`_open_session`); closing does the same
        for its own. Readers (`history`) leave it off: they must not touch a running
        receiver's calls.

        Whether a session's process still runs is judged by its pid and the kernel's
        start time of that pid (a reused pid is not it), on this host; there is no
        heartbeat. A session of another host is taken to be running: its calls are
        left to that host's receiver.
        """
        sync = synchronous.upper()
        if sync not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}, not {synchronous!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        opened: list[aiosqlite.Connection] = []
        try:
            writer = await aiosqlite.connect(path, isolation_level=None)
            opened.append(writer)
            await writer.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            mode = (await _fetchone(writer, "PRAGMA journal_mode=WAL"))[0]
            if str(mode).lower() != "wal":
                log.warning("%s: journal mode is %s, not WAL; readers may wait for writes", path, mode)
            await writer.execute(f"PRAGMA synchronous={sync}")
            await writer.execute("PRAGMA foreign_keys=ON")
            await _migrate(writer, path)
            available = await _probe_fts5(writer)
            await _sync_fts(writer, available)
            reader = await aiosqlite.connect(path, isolation_level=None)
            opened.append(reader)
            reader.row_factory = aiosqlite.Row
            await reader.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            await reader.execute("PRAGMA query_only=ON")
            recovered = None
            if session:
                recovered = await writer._execute(_open_session, writer._conn, redactor or Redactor())
        except BaseException as exc:
            for conn in reversed(opened):
                await conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"{path}: cannot open the history database ({exc})") from exc
            raise
        if recovered is not None and recovered.interrupted:
            log.warning(
                "%s: %d tool call(s) left undecided by a stopped voice-console marked interrupted",
                path,
                len(recovered.interrupted),
            )
        if recovered is not None and recovered.unknown_calls:
            log.warning(
                "%s: %d call(s) a stopped voice-console never saw end marked unknown",
                path,
                len(recovered.unknown_calls),
            )
        return cls(
            path,
            writer,
            reader,
            redactor=redactor or Redactor(),
            commit_interval_ms=commit_interval_ms,
            fts_enabled=fts and available,
            session=recovered,
        )

    async def close(self) -> None:
        """Commit everything queued, then close the connections. Safe to call twice."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        try:
            await self._writer_task
        except Exception:
            log.exception("history writer failed")
        try:
            if self._session_id is not None:
                # Anything still undecided will never be: say so now rather than at the next start.
                await self._db._execute(_close_session, self._db._conn, self._session_id, self._redactor)
        except Exception:
            log.exception("could not close the history session (the next start recovers it)")
        finally:
            self._closed = True
            try:
                await self._reader.close()
            finally:
                # Last: closing the last connection checkpoints and removes the WAL.
                await self._db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def fts_enabled(self) -> bool:
        return self._fts_enabled

    @property
    def closed(self) -> bool:
        return self._closed

    # --- writes (each returns only after its COMMIT) ------------------------

    async def record_delivery(self, rec: DeliveryRecord, events: Sequence[Event]) -> DeliveryReceipt:
        r = self._redactor
        body_hash = hashlib.sha256(rec.body).hexdigest()
        key = rec.dedupe_key or f"sha256:{rec.route}:{body_hash}"
        if rec.replay_run is not None:
            # A replay repeats the platform's bodies: it is de-duplicated within its own run only.
            key = f"replay:{rec.replay_run}:{key}"
        row = (
            epoch(rec.received_at),
            rec.provider,
            rec.route,
            rec.method,
            r.text(rec.path),
            rec.message_type,
            rec.call_id,
            rec.auth_scheme,
            compact_json(r.headers(rec.headers)),
            _mask_monitor_bytes(r.bytes(rec.body)),
            body_hash,
            key,
            rec.replay_run,
        )
        receipt: DeliveryReceipt = await self._submit(_DeliveryOp(row, key, self._event_rows(events)))
        return receipt

    async def record_events(self, events: Sequence[Event], delivery_id: int | None = None) -> None:
        if events:
            await self._submit(_EventsOp(self._event_rows(events), delivery_id))

    def _reply_op(self, delivery_id: int, status: int, body: bytes, elapsed_ms: float) -> _RowOp:
        return _RowOp("reply", (status, self._redactor.bytes(body), elapsed_ms, delivery_id))

    async def record_reply(self, delivery_id: int, status: int, body: bytes, elapsed_ms: float) -> None:
        await self._submit(self._reply_op(delivery_id, status, body, elapsed_ms))

    def note_reply(self, delivery_id: int, status: int, body: bytes, elapsed_ms: float) -> None:
        """Queue the reply's record with the next transaction without waiting for it.

        The event itself is already committed; the reply is metadata, so the
        hot path does not pay a second commit round-trip for it.
        """
        if self._closing:
            return
        self._pending.append(_Op(self._reply_op(delivery_id, status, body, elapsed_ms), None))
        if len(self._pending) >= self._want:
            self._wakeup.set()

    async def record_rejected(
        self,
        provider: str | None,
        route: str,
        method: str,
        path: str,
        client: str,
        reason: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        at: datetime,
    ) -> None:
        r = self._redactor
        # Redact before cutting, so a secret straddling the cut cannot leave a prefix behind.
        excerpt = _mask_monitor_bytes(r.bytes(body))[:EXCERPT_BYTES].decode("utf-8", errors="replace")
        row = (
            epoch(at),
            provider,
            route,
            method,
            r.text(path),
            client,
            r.text(reason),
            _dumps(r.headers(headers)),
            len(body),
            excerpt,
        )
        await self._submit(_RowOp("rejected", row))

    async def record_tool_requests(
        self, provider: str, call_id: str | None, calls: Sequence[ToolCall], at: datetime
    ) -> None:
        if not calls:
            return
        ts = epoch(at)
        rows = [
            (c.tool_call_id, call_id, provider, c.name, _dumps(self._redactor.json(c.arguments)), ts, self._session_id)
            for c in calls
        ]
        await self._submit(_ToolRequestsOp(rows, call_id, provider, ts))

    async def record_tool_outcomes(
        self, provider: str, call_id: str | None, outcomes: Sequence[ToolOutcome], decided_at: datetime
    ) -> None:
        """Update tool_calls and add the matching tool.decided events, in one transaction."""
        events: list[Event] = [o.event(provider=provider, call_id=call_id, at=decided_at) for o in outcomes]
        await self.record_events(events)

    # --- reads ------------------------------------------------------------

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Read-only SQL on the reader connection (sees committed data only)."""
        if self._closed:
            raise StoreClosed(f"{self.path}: the history is closed")
        return list(await self._reader.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def tool_outcome(self, tool_call_id: str) -> ToolOutcome | None:
        """The recorded decision for a tool call, to answer a redelivery the same way."""
        row = await self.fetchone(
            "SELECT tool_call_id, name, decision, decided_by, result, error, latency_ms, arguments_sent"
            " FROM tool_calls WHERE tool_call_id = ? AND decision IS NOT NULL AND decision != 'interrupted'",
            (tool_call_id,),
        )
        if row is None:
            return None
        return ToolOutcome(
            tool_call_id=row["tool_call_id"],
            name=row["name"],
            decision=row["decision"],
            by=row["decided_by"],
            result=row["result"],
            error=row["error"],
            latency_ms=row["latency_ms"],
            arguments_sent=None if row["arguments_sent"] is None else json.loads(row["arguments_sent"]),
        )

    # --- the writer ---------------------------------------------------------

    def _event_rows(self, events: Iterable[Event]) -> list[_EventRow]:
        redact = self._redactor.has_secrets
        rows = []
        for e in events:
            data = event_json(e)
            d: dict[str, Any] = e.__dict__  # the field values, read-only here
            # Scan the serialized form first (fast, C-level); walk the dict only when a secret is in it.
            if redact and self._redactor.text(data) != data:
                d = self._redactor.json(event_to_dict(e))
                data = _dumps(d)
            masked = mask_monitor_urls(data)
            if masked != data:
                data, d = masked, json.loads(masked)
            rows.append(_EventRow(e.call_id, e.provider, e.kind, e.at.timestamp(), data, d))
        return rows

    async def _submit(self, payload: _Payload) -> Any:
        if self._closing:
            raise StoreClosed(f"{self.path}: the history is closed")
        op = _Op(payload, asyncio.get_running_loop().create_future())
        self._pending.append(op)
        if len(self._pending) >= self._want:
            self._wakeup.set()
        return await op.future

    async def _run_writer(self) -> None:
        last_batch = 1
        batch: list[_Op] = []
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._want = 1
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                if len(self._pending) < last_batch and self._interval > 0 and not self._closing:
                    # Group commit: give the writers of the last batch up to the
                    # interval to come back, so they share one transaction.
                    self._want = last_batch
                    self._wakeup.clear()
                    try:
                        async with asyncio.timeout(self._interval):
                            await self._wakeup.wait()
                    except TimeoutError:
                        pass
                    self._want = 1
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), _MAX_BATCH))]
                last_batch = len(batch)
                await self._commit(batch)
                batch = []
        finally:
            # Only reached with ops left on cancellation or an internal error:
            # fail them, and refuse new ones rather than leave callers hanging.
            self._closing = True
            gone = StoreClosed(f"{self.path}: the history writer stopped")
            for op in [*batch, *self._pending]:
                if op.future is not None and not op.future.done():
                    op.future.set_exception(gone)
            self._pending.clear()

    async def _commit(self, batch: list[_Op]) -> None:
        try:
            results = await self._transaction([op.payload for op in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc=exc)
                return
            # One bad op must not lose the others: retry each on its own.
            log.warning("history batch of %d failed (%s); retrying one by one", len(batch), exc)
            for op in batch:
                try:
                    (result,) = await self._transaction([op.payload])
                except Exception as single:
                    _settle(op, exc=single)
                else:
                    _settle(op, result)
            return
        for op, result in zip(batch, results, strict=True):
            _settle(op, result)

    async def _transaction(self, payloads: list[_Payload]) -> list[Any]:
        # The whole transaction is ONE call on the connection's thread. Issuing
        # BEGIN, the reads, each executemany and COMMIT as separate awaits costs
        # a thread round-trip each, and each round-trip waits for the GIL while
        # the event loop is busy: that, not SQLite, was the ingestion bottleneck.
        # aiosqlite has no public "run this function on the connection" call, so
        # this uses its `_execute`/`_conn` (stable across 0.17-0.22; pinned <1).
        db = self._db
        return await db._execute(_write_transaction, db._conn, payloads, self._session_id)


def _write_transaction(conn: sqlite3.Connection, payloads: list[_Payload], session_id: int | None = None) -> list[Any]:
    """Runs on the writer thread: BEGIN IMMEDIATE, apply everything, COMMIT (or ROLLBACK)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        results = _apply(conn, payloads, session_id)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except Exception:
                log.exception("history rollback failed")
        raise
    return results


def _apply(conn: sqlite3.Connection, payloads: list[_Payload], session_id: int | None = None) -> list[Any]:
    # Ids are assigned here (we hold the write lock) so one executemany per
    # table suffices and events can point at their delivery.
    max_delivery, max_event = conn.execute(
        "SELECT coalesce((SELECT max(id) FROM deliveries), 0), coalesce((SELECT max(id) FROM events), 0)"
    ).fetchone()
    plan = _Plan(next_delivery=max_delivery + 1, next_event=max_event + 1, session_id=session_id)
    originals = _originals(conn, {p.dedupe_key for p in payloads if isinstance(p, _DeliveryOp)})

    results: list[Any] = []
    for p in payloads:
        result: Any = None
        if isinstance(p, _DeliveryOp):
            delivery_id = plan.next_delivery
            plan.next_delivery += 1
            original = originals.setdefault(p.dedupe_key, delivery_id)
            duplicate = original != delivery_id
            plan.deliveries.append((delivery_id, *p.row, original if duplicate else None))
            if not duplicate:
                plan.add_events(p.events, delivery_id)
            result = DeliveryReceipt(delivery_id, duplicate)
        elif isinstance(p, _EventsOp):
            plan.add_events(p.events, p.delivery_id)
        elif isinstance(p, _ToolRequestsOp):
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
        (_INSERT_DELIVERY, plan.deliveries),
        (_INSERT_EVENT, plan.events),
        (_INSERT_TRANSCRIPT, plan.transcripts),
        (_UPSERT_TOOL_REQUEST, plan.tool_requests),
        (_UPSERT_TOOL_DECISION, plan.tool_decisions),
        (_UPSERT_CALL, [(*agg.row(call_id), plan.session_id) for call_id, agg in plan.calls.items()]),
        (_COUNT_TOOL_CALLS, [(call_id,) for call_id in plan.tool_call_counts]),
        (_UPDATE_REPLY, plan.replies),
        (_INSERT_REJECTED, plan.rejected),
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


def _settle(op: _Op, result: Any = None, *, exc: BaseException | None = None) -> None:
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


# --- sessions and crash recovery ---------------------------------------------------

INTERRUPTED = "interrupted"
INTERRUPTED_ERRORS = {
    "crash": "voice-console stopped (crashed or was killed) before this tool call was decided; "
    "the platform got no answer from it.",
    "shutdown": "voice-console shut down before this tool call was decided; the platform got no answer from it.",
}


# A call whose receiving process stopped before its end was seen. Whether the call
# went on is not known; the platform's late end report still closes it as `ended`.
UNKNOWN = "unknown"
_OPEN_CALL = "(status IS NULL OR status NOT IN ('ended', 'unknown'))"  # the calls_open index's condition


@dataclass(frozen=True)
class Session:
    """This process's row in `sessions`, and what its start recovered."""

    id: int
    interrupted: tuple[str, ...] = ()  # tool_call_ids marked interrupted at start
    crashed_sessions: tuple[int, ...] = ()
    unknown_calls: tuple[str, ...] = ()  # calls closed as unknown at start (their process had stopped)


def utc_text(value: float) -> str:
    return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def stopped_reason(end_reason: str | None, stopped_at: float | None, last_event_at: float | None) -> str:
    """Why a call is `unknown`: when its console stopped (or, after a crash, when it was last heard of)."""
    if end_reason == "closed" and stopped_at is not None:
        return f"no end seen: the console stopped at {utc_text(stopped_at)}"
    last = f" after the last event at {utc_text(last_event_at)}" if last_event_at is not None else ""
    if end_reason == "crashed":
        return f"no end seen: the console stopped unexpectedly{last}"
    return f"no end seen: the console that recorded it is no longer running{last}"


def _mark_unknown(conn: sqlite3.Connection, rows: Sequence[tuple[str, str]], at: float) -> list[str]:
    """(call_id, reason) -> status unknown with that reason; the call's end time stays unknown too."""
    conn.executemany(
        f"UPDATE calls SET status = '{UNKNOWN}', status_at = max(coalesce(status_at, ?1), ?1), ended_reason = ?2"
        f" WHERE call_id = ?3 AND {_OPEN_CALL}",
        [(at, reason, call_id) for call_id, reason in rows],
    )
    return [call_id for call_id, _ in rows]


def _close_orphaned_calls(conn: sqlite3.Connection, now: float) -> list[str]:
    """At a receiver's start: close the open calls no running session can still be receiving.

    A call belongs to the session that last recorded it. Its session has ended
    (cleanly, or found crashed just now): nobody saw its end. A call from before
    calls had sessions is closed only when no receiver runs at all, since one
    that does might be receiving it.
    """
    rows = conn.execute(
        "SELECT c.call_id, c.session_id, c.last_event_at, s.end_reason, s.ended_at"
        " FROM calls AS c LEFT JOIN sessions AS s ON s.id = c.session_id"
        f" WHERE {_OPEN_CALL.replace('status', 'c.status')} AND (c.session_id IS NULL OR s.ended_at IS NOT NULL)"
    ).fetchall()
    if not rows:
        return []
    anyone_running = conn.execute("SELECT 1 FROM sessions WHERE ended_at IS NULL LIMIT 1").fetchone() is not None
    closing = [
        (call_id, stopped_reason(end_reason, ended_at, last_event_at))
        for call_id, session_id, last_event_at, end_reason, ended_at in rows
        if session_id is not None or not anyone_running
    ]
    return _mark_unknown(conn, closing, now)


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), so a reused pid is not mistaken for ours; None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    if fields and fields[0] in ("Z", "X"):
        return "exited"  # a zombie: it is not running any more
    return fields[19] if len(fields) > 19 else None


def _process_alive(pid: int, host: str, proc_start: str | None) -> bool:
    if host != socket.gethostname():
        return True  # another machine's process: not ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    now = _proc_start(pid)
    if now == "exited":
        return False
    return proc_start is None or now is None or now == proc_start


def _interrupt(conn: sqlite3.Connection, where: str, params: Sequence[Any], by: str, redactor: Redactor) -> list[str]:
    """Mark the undecided tool calls matching `where` interrupted: tool_calls and a tool.decided event each.

    Runs inside the caller's write transaction, through the same plan as every
    other write, so the call's timeline and counters stay consistent.
    """
    rows = conn.execute(
        f"SELECT tool_call_id, call_id, provider, name FROM tool_calls WHERE decision IS NULL AND ({where})", params
    ).fetchall()
    if not rows:
        return []
    now = datetime.now(UTC)
    events = [
        ToolOutcome(tool_call_id, name, INTERRUPTED, by, error=INTERRUPTED_ERRORS[by]).event(  # type: ignore[arg-type]
            provider=provider, call_id=call_id, at=now
        )
        for tool_call_id, call_id, provider, name in rows
    ]
    data = []
    for e in events:
        fields = redactor.json(event_to_dict(e))
        data.append(_EventRow(e.call_id, e.provider, e.kind, e.at.timestamp(), _dumps(fields), fields))
    _apply(conn, [_EventsOp(data, None)])
    return [row[0] for row in rows]


def _open_session(conn: sqlite3.Connection, redactor: Redactor) -> Session:
    """Register this process; end the sessions of dead processes and interrupt their undecided tool calls."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        crashed = [
            session_id
            for session_id, pid, host, proc_start in conn.execute(
                "SELECT id, pid, host, proc_start FROM sessions WHERE ended_at IS NULL"
            ).fetchall()
            if not _process_alive(pid, host, proc_start)
        ]
        now = time.time()
        conn.executemany(
            "UPDATE sessions SET ended_at = ?, end_reason = 'crashed' WHERE id = ?",
            [(now, session_id) for session_id in crashed],
        )
        # Undecided and owned by no running session (rows from before sessions existed included).
        interrupted = _interrupt(
            conn,
            "session_id IS NULL OR session_id NOT IN (SELECT id FROM sessions WHERE ended_at IS NULL)",
            (),
            "crash",
            redactor,
        )
        # After the interruptions: their markers are dated now and must not look like a live call.
        unknown = _close_orphaned_calls(conn, now)
        cursor = conn.execute(
            "INSERT INTO sessions (pid, host, proc_start, started_at) VALUES (?, ?, ?, ?)",
            (os.getpid(), socket.gethostname(), _proc_start(os.getpid()), now),
        )
        session = Session(int(cursor.lastrowid or 0), tuple(interrupted), tuple(crashed), tuple(unknown))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return session


def _close_session(conn: sqlite3.Connection, session_id: int, redactor: Redactor) -> list[str]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        interrupted = _interrupt(conn, "session_id = ?", (session_id,), "shutdown", redactor)
        now = time.time()
        # Its open calls are closed now, not at the next start: `history` run meanwhile tells the truth.
        open_calls = conn.execute(f"SELECT call_id FROM calls WHERE session_id = ? AND {_OPEN_CALL}", (session_id,))
        reason = stopped_reason("closed", now, None)
        _mark_unknown(conn, [(call_id, reason) for (call_id,) in open_calls.fetchall()], now)
        conn.execute("UPDATE sessions SET ended_at = ?, end_reason = 'closed' WHERE id = ?", (now, session_id))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return interrupted


async def _fetchone(db: aiosqlite.Connection, sql: str) -> Any:
    rows = list(await db.execute_fetchall(sql))
    return rows[0]


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    version = (await _fetchone(db, "PRAGMA user_version"))[0]
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{path}: the history database is at schema version {version}, newer than this "
            f"voice-console knows ({len(MIGRATIONS)}); upgrade voice-console or use another --db"
        )
    if version == len(MIGRATIONS):
        return
    await db.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        version = (await _fetchone(db, "PRAGMA user_version"))[0]
        for number in range(version + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[number - 1]:
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version={number}")
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise


async def _probe_fts5(db: aiosqlite.Connection) -> bool:
    try:
        await db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
        await db.execute("DROP TABLE temp.fts5_probe")
    except sqlite3.OperationalError:
        return False
    return True


async def _fts_objects(db: aiosqlite.Connection) -> set[str]:
    names = ("transcripts_fts", *_FTS_TRIGGERS)
    rows = await db.execute_fetchall(
        f"SELECT name FROM sqlite_master WHERE name IN ({','.join('?' * len(names))})", names
    )
    return {name for (name,) in rows}


async def _sync_fts(db: aiosqlite.Connection, available: bool) -> None:
    """Attach the FTS index when this SQLite has FTS5, detach its triggers when not.

    A file written with FTS5 and opened by a build without it would fail every
    transcript insert through the triggers; dropping them keeps writes working
    and the next open with FTS5 rebuilds the index from the transcripts table.
    """
    present = await _fts_objects(db)
    if available:
        missing = {"transcripts_fts", *_FTS_TRIGGERS} - present
    else:
        missing = set(_FTS_TRIGGERS) & present  # triggers to drop
    if not missing:
        return
    await db.execute("BEGIN IMMEDIATE")
    try:
        present = await _fts_objects(db)
        if available:
            if "transcripts_fts" not in present:
                await db.execute(_FTS_TABLE)
            for name, sql in _FTS_TRIGGERS.items():
                if name not in present:
                    await db.execute(sql)
            if set(_FTS_TRIGGERS) - present:
                await db.execute("INSERT INTO transcripts_fts(transcripts_fts) VALUES ('rebuild')")
        else:
            for name in _FTS_TRIGGERS:
                await db.execute(f"DROP TRIGGER IF EXISTS {name}")
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise
