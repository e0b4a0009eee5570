"""Retell AI provider (sans-I/O): verify, parse and answer Retell webhooks.

Routes:
- "retell" (POST /webhook/retell): call events and the inbound-call webhook.
- "retell.function" (/webhook/retell/function, any method): custom functions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from console.config import RetellSettings, Settings
from console.core import strictjson
from console.core.events import Event, Raw, ToolRequested, to_utc
from console.core.http_types import Request, Response
from console.core.tools import ToolBatch, ToolCall, ToolOutcome
from console.providers.base import BadPayload, Inbound, Verdict
from console.providers.registry import (
    Control,
    Dialing,
    KeyCheck,
    ProviderSpec,
    Route,
    Secret,
    Secrets,
    SignRequest,
    Tap,
)
from console.providers.retell.auth import HEADER, sign_retell, verify_retell_signature
from console.providers.retell.client import UNAVAILABLE, agents_probe, dialer, open_control
from console.providers.retell.llm_tap import RetellLlmTap
from console.providers.retell.normalize import (
    PROVIDER,
    SeenOnce,
    call_events,
    delivery_time,
    function_call_id,
    utterance_count,
)
from console.providers.retell.wire import CALL_EVENTS, CallInbound, FunctionCall, RetellCall

ROUTE_WEBHOOK = "retell"
ROUTE_FUNCTION = "retell.function"
# Retell turns a function's answer into a string for the LLM and cuts it here.
FUNCTION_REPLY_LIMIT = 15_000
_TRUNCATED = " … [truncated by voice-console]"
# Deliveries that happen once per call; the rest (transcript_updated, ...) repeat.
_ONCE_PER_CALL = frozenset({"call_started", "call_ended", "call_analyzed"})


def _json_body(body: bytes) -> Any:
    try:
        return strictjson.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadPayload(f"The body is not JSON ({exc}).") from None


def _fit(key: str, text: str, limit: int = FUNCTION_REPLY_LIMIT) -> dict[str, str]:
    """`{key: text}` whose JSON form is at most `limit` characters, visibly truncated."""

    def size(value: str) -> int:
        return len(json.dumps({key: value}, separators=(",", ":"), ensure_ascii=False))

    if size(text) <= limit:
        return {key: text}
    # Escapes make JSON length non-linear in the text, so search for the longest prefix.
    low, high = 0, min(len(text), limit)
    while low < high:
        mid = (low + high + 1) // 2
        if size(text[:mid] + _TRUNCATED) <= limit:
            low = mid
        else:
            high = mid - 1
    return {key: text[:low] + _TRUNCATED}


class RetellProvider:
    name = PROVIDER
    routes = (ROUTE_WEBHOOK, ROUTE_FUNCTION)

    def __init__(
        self,
        settings: RetellSettings,
        api_key: str | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._api_key = api_key or None
        self._clock = clock
        self._seen = SeenOnce()

    # -- authentication -------------------------------------------------------

    def verify(self, route: str, request: Request) -> Verdict:
        # Custom functions are signed the same way; GET/DELETE sign the empty body.
        return verify_retell_signature(
            request.body,
            request.header(HEADER),
            self._api_key,
            now_ms=int(self._clock() * 1000),
            skew_ms=self._settings.skew_seconds * 1000,
        )

    # -- parsing --------------------------------------------------------------

    def parse(self, route: str, request: Request, received_at: datetime) -> Inbound:
        received_at = to_utc(received_at)
        if route == ROUTE_FUNCTION:
            return self._parse_function(request, received_at)
        if route == ROUTE_WEBHOOK:
            return self._parse_webhook(request, received_at)
        raise BadPayload(f"The Retell provider has no route {route!r}.")

    def _parse_webhook(self, request: Request, received_at: datetime) -> Inbound:
        body = _json_body(request.body)
        if not isinstance(body, dict):
            raise BadPayload("A Retell webhook body must be a JSON object.")
        event = body.get("event")
        if not isinstance(event, str) or not event:
            raise BadPayload(
                "No 'event' field, so this is not a Retell webhook "
                "(custom-function calls go to /webhook/retell/function)."
            )
        if event == "call_inbound":
            return self._parse_call_inbound(body, received_at)

        # `call` per the docs; `data` as the official python demo reads it.
        raw_call = body.get("call", body.get("data"))
        if event not in CALL_EVENTS:
            call_id = raw_call.get("call_id") if isinstance(raw_call, dict) else None
            call_id = call_id if isinstance(call_id, str) else None
            at = delivery_time(event, body, None, received_at)
            events: list[Event] = [Raw(at=at, provider=PROVIDER, call_id=call_id, type=event, data=body)]
            return Inbound(PROVIDER, event, call_id, at, events)

        if not isinstance(raw_call, dict):
            raise BadPayload(f"A Retell '{event}' webhook needs a 'call' object.")
        try:
            call = RetellCall.model_validate(raw_call)
            at = delivery_time(event, body, call, received_at)
            events = call_events(event, call, body, at, self._seen)
        except ValidationError as exc:
            raise BadPayload(
                f"The '{event}' call object does not fit Retell's call shape: {_first_error(exc)}."
            ) from None
        return Inbound(
            PROVIDER,
            event,
            call.call_id,
            at,
            events,
            dedupe_key=f"retell:{event}:{call.call_id}" if event in _ONCE_PER_CALL else None,
            extra=_call_extra(call),
        )

    def _parse_call_inbound(self, body: dict[str, Any], received_at: datetime) -> Inbound:
        data = body.get("call_inbound")
        if not isinstance(data, dict):
            raise BadPayload("A Retell 'call_inbound' webhook needs a 'call_inbound' object.")
        try:
            inbound = CallInbound.model_validate(data)
        except ValidationError as exc:
            raise BadPayload(f"The 'call_inbound' object is malformed: {_first_error(exc)}.") from None
        at = delivery_time("call_inbound", body, None, received_at)
        # No call exists yet (the phone is still ringing), hence no call id.
        events: list[Event] = [Raw(at=at, provider=PROVIDER, call_id=None, type="call_inbound", data=body)]
        extra = {
            k: v
            for k, v in (
                ("from_number", inbound.from_number),
                ("to_number", inbound.to_number),
                ("agent_id", inbound.agent_id),
            )
            if v
        }
        reply = Response.json(200, {"call_inbound": self._call_inbound_answer()})
        return Inbound(PROVIDER, "call_inbound", None, at, events, reply=reply, extra=extra)

    def _call_inbound_answer(self) -> dict[str, Any]:
        answer = self._settings.call_inbound.model_dump()
        return {k: v for k, v in answer.items() if v is not None and v != {}}

    def _parse_function(self, request: Request, received_at: datetime) -> Inbound:
        query = request.query_params()
        call: RetellCall | None = None
        if not request.body.strip():
            # GET/DELETE functions carry no body; the configured query is all there is.
            kind = "empty"
            name = query.get("name") or "unknown"
            args: dict[str, Any] = {k: v for k, v in query.items() if k != "name"}
        else:
            data = _json_body(request.body)
            if not isinstance(data, dict):
                raise BadPayload("A Retell custom-function body must be a JSON object.")
            if isinstance(data.get("name"), str) and (
                isinstance(data.get("args"), dict) or isinstance(data.get("call"), dict)
            ):
                try:
                    full = FunctionCall.model_validate(data)
                except ValidationError as exc:
                    raise BadPayload(f"The custom-function body is malformed: {_first_error(exc)}.") from None
                kind, name, args, call = "full", full.name, full.args or {}, full.call
            else:
                # "Payload: args only": the body is the arguments themselves.
                kind, name, args = "args-only", query.get("name") or "unknown", data
        call_id = call.call_id if call is not None else (query.get("call_id") or None)
        tool_call_id = function_call_id(call_id, name, args, utterance_count(call))
        events: list[Event] = [
            ToolRequested(
                at=received_at, provider=PROVIDER, call_id=call_id, tool_call_id=tool_call_id, name=name, arguments=args
            )
        ]
        batch = ToolBatch(
            provider=PROVIDER,
            dialect="retell-function",
            call_id=call_id,
            calls=(ToolCall(tool_call_id=tool_call_id, name=name, arguments=args),),
            platform_timeout_s=self._settings.function_timeout_seconds,
            raw_body=request.body,
            headers=request.headers,
            path=request.target,
            method=request.method,
            content_type=request.content_type or "application/json",
            extra={"payload": kind},
        )
        return Inbound(
            PROVIDER,
            "function_call",
            call_id,
            received_at,
            events,
            tool_batch=batch,
            dedupe_key=f"retell.function:{tool_call_id}",
            extra=_call_extra(call) if call is not None else {},
        )

    # -- replies --------------------------------------------------------------

    def tool_reply(self, batch: ToolBatch, outcomes: list[ToolOutcome]) -> Response:
        # Any 2xx is success for Retell; the body is stringified for the LLM, so a
        # refusal travels as {"error": reason} the agent can say.
        outcome = outcomes[0] if outcomes else None
        if outcome is None:
            return Response.json(200, _fit("error", "No decision was made for this function call."))
        if outcome.decision == "rejected" or (outcome.error is not None and outcome.result is None):
            return Response.json(200, _fit("error", outcome.error or "The operator rejected this function call."))
        return Response.json(200, _fit("result", outcome.result or ""))

    def ack(self, inbound: Inbound) -> Response:
        return Response(status=204)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"]) or "(top level)"
    return f"{where}: {err['msg']}"


def _call_extra(call: RetellCall) -> dict[str, Any]:
    fields = ("agent_id", "call_type", "direction", "from_number", "to_number", "call_status")
    return {f: getattr(call, f) for f in fields if getattr(call, f)}


# -- the spec (console.providers.registry) ----------------------------------------------------


def _sign(request: SignRequest) -> dict[str, str]:
    return {HEADER: sign_retell(request.body, request.secret, int(time.time() * 1000))}


def _warnings(settings: Settings, secrets: Secrets) -> list[str]:
    if secrets.get("retell_api_key"):
        return []
    return ["Retell webhooks will be refused: no Retell API key. Set VOICE_CONSOLE_RETELL_API_KEY."]


SPEC = ProviderSpec(
    name="retell",
    title="Retell",
    routes=(
        Route(ROUTE_WEBHOOK, "/webhook/retell"),
        # Retell custom functions may be configured with any of these methods.
        Route(ROUTE_FUNCTION, "/webhook/retell/function", ("POST", "GET", "PUT", "PATCH", "DELETE")),
    ),
    secrets=(
        Secret("retell_api_key", "Retell API key"),
        # Made on first use when not set: Retell sends no credentials to a custom-LLM socket.
        Secret("retell_llm_token", "Retell custom-LLM tap token"),
    ),
    taps=(
        Tap(
            "/llm/retell",
            token_secret="retell_llm_token",
            session=RetellLlmTap,
            forward_to=lambda settings: settings.retell.llm_forward_to,
            option="--retell-llm-forward-to (or [retell] llm_forward_to)",
        ),
    ),
    build=lambda settings, secrets: RetellProvider(settings.retell, secrets.get("retell_api_key")),
    # Retell signs every webhook with the API key itself.
    signing_secret="retell_api_key",
    sign=_sign,
    base_url=lambda settings: settings.retell.base_url,
    key_check=KeyCheck(needs=("retell_api_key",), proves="retell_api_key", request=agents_probe),
    warnings=_warnings,
    dialing=Dialing(needs=("retell_api_key",), client=dialer, agent_word="agent"),
    control=Control(
        open=open_control,
        needs=("retell_api_key",),
        unavailable=UNAVAILABLE,
        say_prompt="Context for the agent, who is prompted to respond to it now:",
    ),
)
