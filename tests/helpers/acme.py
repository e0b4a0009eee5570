"""Acme, a fourth voice platform written only in the test suite: everything the console
knows about it is this module's `SPEC`, registered at run time (tests/test_provider_registry.py).

The wire format is made up and small on purpose: a JSON body `{"event", "call_id", ...}`
signed with `X-Acme-Signature: hex(HMAC-SHA256(signing secret, body))`, and a REST API
(`GET /v1/agents`, `GET /v1/lines`, `POST /v1/calls`, `GET /v1/me`) behind a bearer key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from console.config import Settings
from console.core.events import CallEnded, CallStatus, Event, TranscriptFinal, to_utc
from console.core.http_types import Request, Response
from console.core.tools import ToolBatch, ToolOutcome
from console.providers.base import Agent, BadPayload, Inbound, PhoneLine, PlacedCall, PlatformError, Verdict
from console.providers.registry import Dialing, KeyCheck, ProviderSpec, Route, Secret, Secrets, SignRequest

NAME = "acme"
HEADER = "x-acme-signature"
SCHEME = "acme-signature"
ROUTE = Route(NAME, "/webhook/acme")


def sign_body(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class AcmeProvider:
    """Sans-I/O, like the built-in providers: verify, parse, answer."""

    name = NAME

    def __init__(self, secret: str | None) -> None:
        self._secret = secret

    def verify(self, route: str, request: Request) -> Verdict:
        if not self._secret:
            return Verdict.failed(SCHEME, "no Acme signing secret is configured")
        given = request.header(HEADER) or ""
        if not hmac.compare_digest(sign_body(request.body, self._secret).encode(), given.encode()):
            return Verdict.failed(SCHEME, f"{HEADER} does not match the body")
        return Verdict.passed(SCHEME)

    def parse(self, route: str, request: Request, received_at: datetime) -> Inbound:
        try:
            body = json.loads(request.body)
            event, call_id = body["event"], body["call_id"]
        except (ValueError, KeyError, TypeError):
            raise BadPayload("an Acme webhook is a JSON object with 'event' and 'call_id'") from None
        at = to_utc(received_at)
        events: list[Event]
        if event == "started":
            events = [CallStatus(at=at, provider=NAME, call_id=call_id, status="in-progress")]
        elif event == "said":
            events = [TranscriptFinal(at=at, provider=NAME, call_id=call_id, role=body["role"], text=body["text"])]
        elif event == "ended":
            events = [
                CallStatus(at=at, provider=NAME, call_id=call_id, status="ended"),
                CallEnded(at=at, provider=NAME, call_id=call_id, reason=body.get("reason")),
            ]
        else:
            raise BadPayload(f"unknown Acme event {event!r}")
        return Inbound(NAME, event, call_id, at, events)

    def tool_reply(self, batch: ToolBatch, outcomes: list[ToolOutcome]) -> Response:
        return Response.json(200, {"results": [outcome.result for outcome in outcomes]})

    def ack(self, inbound: Inbound) -> Response:
        return Response.json(200, {"ok": True})


class AcmeClient:
    """Acme's REST API as dialing uses it (a `PlatformClient`)."""

    def __init__(self, keys: Mapping[str, str], base_url: str, **options: Any) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {keys['acme_api_key']}"},
            timeout=options.get("timeout_s", 10),
        )

    async def __aenter__(self) -> AcmeClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._http.aclose()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise PlatformError(f"Acme API unreachable ({type(exc).__name__})") from None
        if not response.is_success:
            raise PlatformError(f"Acme API {response.status_code}: {response.json().get('error', '')}")
        return response.json()

    async def agents(self, limit: int = 100) -> list[Agent]:
        return [Agent(a["id"], a["name"]) for a in await self._json("GET", "/v1/agents")][:limit]

    async def phone_lines(self, limit: int = 100) -> list[PhoneLine]:
        return [PhoneLine(n["id"], n["e164"]) for n in await self._json("GET", "/v1/lines")][:limit]

    async def place_call(self, *, to: str, line_id: str, agent_id: str) -> PlacedCall:
        call = await self._json("POST", "/v1/calls", json={"to": to, "line": line_id, "agent": agent_id})
        return PlacedCall(call["id"], call["state"], control_url=call.get("control"), raw=call)


def me_probe(keys: Mapping[str, str], base_url: str) -> httpx.Request:
    return httpx.Request("GET", f"{base_url}/v1/me", headers={"Authorization": f"Bearer {keys['acme_api_key']}"})


def spec(api_url: str) -> ProviderSpec:
    """Acme's spec, its REST API at `api_url` (a loopback server in the tests)."""

    def build(settings: Settings, secrets: Secrets) -> AcmeProvider:
        return AcmeProvider(secrets.get("acme_signing_secret"))

    def sign(request: SignRequest) -> dict[str, str]:
        return {HEADER: sign_body(request.body, request.secret)}

    def warnings(settings: Settings, secrets: Secrets) -> list[str]:
        if secrets.get("acme_signing_secret"):
            return []
        return ["Acme webhooks will be refused: no Acme signing secret. Set VOICE_CONSOLE_ACME_SIGNING_SECRET."]

    return ProviderSpec(
        name=NAME,
        title="Acme",
        routes=(ROUTE,),
        secrets=(Secret("acme_api_key", "Acme API key"), Secret("acme_signing_secret", "Acme signing secret")),
        build=build,
        signing_secret="acme_signing_secret",
        sign=sign,
        auth_failure_status=403,
        base_url=lambda settings: api_url,
        key_check=KeyCheck(needs=("acme_api_key",), proves="acme_api_key", request=me_probe),
        warnings=warnings,
        dialing=Dialing(needs=("acme_api_key",), client=AcmeClient, agent_word="agent"),
    )
