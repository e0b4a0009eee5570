"""Start-up time of the commands people type most: `--help`, `decide --list`, `history calls`.

Each command runs N times in a fresh process (min and median wall time, output discarded),
against an isolated home (no config file, no running `serve`) and a small history database
made here. DESIGN.md's target: under 0.3 s each.

    python bench/startup.py [--runs 15] [--before HEAD]

`--before REF` also times the tree of a git commit, exported with `git archive` into a
temporary directory and put first on PYTHONPATH (the work tree and git state are untouched).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_S = 0.3


def commands(db: Path) -> dict[str, tuple[list[str], int]]:
    """Each command with the exit code it must give (decide finds no `serve`: 1)."""
    return {
        "voice-console --help": (["--help"], 0),
        "voice-console decide --list": (["decide", "--list"], 1),
        "voice-console history calls": (["history", "calls", "--db", str(db)], 0),
    }


async def make_history(path: Path, calls: int = 20) -> None:
    """A small real history: a few calls with transcripts, written through the store."""
    from console.core.events import CallEnded, CallStatus, TranscriptFinal
    from console.store import DeliveryRecord, Store

    start = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    async with await Store.open(path) as store:
        for n in range(calls):
            call_id, at = f"call-{n:03d}", start + timedelta(minutes=n)
            events = [
                CallStatus(at=at, provider="vapi", call_id=call_id, status="in-progress"),
                TranscriptFinal(
                    at=at + timedelta(seconds=2),
                    provider="vapi",
                    call_id=call_id,
                    role="user",
                    text="I would like to book a table for two.",
                ),
                CallEnded(
                    at=at + timedelta(seconds=30),
                    provider="vapi",
                    call_id=call_id,
                    reason="customer-ended-call",
                    summary="Booked.",
                    cost=0.05,
                    duration_s=30.0,
                ),
            ]
            record = DeliveryRecord(
                "vapi", "vapi", "POST", "/webhook/vapi", "end-of-call-report", call_id, at, b"{}", [], "secret"
            )
            await store.record_delivery(record, events)


def time_runs(argv: list[str], expected: int, env: dict[str, str], cwd: Path, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "console", *argv],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        times.append(time.perf_counter() - started)
        if done.returncode != expected:
            raise SystemExit(f"`voice-console {' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()}")
    return min(times), statistics.median(times)


def isolated_env(home: Path, pythonpath: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOICE_CONSOLE_")}
    for name in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        env[name] = str(home / name.lower())
    env["PYTHONPATH"] = str(pythonpath)
    return env


def export_tree(ref: str, into: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="fresh processes per command (default 15)")
    parser.add_argument("--before", metavar="REF", help="also time this git commit's tree (e.g. HEAD)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vc-startup-") as tmp:
        root = Path(tmp)
        db = root / "history.db"
        asyncio.run(make_history(db))
        trees = {"now": REPO}
        if args.before:
            before = root / "before"
            before.mkdir()
            export_tree(args.before, before)
            trees = {f"before ({args.before})": before, "now": REPO}
        figures = {}
        for label, tree in trees.items():
            (root / label).mkdir(exist_ok=True)
            env = isolated_env(root / label, tree)
            for name, (argv, expected) in commands(db).items():
                # Run from the isolated home: `-m` would otherwise find the package in the cwd first.
                figures[label, name] = time_runs(argv, expected, env, root / label, args.runs)

    print(f"start-up, {args.runs} fresh processes each: min / median (target < {TARGET_S} s)")
    header = "".join(f"  {label:>24}" for label in trees)
    print(f"{'command':<30}{header}")
    for name in commands(Path("db")):
        cells = "".join(f"  {figures[label, name][0]:>10.3f} / {figures[label, name][1]:.3f} s" for label in trees)
        print(f"{name:<30}{cells}")
    slow = [name for name in commands(Path("db")) if figures["now", name][1] >= TARGET_S]
    if slow:
        print(f"over the target (median): {', '.join(slow)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
