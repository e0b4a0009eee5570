"""The embedded HTTP server, over real loopback sockets (no mocks).

Limits are small so that timeouts fire in fractions of a second. Raw sockets
are used wherever the exact bytes matter (pipelining, malformed input, early
responses); httpx where a real client's behaviour matters (lingering close).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from console.config import ReceiverSettings
from console.core.http_types import Request
from console.receiver.http import HttpServer, Limits, Router
from console.receiver.ws import WebSocket, WebSocketClosed
from tests.helpers.http_server import BIG, TEST_LIMITS, echo, make_router

# ------------------------------------------------------------------ fixtures

ServerFactory = Callable[..., Awaitable[HttpServer]]


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    servers: list[HttpServer] = []

    async def factory(router: Router | None = None, **overrides: object) -> HttpServer:
        limits = Limits(**{**TEST_LIMITS.__dict__, **overrides})
        server = HttpServer(router or make_router(), host="127.0.0.1", port=0, limits=limits)
        await server.start()
        servers.append(server)
        return server

    yield factory
    for raw in Raw.opened:
        raw.close()
    Raw.opened.clear()
    for server in servers:
        await asyncio.wait_for(server.close(grace_s=0.5), 5)


@pytest.fixture
async def server(make_server: ServerFactory) -> HttpServer:
    return await make_server()


# ------------------------------------------------------------------ raw client


class Raw:
    """A raw TCP client that reads responses framed by Content-Length."""

    opened: list[Raw] = []

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: HttpServer) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        raw = cls(reader, writer)
        cls.opened.append(raw)
        return raw

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, timeout: float = 3.0) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout) if length else b""
        return status, headers, body

    async def closed_by_server(self, timeout: float = 3.0) -> bool:
        """True if the server closed the connection (EOF) within the timeout."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
        except (ConnectionResetError, BrokenPipeError):
            return True
        return data == b""

    def close(self) -> None:
        self.writer.close()


def request_bytes(
    method: str = "GET",
    path: str = "/echo",
    body: bytes = b"",
    headers: tuple[tuple[str, str], ...] = (),
    content_length: bool = True,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    lines += [f"{name}: {value}" for name, value in headers]
    if content_length and (body or method in ("POST", "PUT")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def error_message(body: bytes) -> str:
    payload = json.loads(body)
    assert set(payload) == {"error"}
    return payload["error"]["message"]


async def assert_still_serving(server: HttpServer) -> None:
    async with httpx.AsyncClient(timeout=3) as client:
        reply = await client.post(server.url + "/echo", content=b"still here")
    assert reply.status_code == 200
    assert reply.json()["body"] == "still here"


# ------------------------------------------------------------------ basics


async def test_keep_alive_serves_several_requests_on_one_connection(server: HttpServer) -> None:
    raw = await Raw.open(server)
    ports = set()
    for i in range(5):
        await raw.send(request_bytes("POST", f"/echo?i={i}", f"body {i}".encode()))
        status, headers, body = await raw.response()
        assert status == 200
        assert headers["content-type"] == "application/json"
        assert int(headers["content-length"]) == len(body)
        assert "connection" not in headers
        data = json.loads(body)
        assert data["body"] == f"body {i}"
        assert data["target"] == f"/echo?i={i}"
        assert data["path"] == "/echo"
        ports.add(data["client"][1])
    assert len(ports) == 1  # one TCP connection
    raw.close()
    assert server.stats.connections_total == 1


async def test_request_values_reach_the_handler(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(
        b"POST /echo?a=1&b=%20x HTTP/1.1\r\nHost: test\r\nX-Custom: Value \xe9\r\n"
        b"x-custom: second\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    status, _, body = await raw.response()
    assert status == 200
    data = json.loads(body)
    assert data["method"] == "POST"
    assert data["target"] == "/echo?a=1&b=%20x"
    assert data["http_version"] == "1.1"
    assert data["headers"] == [
        ["host", "test"],
        ["x-custom", "Value \xe9"],
        ["x-custom", "second"],
        ["content-type", "application/json"],
        ["content-length", "2"],
    ]
    assert data["client"][0] == "127.0.0.1"
    raw.close()


async def test_pipelined_requests_are_answered_in_order(server: HttpServer) -> None:
    raw = await Raw.open(server)
    batch = b"".join(
        [
            request_bytes("POST", "/echo?n=1", b"one"),
            request_bytes("GET", "/missing"),  # answered without a task
            request_bytes("GET", "/briefly-slow"),
            request_bytes("POST", "/echo?n=2", b"two"),
            request_bytes("GET", "/echo?n=3"),
        ]
    )
    await raw.send(batch)
    replies = [await raw.response() for _ in range(5)]
    assert [status for status, _, _ in replies] == [200, 404, 200, 200, 200]
    assert json.loads(replies[0][2])["body"] == "one"
    assert replies[2][2] == b"done"
    assert json.loads(replies[3][2])["body"] == "two"
    assert json.loads(replies[4][2])["target"] == "/echo?n=3"
    # The connection is still usable afterwards.
    await raw.send(request_bytes("GET", "/echo?n=4"))
    assert (await raw.response())[0] == 200
    raw.close()


async def test_pipelined_request_split_across_writes(server: HttpServer) -> None:
    raw = await Raw.open(server)
    first = request_bytes("POST", "/echo", b"first")
    second = request_bytes("POST", "/echo", b"second")
    await raw.send(first + second[:10])
    await asyncio.sleep(0.05)
    await raw.send(second[10:])
    assert json.loads((await raw.response())[2])["body"] == "first"
    assert json.loads((await raw.response())[2])["body"] == "second"
    raw.close()


async def test_expect_100_continue(server: HttpServer) -> None:
    raw = await Raw.open(server)
    body = b'{"hello": "world"}'
    expect = (("Expect", "100-continue"), ("Content-Length", str(len(body))))
    await raw.send(request_bytes("POST", "/echo", headers=expect, content_length=False))
    interim = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), 3)
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    await raw.send(body)
    status, _, reply = await raw.response()
    assert status == 200
    assert json.loads(reply)["body"] == body.decode()
    raw.close()


async def test_httpx_expect_100_continue(server: HttpServer) -> None:
    async with httpx.AsyncClient(timeout=3) as client:
        reply = await client.post(server.url + "/echo", content=b"x" * 1000, headers={"Expect": "100-continue"})
    assert reply.status_code == 200
    assert reply.json()["body"] == "x" * 1000


async def test_chunked_request_body(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    )
    status, _, body = await raw.response()
    assert status == 200
    assert json.loads(body)["body"] == "hello world"
    raw.close()


async def test_httpx_streamed_body_is_chunked(server: HttpServer) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(3):
            yield f"part{i};".encode()

    async with httpx.AsyncClient(timeout=3) as client:
        reply = await client.post(server.url + "/echo", content=parts())
    assert reply.status_code == 200
    assert reply.json()["body"] == "part0;part1;part2;"


async def test_head_request_gets_headers_only(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(request_bytes("HEAD", "/echo"))
    head = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: " in head
    # No body follows: the next response starts right away.
    await raw.send(request_bytes("GET", "/echo"))
    status, _, body = await raw.response()
    assert status == 200 and json.loads(body)["method"] == "GET"
    raw.close()


async def test_http_1_0_request_is_answered_and_closed(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(b"GET /echo HTTP/1.0\r\n\r\n")
    status, headers, body = await raw.response()
    assert status == 200
    assert headers["connection"] == "close"
    assert json.loads(body)["http_version"] == "1.0"
    assert await raw.closed_by_server()


async def test_connection_close_from_client(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", "/echo", headers=(("Connection", "close"),)))
    status, headers, _ = await raw.response()
    assert status == 200 and headers["connection"] == "close"
    assert await raw.closed_by_server()


async def test_client_half_close_after_request_still_gets_response(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", "/briefly-slow"))
    raw.writer.write_eof()
    status, headers, body = await raw.response()
    assert status == 200 and body == b"done"
    assert headers["connection"] == "close"
    assert await raw.closed_by_server()


async def test_large_responses_to_a_slow_reader(server: HttpServer) -> None:
    """Pipelined requests wait while the client is not reading our output."""
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", "/big") + request_bytes("GET", "/big") + request_bytes("GET", "/echo"))
    await asyncio.sleep(0.3)  # not reading: the server's writes pause
    first = await raw.response()
    second = await raw.response()
    third = await raw.response()
    assert [first[0], second[0], third[0]] == [200, 200, 200]
    assert first[2] == BIG and second[2] == BIG
    assert first[1]["content-type"] == "application/octet-stream"
    raw.close()


# ------------------------------------------------------------------ routing


async def test_404_and_405_with_allow(server: HttpServer) -> None:
    async with httpx.AsyncClient(timeout=3) as client:
        missing = await client.get(server.url + "/nowhere?x=1")
        wrong = await client.delete(server.url + "/echo")
        head_ok = await client.head(server.url + "/echo")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json() == {"error": {"status": 404, "message": "no route for /nowhere"}}
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, HEAD, POST"
    assert "DELETE" in error_message(wrong.content)
    assert head_ok.status_code == 200


async def test_plain_handler_receives_everything(make_server: ServerFactory) -> None:
    server = HttpServer(echo, port=0, limits=TEST_LIMITS)
    await server.start()
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            reply = await client.put(server.url + "/anything/at/all?q=1", content=b"x")
        assert reply.status_code == 200
        assert reply.json()["method"] == "PUT"
        assert reply.json()["target"] == "/anything/at/all?q=1"
    finally:
        await server.close()


async def test_router_rejects_duplicates() -> None:
    router = Router()
    router.add("post", "/a", echo)
    with pytest.raises(ValueError):
        router.add("POST", "/a", echo)
    with pytest.raises(ValueError):
        router.add("GET", "no-slash", echo)
    assert router.routes() == [("POST", "/a")]


# ------------------------------------------------------------------ limits


async def test_content_length_over_limit_is_refused_before_the_body(server: HttpServer) -> None:
    raw = await Raw.open(server)
    # Only the head is sent; the server must answer without waiting for 10 MB.
    ten_mb = (("Content-Length", str(10 * 1024 * 1024)),)
    await raw.send(request_bytes("POST", "/echo", headers=ten_mb, content_length=False))
    status, headers, body = await raw.response()
    assert status == 413
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert error_message(body) == "request body exceeds the 65536-byte limit"
    assert await raw.closed_by_server()
    await assert_still_serving(server)


async def test_content_length_over_limit_with_expect_gets_no_100(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(
        request_bytes(
            "POST", "/echo", headers=(("Expect", "100-continue"), ("Content-Length", "1000000")), content_length=False
        )
    )
    status, _, _ = await raw.response()  # the first thing read is the 413, not a 100
    assert status == 413
    assert await raw.closed_by_server()


async def test_httpx_sees_413_thanks_to_lingering_close(server: HttpServer) -> None:
    """httpx writes the whole 4 MB body; without a lingering close it gets a reset (ReadError)."""
    async with httpx.AsyncClient(timeout=5) as client:
        reply = await client.post(server.url + "/echo", content=b"x" * (4 * 1024 * 1024))
    assert reply.status_code == 413
    assert error_message(reply.content) == "request body exceeds the 65536-byte limit"
    await assert_still_serving(server)


async def test_chunked_body_over_limit(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n%s\r\n" % (16 * 1024, b"y" * 16 * 1024)
    for _ in range(5):  # 80 KiB > 64 KiB
        await raw.send(chunk)
    status, headers, body = await raw.response()
    assert status == 413
    assert headers["connection"] == "close"
    assert "65536-byte limit" in error_message(body)
    assert await raw.closed_by_server()
    await assert_still_serving(server)


async def test_complete_oversized_head_in_one_read_gets_431(server: HttpServer) -> None:
    raw = await Raw.open(server)
    # 20 KB of headers, complete, sent at once: h11 alone would accept it.
    headers = tuple((f"X-Filler-{i}", "f" * 190) for i in range(100))
    await raw.send(request_bytes("GET", "/echo", headers=headers))
    status, headers_out, body = await raw.response()
    assert status == 431
    assert headers_out["connection"] == "close"
    assert error_message(body) == "request head exceeds the 16384-byte limit"
    assert await raw.closed_by_server()
    await assert_still_serving(server)


async def test_incomplete_oversized_head_gets_431(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(b"GET /echo HTTP/1.1\r\nHost: test\r\nX-Long: " + b"z" * 20000)  # never finished
    status, _, body = await raw.response()
    assert status == 431
    assert "16384-byte limit" in error_message(body)
    assert await raw.closed_by_server()
    await assert_still_serving(server)


async def test_garbage_request_line_gets_400(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(b"THIS IS NOT HTTP\r\n\r\n")
    status, headers, body = await raw.response()
    assert status == 400
    assert headers["connection"] == "close"
    assert error_message(body).startswith("malformed HTTP request")
    assert await raw.closed_by_server()
    await assert_still_serving(server)


@pytest.mark.parametrize(
    "raw_request",
    [
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n\r\n",
            id="cl-and-te",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            id="conflicting-content-lengths",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
            id="bad-chunk-terminator",
        ),
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(b"GET /echo HTTP/1.1\r\n\r\n", id="missing-host"),
        pytest.param(b"GET /echo HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", id="space-in-header-name"),
    ],
)
async def test_malformed_framing_gets_400_and_close(server: HttpServer, raw_request: bytes) -> None:
    raw = await Raw.open(server)
    await raw.send(raw_request)
    status, headers, body = await raw.response()
    assert status == 400
    assert headers["connection"] == "close"
    assert error_message(body)
    assert await raw.closed_by_server()
    await assert_still_serving(server)


async def test_unsupported_transfer_encoding_gets_501(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n")
    status, _, _ = await raw.response()
    assert status == 501
    assert await raw.closed_by_server()
    await assert_still_serving(server)


async def test_trickling_client_gets_408_at_the_deadline(server: HttpServer) -> None:
    raw = await Raw.open(server)
    payload = request_bytes("POST", "/echo", b"z" * 100)

    async def trickle() -> None:
        for byte in payload:
            raw.writer.write(bytes([byte]))
            await asyncio.sleep(0.02)  # each byte well inside any per-read timeout

    started = time.monotonic()
    trickler = asyncio.create_task(trickle())
    try:
        status, headers, body = await raw.response(timeout=3)
    finally:
        trickler.cancel()
    elapsed = time.monotonic() - started
    assert status == 408
    assert headers["connection"] == "close"
    assert error_message(body) == "request not received within 0.5 s"
    assert 0.4 <= elapsed < 1.5
    assert await raw.closed_by_server()
    await assert_still_serving(server)


async def test_stalled_body_gets_408(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(request_bytes("POST", "/echo", headers=(("Content-Length", "100"),), content_length=False) + b"half")
    status, _, _ = await raw.response(timeout=3)
    assert status == 408
    assert await raw.closed_by_server()


async def test_idle_keep_alive_connection_is_closed_silently(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", "/echo"))
    assert (await raw.response())[0] == 200
    started = time.monotonic()
    data = await asyncio.wait_for(raw.reader.read(1024), 3)
    assert data == b""  # closed without a response
    assert 0.3 <= time.monotonic() - started < 1.5


async def test_connection_without_any_request_is_closed(server: HttpServer) -> None:
    raw = await Raw.open(server)
    started = time.monotonic()
    assert await asyncio.wait_for(raw.reader.read(1024), 3) == b""
    assert time.monotonic() - started < 1.5


async def test_each_timer_applies_only_to_its_own_phase(make_server: ServerFactory) -> None:
    """A short idle timeout must not cut a slow handler or a request being received."""
    server = await make_server(keepalive_idle_s=0.15, request_deadline_s=2.0, handler_timeout_s=2.0)
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", "/briefly-slow"))  # 0.3 s handler > 0.15 s idle
    assert (await raw.response())[:3:2] == (200, b"done")
    payload = request_bytes("POST", "/echo", b"patience")
    await raw.send(payload[:20])
    await asyncio.sleep(0.4)  # mid-request: the request deadline applies, not the idle timeout
    await raw.send(payload[20:])
    status, _, body = await raw.response()
    assert status == 200 and json.loads(body)["body"] == "patience"
    # Back to idle: now the short idle timeout closes the connection.
    assert await raw.closed_by_server(timeout=2)


async def test_connection_cap_answers_503(make_server: ServerFactory) -> None:
    server = await make_server(max_connections=2, keepalive_idle_s=5.0)
    first, second = await Raw.open(server), await Raw.open(server)
    await first.send(request_bytes("GET", "/echo"))
    assert (await first.response())[0] == 200
    third = await Raw.open(server)
    await third.send(request_bytes("GET", "/echo"))
    status, headers, body = await third.response()
    assert status == 503
    assert headers["connection"] == "close"
    assert "limit 2" in error_message(body)
    assert await third.closed_by_server()
    third.close()
    assert server.stats.connections_rejected == 1
    # Once a slot frees up, new connections are served again.
    second.close()
    for _ in range(50):
        if server.stats.connections_open < 2:
            break
        await asyncio.sleep(0.02)
    fourth = await Raw.open(server)
    await fourth.send(request_bytes("GET", "/echo"))
    assert (await fourth.response())[0] == 200
    first.close()
    fourth.close()


# ------------------------------------------------------------------ handler failures


async def test_handler_exception_gives_500_and_the_connection_goes_on(
    server: HttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    raw = await Raw.open(server)
    with caplog.at_level(logging.ERROR, logger="console.receiver.http"):
        await raw.send(request_bytes("GET", "/boom"))
        status, headers, body = await raw.response()
    assert status == 500
    assert "connection" not in headers
    assert error_message(body) == "internal server error"
    assert b"secret" not in body
    assert any("secret detail" in (r.exc_text or "") for r in caplog.records)
    await raw.send(request_bytes("GET", "/echo"))
    assert (await raw.response())[0] == 200
    raw.close()


@pytest.mark.parametrize("path", ["/bad-header", "/not-a-response"])
async def test_invalid_handler_response_gives_500(server: HttpServer, path: str) -> None:
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", path))
    status, headers, body = await raw.response()
    assert status == 500
    assert "injected" not in headers
    await raw.send(request_bytes("GET", "/echo"))
    assert (await raw.response())[0] == 200
    raw.close()


async def test_204_has_no_body(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", "/no-content") + request_bytes("GET", "/echo"))
    status, headers, body = await raw.response()
    assert status == 204 and body == b"" and "content-length" not in headers
    assert (await raw.response())[0] == 200
    raw.close()


async def test_handler_timeout_gives_504_and_the_connection_goes_on(server: HttpServer) -> None:
    raw = await Raw.open(server)
    started = time.monotonic()
    await raw.send(request_bytes("GET", "/slow"))
    status, _, body = await raw.response()
    assert status == 504
    assert error_message(body) == "the handler did not answer within 0.5 s"
    assert time.monotonic() - started < 1.5
    await raw.send(request_bytes("GET", "/echo"))
    assert (await raw.response())[0] == 200
    raw.close()
    for _ in range(50):  # the timed-out handler task is cancelled, not leaked
        if not server._tasks:
            break
        await asyncio.sleep(0.01)
    assert not server._tasks


# ------------------------------------------------------------------ shutdown


async def test_shutdown_with_idle_keep_alive_connection_is_quick(make_server: ServerFactory) -> None:
    server = await make_server(keepalive_idle_s=30.0, request_deadline_s=30.0)
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", "/echo"))
    assert (await raw.response())[0] == 200
    started = time.monotonic()
    await asyncio.wait_for(server.close(grace_s=5.0), 4)
    assert time.monotonic() - started < 1.0
    assert await raw.closed_by_server(timeout=1)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_shutdown_lets_in_flight_requests_finish(make_server: ServerFactory) -> None:
    server = await make_server(keepalive_idle_s=30.0)
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", "/briefly-slow"))
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(server.close(grace_s=3.0))
    status, headers, body = await raw.response()
    assert (status, body) == (200, b"done")
    assert headers["connection"] == "close"
    await asyncio.wait_for(closing, 2)
    assert await raw.closed_by_server(timeout=1)


async def test_shutdown_does_not_wait_past_grace(make_server: ServerFactory) -> None:
    server = await make_server(handler_timeout_s=60.0, request_deadline_s=30.0)
    busy = await Raw.open(server)
    await busy.send(request_bytes("GET", "/slow"))
    half = await Raw.open(server)
    await half.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await asyncio.wait_for(server.close(grace_s=0.3), 4)
    assert time.monotonic() - started < 2.0
    assert await busy.closed_by_server(timeout=1)
    assert await half.closed_by_server(timeout=1)
    assert not server._tasks


# ------------------------------------------------------------------ websockets


async def test_websocket_echo(server: HttpServer) -> None:
    url = server.url.replace("http://", "ws://") + "/ws?call=1"
    async with ws_connect(url) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
        await ws.send(b"\x00\x01\x02")
        assert await ws.recv() == b"\x00\x01\x02"
        big = "é" * 20000  # 40 KB of UTF-8, under the 64 KiB limit
        await ws.send(big)
        assert await ws.recv() == big
        assert server.stats.websockets_open == 1
    for _ in range(50):
        if server.stats.websockets_open == 0:
            break
        await asyncio.sleep(0.01)
    assert server.stats.websockets_open == 0
    assert server.stats.connections_open == 0
    await assert_still_serving(server)


async def test_websocket_client_close_code_reaches_the_handler(make_server: ServerFactory) -> None:
    result: asyncio.Future[tuple[object, ...]] = asyncio.get_running_loop().create_future()

    async def handler(request: Request, ws: WebSocket) -> None:
        first = await ws.recv()
        end = await ws.recv()
        result.set_result((first, end, ws.closed, ws.close_code, ws.close_reason, request.query_params()))

    router = Router()
    router.add_websocket("/ws", handler)
    server = await make_server(router)
    async with ws_connect(server.url.replace("http://", "ws://") + "/ws?sid=7") as ws:
        await ws.send("x")
        await ws.close(4321, "operator hung up")
    assert await asyncio.wait_for(result, 3) == ("x", None, True, 4321, "operator hung up", {"sid": "7"})


async def test_websocket_fragmented_message(server: HttpServer) -> None:
    url = server.url.replace("http://", "ws://") + "/ws"
    async with ws_connect(url) as ws:
        await ws.send(["frag", "ment", "ed"])
        assert await ws.recv() == "fragmented"


async def test_websocket_message_too_big_closes_1009(server: HttpServer) -> None:
    url = server.url.replace("http://", "ws://") + "/ws"
    async with ws_connect(url, max_size=None) as ws:
        await ws.send(b"x" * (100 * 1024))
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 3)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_websocket_handler_error_closes_1011(server: HttpServer) -> None:
    url = server.url.replace("http://", "ws://") + "/ws-boom"
    async with ws_connect(url) as ws:
        await ws.send("trigger")
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 3)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011


async def test_websocket_server_side_close(server: HttpServer) -> None:
    url = server.url.replace("http://", "ws://") + "/ws-bye"
    async with ws_connect(url) as ws:
        assert await ws.recv() == "bye"
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 3)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4000, "done here")


async def test_websocket_peer_vanishing_ends_recv(make_server: ServerFactory) -> None:
    seen: list[object] = []
    done = asyncio.Event()

    async def watcher(request: Request, ws: WebSocket) -> None:
        seen.append(await ws.recv())
        seen.append(await ws.recv())  # the peer is gone: None, not a hang
        seen.append(ws.closed)
        seen.append(ws.close_code)
        with pytest.raises(WebSocketClosed):
            await ws.send("anyone?")
        done.set()

    router = Router()
    router.add_websocket("/ws", watcher)
    server = await make_server(router)
    raw = await Raw.open(server)
    await raw.send(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        # a masked text frame "hi", sent together with the handshake
        + bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2])
    )
    head = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), 3)
    assert head.startswith(b"HTTP/1.1 101 ")
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    await asyncio.sleep(0.05)
    raw.writer.transport.abort()  # vanish without a close frame
    await asyncio.wait_for(done.wait(), 3)
    assert seen == ["hi", None, True, 1006]


async def test_websocket_route_without_upgrade_gets_426(server: HttpServer) -> None:
    async with httpx.AsyncClient(timeout=3) as client:
        plain = await client.get(server.url + "/ws")
        post = await client.post(server.url + "/ws", content=b"x")
    assert plain.status_code == 426
    assert plain.headers["upgrade"] == "websocket"
    assert "WebSocket" in error_message(plain.content)
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


async def test_websocket_bad_handshake_gets_json_400(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: not-base64\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    status, headers, body = await raw.response()
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert "Sec-WebSocket-Key" in error_message(body)
    assert await raw.closed_by_server()


async def test_websocket_handshake_with_odd_header_bytes_gets_400(server: HttpServer) -> None:
    """h11 accepts obs-text in header values; websockets' Headers refuses them."""
    raw = await Raw.open(server)
    await raw.send(
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\xc3\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    status, _, body = await raw.response()
    assert status == 400
    assert "WebSocket" in error_message(body)
    assert await raw.closed_by_server()
    await assert_still_serving(server)


WS_HANDSHAKE = (
    b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_websocket_keepalive_pings(make_server: ServerFactory) -> None:
    ended = asyncio.Event()

    async def handler(request: Request, ws: WebSocket) -> None:
        while (message := await ws.recv()) is not None:
            await ws.send(message)
        ended.set()

    router = Router()
    router.add_websocket("/ws", handler)
    server = await make_server(router, ws_ping_interval_s=0.2)
    # A live client answers pings (websockets does it by itself) and stays connected.
    async with ws_connect(server.url.replace("http://", "ws://") + "/ws", ping_interval=None) as ws:
        await asyncio.sleep(0.7)
        await ws.send("still there")
        assert await ws.recv() == "still there"
    await asyncio.wait_for(ended.wait(), 3)
    ended.clear()
    # A silent peer (no pong, no FIN: a dropped network) is cut off after about two intervals.
    raw = await Raw.open(server)
    await raw.send(WS_HANDSHAKE)
    started = time.monotonic()
    await asyncio.wait_for(ended.wait(), 3)
    assert time.monotonic() - started < 1.5


async def test_upgrade_header_on_plain_route_is_ignored(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", "/echo", headers=(("Upgrade", "websocket"), ("Connection", "Upgrade"))))
    assert (await raw.response())[0] == 200
    await raw.send(request_bytes("GET", "/echo"))
    assert (await raw.response())[0] == 200
    raw.close()


async def test_shutdown_closes_websockets_with_1001(make_server: ServerFactory) -> None:
    server = await make_server()
    url = server.url.replace("http://", "ws://") + "/ws"
    async with ws_connect(url) as ws:
        await ws.send("ping")
        assert await ws.recv() == "ping"
        started = time.monotonic()
        await asyncio.wait_for(server.close(grace_s=3.0), 4)
        assert time.monotonic() - started < 2.0
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 3)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1001


# ------------------------------------------------------------------ misc


async def test_stats_count_connections_requests_and_responses(server: HttpServer) -> None:
    raw = await Raw.open(server)
    await raw.send(request_bytes("GET", "/echo") + request_bytes("GET", "/missing") + request_bytes("GET", "/boom"))
    for _ in range(3):
        await raw.response()
    raw.close()
    stats = server.stats.snapshot()
    assert stats["requests"] == 3
    assert stats["responses"] == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 1, "5xx": 1}
    assert stats["connections_total"] == 1


def test_limits_from_settings() -> None:
    settings = ReceiverSettings(
        max_head_bytes=4096,
        max_body_bytes=2048,
        request_deadline_seconds=3,
        keepalive_idle_seconds=2,
        handler_timeout_seconds=30,
        max_connections=7,
    )
    limits = Limits.from_settings(settings)
    assert limits == Limits(
        max_head_bytes=4096,
        max_body_bytes=2048,
        request_deadline_s=3.0,
        keepalive_idle_s=2.0,
        handler_timeout_s=30.0,
        max_connections=7,
    )
    assert Limits.from_settings(ReceiverSettings()) == Limits()


async def test_url_and_port(server: HttpServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks exist from Python 3.12")
async def test_works_with_eager_task_factory(make_server: ServerFactory) -> None:
    """Textual installs asyncio.eager_task_factory under App.run() on 3.12+."""
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        server = await make_server()
        raw = await Raw.open(server)
        await raw.send(b"".join(request_bytes("POST", f"/echo?n={i}", str(i).encode()) for i in range(4)))
        bodies = [json.loads((await raw.response())[2])["body"] for _ in range(4)]
        assert bodies == ["0", "1", "2", "3"]
        await raw.send(request_bytes("GET", "/missing") + request_bytes("GET", "/echo"))
        assert [(await raw.response())[0] for _ in range(2)] == [404, 200]
        raw.close()
        await assert_still_serving(server)
    finally:
        loop.set_task_factory(None)
