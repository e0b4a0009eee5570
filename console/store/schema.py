"""The history's schema: ordered migrations (PRAGMA user_version) and the full-text index,
(re)attached or detached at open depending on whether this SQLite has FTS5."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite

from console.store.errors import StoreError

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
FTS_TABLE = (
    "CREATE VIRTUAL TABLE transcripts_fts USING fts5("
    "text, content='transcripts', content_rowid='id', tokenize='unicode61 remove_diacritics 2')"
)
FTS_TRIGGERS = {
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


async def fetchone(db: aiosqlite.Connection, sql: str) -> Any:
    rows = list(await db.execute_fetchall(sql))
    return rows[0]


async def migrate(db: aiosqlite.Connection, path: Path) -> None:
    version = (await fetchone(db, "PRAGMA user_version"))[0]
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
        version = (await fetchone(db, "PRAGMA user_version"))[0]
        for number in range(version + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[number - 1]:
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version={number}")
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise


async def probe_fts5(db: aiosqlite.Connection) -> bool:
    try:
        await db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
        await db.execute("DROP TABLE temp.fts5_probe")
    except sqlite3.OperationalError:
        return False
    return True


async def fts_objects(db: aiosqlite.Connection) -> set[str]:
    names = ("transcripts_fts", *FTS_TRIGGERS)
    rows = await db.execute_fetchall(
        f"SELECT name FROM sqlite_master WHERE name IN ({','.join('?' * len(names))})", names
    )
    return {name for (name,) in rows}


async def sync_fts(db: aiosqlite.Connection, available: bool) -> None:
    """Attach the FTS index when this SQLite has FTS5, detach its triggers when not.

    A file written with FTS5 and opened by a build without it would fail every
    transcript insert through the triggers; dropping them keeps writes working
    and the next open with FTS5 rebuilds the index from the transcripts table.
    """
    present = await fts_objects(db)
    if available:
        missing = {"transcripts_fts", *FTS_TRIGGERS} - present
    else:
        missing = set(FTS_TRIGGERS) & present  # triggers to drop
    if not missing:
        return
    await db.execute("BEGIN IMMEDIATE")
    try:
        present = await fts_objects(db)
        if available:
            if "transcripts_fts" not in present:
                await db.execute(FTS_TABLE)
            for name, sql in FTS_TRIGGERS.items():
                if name not in present:
                    await db.execute(sql)
            if set(FTS_TRIGGERS) - present:
                await db.execute("INSERT INTO transcripts_fts(transcripts_fts) VALUES ('rebuild')")
        else:
            for name in FTS_TRIGGERS:
                await db.execute(f"DROP TRIGGER IF EXISTS {name}")
        await db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        raise
