"""A second reference point: the plain way to make a webhook durable under uvicorn.

Each request's body is inserted and committed (aiosqlite, WAL, synchronous=NORMAL)
before the 200 — one commit per event, no verification, no normalization. It is
what a typical "store then acknowledge" endpoint does; voice-console groups commits.
"""

import asyncio
import os

import aiosqlite

_db: aiosqlite.Connection | None = None
_opening = asyncio.Lock()


async def _connection() -> aiosqlite.Connection:
    global _db
    async with _opening:
        if _db is None:
            _db = await aiosqlite.connect(os.environ["BENCH_DURABLE_DB"], isolation_level=None)
            await _db.execute("PRAGMA journal_mode=WAL")
            await _db.execute("PRAGMA synchronous=NORMAL")
            await _db.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
    return _db


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    db = _db or await _connection()
    await db.execute("INSERT INTO events (body) VALUES (?)", (b"".join(chunks),))  # autocommit: one commit per event
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})
