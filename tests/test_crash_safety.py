"""Crash safety: `kill -9` under load loses no acknowledged event, and no tool call
stays pending forever.

The real `voice-console serve` runs in a subprocess; many keep-alive clients
post unique, signed Vapi messages (the simulator's shapes, see bench/soak.py);
every 2xx is recorded by the sha256 of its body. At a random moment serve gets
SIGKILL; it is restarted on the same database and every acknowledged body must
be there. A tool call held by the gate at the moment of the kill must come back
as `interrupted` by `crash`, in `history show` too. The same for the TUI process,
run for real in tmux.

VOICE_CONSOLE_CRASH_TRIALS sets the number of kill trials (3 here; the
reliability runner, bench/reliability.py, asks for more).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bench.reliability import CRASH_POLICY, crash_trial, held_tool_call, tool_row, wait_for_tool_row
from bench.soak import (
    SECRET,
    CallTemplates,
    LoadStats,
    ServeProcess,
    capture_call_messages,
    drive,
    serve_env,
    stored_hashes,
)
from console.core.events import ToolRequested
from console.core.tools import ToolCall
from console.store.db import INTERRUPTED, Store

TRIALS = int(os.environ.get("VOICE_CONSOLE_CRASH_TRIALS", "3"))


@pytest.fixture(scope="module")
def templates() -> CallTemplates:
    return CallTemplates.from_messages(capture_call_messages("booking"))


def history_show(db: Path, call_id: str) -> dict:
    env = serve_env(db, db.parent / "home")
    shown = subprocess.run(
        [sys.executable, "-m", "console", "history", "show", call_id, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


@pytest.mark.e2e
@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill9_under_load_loses_no_acknowledged_event(tmp_path: Path, templates: CallTemplates, trial: int):
    result = crash_trial(tmp_path, templates, kill_after=random.uniform(1.0, 3.0))
    assert result["killed_by_signal"] == signal.SIGKILL
    assert result["acked"] > 100, f"too little load reached serve before the kill: {result}"
    assert result["lost"] == 0, f"{result['lost']} of {result['acked']} acknowledged events are not in the history"
    assert result["acked_still_stored_after_restart"]

    held = result["held_call"]
    # At the kill the held call was in the history, undecided, and its request never got an answer.
    assert held["pending_before_kill"] and held["decision_at_kill"] is None and not held["answered_before_kill"]
    # The restart marked it; it is never left pending.
    assert held["after_restart"] == [INTERRUPTED, "crash"]
    assert result["restart_exit_code"] == 0
    shown = history_show(tmp_path / "history.db", held["call_id"])
    assert [(t["tool_call_id"], t["decision"], t["by"]) for t in shown["tool_calls"]] == [
        (held["tool_call_id"], INTERRUPTED, "crash")
    ]
    assert "before this tool call was decided" in shown["tool_calls"][0]["error"]
    decided = [e for e in shown["events"] if e["kind"] == "tool.decided"]
    assert [(e["decision"], e["by"]) for e in decided] == [(INTERRUPTED, "crash")]


def test_a_clean_stop_with_a_held_call_marks_it_interrupted_by_shutdown(tmp_path: Path):
    db = tmp_path / "history.db"
    serve = ServeProcess(db, CRASH_POLICY)
    tool_call_id = f"call_held_{uuid.uuid4().hex[:12]}"

    async def hold_then_stop() -> None:
        async with httpx.AsyncClient(base_url=serve.url, timeout=300) as client:
            held = asyncio.create_task(
                client.post(
                    "/webhook/vapi",
                    content=held_tool_call("stop-call", tool_call_id),
                    headers={"content-type": "application/json", "x-vapi-secret": SECRET},
                )
            )
            await asyncio.get_running_loop().run_in_executor(None, wait_for_tool_row, db, tool_call_id)
            await asyncio.get_running_loop().run_in_executor(None, serve.stop)
            try:
                await held
            except httpx.TransportError:
                pass

    asyncio.run(hold_then_stop())
    assert serve.proc.returncode == 0
    row = tool_row(db, tool_call_id)
    # serve's close gives in-flight requests a grace period, then cancels: the call was never decided.
    assert (row["decision"], row["decided_by"]) == (INTERRUPTED, "shutdown"), dict(row)


async def test_recovery_leaves_a_running_receivers_calls_alone(tmp_path: Path):
    """Only the calls of dead processes are interrupted; readers never touch anything."""
    db = tmp_path / "history.db"
    at = datetime.now(UTC)
    live = await Store.open(db, session=True)
    try:
        await live.record_tool_requests("vapi", "c-live", [ToolCall("tc-live", "book", {})], at)
        # A reader (history) and a second receiver open the same file while `live` runs.
        reader = await Store.open(db)
        await reader.close()
        second = await Store.open(db, session=True)
        assert second.session is not None and second.session.interrupted == ()
        await second.close()
        row = tool_row(db, "tc-live")
        assert row["decision"] is None and row["session_id"] == live.session.id
    finally:
        await live.close()
    row = tool_row(db, "tc-live")
    assert (row["decision"], row["decided_by"]) == (INTERRUPTED, "shutdown")


async def test_a_dead_sessions_calls_are_interrupted_and_a_retry_is_decided_again(tmp_path: Path):
    db = tmp_path / "history.db"
    at = datetime.now(UTC)
    store = await Store.open(db, session=True)
    await store.record_events(
        [ToolRequested(at=at, provider="vapi", call_id="c1", tool_call_id="tc1", name="book", arguments={"day": "mon"})]
    )
    # Simulate a crash: the session row stays open and belongs to a pid that no longer exists.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE sessions SET pid = ?, proc_start = NULL WHERE id = ?", (int(dead.stdout), store.session.id)
        )
    store._session_id = None  # the "dead" store must not close its session cleanly
    await store.close()

    recovered = await Store.open(db, session=True)
    try:
        assert recovered.session.interrupted == ("tc1",)
        assert await recovered.tool_outcome("tc1") is None, "an interrupted call is decided again on a retry"
        await recovered.record_tool_requests("vapi", "c1", [ToolCall("tc1", "book", {"day": "mon"})], at)
        row = tool_row(db, "tc1")
        assert row["decision"] is None and row["session_id"] == recovered.session.id
    finally:
        await recovered.close()
    with sqlite3.connect(db) as conn:
        ends = conn.execute("SELECT end_reason FROM sessions ORDER BY id").fetchall()
    assert ends == [("crashed",), ("closed",)]


# --- the TUI process -------------------------------------------------------------------------


def tui_command(tmp_path: Path, db: Path, port: int) -> str:
    env = serve_env(db, tmp_path / "home")
    env["TERM"] = "xterm-256color"
    exports = " ".join(
        f"{k}={shlex.quote(v)}"
        for k, v in env.items()
        if k.startswith(("HOME", "XDG_", "VOICE_CONSOLE_", "PYTHON", "TERM", "PATH"))
    )
    log = shlex.quote(str(tmp_path / "tui.stderr"))
    # --no-attach: the receiver in the TUI's own process is what this kills.
    console = f"{shlex.quote(sys.executable)} -m console --no-attach --port {port} --db {shlex.quote(str(db))}"
    return f"env {exports} {console} 2>{log}"


@pytest.mark.e2e
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_kill9_of_the_tui_loses_no_acknowledged_event(tmp_path: Path, templates: CallTemplates):
    import socket as socketlib

    db = tmp_path / "history.db"
    (tmp_path / "home" / "run").mkdir(parents=True, mode=0o700)
    # The TUI reads the operator's policy file from its config dir (XDG_CONFIG_HOME in serve_env).
    policy = tmp_path / "home" / "config" / "voice-console" / "policy.toml"
    policy.parent.mkdir(parents=True)
    policy.write_text(CRASH_POLICY)
    with socketlib.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    socket_name = f"vc-crash-{uuid.uuid4().hex[:8]}"

    def tmux(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["tmux", "-L", socket_name, *args], capture_output=True, text=True, timeout=10)

    tmux("new-session", "-d", "-s", "tui", "-x", "160", "-y", "48", tui_command(tmp_path, db, port))
    url = f"http://127.0.0.1:{port}"
    tool_call_id = f"call_held_{uuid.uuid4().hex[:12]}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (
                tmux("capture-pane", "-p", "-t", "tui").stdout + (tmp_path / "tui.stderr").read_text()
            )
            time.sleep(0.2)
        pid = int(tmux("display-message", "-p", "-t", "tui", "#{pane_pid}").stdout.strip())

        async def run() -> LoadStats:
            stats = LoadStats()
            stop = asyncio.Event()
            async with httpx.AsyncClient(base_url=url, timeout=300) as client:
                held = asyncio.create_task(
                    client.post(
                        "/webhook/vapi",
                        content=held_tool_call("tui-call", tool_call_id),
                        headers={"content-type": "application/json", "x-vapi-secret": SECRET},
                    )
                )
                load = asyncio.create_task(
                    drive(
                        url, templates.stream(f"tui-{uuid.uuid4().hex[:6]}"), stats, rate=300, connections=8, stop=stop
                    )
                )
                await asyncio.get_running_loop().run_in_executor(None, wait_for_tool_row, db, tool_call_id)
                await asyncio.sleep(random.uniform(1.0, 2.5))
                os.kill(pid, signal.SIGKILL)
                stop.set()
                await load
                with pytest.raises(httpx.TransportError):
                    await held
            return stats

        stats = asyncio.run(run())
    finally:
        tmux("kill-server")
    assert stats.acked > 50
    missing = stats.acked_hashes - stored_hashes(db)
    assert not missing, f"{len(missing)} of {stats.acked} events acknowledged by the TUI are not in the history"
    assert tool_row(db, tool_call_id)["decision"] is None

    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:  # reaped once tmux is gone
        time.sleep(0.1)
    restarted = ServeProcess(db, CRASH_POLICY)
    assert restarted.stop() == 0
    shown = history_show(db, "tui-call")
    assert [(t["decision"], t["by"]) for t in shown["tool_calls"]] == [(INTERRUPTED, "crash")]


async def test_a_version_1_history_is_migrated_and_its_pending_calls_recovered(tmp_path: Path):
    """Migrations stay versioned: a file from before sessions existed gets step 2, and a tool
    call it left undecided (no process owns it any more) is interrupted at the first receiver start."""
    from console.store.db import MIGRATIONS

    db = tmp_path / "history.db"
    with sqlite3.connect(db) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version=1")
        conn.execute(
            "INSERT INTO tool_calls (tool_call_id, call_id, provider, name, arguments, requested_at)"
            " VALUES ('tc-old', 'c-old', 'vapi', 'book', '{}', 1764000000.0)"
        )
    reader = await Store.open(db)  # a reader migrates but recovers nothing
    await reader.close()
    assert tool_row(db, "tc-old")["decision"] is None
    store = await Store.open(db, session=True)
    try:
        assert store.session.interrupted == ("tc-old",)
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    row = tool_row(db, "tc-old")
    assert (row["decision"], row["decided_by"]) == (INTERRUPTED, "crash")
