"""The reliability runner: the long versions of every "prove it under fire" check,
one JSON summary of all figures on stdout.

    python bench/reliability.py                      # 30-minute soak at 500 msg/s, 20 kill -9 trials, long fuzz
    python bench/reliability.py --soak-seconds 120   # a shorter soak, everything else the same

What runs:
- crash trials: the real `serve` under 32 keep-alive clients posting unique,
  signed Vapi messages, with one tool call held in the gate, is killed with
  SIGKILL at a random moment; every body that got a 2xx must be in the history
  (by sha256), and after a restart the held call must read `interrupted` by
  `crash`, never pending;
- the long test modes, through pytest with VOICE_CONSOLE_LONG=1: HTTP and parser
  fuzzing, slow clients; plus the TUI kill -9 test and the secret-leak scan;
- the soak (bench/soak.py): RSS, database size, ack latency p50/p99 per window,
  sent/acked/stored/lost.

Progress goes to stderr; the exit code is 0 only if every check held.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from bench.soak import (  # noqa: E402
    SECRET,
    CallTemplates,
    LoadStats,
    ServeProcess,
    capture_call_messages,
    drive,
    run_soak,
    stored_hashes,
)

HELD_TOOL = "transfer_funds"
# Ordinary tools answer at once; the one under test waits for an operator far longer than any trial.
CRASH_POLICY = (
    '[tools.default]\naction = "override"\nresult = \'{"ok": true}\'\n\n'
    f'[tools.{HELD_TOOL}]\naction = "hold"\ntimeout_seconds = 280\non_timeout = "reject"\n'
)

# (name, pytest arguments, extra environment): the long modes of the test suite.
LONG_TESTS: list[tuple[str, list[str], dict[str, str]]] = [
    ("fuzz_http", ["tests/test_fuzz_http.py"], {"VOICE_CONSOLE_LONG": "1"}),
    ("fuzz_parsers", ["tests/test_fuzz_parsers.py"], {"VOICE_CONSOLE_LONG": "1"}),
    ("slow_clients", ["tests/test_slow_clients.py"], {"VOICE_CONSOLE_LONG": "1"}),
    ("tui_kill9", ["tests/test_crash_safety.py", "-k", "tui"], {}),
    ("secret_leaks", ["tests/test_secret_leaks.py"], {}),
]


# --------------------------------------------------------------- one crash trial


def held_tool_call(call_id: str, tool_call_id: str) -> bytes:
    """A signed-to-be Vapi tool-calls message for the held tool, with a long platform deadline."""
    call = {
        "id": tool_call_id,
        "type": "function",
        "function": {"name": HELD_TOOL, "arguments": json.dumps({"amount": 120, "to": "ACME"})},
    }
    message = {
        "type": "tool-calls",
        "timestamp": int(time.time() * 1000),
        "call": {"id": call_id},
        "toolCallList": [call],
        "toolWithToolCallList": [
            {
                "type": "function",
                "function": {"name": HELD_TOOL},
                "server": {"url": "http://127.0.0.1:9/tools", "timeoutSeconds": 300},
                "toolCall": call,
            }
        ],
    }
    return json.dumps({"message": message}).encode()


def tool_row(db: Path, tool_call_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        conn.row_factory = sqlite3.Row
        row = conn.execute("SELECT * FROM tool_calls WHERE tool_call_id = ?", (tool_call_id,)).fetchone()
    return dict(row) if row is not None else None


def wait_for_tool_row(db: Path, tool_call_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            row = tool_row(db, tool_call_id)
            if row is not None:
                return row
        time.sleep(0.05)
    raise RuntimeError(f"tool call {tool_call_id} never reached the history")


async def _load_then_kill(
    serve: ServeProcess,
    templates: CallTemplates,
    kill_after: float,
    run_id: str,
    held_body: bytes,
    tool_call_id: str,
    connections: int,
) -> tuple[LoadStats, bool, bool]:
    """(load stats, whether the held call was pending in the history, whether its request got an answer)."""
    import httpx

    stats = LoadStats()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=serve.url, timeout=300) as client:
        held = asyncio.create_task(
            client.post(
                "/webhook/vapi",
                content=held_body,
                headers={"content-type": "application/json", "x-vapi-secret": SECRET},
            )
        )
        load = asyncio.create_task(
            drive(serve.url, templates.stream(run_id), stats, rate=None, connections=connections, stop=stop)
        )
        started = loop.time()
        row = await loop.run_in_executor(None, wait_for_tool_row, serve.db, tool_call_id)
        await asyncio.sleep(max(0.0, kill_after - (loop.time() - started)))
        await loop.run_in_executor(None, serve.kill9)
        stop.set()
        await load
        try:
            await held
            answered = True
        except httpx.TransportError:
            answered = False
    return stats, row["decision"] is None, answered


def crash_trial(
    workdir: Path, templates: CallTemplates, *, kill_after: float | None = None, connections: int = 32
) -> dict[str, Any]:
    """kill -9 `serve` under load, restart it on the same database, and report what survived."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "history.db"
    kill_after = kill_after if kill_after is not None else random.uniform(1.0, 3.0)
    call_id, tool_call_id = f"crash-call-{uuid.uuid4().hex[:6]}", f"call_held_{uuid.uuid4().hex[:12]}"
    serve = ServeProcess(db, CRASH_POLICY)
    try:
        stats, pending_in_history, held_answered = asyncio.run(
            _load_then_kill(
                serve,
                templates,
                kill_after,
                f"crash-{uuid.uuid4().hex[:8]}",
                held_tool_call(call_id, tool_call_id),
                tool_call_id,
                connections,
            )
        )
    finally:
        if serve.proc.poll() is None:
            serve.kill9()
    killed_by = serve.proc.returncode
    before = tool_row(db, tool_call_id) or {}
    stored = stored_hashes(db)
    missing = stats.acked_hashes - stored

    restarted = ServeProcess(db, CRASH_POLICY)  # recovery happens at start
    after = tool_row(db, tool_call_id) or {}
    restart_code = restarted.stop()
    still_stored = stats.acked_hashes <= stored_hashes(db)
    return {
        "kill_after_s": round(kill_after, 2),
        "killed_by_signal": -killed_by if killed_by is not None and killed_by < 0 else None,
        "sent": stats.sent,
        "acked": stats.acked,
        "stored": len(stored),
        "lost": len(missing),
        "lost_sample": sorted(missing)[:3],
        "acked_still_stored_after_restart": still_stored,
        "held_call": {
            "call_id": call_id,
            "tool_call_id": tool_call_id,
            "pending_before_kill": pending_in_history,
            "answered_before_kill": held_answered,
            "decision_at_kill": before.get("decision"),
            "after_restart": [after.get("decision"), after.get("decided_by")],
        },
        "restart_exit_code": restart_code,
        "db": str(db),
    }


def crash_trial_ok(trial: dict[str, Any]) -> bool:
    held = trial["held_call"]
    return (
        trial["killed_by_signal"] == signal.SIGKILL
        and trial["lost"] == 0
        and trial["acked"] > 0
        and trial["acked_still_stored_after_restart"]
        and held["pending_before_kill"]
        and held["after_restart"] == ["interrupted", "crash"]
        and trial["restart_exit_code"] == 0
    )


# ------------------------------------------------------------------- long tests


def run_pytest(name: str, args: list[str], env_extra: dict[str, str], timeout: float) -> dict[str, Any]:
    if not (ROOT / args[0]).exists():
        return {"ran": False, "passed": None, "note": f"{args[0]} does not exist"}
    env = {**os.environ, **env_extra}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {
            "ran": True,
            "passed": False,
            "seconds": round(time.monotonic() - started, 1),
            "note": f"timed out after {timeout:.0f} s",
        }
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary = next((line for line in reversed(lines) if re.search(r"\d+ (passed|failed|error)", line)), "")
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped)", summary)}
    return {
        "ran": True,
        "passed": done.returncode == 0,
        "seconds": round(time.monotonic() - started, 1),
        "counts": counts,
        "env": env_extra,
        "summary": summary.strip("= "),
    }


# ------------------------------------------------------------------------ main


def sqlite_version() -> str:
    return sqlite3.sqlite_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak-seconds", type=float, default=1800.0, help="soak length (default 1800)")
    parser.add_argument("--soak-rate", type=float, default=500.0, help="soak messages per second (default 500)")
    parser.add_argument("--soak-sample", type=float, default=10.0, help="seconds per soak window (default 10)")
    parser.add_argument("--crash-trials", type=int, default=20, help="kill -9 trials (default 20)")
    parser.add_argument("--no-tests", action="store_true", help="skip the long pytest modes")
    parser.add_argument("--test-timeout", type=float, default=1800.0, help="per test file, seconds")
    parser.add_argument("--keep", type=Path, help="keep databases and logs in this directory")
    parser.add_argument("--out", type=Path, help="also write the JSON summary to this file")
    args = parser.parse_args(argv)

    def note(text: str) -> None:
        print(f"reliability: {text}", file=sys.stderr, flush=True)

    workdir = Path(args.keep or tempfile.mkdtemp(prefix="vc-reliability-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    summary: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite_version(),
            "platform": platform.platform(),
        },
    }

    note(f"{args.crash_trials} kill -9 trials")
    templates = CallTemplates.from_messages(capture_call_messages("booking"))
    trials = []
    for n in range(args.crash_trials):
        trial = crash_trial(workdir / f"crash-{n:02d}", templates)
        trial["ok"] = crash_trial_ok(trial)
        trials.append(trial)
        note(
            f"crash trial {n + 1}: acked {trial['acked']}, lost {trial['lost']}, "
            f"held call after restart {trial['held_call']['after_restart']}"
        )
        if not args.keep:
            for path in (workdir / f"crash-{n:02d}").glob("history.db*"):
                path.unlink()
    summary["crash"] = {
        "trials": len(trials),
        "trials_ok": sum(t["ok"] for t in trials),
        "acked_total": sum(t["acked"] for t in trials),
        "lost_total": sum(t["lost"] for t in trials),
        "held_calls_interrupted": sum(t["held_call"]["after_restart"] == ["interrupted", "crash"] for t in trials),
        "per_trial": [{k: v for k, v in t.items() if k != "db"} for t in trials],
    }

    tests: dict[str, Any] = {}
    if not args.no_tests:
        for name, pytest_args, env_extra in LONG_TESTS:
            note(f"pytest {' '.join(pytest_args)} {' '.join(f'{k}={v}' for k, v in env_extra.items())}")
            tests[name] = run_pytest(name, pytest_args, env_extra, args.test_timeout)
            note(f"{name}: {tests[name].get('summary') or tests[name].get('note')}")
    summary["tests"] = tests

    note(f"soak: {args.soak_seconds:g} s at {args.soak_rate:g} messages/s")

    def progress(point: dict[str, Any]) -> None:
        note("soak " + json.dumps(point))

    soak = run_soak(
        args.soak_seconds,
        args.soak_rate,
        args.soak_sample,
        workdir=workdir / "soak" if args.keep else None,
        progress=progress,
    )
    summary["soak"] = soak
    summary["total_seconds"] = round(time.monotonic() - started, 1)
    summary["ok"] = (
        summary["crash"]["trials_ok"] == len(trials)
        and all(t["passed"] for t in tests.values() if t["ran"])
        and soak["lost"] == 0
        and soak["serve_exit_code"] == 0
        and soak["non_2xx"] == 0
        and soak["no_answer"] == 0
    )
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
