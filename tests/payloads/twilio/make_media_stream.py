"""Regenerate media_stream.jsonl: `python tests/payloads/twilio/make_media_stream.py`.

A <Connect><Stream> call's frames with synthetic, deterministic audio.
"""

from __future__ import annotations

import base64
import json
import math
import random
from pathlib import Path
from typing import Any

from console.providers.twilio.stream import ulaw_encode

ACCOUNT = "AC3e1f5a7c9b2d4f6a8c0e2b4d6f8a0c1e"
CALL = "CA5f2b7c9d1e3a4b6c8d0e2f4a6b8c0d1e"
STREAM = "MZ4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c"


def frames() -> list[dict[str, Any]]:
    rng = random.Random(20260803)
    out: list[dict[str, Any]] = [{"event": "connected", "protocol": "Call", "version": "1.0.0"}]
    state = {"seq": 1, "chunk": 1, "ms": 0, "n": 0}

    def add(frame: dict[str, Any]) -> None:
        event = frame.pop("event")
        out.append({"event": event, "sequenceNumber": str(state["seq"]), **frame, "streamSid": STREAM})
        state["seq"] += 1

    def audio(ms: int, loud: bool) -> None:
        for _ in range(ms // 20):
            samples = []
            for i in range(160):
                t = (state["n"] + i) / 8000
                voice = 9000 * math.sin(2 * math.pi * 220 * t) + 3000 * math.sin(2 * math.pi * 650 * t)
                samples.append((int(voice) if loud else 0) + rng.randint(-120, 120))
            state["n"] += 160
            payload = base64.b64encode(ulaw_encode(samples)).decode()
            chunk, stamp = str(state["chunk"]), str(state["ms"])
            media = {"track": "inbound", "chunk": chunk, "timestamp": stamp, "payload": payload}
            add({"event": "media", "media": media})
            state["chunk"] += 1
            state["ms"] += 20

    add(
        {
            "event": "start",
            "start": {
                "accountSid": ACCOUNT,
                "streamSid": STREAM,
                "callSid": CALL,
                "tracks": ["inbound"],
                "customParameters": {"caller": "+14155550142"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )
    audio(300, loud=False)
    audio(600, loud=True)
    audio(500, loud=False)
    add({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "1"}})
    add({"event": "mark", "mark": {"name": "greeting-done"}})
    audio(300, loud=True)
    add({"event": "stop", "stop": {"accountSid": ACCOUNT, "callSid": CALL}})
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("media_stream.jsonl")
    path.write_text("".join(json.dumps(f, separators=(",", ":")) + "\n" for f in frames()))
