"""Taps: live sockets a platform opens to the console, relayed both ways to the user's own server.

Retell's custom-LLM socket is the first: the agent's `llm_websocket_url` points at
`wss://<public host>/llm/retell/<token>` (Retell appends `/<call_id>`), the tap
opens `<forward_to>/<call_id>` and passes every frame on, unchanged and in order,
each way. What a frame shows is worked out after it was passed on (the provider's
sans-I/O `TapSession`), and the events go to the history through a bounded queue,
so the relay never waits on the disk unless the history falls far behind.

Back-pressure, not buffers: each direction reads the next frame only after the
previous one was handed to the other side's socket, whose writes wait while its
peer is slow; the sockets' own receive queues are bounded and pause reading.

Either side closing closes the other with the same code (a close that cannot be
sent on, 1005/1006, goes on as 1011 with the reason). A frame over the tap's limit
(`MAX_FRAME_BYTES`) closes both sides with 1009 and says whose frame it was. When the user's server
cannot be reached, the platform's side is closed with 1011 and the reason, and the
history says why.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from console.core.events import Event, Raw, utc_now
from console.core.http_types import Request, Response
from console.providers import registry
from console.providers.base import PlatformError, TapSession, TapSide
from console.providers.registry import Tap
from console.providers.taps import MAX_FRAME_BYTES
from console.providers.taps import size as _size
from console.receiver.http import Router
from console.receiver.ws import WebSocket, WebSocketClosed

if TYPE_CHECKING:
    from console.config import Settings

_logger = logging.getLogger("console.receiver.relay")

Ingest = Callable[[list[Event]], Awaitable[None]]

# Batches of events waiting for the history; past this the relay waits (back-pressure).
EVENT_QUEUE = 256
CONNECT_TIMEOUT_S = 5.0
# A frame that waits this long to be passed on: the side it goes to is not reading (reported, once per stall).
SLOW_PASS_S = 0.5
_UNSENDABLE = {1005, 1006, 1015}  # reserved codes: observed, never sent in a close frame
_MAX_CALL_ID = 128


def with_call_id(url: str, call_id: str) -> str:
    """`url` with `/<call_id>` appended to its path, as Retell does (the query stays last)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + call_id))


@dataclass(frozen=True)
class TapAddress:
    call_id: str
    token: str


def parse_tap_path(prefix: str, request: Request, *, call_id_in_path: bool = True) -> TapAddress | None:
    """`{prefix}/{token}/{call_id}` or `{prefix}/{call_id}?token=…` (or, for a tap whose path names no
    call, `{prefix}/{token}`); None for any other shape."""
    rest = request.path[len(prefix) :].strip("/")
    segments = rest.split("/") if rest else []
    query = parse_qs(urlsplit(request.target).query)
    if not call_id_in_path:
        if len(segments) != 1:
            return None
        return TapAddress("", segments[0])
    if len(segments) == 2:
        token, call_id = segments
    elif len(segments) == 1:
        call_id = segments[0]
        token = (query.get("token") or [""])[0]
    else:
        return None
    if not call_id or len(call_id) > _MAX_CALL_ID or not call_id.isprintable():
        return None
    return TapAddress(call_id, token)


class LiveTaps:
    """The calls whose socket this receiver is relaying right now, by call id (live control's way in)."""

    def __init__(self) -> None:
        self._relays: dict[str, Relay] = {}

    def get(self, call_id: str) -> Relay | None:
        return self._relays.get(call_id)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._relays

    def __len__(self) -> int:
        return len(self._relays)

    def items(self) -> list[tuple[str, Relay]]:
        return list(self._relays.items())

    def _add(self, relay: Relay) -> None:
        if relay.session.call_id:  # a stream that names its call later is added then
            self._relays[relay.session.call_id] = relay

    def _remove(self, relay: Relay) -> None:
        if self._relays.get(relay.session.call_id) is relay:
            del self._relays[relay.session.call_id]


class Relay:
    """One tapped socket: the platform's side (`platform`) and the user's server's (`agent`)."""

    def __init__(
        self,
        session: TapSession,
        platform: WebSocket,
        ingest: Ingest,
        live: LiveTaps | None = None,
        *,
        provider: str = "",
        known_call: Callable[[str], bool] | None = None,
    ) -> None:
        self.session = session
        self.platform = platform
        self.agent: ClientConnection | None = None
        self._ingest = ingest
        self._live = live
        self._provider = provider
        # For a stream that names its call itself: whether the console has seen that call already.
        self._known_call = known_call
        self._events: asyncio.Queue[list[Event] | None] = asyncio.Queue(EVENT_QUEUE)
        # Per receiving side: since when the frame being passed to it has waited (None: not waiting).
        self._waiting_since: dict[TapSide, float | None] = {"platform": None, "agent": None}

    async def say(self, content: str) -> None:
        """The operator's words, spoken now: a frame on the platform's side (`LiveTap`)."""
        try:
            frame, events = self.session.operator_says(content, utc_now())
        except ValueError as exc:
            raise PlatformError(str(exc)) from None
        await self._to_platform(frame, events)

    async def cut_off(self) -> None:
        """The operator's own barge-in: the platform drops the agent's queued audio (`LiveTap`)."""
        try:
            frame, events = self.session.operator_clears(utc_now())
        except ValueError as exc:
            raise PlatformError(str(exc)) from None
        await self._to_platform(frame, events)

    async def _to_platform(self, frame: str, events: list[Event]) -> None:
        try:
            await self.platform.send(frame)
        except WebSocketClosed:
            raise PlatformError("the call's socket through the tap has just closed") from None
        await self._emit(events)

    async def run(self, forward_to: str | None, option: str, *, tap: Tap) -> None:
        writer = asyncio.create_task(self._write_events())
        try:
            await self._run(forward_to, option, tap)
        finally:
            await self._events.put(None)
            await writer

    async def _watch_alone(self) -> None:
        """No server to relay to: the platform's frames are watched, as a terminating stream."""
        platform = self.platform
        while (frame := await platform.recv()) is not None:
            await self._seen("platform", frame)
        side, code, reason = self._platform_closed()
        await self._emit(self.session.closed(side, code, reason, utc_now()))

    async def _seen(self, side: TapSide, frame: str | bytes) -> None:
        events = self.session.seen(side, frame, utc_now())
        call_id = self.session.call_id
        if self._live is not None and call_id and self._live.get(call_id) is not self:
            self._live._add(self)  # the stream just named its call
            if self._known_call is not None and not self._known_call(call_id):
                note = (
                    f"a stream for call {call_id}, which this console has not seen: its voice webhook and status "
                    "callbacks go elsewhere?"
                )
                events = [
                    Raw(
                        at=utc_now(),
                        provider=self._provider,
                        call_id=call_id,
                        type="tap.unknown_call",
                        data={"note": note},
                    ),
                    *events,
                ]
        if events:
            await self._emit(events)

    async def _run(self, forward_to: str | None, option: str, tap: Tap) -> None:
        if not forward_to:
            if tap.terminate_without_forward:
                await self._watch_alone()
                return
            await self._close_platform(1011, f"no server to relay to: set {option}", side=None)
            return
        url = with_call_id(forward_to, self.session.call_id) if tap.call_id_in_path else forward_to
        try:
            self.agent = await connect(
                url,
                open_timeout=CONNECT_TIMEOUT_S,
                max_size=MAX_FRAME_BYTES,
                max_queue=16,
                compression=None,  # the platform sends uncompressed frames; pass them as they are
                ping_interval=20,
                close_timeout=5,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            reason = f"the server at {_safe(url)} could not be reached ({_why(exc)}); check {option}"
            await self._close_platform(1011, reason, side=None)
            return
        pumps = [
            asyncio.create_task(self._platform_to_agent(self.agent)),
            asyncio.create_task(self._agent_to_platform(self.agent)),
        ]
        watchdog = asyncio.create_task(self._watch_for_stalls())
        try:
            await self._relay(pumps)
        finally:
            watchdog.cancel()

    async def _relay(self, pumps: list[asyncio.Task[tuple[TapSide | None, int, str]]]) -> None:
        try:
            done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            side, code, reason = next(iter(done)).result()
        except BaseException:  # a bug or a shutdown: neither side is left open
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await self._close_agent(1011, "the console's tap stopped")
            raise
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if side == "platform":
            await self._close_agent(code, reason)
            await self._emit(self.session.closed("platform", code, reason, utc_now()))
        elif side == "agent":
            await self._close_platform(code, reason, side="agent")
        else:  # the tap refused a frame over its limit: both sides are told why
            await self._close_agent(code, reason)
            await self._close_platform(code, reason, side=None)

    def _platform_closed(self) -> tuple[TapSide | None, int, str]:
        platform = self.platform
        if platform.refused_oversize:
            return None, 1009, self._too_big("platform")
        return "platform", platform.close_code or 1006, platform.close_reason or ""

    def _agent_closed(self, exc: ConnectionClosed) -> tuple[TapSide | None, int, str]:
        if exc.sent is not None and exc.sent.code == 1009 and not exc.rcvd_then_sent:
            return None, 1009, self._too_big("agent")
        return "agent", *_close_of(exc)

    def _too_big(self, side: TapSide) -> str:
        limit = self.platform.max_message_bytes if side == "platform" else MAX_FRAME_BYTES
        return f"{self.session.side_names[side]} sent a frame over the tap's limit of {_size(limit)}"

    async def _platform_to_agent(self, agent: ClientConnection) -> tuple[TapSide | None, int, str]:
        platform, waiting, clock = self.platform, self._waiting_since, asyncio.get_running_loop().time
        while True:
            frame = await platform.recv()
            if frame is None:
                return self._platform_closed()
            waiting["agent"] = clock()
            try:
                await agent.send(frame)
            except ConnectionClosed as exc:
                return self._agent_closed(exc)
            waiting["agent"] = None
            await self._seen("platform", frame)

    async def _agent_to_platform(self, agent: ClientConnection) -> tuple[TapSide | None, int, str]:
        platform, waiting, clock = self.platform, self._waiting_since, asyncio.get_running_loop().time
        while True:
            try:
                frame = await agent.recv()
            except ConnectionClosed as exc:
                return self._agent_closed(exc)
            waiting["platform"] = clock()
            try:
                await platform.send(frame)
            except WebSocketClosed:
                return self._platform_closed()
            waiting["platform"] = None
            await self._seen("agent", frame)

    async def _watch_for_stalls(self) -> None:
        """A side that stops reading holds the other back (the relay never buffers past the sockets'
        bounded queues); this says so while it lasts, once per stall, rather than only afterwards."""
        clock = asyncio.get_running_loop().time
        reported: dict[TapSide, float] = {}
        while True:
            await asyncio.sleep(SLOW_PASS_S / 2)
            now = clock()
            for side, since in self._waiting_since.items():
                if since is not None and now - since >= SLOW_PASS_S and reported.get(side) != since:
                    reported[side] = since
                    await self._emit(self.session.stalled(side, now - since, utc_now()))

    async def _close_platform(self, code: int, reason: str, *, side: TapSide | None) -> None:
        if code in _UNSENDABLE:
            code, reason = 1011, reason or "your server went away without closing the socket"
        await self._emit(self.session.closed(side, code, reason, utc_now()))
        await self.platform.close(code, _fit(reason))

    async def _close_agent(self, code: int, reason: str) -> None:
        if self.agent is None:
            return
        if code in _UNSENDABLE:
            code, reason = 1011, reason or "the platform went away without closing the socket"
        try:
            await self.agent.close(code, _fit(reason))
        except Exception:  # already gone: nothing more to tell it
            _logger.debug("closing the LLM server's side failed", exc_info=True)

    async def _emit(self, events: list[Event]) -> None:
        if events:
            await self._events.put(events)

    async def _write_events(self) -> None:
        """The history's side of the queue: batches as they come, several at once when behind."""
        queue = self._events
        while True:
            batch = await queue.get()
            if batch is None:
                return
            events = list(batch)
            done = False
            while not queue.empty():
                more = queue.get_nowait()
                if more is None:
                    done = True
                    break
                events.extend(more)
            try:
                await self._ingest(events)
            except Exception:
                _logger.exception("events from the tap of call %s were not recorded", self.session.call_id)
            if done:
                return


def add_tap_route(
    router: Router,
    ingest: Ingest,
    tap: Tap,
    *,
    token: str | None,
    forward_to: str | None,
    live: LiveTaps,
    provider: str = "",
    known_call: Callable[[str], bool] | None = None,
) -> None:
    """`tap.prefix/…`: admitted only with the per-install token (compared in constant time)."""
    expected = (token or "").encode()

    shape = (
        f"{tap.prefix}/<token>/<call id> or {tap.prefix}/<call id>?token="
        if tap.call_id_in_path
        else f"{tap.prefix}/<token>"
    )

    def admit(request: Request) -> Response | None:
        address = parse_tap_path(tap.prefix, request, call_id_in_path=tap.call_id_in_path)
        if address is None:
            return Response.error(404, f"a tap path is {shape}")
        if not expected or not hmac.compare_digest(address.token.encode(), expected):
            return Response.error(403, "this tap needs its token in the path or ?token= (see the README)")
        return None

    async def relay(request: Request, ws: WebSocket) -> None:
        address = parse_tap_path(tap.prefix, request, call_id_in_path=tap.call_id_in_path)
        assert address is not None  # admitted
        # Only a stream that names its call itself can come for a call not seen: a socket named
        # after its call (Retell's) may open before the call's first webhook.
        known = known_call if not tap.call_id_in_path else None
        live_relay = Relay(tap.session(address.call_id), ws, ingest, live, provider=provider, known_call=known)
        live._add(live_relay)
        try:
            await live_relay.run(forward_to, tap.option, tap=tap)
        finally:
            live._remove(live_relay)

    router.add_websocket_prefix(tap.prefix, relay, admit)


def add_tap_routes(
    router: Router,
    ingest: Ingest,
    providers: Collection[str],
    settings: Settings,
    secrets: Mapping[str, str | None],
    live: LiveTaps,
    known_call: Callable[[str], bool] | None = None,
) -> None:
    """Every tap of every provider in `providers`; `known_call` says whether the console has seen a call."""
    for spec in registry.specs():
        if spec.name in providers:
            for tap in spec.taps:
                add_tap_route(
                    router,
                    ingest,
                    tap,
                    token=secrets.get(tap.token_secret),
                    forward_to=tap.forward_to(settings),
                    live=live,
                    provider=spec.name,
                    known_call=known_call,
                )


def _close_of(exc: ConnectionClosed) -> tuple[int, str]:
    received = exc.rcvd
    if received is None:
        return 1006, ""
    return received.code, received.reason


def _fit(reason: str) -> str:
    """A close reason fits in 123 bytes of UTF-8."""
    encoded = reason.encode()
    if len(encoded) <= 123:
        return reason
    return encoded[:120].decode("utf-8", "ignore") + "..."


def _safe(url: str) -> str:
    """The server's address without its query (it may carry the user's own secret)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="", fragment=""))


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
