"""Assemble the receiving side: secrets, store, providers, pipeline, HTTP server.

Both `serve` (headless) and the TUI start one `ReceiverService`; everything it
uses is passed in or built from settings here, never taken from globals.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from console.config import Settings
from console.core.calls import CallTracker
from console.core.events import utc_now
from console.core.forward import ForwardingToolHandler
from console.core.gate import ToolGate
from console.core.policy import Policy
from console.core.tools import ToolBatch, ToolCallHandler
from console.providers import registry
from console.providers.base import WebhookProvider
from console.receiver.http import HttpServer, Limits, Router
from console.receiver.relay import LiveTaps, add_tap_routes
from console.receiver.routes import build_router
from console.receiver.stream import add_stream_routes
from console.redact import Redactor
from console.secrets import NO_KEYRING_HELP, SecretLookup, SecretStore
from console.services.control import DecisionRouting, add_control_routes, new_token
from console.services.hub import ControlHub, receiver_info
from console.services.live import LiveCalls
from console.services.pipeline import (
    ControlUrlFiller,
    DeliverySink,
    EventSink,
    WebhookPipeline,
    redact_gate_event,
)
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
    for name, lookup in secrets.items():
        if lookup.source == "session":
            secret = registry.secret_names()[name]
            warnings.append(
                f"The {secret.label} was {lookup.note.rstrip('.')}; URLs made with it change every run "
                f"(set {secret.env} to keep one)."
            )
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
    taps: LiveTaps = field(default_factory=LiveTaps)  # the calls relayed through a tap right now
    tap_tokens: dict[str, str | None] = field(default_factory=dict, repr=False)  # secret name -> the token
    hub: ControlHub | None = None  # consoles attached to this receiver (`GET /control/stream`)
    decisions: DecisionRouting = field(default_factory=DecisionRouting)  # team mode sets its link in
    steering: LiveCalls | None = None  # live control of its calls (the control API's, the team's)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def tracker(self) -> CallTracker:
        return self.pipeline.tracker

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
        secret_store: SecretStore | None = None,
    ) -> ReceiverService:
        """Start the receiver. Tool calls go to `tool_handler` if given, else through a
        `ToolGate` with `policy` (default: approve through --forward-to when it is
        set, otherwise hold for an operator)."""
        control_token = new_token()
        decisions = DecisionRouting()
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
            writer_process=settings.storage.writer == "process",
        )
        http_client = httpx.AsyncClient(follow_redirects=False)
        taps = LiveTaps()
        tracker = CallTracker()  # the pipeline's: it keeps each call's state and control URL
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

                gate = ToolGate(
                    policy,
                    forward=forward,
                    safety_margin_s=settings.gate.safety_margin_seconds,
                    present=lambda event: redact_gate_event(event, redactor),
                    filler=ControlUrlFiller(tracker, http_client, settings.gate.filler_text)
                    if settings.gate.filler_after_seconds > 0
                    else None,
                    filler_after_s=settings.gate.filler_after_seconds or None,
                )
                tool_handler = gate

            pipeline = WebhookPipeline(
                build_providers(settings, secrets),
                store,
                tool_handler,
                tracker=tracker,
                redactor=redactor,
                on_events=on_events,
                on_delivery=on_delivery,
            )

            latest = await store.fetchone("SELECT coalesce(max(id), 0) AS n FROM events")
            hub = ControlHub(
                pipeline,
                gate,
                taps,
                control_token,
                {},
                history_id=int(latest["n"]) if latest is not None else 0,
                redactor=redactor,
            )
            hub.start()
            steering = LiveCalls(tracker, taps, settings, secret_store or SecretStore(), http_client)

            def extra_routes(router: Router) -> None:
                add_stream_routes(router, pipeline.ingest_events, pipeline.providers)
                add_tap_routes(
                    router,
                    pipeline.ingest_events,
                    pipeline.providers,
                    settings,
                    secret_values(secrets),
                    taps,
                    known_call=lambda call_id: tracker.get(call_id) is not None,
                )
                add_control_routes(router, control_token, gate=gate, live=steering, routing=decisions)
                hub.add_route(router)

            server = HttpServer(
                build_router(
                    pipeline.handle,
                    pipeline.providers,
                    extra=extra_routes,
                    health=lambda: {"acknowledged": pipeline.stats.acknowledged.snapshot()},
                ),
                host=settings.receiver.host,
                port=settings.receiver.port,
                limits=Limits.from_settings(settings.receiver),
            )
            await server.start()
            hub.receiver = receiver_info(server.url, str(settings.db_path), utc_now().isoformat(timespec="seconds"))
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
            taps,
            {name: secret_value(secrets, name) for name in registry.made_secret_names()},
            hub,
            decisions,
            steering,
        )

    async def close(self) -> None:
        """Stop taking requests, finish in-flight ones, then flush and close the store."""
        try:
            if self.hub is not None:
                await self.hub.close()
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
