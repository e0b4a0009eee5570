"""Assemble the receiving side: secrets, store, providers, pipeline, HTTP server.

Both `serve` (headless) and the TUI start one `ReceiverService`; everything it
uses is passed in or built from settings here, never taken from globals.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import httpx

from console.config import Settings
from console.core.calls import CallTracker
from console.core.events import CallHang, Event, event_from_dict, event_json, event_to_dict
from console.core.forward import ForwardingToolHandler
from console.core.gate import GateEvent, PendingCall, ToolGate
from console.core.policy import Policy
from console.core.tools import ToolBatch, ToolCallHandler, ToolOutcome
from console.providers import registry
from console.providers.base import WebhookProvider
from console.receiver.http import HttpServer, Limits, Router
from console.receiver.routes import DeliverySeen, DeliverySink, EventSink, WebhookPipeline, build_router
from console.receiver.stream import add_stream_routes
from console.redact import Redactor
from console.secrets import NO_KEYRING_HELP, SecretLookup
from console.services.control import add_control_routes, new_token
from console.services.serve_state import pid_alive, read_state, state_file
from console.store.db import Store

log = logging.getLogger(__name__)


def secret_value(secrets: dict[str, SecretLookup], name: str) -> str | None:
    lookup = secrets.get(name)
    return lookup.value if lookup is not None else None


def secret_values(secrets: dict[str, SecretLookup]) -> dict[str, str | None]:
    return {name: lookup.value for name, lookup in secrets.items()}


def startup_warnings(settings: Settings, secrets: dict[str, SecretLookup]) -> list[str]:
    """What an operator should know before the first webhook arrives."""
    values = secret_values(secrets)
    warnings = [warning for spec in registry.specs() for warning in spec.warnings(settings, values)]
    if any(lookup.note == NO_KEYRING_HELP for lookup in secrets.values()):
        warnings.append(NO_KEYRING_HELP)
    return warnings


def build_providers(settings: Settings, secrets: dict[str, SecretLookup]) -> dict[str, WebhookProvider]:
    values = secret_values(secrets)
    return {spec.name: spec.build(settings, values) for spec in registry.specs()}


def forward_signer(
    settings: Settings, secrets: dict[str, SecretLookup]
) -> Callable[[ToolBatch, bytes], dict[str, str]]:
    """Re-authenticate a rebuilt tool-call body the way the platform would have."""
    values = secret_values(secrets)

    def sign(batch: ToolBatch, body: bytes) -> dict[str, str]:
        try:
            spec = registry.spec(batch.provider)
        except registry.UnknownProvider:
            return {}
        secret = values.get(spec.signing_secret) if spec.signing_secret else None
        if spec.sign is None or not secret or not spec.needs_signature(settings):
            return {}
        request = registry.SignRequest(
            settings, secret, batch.method, settings.forward.to or "", body, batch.content_type
        )
        return spec.sign(request)

    return sign


def redact_event(event: Event, redactor: Redactor) -> Event:
    """The event as live consumers (the TUI, NDJSON) may see it: configured secrets masked.

    The same event object when it holds no secret (the common case: one scan of its JSON).
    """
    data = event_json(event)
    if redactor.text(data) == data:
        return event
    return event_from_dict(redactor.json(event_to_dict(event)))


def redact_gate_event(event: GateEvent, redactor: Redactor) -> GateEvent:
    """A gate event for subscribers (the TUI, serve's log) with secrets masked; the gate keeps the originals."""
    kind, payload = event
    if isinstance(payload, PendingCall):
        arguments = redactor.json(payload.arguments)
        return event if arguments == payload.arguments else (kind, replace(payload, arguments=arguments))
    if isinstance(payload, ToolOutcome):
        masked = replace(
            payload,
            result=None if payload.result is None else redactor.text(payload.result),
            error=None if payload.error is None else redactor.text(payload.error),
            arguments_sent=None if payload.arguments_sent is None else redactor.json(payload.arguments_sent),
        )
        return event if masked == payload else (kind, masked)
    return event


def redacting_sink(sink: EventSink | None, redactor: Redactor) -> EventSink | None:
    if sink is None:
        return None

    def emit(events: list[Event]) -> None:
        sink([redact_event(event, redactor) for event in events])

    return emit


def redacting_delivery_sink(sink: DeliverySink | None, redactor: Redactor) -> DeliverySink | None:
    if sink is None:
        return None

    def seen(delivery: DeliverySeen) -> None:
        reason = None if delivery.reason is None else redactor.text(delivery.reason)
        sink(replace(delivery, path=redactor.text(delivery.path), reason=reason))

    return seen


def compose_sinks(*sinks: Callable[[list[Event]], None] | None) -> Callable[[list[Event]], None]:
    active = [sink for sink in sinks if sink is not None]

    def emit(events: list[Event]) -> None:
        for sink in active:
            sink(events)

    return emit


@dataclass
class ReceiverService:
    settings: Settings
    store: Store
    pipeline: WebhookPipeline
    server: HttpServer
    redactor: Redactor
    http_client: httpx.AsyncClient
    gate: ToolGate | None = None
    control_token: str = ""
    warnings: list[str] = field(default_factory=list)

    @classmethod
    async def start(
        cls,
        settings: Settings,
        secrets: dict[str, SecretLookup],
        *,
        on_events: EventSink | None = None,
        on_delivery: DeliverySink | None = None,
        tool_handler: ToolCallHandler | None = None,
        policy: Policy | None = None,
    ) -> ReceiverService:
        """Start the receiver. Tool calls go to `tool_handler` if given, else through a
        `ToolGate` with `policy` (default: approve through --forward-to when it is
        set, otherwise hold for an operator)."""
        control_token = new_token()
        redactor = Redactor(
            [control_token, *(lookup.value for lookup in secrets.values() if lookup.value)],
            extra_headers=[header for spec in registry.specs() for header in spec.secret_headers(settings)],
        )
        store = await Store.open(
            settings.db_path,
            redactor=redactor,
            synchronous=settings.storage.synchronous,
            commit_interval_ms=settings.storage.commit_interval_ms,
            session=True,  # this process receives: recover tool calls a crashed one left pending
        )
        http_client = httpx.AsyncClient(follow_redirects=False)
        gate: ToolGate | None = None
        try:
            if tool_handler is None:
                forward = (
                    ForwardingToolHandler(
                        settings.forward.to,
                        http_client,
                        timeout_s=settings.forward.timeout_seconds,
                        signer=forward_signer(settings, secrets),
                    )
                    if settings.forward.to
                    else None
                )
                if policy is None:
                    policy = Policy.default("approve" if forward is not None else "hold")

                async def filler(pending: PendingCall) -> None:
                    url = pipeline.tracker.control_url(pending.call_id)
                    if url:  # live control: make the assistant say something while we wait
                        await http_client.post(
                            url, json={"type": "say", "content": settings.gate.filler_text}, timeout=5
                        )

                gate = ToolGate(
                    policy,
                    forward=forward,
                    safety_margin_s=settings.gate.safety_margin_seconds,
                    present=lambda event: redact_gate_event(event, redactor),
                    filler=filler if settings.gate.filler_after_seconds > 0 else None,
                    filler_after_s=settings.gate.filler_after_seconds or None,
                )
                tool_handler = gate

            def watch_hangs(events: list[Event]) -> None:
                # Vapi sends `hang` while it waits on us: mark that call's pending tool calls as stalling.
                if gate is not None:
                    for event in events:
                        if isinstance(event, CallHang) and event.call_id:
                            gate.mark_stalling(event.call_id)

            pipeline = WebhookPipeline(
                build_providers(settings, secrets),
                store,
                tool_handler,
                tracker=CallTracker(),
                # Live consumers see what the history stores: configured secrets masked.
                on_events=compose_sinks(watch_hangs, redacting_sink(on_events, redactor)),
                on_delivery=redacting_delivery_sink(on_delivery, redactor),
            )

            def extra_routes(router: Router) -> None:
                add_stream_routes(router, pipeline)
                if gate is not None:
                    add_control_routes(router, gate, control_token)

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
        return cls(
            settings,
            store,
            pipeline,
            server,
            redactor,
            http_client,
            gate,
            control_token,
            startup_warnings(settings, secrets),
        )

    async def close(self) -> None:
        """Stop taking requests, finish in-flight ones, then flush and close the store."""
        try:
            await self.server.close()
        finally:
            await self.http_client.aclose()
            await self.store.close()


def listen_failure(host: str, port: int, exc: OSError) -> str:
    """Why the receiver cannot listen, and the fix that works whoever holds the port."""
    where = f"{host}:{port}"
    if exc.errno != errno.EADDRINUSE:
        return f"cannot listen on {where}: {exc.strerror or exc}"
    holder = read_state(state_file(port))
    by = f" by another `voice-console serve` (pid {holder.pid})" if holder is not None and pid_alive(holder.pid) else ""
    return (
        f"cannot listen on {where}: the port is already in use{by}. "
        "Choose another with `--port P` (or `[receiver] port` in the config), or `--port 0` for any free port."
    )
