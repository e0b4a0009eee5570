"""Durable ingestion benchmark: voice-console vs a minimal uvicorn app, same run.

Both servers get the same load from `wrk` (64 keep-alive connections on
loopback, unique realistic Vapi messages). uvicorn only acknowledges;
voice-console verifies, normalizes and commits every event to SQLite before
its 200. Afterwards the database is opened and every acknowledged event is
counted, so "durable" is checked, not assumed.

    apt-get install -y wrk; pip install -e '.[bench]'
    python bench/ingest.py [--duration 10] [--connections 64] [--synchronous FULL|NORMAL] [--body small|realistic]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-0123456789"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on port {port} did not come up")


_runs = iter(range(1, 1_000_000))


def run_wrk(port: int, duration: float, connections: int, threads: int) -> dict:
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        str(ROOT / "bench" / "vapi_events.lua"),
        f"http://127.0.0.1:{port}/webhook/vapi",
    ]
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        env={**os.environ, "BENCH_SECRET": SECRET, "BENCH_RUN": str(next(_runs))},
        check=True,
    ).stdout
    requests = int(re.search(r"REQUESTS (\d+)", out).group(1))
    errors = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", out.split("ERRORS", 1)[1].splitlines()[0])}
    p50, p99 = (int(x) for x in re.search(r"LATENCY_US p50=(\d+) p99=(\d+)", out).groups())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    acked = requests - errors["status"] - errors["timeout"]
    return {
        "requests_per_s": rps,
        "requests": requests,
        "acked": acked,
        "errors": errors,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
    }


def bench_uvicorn(args, app: str = "bench.minimal_app:app", env: dict[str, str] | None = None) -> dict:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--http",
            "h11",
            "--loop",
            "asyncio",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_for_port(port)
        run_wrk(port, 2, args.connections, args.threads)  # warm-up
        return run_wrk(port, args.duration, args.connections, args.threads)
    finally:
        proc.terminate()
        proc.wait(10)


def bench_uvicorn_durable(args, workdir: Path) -> dict:
    """uvicorn committing each body on its own (bench/minimal_durable_app.py): context, not the target."""
    db = workdir / "uvicorn-durable.db"
    result = bench_uvicorn(args, "bench.minimal_durable_app:app", {"BENCH_DURABLE_DB": str(db)})
    with sqlite3.connect(db) as conn:
        result["events_stored"] = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    return result


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system, Linux's /proc): NaN once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def bench_console(args, workdir: Path, serve_args: tuple[str, ...] = (), name: str = "bench") -> dict:
    """`serve` (with `serve_args`) under the same load; every acknowledged delivery checked in its history."""
    port = free_port()
    db = workdir / f"{name}.db"
    env = {
        **os.environ,
        "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": SECRET,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "VOICE_CONSOLE_CONFIG": str(workdir / "config.toml"),
    }
    (workdir / "config.toml").write_text(
        f'[storage]\nsynchronous = "{args.synchronous}"\ncommit_interval_ms = {args.commit_interval_ms}\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "--port", str(port), "--db", str(db), *serve_args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port)
        warm = run_wrk(port, 2, args.connections, args.threads)
        # CPU per delivery is steadier than events/s on a shared machine: what the receiver's
        # process and its history writer spent on the measured run, per 1,000 acknowledged.
        processes = {"receiver": proc.pid, "writer": next(iter(child_pids(proc.pid)), -1)}
        cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
        result = run_wrk(port, args.duration, args.connections, args.threads)
        for name, pid in processes.items():
            spent = cpu_seconds(pid) - cpu_before[name]
            result[f"{name}_cpu_ms_per_1k"] = round(spent * 1e6 / max(result["acked"], 1), 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT count(*) FROM deliveries").fetchone()[0]
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    acked_total = warm["acked"] + result["acked"]
    result.update(
        {
            "exit_code": code,
            "acked_total": acked_total,
            "deliveries_stored": stored,
            "events_stored": events,
            "lost": max(0, acked_total - stored),
            "synchronous": args.synchronous,
            "db_bytes": db.stat().st_size,
        }
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="FULL")  # the product default
    parser.add_argument("--commit-interval-ms", type=float, default=2.0)
    parser.add_argument(
        "--body",
        choices=["small", "realistic"],
        default="small",
        help="small: 150-250 byte messages; realistic: a 1.7 KB transcript message with its call object",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()
    os.environ["BENCH_BODY"] = args.body  # for wrk's script (bench/vapi_events.lua), every server alike
    if shutil.which("wrk") is None:
        print("this benchmark needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        baseline = bench_uvicorn(args)
        naive = bench_uvicorn_durable(args, Path(tmp))
        ours = bench_console(args, Path(tmp))
    summary = {
        "connections": args.connections,
        "duration_s": args.duration,
        "body": args.body,
        "uvicorn_ack_only": baseline,
        "uvicorn_commit_per_event": naive,
        "voice_console_durable": ours,
        "ratio": round(ours["requests_per_s"] / baseline["requests_per_s"], 2),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    columns = [("uvicorn (ack only)", baseline), ("uvicorn (commit each)", naive), ("voice-console (durable)", ours)]
    print(f"{'':24}" + "".join(f"{name:>25}" for name, _ in columns))
    print(f"{'events/s':24}" + "".join(f"{r['requests_per_s']:>25,.0f}" for _, r in columns))
    print(f"{'ack latency p50 (ms)':24}" + "".join(f"{r['p50_ms']:>25.2f}" for _, r in columns))
    print(f"{'ack latency p99 (ms)':24}" + "".join(f"{r['p99_ms']:>25.2f}" for _, r in columns))
    print(
        f"{'non-2xx / timeouts':24}"
        + "".join(f"{str(r['errors']['status']) + ' / ' + str(r['errors']['timeout']):>25}" for _, r in columns)
    )
    print(
        f"voice-console: {ours['acked_total']} acknowledged, {ours['deliveries_stored']} committed, "
        f"lost {ours['lost']}; "
        f"synchronous={ours['synchronous']}; {args.body} bodies; serve exit {ours['exit_code']}; "
        f"ratio {summary['ratio']}x"
    )
    return 0 if ours["lost"] == 0 and ours["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
