"""Soak: a long, paced run of realistic Vapi traffic into a real `voice-console serve`.

The message shapes come from the simulator itself: one call of a scenario is
played through the real `CallEngine` into an in-memory capture, and every
captured server message becomes a template. The load generator then replays
those templates as many interleaved calls (fresh call and tool-call ids,
unique timestamps, so nothing is de-duplicated), paced at --rate messages/s
over keep-alive connections, signed with X-Vapi-Secret.

Every window (--sample seconds) it samples serve's RSS (/proc/<pid>/status),
the database + WAL size, and the acknowledgement latency (p50/p99, measured
from each message's *scheduled* send time, so a stall is not hidden by the
pacer waiting on it). At the end serve is stopped and the database is read:
every acknowledged body must be there (matched by the sha256 the store keeps).

    python bench/soak.py [--duration 1800] [--rate 500] [--sample 10] [--json-only]

Prints one JSON summary on stdout (per-window series included).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: `python bench/soak.py`
    sys.path.insert(0, str(ROOT))

SECRET = "soak-bench-webhook-secret-5b1e"
# Tool calls in the soak are answered at once by rule, so they never wait on a human.
SOAK_POLICY = '[tools.default]\naction = "override"\nresult = \'{"ok": true}\'\n'


# --------------------------------------------------------------- message shapes


def capture_call_messages(scenario_name: str = "booking") -> list[dict[str, Any]]:
    """Play one simulated call through the real simulator into memory; its server messages in order."""
    import httpx

    from console.simulator.scenarios import load_scenario
    from console.simulator.vapi import (
        PHONE_NUMBER_ID,
        RECEPTIONIST_ID,
        CallEngine,
        SimulatedPlatform,
        Webhook,
        new_call,
    )

    captured: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        message = json.loads(request.content)["message"]
        captured.append(message)
        if message["type"] == "tool-calls":
            results = [
                {"toolCallId": c["id"], "name": c["function"]["name"], "result": '{"ok":true}'}
                for c in message["toolCallList"]
            ]
            return httpx.Response(200, json={"results": results})
        return httpx.Response(200, json={})

    async def play() -> None:
        scenario = load_scenario(scenario_name)
        target = "http://capture.invalid/webhook/vapi"
        seed = SimulatedPlatform(target, scenario=scenario)  # not started: only its assistant and number
        call = new_call(
            assistant=seed.assistants[RECEPTIONIST_ID],
            scenario=scenario,
            phone_number=seed.phone_numbers[PHONE_NUMBER_ID],
            webhook_url=target,
        )
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
            await CallEngine(call, Webhook(client, secret=SECRET), speed=1000.0).run()

    asyncio.run(play())
    if not captured:
        raise RuntimeError(f"the simulator sent nothing for scenario {scenario_name!r}")
    return captured


_TIMESTAMP = re.compile(rb'"timestamp":\d+')


@dataclass
class CallTemplates:
    """Captured messages as byte templates with the call id and tool-call ids as placeholders."""

    bodies: list[bytes]
    types: list[str]

    @classmethod
    def from_messages(cls, messages: list[dict[str, Any]]) -> CallTemplates:
        call_id = str(messages[0]["call"]["id"])
        tool_ids = {c["id"] for m in messages for c in m.get("toolCallList", [])}
        bodies = []
        for message in messages:
            text = json.dumps({"message": message}, separators=(",", ":"), ensure_ascii=False)
            text = text.replace(call_id, "@CALL@")
            for n, tool_id in enumerate(sorted(tool_ids)):
                text = text.replace(tool_id, f"@CALL@-tool-{n}")
            data = _TIMESTAMP.sub(b'"timestamp":@TS@', text.encode(), count=1)
            bodies.append(data)
        return cls(bodies, [m["type"] for m in messages])

    def stream(self, run_id: str, concurrent_calls: int = 50) -> Iterator[bytes]:
        """Endless unique bodies: `concurrent_calls` calls interleaved, each playing the template in order."""
        next_call = 0
        stamp = 0
        cursors: list[tuple[bytes, int]] = []
        for _ in range(concurrent_calls):
            cursors.append((f"{run_id}-{next_call:08d}".encode(), 0))
            next_call += 1
        slot = 0
        while True:
            call, position = cursors[slot]
            stamp = max(int(time.time() * 1000), stamp + 1)  # epoch ms, as Vapi sends; unique per body
            yield self.bodies[position].replace(b"@CALL@", call).replace(b"@TS@", str(stamp).encode())
            position += 1
            if position == len(self.bodies):
                call, position = f"{run_id}-{next_call:08d}".encode(), 0
                next_call += 1
            cursors[slot] = (call, position)
            slot = (slot + 1) % concurrent_calls


# ------------------------------------------------------------------ the client


class RawClient:
    """A minimal HTTP/1.1 keep-alive client: cheap enough to pace 500+ requests/s from one core."""

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": f"{host}:{port}", **headers}.items())
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        """The response status; raises OSError/IncompleteReadError when the server is gone."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        try:
            self._writer.write(
                f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n".encode() + body
            )
            head = await self._reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await self._reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass
class LoadStats:
    sent: int = 0
    acked: int = 0
    failed: int = 0  # non-2xx answers
    errors: int = 0  # no answer (connection refused/reset)
    acked_hashes: set[str] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)  # this window's; drained by the sampler

    def take_latencies(self) -> list[float]:
        window, self.latencies_ms = self.latencies_ms, []
        return window


async def drive(
    url: str,
    bodies: Iterator[bytes],
    stats: LoadStats,
    *,
    rate: float | None,
    connections: int,
    stop: asyncio.Event,
    headers: dict[str, str] | None = None,
    path: str = "/webhook/vapi",
    on_error: Callable[[BaseException], None] | None = None,
) -> None:
    """Post `bodies` over `connections` keep-alive connections until `stop` is set.

    With `rate`, messages are scheduled at that many per second and latency counts
    from the scheduled time; without it, every connection sends as fast as it is
    answered. A connection whose server goes away stops (the request is not acked).
    """
    host, _, port = url.removeprefix("http://").partition(":")
    headers = headers or {"Content-Type": "application/json", "X-Vapi-Secret": SECRET}
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=connections * 4 if rate is None else 0)
    loop = asyncio.get_running_loop()

    async def pace() -> None:
        started = loop.time()
        issued = 0
        while not stop.is_set():
            due = int((loop.time() - started) * rate) if rate else issued + connections
            while issued < due:
                if rate is None:
                    await queue.put((loop.time(), next(bodies)))
                else:
                    queue.put_nowait((started + issued / rate, next(bodies)))
                issued += 1
            if rate:
                await asyncio.sleep(0.005)

    async def worker() -> None:
        client = RawClient(host, int(port.split("/")[0]), headers)
        try:
            while not stop.is_set():
                try:
                    scheduled, body = await asyncio.wait_for(queue.get(), 0.2)
                except TimeoutError:
                    continue
                stats.sent += 1
                try:
                    status = await client.post(path, body)
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                    stats.errors += 1
                    if on_error is not None:
                        on_error(exc)
                    if stop.is_set():
                        return
                    await asyncio.sleep(0.05)
                    continue
                if 200 <= status < 300:
                    stats.acked += 1
                    stats.acked_hashes.add(hashlib.sha256(body).hexdigest())
                    stats.latencies_ms.append((loop.time() - max(scheduled, 0.0)) * 1000)
                else:
                    stats.failed += 1
        finally:
            client.close()

    pacer = asyncio.create_task(pace())
    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    finally:
        pacer.cancel()


# --------------------------------------------------------------- serve process


def serve_env(db: Path, home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_CONSOLE_")}
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_STATE_HOME": str(home / "state"),
            "XDG_RUNTIME_DIR": str(home / "run"),
            "VOICE_CONSOLE_DB": str(db),
            "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": SECRET,
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


class ServeProcess:
    """`voice-console serve --port 0` in a subprocess; stdout (NDJSON) goes to a file."""

    def __init__(
        self,
        db: Path,
        policy_text: str = SOAK_POLICY,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        stdout: Path | None = None,
        stderr: Path | None = None,
    ) -> None:
        self.db = db
        home = db.parent / "home"
        home.mkdir(parents=True, exist_ok=True)
        (home / "run").mkdir(mode=0o700, exist_ok=True)
        policy = db.parent / "soak-policy.toml"
        policy.write_text(policy_text)
        self.stdout_path = stdout or db.parent / "serve.ndjson"
        self.stderr_path = stderr or db.parent / "serve.log"
        self._out = open(self.stdout_path, "ab")
        self._err = open(self.stderr_path, "ab")
        start_at = self.stderr_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console", "serve", "--port", "0", "--policy", str(policy), *args],
            cwd=ROOT,
            env=env or serve_env(db, home),
            stdout=self._out,
            stderr=self._err,
        )
        self.url = self._wait_for_url(start_at)

    def _wait_for_url(self, start_at: int, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.stderr_path, "rb") as log:
                log.seek(start_at)
                match = re.search(rb"listening on (http://127\.0\.0\.1:\d+)", log.read())
            if match:
                return match.group(1).decode()
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"serve did not start: {self.stderr_path.read_text(errors='replace')[-2000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_mb(self) -> float | None:
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        return round(int(match.group(1)) / 1024, 1) if match else None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)  # reaped: no zombie keeps its pid "alive"
        self._close_files()

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            self._close_files()
        return code

    def _close_files(self) -> None:
        self._out.close()
        self._err.close()


def db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def stored_hashes(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT body_sha256 FROM deliveries")}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


# ------------------------------------------------------------------- the soak


async def _soak(
    serve: ServeProcess,
    templates: CallTemplates,
    *,
    duration: float,
    rate: float,
    sample: float,
    connections: int,
    progress: Callable[[dict[str, Any]], None] | None,
) -> tuple[LoadStats, list[dict[str, Any]]]:
    stats = LoadStats()
    stop = asyncio.Event()
    series: list[dict[str, Any]] = []
    bodies = templates.stream(f"soak-{os.getpid()}-{int(time.time())}")
    load = asyncio.create_task(drive(serve.url, bodies, stats, rate=rate, connections=connections, stop=stop))
    started = time.monotonic()
    last_sent = 0
    try:
        while True:
            remaining = duration - (time.monotonic() - started)
            await asyncio.sleep(min(sample, max(remaining, 0)))
            window = stats.take_latencies()
            elapsed = time.monotonic() - started
            point = {
                "t_s": round(elapsed, 1),
                "rss_mb": serve.rss_mb(),
                "db_mb": round(db_bytes(serve.db) / 1e6, 2),
                "sent": stats.sent,
                "acked": stats.acked,
                "rate_per_s": round((stats.sent - last_sent) / sample, 1),
                "ack_p50_ms": percentile(window, 0.50),
                "ack_p99_ms": percentile(window, 0.99),
                "errors": stats.errors + stats.failed,
            }
            last_sent = stats.sent
            series.append(point)
            if progress is not None:
                progress(point)
            if elapsed >= duration - 1e-3:
                break
    finally:
        stop.set()
        await load
    return stats, series


def run_soak(
    duration: float = 1800.0,
    rate: float = 500.0,
    sample: float = 10.0,
    connections: int = 32,
    workdir: Path | None = None,
    scenario: str = "booking",
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the soak and return its summary (see the module docstring)."""
    templates = CallTemplates.from_messages(capture_call_messages(scenario))
    own_dir = workdir is None
    workdir = Path(workdir or tempfile.mkdtemp(prefix="vc-soak-"))
    db = workdir / "soak.db"
    serve = ServeProcess(db)
    try:
        stats, series = asyncio.run(
            _soak(
                serve,
                templates,
                duration=duration,
                rate=rate,
                sample=sample,
                connections=connections,
                progress=progress,
            )
        )
        db_size_running = db_bytes(db)
    finally:
        code = serve.stop()
    stored = stored_hashes(db)
    lost = len(stats.acked_hashes - stored)
    rss = [p["rss_mb"] for p in series if p["rss_mb"] is not None]
    # Memory "flat": compare the second half's peak with the first quarter's (after warm-up).
    quarter = max(1, len(rss) // 4)
    rss_early = max(rss[:quarter]) if rss else None
    rss_late = max(rss[len(rss) // 2 :]) if rss else None
    p99s = [p["ack_p99_ms"] for p in series if p["ack_p99_ms"] is not None]
    summary = {
        "duration_s": duration,
        "target_rate_per_s": rate,
        "achieved_rate_per_s": round(stats.sent / duration, 1),
        "connections": connections,
        "messages_per_call": len(templates.bodies),
        "sent": stats.sent,
        "acked": stats.acked,
        "non_2xx": stats.failed,
        "no_answer": stats.errors,
        "stored": len(stored),
        "lost": lost,
        "rss_mb_start": rss[0] if rss else None,
        "rss_mb_early_peak": rss_early,
        "rss_mb_late_peak": rss_late,
        "rss_mb_max": max(rss) if rss else None,
        "rss_growth_mb": round(rss_late - rss_early, 1) if rss else None,
        "db_mb_end": round(db_size_running / 1e6, 1),
        "db_mb_after_checkpoint": round(db_bytes(db) / 1e6, 1),
        "ack_p99_ms_worst_window": max(p99s) if p99s else None,
        "ack_p99_ms_median_window": percentile(p99s, 0.5),
        "serve_exit_code": code,
        "series": series,
    }
    if own_dir:
        for path in workdir.glob("soak.db*"):
            path.unlink()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds (default 1800)")
    parser.add_argument("--rate", type=float, default=500.0, help="messages per second (default 500)")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds per window (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--scenario", default="booking", help="simulator scenario for the message shapes")
    parser.add_argument("--workdir", type=Path, help="keep the database and serve's logs here")
    parser.add_argument("--quiet", action="store_true", help="no per-window progress on stderr")
    args = parser.parse_args(argv)

    def progress(point: dict[str, Any]) -> None:
        print(json.dumps(point), file=sys.stderr, flush=True)

    summary = run_soak(
        args.duration,
        args.rate,
        args.sample,
        args.connections,
        args.workdir,
        args.scenario,
        progress=None if args.quiet else progress,
    )
    print(json.dumps(summary, indent=2))
    return 0 if summary["lost"] == 0 and summary["serve_exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
