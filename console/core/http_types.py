"""Plain request/response values shared by the HTTP server, routes and providers.

They carry no I/O, so providers and tests can build them directly.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl


@dataclass(frozen=True)
class Request:
    method: str  # upper-case, e.g. "POST"
    target: str  # the raw request-target as sent: path plus query, undecoded
    headers: tuple[tuple[str, str], ...]  # names lower-cased, values as sent, order kept
    body: bytes = b""
    client: tuple[str, int] = ("127.0.0.1", 0)
    http_version: str = "1.1"
    # time.perf_counter() when the server had the whole request (0: not from a server);
    # what an acknowledgement's latency is counted from.
    arrived: float = field(default=0.0, compare=False)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    def query_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of a header, case-insensitive."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @classmethod
    def json(cls, status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return cls(status=status, body=body, content_type="application/json", headers=headers)

    @classmethod
    def error(cls, status: int, message: str, **extra: Any) -> Response:
        """Errors are JSON: {"error": {"status": 4xx, "message": "..."}}."""
        return cls.json(status, {"error": {"status": status, "message": message, **extra}})

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(status=status, body=text.encode(), content_type=content_type)


def is_loopback(host: str) -> bool:
    """A loopback host name or address (127.0.0.0/8, ::1, localhost): reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
