"""What the Retell custom-LLM tap adds to each relayed frame.

Retell's side and a custom-LLM server run here (one process), `voice-console serve
--retell-llm-forward-to` runs as its own process in between. Each call sends Retell's
frames at Retell's pace — `update_only` with the whole transcript (it grows to ~2 KB),
every fifth one a `response_required` — and the server answers each frame with a
streamed `response` chunk at once. A frame's round trip (Retell → server → Retell) is
timed twice in the same run, interleaved: straight to the server (the baseline), and
through the tap, which relays two frames per round trip (one each way) and records
what it sees in the history meanwhile. Added per relayed frame = (tapped − direct) / 2.

    python bench/llm_tap.py [--calls 1,20,100] [--seconds 15] [--rate 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-llm-tap-token-0123456789abcdef"
CHUNK = " and the table by the window is yours for the evening, see you at seven."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def llm_server(ws: ServerConnection) -> None:
    """Answers every Retell frame with one streamed response chunk, at once."""
    response_id = 0
    async for frame in ws:
        data = json.loads(frame)
        if data.get("interaction_type") == "response_required":
            response_id = data["response_id"]
        reply = {"response_type": "response", "response_id": response_id, "content": CHUNK, "content_complete": False}
        reply["echo"] = data.get("seq")
        await ws.send(json.dumps(reply))


def transcript(turn: int) -> list[dict[str, object]]:
    utterances = []
    for index in range(min(turn, 24)):
        role = "agent" if index % 2 == 0 else "user"
        utterances.append({"role": role, "content": f"utterance {index} " + "with some words in it " * 3})
    return utterances


async def one_call(url: str, seconds: float, rate: float, rtts: list[float]) -> None:
    async with connect(url, compression=None, max_queue=None) as ws:
        await drive(ws, seconds, rate, rtts)


async def drive(ws: ClientConnection, seconds: float, rate: float, rtts: list[float]) -> None:
    deadline = time.perf_counter() + seconds
    seq = 0
    response_id = 0
    while time.perf_counter() < deadline:
        seq += 1
        if seq % 5 == 0:
            response_id += 1
            frame = {"interaction_type": "response_required", "response_id": response_id}
        else:
            frame = {"interaction_type": "update_only", "turntaking": "user_turn" if seq % 7 == 0 else None}
        frame["transcript"] = transcript(seq // 3)
        frame["seq"] = seq
        started = time.perf_counter()
        await ws.send(json.dumps(frame))
        while True:
            answer = json.loads(await ws.recv())
            if answer.get("echo") == seq:
                break
        rtts.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(max(0.0, 1 / rate - (time.perf_counter() - started)))


async def measure(calls: int, seconds: float, rate: float, direct_url: str, tap_base: str) -> dict[str, list[float]]:
    direct: list[float] = []
    tapped: list[float] = []
    # Both paths at once, call for call, so they share the same machine load.
    tasks = []
    for index in range(calls):
        tasks.append(one_call(f"{direct_url}/bench_direct_{calls}_{index}", seconds, rate, direct))
        tasks.append(one_call(f"{tap_base}/bench_tap_{calls}_{index}", seconds, rate, tapped))
    await asyncio.gather(*tasks)
    return {"direct": direct, "tapped": tapped}


def start_serve(db: Path, forward_to: str) -> tuple[subprocess.Popen[str], int]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOICE_CONSOLE_")}
    env.update(
        {
            "VOICE_CONSOLE_DB": str(db),
            "VOICE_CONSOLE_RETELL_LLM_TOKEN": TOKEN,
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "--port", "0", "--retell-llm-forward-to", forward_to],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
    if not match:
        proc.kill()
        raise SystemExit(f"serve did not start: {line!r}")
    return proc, int(match.group(1))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="1,20,100", help="concurrent calls, comma-separated runs")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each run")
    parser.add_argument("--rate", type=float, default=10.0, help="Retell frames per second per call")
    args = parser.parse_args()

    async with serve(llm_server, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        port = server.sockets[0].getsockname()[1]
        direct_url = f"ws://127.0.0.1:{port}/llm"
        with tempfile.TemporaryDirectory() as tmp:
            proc, serve_port = await asyncio.to_thread(start_serve, Path(tmp) / "history.db", direct_url)
            try:
                tap_base = f"ws://127.0.0.1:{serve_port}/llm/retell/{TOKEN}"
                await measure(2, 2.0, args.rate, direct_url, tap_base)  # warm-up
                print(f"Round trips Retell → LLM server → Retell, {args.rate:g} frames/s per call, {args.seconds:g} s")
                print(
                    "| calls | frames | direct p50 · p99 | through the tap p50 · p99 "
                    "| added per relayed frame p50 · p99 |"
                )
                print("|---|---|---|---|---|")
                for calls in (int(part) for part in args.calls.split(",")):
                    found = await measure(calls, args.seconds, args.rate, direct_url, tap_base)
                    direct, tapped = found["direct"], found["tapped"]
                    d50, d99 = percentile(direct, 0.5), percentile(direct, 0.99)
                    t50, t99 = percentile(tapped, 0.5), percentile(tapped, 0.99)
                    print(
                        f"| {calls} | {len(tapped):,} | {d50:.2f} · {d99:.2f} ms | {t50:.2f} · {t99:.2f} ms | "
                        f"{(t50 - d50) / 2:.2f} · {(t99 - d99) / 2:.2f} ms |",
                        flush=True,
                    )
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.communicate, timeout=30)


if __name__ == "__main__":
    asyncio.run(main())
