"""`VapiProvider`: the sans-I/O Vapi webhook provider (verify, parse, reply)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from console.config import VapiSettings
from console.core import strictjson
from console.core.events import to_utc
from console.core.tools import ToolBatch, ToolOutcome
from console.providers.base import BadPayload, Inbound, Verdict
from console.providers.vapi import replies
from console.providers.vapi.auth import verify_vapi_request
from console.providers.vapi.normalize import normalize_message
from console.receiver.types import Request, Response

_ENVELOPE_HINT = 'Vapi sends {"message": {"type": ..., ...}}'


def decode_body(body: bytes) -> dict[str, Any]:
    """The `message` object of a delivery, or BadPayload saying what is wrong."""
    try:
        data = strictjson.loads(body)
    except json.JSONDecodeError as exc:
        if not body.strip():
            raise BadPayload(f"the body is empty; {_ENVELOPE_HINT}") from None
        raise BadPayload(f"the body is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError:
        raise BadPayload("the body is not JSON (not valid UTF-8 text)") from None
    except strictjson.JsonRefused as exc:
        raise BadPayload(f"the body is not acceptable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadPayload(f"the body is JSON but not an object; {_ENVELOPE_HINT}")
    message = data.get("message")
    if not isinstance(message, dict):
        hint = ' (this looks like a bare message: it is missing the outer "message" wrapper)' if "type" in data else ""
        raise BadPayload(f'the body has no "message" object{hint}; {_ENVELOPE_HINT}')
    kind = message.get("type")
    if not isinstance(kind, str) or not kind.strip():
        raise BadPayload(f"message.type is missing or not a non-empty string; {_ENVELOPE_HINT}")
    return message


class VapiProvider:
    """Vapi "server URL" messages on `POST /webhook/vapi`.

    `loopback`: the receiver listens on a loopback address only (allows auth
    "none"). `public_url`: the base URL Vapi posts to (for HMAC `{url}`).
    `clock`: Unix seconds, for the HMAC timestamp window (tests pin it).
    """

    name = "vapi"

    def __init__(
        self,
        settings: VapiSettings,
        webhook_secret: str | None,
        *,
        loopback: bool = True,
        public_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._secret = webhook_secret
        self._loopback = loopback
        self._public_url = public_url.rstrip("/") if public_url else None
        self._clock = clock

    def verify(self, route: str, request: Request) -> Verdict:
        webhook = self.settings.webhook
        hmac_mode = webhook.auth == "hmac"
        return verify_vapi_request(
            webhook,
            self._secret,
            request,
            loopback=self._loopback,
            # Only an HMAC payload can sign the URL or the time.
            url=self.request_url(request) if hmac_mode else "",
            now=self._clock() if hmac_mode else None,
        )

    def request_url(self, request: Request) -> str:
        """The URL Vapi posted to: the configured public URL, else what `vapi listen`
        reports as the original, else what the Host header says."""
        if self._public_url:
            return self._public_url + request.target
        original = request.header("x-vapi-original-url")
        if original:
            return original
        return f"http://{request.header('host') or 'localhost'}{request.target}"

    def parse(self, route: str, request: Request, received_at: datetime) -> Inbound:
        message = decode_body(request.body)
        inbound = normalize_message(message, received_at=to_utc(received_at), settings=self.settings)
        if inbound.tool_batch is not None:
            inbound.tool_batch = replace(
                inbound.tool_batch,
                raw_body=request.body,
                headers=request.headers,
                path=request.path,
                method=request.method,
                content_type=request.header("content-type") or "application/json",
            )
        return inbound

    def tool_reply(self, batch: ToolBatch, outcomes: list[ToolOutcome]) -> Response:
        return replies.tool_reply(batch, outcomes)

    def ack(self, inbound: Inbound) -> Response:
        return replies.ack()
