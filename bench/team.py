"""Team mode's cost and speed: ingestion with and without `--team`, and how fast the team's
consoles hear of an event, side by side in one run on a real `redis-server`.

1. Ingestion: `bench/ingest.py`'s load (wrk, 64 keep-alive connections, unique signed Vapi
   messages) on `serve` alone and on `serve --team`, one after the other; every acknowledged
   delivery is checked in each history, and every event of the team run in the team stream.
   Target: team mode costs < 10 %.
2. Event to console: `serve --team` under 100 concurrent simulated calls (bench/tui_load.py's
   driver, partial transcripts on: ~1,000 events/s at --speed 6) with N consoles on the team
   stream: `voice-console watch --team` processes (each reads, decodes and prints every event;
   its lines are read here), or with --consoles-kind reader stream readers in this process. The
   latency of an event is from the platform's message (its timestamp, this machine's clock) to
   a console having it. Target p99 < 100 ms on loopback.

    apt-get install -y wrk redis-server; pip install -e '.[bench]'
    python bench/team.py [--duration 10] [--body small|realistic] [--consoles 4] [--calls 100] [--speed 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import SECRET, bench_console, free_port, wait_for_port  # noqa: E402
from bench.tui_load import Samples, start_driver, summary, tell_driver  # noqa: E402


class Redis:
    """A `redis-server` of the benchmark's own (appendonly off: ingestion's cost, not the disk's)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()

    def stream_events(self) -> tuple[int, int]:
        """(entries, events) in the team stream: an entry holds a run of events."""
        import redis

        client, entries, events, start = redis.Redis(port=self.port), 0, 0, "-"
        while batch := client.xrange("vc:{default}:events", min=start, count=1000):
            for _stream_id, fields in batch:
                entries += 1
                events += len(json.loads(fields[b"e"])) if b"e" in fields else 0
            start = "(" + batch[-1][0].decode()
        return entries, events

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def ingestion(args: argparse.Namespace, workdir: Path, redis_url: str, redis: Redis) -> dict:
    """`args.rounds` pairs of runs, alone and with --team, the order swapped every round (this
    machine's speed drifts by more than the difference): each pair's cost, and their median."""
    os.environ["BENCH_BODY"] = args.body
    load = SimpleNamespace(
        duration=args.duration,
        connections=args.connections,
        threads=1,
        synchronous="FULL",
        commit_interval_ms=2.0,
    )
    pairs = []
    for round_ in range(args.rounds):
        redis.flush()
        runs = {}
        for which in ("alone", "team") if round_ % 2 == 0 else ("team", "alone"):
            extra = ("--team", redis_url) if which == "team" else ()
            runs[which] = bench_console(load, workdir, extra, name=f"{which}-{round_}")
        entries, published = redis.stream_events()
        alone, team = runs["alone"], runs["team"]
        pairs.append(
            {
                "alone": alone,
                "team": team,
                "team_cost": round(1 - team["requests_per_s"] / alone["requests_per_s"], 3),
                "team_cpu_cost": round(team["receiver_cpu_ms_per_1k"] / alone["receiver_cpu_ms_per_1k"] - 1, 3),
                "team_events_stored": team["events_stored"],
                "team_stream_events": published,
                "team_stream_entries": entries,
            }
        )
    costs = sorted(pair["team_cost"] for pair in pairs)
    cpu_costs = sorted(pair["team_cpu_cost"] for pair in pairs)
    return {"pairs": pairs, "median_cost": costs[len(costs) // 2], "median_cpu_cost": cpu_costs[len(cpu_costs) // 2]}


async def event_to_console(args: argparse.Namespace, workdir: Path, redis_url: str) -> dict:
    from console.config import TeamSettings
    from console.services.team import TeamReader

    port = free_port()
    env = {
        **os.environ,
        "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": SECRET,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    }
    policy = workdir / "policy.toml"
    policy.write_text('[tools.default]\naction = "override"\nresult = \'{"ok": true}\'\n')
    driver_args = SimpleNamespace(
        calls=args.calls,
        duration=args.latency_duration,
        speed=args.speed,
        ramp=5.0,
        scenarios="booking,barge-in-storm,slow-tool",
    )
    driver = await start_driver(driver_args, SECRET)  # type: ignore[arg-type]
    serve = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "console",
        "serve",
        "--port",
        str(port),
        "--db",
        str(workdir / "latency.db"),
        "--team",
        redis_url,
        "--policy",
        str(policy),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    wait_for_port(port)
    settings = TeamSettings(redis_url=redis_url)
    latencies = [Samples() for _ in range(args.consoles)]
    counts = [0] * args.consoles
    stop = asyncio.Event()

    def heard(index: int, event: dict) -> None:
        if at := event.get("at"):
            latencies[index].add((time.time() - datetime.fromisoformat(at).timestamp()) * 1000)
            counts[index] += 1

    async def reader_console(index: int) -> None:
        reader = TeamReader(settings)
        await reader.pin()
        async for entry in reader.entries():
            if entry.gate is None:
                heard(index, entry.event)
            if stop.is_set():
                return

    watchers: list[asyncio.subprocess.Process] = []

    async def watch_console(index: int) -> None:
        """`voice-console watch --team` in a process of its own: a console's reading and decoding,
        its output read here line by line (what is printed when it has the event)."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "console",
            "watch",
            "--team",
            redis_url,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=1 << 20,
        )
        watchers.append(proc)
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            event = json.loads(line)
            if "gate" not in event and "call" not in event and "delivery" not in event:
                heard(index, event)

    console = watch_console if args.consoles_kind == "watch" else reader_console
    consoles = [asyncio.create_task(console(i)) for i in range(args.consoles)]
    await asyncio.sleep(0.5 if args.consoles_kind == "reader" else 2.0)  # the watchers start
    started = time.perf_counter()
    await tell_driver(driver, f"http://127.0.0.1:{port}/webhook/vapi")
    out, _ = await driver.communicate()
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1.0)  # the last events reach the consoles
    stop.set()
    await asyncio.sleep(0.3)
    for watcher in watchers:
        watcher.terminate()
    for task in consoles:
        task.cancel()
    await asyncio.gather(*consoles, return_exceptions=True)
    for watcher in watchers:
        await watcher.wait()
    serve.send_signal(signal.SIGTERM)
    await serve.wait()
    merged = Samples()
    for samples in latencies:  # the same buckets: merged by their counts
        merged.counts.update(samples.counts)
        merged.n += samples.n
        merged.total += samples.total
        merged.max = max((m for m in (merged.max, samples.max) if m == m), default=float("nan"))
    load = json.loads(out.decode() or "{}")
    return {
        "consoles": args.consoles,
        "consoles_kind": args.consoles_kind,
        "calls": args.calls,
        "duration_s": round(elapsed, 1),
        "messages": load.get("messages"),
        "events_per_console": counts,
        "events_per_s": round(counts[0] / elapsed) if counts else 0,
        "message_to_console_ms": summary(merged),
        "per_console_p99_ms": [round(summary(samples)["p99"], 1) for samples in latencies],
        "ack_ms": load.get("latency_ms"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of each ingestion run (default 10)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--body", choices=["small", "realistic"], default="small")
    parser.add_argument("--rounds", type=int, default=3, help="pairs of ingestion runs, alone and --team (default 3)")
    parser.add_argument("--consoles", type=int, default=4, help="consoles reading the team stream (default 4)")
    parser.add_argument(
        "--consoles-kind",
        choices=["watch", "reader"],
        default="watch",
        help="watch: `voice-console watch --team` processes (default); reader: stream readers in this process",
    )
    parser.add_argument("--calls", type=int, default=100, help="concurrent simulated calls (default 100)")
    parser.add_argument("--speed", type=float, default=6.0, help="the calls' speed (default 6: ~1,000 events/s)")
    parser.add_argument("--latency-duration", type=float, default=30.0, help="seconds of the latency run")
    parser.add_argument("--skip-ingestion", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None and not (tool == "wrk" and args.skip_ingestion):
            print(f"this benchmark needs {tool}: apt-get install -y {tool}", file=sys.stderr)
            return 1
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        redis = Redis(workdir)
        try:
            result: dict = {}
            if not args.skip_ingestion:
                result["ingestion"] = ingestion(args, workdir, redis.url, redis)
            result["event_to_console"] = asyncio.run(event_to_console(args, workdir, redis.url))
        finally:
            redis.stop()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    if "ingestion" in result:
        print(f"ingestion, {args.body} bodies, {args.connections} connections, {args.duration} s a run:")
        for number, pair in enumerate(result["ingestion"]["pairs"], 1):
            alone, team = pair["alone"], pair["team"]
            print(
                f"  pair {number}: alone {alone['requests_per_s']:>7,.0f}/s (p99 {alone['p99_ms']:.1f} ms), "
                f"--team {team['requests_per_s']:>7,.0f}/s (p99 {team['p99_ms']:.1f} ms): cost "
                f"{pair['team_cost'] * 100:5.1f} %; receiver CPU per 1,000 {alone['receiver_cpu_ms_per_1k']:.0f} / "
                f"{team['receiver_cpu_ms_per_1k']:.0f} ms ({pair['team_cpu_cost'] * 100:+.1f} %), writer "
                f"{alone['writer_cpu_ms_per_1k']:.0f} / {team['writer_cpu_ms_per_1k']:.0f} ms; lost {alone['lost']} / "
                f"{team['lost']}; events stored {pair['team_events_stored']}, in the team stream "
                f"{pair['team_stream_events']} ({pair['team_stream_entries']} entries)"
            )
        ing = result["ingestion"]
        print(
            f"  team mode costs {ing['median_cost'] * 100:.1f} % of events/s (median; target < 10 %), "
            f"{ing['median_cpu_cost'] * 100:+.1f} % of the receiver's CPU per delivery (median)"
        )
    lat = result["event_to_console"]
    kinds = {"watch": "`watch --team` processes", "reader": "stream readers"}
    stats = lat["message_to_console_ms"]
    print(
        f"event to console: {lat['consoles']} consoles ({kinds[lat['consoles_kind']]}) "
        f"on the team stream, {lat['calls']} concurrent calls, "
        f"{lat['duration_s']} s, ~{lat['events_per_s']} events/s a console (each got {lat['events_per_console']})"
    )
    print(
        f"  platform's message to console p50 {stats['p50']:.1f} / p99 {stats['p99']:.1f} / max {stats['max']:.1f} ms"
        f" (target p99 < 100 ms); p99 per console {lat['per_console_p99_ms']}"
    )
    pairs = result.get("ingestion", {}).get("pairs", [])
    ing_ok = all(
        pair["alone"]["lost"] == pair["team"]["lost"] == 0 and pair["team_stream_events"] == pair["team_events_stored"]
        for pair in pairs
    )
    return 0 if ing_ok else 1


if __name__ == "__main__":
    sys.exit(main())
