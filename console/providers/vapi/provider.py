"""`VapiProvider`: the sans-I/O Vapi webhook provider (verify, parse, reply)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from console.config import Settings, VapiSettings
from console.core import strictjson
from console.core.events import to_utc
from console.core.http_types import Request, Response, is_loopback
from console.core.tools import ToolBatch, ToolOutcome
from console.providers.base import BadPayload, Inbound, Verdict
from console.providers.registry import Control, Dialing, KeyCheck, ProviderSpec, Route, Secret, Secrets, SignRequest
from console.providers.vapi import replies
from console.providers.vapi.auth import sign_vapi_request, verify_vapi_request
from console.providers.vapi.client import assistants_probe, dialer
from console.providers.vapi.live import open_control
from console.providers.vapi.normalize import normalize_message

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


# -- the spec (console.providers.registry) ----------------------------------------------------


def _build(settings: Settings, secrets: Secrets) -> VapiProvider:
    return VapiProvider(
        settings.vapi,
        secrets.get("vapi_webhook_secret"),
        loopback=is_loopback(settings.receiver.host),
        public_url=settings.receiver.public_url,
    )


def _sign(request: SignRequest) -> dict[str, str]:
    return sign_vapi_request(
        request.settings.vapi, request.secret, request.body, method=request.method, url=request.url
    )


def _warnings(settings: Settings, secrets: Secrets) -> list[str]:
    auth = settings.vapi.webhook.auth
    if auth == "none":
        if is_loopback(settings.receiver.host):
            return [
                'Vapi webhook authentication is OFF (vapi.webhook.auth = "none"); '
                "accepted because the receiver is on loopback only."
            ]
        return ['vapi.webhook.auth = "none" is refused on a non-loopback address: every Vapi webhook will be rejected.']
    if not secrets.get("vapi_webhook_secret"):
        return [
            f"Vapi webhooks will be refused: no webhook secret ({auth} mode). Set VOICE_CONSOLE_VAPI_WEBHOOK_SECRET."
        ]
    return []


def _webhook_secret_note(sources: Mapping[str, str | None]) -> list[str]:
    source = sources.get("vapi_webhook_secret")
    if source is None:
        return ["vapi_webhook_secret: not set (needed to verify webhooks in the default 'secret' mode)."]
    return [
        f"vapi_webhook_secret: set ({source}); Vapi sends it to the console, so it is checked "
        "when a webhook arrives, not here."
    ]


SPEC = ProviderSpec(
    name="vapi",
    title="Vapi",
    routes=(Route("vapi", "/webhook/vapi"),),
    secrets=(Secret("vapi_api_key", "Vapi API key"), Secret("vapi_webhook_secret", "Vapi webhook secret")),
    build=_build,
    signing_secret="vapi_webhook_secret",
    sign=_sign,
    needs_signature=lambda settings: settings.vapi.webhook.auth != "none",
    base_url=lambda settings: settings.vapi.base_url,
    key_check=KeyCheck(
        needs=("vapi_api_key",),
        proves="vapi_api_key",
        request=assistants_probe,
        refused_hint=" Check that it is the private key.",
        notes=_webhook_secret_note,
    ),
    secret_headers=lambda settings: [
        settings.vapi.webhook.secret_header,
        settings.vapi.webhook.bearer_header,
        settings.vapi.webhook.hmac.signature_header,
    ],
    warnings=_warnings,
    dialing=Dialing(needs=("vapi_api_key",), client=dialer),
    control=Control(
        open=open_control,
        needs_control_url=True,
        unavailable={"cut_off": "Vapi stops the assistant itself when the caller speaks; s says your words instead"},
    ),
)
