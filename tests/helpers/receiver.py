"""The real receiver under test: started on a free port (in the test's loop or in a thread of its
own, for blocking sockets), signed deliveries, and raw HTTP/1.1 over plain sockets."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from console.config import load_settings
from console.core.tools import NoToolHandler
from console.providers.vapi import sign_vapi_request
from console.secrets import SecretLookup
from console.services.receiver import ReceiverService
from tests.helpers.secrets import PUBLIC_URL, VAPI_SECRET, secret_lookups

READ_TIMEOUT_S = 6.0


async def start_service(
    tmp_path: Path, *, tool_handler=None, policy=None, secrets=None, **overrides
) -> tuple[ReceiverService, list]:
    """A running service on a free port. Without a forward target or a policy, tool
    calls get the explicit "no tool handler" answer, as `serve` gave before the gate.
    `secrets` (name -> value) are added to the test credentials."""
    settings = load_settings(
        env={},
        overrides={
            "receiver": {"port": 0, "public_url": PUBLIC_URL, "request_deadline_seconds": 2.0},
            "storage": {"db": str(tmp_path / "history.db")},
            **overrides,
        },
    )
    seen: list = []
    if tool_handler is None and policy is None and "forward" not in overrides:
        tool_handler = NoToolHandler()
    lookups = secret_lookups() | {name: SecretLookup(name, value, "env") for name, value in (secrets or {}).items()}
    service = await ReceiverService.start(
        settings, lookups, on_events=seen.extend, tool_handler=tool_handler, policy=policy
    )
    return service, seen


def vapi_headers(service: ReceiverService, body: bytes) -> dict[str, str]:
    return {"content-type": "application/json", **sign_vapi_request(service.settings.vapi, VAPI_SECRET, body)}


class ServiceThread:
    """A real `ReceiverService` on its own event loop in a daemon thread."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="receiver", daemon=True)
        self.thread.start()
        self.service, _ = self.run(start_service(tmp_path, **overrides))
        self.port = self.service.server.port
        self.expected_5xx = 0  # 501s for unknown transfer codings (tests/test_fuzz_http.py counts them)

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        future: Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a plain function on the service's loop (to read live stats safely)."""

        async def wrapper() -> Any:
            return fn(*args)

        return self.run(wrapper())

    def close(self) -> None:
        try:
            self.run(self.service.close(), timeout=15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def exchange(port: int, data: bytes, *, half_close: bool = True, timeout: float = READ_TIMEOUT_S) -> tuple[bytes, bool]:
    """Send raw bytes, half-close, read until the server closes. (bytes read, closed by server)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered early (400, 413, 431) and closed: read what it said
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return b"".join(chunks), True
            except TimeoutError:
                break
            if not chunk:
                return b"".join(chunks), True
            chunks.append(chunk)
        return b"".join(chunks), False


def responses(data: bytes, head_first: bool = False) -> list[tuple[int, dict[str, str], bytes]]:
    """Split everything the server sent into (status, headers, body); every response must be complete.

    `head_first`: the first request was HEAD, so its final response has no body."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {data[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        version, status, _ = (lines[0].split(" ", 2) + [""])[:3]
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if int(status) < 200:
            length = 0
        elif head_first:
            # A HEAD answer has no body, except an early error, sent before the server
            # looked at the method, right before it closes: accept both.
            if not rest or rest.startswith(b"HTTP/1.1 "):
                length = 0
            head_first = False
        assert len(rest) >= length, f"truncated response body: {data[:200]!r}"
        out.append((int(status), headers, rest[:length]))
        data = rest[length:]
    return out


def post_bytes(path: str, body: bytes, headers: dict[str, str], *, close: bool = True) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: voice.example.test", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def signed_vapi_delivery(svc: ServiceThread, call_id: str = "call-still-alive") -> bytes:
    body = json.dumps(
        {
            "message": {
                "type": "status-update",
                "status": "in-progress",
                "timestamp": int(time.time() * 1000),
                "call": {"id": call_id},
            }
        }
    ).encode()
    return post_bytes("/webhook/vapi", body, vapi_headers(svc.service, body))
