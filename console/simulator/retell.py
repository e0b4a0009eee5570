"""Retell, as the simulator plays it: the same scenarios as Retell's webhooks and
custom-function requests, signed as Retell signs them (reference/retell-twilio.md).

`RetellCallPlayer` posts to `<base>/webhook/retell` and `<base>/webhook/retell/function`:
- `call_started`; `transcript_updated` after every turn (and once more at the end)
  with the growing `transcript_object` (word timings in seconds from call start)
  and `transcript_with_tool_calls`;
- a scenario's tool step is a custom-function request per call,
  `{"name", "args", "call"}`, one after the other (a Retell LLM calls one function
  at a time); the agent then speaks the target's actual answer;
- `call_ended` (transcript, disconnection_reason, duration_ms, call_cost in cents)
  and `call_analyzed` (call_analysis.call_summary).
Every request carries `X-Retell-Signature: v=<ms>,d=<hex>` made with the API key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from console.core.http_types import Request, Response
from console.providers import registry
from console.providers.retell import FUNCTION_REPLY_LIMIT, sign_retell
from console.providers.retell.checks import REQUIRED_WEBHOOK_EVENTS, custom_llm_url
from console.receiver.http import HttpServer
from console.simulator.common import (
    AGENT_NUMBER,
    DeliveryRecord,
    DialectWebhook,
    LoopbackPlatform,
    Player,
    compact_body,
    log,
    split_base,
)
from console.simulator.retell_llm import RetellCaller
from console.simulator.scenarios import (
    BargeInStep,
    EndStep,
    SayStep,
    Scenario,
    SilenceStep,
    ToolsStep,
    TransferStep,
    load_scenario,
    render,
    spoken,
)

# The receiver's Retell routes, as Retell's spec declares them (longest first, to strip from a URL).
RETELL_ROUTES = tuple(sorted((route.path for route in registry.spec("retell").routes), key=len, reverse=True))
AGENT_ID = "agent_" + uuid.uuid5(uuid.NAMESPACE_URL, "voice-console/simulator/retell").hex[:24]
# The custom-LLM agent, there when the platform is given an llm_websocket_url.
LLM_AGENT_ID = "agent_" + uuid.uuid5(uuid.NAMESPACE_URL, "voice-console/simulator/retell/custom-llm").hex[:24]


FUNCTION_TYPE = "function_call"  # the delivery type of a Retell custom-function request
# Words the agent still says after the caller cuts in, before it stops (what the caller talks over).
TALKED_OVER_WORDS = 2

_RETELL_REASONS = {
    "customer-ended-call": "user_hangup",
    "assistant-ended-call": "agent_hangup",
    "assistant-ended-call-after-message-spoken": "agent_hangup",
    "assistant-said-end-call-phrase": "agent_hangup",
    "silence-timed-out": "inactivity",
    "exceeded-max-duration": "max_duration_reached",
    "voicemail": "voicemail_reached",
    "customer-did-not-answer": "dial_no_answer",
    "customer-busy": "dial_busy",
    "assistant-forwarded-call": "call_transfer",
}


@dataclass(frozen=True)
class RetellEndpoints:
    webhook: str
    function: str


def retell_endpoints(target: str) -> RetellEndpoints:
    """`target` is the receiver's base URL, or one of its Retell routes (stripped to the base)."""
    base = split_base(target, RETELL_ROUTES)
    return RetellEndpoints(webhook=base + "/webhook/retell", function=base + "/webhook/retell/function")


def retell_function_reply_problem(response: httpx.Response) -> str | None:
    """Why a custom-function answer is not what Retell needs (retell-twilio.md §4), or None."""
    if not response.is_success:
        return f"HTTP {response.status_code}: Retell counts a non-2xx answer as a failure and retries"
    size = len(response.text)
    if size > FUNCTION_REPLY_LIMIT:
        return f"the body is {size:,} characters; Retell cuts what the LLM sees at {FUNCTION_REPLY_LIMIT:,}"
    return None


def _function_answer(response: httpx.Response | None) -> tuple[str, bool]:
    """(what the agent is told, whether it failed), as Retell stringifies the body."""
    if response is None:
        return "no answer", True
    if not response.is_success:
        return f"HTTP {response.status_code}", True
    text = response.text[:FUNCTION_REPLY_LIMIT]
    try:
        body = json.loads(text)
    except ValueError:
        return " ".join(text.split()), False
    if isinstance(body, dict):
        if body.get("result") is not None:
            return spoken(body["result"]), False
        if body.get("error") is not None:
            return spoken(body["error"]), True
    return spoken(text), False


class RetellCallPlayer:
    """Plays one scenario as a Retell call: webhooks and custom-function requests."""

    def __init__(
        self,
        scenario: Scenario,
        endpoints: RetellEndpoints,
        webhook: DialectWebhook,
        *,
        api_key: str | None,
        speed: float = 1.0,
        agent_id: str = AGENT_ID,
        call: dict[str, Any] | None = None,
        llm_websocket_url: str | None = None,
    ) -> None:
        """`call`: the call object a simulated platform created (an outbound call it placed);
        without it the call is an inbound one to the agent's number. `llm_websocket_url`: the agent
        is a custom-LLM one, so the conversation runs over that socket instead of the scenario's."""
        self.llm_websocket_url = llm_websocket_url
        self.scenario = scenario
        self.endpoints = endpoints
        self.webhook = webhook
        self.api_key = api_key
        self.speed = speed
        self.call_id = str(call["call_id"]) if call else "call_" + uuid.uuid4().hex[:28]
        self._player = Player(scenario, speed)
        self._transcript: list[dict[str, Any]] = []  # transcript_object
        self._with_tools: list[dict[str, Any]] = []  # transcript_with_tool_calls
        self._call: dict[str, Any] = {
            "call_type": "phone_call",
            "from_number": scenario.customer_number,
            "to_number": AGENT_NUMBER,
            "direction": "inbound",
            "call_id": self.call_id,
            "agent_id": agent_id,
            "agent_version": 1,
            "agent_name": "voice-console simulator",
            "call_status": "registered",
            "metadata": {"simulator": scenario.name},
            **(call or {}),
        }

    def call_object(self) -> dict[str, Any]:
        """The call as the get-call API shows it now."""
        return self._call_object()

    def inject(self, context: str) -> None:
        """`update-live-call` with `additional_context`: in the transcript with role `injected`."""
        self._with_tools.append({"role": "injected", "content": context})

    async def end(self, reason: str) -> None:
        """End the call now (`stop-call`): its end webhooks, as if it had ended by itself."""
        await self._finish(reason, None)

    # ---------------------------------------------------------- plumbing

    def _call_object(self) -> dict[str, Any]:
        call = dict(self._call)
        if self._transcript or self._with_tools:
            call["transcript"] = "".join(
                f"{'Agent' if u['role'] == 'agent' else 'User'}: {u['content']}\n" for u in self._transcript
            )
            call["transcript_object"] = [dict(u) for u in self._transcript]
            call["transcript_with_tool_calls"] = [dict(item) for item in self._with_tools]
        return call

    def _headers(self, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["x-retell-signature"] = sign_retell(body, self.api_key, int(time.time() * 1000))
        return headers

    async def _event(self, event: str, call: dict[str, Any] | None = None) -> httpx.Response | None:
        body = compact_body({"event": event, "call": call if call is not None else self._call_object()})
        return await self.webhook.post(
            self.endpoints.webhook, kind=event, call_id=self.call_id, body=body, headers=self._headers(body)
        )

    # ---------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """The whole call. Never raises (but CancelledError)."""
        reason = "user_hangup"
        transfer_to: str | None = None
        try:
            await self._player.sleep(1.5)  # ringing; Retell sends nothing until the call connects
            self._player.answered()
            self._call.update(call_status="ongoing", start_timestamp=int(time.time() * 1000))
            await self._event("call_started")
            steps = self.scenario.steps
            if self.llm_websocket_url is not None:  # the conversation is the socket's, not the scenario's
                reason, steps = await self._converse_over_llm_socket(self.llm_websocket_url), []
            for step in steps:
                await self._player.sleep(step.pause)
                if isinstance(step, EndStep):
                    reason = _RETELL_REASONS.get(step.reason, "user_hangup")
                    break
                if isinstance(step, TransferStep):
                    if step.say:
                        await self._turn("agent", step.say)
                    transfer_to, reason = step.destination, "call_transfer"
                    break
                await self._play(step)
            await self._player.sleep(0.2)
        except Exception:  # a bug must still end the call
            log.exception("simulated Retell call %s failed", self.call_id)
            reason = "error_unknown"
        await self._finish(reason, transfer_to)

    async def _converse_over_llm_socket(self, url: str) -> str:
        """Retell's side of the agent's custom-LLM socket (`RetellCaller`): the reason the call ends."""
        # A caller and an agent saying ~3 words a second, at the platform's speed.
        caller = RetellCaller(url, self.call_id, agent_id=str(self._call["agent_id"]), pace_s=0.3 / self.speed)
        caller.timeout_s = 30 + 60 / self.speed
        result = await caller.run()
        started = int(self._call.get("start_timestamp") or time.time() * 1000) / 1000
        self._transcript = caller.timed_transcript(started)
        if result.close_code not in (1000, None):
            return "error_llm_websocket_open" if not result.received else "error_llm_websocket_lost_connection"
        return "user_hangup"

    async def _finish(self, reason: str, transfer_to: str | None) -> None:
        if transfer_to is not None:
            self._call["transfer_destination"] = transfer_to
            await self._event("transfer_started")
        now = int(time.time() * 1000)
        start = int(self._call.get("start_timestamp") or now)
        duration = max(now - start, 0)
        cents_per_second = round(10.0 / 60, 6)  # ~ $0.10 a minute; Retell prices in cents per second
        cents = round(duration / 1000 * cents_per_second, 4)
        self._call.update(
            call_status="ended",
            end_timestamp=now,
            duration_ms=duration,
            disconnection_reason=reason,
            call_cost={
                "product_costs": [{"product": "retell_platform", "unit_price": cents_per_second, "cost": cents}],
                "total_duration_seconds": round(duration / 1000),
                "total_duration_unit_price": cents_per_second,
                "combined_cost": cents,
            },
        )
        await self._event("transcript_updated")  # once more when the call ends
        await self._event("call_ended")
        summary = self.scenario.summary or f"A simulated call ({self.scenario.name})."
        await self._event(
            "call_analyzed",
            call=self._call_object()
            | {
                "call_analysis": {
                    "call_summary": summary,
                    "in_voicemail": False,
                    "user_sentiment": "Positive",
                    "call_successful": True,
                    "custom_analysis_data": {},
                }
            },
        )

    # ---------------------------------------------------------- steps

    async def _play(self, step: Any) -> None:
        if isinstance(step, SayStep):
            await self._turn("agent" if step.role == "assistant" else "user", step.text)
        elif isinstance(step, BargeInStep):
            await self._barge_in(step)
        elif isinstance(step, ToolsStep):
            await self._tools(step)
        elif isinstance(step, SilenceStep):
            await self._player.sleep(step.seconds)

    async def _barge_in(self, step: BargeInStep) -> None:
        """The caller starts talking after the agent's `cut_after_words` words; the agent, as a
        real one does, stops a moment later (`TALKED_OVER_WORDS` more words, which the caller
        talked over), so the two utterances' word times overlap as in Retell's transcript."""
        said = step.text.split()[: step.cut_after_words + TALKED_OVER_WORDS]
        await self._player.sleep(0.25)  # voice latency
        agent = await self._player.utter("assistant", said)
        cut_in = agent[step.cut_after_words]["start"] if len(agent) > step.cut_after_words else agent[-1]["end"]
        user = self._player.word_times(step.user.split(), cut_in)
        self._add_utterance("agent", said, agent)
        await self._event("transcript_updated")
        self._player.speaking.add("user")
        try:
            await asyncio.sleep(max(0.0, user[-1]["end"] - self._player.elapsed()))
        finally:
            self._player.speaking.discard("user")
        self._add_utterance("user", step.user.split(), user)
        await self._event("transcript_updated")

    def _add_utterance(self, role: str, words: list[str], timings: list[dict[str, Any]]) -> None:
        utterance = {"role": role, "content": " ".join(words), "words": timings}
        self._transcript.append(utterance)
        self._with_tools.append(utterance)

    async def _turn(self, role: Literal["agent", "user"], text: str) -> None:
        words = text.split()
        if not words:
            return
        await self._player.sleep(0.25)  # voice latency / endpointing
        timings = await self._player.utter("assistant" if role == "agent" else "user", words)
        self._add_utterance(role, words, timings)
        await self._event("transcript_updated")

    async def _tools(self, step: ToolsStep) -> None:
        if step.filler:
            await self._turn("agent", step.filler)
        values: dict[str, str] = {}
        results: list[str] = []
        errors: list[str] = []
        timed_out = False
        for spec in step.calls:
            tool_call_id = "tc_" + uuid.uuid4().hex[:12]
            arguments = json.dumps(spec.arguments, separators=(",", ":"), ensure_ascii=False)
            self._with_tools.append(
                {
                    "role": "tool_call_invocation",
                    "tool_call_id": tool_call_id,
                    "name": spec.name,
                    "arguments": arguments,
                }
            )
            body = compact_body({"name": spec.name, "args": spec.arguments, "call": self._call_object()})
            response = await self.webhook.post(
                self.endpoints.function,
                kind=FUNCTION_TYPE,
                call_id=self.call_id,
                body=body,
                headers=self._headers(body),
                timeout=step.timeout_seconds,
                check=retell_function_reply_problem,
            )
            text, failed = _function_answer(response)
            timed_out = timed_out or response is None
            values[spec.name] = text
            (errors if failed else results).append(text)
            self._with_tools.append(
                {"role": "tool_call_result", "tool_call_id": tool_call_id, "content": text, "successful": not failed}
            )
        values["result"], values["error"] = "; ".join(results), "; ".join(errors)
        if timed_out:
            reply = step.on_timeout
        elif errors:
            reply = render(step.on_error, values)
        else:
            reply = render(step.say, values)
        await self._turn("agent", reply)


# ---------------------------------------------------------------- the platform

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
SIM_RETELL_KEY = "sim-retell-key"  # the simulated platform's API key (it signs its webhooks with it too)
_DIALED_NUMBER = AGENT_NUMBER  # the account's number calls are placed from


class SimulatedRetell(LoopbackPlatform):
    """A Retell stand-in on loopback: its REST API (agents, phone numbers, calls, live control) over
    real HTTP; a call it places plays a scenario as the agent's webhooks, signed with its key.

    `await start()`, `.url`, `await close()`. `webhook_url` is the receiver the agent points at
    (its base URL or its Retell route); without one, calls are created and play nothing.
    """

    def __init__(
        self,
        webhook_url: str | None,
        *,
        api_key: str = SIM_RETELL_KEY,
        speed: float = 1.0,
        scenario: Scenario | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        llm_websocket_url: str | None = None,
    ) -> None:
        """`llm_websocket_url`: a second agent, a custom-LLM one whose socket Retell opens there
        (with the call id appended), e.g. the console's tap."""
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.webhook_url = webhook_url
        self.api_key = api_key
        self.speed = speed
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.deliveries: deque[DeliveryRecord] = deque(maxlen=10_000)
        self.server = HttpServer(self._handle, host=host, port=port)
        now = int(time.time() * 1000)
        self.agents: dict[str, dict[str, Any]] = {
            AGENT_ID: {
                "agent_id": AGENT_ID,
                "agent_name": "Sunrise Dental Receptionist (simulated Retell)",
                "version": 1,
                "channel": "voice",
                "is_suspended": False,
                "tags": {},
                "language": "en-US",
                "voice_id": "11labs-Adrian",
                "response_engine": {"type": "retell-llm", "llm_id": "llm_" + AGENT_ID[6:], "version": 1},
                "interruption_sensitivity": 1,
                "webhook_url": webhook_url,
                "webhook_events": list(REQUIRED_WEBHOOK_EVENTS),  # what the console needs
                "last_modification_timestamp": now,
                "user_modified_timestamp": now,
            }
        }
        if llm_websocket_url is not None:
            self.agents[LLM_AGENT_ID] = {
                **self.agents[AGENT_ID],
                "agent_id": LLM_AGENT_ID,
                "agent_name": "Bella Napoli bookings, custom LLM (simulated Retell)",
                "response_engine": {"type": "custom-llm", "llm_websocket_url": llm_websocket_url},
                "webhook_events": list(REQUIRED_WEBHOOK_EVENTS),
            }
        self.phone_numbers: dict[str, dict[str, Any]] = {
            _DIALED_NUMBER: {
                "phone_number": _DIALED_NUMBER,
                "phone_number_pretty": "+1 (415) 555-0199",
                "phone_number_type": "retell-twilio",
                "nickname": "Front desk (simulated)",
                "outbound_agents": [{"agent_id": AGENT_ID, "weight": 1}],
                "inbound_agents": [{"agent_id": AGENT_ID, "weight": 1}],
                "area_code": 415,
                "last_modification_timestamp": now,
            }
        }
        self.calls: dict[str, RetellCallPlayer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._client: httpx.AsyncClient | None = None

    def _running(self) -> list[asyncio.Task[Any]]:
        return list(self._tasks.values())

    # ---------------------------------------------------------- HTTP

    async def _handle(self, request: Request) -> Response:
        if request.header("authorization") != f"Bearer {self.api_key}":
            return _error(401, "Invalid API key. Please check your API key and try again.")
        parts = [part for part in request.path.split("/") if part]
        body = _json_object(request.body)
        if isinstance(body, Response):
            return body
        query = request.query_params()
        match request.method, parts:
            case "POST", ["v2", "list-agents"]:
                return _page(list(self.agents.values()), query)
            case "GET", ["get-agent", agent_id]:
                agent = self.agents.get(agent_id)
                return Response.json(200, agent) if agent else _error(404, f"Agent {agent_id} not found")
            case "PATCH", ["update-agent", agent_id]:
                return self._update_agent(agent_id, body)
            case "GET", ["v2", "list-phone-numbers"]:
                return _page(list(self.phone_numbers.values()), query)
            case "POST", ["v2", "create-phone-call"]:
                return self._create_call(body)
            case "GET", ["v2", "get-call", call_id]:
                player = self.calls.get(call_id)
                return Response.json(200, player.call_object()) if player else _error(404, "Call not found")
            case "POST", ["v3", "list-calls"]:
                calls = [player.call_object() for player in reversed(self.calls.values())]
                return _page(calls, {key: str(value) for key, value in body.items() if value is not None})
            case "POST", ["v2", "stop-call", call_id]:
                return self._stop_call(call_id)
            case "PATCH", ["v2", "update-live-call", call_id]:
                return self._update_live_call(call_id, body)
        return _error(404, f"Cannot {request.method} {request.path}")

    def _update_agent(self, agent_id: str, body: dict[str, Any]) -> Response:
        agent = self.agents.get(agent_id)
        if agent is None:
            return _error(404, f"Agent {agent_id} not found")
        events = body.get("webhook_events", agent.get("webhook_events"))
        if events is not None and not (isinstance(events, list) and all(isinstance(e, str) for e in events)):
            return _error(400, "webhook_events must be a list of event names")
        agent.update(body, version=agent["version"] + 1, last_modification_timestamp=int(time.time() * 1000))
        return Response.json(200, agent)

    def _create_call(self, body: dict[str, Any]) -> Response:
        from_number, to_number = body.get("from_number"), body.get("to_number")
        for name, number in (("from_number", from_number), ("to_number", to_number)):
            if not isinstance(number, str) or not E164.match(number):
                return _error(400, f"{name} must be an E.164 phone number, e.g. +14155550142")
        if from_number not in self.phone_numbers:
            return _error(400, f"from_number {from_number} is not a number of this account")
        agent_id = body.get("override_agent_id") or AGENT_ID
        agent = self.agents.get(str(agent_id))
        if agent is None:
            return _error(400, f"Agent {agent_id} not found")
        call = {
            "call_id": "call_" + uuid.uuid4().hex[:28],
            "call_type": "phone_call",
            "direction": "outbound",
            "from_number": from_number,
            "to_number": to_number,
            "agent_id": agent["agent_id"],
            "agent_version": agent["version"],
            "agent_name": agent["agent_name"],
            "call_status": "registered",
            "metadata": body.get("metadata") or {},
        }
        assert self._client is not None, "start() the platform first"
        webhook = DialectWebhook(self._client, on_record=self.deliveries.append)
        player = RetellCallPlayer(
            self.scenario,
            retell_endpoints(agent["webhook_url"]) if agent.get("webhook_url") else RetellEndpoints("", ""),
            webhook,
            api_key=self.api_key,
            speed=self.speed,
            agent_id=agent["agent_id"],
            call=call,
            llm_websocket_url=custom_llm_url(agent),
        )
        self.calls[player.call_id] = player
        if agent.get("webhook_url"):
            self._tasks[player.call_id] = asyncio.create_task(player.run(), name=f"retell-call:{player.call_id}")
        return Response.json(201, player.call_object())

    def _stop_call(self, call_id: str) -> Response:
        player = self.calls.get(call_id)
        if player is None:
            return _error(404, "Call not found")
        task = self._tasks.get(call_id)
        if task is None or task.done():
            return _error(400, "Call has already ended")
        task.cancel()
        self._tasks[call_id] = asyncio.create_task(self._end_stopped(task, player), name=f"retell-stop:{call_id}")
        return Response(204)

    @staticmethod
    async def _end_stopped(task: asyncio.Task[None], player: RetellCallPlayer) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await player.end("manual_stopped")

    def _update_live_call(self, call_id: str, body: dict[str, Any]) -> Response:
        player = self.calls.get(call_id)
        task = self._tasks.get(call_id)
        if player is None:
            return _error(404, "Call not found")
        if task is None or task.done():
            return _error(400, "Call is not ongoing")
        control = body.get("call_control")
        if not isinstance(control, dict):
            return _error(400, "call_control must be an object")
        context = control.get("additional_context")
        if context is not None:
            if not isinstance(context, str):
                return _error(400, "call_control.additional_context must be a string")
            player.inject(context)
        return Response.json(200, {"success": True})


def _error(status: int, message: str) -> Response:
    return Response.json(status, {"status": "error", "message": message})


def _json_object(body: bytes) -> dict[str, Any] | Response:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return _error(400, "The request body is not JSON")
    return data if isinstance(data, dict) else _error(400, "The request body must be a JSON object")


def _page(items: list[dict[str, Any]], query: dict[str, str]) -> Response:
    """`{items, has_more, pagination_key}`: the 2026 list shape, `pagination_key` an offset here."""
    try:
        limit = max(1, min(1000, int(query.get("limit") or 1000)))
        start = int(query.get("pagination_key") or 0)
    except ValueError:
        return _error(400, "limit and pagination_key must be numbers")
    page = items[start : start + limit]
    more = start + limit < len(items)
    return Response.json(200, {"items": page, "has_more": more, "pagination_key": str(start + limit) if more else None})
