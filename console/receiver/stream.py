"""The platforms' live WebSockets (Twilio Media Streams at `GET /stream/twilio`), one
route per `Stream` in a provider's spec.

Frames are turned into normalized events by the provider's sans-I/O session;
only derived events (speech start/stop, start/stop/dtmf/mark) are stored, never
the 50 audio frames a second themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from console.core.events import Event, utc_now
from console.core.http_types import Request
from console.providers import registry
from console.providers.registry import Stream
from console.receiver.http import Router
from console.receiver.ws import WebSocket

# Where a stream's events go: the pipeline's `ingest_events` (tracked, committed, shown).
Ingest = Callable[[list[Event]], Awaitable[None]]


def add_stream_route(router: Router, ingest: Ingest, stream: Stream) -> None:
    async def live_stream(request: Request, ws: WebSocket) -> None:
        session = stream.session()
        while True:
            frame = await ws.recv()
            if frame is None:
                break
            if isinstance(frame, bytes):
                continue  # the platforms stream JSON in text frames
            events = session.feed(frame, utc_now())
            if events:
                await ingest(events)

    router.add_websocket(stream.path, live_stream)


def add_stream_routes(router: Router, ingest: Ingest, providers: Collection[str]) -> None:
    """Every stream of every provider in `providers`."""
    for spec in registry.specs():
        if spec.name in providers:
            for stream in spec.streams:
                add_stream_route(router, ingest, stream)
