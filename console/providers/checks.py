"""What the platforms' operator checks share: a `Check` (one line, and the fix), and URLs
compared the way a platform would reach them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

Level = Literal["error", "warning", "info"]


@dataclass(frozen=True)
class Check:
    level: Level
    code: str
    message: str
    fix: str


def _normalized(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    netloc = host if port in (None, default) else f"{host}:{port}"
    return parts.scheme.lower(), netloc, parts.path.rstrip("/") or "/"


def same_url(a: str, b: str) -> bool:
    """The same endpoint: scheme and host case-insensitive, default ports and a trailing slash ignored."""
    return _normalized(a) == _normalized(b)


def tap_address(public_url: str | None, path: str, token: str | None) -> str | None:
    """A tap's WebSocket address on the public URL (https → wss, http → ws), with its token as the
    last path segment; None without either."""
    if not public_url or not token:
        return None
    parts = urlsplit(public_url.rstrip("/"))
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, f"{parts.path}{path}/{token}", "", ""))
