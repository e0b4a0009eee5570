"""What the Twilio Media Streams tap adds to each relayed media frame, at up to 100 concurrent streams.

Twilio's side runs here, the user's agent in a process of its own, and `voice-console serve
--twilio-stream-forward-to` in a third, in between. Each stream sends
`connected`, `start`, then a 160-byte μ-law `media` frame every 20 ms, as Twilio does;
the agent answers each one at once with an outbound `media` frame carrying the same
audio, as an agent speaking back would. A frame's round trip (Twilio → agent → Twilio)
is timed twice in the same run, stream for stream at the same time: straight to the
agent (the baseline) and through the tap, which relays two frames per round trip and
runs its VAD and playback clock on them. Added per relayed frame = (tapped − direct) / 2.

    python bench/stream_tap.py [--streams 10,50,100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOKEN = "bench-stream-tap-token-0123456789"
FRAME_S = 0.02


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


AGENT = """
import asyncio, json
from websockets.asyncio.server import serve

async def agent(ws):
    sid = ""
    async for message in ws:
        frame = json.loads(message)
        if frame.get("event") == "start":
            sid = frame["streamSid"]
        elif frame.get("event") == "media":
            reply = {"event": "media", "streamSid": sid, "media": {"payload": frame["media"]["payload"]}}
            await ws.send(json.dumps(reply))

async def main():
    async with serve(agent, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def start_agent() -> tuple[subprocess.Popen[str], str]:
    """The agent, in its own process: it speaks back every frame it hears, at once."""
    proc = subprocess.Popen([sys.executable, "-c", AGENT], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, f"ws://127.0.0.1:{proc.stdout.readline().strip()}/agent"


async def one_stream(url: str, seconds: float, rtts: list[float]) -> None:
    sid, call = "MZ" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    sent: dict[int, float] = {}
    async with connect(url, compression=None, max_queue=None) as ws:

        async def listen() -> None:
            async for message in ws:
                frame = json.loads(message)
                if frame.get("event") == "media":
                    (seq,) = struct.unpack(">I", base64.b64decode(frame["media"]["payload"])[:4])
                    if seq in sent:
                        rtts.append((time.perf_counter() - sent.pop(seq)) * 1000)

        reader = asyncio.create_task(listen())
        await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        start = {
            "streamSid": sid,
            "accountSid": "AC" + "0" * 32,
            "callSid": call,
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await ws.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": sid}))
        loop = asyncio.get_running_loop()
        begin = loop.time()
        chunk = 0
        while loop.time() - begin < seconds:
            chunk += 1
            audio = struct.pack(">I", chunk) + bytes([0xFF]) * 156  # near-silent μ-law, the sequence in front
            frame = {
                "event": "media",
                "sequenceNumber": str(chunk + 1),
                "streamSid": sid,
                "media": {
                    "track": "inbound",
                    "chunk": str(chunk),
                    "timestamp": str(round((chunk - 1) * 20)),
                    "payload": base64.b64encode(audio).decode(),
                },
            }
            sent[chunk] = time.perf_counter()
            await ws.send(json.dumps(frame))
            await asyncio.sleep(max(0.0, begin + chunk * FRAME_S - loop.time()))
        await asyncio.sleep(0.2)
        reader.cancel()


def start_serve(db: Path, forward_to: str) -> tuple[subprocess.Popen[str], int]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOICE_CONSOLE_")}
    env |= {
        "VOICE_CONSOLE_DB": str(db),
        "VOICE_CONSOLE_TWILIO_STREAM_TOKEN": TOKEN,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "--port", "0", "--twilio-stream-forward-to", forward_to],
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
    parser.add_argument("--streams", default="10,50,100", help="concurrent streams, comma-separated runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    args = parser.parse_args()
    agent_proc, agent_url = start_agent()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            proc, port = await asyncio.to_thread(start_serve, Path(tmp) / "history.db", agent_url)
            try:
                tap_url = f"ws://127.0.0.1:{port}/stream/twilio/{TOKEN}"
                print(f"Round trips Twilio → agent → Twilio, a media frame every 20 ms per stream, {args.seconds:g} s")
                print(
                    "| streams | frames | direct p50 · p99 | through the tap p50 · p99 "
                    "| added per relayed frame p50 · p99 |"
                )
                print("|---|---|---|---|---|")
                for streams in (int(part) for part in args.streams.split(",")):
                    direct: list[float] = []
                    tapped: list[float] = []
                    runs = [one_stream(agent_url, args.seconds, direct) for _ in range(streams)]
                    runs += [one_stream(tap_url, args.seconds, tapped) for _ in range(streams)]
                    await asyncio.gather(*runs)
                    d50, d99 = percentile(direct, 0.5), percentile(direct, 0.99)
                    t50, t99 = percentile(tapped, 0.5), percentile(tapped, 0.99)
                    print(
                        f"| {streams} | {len(tapped):,} | {d50:.2f} · {d99:.2f} ms | {t50:.2f} · {t99:.2f} ms | "
                        f"{(t50 - d50) / 2:.2f} · {(t99 - d99) / 2:.2f} ms |",
                        flush=True,
                    )
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        agent_proc.kill()


if __name__ == "__main__":
    asyncio.run(main())
