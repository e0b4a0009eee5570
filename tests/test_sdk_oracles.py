"""The platforms' official SDKs as oracles for the simulators and the receiver's replies.

The real simulators play every bundled scenario, as Vapi, Retell and Twilio, through a recording
proxy into a real receiver; every request they sent and every reply the receiver gave is then
checked against the SDKs (test-only dependencies, never imported by the console):

- vapi-server-sdk: each server message against its `ServerMessage*` model, each reply against its
  `ServerMessageResponse*` model. The SDK builds its models without validating and names JSON keys
  with `FieldMetadata` rather than pydantic aliases, so a payload is first mapped to field names
  with the SDK's own `convert_and_respect_annotation_metadata`, then validated in pydantic strict
  mode (JSON input), and no model in the result may carry a key the SDK does not know.
- retell-sdk: every webhook's `call` against `PhoneCallResponse` (same strict check), the event
  name against the agent's `webhook_events` literal, `X-Retell-Signature` with the SDK's `verify`.
- twilio: every `X-Twilio-Signature` with `RequestValidator.validate`, and the TwiML replies use
  only verbs the SDK's `VoiceResponse` can build.

vapi-server-sdk 1.9 is the newest release that installs beside pydantic-core 2.50 (1.10 and later
pin pydantic-core < 2.44). It has every type checked here except `assistant.speechStarted` (3.0
adds `ServerMessageAssistantSpeech`) and `campaign.predial`'s reply, which are listed as unchecked
by name, and it predates `turnId` on `user-interrupted` and `model-output` (1.11 and 3.0 have it):
that field is counted apart and the rest of the message is still checked. One deviation is
deliberate: `model-output.output` is typed as an object ("a token or tool call"); the simulator
sends tool calls as objects and tokens as strings, so a string token is accepted when `output` is
the only disagreement.
"""

from __future__ import annotations

import functools
import json
import typing
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pydantic
import pytest
import typing_extensions
import vapi.types as vapi_types
from retell.lib.webhook_auth import verify as retell_verify
from retell.types.agent_response import AgentResponse
from retell.types.phone_call_response import PhoneCallResponse
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import VoiceResponse
from vapi.core.serialization import convert_and_respect_annotation_metadata, get_field_to_alias_mapping

from console.core.http_types import Request, Response
from console.core.policy import Policy, ToolRule
from console.receiver.http import Handler, HttpServer, Router
from console.services.receiver import ReceiverService
from console.simulator import load_scenario
from console.simulator.cli import simulate
from console.simulator.scenarios import bundled_scenarios
from tests.helpers.receiver import start_service, vapi_headers
from tests.helpers.secrets import PAYLOADS, PUBLIC_URL, RETELL_KEY, TWILIO_TOKEN, VAPI_SECRET

# Tool calls are held briefly then refused, so `hang` is sent while they wait (slow-tool).
HOLD = Policy(
    tools={
        "default": ToolRule(
            action="hold", timeout_seconds=0.3, on_timeout="reject", reason="Nobody approved it in time."
        )
    }
)
SPEED = 40

VAPI_MESSAGES: dict[str, type[pydantic.BaseModel]] = {
    "status-update": vapi_types.ServerMessageStatusUpdate,
    "speech-update": vapi_types.ServerMessageSpeechUpdate,
    "transcript": vapi_types.ServerMessageTranscript,
    "model-output": vapi_types.ServerMessageModelOutput,
    "user-interrupted": vapi_types.ServerMessageUserInterrupted,
    "conversation-update": vapi_types.ServerMessageConversationUpdate,
    "tool-calls": vapi_types.ServerMessageToolCalls,
    "hang": vapi_types.ServerMessageHang,
    "end-of-call-report": vapi_types.ServerMessageEndOfCallReport,
    "transfer-update": vapi_types.ServerMessageTransferUpdate,
}
VAPI_UNCHECKED = {"assistant.speechStarted": "no ServerMessage type in vapi-server-sdk 1.9 (3.0 has one)"}
# Fields the current schema has and 1.9 does not (vapi-server-sdk 1.11 and 3.0 declare `turnId` on both).
NEWER_THAN_SDK = {
    ("user-interrupted", "$.turnId: not in ServerMessageUserInterrupted"),
    ("model-output", "$.turnId: not in ServerMessageModelOutput"),
}
VAPI_REPLIES: dict[str, type[pydantic.BaseModel]] = {
    "tool-calls": vapi_types.ServerMessageResponseToolCalls,
    "assistant-request": vapi_types.ServerMessageResponseAssistantRequest,
    "transfer-destination-request": vapi_types.ServerMessageResponseTransferDestinationRequest,
    "handoff-destination-request": vapi_types.ServerMessageResponseHandoffDestinationRequest,
    "knowledge-base-request": vapi_types.ServerMessageResponseKnowledgeBaseRequest,
    "call.endpointing.request": vapi_types.ServerMessageResponseCallEndpointingRequest,
}
# Answered from config; the receiver answers them with and without the config set.
CONFIGURED = {
    "vapi": {
        "transfer_destination": "+16505550100",
        "handoff_destination": "Billing",
        "assistant_request": {"assistant_id": "5b0a7c1e-2f3d-4e5f-8a9b-0c1d2e3f4a5b"},
    }
}


# ------------------------------------------------------------------ the strict check


def _model_extras(value: Any, path: str) -> list[str]:
    """Keys no SDK model declares, anywhere in a validated value."""
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        found += [f"{path}.{key}: not in {type(value).__name__}" for key in value.model_extra or {}]
        for name in type(value).model_fields:
            found += _model_extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += _model_extras(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += _model_extras(item, f"{path}.{key}")
    return found


@functools.cache
def _vapi_fields(model: type[pydantic.BaseModel]) -> tuple[dict[str, str], dict[str, Any]]:
    """(JSON key -> field name, field name -> annotation) of an SDK model."""
    aliases = {alias: name for name, alias in get_field_to_alias_mapping(model).items()}
    return aliases, typing_extensions.get_type_hints(model, include_extras=True)


@functools.lru_cache(maxsize=512)
def _dealiased(value_json: str, annotation: Any) -> Any:
    return convert_and_respect_annotation_metadata(
        object_=json.loads(value_json), annotation=annotation, direction="read"
    )


def vapi_field_names(model: type[pydantic.BaseModel], payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with the SDK's field names, as its own `convert_and_respect_annotation_metadata` maps
    them, one top-level key at a time so that the envelope's repeated objects (the assistant, the
    call) are mapped once: the SDK's mapping tries every member of every union, about a second each."""
    aliases, hints = _vapi_fields(model)
    converted = {}
    for key, value in payload.items():
        name = aliases.get(key, key)
        annotation = hints.get(name)
        converted[name] = value if annotation is None else _dealiased(json.dumps(value, sort_keys=True), annotation)
    return converted


def strict_problems(model: type[pydantic.BaseModel], payload: Any) -> list[str]:
    """What the SDK's type refuses in `payload` (empty: it agrees)."""
    if model.__module__.startswith("vapi.") and isinstance(payload, dict):
        payload = vapi_field_names(model, payload)
    try:
        value = model.model_validate_json(json.dumps(payload), strict=True)
    except pydantic.ValidationError as err:
        return [f"$.{'.'.join(map(str, e['loc']))}: {e['type']}" for e in err.errors()]
    return _model_extras(value, "$")


def test_the_strict_check_is_not_vacuous() -> None:
    """It refuses a missing required key, a wrong type and an unknown key, at any depth."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    good = {"type": "tool-calls", "toolCallList": [call], "toolWithToolCallList": []}
    assert strict_problems(vapi_types.ServerMessageToolCalls, good) == []
    assert strict_problems(vapi_types.ServerMessageToolCalls, {"type": "tool-calls", "toolCallList": [call]})
    bad_type = {**good, "toolCallList": [{**call, "function": {"name": "f", "arguments": {}}}]}
    assert strict_problems(vapi_types.ServerMessageToolCalls, bad_type) == [
        "$.tool_call_list.0.function.arguments: string_type"
    ]
    unknown = {**good, "toolCallList": [{**call, "function": {**call["function"], "argz": 1}}]}
    assert strict_problems(vapi_types.ServerMessageToolCalls, unknown) == [
        "$.tool_call_list[0].function.argz: not in ToolCallFunction"
    ]
    assert strict_problems(vapi_types.ServerMessageResponseHandoffDestinationRequest, {"error": "no"}) == [
        "$.destination: missing"
    ]


# ------------------------------------------------------------------ a recording proxy


@dataclass
class Exchange:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    status: int
    reply: bytes
    reply_type: str

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class _EveryPath(Router):
    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self._handler = handler

    def match(self, method: str, path: str) -> Handler | Response:
        return self._handler


@dataclass
class RecordingProxy:
    """Passes every request on to `upstream` unchanged and keeps both sides."""

    upstream: str
    exchanges: list[Exchange] = field(default_factory=list)

    async def __aenter__(self) -> RecordingProxy:
        self._client = httpx.AsyncClient(timeout=30)
        self.server = HttpServer(_EveryPath(self._forward), host="127.0.0.1", port=0)
        await self.server.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.server.close()
        await self._client.aclose()

    @property
    def url(self) -> str:
        return self.server.url

    async def _forward(self, request: Request) -> Response:
        headers = [(k, v) for k, v in request.headers if k not in ("host", "content-length", "connection")]
        answer = await self._client.request(
            request.method, self.upstream + request.target, content=request.body, headers=headers
        )
        content_type = answer.headers.get("content-type", "")
        self.exchanges.append(
            Exchange(
                request.method,
                request.target,
                dict(request.headers),
                request.body,
                answer.status_code,
                answer.content,
                content_type,
            )
        )
        return Response(answer.status_code, answer.content, content_type or "application/octet-stream")


# ------------------------------------------------------------------ tallies


@dataclass
class Tally:
    agreed: Counter[str] = field(default_factory=Counter)
    deviations: Counter[str] = field(default_factory=Counter)
    unchecked: Counter[str] = field(default_factory=Counter)
    disagreements: list[str] = field(default_factory=list)

    def check(self, what: str, problems: list[str]) -> None:
        if problems:
            self.disagreements.append(f"{what}: {problems[:5]}")
        else:
            self.agreed[what] += 1

    def report(self, title: str) -> str:
        checks = sum(self.agreed.values()) + sum(self.deviations.values()) + len(self.disagreements)
        return (
            f"{title}: {checks} checks, {sum(self.agreed.values())} agree, "
            f"{sum(self.deviations.values())} documented deviations {dict(self.deviations)}, "
            f"{len(self.disagreements)} disagree; unchecked {dict(self.unchecked)}; "
            f"by kind {dict(sorted(self.agreed.items()))}"
        )


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[ReceiverService]:
    service, _ = await start_service(tmp_path / "receiver", policy=HOLD)
    yield service
    await service.close()


async def _play(receiver: ReceiverService, provider: str, **kwargs: Any) -> list[Exchange]:
    async with RecordingProxy(receiver.server.url) as proxy:
        for name in bundled_scenarios():
            target = proxy.url + ("/webhook/vapi" if provider == "vapi" else "")
            records, _ = await simulate(
                target, load_scenario(name), calls=1, concurrency=1, speed=SPEED, provider=provider, **kwargs
            )
            assert records and not [r for r in records if r.error and r.type != "media-stream"], (name, records)
    return proxy.exchanges


# ------------------------------------------------------------------ Vapi


def _vapi_message_check(tally: Tally, message: dict[str, Any]) -> None:
    kind = message["type"]
    if kind in VAPI_UNCHECKED:
        tally.unchecked[kind] += 1
        return
    problems = strict_problems(VAPI_MESSAGES[kind], message)
    newer = [problem for problem in problems if (kind, problem) in NEWER_THAN_SDK]
    if newer:
        tally.deviations[f"{kind} field newer than the SDK"] += 1
        problems = [problem for problem in problems if problem not in newer]
        # Still checked: the rest of the message, without the field 1.9 does not know.
        problems += strict_problems(VAPI_MESSAGES[kind], {k: v for k, v in message.items() if k != "turnId"})
    if kind == "model-output" and isinstance(message.get("output"), str):
        assert set(problems) == {"$.output: dict_type"}, problems  # the token string, and nothing else
        tally.deviations["model-output token as a string"] += 1
        return
    tally.check(kind, sorted(set(problems)))


@pytest.mark.e2e
async def test_vapi_simulator_messages_and_replies_agree_with_vapi_server_sdk(
    receiver: ReceiverService, capsys: pytest.CaptureFixture[str]
) -> None:
    exchanges = await _play(receiver, "vapi", settings=receiver.settings, secret=VAPI_SECRET)
    tally = Tally()
    sent: Counter[str] = Counter()
    output_shapes: set[str] = set()
    for exchange in exchanges:
        body = json.loads(exchange.body)
        assert set(body) == {"message"}
        message = body["message"]
        sent[message["type"]] += 1
        if message["type"] == "model-output":
            output_shapes.add(type(message["output"]).__name__)
        _vapi_message_check(tally, message)
        if message["type"] in VAPI_REPLIES:
            assert exchange.status == 200
            tally.check(
                f"reply to {message['type']}",
                strict_problems(VAPI_REPLIES[message["type"]], json.loads(exchange.reply)),
            )
    assert tally.disagreements == []
    # Every type the simulator sends was met, and both shapes of model-output.
    assert set(sent) == set(VAPI_MESSAGES) | set(VAPI_UNCHECKED), sent
    assert output_shapes == {"str", "dict"}
    with capsys.disabled():
        print("\n" + tally.report("vapi simulator"))


@pytest.mark.parametrize("overrides", [{}, CONFIGURED], ids=["unconfigured", "configured"])
async def test_vapi_receiver_replies_agree_with_vapi_server_sdk(
    tmp_path: Path, overrides: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    service, _ = await start_service(tmp_path, policy=HOLD, **overrides)
    tally = Tally()
    try:
        async with httpx.AsyncClient(base_url=service.server.url, timeout=10) as client:
            for path in sorted((PAYLOADS / "vapi").glob("*.json")):
                body = path.read_bytes()
                kind = json.loads(body)["message"]["type"]
                response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
                assert response.status_code == 200, (path.name, response.text)
                if kind in VAPI_REPLIES:
                    tally.check(f"reply to {kind}", strict_problems(VAPI_REPLIES[kind], response.json()))
                elif kind == "campaign.predial":
                    tally.unchecked["reply to campaign.predial (no type in 1.9)"] += 1
    finally:
        await service.close()
    assert tally.disagreements == []
    assert {kind.removeprefix("reply to ") for kind in tally.agreed} == set(VAPI_REPLIES)
    with capsys.disabled():
        print("\n" + tally.report(f"vapi receiver replies ({'configured' if overrides else 'unconfigured'})"))


async def test_handoff_reply_names_the_configured_assistant_the_sdk_way(tmp_path: Path) -> None:
    service, _ = await start_service(tmp_path, **CONFIGURED)
    try:
        body = (PAYLOADS / "vapi" / "handoff-destination-request.json").read_bytes()
        async with httpx.AsyncClient(base_url=service.server.url, timeout=10) as client:
            reply = (await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))).json()
    finally:
        await service.close()
    assert strict_problems(vapi_types.ServerMessageResponseHandoffDestinationRequest, reply) == []
    assert reply == {"destination": {"type": "assistant", "assistantName": "Billing"}}


# ------------------------------------------------------------------ Retell


def _retell_events() -> set[str]:
    annotation = AgentResponse.model_fields["webhook_events"].annotation
    literal = typing.get_args(typing.get_args(typing.get_args(annotation)[0])[0])
    return set(literal)


@pytest.mark.e2e
async def test_retell_simulator_webhooks_agree_with_retell_sdk(
    receiver: ReceiverService, capsys: pytest.CaptureFixture[str]
) -> None:
    exchanges = await _play(receiver, "retell", secret=RETELL_KEY)
    events = _retell_events()
    assert "call_analyzed" in events  # the literal was found
    tally = Tally()
    sent: Counter[str] = Counter()
    for exchange in exchanges:
        body = json.loads(exchange.body)
        tally.check(
            "X-Retell-Signature",
            []
            if retell_verify(exchange.body.decode(), RETELL_KEY, exchange.headers["x-retell-signature"])
            else ["bad"],
        )
        if exchange.path == "/webhook/retell/function":
            assert set(body) == {"name", "args", "call"} and isinstance(body["args"], dict)
            kind = "function call"
        else:
            assert set(body) == {"event", "call"}
            kind = body["event"]
            tally.check("event name", [] if kind in events else [f"{kind} is not a Retell webhook event"])
        sent[kind] += 1
        tally.check(f"{kind} call", strict_problems(PhoneCallResponse, body["call"]))
    assert tally.disagreements == []
    assert set(sent) == {
        "call_started",
        "transcript_updated",
        "transfer_started",
        "call_ended",
        "call_analyzed",
        "function call",
    }, sent
    with capsys.disabled():
        print("\n" + tally.report("retell simulator"))


# ------------------------------------------------------------------ Twilio


def _twiml_problems(reply: bytes) -> list[str]:
    root = ET.fromstring(reply)
    if root.tag != "Response":
        return [f"root <{root.tag}>"]
    builder = VoiceResponse()
    return [
        f"<{child.tag}> is no VoiceResponse verb"
        for child in root
        if not callable(getattr(builder, child.tag.lower(), None))
    ]


@pytest.mark.e2e
async def test_twilio_simulator_signatures_and_twiml_agree_with_the_twilio_sdk(
    receiver: ReceiverService, capsys: pytest.CaptureFixture[str]
) -> None:
    exchanges = await _play(receiver, "twilio", secret=TWILIO_TOKEN, public_url=PUBLIC_URL)
    validator = RequestValidator(TWILIO_TOKEN)
    tally = Tally()
    routes: Counter[str] = Counter()
    for exchange in exchanges:
        params = dict(parse_qsl(exchange.body.decode(), keep_blank_values=True))
        routes[exchange.path] += 1
        valid = validator.validate(PUBLIC_URL + exchange.target, params, exchange.headers["x-twilio-signature"])
        tally.check(f"X-Twilio-Signature on {exchange.path}", [] if valid else ["RequestValidator refused it"])
        assert exchange.reply_type.startswith("text/xml")
        tally.check(f"TwiML reply on {exchange.path}", _twiml_problems(exchange.reply))
    assert tally.disagreements == []
    assert set(routes) == {"/webhook/twilio/voice", "/webhook/twilio/status"}
    with capsys.disabled():
        print("\n" + tally.report("twilio simulator"))
