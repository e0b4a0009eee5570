"""A local stand-in for Vapi: REST API, signed server messages, control and listen URLs.

`SimulatedPlatform` serves the part of Vapi's REST API the console uses
(reference/vapi.md §7) on the receiver's own HTTP server, seeded with demo
assistants and a phone number whose server URL is `webhook_url`. Creating a
call plays a scenario (`console.simulator.scenarios`) through `CallEngine`,
which posts `{"message": {...}}` server messages signed like a Vapi configured
with `webhook_settings` would sign them. `CallEngine` is also used without any
REST by `voice-console simulate`.

Choices where Vapi is undocumented or ambiguous (all in one place):
- timestamps are the wall-clock send time in epoch ms, as Vapi's are; at a high
  `speed` events seconds apart in the scenario are milliseconds apart;
- `model-output.output` is a string token while the assistant speaks (how the
  token stream is consumed in practice) and the tool-call object
  (`{id, type, function}`) when the model calls tools; Vapi's schema types it as
  an object and says "a token or tool call", so both shapes are sent;
- a tool the assistant does not define gets `parameters` built from the
  scenario's arguments (`properties` is required by Vapi's schema);
- `message.call` is the creation-time snapshot (status "queued"), as captured
  traffic shows (vapi.md §1.4) -- live state is in the events;
- a tool server's `timeoutSeconds` is real seconds whatever the speed: it is a
  contract with the receiver's gate, which counts real time; `hang` comes after
  the step's `hang_after` scenario seconds;
- control `end-call` ends with endedReason "assistant-ended-call" (the operator
  acts on the assistant's side of the call), a transfer with
  "assistant-forwarded-call"; the control URL answers `{"status": "ok"}` and
  takes the bare body or the `{"message": {...}}` form; it is unauthenticated,
  like Vapi's default (the unguessable call id is the capability);
- `POST /call` answers 400 for an unknown assistantId/phoneNumberId (OAS: "missing
  resources" are 400); unknown ids on GET are 404;
- the listen WebSocket sends binary s16le 16 kHz stereo (channel 0 customer,
  1 assistant) in 20 ms frames and no text frames.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import hmac
import json
import logging
import math
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from console.config import VapiSettings
from console.core.http_types import Request, Response
from console.providers.vapi.auth import sign_vapi_request
from console.receiver.http import Handler, HttpServer, Limits, Router
from console.receiver.ws import WebSocket, WebSocketClosed
from console.simulator.common import DeliveryRecord, LoopbackPlatform
from console.simulator.scenarios import (
    E164,
    BargeInStep,
    EndStep,
    SayStep,
    Scenario,
    SilenceStep,
    ToolsStep,
    TransferStep,
    bundled_scenarios,
    load_scenario,
    render,
    spoken,
)

__all__ = ["CallEngine", "DeliveryRecord", "SimCall", "SimulatedPlatform", "Webhook"]

log = logging.getLogger(__name__)

_NS = uuid.UUID("6f1c2a4e-8d3b-4c1a-9e7f-5b2d0c3a1e90")
ORG_ID = str(uuid.uuid5(_NS, "org"))
RECEPTIONIST_ID = str(uuid.uuid5(_NS, "assistant:receptionist"))
DEFAULTS_ID = str(uuid.uuid5(_NS, "assistant:defaults"))
PHONE_NUMBER_ID = str(uuid.uuid5(_NS, "phone:front-desk"))

# OAS CreateAssistantDTO.serverMessages default (vapi.md §2): no transcript.
DEFAULT_SERVER_MESSAGES = [
    "conversation-update",
    "end-of-call-report",
    "function-call",
    "hang",
    "speech-update",
    "status-update",
    "tool-calls",
    "transfer-destination-request",
    "handoff-destination-request",
    "user-interrupted",
    "assistant.started",
]
CONSOLE_SERVER_MESSAGES = [
    *DEFAULT_SERVER_MESSAGES,
    "transcript",
    "model-output",
    "assistant.speechStarted",
    "transfer-update",
]
# Every message type the engine can send; those missing from serverMessages are not sent.
CREATE_CALL_PROPERTIES = frozenset(
    {
        "assistantId",
        "assistantVersion",
        "assistant",
        "assistantOverrides",
        "squadId",
        "squad",
        "squadOverrides",
        "workflowId",
        "workflow",
        "workflowOverrides",
        "phoneNumberId",
        "phoneNumber",
        "customer",
        "customerId",
        "customers",
        "name",
        "schedulePlan",
        "transport",
    }
)
CUSTOMER_PROPERTIES = frozenset(
    {"number", "extension", "sipUri", "name", "email", "externalId", "numberE164CheckEnabled", "assistantOverrides"}
)

SAMPLE_RATE = 16_000
FRAME_S = 0.02  # 20 ms listen frames
_STATUS_TEXT = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}


def iso(epoch_s: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def nest_error(status: int, message: str | list[str]) -> Response:
    """NestJS-style error body, as Vapi's API returns them."""
    return Response.json(status, {"message": message, "error": _STATUS_TEXT.get(status, "Error"), "statusCode": status})


# ----------------------------------------------------------------- delivery


class Webhook:
    """Posts signed server messages; every attempt is reported to `on_record`."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        settings: VapiSettings | None = None,
        secret: str | None = None,
        on_record: Callable[[DeliveryRecord], None] | None = None,
    ) -> None:
        self._client = client
        self._settings = settings or VapiSettings()
        self._secret = secret
        self._on_record = on_record

    async def post(
        self, url: str | None, message: dict[str, Any], *, timeout: float = 20.0
    ) -> tuple[httpx.Response | None, float]:
        """(response or None, latency ms). Failures are recorded, never raised."""
        if not url:
            return None, 0.0
        body = json.dumps({"message": message}, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"content-type": "application/json"}
        if self._secret or self._settings.webhook.auth == "none":
            headers.update(sign_vapi_request(self._settings, self._secret or "", body, url=url))
        call_id = str(message.get("call", {}).get("id", ""))
        started = time.perf_counter()
        try:
            response = await self._client.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException:
            latency = (time.perf_counter() - started) * 1000
            self._record(DeliveryRecord(call_id, message["type"], None, latency, f"no answer within {timeout:g} s"))
            return None, latency
        except httpx.HTTPError as exc:
            latency = (time.perf_counter() - started) * 1000
            self._record(DeliveryRecord(call_id, message["type"], None, latency, f"{type(exc).__name__}: {exc}"))
            return None, latency
        latency = (time.perf_counter() - started) * 1000
        bad = tool_reply_problem(message, response) if message["type"] == "tool-calls" else None
        error = None if response.is_success else f"HTTP {response.status_code}"
        self._record(DeliveryRecord(call_id, message["type"], response.status_code, latency, error, bad))
        return response, latency

    def _record(self, record: DeliveryRecord) -> None:
        if record.error:
            log.info("posting %s for call %s: %s", record.type, record.call_id, record.error)
        if self._on_record is not None:
            self._on_record(record)


def tool_reply_problem(message: dict[str, Any], response: httpx.Response) -> str | None:
    """Why a tool-calls answer is not what Vapi needs (vapi.md §4.2), or None."""
    if response.status_code != 200:
        return f"HTTP {response.status_code}: Vapi ignores the body of a non-200 answer"
    try:
        body = response.json()
    except ValueError:
        return "the body is not JSON"
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        return 'no "results" array'
    wanted = [item["id"] for item in message.get("toolCallList", [])]
    got = [item.get("toolCallId") if isinstance(item, dict) else None for item in results]
    if sorted(map(str, got)) != sorted(wanted):
        return f"toolCallId mismatch: sent {wanted}, got {got}"
    for item in results:
        value = item.get("result", item.get("error"))
        if not isinstance(value, str):
            return f"{item.get('toolCallId')}: result/error must be a string, got {type(value).__name__}"
        if "\n" in value:
            return f"{item.get('toolCallId')}: result/error spans several lines"
        if "name" not in item:
            return f"{item.get('toolCallId')}: no name"
    return None


# ------------------------------------------------------------------ the call


class CallOver(Exception):
    """Unwinds a playing scenario: the call ends now, with `reason`."""

    def __init__(self, reason: str, transfer_to: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transfer_to = transfer_to


@dataclass
class SimCall:
    """One simulated call: the Vapi `Call` object plus what the engine needs."""

    data: dict[str, Any]  # the Call as the REST API returns it (mutated as the call goes)
    assistant: dict[str, Any]
    phone_number: dict[str, Any] | None
    scenario: Scenario
    webhook_url: str | None = None  # the org's server URL, used when nothing closer is set
    speaking: set[str] = field(default_factory=set)  # "user"/"assistant", for the listen stream
    muted: set[str] = field(default_factory=set)  # "assistant"/"customer"
    controls: deque[dict[str, Any]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ending: bool = False  # the call is hanging up: control commands are refused
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return str(self.data["id"])

    def control(self, command: dict[str, Any]) -> None:
        self.controls.append(command)
        self.wake.set()

    def audible(self, role: str) -> bool:
        channel = "customer" if role == "user" else "assistant"
        return role in self.speaking and channel not in self.muted


def new_call(
    *,
    assistant: dict[str, Any],
    scenario: Scenario,
    phone_number: dict[str, Any] | None = None,
    customer: dict[str, Any] | None = None,
    base_http: str | None = None,
    base_ws: str | None = None,
    webhook_url: str | None = None,
    extra: dict[str, Any] | None = None,
) -> SimCall:
    call_id = str(uuid.uuid4())
    now = iso()
    data: dict[str, Any] = {
        "id": call_id,
        "orgId": ORG_ID,
        "type": "outboundPhoneCall" if phone_number else "webCall",
        "status": "queued",
        "createdAt": now,
        "updatedAt": now,
        "assistantId": assistant.get("id"),
        "phoneNumberId": phone_number["id"] if phone_number else None,
        "customer": customer or {"number": scenario.customer_number},
        **(extra or {}),
    }
    if phone_number:
        data.update(phoneCallProvider="vapi", phoneCallTransport="pstn", phoneCallProviderId=uuid.uuid4().hex)
    if base_http and base_ws:
        data["monitor"] = {"listenUrl": f"{base_ws}/{call_id}/listen", "controlUrl": f"{base_http}/{call_id}/control"}
    data = {key: value for key, value in data.items() if value is not None}
    return SimCall(data, assistant, phone_number, scenario, webhook_url)


class CallEngine:
    """Plays one call's scenario as Vapi server messages, obeying control commands."""

    def __init__(self, call: SimCall, webhook: Webhook, *, speed: float = 1.0) -> None:
        self.call = call
        self.webhook = webhook
        self.speed = speed
        self._loop = asyncio.get_running_loop()
        self._snapshot = dict(call.data)  # creation-time snapshot, as Vapi sends it
        subscribed = call.assistant.get("serverMessages")
        self._subscribed = set(DEFAULT_SERVER_MESSAGES if subscribed is None else subscribed) | {"tool-calls"}
        self._turn = 0
        self._in_turn = False
        self._ending = False
        self._messages: list[dict[str, Any]] = []  # artifact.messages (Vapi format)
        self._openai: list[dict[str, Any]] = []  # artifact.messagesOpenAIFormatted
        self._lines: list[str] = []  # artifact.transcript
        self._started = time.time()
        self._start_epoch: float | None = None
        self._rng = random.Random(call.id)

    # ---------------------------------------------------------- plumbing

    @property
    def server_url(self) -> str | None:
        for owner in (self.call.assistant, self.call.phone_number or {}):
            url = (owner.get("server") or {}).get("url")
            if url:
                return str(url)
        return self.call.webhook_url

    def _envelope(self, type_: str, **fields: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"timestamp": int(time.time() * 1000), "type": type_, **fields}
        message["call"] = self._snapshot
        # The envelope's phoneNumber and assistant are Create*DTO shapes: no server-assigned fields.
        if self.call.phone_number:
            # CreateVapiPhoneNumberDTO has no `number` either: Vapi assigns a number it provisions.
            message["phoneNumber"] = _without_server_fields(self.call.phone_number, "number")
        message["customer"] = self.call.data.get("customer", {})
        message["assistant"] = _without_server_fields(self.call.assistant)
        return message

    def _artifact(self) -> dict[str, Any]:
        return {
            "messages": list(self._messages),
            "messagesOpenAIFormatted": list(self._openai),
            "transcript": "\n".join(self._lines),
        }

    async def send(
        self, type_: str, *, url: str | None = None, timeout: float = 20.0, **fields: Any
    ) -> httpx.Response | None:
        if type_ not in self._subscribed:
            return None
        response, _ = await self.webhook.post(url or self.server_url, self._envelope(type_, **fields), timeout=timeout)
        return response

    async def sleep(self, seconds: float) -> None:
        """Scenario time passes; control commands are obeyed meanwhile."""
        deadline = self._loop.time() + seconds / self.speed
        while True:
            await self._obey()
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return
            self.call.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.call.wake.wait(), remaining)

    async def _obey(self) -> None:
        """Run queued control commands. Within a turn only the immediate ones
        (end, transfer, mute); speech waits for the turn to finish."""
        controls = self.call.controls
        if self._ending:
            controls.clear()
            return
        deferred: list[dict[str, Any]] = []
        while controls:
            command = controls.popleft()
            kind = command.get("type")
            if kind == "end-call":
                raise CallOver("assistant-ended-call")
            if kind == "transfer":
                destination = command.get("destination") or {}
                raise CallOver("assistant-forwarded-call", destination.get("number") or destination.get("sipUri") or "")
            if kind == "control":
                self._mute(str(command.get("control", "")))
            elif self._in_turn:
                deferred.append(command)
            elif kind == "say":
                await self.speak("assistant", str(command.get("content") or command.get("message") or ""))
                if command.get("endCallAfterSpoken"):
                    raise CallOver("assistant-ended-call-after-message-spoken")
            elif kind == "add-message":
                await self._add_message(command)
        controls.extendleft(reversed(deferred))

    def _mute(self, control: str) -> None:
        action, _, who = control.partition("-")
        if who in ("assistant", "customer"):
            if action == "mute":
                self.call.muted.add(who)
            elif action == "unmute":
                self.call.muted.discard(who)

    async def _add_message(self, command: dict[str, Any]) -> None:
        message = command.get("message") or {}
        role, content = str(message.get("role", "system")), str(message.get("content", ""))
        self._record_message("bot" if role == "assistant" else role, content)
        if command.get("triggerResponseEnabled", True):
            await self.speak("assistant", content if role == "assistant" else "Understood.")

    def _record_message(self, role: str, text: str, **extra: Any) -> None:
        seconds = time.time() - (self._start_epoch or self._started)
        # A tool result carries `result`, not `message` (OAS ToolCallResultMessage).
        said = {} if role == "tool_call_result" else {"message": text}
        self._messages.append(
            {"role": role, **said, "time": int(time.time() * 1000), "secondsFromStart": round(seconds, 3), **extra}
        )
        openai_role = {"bot": "assistant", "user": "user"}.get(role, role)
        if openai_role in ("assistant", "user", "system"):
            self._openai.append({"role": openai_role, "content": text})
        if role in ("bot", "user"):
            self._lines.append(f"{'AI' if role == 'bot' else 'User'}: {text}")

    def _word_s(self) -> float:
        return 1.0 / self.call.scenario.words_per_second

    # ---------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """The whole call: ring, play the steps, end. Never raises (but CancelledError)."""
        reason, transfer_to = "customer-ended-call", None
        try:
            await self._status("queued")
            await self.sleep(0.4)
            await self._status("ringing")
            await self.sleep(1.6)
            self._start_epoch = time.time()
            self.call.data["startedAt"] = iso(self._start_epoch)
            await self._status("in-progress")
            for step in self.call.scenario.steps:
                await self.sleep(step.pause)
                if isinstance(step, EndStep):
                    reason = step.reason
                    break
                if isinstance(step, TransferStep):
                    raise CallOver("assistant-forwarded-call", step.destination)
                await self._play(step)
            await self.sleep(0.2)
            await self._obey()  # a final command (say/end) sent during the last step
        except CallOver as over:
            reason, transfer_to = over.reason, over.transfer_to
        except Exception:  # a bug must end the call, not leave it "in-progress" forever
            log.exception("simulated call %s failed", self.call.id)
            reason = "call.in-progress.error-vapifault-simulator"
        await self._finish(reason, transfer_to)

    async def _status(self, status: str, **fields: Any) -> None:
        self.call.data["status"] = status
        self.call.data["updatedAt"] = iso()
        await self.send("status-update", status=status, **fields)

    async def _finish(self, reason: str, transfer_to: str | None) -> None:
        self._ending = self.call.ending = True
        for role in list(self.call.speaking):
            await self._speech(role, "stopped")
        if transfer_to is not None:
            step = self.call.scenario.steps[-1]
            say = step.say if isinstance(step, TransferStep) and step.destination == transfer_to else None
            if say:
                await self.speak("assistant", say)
            destination = {"type": "number", "number": transfer_to}
            await self._status("forwarding", destination=destination, transcript="\n".join(self._lines))
            await self.send("transfer-update", destination=destination)
        ended = time.time()
        started = self._start_epoch or ended
        minutes = max(ended - started, 0.0) / 60
        costs: list[dict[str, Any]] = [
            {"type": "transport", "provider": "vapi", "minutes": round(minutes, 4), "cost": round(minutes * 0.01, 4)},
            {"type": "vapi", "subType": "normal", "minutes": round(minutes, 4), "cost": round(minutes * 0.05, 4)},
        ]
        cost = round(sum(item["cost"] for item in costs), 4)
        summary = self.call.scenario.summary or f"A simulated call ({self.call.scenario.name})."
        self.call.data.update(
            endedReason=reason,
            endedAt=iso(ended),
            cost=cost,
            costs=costs,
            artifact=self._artifact(),
            analysis={"summary": summary},
        )
        self.call.data.setdefault("startedAt", iso(started))
        await self._status("ended", endedReason=reason)
        await self.send(
            "end-of-call-report",
            endedReason=reason,
            artifact=self._artifact(),
            analysis={"summary": summary, "successEvaluation": "true"},
            cost=cost,
            costs=costs,
            startedAt=iso(started),
            endedAt=iso(ended),
        )
        self.call.ended.set()

    # ---------------------------------------------------------- steps

    async def _play(self, step: Any) -> None:
        if isinstance(step, SayStep):
            await self.speak(step.role, step.text)
        elif isinstance(step, BargeInStep):
            await self.speak("assistant", step.text, cut_after=step.cut_after_words, then_obey=False)
            await self.speak("user", step.user, over_assistant=True)
        elif isinstance(step, ToolsStep):
            await self._tools(step)
        elif isinstance(step, SilenceStep):
            await self.sleep(step.seconds)

    async def _speech(self, role: str, status: str, turn: int | None = None) -> None:
        if status == "started":
            self.call.speaking.add(role)
        else:
            self.call.speaking.discard(role)
        await self.send("speech-update", status=status, role=role, turn=self._turn if turn is None else turn)

    async def speak(
        self,
        role: str,
        text: str,
        *,
        cut_after: int | None = None,
        over_assistant: bool = False,
        then_obey: bool = True,
    ) -> None:
        """One turn: speech started, partials, final, stopped. An assistant turn
        streams its model output first (with a turnId) so a cut is knowable;
        `cut_after` stops it after that many words (the user barges in)."""
        words = text.split()
        if not words:
            return
        if role == "user" and "customer" in self.call.muted:
            return  # a muted caller is not heard by the assistant
        self._in_turn = True
        try:
            if role == "assistant":
                await self._assistant_turn(words, cut_after)
            else:
                await self._user_turn(words, over_assistant)
        finally:
            self._in_turn = False
            self._turn += 1
        if then_obey:
            await self._obey()

    async def _assistant_turn(self, words: list[str], cut_after: int | None) -> None:
        turn_id = f"turn_{uuid.uuid4().hex[:10]}"
        segments = [words[i : i + 6] for i in range(0, len(words), 6)]
        for segment in segments:  # the model streams ahead of the voice
            await self.send("model-output", output=" ".join(segment) + " ", turnId=turn_id)
        await self.sleep(0.25)  # voice latency
        await self._speech("assistant", "started")
        said = 0
        limit = cut_after if cut_after is not None else len(words)
        for segment in segments:
            if said >= limit:
                break
            await self.send(
                "assistant.speechStarted", text=" ".join(words[: said + len(segment)]), turn=self._turn, source="model"
            )
            for chunk in _chunks(segment[: limit - said], 3):
                await self.sleep(len(chunk) * self._word_s())
                said += len(chunk)
                await self.send(
                    "transcript", role="assistant", transcriptType="partial", transcript=" ".join(words[:said])
                )
        text = " ".join(words[:said])
        if cut_after is not None:
            # The user starts over the assistant (the user's turn is the next one);
            # Vapi names the cut turn, then the voice stops.
            await self._speech("user", "started", turn=self._turn + 1)
            await self.sleep(0.2)  # stopSpeakingPlan.voiceSeconds
            await self.send("user-interrupted", turnId=turn_id)
            await self._speech_stop_assistant(text, turn=self._turn)
            return
        await self._speech_stop_assistant(text, turn=self._turn)

    async def _speech_stop_assistant(self, text: str, *, turn: int) -> None:
        await self.send("transcript", role="assistant", transcriptType="final", transcript=text)
        self.call.speaking.discard("assistant")
        await self.send("speech-update", status="stopped", role="assistant", turn=turn)
        self._record_message("bot", text)
        await self.send(
            "conversation-update", messages=list(self._messages), messagesOpenAIFormatted=list(self._openai)
        )

    async def _user_turn(self, words: list[str], over_assistant: bool) -> None:
        if not over_assistant:  # after a barge-in the user is already speaking
            await self._speech("user", "started")
        said = 0
        for chunk in _chunks(words, 3):
            await self.sleep(len(chunk) * self._word_s())
            said += len(chunk)
            if said < len(words):
                await self.send("transcript", role="user", transcriptType="partial", transcript=" ".join(words[:said]))
        await self._speech("user", "stopped")
        await self.sleep(0.3)  # endpointing
        text = " ".join(words)
        await self.send("transcript", role="user", transcriptType="final", transcript=text)
        self._record_message("user", text)
        await self.send(
            "conversation-update", messages=list(self._messages), messagesOpenAIFormatted=list(self._openai)
        )

    # ---------------------------------------------------------- tools

    def _tool_config(self, name: str, timeout_s: float, arguments: dict[str, Any]) -> dict[str, Any]:
        model = self.call.assistant.get("model") or {}
        for tool in model.get("tools") or ():
            if (tool.get("function") or {}).get("name") == name:
                config = json.loads(json.dumps(tool))
                break
        else:
            # A tool the assistant does not define: describe it from the scenario's arguments
            # (Vapi's schema requires `properties`).
            config = {
                "type": "function",
                "async": False,
                "messages": [],
                "function": {"name": name, "parameters": _parameters_for(arguments)},
            }
        server = dict(config.get("server") or {})
        server.setdefault("url", self.server_url)
        server["timeoutSeconds"] = timeout_s  # the scenario decides the deadline it tests
        config["server"] = server
        return config

    async def _tools(self, step: ToolsStep) -> None:
        if step.filler:
            await self.speak("assistant", step.filler)
        calls: list[dict[str, Any]] = [
            {
                "id": f"call_{uuid.uuid4().hex[:16]}",
                "type": "function",
                "function": {"name": spec.name, "arguments": json.dumps(spec.arguments, separators=(",", ":"))},
            }
            for spec in step.calls
        ]
        configs = [self._tool_config(spec.name, step.timeout_seconds, spec.arguments) for spec in step.calls]
        tools = [{**config, "toolCall": call} for config, call in zip(configs, calls, strict=True)]
        turn_id = f"turn_{uuid.uuid4().hex[:10]}"
        for call in calls:  # the model's output for this turn is tool calls, not tokens: objects
            await self.send("model-output", output=call, turnId=turn_id)
        self._record_message("tool_calls", "", toolCalls=calls)
        url = configs[0]["server"].get("url") or self.server_url
        request = asyncio.ensure_future(
            self.send(
                "tool-calls",
                url=url,
                timeout=step.timeout_seconds,
                toolCallList=calls,
                toolWithToolCallList=tools,
                artifact=self._artifact(),
            )
        )
        try:
            response = await self._await_tool(request, step.hang_after)
        finally:
            request.cancel()
        values: dict[str, str] = {}
        errors: list[str] = []
        results: list[str] = []
        answers = _results_by_id(response)
        for call, spec in zip(calls, step.calls, strict=True):
            answer = answers.get(call["id"])
            if answer is None:
                text, failed = "no result returned", True
            elif "error" in answer and answer.get("result") is None:
                text, failed = spoken(answer["error"]), True
            else:
                text, failed = spoken(answer.get("result")), False
            values[spec.name] = text
            (errors if failed else results).append(text)
            self._record_message("tool_call_result", "", toolCallId=call["id"], name=spec.name, result=text)
        values["result"], values["error"] = "; ".join(results), "; ".join(errors)
        if response is None:
            reply = step.on_timeout
        elif errors:
            reply = render(step.on_error, values)
        else:
            reply = render(step.say, values)
        await self.speak("assistant", reply)

    async def _await_tool(
        self, request: asyncio.Future[httpx.Response | None], hang_after: float
    ) -> httpx.Response | None:
        """The webhook's answer; `hang` if it is slow; control commands obeyed meanwhile."""
        hang_at = self._loop.time() + hang_after / self.speed
        hung = False
        while True:
            self.call.wake.clear()
            waiter = asyncio.ensure_future(self.call.wake.wait())
            timeout = None if hung else max(hang_at - self._loop.time(), 0)
            either: set[asyncio.Future[Any]] = {request, waiter}
            done, _ = await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if request in done:
                return request.result()
            await self._obey()  # may end the call (CallOver)
            if not hung and self._loop.time() >= hang_at:
                hung = True
                await self.send("hang")


_SERVER_FIELDS = frozenset({"id", "orgId", "createdAt", "updatedAt", "status"})


def _without_server_fields(resource: dict[str, Any], *also: str) -> dict[str, Any]:
    return {key: value for key, value in resource.items() if key not in _SERVER_FIELDS and key not in also}


_JSON_TYPES = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def _parameters_for(arguments: dict[str, Any]) -> dict[str, Any]:
    """A JSON-schema `parameters` object for arguments like these (bool before int: bool is an int)."""
    properties = {
        name: {"type": next((kind for cls, kind in _JSON_TYPES if isinstance(value, cls)), "string")}
        for name, value in arguments.items()
    }
    return {"type": "object", "properties": properties, "required": sorted(arguments)}


def _chunks(words: list[str], size: int) -> list[list[str]]:
    return [words[i : i + size] for i in range(0, len(words), size)]


def _results_by_id(response: httpx.Response | None) -> dict[str, dict[str, Any]]:
    if response is None or response.status_code != 200:
        return {}  # Vapi ignores the body of a non-200 answer
    try:
        body = response.json()
    except ValueError:
        return {}
    results = body.get("results") if isinstance(body, dict) else None
    return {str(item.get("toolCallId")): item for item in results or () if isinstance(item, dict)}


# ------------------------------------------------------------------ audio


def pcm_frame(call: SimCall, phase: list[float], rng: random.Random, samples: int) -> bytes:
    """One stereo s16le frame: a voiced tone on the side that speaks, low noise elsewhere."""
    out = array.array("h", bytes(samples * 4))
    for channel, (role, pitch) in enumerate((("user", 180.0), ("assistant", 240.0))):
        voiced = call.audible(role)
        step = 2 * math.pi * pitch / SAMPLE_RATE
        p = phase[channel]
        for i in range(samples):
            noise = rng.randint(-60, 60)
            value = noise + (int(7000 * math.sin(p) + 1500 * math.sin(3 * p)) if voiced else 0)
            out[2 * i + channel] = value
            p += step
        phase[channel] = p % (2 * math.pi)
    return out.tobytes()


# ------------------------------------------------------------------ the platform


class _PlatformRouter(Router):
    """Every HTTP request goes to one dispatcher (paths carry ids); websockets
    stay exact routes, one per call, added as calls are created."""

    def __init__(self, dispatch: Handler) -> None:
        super().__init__()
        self._dispatch = dispatch

    def match(self, method: str, path: str) -> Handler | Response:
        return self._dispatch


class SimulatedPlatform(LoopbackPlatform):
    """A Vapi stand-in on loopback: `await start()`, `.url`, `await close()`."""

    def __init__(
        self,
        webhook_url: str | None,
        *,
        api_key: str = "sim-private-key",
        webhook_settings: VapiSettings | None = None,
        webhook_secret: str | None = None,
        speed: float = 1.0,
        scenario: Scenario | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.webhook_url = webhook_url
        self.api_key = api_key
        self.speed = speed
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.deliveries: deque[DeliveryRecord] = deque(maxlen=10_000)
        self._settings = webhook_settings or VapiSettings()
        self._secret = webhook_secret
        self._router = _PlatformRouter(self._handle)
        self.server = HttpServer(self._router, host=host, port=port, limits=Limits(ws_ping_interval_s=None))
        self.assistants: dict[str, dict[str, Any]] = {}
        self.phone_numbers: dict[str, dict[str, Any]] = {}
        self.tools: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, SimCall] = {}
        self._client: httpx.AsyncClient | None = None
        self._webhook: Webhook | None = None
        self._seed()

    def _new_client(self) -> httpx.AsyncClient:
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=200, max_keepalive_connections=50))
        self._webhook = Webhook(client, self._settings, self._secret, on_record=self.deliveries.append)
        return client

    def _running(self) -> list[asyncio.Task[Any]]:
        return [call.task for call in self.calls.values() if call.task is not None]

    # ---------------------------------------------------------- seed data

    def _server(self) -> dict[str, Any] | None:
        return {"url": self.webhook_url, "timeoutSeconds": 20} if self.webhook_url else None

    def _seed(self) -> None:
        now = iso()
        tools = [
            _tool(
                "check_availability",
                "Find open appointment slots on a given day.",
                {"date": {"type": "string", "description": "ISO date, e.g. 2026-02-17"}, "reason": {"type": "string"}},
                ["date"],
                "Let me check the calendar.",
            ),
            _tool(
                "lookup_patient",
                "Find a patient record by phone number.",
                {"phone": {"type": "string"}},
                ["phone"],
                None,
            ),
            _tool(
                "book_appointment",
                "Book an appointment slot for a patient.",
                {"patient_name": {"type": "string"}, "date": {"type": "string"}, "time": {"type": "string"}},
                ["patient_name", "date", "time"],
                "One moment while I book that.",
            ),
        ]
        for tool in tools:
            if self._server():
                tool["server"] = self._server()
            tool_id = str(uuid.uuid5(_NS, "tool:" + tool["function"]["name"]))
            self.tools[tool_id] = {"id": tool_id, "orgId": ORG_ID, "createdAt": now, "updatedAt": now, **tool}
        base = {
            "orgId": ORG_ID,
            "createdAt": now,
            "updatedAt": now,
            "transcriber": {"provider": "deepgram", "model": "nova-3", "language": "en"},
            "voice": {"provider": "vapi", "voiceId": "Elliot"},
            "firstMessage": "Thanks for calling Sunrise Dental, this is Ava. How can I help?",
            "monitorPlan": {"listenEnabled": True, "controlEnabled": True},
        }
        model = {
            "provider": "openai",
            "model": "gpt-4o",
            "temperature": 0.3,
            "messages": [{"role": "system", "content": "You are Ava, the receptionist at Sunrise Dental."}],
            "toolIds": list(self.tools),
            "tools": tools,
        }
        self.assistants[RECEPTIONIST_ID] = _compact(
            {
                "id": RECEPTIONIST_ID,
                "name": "Sunrise Dental Receptionist (simulated)",
                **base,
                "model": model,
                "serverMessages": CONSOLE_SERVER_MESSAGES,
                "server": self._server(),
            }
        )
        # Vapi's defaults: no transcript, so the console's operator check has something to flag.
        self.assistants[DEFAULTS_ID] = _compact(
            {
                "id": DEFAULTS_ID,
                "name": "Defaults-only assistant (simulated)",
                **base,
                "model": model,
                "serverMessages": DEFAULT_SERVER_MESSAGES,
                "server": self._server(),
            }
        )
        self.phone_numbers[PHONE_NUMBER_ID] = _compact(
            {
                "id": PHONE_NUMBER_ID,
                "orgId": ORG_ID,
                "provider": "vapi",
                "number": "+16505550199",
                "name": "Front desk (simulated)",
                "assistantId": RECEPTIONIST_ID,
                "status": "active",
                "createdAt": now,
                "updatedAt": now,
                "server": self._server(),
            }
        )

    # ---------------------------------------------------------- HTTP

    async def _handle(self, request: Request) -> Response:
        parts = [part for part in request.path.split("/") if part]
        method = request.method if request.method != "HEAD" else "GET"
        if len(parts) == 2 and parts[1] == "control" and method == "POST":
            return self._control(parts[0], request)
        route = {
            ("GET", "assistant", 1): self._list_assistants,
            ("POST", "assistant", 1): self._create_assistant,
            ("GET", "assistant", 2): self._get_assistant,
            ("PATCH", "assistant", 2): self._patch_assistant,
            ("GET", "phone-number", 1): self._list_phone_numbers,
            ("GET", "phone-number", 2): self._get_phone_number,
            ("GET", "tool", 1): self._list_tools,
            ("GET", "call", 1): self._list_calls,
            ("POST", "call", 1): self._create_call,
            ("GET", "call", 2): self._get_call,
        }.get((method, parts[0] if parts else "", len(parts)))
        if route is None:
            return nest_error(404, f"Cannot {request.method} {request.path}")
        if not self._authorized(request):
            return nest_error(401, "Invalid Key. Use your private API key as `Authorization: Bearer <key>`.")
        return route(request, parts[1] if len(parts) == 2 else "")

    def _authorized(self, request: Request) -> bool:
        kind, _, token = (request.header("authorization") or "").strip().partition(" ")
        return kind.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key.encode())

    @staticmethod
    def _body(request: Request) -> dict[str, Any] | Response:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return nest_error(400, "Unexpected token in JSON body")
        if not isinstance(body, dict):
            return nest_error(400, "The request body must be a JSON object")
        return body

    @staticmethod
    def _limit(request: Request, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            limit = int(request.query_params().get("limit", 100))
        except ValueError:
            limit = 100
        return items[: max(0, min(limit, 1000))]

    def _list_assistants(self, request: Request, _: str) -> Response:
        return Response.json(200, self._limit(request, list(self.assistants.values())))

    def _get_assistant(self, request: Request, assistant_id: str) -> Response:
        assistant = self.assistants.get(assistant_id)
        return Response.json(200, assistant) if assistant else nest_error(404, "Assistant not found")

    def _create_assistant(self, request: Request, _: str) -> Response:
        body = self._body(request)
        if isinstance(body, Response):
            return body
        now = iso()
        assistant = {**body, "id": str(uuid.uuid4()), "orgId": ORG_ID, "createdAt": now, "updatedAt": now}
        self.assistants[assistant["id"]] = assistant
        return Response.json(201, assistant)

    def _patch_assistant(self, request: Request, assistant_id: str) -> Response:
        assistant = self.assistants.get(assistant_id)
        if assistant is None:
            return nest_error(404, "Assistant not found")
        body = self._body(request)
        if isinstance(body, Response):
            return body
        fixed = [key for key in ("id", "orgId", "createdAt", "updatedAt") if key in body]
        if fixed:
            return nest_error(400, [f"property {key} should not exist" for key in fixed])
        assistant.update(body)
        assistant["updatedAt"] = iso()
        return Response.json(200, assistant)

    def _list_phone_numbers(self, request: Request, _: str) -> Response:
        return Response.json(200, self._limit(request, list(self.phone_numbers.values())))

    def _get_phone_number(self, request: Request, number_id: str) -> Response:
        number = self.phone_numbers.get(number_id)
        return Response.json(200, number) if number else nest_error(404, "Phone number not found")

    def _list_tools(self, request: Request, _: str) -> Response:
        return Response.json(200, self._limit(request, list(self.tools.values())))

    def _list_calls(self, request: Request, _: str) -> Response:
        query = request.query_params()
        calls = [call.data for call in reversed(self.calls.values())]
        for key in ("id", "assistantId", "phoneNumberId"):
            if key in query:
                calls = [data for data in calls if data.get(key) == query[key]]
        return Response.json(200, self._limit(request, calls))

    def _get_call(self, request: Request, call_id: str) -> Response:
        call = self.calls.get(call_id)
        return Response.json(200, call.data) if call else nest_error(404, "Call not found")

    def _create_call(self, request: Request, _: str) -> Response:
        body = self._body(request)
        if isinstance(body, Response):
            return body
        problems = [f"property {key} should not exist" for key in body if key not in CREATE_CALL_PROPERTIES]
        customer = body.get("customer")
        if customer is not None and not isinstance(customer, dict):
            problems.append("customer must be an object")
        elif customer:
            problems += [
                f"property customer.{key} should not exist" for key in customer if key not in CUSTOMER_PROPERTIES
            ]
            number = customer.get("number")
            if (
                number is not None
                and customer.get("numberE164CheckEnabled", True)
                and not (isinstance(number, str) and E164.fullmatch(number))
            ):
                problems.append(
                    "customer.number must be a valid phone number in the E.164 format "
                    "(e.g. +14155550142). Hot tip, you may be missing the country code."
                )
        if problems:
            return nest_error(400, problems)
        for unsupported in ("squadId", "squad", "workflowId", "workflow", "customers", "customerId", "phoneNumber"):
            if unsupported in body:
                return nest_error(400, f"{unsupported} is not supported by the simulated platform")
        assistant = self._call_assistant(body)
        if isinstance(assistant, Response):
            return assistant
        phone_number = None
        if "phoneNumberId" in body:
            phone_number = self.phone_numbers.get(str(body["phoneNumberId"]))
            if phone_number is None:
                return nest_error(400, "Couldn't Get Phone Number. Phone Number Not Found (phoneNumberId).")
            if not customer or not customer.get("number"):
                return nest_error(400, "customer.number is required for a phone call")
        overrides = body.get("assistantOverrides") or {}
        scenario = self.scenario
        chosen = (overrides.get("variableValues") or {}).get("scenario") or (overrides.get("metadata") or {}).get(
            "scenario"
        )
        if chosen:
            # Bundled names only: a path here would let any API caller read local files.
            if str(chosen) not in bundled_scenarios():
                return nest_error(400, f"assistantOverrides scenario must be one of {', '.join(bundled_scenarios())}")
            scenario = load_scenario(str(chosen))
        http_base = self.url
        ws_base = "ws://" + http_base.removeprefix("http://")
        extra: dict[str, Any] = {
            key: body[key] for key in ("name", "assistantOverrides", "schedulePlan", "transport") if key in body
        }
        call = new_call(
            assistant=assistant,
            scenario=scenario,
            phone_number=phone_number,
            customer=customer,
            base_http=http_base,
            base_ws=ws_base,
            webhook_url=self.webhook_url,
            extra=extra,
        )
        self.calls[call.id] = call
        self._router.add_websocket(f"/{call.id}/listen", self._listen)
        assert self._webhook is not None, "start() the platform first"
        call.task = asyncio.create_task(CallEngine(call, self._webhook, speed=self.speed).run())
        response = {
            **call.data,
            "subscriptionLimits": {"concurrencyBlocked": False, "concurrencyLimit": 10, "remainingConcurrentCalls": 9},
        }
        return Response.json(201, response)

    def _call_assistant(self, body: dict[str, Any]) -> dict[str, Any] | Response:
        if "assistant" in body:
            if not isinstance(body["assistant"], dict):
                return nest_error(400, ["assistant must be an object"])
            return {**body["assistant"], "id": None}
        if "assistantId" not in body:
            return nest_error(400, "Couldn't Get Assistant. Need Either `assistant` Or `assistantId`.")
        assistant = self.assistants.get(str(body["assistantId"]))
        if assistant is None:
            return nest_error(400, "Couldn't Get Assistant. Assistant Not Found (assistantId).")
        overrides = body.get("assistantOverrides") or {}
        return {**assistant, **{k: v for k, v in overrides.items() if k not in ("variableValues", "metadata")}}

    # ---------------------------------------------------------- control and listen

    def _control(self, call_id: str, request: Request) -> Response:
        call = self.calls.get(call_id)
        if call is None:
            return nest_error(404, "Call not found")
        body = self._body(request)
        if isinstance(body, Response):
            return body
        message = body.get("message")
        command: dict[str, Any] = message if isinstance(message, dict) and "type" not in body else body
        kind = command.get("type")
        if kind not in ("say", "add-message", "control", "end-call", "transfer"):
            return nest_error(400, f"unknown control message type {kind!r}")
        if kind == "say" and not (command.get("content") or command.get("message")):
            return nest_error(400, "say needs `content`")
        if call.ending:
            return nest_error(400, "The call has ended")
        call.control(command)
        return Response.json(200, {"status": "ok"})

    async def _listen(self, request: Request, ws: WebSocket) -> None:
        call = self.calls.get(request.path.strip("/").split("/")[0])
        if call is None:
            return
        samples = int(SAMPLE_RATE * FRAME_S)
        phase, rng = [0.0, 0.0], random.Random()
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        try:
            while not call.ended.is_set() and not ws.closed:
                await ws.send(pcm_frame(call, phase, rng, samples))
                next_at += FRAME_S
                delay = next_at - loop.time()
                if delay < -1:  # fell far behind (a paused process): do not burst to catch up
                    next_at = loop.time()
                await asyncio.sleep(max(delay, 0))
        except WebSocketClosed:
            return


def _tool(
    name: str, description: str, properties: dict[str, Any], required: list[str], request_start: str | None
) -> dict[str, Any]:
    messages = [{"type": "request-start", "content": request_start}] if request_start else []
    return {
        "type": "function",
        "async": False,
        "messages": messages,
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def _compact(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}
