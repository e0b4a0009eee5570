"""Calls live when their console stops are closed honestly, never left `in-progress` forever.

The real `voice-console serve` runs in a subprocess on a real SQLite file; calls
arrive as signed Vapi webhooks over loopback. A call whose console stopped
(SIGTERM, or SIGKILL) before its end was seen becomes `unknown`, with the reason,
in `history calls`/`show`; the platform's late end-of-call report still ends it.
A call another running `serve` on the same file is receiving is left alone.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

import httpx
import pytest

from bench.soak import SECRET, ServeProcess, serve_env
from console.store.db import MIGRATIONS, Store

STOPPED = "no end seen: the console stopped at "
CRASHED = "no end seen: the console stopped unexpectedly after the last event at "


def vapi(url: str, message: dict) -> None:
    body = json.dumps({"message": {"timestamp": int(time.time() * 1000), **message}}).encode()
    response = httpx.post(
        url + "/webhook/vapi",
        content=body,
        timeout=30,
        headers={"content-type": "application/json", "x-vapi-secret": SECRET},
    )
    assert response.status_code == 200, response.text


def call_starts(url: str, call_id: str) -> None:
    vapi(url, {"type": "status-update", "status": "in-progress", "call": {"id": call_id}})
    vapi(
        url,
        {
            "type": "transcript",
            "role": "user",
            "transcriptType": "final",
            "transcript": "Hello?",
            "call": {"id": call_id},
        },
    )


def late_end_report(url: str, call_id: str) -> None:
    vapi(url, {"type": "end-of-call-report", "endedReason": "customer-ended-call", "call": {"id": call_id}})


def history(db: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "console", "history", *argv],
        capture_output=True,
        text=True,
        env=serve_env(db, db.parent / "home"),
        timeout=60,
    )


def calls(db: Path) -> dict[str, dict]:
    listed = history(db, "calls", "--json")
    assert listed.returncode == 0, listed.stderr
    return {c["call_id"]: c for c in json.loads(listed.stdout)}


def test_a_call_live_at_a_clean_stop_is_unknown_until_its_late_end_report(tmp_path: Path):
    db = tmp_path / "history.db"
    serve = ServeProcess(db)
    call_starts(serve.url, "c-stopped")
    assert calls(db)["c-stopped"]["status"] == "in-progress"
    before_stop = time.time()
    assert serve.stop() == 0

    call = calls(db)["c-stopped"]
    assert call["status"] == "unknown" and call["ended_at"] is None
    assert call["ended_reason"].startswith(STOPPED) and call["ended_reason"].endswith(" UTC")
    stopped_at = call["ended_reason"].removeprefix(STOPPED).removesuffix(" UTC")
    assert time.strftime("%Y-%m-%d %H:%M", time.gmtime(before_stop)) <= stopped_at[:16]
    table = history(db, "calls").stdout
    assert "unknown" in next(line for line in table.splitlines() if line.startswith("c-stopped"))

    restarted = ServeProcess(db)  # the next start leaves it unknown...
    try:
        assert calls(db)["c-stopped"]["status"] == "unknown"
        late_end_report(restarted.url, "c-stopped")  # ...until the platform's report says how it ended
    finally:
        assert restarted.stop() == 0
    shown = json.loads(history(db, "show", "c-stopped", "--json").stdout)["call"]
    assert (shown["status"], shown["ended_reason"]) == ("ended", "customer-ended-call")


def test_a_call_live_when_serve_is_killed_is_unknown_at_the_next_start(tmp_path: Path):
    db = tmp_path / "history.db"
    serve = ServeProcess(db)
    call_starts(serve.url, "c-killed")
    serve.kill9()
    assert calls(db)["c-killed"]["status"] == "in-progress"  # a reader recovers nothing

    restarted = ServeProcess(db)
    try:
        call = calls(db)["c-killed"]
        assert call["status"] == "unknown" and call["ended_reason"].startswith(CRASHED)
        shown = history(db, "show", "c-killed")
        assert shown.returncode == 0 and "status      unknown" in shown.stdout
        assert "stopped unexpectedly" in shown.stdout
        late_end_report(restarted.url, "c-killed")
    finally:
        assert restarted.stop() == 0
    call = calls(db)["c-killed"]
    assert (call["status"], call["ended_reason"]) == ("ended", "customer-ended-call")


def test_a_call_another_running_serve_receives_is_left_alone(tmp_path: Path):
    db = tmp_path / "history.db"
    first = ServeProcess(db)
    try:
        call_starts(first.url, "c-first")
        second = ServeProcess(db, stdout=tmp_path / "second.ndjson", stderr=tmp_path / "second.log")
        call_starts(second.url, "c-second")
        assert second.stop() == 0
        listed = calls(db)
        # The second one's start and stop never touched the call the first one is still receiving.
        assert listed["c-first"]["status"] == "in-progress"
        assert listed["c-second"]["status"] == "unknown"
        vapi(
            first.url,
            {
                "type": "transcript",
                "role": "assistant",
                "transcriptType": "final",
                "transcript": "Still here.",
                "call": {"id": "c-first"},
            },
        )
    finally:
        assert first.stop() == 0
    assert calls(db)["c-first"]["status"] == "unknown"


async def test_events_for_an_unknown_call_make_it_live_again(tmp_path: Path):
    """A console restarted while the call went on: its next event shows it is live after all."""
    from datetime import datetime

    from console.core.events import CallStatus, TranscriptFinal

    db = tmp_path / "history.db"
    now = datetime.now(UTC)
    async with await Store.open(db, session=True) as first:
        await first.record_events([CallStatus(at=now, provider="vapi", call_id="c1", status="in-progress")])
    async with await Store.open(db, session=True) as second:
        row = await second.fetchone("SELECT status FROM calls WHERE call_id = 'c1'")
        assert row["status"] == "unknown"
        await second.record_events([TranscriptFinal(at=now, provider="vapi", call_id="c1", role="user", text="hi")])
        row = await second.fetchone("SELECT status, ended_reason FROM calls WHERE call_id = 'c1'")
        assert (row["status"], row["ended_reason"]) == ("in-progress", None)


@pytest.mark.parametrize("version", [1, 2])
async def test_an_older_history_is_migrated_and_its_open_calls_closed_when_no_receiver_runs(
    tmp_path: Path, version: int
):
    """Calls recorded before calls had sessions: closed at the first receiver start, as no
    process can still be receiving them; a reader migrates the file but closes nothing."""
    db = tmp_path / "history.db"
    with sqlite3.connect(db) as conn:
        for step in MIGRATIONS[:version]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version={version}")
        conn.execute(
            "INSERT INTO calls (call_id, provider, status, status_at, first_seen_at, last_event_at)"
            " VALUES ('c-old', 'vapi', 'in-progress', 1764000000.0, 1764000000.0, 1764000060.0)"
        )
        conn.execute(
            "INSERT INTO calls (call_id, provider, status, status_at, first_seen_at, last_event_at)"
            " VALUES ('c-done', 'vapi', 'ended', 1764000000.0, 1764000000.0, 1764000060.0)"
        )
    async with await Store.open(db) as reader:
        assert (await reader.fetchone("SELECT status FROM calls WHERE call_id = 'c-old'"))["status"] == "in-progress"
    async with await Store.open(db, session=True) as store:
        assert store.session.unknown_calls == ("c-old",)
        row = await store.fetchone("SELECT status, ended_reason FROM calls WHERE call_id = 'c-old'")
        assert row["status"] == "unknown"
        assert row["ended_reason"] == (
            "no end seen: the console that recorded it is no longer running"
            " after the last event at 2025-11-24 16:01:00 UTC"
        )
        assert (await store.fetchone("SELECT status FROM calls WHERE call_id = 'c-done'"))["status"] == "ended"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
