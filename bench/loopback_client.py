"""The load driver's HTTP client: keep-alive HTTP/1.1 over asyncio streams, nothing more.

httpx took two thirds of the driver's CPU (its pool walk, anyio streams, a request's head
and body sent in two writes), so the driver playing 100 calls saturated near 600 events/s
and its own lag was in every latency it reported. This client sends a request in one
write and reads a Content-Length answer; it has the few parts of httpx's interface the
simulator's `Webhook` uses (`post`, and `status_code` / `is_success` / `json()` on the
answer) and raises httpx's exceptions, so the simulator treats it as it treats httpx.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx


@dataclass(frozen=True, slots=True)
class LoopbackResponse:
    status_code: int
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class LoopbackClient:
    """`await client.post(url, content=..., headers=..., timeout=...)` on reused connections."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[Connection]] = {}

    async def __aenter__(self) -> LoopbackClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for _, writer in connections:
                writer.close()
        self._idle.clear()

    async def post(
        self, url: str, *, content: bytes, headers: dict[str, str], timeout: float = 20.0
    ) -> LoopbackResponse:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        lines = [f"POST {target} HTTP/1.1", f"host: {parts.netloc}", f"content-length: {len(content)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + content
        try:
            async with asyncio.timeout(timeout):
                return await self._exchange((host, port), request)
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer within {timeout:g} s") from None
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            raise httpx.ConnectError(f"{type(exc).__name__}: {exc}") from None

    async def _exchange(self, address: tuple[str, int], request: bytes) -> LoopbackResponse:
        idle = self._idle.setdefault(address, [])
        while True:
            reused = bool(idle)
            reader, writer = idle.pop() if reused else await asyncio.open_connection(*address)
            try:
                writer.write(request)
                response, keep = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError):
                writer.close()
                if reused:  # the receiver closed an idle connection: once more on a new one
                    continue
                raise
            except BaseException:  # a timeout mid-answer: the connection's state is unknown
                writer.close()
                raise
            if keep:
                idle.append((reader, writer))
            else:
                writer.close()
            return response


async def read_response(reader: asyncio.StreamReader) -> tuple[LoopbackResponse, bool]:
    """One answer with a Content-Length body (all the receiver sends); whether to keep the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    length, keep = 0, not status_line.startswith("HTTP/1.0")
    for line in header_lines:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            keep = value.strip().lower() != "close"
    body = await reader.readexactly(length) if length else b""
    return LoopbackResponse(status, body), keep
