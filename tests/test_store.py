"""The SQLite history: real files under tmp_path, real aiosqlite connections."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic_core import PydanticSerializationError

import console.store.db as store_db
import console.store.schema as store_schema
from console.core.events import (
    BargeIn,
    CallEnded,
    CallStatus,
    Raw,
    ToolRequested,
    TranscriptFinal,
    TranscriptPartial,
    event_from_dict,
    event_to_dict,
)
from console.core.tools import ToolCall, ToolOutcome
from console.redact import Redactor
from console.store import queries
from console.store.db import MIGRATIONS, DeliveryRecord, Store, StoreClosed, StoreError

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def delivery(
    body: bytes,
    *,
    call_id: str | None = "call-1",
    key: str | None = None,
    route: str = "vapi",
    headers: list[tuple[str, str]] | None = None,
    path: str = "/webhook/vapi",
) -> DeliveryRecord:
    return DeliveryRecord(
        provider="vapi",
        route=route,
        method="POST",
        path=path,
        message_type="status-update",
        call_id=call_id,
        received_at=T0,
        body=body,
        headers=headers or [("content-type", "application/json")],
        auth_scheme="secret",
        dedupe_key=key,
    )


def status(call_id: str, value: str, seconds: float, reason: str | None = None) -> CallStatus:
    return CallStatus(at=at(seconds), provider="vapi", call_id=call_id, status=value, ended_reason=reason)  # type: ignore[arg-type]


def final(call_id: str, text: str, seconds: float, role: str = "user") -> TranscriptFinal:
    return TranscriptFinal(at=at(seconds), provider="vapi", call_id=call_id, role=role, text=text)  # type: ignore[arg-type]


def sql(path: Path, query: str, params: tuple = ()) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.db"


@pytest.fixture(params=["thread", "process"])
async def store(db_path: Path, request: pytest.FixtureRequest):
    """Every test with this store runs against both writers: the thread and the writer process."""
    s = await Store.open(db_path, writer_process=request.param == "process")
    try:
        yield s
    finally:
        await s.close()


# --- opening, migrations, closing -----------------------------------------------


async def test_migrates_an_empty_database_and_reopening_is_a_no_op(db_path: Path) -> None:
    async with await Store.open(db_path) as s:
        assert s.fts_enabled
    assert sql(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert sql(db_path, "PRAGMA journal_mode") == [("wal",)]
    schema = sql(db_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    names = {name for _, name, _ in schema}
    tables = {"deliveries", "events", "calls", "transcripts", "tool_calls", "rejected_requests", "transcripts_fts"}
    assert tables <= names

    async with await Store.open(db_path):
        pass
    assert sql(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert sql(db_path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema


@pytest.mark.parametrize("version", range(len(MIGRATIONS)))
async def test_migrates_a_database_at_every_older_version(db_path: Path, version: int) -> None:
    db_path.parent.mkdir(parents=True)
    with sqlite3.connect(db_path) as conn:
        for step in MIGRATIONS[:version]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={version}")
    async with await Store.open(db_path) as s:
        await s.record_events([status("c", "ringing", 0)])
    assert sql(db_path, "PRAGMA user_version") == [(len(MIGRATIONS),)]


async def test_refuses_a_newer_schema_and_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer"):
        await Store.open(newer)

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        await Store.open(junk)


async def test_close_is_idempotent_and_later_writes_fail_clearly(db_path: Path) -> None:
    s = await Store.open(db_path)
    await s.close()
    await s.close()
    assert s.closed
    with pytest.raises(StoreClosed):
        await s.record_events([status("c", "ringing", 0)])
    with pytest.raises(StoreClosed):
        await queries.list_calls(s)


async def test_close_flushes_writes_still_queued(db_path: Path) -> None:
    s = await Store.open(db_path, commit_interval_ms=50)
    pending = [asyncio.create_task(s.record_events([status(f"c{i}", "ringing", i)])) for i in range(10)]
    await asyncio.sleep(0)  # queued, not yet committed
    await s.close()
    await asyncio.gather(*pending)
    assert sql(db_path, "SELECT count(*) FROM events") == [(10,)]


# --- group commit ---------------------------------------------------------------


@pytest.mark.parametrize("writer_process", [False, True], ids=["thread", "process"])
async def test_group_commit_64_concurrent_deliveries_all_durable(db_path: Path, writer_process: bool) -> None:
    s = await Store.open(db_path, writer_process=writer_process)
    transactions = 0
    original = s._transaction

    async def counting(payloads):  # type: ignore[no-untyped-def]
        nonlocal transactions
        transactions += 1
        return await original(payloads)

    s._transaction = counting  # type: ignore[method-assign]

    async def one(i: int):  # type: ignore[no-untyped-def]
        call_id = f"call-{i % 8}"
        events = [status(call_id, "in-progress", i), final(call_id, f"line number {i}", i + 0.5)]
        return await s.record_delivery(delivery(f'{{"n": {i}}}'.encode(), call_id=call_id), events)

    receipts = await asyncio.gather(*(one(i) for i in range(64)))
    await s.close()

    assert sorted(r.delivery_id for r in receipts) == list(range(1, 65))
    assert not any(r.duplicate for r in receipts)
    assert transactions < 64  # they shared transactions
    async with await Store.open(db_path) as reopened:
        c = await queries.counts(reopened)
        assert (c["deliveries"], c["events"], c["transcripts"], c["calls"]) == (64, 128, 64, 8)
        assert len(await queries.search(reopened, "number", limit=100)) == 64


async def test_a_failing_operation_does_not_lose_the_others(store: Store, db_path: Path) -> None:
    good = [store.record_delivery(delivery(f"body {i}".encode()), [status("call-1", "ringing", i)]) for i in range(20)]
    bad = store.record_events([status("call-1", "ended", 99)], delivery_id=999_999)  # no such delivery (foreign key)
    results = await asyncio.gather(*good[:10], bad, *good[10:], return_exceptions=True)

    assert isinstance(results[10], sqlite3.IntegrityError)
    receipts = results[:10] + results[11:]
    assert all(not isinstance(r, BaseException) for r in receipts)
    assert sql(db_path, "SELECT count(*) FROM deliveries") == [(20,)]
    assert sql(db_path, "SELECT count(*) FROM events") == [(20,)]
    assert (await queries.get_call(store, "call-1"))["call"]["status"] == "ringing"  # type: ignore[index]


async def test_bad_input_fails_its_own_caller_before_queueing(store: Store) -> None:
    with pytest.raises(PydanticSerializationError):
        await store.record_events([Raw(at=T0, provider="vapi", call_id="c", type="x", data={"o": object()})])
    await store.record_events([status("c", "ringing", 0)])  # the writer is unaffected


# --- deliveries and duplicates ---------------------------------------------------


async def test_duplicates_are_recorded_but_their_events_are_not(store: Store, db_path: Path) -> None:
    events = [status("call-1", "ringing", 0), final("call-1", "hello", 1)]
    first = await store.record_delivery(delivery(b"one", key="msg-1"), events)
    again = await store.record_delivery(delivery(b"one, resent", key="msg-1"), events)
    assert (first.duplicate, again.duplicate) == (False, True)

    # No key: the route and body decide.
    a = await store.record_delivery(delivery(b"same body"), [final("call-1", "second", 2)])
    b = await store.record_delivery(delivery(b"same body"), [final("call-1", "second", 2)])
    c = await store.record_delivery(delivery(b"same body", route="vapi.other"), [])
    assert (a.duplicate, b.duplicate, c.duplicate) == (False, True, False)

    # Duplicates in the same transaction: exactly one original.
    same = await asyncio.gather(*(store.record_delivery(delivery(b"x", key="msg-2"), events) for _ in range(5)))
    assert sum(not r.duplicate for r in same) == 1

    rows = sql(db_path, "SELECT id, duplicate_of FROM deliveries ORDER BY id")
    original = {r.delivery_id for r in same if not r.duplicate}.pop()
    assert dict(rows)[again.delivery_id] == first.delivery_id
    assert dict(rows)[b.delivery_id] == a.delivery_id
    assert all(dict(rows)[r.delivery_id] == original for r in same if r.duplicate)
    assert sql(db_path, "SELECT count(*) FROM events") == [(5,)]  # 2 + 1 + 2
    assert (await queries.counts(store))["duplicates"] == 6  # again, b and four of the five


async def test_reply_and_rejected_requests_are_recorded(store: Store, db_path: Path) -> None:
    receipt = await store.record_delivery(delivery(b"{}"), [])
    await store.record_reply(receipt.delivery_id, 200, b'{"ok":true}', 1.25)
    assert sql(db_path, "SELECT reply_status, reply_body, reply_ms FROM deliveries") == [(200, b'{"ok":true}', 1.25)]

    body = b"A" * 5000
    await store.record_rejected(
        "vapi",
        "vapi",
        "POST",
        "/webhook/vapi",
        "127.0.0.1:5555",
        "authentication failed",
        [("content-type", "application/json")],
        body,
        at(3),
    )
    [item] = await queries.rejected(store, 10)
    assert item["reason"] == "authentication failed"
    assert item["body_size"] == 5000 and len(item["body_excerpt"]) == store_db.EXCERPT_BYTES
    assert item["at"] == "2024-05-01T12:00:03Z"
    assert item["headers"] == [["content-type", "application/json"]]


# --- the calls table ---------------------------------------------------------------


async def test_out_of_order_status_events_keep_the_newest(store: Store) -> None:
    # Separate deliveries, newest first.
    await store.record_events([status("a", "ended", 60, reason="customer-ended-call")])
    await store.record_events([status("a", "in-progress", 1)])
    await store.record_events([status("a", "ringing", 0)])
    # One transaction, shuffled.
    await store.record_events([status("b", "in-progress", 5), status("b", "forwarding", 30), status("b", "queued", 0)])

    a = (await queries.get_call(store, "a"))["call"]  # type: ignore[index]
    assert (a["status"], a["started_at"], a["ended_at"], a["ended_reason"]) == (
        "ended",
        "2024-05-01T12:00:01Z",
        "2024-05-01T12:01:00Z",
        "customer-ended-call",
    )
    assert a["first_seen_at"] == "2024-05-01T12:00:00Z" and a["last_event_at"] == "2024-05-01T12:01:00Z"
    b = (await queries.get_call(store, "b"))["call"]  # type: ignore[index]
    assert (b["status"], b["started_at"], b["ended_at"]) == ("forwarding", "2024-05-01T12:00:05Z", None)

    events = (await queries.get_call(store, "a"))["events"]  # type: ignore[index]
    assert [e["status"] for e in events] == ["ringing", "in-progress", "ended"]  # by `at`, not arrival


async def test_call_ended_fills_summary_cost_and_duration(store: Store) -> None:
    await store.record_events([status("c", "in-progress", 0)])
    await store.record_events([CallEnded(at=at(90), provider="vapi", call_id="c", reason="hangup", summary="Booked.")])
    await store.record_events([CallEnded(at=at(91), provider="vapi", call_id="c", cost=0.42, duration_s=90.5)])
    call = (await queries.get_call(store, "c"))["call"]  # type: ignore[index]
    assert (call["status"], call["ended_reason"], call["summary"], call["cost"], call["duration_s"]) == (
        "ended",
        "hangup",
        "Booked.",
        0.42,
        90.5,
    )
    assert call["ended_at"] == "2024-05-01T12:01:30Z"


async def test_barge_in_and_tool_call_counts(store: Store) -> None:
    request = ToolRequested(at=at(2), provider="vapi", call_id="c", tool_call_id="t1", name="book", arguments={"n": 2})
    await store.record_delivery(delivery(b"1", call_id="c"), [BargeIn(at=at(1), provider="vapi", call_id="c"), request])
    # The same tool call redelivered in a different body is one tool call.
    await store.record_delivery(delivery(b"2", call_id="c"), [request, BargeIn(at=at(3), provider="vapi", call_id="c")])
    await store.record_events(
        [
            BargeIn(at=at(4), provider="vapi", call_id="c", cut_text="and then"),
            ToolRequested(at=at(5), provider="vapi", call_id="c", tool_call_id="t2", name="refund"),
        ]
    )
    await store.record_tool_requests("vapi", "c", [ToolCall("t3", "transfer", {})], at(6))
    await store.record_tool_requests("vapi", "c", [ToolCall("t1", "book", {"n": 999})], at(7))  # already known

    [row] = await queries.list_calls(store)
    assert row == {
        "call_id": "c",
        "provider": "vapi",
        "status": None,
        "started_at": None,
        "ended_at": None,
        "ended_reason": None,
        "barge_ins": 3,
        "tool_calls": 3,
    }
    tools = (await queries.get_call(store, "c"))["tool_calls"]  # type: ignore[index]
    assert [t["tool_call_id"] for t in tools] == ["t1", "t2", "t3"]
    assert tools[0]["arguments"] == {"n": 2}  # the first request wins


async def test_list_calls_is_most_recent_first_with_paging_and_provider_filter(store: Store) -> None:
    for i in range(5):
        provider = "retell" if i % 2 else "vapi"
        await store.record_events([CallStatus(at=at(i * 10), provider=provider, call_id=f"c{i}", status="ringing")])
    assert [c["call_id"] for c in await queries.list_calls(store)] == ["c4", "c3", "c2", "c1", "c0"]
    assert [c["call_id"] for c in await queries.list_calls(store, limit=2, offset=1)] == ["c3", "c2"]
    assert [c["call_id"] for c in await queries.list_calls(store, provider="retell")] == ["c3", "c1"]
    assert await queries.get_call(store, "nope") is None


# --- tool decisions ------------------------------------------------------------------


async def test_tool_outcome_round_trip(store: Store) -> None:
    calls = [ToolCall("t1", "book", {"date": "friday"}), ToolCall("t2", "refund", {"amount": 5})]
    await store.record_tool_requests("vapi", "c", calls, at(1))
    assert await store.tool_outcome("t1") is None  # requested, not decided yet
    assert await store.tool_outcome("unknown") is None

    outcomes = [
        ToolOutcome(
            "t1",
            "book",
            "edited",
            "operator",
            result='{"booked": true}',
            latency_ms=1234.5,
            arguments_sent={"date": "saturday"},
        ),
        ToolOutcome("t2", "refund", "rejected", "timeout", error="No answer in time.", latency_ms=15000.0),
    ]
    await store.record_tool_outcomes("vapi", "c", outcomes, at(3))
    assert [await store.tool_outcome(o.tool_call_id) for o in outcomes] == outcomes

    detail = await queries.get_call(store, "c")
    assert detail is not None
    assert detail["tool_calls"] == [
        {
            "tool_call_id": "t1",
            "name": "book",
            "arguments": {"date": "friday"},
            "decision": "edited",
            "by": "operator",
            "result": '{"booked": true}',
            "error": None,
            "latency_ms": 1234.5,
        },
        {
            "tool_call_id": "t2",
            "name": "refund",
            "arguments": {"amount": 5},
            "decision": "rejected",
            "by": "timeout",
            "result": None,
            "error": "No answer in time.",
            "latency_ms": 15000.0,
        },
    ]
    decided = [event_from_dict(e) for e in detail["events"] if e["kind"] == "tool.decided"]
    assert [(e.tool_call_id, e.decision, e.by, e.arguments) for e in decided] == [  # type: ignore[union-attr]
        ("t1", "edited", "operator", {"date": "saturday"}),
        ("t2", "rejected", "timeout", None),
    ]
    assert detail["call"]["tool_calls"] == 2


# --- search ----------------------------------------------------------------------------

LINES = [
    "Hi, I'd like to book a table for four.",
    "Sure! What time works for you?",
    "Around 7 o'clock, if possible.",
    "Booking confirmed: table for 4 at 7:00 PM.",
    'He said "refund" twice — 100% sure.',
    "Can you NEAR the AND OR NOT operators?",
    "Thanks, bye!",
]
QUERIES = [
    "book",
    "table four",
    "o'clock",
    "TABLE",
    '"refund"',
    "100%",
    "near",
    "AND OR",
    "bye!",
    "zebra",
    "7",
    "(",
    "*",
    "-",
    "'",
    '"',
    ":",
    "book zebra",
]


async def populate_transcripts(s: Store) -> None:
    for i, text in enumerate(LINES):
        role = "user" if i % 2 == 0 else "assistant"
        partial = TranscriptPartial(at=at(i), provider="vapi", call_id="x", role="user", text="partial book")
        await s.record_events([final(f"call-{i % 3}", text, i, role=role), partial])


async def test_fts_and_like_fallback_give_the_same_results(db_path: Path) -> None:
    async with await Store.open(db_path) as s:
        assert s.fts_enabled
        await populate_transcripts(s)
        with_fts = {q: await queries.search(s, q) for q in QUERIES}
    async with await Store.open(db_path, fts=False) as s:
        assert not s.fts_enabled
        with_like = {q: await queries.search(s, q) for q in QUERIES}
    assert with_fts == with_like

    texts = {q: [hit["text"] for hit in hits] for q, hits in with_fts.items()}
    assert texts["book"] == [LINES[3], LINES[0]]  # word starts, most recent first; partials are not searched
    assert texts["table four"] == [LINES[0]]
    assert texts["o'clock"] == [LINES[2]]
    assert texts['"refund"'] == [LINES[4]] and texts["100%"] == [LINES[4]]
    assert texts["near"] == [LINES[5]] and texts["AND OR"] == [LINES[5]]  # operators are just words
    assert texts["zebra"] == [] and texts["book zebra"] == []
    assert with_fts["book"][0] == {
        "call_id": "call-0",
        "at": "2024-05-01T12:00:03Z",
        "role": "assistant",
        "text": LINES[3],
    }


async def test_punctuation_never_breaks_the_search(store: Store) -> None:
    await populate_transcripts(store)
    nasty = [
        '"',
        '""',
        "'",
        "*",
        "(",
        ")",
        "^",
        "-",
        "+",
        ":",
        "NEAR(a b",
        'a" OR "b',
        "col:x",
        "{}",
        "\\",
        "%_%",
        "   ",
    ]
    for query in nasty:
        await queries.search(store, query)  # no exception is the point
    assert await queries.search(store, "   ") == []
    # No words at all: a plain substring match.
    assert [h["text"] for h in await queries.search(store, "?")] == [LINES[5], LINES[1]]
    assert [h["text"] for h in await queries.search(store, "NEAR(")] == [LINES[5]]


async def test_fts_index_is_rebuilt_after_a_sqlite_without_fts5_wrote(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await Store.open(db_path) as s:
        await s.record_events([final("c", "before the gap", 0)])

    async def no_fts5(db) -> bool:  # type: ignore[no-untyped-def]
        return False

    with monkeypatch.context() as m:
        m.setattr(store_schema, "probe_fts5", no_fts5)
        async with await Store.open(db_path) as s:
            assert not s.fts_enabled
            assert sql(db_path, "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'") == [(0,)]
            await s.record_events([final("c", "during the gap", 1)])
            assert len(await queries.search(s, "gap")) == 2

    async with await Store.open(db_path) as s:
        assert s.fts_enabled
        await s.record_events([final("c", "after the gap", 2)])
        hits = [h["text"] for h in await queries.search(s, "gap")]
        assert hits == ["after the gap", "during the gap", "before the gap"]


# --- redaction ----------------------------------------------------------------------------

SECRET = "sk-live-Zq8SECRETvalue42"


async def test_configured_secrets_never_reach_the_database_file(db_path: Path) -> None:
    s = await Store.open(db_path, redactor=Redactor([SECRET]))
    body = json.dumps({"message": {"type": "tool-calls", "server": {"secret": SECRET}}}).encode()
    headers = [
        ("content-type", "application/json"),
        ("x-vapi-secret", SECRET),
        ("x-echo", f"token={SECRET}"),
        ("authorization", "Bearer something-else"),
    ]
    receipt = await s.record_delivery(
        delivery(body, headers=headers, path=f"/webhook/vapi?key={SECRET}"),
        [
            Raw(at=T0, provider="vapi", call_id="c", type="unknown", data={"nested": [{"k": SECRET}], SECRET: 1}),
            final("c", f"my key is {SECRET}", 1),
            ToolRequested(at=at(2), provider="vapi", call_id="c", tool_call_id="t", name="x", arguments={"k": SECRET}),
            CallEnded(at=at(3), provider="vapi", call_id="c", summary=f"leaked {SECRET}"),
        ],
    )
    await s.record_reply(receipt.delivery_id, 200, f'{{"echo": "{SECRET}"}}'.encode(), 1.0)
    await s.record_rejected(
        "vapi",
        "vapi",
        "POST",
        f"/webhook/vapi?key={SECRET}",
        "127.0.0.1:1",
        f"bad {SECRET}",
        headers,
        b"x" * 2040 + SECRET.encode(),
        at(4),
    )  # straddles the excerpt cut
    await s.record_tool_requests("vapi", "c", [ToolCall("t9", "y", {"k": SECRET})], at(5))
    await s.record_tool_outcomes(
        "vapi", "c", [ToolOutcome("t9", "y", "approved", "rule", result=SECRET, arguments_sent={"k": SECRET})], at(6)
    )

    # The secret whole, and as the lower-cased tokens a full-text index would keep.
    needles = [SECRET.encode(), SECRET.lower().encode(), b"zq8secretvalue42"]
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert any(p.name.endswith("-wal") for p in files)
    for path in files:  # while open: the main file, the WAL and the shared-memory index
        data = path.read_bytes()
        assert not any(n in data for n in needles), path.name
    await s.close()
    for path in db_path.parent.iterdir():  # after the checkpoint into the main file
        assert not any(n in path.read_bytes() for n in needles), path.name

    # What was kept is still useful.
    assert sql(db_path, "SELECT headers FROM deliveries")[0][0].count("[redacted]") == 3
    async with await Store.open(db_path) as s2:
        assert [h["text"] for h in await queries.search(s2, "key")] == ["my key is [redacted]"]


# --- helpers --------------------------------------------------------------------------------


def test_epoch_round_trip_is_exact_to_the_microsecond() -> None:
    for value in (T0, datetime(2031, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), at(0.000001)):
        iso = store_db.iso_from_epoch(store_db.epoch(value))
        assert iso == event_to_dict(CallStatus(at=value, provider="vapi", status="queued"))["at"]


async def test_ended_status_is_terminal(tmp_path):
    store = await Store.open(tmp_path / "h.db")
    try:
        await store.record_events(
            [CallStatus(at=at(10), provider="twilio", call_id="CA1", status="ended", ended_reason="completed")]
        )
        await store.record_events([CallStatus(at=at(10.5), provider="twilio", call_id="CA1", status="ringing")])
        [call] = await queries.list_calls(store)
        assert call["status"] == "ended" and call["ended_reason"] == "completed"
    finally:
        await store.close()
