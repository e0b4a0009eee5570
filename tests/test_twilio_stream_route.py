"""`GET /stream/twilio`: a real WebSocket client plays a recorded Media Stream
into the running receiver; speech derived from the audio lands in the history."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from websockets.asyncio.client import connect

from console.store import queries
from tests.helpers.receiver import start_service

FRAMES = (Path(__file__).parent / "payloads" / "twilio" / "media_stream.jsonl").read_text().splitlines()


async def test_media_stream_frames_become_speech_events(tmp_path):
    service, seen = await start_service(tmp_path)
    try:
        url = service.server.url.replace("http://", "ws://") + "/stream/twilio"
        async with connect(url) as ws:
            for frame in FRAMES:
                await ws.send(frame)
        call_id = json.loads(FRAMES[1])["start"]["callSid"]
        for _ in range(100):  # the handler commits after the socket closes
            detail = await queries.get_call(service.store, call_id)
            if detail and any(e.get("type") == "stop" or "stop" in str(e.get("type")) for e in detail["events"]):
                break
            await asyncio.sleep(0.05)
        kinds = [e["kind"] for e in detail["events"]]
        assert "speech.started" in kinds and "speech.stopped" in kinds
        assert all(e["provider"] == "twilio" for e in detail["events"])
        # Only derived events are kept, never the 50 audio frames a second.
        assert len(detail["events"]) < len(FRAMES) / 5
        assert sorted(e.kind for e in seen if e.call_id == call_id) == sorted(kinds)
    finally:
        await service.close()


async def test_plain_get_on_the_stream_route_asks_for_an_upgrade(tmp_path):
    import httpx

    service, _ = await start_service(tmp_path)
    try:
        async with httpx.AsyncClient(base_url=service.server.url) as client:
            response = await client.get("/stream/twilio")
        assert response.status_code == 426
    finally:
        await service.close()
