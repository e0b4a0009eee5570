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
import sqlite3
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from console.core.events import Event, compact_json, event_json, to_utc
from console.core.tools import ToolCall, ToolOutcome
from console.redact import Redactor, mask_monitor_bytes, masked_json
from console.store import schema
from console.store.errors import StoreClosed, StoreError
from console.store.schema import MIGRATIONS
from console.store.sessions import INTERRUPTED, UNKNOWN, Session, close_session, open_session
from console.store.writer import (
    DeliveryOp,
    DeliveryReceipt,
    EventRow,
    EventsOp,
    Op,
    Payload,
    RowOp,
    ToolRequestsOp,
    dumps,
    settle,
    write_transaction,
)
from console.store.writer_process import WriterProcess

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
]

_SYNCHRONOUS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
_BUSY_TIMEOUT_MS = 5000
_MAX_BATCH = 2048  # ops per transaction; bounds latency and SQL parameter lists
_IN_CHUNK = 500  # values per `IN (...)` lookup
EXCERPT_BYTES = 2048


def epoch(value: datetime) -> float:
    return to_utc(value).timestamp()


def iso_from_epoch(value: float | None) -> str | None:
    """The same ISO form pydantic writes in event JSON (`...Z`, microseconds when set)."""
    if value is None:
        return None
    text = datetime.fromtimestamp(value, tz=UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


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
        process: WriterProcess | None = None,
    ) -> None:
        self.path = path
        self._db = writer
        self._reader = reader
        # Writes go to this child process rather than the writer thread: each is sent at once
        # (`_flush`) and settled by the child's answer; no writer task.
        self._process = process
        self._flush_soon: asyncio.Handle | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._redactor = redactor
        self.session = session
        self.read_only = False  # set by `open(read_only=True)`: nothing is written through this store
        self._session_id = session.id if session is not None else None
        self._interval = max(0.0, commit_interval_ms) / 1000
        self._fts_enabled = fts_enabled
        self._pending: deque[Op] = deque()
        self._wakeup = asyncio.Event()
        self._want = 1  # wake the writer once this many ops are queued
        self._closing = False
        self._closed = False
        self._writer_task = (
            None if process is not None else asyncio.create_task(self._run_writer(), name=f"store-writer:{path.name}")
        )

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
        read_only: bool = False,
        writer_process: bool = False,
    ) -> Store:
        """Open (creating if needed) and migrate the database.

        `fts=False` uses the LIKE search even when FTS5 is available (tests,
        and a way out should the index ever be suspect).

        `read_only=True`: nothing may be written through it (a console attached to a running
        `serve` reads the history that `serve` writes).

        `writer_process=True` runs the transactions in a child process of their own
        (`console.store.writer_process`): what a receiver under load wants, for the
        writer thread would share the interpreter lock with the event loop.

        `session=True` is for the receiving process (serve, the TUI): it registers
        itself in `sessions`, owns the tool calls and calls it records, and first marks
        every tool call that a dead process left undecided as interrupted and every call
        it left open (no end seen) as `unknown` (`open_session`); closing does the same
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
            mode = (await schema.fetchone(writer, "PRAGMA journal_mode=WAL"))[0]
            if str(mode).lower() != "wal":
                log.warning("%s: journal mode is %s, not WAL; readers may wait for writes", path, mode)
            await writer.execute(f"PRAGMA synchronous={sync}")
            await writer.execute("PRAGMA foreign_keys=ON")
            await schema.migrate(writer, path)
            available = await schema.probe_fts5(writer)
            await schema.sync_fts(writer, available)
            reader = await aiosqlite.connect(path, isolation_level=None)
            opened.append(reader)
            reader.row_factory = aiosqlite.Row
            await reader.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            await reader.execute("PRAGMA query_only=ON")
            recovered = None
            if session:
                recovered = await writer._execute(open_session, writer._conn, redactor or Redactor())
            process = None
            if writer_process and not read_only:
                process = WriterProcess(path, synchronous=sync, busy_timeout_ms=_BUSY_TIMEOUT_MS)
                await process.start()
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
        store = cls(
            path,
            writer,
            reader,
            redactor=redactor or Redactor(),
            commit_interval_ms=commit_interval_ms,
            fts_enabled=fts and available,
            session=recovered,
            process=process,
        )
        store.read_only = read_only and not session
        return store

    async def close(self) -> None:
        """Commit everything queued, then close the connections. Safe to call twice."""
        if self._closed:
            return
        self._closing = True
        self._wakeup.set()
        try:
            if self._writer_task is not None:
                await self._writer_task
            if self._process is not None:
                await self._close_process(self._process)
        except Exception:
            log.exception("history writer failed")
        try:
            if self._session_id is not None:
                # Anything still undecided will never be: say so now rather than at the next start.
                await self._db._execute(close_session, self._db._conn, self._session_id, self._redactor)
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

    async def record_delivery(
        self, rec: DeliveryRecord, events: Sequence[Event], *, masked: bool = False
    ) -> DeliveryReceipt:
        """Commit the request and its events (`masked`: as for `record_events`)."""
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
            mask_monitor_bytes(r.bytes(rec.body)),
            body_hash,
            key,
            rec.replay_run,
        )
        receipt: DeliveryReceipt = await self._submit(DeliveryOp(row, key, self._event_rows(events, masked)))
        return receipt

    async def record_events(
        self, events: Sequence[Event], delivery_id: int | None = None, *, masked: bool = False
    ) -> int | None:
        """Commit `events`; `masked`: secrets and live-call URLs are masked already (`mask_event`).
        The history id of the first (the rest follow in order); None for no events."""
        if not events:
            return None
        first: int | None = await self._submit(EventsOp(self._event_rows(events, masked), delivery_id))
        return first

    def _reply_op(self, delivery_id: int, status: int, body: bytes, elapsed_ms: float) -> RowOp:
        return RowOp("reply", (status, self._redactor.bytes(body), elapsed_ms, delivery_id))

    async def record_reply(self, delivery_id: int, status: int, body: bytes, elapsed_ms: float) -> None:
        await self._submit(self._reply_op(delivery_id, status, body, elapsed_ms))

    def note_reply(self, delivery_id: int, status: int, body: bytes, elapsed_ms: float) -> None:
        """Queue the reply's record with the next transaction without waiting for it.

        The event itself is already committed; the reply is metadata, so the
        hot path does not pay a second commit round-trip for it.
        """
        if self._closing:
            return
        self._pending.append(Op(self._reply_op(delivery_id, status, body, elapsed_ms), None))
        if self._process is not None:
            if self._flush_soon is None:  # with the next write, or at the end of this loop turn
                self._flush_soon = asyncio.get_running_loop().call_soon(self._flush)
        elif len(self._pending) >= self._want:
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
        excerpt = mask_monitor_bytes(r.bytes(body))[:EXCERPT_BYTES].decode("utf-8", errors="replace")
        row = (
            epoch(at),
            provider,
            route,
            method,
            r.text(path),
            client,
            r.text(reason),
            dumps(r.headers(headers)),
            len(body),
            excerpt,
        )
        await self._submit(RowOp("rejected", row))

    async def record_tool_requests(
        self, provider: str, call_id: str | None, calls: Sequence[ToolCall], at: datetime
    ) -> None:
        if not calls:
            return
        ts = epoch(at)
        rows = [
            (c.tool_call_id, call_id, provider, c.name, dumps(self._redactor.json(c.arguments)), ts, self._session_id)
            for c in calls
        ]
        await self._submit(ToolRequestsOp(rows, call_id, provider, ts))

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

    def _event_rows(self, events: Iterable[Event], masked: bool) -> list[EventRow]:
        """`masked`: the caller masked the events already (the webhook pipeline, with this
        store's redactor): written as they are, without a second scan."""
        rows = []
        for e in events:
            if masked:
                data, fields = event_json(e), None
            else:
                data, fields = masked_json(e, self._redactor)
            d: dict[str, Any] = e.__dict__ if fields is None else fields  # read-only here
            rows.append(EventRow(e.call_id, e.provider, e.kind, e.at.timestamp(), data, d))
        return rows

    async def _submit(self, payload: Payload) -> Any:
        if self._closing:
            raise StoreClosed(f"{self.path}: the history is closed")
        if self.read_only:
            raise StoreError(f"{self.path}: opened read-only (a console attached to a receiver only reads it)")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(Op(payload, future))
        if self._process is not None:
            if not self._process.busy:
                self._flush()  # the child is idle: now
            elif self._flush_soon is None:
                # The child is committing: what queues up until the end of this loop turn goes
                # as one message, which it merges into its next transaction anyway.
                self._flush_soon = asyncio.get_running_loop().call_soon(self._flush)
        elif len(self._pending) >= self._want:
            self._wakeup.set()
        return await future

    # --- the writer process (`writer_process=True`) ---------------------------------

    def _flush(self) -> None:
        """Send what is queued to the writer process now, as one message."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        process = self._process
        assert process is not None
        if not self._pending:
            return
        if not process.running:
            if self._restarting is None:
                self._restarting = asyncio.create_task(self._restart_writer(process))
            return
        pending = self._pending
        while pending:
            process.send([pending.popleft() for _ in range(min(len(pending), _MAX_BATCH))], self._session_id)

    async def _restart_writer(self, process: WriterProcess) -> None:
        try:
            await process.ensure_running()
        except Exception as exc:
            while self._pending:
                settle(self._pending.popleft(), exc=exc)
            return
        finally:
            self._restarting = None
        self._flush()

    async def _close_process(self, process: WriterProcess) -> None:
        self._flush()
        if self._restarting is not None:
            await self._restarting
        await process.drain()
        await process.close()

    async def _run_writer(self) -> None:
        last_batch = 1
        batch: list[Op] = []
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

    async def _commit(self, batch: list[Op]) -> None:
        try:
            results = await self._transaction([op.payload for op in batch])
        except Exception as exc:
            if len(batch) == 1:
                settle(batch[0], exc=exc)
                return
            # One bad op must not lose the others: retry each on its own.
            log.warning("history batch of %d failed (%s); retrying one by one", len(batch), exc)
            for op in batch:
                try:
                    (result,) = await self._transaction([op.payload])
                except Exception as single:
                    settle(op, exc=single)
                else:
                    settle(op, result)
            return
        for op, result in zip(batch, results, strict=True):
            settle(op, result)

    async def _transaction(self, payloads: list[Payload]) -> list[Any]:
        # The whole transaction is ONE call on the connection's thread. Issuing
        # BEGIN, the reads, each executemany and COMMIT as separate awaits costs
        # a thread round-trip each, and each round-trip waits for the GIL while
        # the event loop is busy: that, not SQLite, was the ingestion bottleneck.
        # aiosqlite has no public "run this function on the connection" call, so
        # this uses its `_execute`/`_conn` (stable across 0.17-0.22; pinned <1).
        db = self._db
        return await db._execute(write_transaction, db._conn, payloads, self._session_id)
