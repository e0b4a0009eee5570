"""Sessions and crash recovery: each receiving process registers itself; at its start it
ends the sessions of dead processes, marks the tool calls they left undecided as
interrupted and the calls they left open as `unknown`; at a clean close it does the
same for its own. Runs on the writer's thread, inside its own write transaction."""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from console.core.events import event_to_dict
from console.core.tools import ToolOutcome
from console.redact import Redactor
from console.store.writer import EventRow, EventsOp, apply_payloads, dumps

# How a process stopped without deciding its held tool calls (`by` of their `interrupted` decision).
Stopped = Literal["crash", "shutdown"]
INTERRUPTED: Final = "interrupted"
INTERRUPTED_ERRORS: dict[Stopped, str] = {
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


def _interrupt(
    conn: sqlite3.Connection, where: str, params: Sequence[Any], by: Stopped, redactor: Redactor
) -> list[str]:
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
        ToolOutcome(tool_call_id, name, INTERRUPTED, by, error=INTERRUPTED_ERRORS[by]).event(
            provider=provider, call_id=call_id, at=now
        )
        for tool_call_id, call_id, provider, name in rows
    ]
    data = []
    for e in events:
        fields = redactor.json(event_to_dict(e))
        data.append(EventRow(e.call_id, e.provider, e.kind, e.at.timestamp(), dumps(fields), fields))
    apply_payloads(conn, [EventsOp(data, None)])
    return [row[0] for row in rows]


def open_session(conn: sqlite3.Connection, redactor: Redactor) -> Session:
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


def close_session(conn: sqlite3.Connection, session_id: int, redactor: Redactor) -> list[str]:
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
