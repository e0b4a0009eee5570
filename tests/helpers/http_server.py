"""The embedded HTTP server's test routes and small limits: shared by the server's tests and the
parser parity tests (limits small enough that timeouts fire in fractions of a second)."""

from __future__ import annotations

import asyncio

from console.core.http_types import Request, Response
from console.receiver.http import Limits, Router
from console.receiver.ws import WebSocket

TEST_LIMITS = Limits(
    max_head_bytes=16 * 1024,
    max_body_bytes=64 * 1024,
    request_deadline_s=0.5,
    keepalive_idle_s=0.5,
    handler_timeout_s=0.5,
    max_connections=64,
    linger_s=1.0,
    linger_bytes=16 * 1024 * 1024,
    max_ws_message_bytes=64 * 1024,
)


# ------------------------------------------------------------------ handlers


async def echo(request: Request) -> Response:
    return Response.json(
        200,
        {
            "method": request.method,
            "target": request.target,
            "path": request.path,
            "body": request.body.decode("utf-8", "replace"),
            "headers": [list(pair) for pair in request.headers],
            "client": list(request.client),
            "http_version": request.http_version,
        },
    )


async def boom(request: Request) -> Response:
    raise RuntimeError("secret detail that must not leak")


async def slow(request: Request) -> Response:
    await asyncio.sleep(30)
    return Response.text(200, "too late")


async def briefly_slow(request: Request) -> Response:
    await asyncio.sleep(0.3)
    return Response.text(200, "done")


async def bad_header(request: Request) -> Response:
    return Response(200, b"{}", headers=(("X-Bad", "a\r\nInjected: yes"),))


async def not_a_response(request: Request) -> Response:
    return {"oops": True}  # type: ignore[return-value]


async def no_content(request: Request) -> Response:
    return Response(204, b"ignored")


BIG = bytes(range(256)) * 16 * 1024  # 4 MiB: more than the transport's write buffer


async def big(request: Request) -> Response:
    return Response(200, BIG, content_type="application/octet-stream")


async def ws_echo(request: Request, ws: WebSocket) -> None:
    while (message := await ws.recv()) is not None:
        await ws.send(message)


async def ws_boom(request: Request, ws: WebSocket) -> None:
    await ws.recv()
    raise RuntimeError("websocket handler failed")


async def ws_server_closes(request: Request, ws: WebSocket) -> None:
    await ws.send("bye")
    await ws.close(4000, "done here")


def make_router() -> Router:
    router = Router()
    router.add("GET", "/echo", echo)
    router.add("POST", "/echo", echo)
    router.add("GET", "/boom", boom)
    router.add("GET", "/slow", slow)
    router.add("GET", "/briefly-slow", briefly_slow)
    router.add("GET", "/bad-header", bad_header)
    router.add("GET", "/not-a-response", not_a_response)
    router.add("GET", "/no-content", no_content)
    router.add("GET", "/big", big)
    router.add_websocket("/ws", ws_echo)
    router.add_websocket("/ws-boom", ws_boom)
    router.add_websocket("/ws-bye", ws_server_closes)
    return router
