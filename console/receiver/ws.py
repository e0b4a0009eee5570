"""WebSocket connections over the HTTP server's transport.

The HTTP layer (`console.receiver.http`) recognises an upgrade request on a
websocket route and hands over the transport plus any bytes it had already
read past the request head. This module does the handshake and framing with
the sans-I/O core of the `websockets` library (`websockets.server.ServerProtocol`)
and offers a small async API to handlers:

    async def media_stream(request: Request, ws: WebSocket) -> None:
        while (message := await ws.recv()) is not None:
            await ws.send(message)

`recv()` returns None once the connection is closed (by either side, or
because the peer vanished); `send()` on a closed connection raises
`WebSocketClosed`. The server closes the connection properly when the handler
returns (1000), raises (1011) or the server shuts down (1001).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeaderValue, InvalidState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.http11 import Response as WsResponse
from websockets.protocol import CLOSED, OPEN
from websockets.server import ServerProtocol

from console.core.http_types import Request

__all__ = ["WebSocket", "WebSocketClosed"]

_ws_logger = logging.getLogger("console.receiver.ws")


class WebSocketClosed(ConnectionError):
    """Raised by `WebSocket.send` when the connection is no longer open."""


class WebSocket(asyncio.Protocol):
    """One accepted WebSocket connection. Created by the HTTP server."""

    def __init__(
        self,
        request: Request,
        *,
        max_message_bytes: int = 1024 * 1024,
        max_queue: int = 32,
        close_timeout_s: float = 5.0,
        ping_interval_s: float | None = 20.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.request = request
        self.max_message_bytes = max_message_bytes
        self._max_queue = max_queue
        self._close_timeout_s = close_timeout_s
        self._logger = logger or _ws_logger
        self._loop = asyncio.get_running_loop()
        # The HTTP server already parsed the upgrade request, so the framing
        # protocol starts OPEN; handshake() validates with a separate instance.
        self._protocol = ServerProtocol(state=OPEN, max_size=max_message_bytes, logger=_ws_logger)
        self._transport: asyncio.Transport | None = None
        self._messages: deque[str | bytes] = deque()
        self._recv_waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._input_done = False
        self._lost = False
        self._lost_future: asyncio.Future[None] = self._loop.create_future()
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._reading_paused = False
        self._close_timer: asyncio.TimerHandle | None = None
        # Keepalive: every ping_interval_s, if the peer sent nothing since our
        # last ping, it is gone (no FIN after a network drop): abort.
        self._ping_interval_s = ping_interval_s
        self._ping_timer: asyncio.TimerHandle | None = None
        self._ping_sent_at: float | None = None
        self._last_rx = 0.0
        # Set by the server to learn when the connection is gone.
        self.on_connection_lost: Callable[[], None] | None = None

    # ------------------------------------------------------------ public API

    @property
    def closed(self) -> bool:
        """True once the connection can no longer carry messages either way."""
        return self._lost or self._protocol.state is not OPEN

    @property
    def close_code(self) -> int | None:
        """The close code the peer sent (1006 if it vanished without one), None while open."""
        received = self._protocol.close_rcvd
        if received is not None:
            return received.code
        if self._lost or self._protocol.state is CLOSED:
            return 1006
        return None

    @property
    def close_reason(self) -> str | None:
        received = self._protocol.close_rcvd
        return received.reason if received is not None else None

    @property
    def refused_oversize(self) -> bool:
        """Whether this side closed the connection because the peer sent a message over the limit (1009)."""
        sent = self._protocol.close_sent
        return sent is not None and sent.code == 1009 and not self._protocol.close_rcvd_then_sent

    @property
    def path(self) -> str:
        return self.request.path

    async def recv(self) -> str | bytes | None:
        """The next message (str for text, bytes for binary), or None once closed."""
        while True:
            if self._messages:
                message = self._messages.popleft()
                if self._reading_paused and len(self._messages) < self._max_queue // 2:
                    self._reading_paused = False
                    if self._transport is not None and not self._lost:
                        self._transport.resume_reading()
                return message
            if self._input_done or self._lost:
                return None
            if self._recv_waiter is not None:
                raise RuntimeError("another task is already waiting in WebSocket.recv()")
            waiter = self._loop.create_future()
            self._recv_waiter = waiter
            try:
                await waiter
            finally:
                self._recv_waiter = None

    async def send(self, data: str | bytes | bytearray | memoryview) -> None:
        """Send one message: str as a text frame, bytes as a binary frame."""
        if self.closed:
            raise WebSocketClosed(self._closed_text())
        try:
            if isinstance(data, str):
                self._protocol.send_text(data.encode("utf-8"))
            elif isinstance(data, (bytes, bytearray, memoryview)):
                self._protocol.send_binary(bytes(data))
            else:
                raise TypeError(f"WebSocket.send takes str or bytes, not {type(data).__name__}")
        except InvalidState:
            raise WebSocketClosed(self._closed_text()) from None
        self._flush()
        if self._write_paused and not self._lost:
            waiter = self._loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter
            if self._lost:
                raise WebSocketClosed(self._closed_text())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Start (or finish) the closing handshake and wait for the TCP close, bounded."""
        if self._transport is None:
            return
        self._start_close(code, reason)
        if not self._lost:
            try:
                await asyncio.wait_for(asyncio.shield(self._lost_future), self._close_timeout_s)
            except TimeoutError:
                self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once."""
        if self._transport is not None and not self._lost:
            self._transport.abort()

    def shutdown(self) -> None:
        """The server is going away: send close 1001; the handler sees recv() -> None."""
        if self._transport is not None:
            self._start_close(1001, "server shutting down")

    # ------------------------------------------------ handshake (from http.py)

    def handshake(self) -> WsResponse:
        """Validate the upgrade request; a 101 response means accepted."""
        request = self.request
        handshake = ServerProtocol(logger=_ws_logger)
        try:
            headers = Headers(list(request.headers))
        except InvalidHeaderValue as exc:  # websockets is stricter than h11 (e.g. non-ASCII values)
            return handshake.reject(400, f"Failed to open a WebSocket connection: {exc}.\n")
        ws_request = WsRequest(
            path=request.target,
            headers=headers,
            method=request.method,
            protocol=f"HTTP/{request.http_version}",
        )
        return handshake.accept(ws_request)

    def attach(self, transport: asyncio.Transport, response: WsResponse, trailing: bytes, eof: bool) -> None:
        """Take over the transport: send the 101 response, then process early bytes."""
        self._transport = transport
        transport.set_protocol(self)
        transport.write(response.serialize())
        self._last_rx = self._loop.time()
        if self._ping_interval_s:
            self._ping_timer = self._loop.call_later(self._ping_interval_s, self._keepalive)
        if trailing:
            self.data_received(trailing)
        if eof:
            self.eof_received()
            transport.close()

    # ----------------------------------------------------- asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self._last_rx = self._loop.time()
        protocol = self._protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        self._flush()
        for frame in events:
            if not isinstance(frame, Frame):  # the handshake's request/response events came earlier
                continue
            opcode = frame.opcode
            data = bytes(frame.data)  # the same object when it is bytes already (it is, from the parser)
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                if frame.fin:
                    self._deliver(data, opcode is Opcode.TEXT)
                else:
                    self._fragments = [data]
                    self._fragment_text = opcode is Opcode.TEXT
            elif opcode is Opcode.CONT:
                self._fragments.append(data)
                if frame.fin:
                    payload = b"".join(self._fragments)
                    self._fragments = []
                    self._deliver(payload, self._fragment_text)
        if protocol.close_rcvd is not None or protocol.state is CLOSED or protocol.parser_exc is not None:
            self._end_input()
        if len(self._messages) >= self._max_queue and not self._reading_paused and not self._lost:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def eof_received(self) -> None:
        self._protocol.receive_eof()
        self._protocol.events_received()
        self._flush()
        self._end_input()
        # Returning None lets the transport close: the closing handshake (or
        # the peer vanishing) never needs us to write after its EOF.

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None
        if not self._lost_future.done():
            self._lost_future.set_result(None)
        self._end_input()
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()
        callback, self.on_connection_lost = self.on_connection_lost, None
        if callback is not None:
            callback()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -------------------------------------------------------------- internals

    def _deliver(self, payload: bytes, text: bool) -> None:
        if text:
            try:
                message: str | bytes = payload.decode("utf-8")
            except UnicodeDecodeError:
                self._protocol.fail(1007, "invalid UTF-8 in a text message")
                self._flush()
                self._end_input()
                return
        else:
            message = payload
        self._messages.append(message)
        self._wake_reader()

    def _end_input(self) -> None:
        if not self._input_done:
            self._input_done = True
            self._wake_reader()

    def _wake_reader(self) -> None:
        waiter = self._recv_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _keepalive(self) -> None:
        self._ping_timer = None
        if self._lost or self._protocol.state is not OPEN or not self._ping_interval_s:
            return
        sent = self._ping_sent_at
        if sent is not None and self._last_rx < sent:
            self._logger.info(
                "websocket %s: no answer to a ping in %g s; dropping it", self.path, self._ping_interval_s
            )
            self.abort()
            return
        self._ping_sent_at = self._loop.time()
        self._protocol.send_ping(b"keepalive")
        self._flush()
        self._ping_timer = self._loop.call_later(self._ping_interval_s, self._keepalive)

    def _start_close(self, code: int, reason: str) -> None:
        if self._lost:
            return
        protocol = self._protocol
        if protocol.state is OPEN:
            try:
                protocol.send_close(code, reason)
            except Exception:  # an invalid code from the caller: close as internal error
                self._logger.warning("invalid websocket close code %r; using 1011", code)
                protocol.send_close(1011)
            self._flush()
        elif protocol.state is CLOSED:
            assert self._transport is not None
            self._transport.close()

    def _flush(self) -> None:
        transport = self._transport
        if transport is None or self._lost:
            self._protocol.data_to_send()
            return
        for data in self._protocol.data_to_send():
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except OSError:
                    transport.close()
            else:
                transport.close()
        if self._protocol.close_expected() and self._close_timer is None:
            self._close_timer = self._loop.call_later(self._close_timeout_s, self.abort)

    def _closed_text(self) -> str:
        code = self.close_code
        return f"the websocket is closed (code {code})" if code is not None else "the websocket is closed"

    def __repr__(self) -> str:
        state = "lost" if self._lost else self._protocol.state.name.lower()
        return f"<WebSocket {self.request.path} {state}>"
