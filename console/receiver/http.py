"""The embedded HTTP/1.1 server: asyncio Protocol + httptools (llhttp), with explicit limits.

No ASGI, no aiohttp. One `_HttpConnection` (an `asyncio.Protocol`) per TCP
connection feeds bytes to an `httptools.HttpRequestParser` and runs the route's
async handler in one task per request. llhttp, in its strict mode (no lenient
flags), parses every request: framing, chunked bodies, header syntax, and the
smuggling refusals (Content-Length with Transfer-Encoding, duplicate or
malformed Content-Length, obs-fold, bare CR/LF, control characters). It took
over from h11, whose pure-Python parsing was a third of the receiver's time
per request; tests/test_http_parser_parity.py checks every refusal h11 made
against this server. Responses, which always have a known length, are
serialized here in one write with validated header lines (see `_serialize`).
Everything that protects the process from a misbehaving client is enforced
here, not left to the parser or to the handlers:

* head size (431): counted as the parser reports the request line and headers,
  and, for a head still incomplete, by the bytes received since it began;
* body size (413): a declared Content-Length over the limit is refused before
  any byte of the body is read and before any `100 Continue`; a chunked body is
  counted as it arrives;
* what llhttp leaves to the server: HTTP/1.1 without Host (400), a
  Transfer-Encoding other than chunked (501), versions other than 1.0/1.1 (400);
* one deadline for receiving a whole request (408) that a trickling client
  cannot extend; a keep-alive idle timeout (silent close), also before the
  first request; a handler timeout (504); a connection cap (503);
* malformed input (400, or the statuses above) closes the connection, after
  the answers to the requests pipelined before it;
* every response the server closes after an error is followed by a "lingering
  close" (half-close, then read and discard for a bounded time) so the client
  reads the status instead of getting a TCP reset.

Timers: each connection owns at most one `loop.call_at` handle. State changes
only move a deadline number; the handle is re-armed lazily when it fires early,
so a busy keep-alive connection costs no timer operation per request.

Shutdown (`HttpServer.close`) never relies on `Server.wait_closed()` alone,
which hangs on Python 3.12+ while clients are connected: the server keeps its
own set of connections, closes them, and bounds every wait.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import httptools

from console.core.http_types import Request, Response

if TYPE_CHECKING:
    from ..config import ReceiverSettings
    from .ws import WebSocket

__all__ = [
    "Handler",
    "HttpServer",
    "Limits",
    "Router",
    "ServerStats",
    "WebSocketHandler",
]

Handler = Callable[[Request], Awaitable[Response]]
WebSocketHandler = Callable[[Request, "WebSocket"], Awaitable[None]]
# Checks an upgrade request before the handshake: None admits it, a response refuses it.
Admission = Callable[[Request], "Response | None"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Every limit the server enforces. Sizes in bytes, times in seconds."""

    max_head_bytes: int = 16 * 1024
    max_body_bytes: int = MiB
    # One deadline for receiving the head and body of a request, counted from
    # its first byte. A client that trickles bytes cannot extend it.
    request_deadline_s: float = 10.0
    # Idle time allowed between requests on a keep-alive connection (and
    # before the first request). The connection is then closed silently.
    keepalive_idle_s: float = 5.0
    handler_timeout_s: float = 330.0
    max_connections: int = 1024
    # Lingering close after an early error: how long, and how many bytes, to
    # keep reading and discarding so the client sees the response.
    linger_s: float = 1.0
    linger_bytes: int = MiB
    # WebSocket messages (text or binary), assembled from fragments.
    max_ws_message_bytes: int = MiB
    # WebSocket keepalive: a ping every interval; a peer that sent nothing
    # since the previous ping is dropped. None disables it.
    ws_ping_interval_s: float | None = 20.0

    @classmethod
    def from_settings(cls, settings: ReceiverSettings, **overrides: Any) -> Limits:
        values: dict[str, Any] = dict(
            max_head_bytes=settings.max_head_bytes,
            max_body_bytes=settings.max_body_bytes,
            request_deadline_s=settings.request_deadline_seconds,
            keepalive_idle_s=settings.keepalive_idle_seconds,
            handler_timeout_s=settings.handler_timeout_seconds,
            max_connections=settings.max_connections,
        )
        values.update(overrides)
        return cls(**values)


@dataclass
class ServerStats:
    """Live counters for display. Plain integers, updated in the loop thread."""

    connections_open: int = 0
    connections_total: int = 0
    connections_rejected: int = 0  # refused with 503 because of max_connections
    websockets_open: int = 0
    requests: int = 0  # request heads received
    # responses by status class: index 1 = 1xx ... index 5 = 5xx
    by_class: list[int] = field(default_factory=lambda: [0] * 6)

    @property
    def responses(self) -> dict[str, int]:
        return {f"{i}xx": self.by_class[i] for i in range(1, 6)}

    def snapshot(self) -> dict[str, Any]:
        return {
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "connections_rejected": self.connections_rejected,
            "websockets_open": self.websockets_open,
            "requests": self.requests,
            "responses": self.responses,
        }


class Router:
    """Exact-path routing. Paths are compared on the raw path (query ignored); WebSocket
    routes may also take every path under a prefix (a platform appends its call id)."""

    def __init__(self) -> None:
        self._routes: dict[str, dict[str, Handler]] = {}
        self._allow: dict[str, str] = {}
        self._ws: dict[str, WebSocketHandler] = {}
        self._ws_admit: dict[str, Admission] = {}
        # (prefix ending in "/", handler, admission), longest prefix first
        self._ws_prefixes: list[tuple[str, WebSocketHandler, Admission | None]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        method = method.upper()
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        methods = self._routes.setdefault(path, {})
        if method in methods:
            raise ValueError(f"route {method} {path} is already registered")
        methods[method] = handler
        self._refresh_allow(path)

    def add_websocket(self, path: str, ws_handler: WebSocketHandler, admit: Admission | None = None) -> None:
        """`admit` vets each upgrade request before the handshake (e.g. a token), refusing with its response."""
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        if path in self._ws:
            raise ValueError(f"websocket route {path} is already registered")
        self._ws[path] = ws_handler
        if admit is not None:
            self._ws_admit[path] = admit
        self._refresh_allow(path)

    def add_websocket_prefix(self, prefix: str, ws_handler: WebSocketHandler, admit: Admission | None = None) -> None:
        """Every path below `prefix` (`/llm/retell` takes `/llm/retell/…`); `admit` vets each
        upgrade request before the handshake (e.g. a secret in the path), refusing with its response."""
        if not prefix.startswith("/"):
            raise ValueError(f"route prefix must start with '/': {prefix!r}")
        prefix = prefix.rstrip("/") + "/"
        if any(known == prefix for known, _, _ in self._ws_prefixes):
            raise ValueError(f"websocket prefix {prefix} is already registered")
        self._ws_prefixes.append((prefix, ws_handler, admit))
        self._ws_prefixes.sort(key=lambda route: -len(route[0]))

    def _ws_prefix(self, path: str) -> tuple[WebSocketHandler, Admission | None] | None:
        for prefix, handler, admit in self._ws_prefixes:
            if path.startswith(prefix) and len(path) > len(prefix):
                return handler, admit
        return None

    def websocket_route(self, path: str) -> tuple[WebSocketHandler, Admission | None] | None:
        """The handler (and admission check) for an upgrade request on `path`, if any."""
        handler = self._ws.get(path)
        if handler is not None:
            return handler, self._ws_admit.get(path)
        return self._ws_prefix(path) if self._ws_prefixes else None

    def _refresh_allow(self, path: str) -> None:
        allowed = set(self._routes.get(path, ()))
        if path in self._ws:
            allowed.add("GET")
        if "GET" in allowed:
            allowed.add("HEAD")
        self._allow[path] = ", ".join(sorted(allowed))

    def routes(self) -> list[tuple[str, str]]:
        """(method, path) pairs, websocket routes as ("WS", path)."""
        out = [(m, p) for p, methods in self._routes.items() for m in methods]
        out += [("WS", p) for p in self._ws]
        out += [("WS", prefix + "…") for prefix, _, _ in self._ws_prefixes]
        return sorted(out, key=lambda item: (item[1], item[0]))

    def websocket_handler(self, path: str) -> WebSocketHandler | None:
        return self._ws.get(path)

    def match(self, method: str, path: str) -> Handler | Response:
        """The handler for (method, path), or the error response to send."""
        methods = self._routes.get(path)
        if methods is not None:
            handler = methods.get(method)
            if handler is not None:
                return handler
            if method == "HEAD":
                handler = methods.get("GET")
                if handler is not None:
                    return handler
        elif path not in self._ws:
            if self._ws_prefixes and self._ws_prefix(path) is not None:
                if method in ("GET", "HEAD"):
                    return _upgrade_required()
                return _with_headers(
                    Response.error(405, f"method {method} is not allowed on {_clip(path)} (allowed: GET, HEAD)"),
                    (("Allow", "GET, HEAD"),),
                )
            return Response.error(404, f"no route for {_clip(path)}")
        if path in self._ws and method in ("GET", "HEAD"):
            return _upgrade_required()
        allow = self._allow[path]
        return _with_headers(
            Response.error(405, f"method {method} is not allowed on {_clip(path)} (allowed: {allow})"),
            (("Allow", allow),),
        )


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _with_headers(response: Response, headers: tuple[tuple[str, str], ...]) -> Response:
    return Response(response.status, response.body, response.content_type, response.headers + headers)


def _upgrade_required() -> Response:
    return _with_headers(
        Response.error(426, "this endpoint only accepts WebSocket connections (send Upgrade: websocket)"),
        (("Upgrade", "websocket"),),
    )


# ---------------------------------------------------------------- wire helpers
#
# Requests are parsed by httptools (the security-relevant part: framing,
# smuggling, header syntax). Responses are serialized here: they always have a
# known length, so the output is one status line, a few validated header lines
# and the body, in one write.

_STATUS_LINES: dict[int, bytes] = {
    s.value: b"HTTP/1.1 %d %s\r\n" % (s.value, s.phrase.encode("ascii"))
    for s in http.HTTPStatus
    if 200 <= s.value <= 599
}
_CONTINUE_BYTES = b"HTTP/1.1 100 Continue\r\n\r\n"
_SKIPPED_HEADERS = frozenset({"content-length", "content-type", "transfer-encoding", "connection"})
_TOKEN_RE = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_FIELD_VALUE_RE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_CONTENT_TYPE_LINES: dict[str, bytes] = {}
_INTERNAL_ERROR = Response.error(500, "internal server error")


def _header_line(name: str, value: str) -> bytes:
    """One response header line; refuses anything that could split the header."""
    if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
        raise ValueError(f"invalid response header name {name!r}")
    if not isinstance(value, str):
        raise ValueError(f"response header {name} must be a str, not {type(value).__name__}")
    value = value.strip(" \t")
    if not _FIELD_VALUE_RE.fullmatch(value):
        raise ValueError(f"invalid characters in response header {name}")
    return name.encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n"


def _content_type_line(content_type: str) -> bytes:
    line = _CONTENT_TYPE_LINES.get(content_type)
    if line is None:
        line = _header_line("content-type", content_type)
        if len(_CONTENT_TYPE_LINES) < 64:
            _CONTENT_TYPE_LINES[content_type] = line
    return line


def _serialize(response: Response, close: bool, send_body: bool) -> bytes:
    """The bytes of a complete response. ValueError if the response is invalid."""
    status = response.status
    status_line = _STATUS_LINES.get(status)
    if status_line is None:
        if type(status) is not int or not 200 <= status <= 599:
            raise ValueError(f"status {status!r} cannot be a final response")
        status_line = b"HTTP/1.1 %d \r\n" % status
    body = response.body
    if type(body) is not bytes:
        if not isinstance(body, (bytearray, memoryview)):
            raise ValueError(f"response body must be bytes, not {type(body).__name__}")
        body = bytes(body)
    if status == 204 or status == 304:
        head = status_line
        body = b""
    else:
        head = status_line + _content_type_line(response.content_type) + b"content-length: %d\r\n" % len(body)
    if response.headers:
        head += b"".join(
            [_header_line(name, value) for name, value in response.headers if name.lower() not in _SKIPPED_HEADERS]
        )
    if close:
        head += b"connection: close\r\n"
    if send_body and body:
        return head + b"\r\n" + body
    return head + b"\r\n"


def _protocol_refusal(exc: httptools.HttpParserError) -> _Refuse:
    """The answer to what llhttp refused, with h11's statuses where it had one."""
    reason = str(exc)
    lowered = reason.lower()
    if "content-length overflow" in lowered:
        return _Refuse(413, "request body exceeds the limit (Content-Length too large)")
    if "transfer-encoding" in lowered and "content-length" in lowered:
        return _Refuse(400, "request has both Content-Length and Transfer-Encoding")
    if "transfer-encoding" in lowered:
        return _Refuse(501, "only Transfer-Encoding: chunked is supported")
    if "pri/upgrade" in lowered:
        return _Refuse(400, "HTTP/2 is not supported: send HTTP/1.1")
    if "http version" in lowered:
        return _Refuse(400, "malformed HTTP request: an HTTP version other than 1.0 or 1.1")
    return _Refuse(400, f"malformed HTTP request: {reason}")


def _client_address(transport: asyncio.BaseTransport) -> tuple[str, int]:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, (tuple, list)) and len(peer) >= 2:
        return (str(peer[0]), int(peer[1]))
    return ("", 0)


def _has_token(value: bytes, token: bytes) -> bool:
    return any(part.strip() == token for part in value.lower().split(b","))


def _wants_websocket(request: Request) -> bool:
    return any(_has_token(value.encode("latin-1"), b"websocket") for value in request.header_values("upgrade"))


# ------------------------------------------------------------ connection state

_IDLE = 0  # waiting for the first byte of a request (keep-alive idle timer)
_RECV = 1  # receiving head/body (request deadline)
_HANDLE = 2  # the handler is running (handler timeout)
_WAIT_WRITE = 3  # response written, the client is not reading (transport paused writing)
_LINGER = 4  # half-closed after an early error, discarding input
_CLOSING = 5  # transport.close() called, the last response is still being flushed
_CLOSED = 6  # transport closed or handed over (websocket)

_HIGH_WATER = 64 * 1024  # pipelined bytes buffered while a request is handled


class _Refuse(Exception):
    """Raised in a parser callback: the request is refused with this status (parsing stops)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class _Parsed:
    """A complete request waiting its turn (pipelining), or the refusal that ended parsing."""

    request: Request | None
    keep_alive: bool = True
    refusal: _Refuse | None = None


class _HttpConnection(asyncio.Protocol):
    """One TCP connection speaking HTTP/1.1 (keep-alive, pipelining).

    httptools (llhttp, strict: no lenient flags) parses; its callbacks below add what
    llhttp leaves to the server (sizes, Host, Transfer-Encoding other than chunked,
    the HTTP version) and queue each complete request, so pipelined requests wait
    their turn while one is handled.
    """

    __slots__ = (
        "_server",
        "_loop",
        "_limits",
        "_stats",
        "_logger",
        "_parser",
        "_transport",
        "_client",
        "_state",
        "_deadline",
        "_timer",
        "_ready",
        "_receiving",
        "_in_head",
        "_head_fed",
        "_chunk_len",
        "_chunk_done",
        "_head_size",
        "_url",
        "_headers",
        "_content_length",
        "_chunked",
        "_close_asked",
        "_has_host",
        "_expects_continue",
        "_method",
        "_version",
        "_body",
        "_body_size",
        "_upgrade_tail",
        "_current_method",
        "_keep_alive",
        "_pending_bytes",
        "_eof",
        "_reading_paused",
        "_write_paused",
        "_in_process",
        "_again",
        "_sync_response",
        "_gen",
        "_task",
        "_linger_left",
    )

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._loop = server._loop
        self._limits = server.limits
        self._stats = server.stats
        self._logger = server.logger
        # None once parsing has ended: after a refusal, or at an upgrade (the bytes after it are not HTTP).
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        # Set by connection_made before any other call; never None after that (no checks on the hot path).
        self._transport: asyncio.Transport = None  # type: ignore[assignment]
        self._client: tuple[str, int] = ("", 0)
        self._state = _IDLE
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._ready: deque[_Parsed] = deque()  # parsed, not yet handled
        # The request being parsed (it may be a pipelined one while another is handled).
        self._receiving = False
        self._in_head = False
        self._head_fed = 0
        self._chunk_len = 0  # the chunk being fed, and whether a message ended in it
        self._chunk_done = False
        self._head_size = 0
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._content_length = -1
        self._chunked = False
        self._close_asked = False
        self._has_host = False
        self._expects_continue = False
        self._method = ""
        self._version = "1.1"
        self._body: list[bytes] = []
        self._body_size = 0
        self._upgrade_tail: bytes | None = None  # bytes after an upgrade request
        # The request being handled.
        self._current_method = ""
        self._keep_alive = True
        self._pending_bytes = 0  # received while a request is handled
        self._eof = False
        self._reading_paused = False
        self._write_paused = False
        self._in_process = False
        self._again = False
        self._sync_response: Response | None = None
        self._gen = 0
        self._task: asyncio.Task[None] | None = None
        self._linger_left = 0

    # ---------------------------------------------------------------- timers

    def _arm(self, deadline: float) -> None:
        """Move the connection's deadline; touch the timer only if it must fire earlier."""
        self._deadline = deadline
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        state = self._state
        if state == _CLOSED:
            return
        if self._loop.time() + 0.001 < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)
            return
        if state == _IDLE:
            self._close()
        elif state == _WAIT_WRITE or state == _CLOSING:
            # The client has not read our response for idle + deadline seconds.
            self._state = _CLOSED
            self._transport.abort()
        elif state == _RECV:
            self._fail(408, f"request not received within {self._limits.request_deadline_s:g} s")
        elif state == _HANDLE:
            self._handler_timed_out()
        elif state == _LINGER:
            transport = self._transport
            self._state = _CLOSED
            if transport.get_write_buffer_size():
                transport.abort()
            else:
                transport.close()

    # ------------------------------------------------------- protocol events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # asyncio.start_server's transports are streams
        self._client = _client_address(transport)
        if not self._server._attach(self):
            self._stats.connections_rejected += 1
            if self._server._closing:
                self._fail(503, "the server is shutting down")
            else:
                n = self._limits.max_connections
                self._fail(503, f"too many open connections (limit {n}); try again shortly")
            return
        self._arm(self._loop.time() + self._limits.keepalive_idle_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._server._detach(self)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state >= _LINGER:
            if state == _LINGER:
                self._linger_left -= len(data)
                if self._linger_left <= 0:
                    self._close()
            return
        if state == _IDLE:
            self._state = _RECV
            self._arm(self._loop.time() + self._limits.request_deadline_s)
        elif state == _HANDLE or state == _WAIT_WRITE:
            # Pipelined bytes of the next request: parsed now, handled in turn; we bound them.
            self._pending_bytes += len(data)
            if self._pending_bytes > _HIGH_WATER and not self._reading_paused:
                self._reading_paused = True
                self._transport.pause_reading()
        self._feed(data)
        self._process()

    def _feed(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            if self._upgrade_tail is not None:  # kept for the upgraded protocol (or the next request)
                self._upgrade_tail += data
            return
        if self._in_head:
            self._head_fed += len(data)  # a head still incomplete after these bytes is at least this long
        self._chunk_len = len(data)
        self._chunk_done = False
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._parser = None
            self._upgrade_tail = data[upgrade.args[0] :]
            return
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if not isinstance(refusal, _Refuse):  # pragma: no cover - a bug in a callback
                self._logger.error("HTTP parser callback failed: %r", refusal)
                refusal = _Refuse(500, "internal server error")
            self._refuse(refusal)
            return
        except httptools.HttpParserError as exc:
            self._refuse(_protocol_refusal(exc))
            return
        if self._in_head and self._head_fed > self._limits.max_head_bytes:
            self._refuse(_Refuse(431, f"request head exceeds the {self._limits.max_head_bytes}-byte limit"))

    def _refuse(self, refusal: _Refuse) -> None:
        """Parsing ends here: the refusal is answered in turn, after the requests before it."""
        self._parser = None
        self._receiving = False
        self._body = []
        self._ready.append(_Parsed(None, False, refusal))

    # httptools callbacks (llhttp has checked the syntax of what they get)

    def on_message_begin(self) -> None:
        self._receiving = True
        self._in_head = True
        # A message begun in a chunk where none ended began at its start (after at most a few
        # blank lines): the whole chunk is head so far. Otherwise it is counted from the next.
        self._head_fed = 0 if self._chunk_done else self._chunk_len
        self._head_size = 0
        self._url = b""
        self._headers = []
        self._content_length = -1
        self._chunked = False
        self._close_asked = False
        self._has_host = False
        self._expects_continue = False
        self._body = []
        self._body_size = 0
        if self._state == _IDLE:  # e.g. the rest of a pipelined burst, after the first was answered
            self._state = _RECV
            self._arm(self._loop.time() + self._limits.request_deadline_s)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self._limits.max_head_bytes:
            raise _Refuse(431, f"request head exceeds the {self._limits.max_head_bytes}-byte limit")
        if not self._in_head:
            return  # a chunked body's trailer: dropped, as h11 left it (it must not add to the headers)
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp drops the leading whitespace only (RFC 9110 5.5: both)
        if name == b"content-length":
            self._content_length = int(value)  # llhttp allows digits only, and one such header
        elif name == b"transfer-encoding":
            if self._chunked or value.lower() != b"chunked":
                raise _Refuse(501, "only Transfer-Encoding: chunked is supported")
            self._chunked = True
        elif name == b"connection":
            if _has_token(value, b"close"):
                self._close_asked = True
        elif name == b"host":
            self._has_host = True
        elif name == b"expect":
            self._expects_continue = value.lower() == b"100-continue"
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        assert parser is not None
        self._stats.requests += 1
        limits = self._limits
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Refuse(400, f"HTTP/{version} is not supported: send HTTP/1.1")
        if self._head_size + 12 > limits.max_head_bytes:  # the request line's method, spaces and version
            raise _Refuse(431, f"request head exceeds the {limits.max_head_bytes}-byte limit")
        if version == "1.1" and not self._has_host:
            raise _Refuse(400, "malformed HTTP request: missing mandatory Host: header")
        if self._content_length > limits.max_body_bytes:
            raise _Refuse(413, f"request body exceeds the {limits.max_body_bytes}-byte limit")
        self._method = parser.get_method().decode("ascii")
        self._version = version
        if (
            self._expects_continue
            and version == "1.1"
            and (self._content_length > 0 or self._chunked)
            and self._state == _RECV
            and not self._ready
        ):
            # Only for the request being received: a pipelined one's 100 would come before
            # the answer to the request ahead of it.
            self._transport.write(_CONTINUE_BYTES)
            self._stats.by_class[1] += 1

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self._limits.max_body_bytes:
            raise _Refuse(413, f"request body exceeds the {self._limits.max_body_bytes}-byte limit")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._chunk_done = True
        body = self._body
        self._body = []
        self._receiving = False
        request = Request(
            self._method,
            self._url.decode("ascii"),  # llhttp allows visible ASCII only
            tuple(self._headers),
            (body[0] if len(body) == 1 else b"".join(body)) if body else b"",
            self._client,
            self._version,
            time.perf_counter(),
        )
        self._ready.append(_Parsed(request, self._version == "1.1" and not self._close_asked))

    # ------------------------------------------------------------ dispatch

    def eof_received(self) -> bool | None:
        self._eof = True
        state = self._state
        if state == _HANDLE or state == _WAIT_WRITE:
            return True  # keep the transport open to write the response
        if state == _RECV and self._receiving:
            self._fail(400, "the connection was closed before the request was complete")
        # _IDLE: the client closed between requests. _LINGER: done.
        return None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._state == _WAIT_WRITE:
            self._continue()

    def _process(self) -> None:
        """Handle the parsed requests in turn (re-entrant calls just ask for another pass)."""
        if self._in_process:
            self._again = True
            return
        self._in_process = True
        try:
            again = True
            while again:
                self._again = False
                while self._ready and self._state <= _RECV:
                    parsed = self._ready.popleft()
                    if parsed.refusal is not None:
                        self._fail(parsed.refusal.status, parsed.refusal.message)
                        break
                    assert parsed.request is not None
                    self._dispatch(parsed.request, parsed.keep_alive)
                    response = self._sync_response
                    if response is not None:
                        self._sync_response = None
                        self._respond(response)
                again = self._again
        finally:
            self._in_process = False

    def _dispatch(self, request: Request, keep_alive: bool) -> None:
        """Run the handler for a complete request (or answer at once)."""
        self._state = _HANDLE
        self._keep_alive = keep_alive
        self._current_method = request.method
        server = self._server
        router = server.router
        if router is None:
            handler = cast(Handler, server._handler)  # no router means a handler (__init__)
        else:
            method = request.method
            path = request.target.split("?", 1)[0]
            if method == "GET" and (router._ws or router._ws_prefixes):
                ws_route = router.websocket_route(path)
                if ws_route is not None and _wants_websocket(request):
                    ws_handler, admit = ws_route
                    refusal = admit(request) if admit is not None else None
                    if refusal is not None:
                        self._sync_response = refusal
                        return
                    self._upgrade(request, ws_handler)
                    return
            matched = router.match(method, path)
            if isinstance(matched, Response):  # 404/405: answered without a task
                self._sync_response = matched
                return
            handler = matched
        self._gen += 1
        self._arm(self._loop.time() + self._limits.handler_timeout_s)
        task = self._loop.create_task(self._run(handler, request, self._gen))
        if not task.done():  # an eager task factory may have finished it already
            self._task = task
            server._tasks.add(task)
            task.add_done_callback(server._tasks.discard)

    async def _run(self, handler: Handler, request: Request, gen: int) -> None:
        try:
            response = await handler(request)
        except asyncio.CancelledError:
            if gen != self._gen or self._state != _HANDLE:
                return  # timed out (504 already sent) or connection gone
            raise
        except Exception:
            if gen != self._gen or self._state != _HANDLE:
                return
            self._logger.exception("handler for %s %s raised", request.method, _clip(request.path, 100))
            response = _INTERNAL_ERROR
        if gen != self._gen or self._state != _HANDLE:
            return
        self._task = None
        if not isinstance(response, Response):
            self._logger.error(
                "handler for %s %s returned %s, not a Response",
                request.method,
                _clip(request.path, 100),
                type(response).__name__,
            )
            response = _INTERNAL_ERROR
        try:
            self._respond(response)
        except Exception:  # pragma: no cover - a bug here must not go unnoticed
            self._logger.exception("writing the response failed")
            self._state = _CLOSED
            self._transport.abort()

    def _handler_timed_out(self) -> None:
        self._gen += 1  # the running task's result, if any, is discarded
        task = self._task
        self._task = None
        if task is not None:
            task.cancel()
        self._respond(Response.error(504, f"the handler did not answer within {self._limits.handler_timeout_s:g} s"))

    # ------------------------------------------------------------ responses

    def _respond(self, response: Response) -> None:
        if self._state != _HANDLE:
            return
        close = not self._keep_alive or self._eof or self._server._closing
        send_body = self._current_method != "HEAD"
        try:
            data = _serialize(response, close, send_body)
        except ValueError as exc:
            self._logger.error("invalid response (status %r): %s", response.status, exc)
            response = _INTERNAL_ERROR
            data = _serialize(response, close, send_body)
        self._transport.write(data)
        status = response.status
        self._stats.by_class[status // 100] += 1
        if close:
            self._close_after_response()
        else:
            self._start_next()

    def _start_next(self) -> None:
        """Next request/response cycle on a keep-alive connection."""
        self._pending_bytes = 0
        self._current_method = ""
        tail = self._upgrade_tail
        if tail is not None and self._parser is None:
            # The request asked for an upgrade this route does not do: what follows is HTTP.
            self._upgrade_tail = None
            self._parser = httptools.HttpRequestParser(self)
            if tail:
                self._feed(tail)
        self._continue()

    def _continue(self) -> None:
        if self._write_paused:
            self._state = _WAIT_WRITE  # resume_writing() continues here
            self._arm(self._loop.time() + self._limits.keepalive_idle_s + self._limits.request_deadline_s)
            return
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()
        if self._ready or self._receiving:
            # The next request has arrived (whole or in part): its deadline counts from now.
            self._state = _RECV
            self._arm(self._loop.time() + self._limits.request_deadline_s)
            if self._eof and not self._ready:
                self._fail(400, "the connection was closed before the request was complete")
                return
            self._process()
        elif self._eof:
            self._close()
        else:
            self._state = _IDLE
            self._arm(self._loop.time() + self._limits.keepalive_idle_s)

    # ------------------------------------------------------------- closing

    def _close(self) -> None:
        state = self._state
        if state == _CLOSED or state == _CLOSING:
            return
        transport = self._transport
        transport.close()
        if transport.get_write_buffer_size():
            # close() waits for the buffer to drain; bound that for a client that never reads.
            self._state = _CLOSING
            self._arm(self._loop.time() + self._limits.keepalive_idle_s + self._limits.request_deadline_s)
        else:
            self._state = _CLOSED

    def _close_after_response(self) -> None:
        unread = self._ready or self._receiving or self._upgrade_tail
        if unread and not self._eof:
            self._linger()  # unread pipelined bytes: avoid a reset
        else:
            self._close()

    def _fail(self, status: int, message: str) -> None:
        """Answer an early error with Connection: close, then linger and close."""
        if self._state >= _LINGER:
            return
        self._logger.debug("%s:%s -> %d %s", self._client[0], self._client[1], status, message)
        self._transport.write(_serialize(Response.error(status, message), True, True))
        self._stats.by_class[status // 100] += 1
        self._parser = None
        self._ready.clear()
        self._receiving = False
        self._body = []
        self._linger()

    def _linger(self) -> None:
        transport = self._transport
        if self._eof or not transport.can_write_eof():
            self._close()
            return
        self._state = _LINGER
        try:
            transport.write_eof()
        except OSError:
            self._close()
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._linger_left = self._limits.linger_bytes
        self._arm(self._loop.time() + self._limits.linger_s)

    def _upgrade(self, request: Request, ws_handler: WebSocketHandler) -> None:
        from .ws import WebSocket

        ws = WebSocket(
            request,
            max_message_bytes=self._limits.max_ws_message_bytes,
            ping_interval_s=self._limits.ws_ping_interval_s,
            logger=self._logger,
        )
        ws_response = ws.handshake()
        if ws_response.status_code != 101:
            lines = ws_response.body.decode("utf-8", "replace").strip().splitlines()
            self._fail(ws_response.status_code, lines[0] if lines else "invalid WebSocket handshake")
            return
        if self._parser is not None:
            # No upgrade in the parser's eyes (no `Connection: upgrade`): the handshake
            # above refuses that, so this is defensive.
            self._fail(400, "invalid WebSocket handshake")
            return
        trailing = self._upgrade_tail or b""
        self._upgrade_tail = None
        self._state = _CLOSED  # this object is done; the WebSocket owns the transport now
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()
        self._stats.by_class[1] += 1
        self._server._hand_over(self, ws)
        ws.attach(self._transport, ws_response, trailing, self._eof)
        self._server._start_ws_handler(ws_handler, request, ws)

    # ------------------------------------------------------------- shutdown

    def shutdown(self) -> None:
        """The server is closing: drop an idle connection, let a busy one finish."""
        if self._state == _IDLE or self._state == _WAIT_WRITE:
            self._close()
        # _RECV / _HANDLE: the response will carry Connection: close.

    def abort(self) -> None:
        self._state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()


class HttpServer:
    """The webhook receiver. `await start()`, then `await close()`.

    `router_or_handler` is a `Router`, or a single async handler that receives
    every request (no 404/405, no websockets).
    """

    def __init__(
        self,
        router_or_handler: Router | Handler,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        limits: Limits | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if isinstance(router_or_handler, Router):
            self.router: Router | None = router_or_handler
            self._handler: Handler | None = None
        elif callable(router_or_handler):
            self.router = None
            self._handler = router_or_handler
        else:
            raise TypeError("HttpServer needs a Router or an async handler")
        self.host = host
        self._requested_port = port
        self.port = port
        self.limits = limits or Limits()
        self.logger = logger or logging.getLogger("console.receiver.http")
        self.stats = ServerStats()
        # Set by start(); the server does nothing before it.
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._server: asyncio.Server | None = None
        self._connections: set[_HttpConnection | WebSocket] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._idle: asyncio.Event | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def is_serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @property
    def connections(self) -> int:
        """Open connections, HTTP and websocket."""
        return len(self._connections)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._server = await self._loop.create_server(
            lambda: _HttpConnection(self),
            self.host,
            self._requested_port,
            backlog=min(2048, max(128, self.limits.max_connections)),
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # connection bookkeeping (called by connections)

    def _attach(self, conn: _HttpConnection) -> bool:
        self._connections.add(conn)
        stats = self.stats
        stats.connections_total += 1
        stats.connections_open = len(self._connections)
        return len(self._connections) <= self.limits.max_connections and not self._closing

    def _detach(self, conn: _HttpConnection | WebSocket) -> None:
        self._connections.discard(conn)
        self.stats.connections_open = len(self._connections)
        if not self._connections and self._idle is not None:
            self._idle.set()

    def _hand_over(self, conn: _HttpConnection, ws: WebSocket) -> None:
        self._connections.discard(conn)
        self._connections.add(ws)
        self.stats.websockets_open += 1

        def closed() -> None:
            self.stats.websockets_open -= 1
            self._detach(ws)

        ws.on_connection_lost = closed

    def _start_ws_handler(self, ws_handler: WebSocketHandler, request: Request, ws: WebSocket) -> None:
        task = self._loop.create_task(self._run_ws(ws_handler, request, ws))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_ws(self, ws_handler: WebSocketHandler, request: Request, ws: WebSocket) -> None:
        from .ws import WebSocketClosed

        code, reason = 1000, ""
        try:
            await ws_handler(request, ws)
        except WebSocketClosed:
            pass
        except asyncio.CancelledError:
            ws.abort()
            raise
        except Exception:
            self.logger.exception("websocket handler for %s raised", _clip(request.path, 100))
            code, reason = 1011, "internal error"
        try:
            await ws.close(code, reason)
        except Exception:  # pragma: no cover
            ws.abort()

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting; let in-flight requests finish for up to `grace_s`; close the rest.

        Idle keep-alive connections are closed at once, busy ones after their
        response (with Connection: close), websockets get close code 1001.
        Whatever is left after `grace_s` is aborted and its handler cancelled.
        Returns within grace_s + 2 s at most, on Python 3.11 to 3.13 (it does not
        depend on `Server.wait_closed()`, which hangs on 3.12+ while clients are
        connected). Calling it again, or before `start()`, does nothing.
        """
        server = self._server
        if server is None:
            return
        self._server = None
        self._closing = True
        server.close()
        self._idle = asyncio.Event()
        if not self._connections:
            self._idle.set()
        for conn in list(self._connections):
            conn.shutdown()
        if self._connections and grace_s > 0:
            try:
                await asyncio.wait_for(self._idle.wait(), grace_s)
            except TimeoutError:
                pass
        for conn in list(self._connections):
            conn.abort()
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
        try:
            await asyncio.wait_for(server.wait_closed(), 1.0)
        except TimeoutError:  # pragma: no cover - defensive, see module docstring
            self.logger.warning("listener did not report closed within 1 s")
        self._idle = None
