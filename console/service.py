"""Assemble the receiving side: secrets, store, providers, pipeline, HTTP server.

Both `serve` (headless) and the TUI start one `ReceiverService`; everything it
uses is passed in or built from settings here, never taken from globals.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

import httpx

from console.config import Settings
from console.core.calls import CallTracker
from console.core.forward import ForwardingToolHandler
from console.core.tools import NoToolHandler, ToolCallHandler
from console.providers.base import WebhookProvider
from console.providers.retell import RetellProvider
from console.providers.twilio import TwilioProvider
from console.providers.vapi import VapiProvider
from console.receiver.http import HttpServer, Limits, Router
from console.receiver.routes import EventSink, WebhookPipeline, build_router
from console.receiver.stream import add_twilio_stream_route
from console.redact import Redactor
from console.secrets import SecretLookup
from console.store.db import Store

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def secret_value(secrets: dict[str, SecretLookup], name: str) -> str | None:
    lookup = secrets.get(name)
    return lookup.value if lookup is not None else None


def startup_warnings(settings: Settings, secrets: dict[str, SecretLookup]) -> list[str]:
    """What an operator should know before the first webhook arrives."""
    warnings = []
    auth = settings.vapi.webhook.auth
    if auth == "none":
        if is_loopback(settings.receiver.host):
            warnings.append("Vapi webhook authentication is OFF (vapi.webhook.auth = \"none\"); accepted because the receiver is on loopback only.")
        else:
            warnings.append("vapi.webhook.auth = \"none\" is refused on a non-loopback address: every Vapi webhook will be rejected.")
    elif not secret_value(secrets, "vapi_webhook_secret"):
        warnings.append(f"Vapi webhooks will be refused: no webhook secret ({auth} mode). Set VOICE_CONSOLE_VAPI_WEBHOOK_SECRET.")
    if not secret_value(secrets, "retell_api_key"):
        warnings.append("Retell webhooks will be refused: no Retell API key. Set VOICE_CONSOLE_RETELL_API_KEY.")
    if settings.twilio.validate_signature and not secret_value(secrets, "twilio_auth_token"):
        warnings.append("Twilio webhooks will be refused: no Twilio auth token. Set VOICE_CONSOLE_TWILIO_AUTH_TOKEN.")
    if settings.twilio.validate_signature and not settings.receiver.public_url:
        warnings.append("No --public-url: Twilio signatures are checked against the Host header, which fails behind a tunnel.")
    notes = {lookup.note for lookup in secrets.values() if lookup.source == "none" and "keyring" in lookup.note.lower() and "No usable" in lookup.note}
    warnings.extend(sorted(notes))
    return warnings


def build_providers(settings: Settings, secrets: dict[str, SecretLookup]) -> dict[str, WebhookProvider]:
    return {
        "vapi": VapiProvider(
            settings.vapi,
            secret_value(secrets, "vapi_webhook_secret"),
            loopback=is_loopback(settings.receiver.host),
            public_url=settings.receiver.public_url,
        ),
        "retell": RetellProvider(settings.retell, secret_value(secrets, "retell_api_key")),
        "twilio": TwilioProvider(
            settings.twilio,
            secret_value(secrets, "twilio_auth_token"),
            settings.receiver.public_url,
        ),
    }


@dataclass
class ReceiverService:
    settings: Settings
    store: Store
    pipeline: WebhookPipeline
    server: HttpServer
    redactor: Redactor
    http_client: httpx.AsyncClient
    warnings: list[str] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        settings: Settings,
        secrets: dict[str, SecretLookup],
        *,
        on_events: EventSink | None = None,
        tool_handler: ToolCallHandler | None = None,
    ) -> "ReceiverService":
        redactor = Redactor(
            [lookup.value for lookup in secrets.values() if lookup.value],
            extra_headers=[
                settings.vapi.webhook.secret_header,
                settings.vapi.webhook.bearer_header,
                settings.vapi.webhook.hmac.signature_header,
            ],
        )
        store = await Store.open(
            settings.db_path,
            redactor=redactor,
            synchronous=settings.storage.synchronous,
            commit_interval_ms=settings.storage.commit_interval_ms,
        )
        http_client = httpx.AsyncClient(follow_redirects=False)
        try:
            if tool_handler is None:
                tool_handler = (
                    ForwardingToolHandler(settings.forward.to, http_client, timeout_s=settings.forward.timeout_seconds)
                    if settings.forward.to
                    else NoToolHandler()
                )
            pipeline = WebhookPipeline(
                build_providers(settings, secrets), store, tool_handler,
                tracker=CallTracker(), on_events=on_events,
            )

            def extra_routes(router: Router) -> None:
                add_twilio_stream_route(router, pipeline)

            server = HttpServer(
                build_router(pipeline, extra=extra_routes),
                host=settings.receiver.host,
                port=settings.receiver.port,
                limits=Limits.from_settings(settings.receiver),
            )
            await server.start()
        except BaseException:
            await http_client.aclose()
            await store.close()
            raise
        return cls(settings, store, pipeline, server, redactor, http_client, startup_warnings(settings, secrets))

    async def close(self) -> None:
        """Stop taking requests, finish in-flight ones, then flush and close the store."""
        try:
            await self.server.close()
            await self.pipeline.drain()
        finally:
            await self.http_client.aclose()
            await self.store.close()
