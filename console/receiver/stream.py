"""`GET /stream/twilio`: Twilio Media Streams over the receiver's WebSocket.

Frames are turned into normalized events by the sans-I/O `MediaStreamSession`;
only derived events (speech start/stop, start/stop/dtmf/mark) are stored, never
the 50 audio frames a second themselves.
"""

from __future__ import annotations

import logging

from console.core.events import utc_now
from console.providers.twilio.stream import MediaStreamSession
from console.receiver.http import Router
from console.receiver.routes import WebhookPipeline
from console.receiver.types import Request
from console.receiver.ws import WebSocket

log = logging.getLogger(__name__)

STREAM_PATH = "/stream/twilio"


def add_twilio_stream_route(router: Router, pipeline: WebhookPipeline) -> None:
    async def media_stream(request: Request, ws: WebSocket) -> None:
        session = MediaStreamSession()
        while True:
            frame = await ws.recv()
            if frame is None:
                break
            if isinstance(frame, bytes):
                continue  # Twilio only sends text frames
            events = session.feed(frame, utc_now())
            if events:
                await pipeline.ingest_events(events)

    router.add_websocket(STREAM_PATH, media_stream)
