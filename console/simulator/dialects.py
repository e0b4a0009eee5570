"""Retell and Twilio dialects of the simulator: the same scenarios, played as the
webhooks those platforms send, signed as they sign them (reference/retell-twilio.md).

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

`TwilioCallPlayer` posts form bodies to `<base>/webhook/twilio/voice` (CallStatus
ringing; the TwiML answer is read and ignored) and `<base>/webhook/twilio/status`
(initiated, ringing, in-progress, completed with SequenceNumber, Timestamp, and
CallDuration at the end), each signed with `X-Twilio-Signature` over
`public URL + path`: Twilio signs the URL it requested, which is the receiver's
public (tunnel) URL, not the loopback address the simulator talks to. With
`media_stream=True` it also plays a Media Stream on `<base>/stream/twilio`
(WebSocket; both tracks, μ-law 8 kHz, 20 ms frames) whose energy follows who is
speaking.

Choices where the platforms leave room (all in one place):
- times are wall-clock, so at a high `speed` a call's seconds shrink to
  milliseconds, as with the Vapi engine: word timings, duration_ms and
  CallDuration are the compressed ones;
- the Media Stream runs in the same compressed time at Twilio's 50 frames a
  second per track, so at a high speed turns shorter than the receiver's VAD
  onset (100 ms) are not heard; use a speed near 1 to watch speech detection;
- Retell's retries (3 for webhooks, 2 for functions) are not played: every
  attempt's answer is reported instead;
- a function step's `timeout_seconds` is real seconds whatever the speed (it is a
  contract with the receiver's tool gate); Retell has no `hang`, so `hang_after`
  is unused;
- Twilio dates callbacks to the whole second (`Timestamp`), while the voice
  webhook has no timestamp and is dated on arrival; so that a compressed call's
  `in-progress` and `completed` never sort before its ringing voice webhook, the
  call is answered no earlier than the wall-clock second after the voice webhook
  (a call lasts up to 1 s longer than `speed` alone would make it);
- scenario end reasons map to Retell's disconnection_reason and Twilio's final
  CallStatus (`_RETELL_REASONS`, `_TWILIO_FINAL`); a transfer step is
  `transfer_started` then `call_ended` with `call_transfer` for Retell, and a
  `completed` call for Twilio.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from console.providers.retell import FUNCTION_REPLY_LIMIT, sign_retell
from console.providers.twilio.auth import sign_twilio
from console.providers.twilio.stream import ulaw_encode
from console.simulator.platform import DeliveryRecord
from console.simulator.scenarios import (
    BargeInStep,
    EndStep,
    SayStep,
    Scenario,
    SilenceStep,
    ToolsStep,
    TransferStep,
    render,
    spoken,
)

__all__ = [
    "RETELL_ROUTES",
    "TWILIO_ROUTES",
    "DialectWebhook",
    "RetellCallPlayer",
    "RetellEndpoints",
    "TwilioCallPlayer",
    "TwilioEndpoints",
    "retell_endpoints",
    "twilio_endpoints",
]

log = logging.getLogger(__name__)

# The receiver's routes (console/receiver/routes.py, console/receiver/stream.py).
RETELL_ROUTES = ("/webhook/retell/function", "/webhook/retell")
TWILIO_ROUTES = ("/webhook/twilio/voice", "/webhook/twilio/status", "/stream/twilio")
AGENT_NUMBER = "+14155550199"  # the number the simulated caller dials
AGENT_ID = "agent_" + uuid.uuid5(uuid.NAMESPACE_URL, "voice-console/simulator/retell").hex[:24]
ACCOUNT_SID = "AC" + uuid.uuid5(uuid.NAMESPACE_URL, "voice-console/simulator/twilio").hex
FUNCTION_TYPE = "function_call"  # the delivery type of a Retell custom-function request

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
_TWILIO_FINAL = {
    "customer-did-not-answer": "no-answer",
    "customer-busy": "busy",
    "twilio-failed-to-connect-call": "failed",
}


# ---------------------------------------------------------------- endpoints


def _split_base(target: str, routes: tuple[str, ...]) -> str:
    """The base URL: `target` without a trailing known route (and without its query)."""
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    path = parts.path.rstrip("/")
    for route in routes:
        if path.endswith(route):
            path = path[: -len(route)]
            break
    return f"{parts.scheme}://{parts.netloc}{path}"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class RetellEndpoints:
    webhook: str
    function: str


@dataclass(frozen=True)
class TwilioEndpoints:
    voice: str
    status: str
    stream: str  # ws:// or wss://
    public_base: str  # the base URL Twilio calls: signatures cover it instead of the target's

    def signed_url(self, url: str) -> str:
        """The URL Twilio would have requested: the public base + the request's path and query,
        exactly how the receiver rebuilds it (`public_url + request target`)."""
        parts = urlsplit(url)
        return self.public_base + parts.path + (f"?{parts.query}" if parts.query else "")


def retell_endpoints(target: str) -> RetellEndpoints:
    """`target` is the receiver's base URL, or one of its Retell routes (stripped to the base)."""
    base = _split_base(target, RETELL_ROUTES)
    return RetellEndpoints(webhook=base + "/webhook/retell", function=base + "/webhook/retell/function")


def twilio_endpoints(target: str, public_url: str | None = None) -> TwilioEndpoints:
    """`target` is the receiver's base URL, or one of its Twilio routes; `public_url` the
    receiver's public base URL as `serve --public-url` has it (default: the target's
    scheme://host:port, right for a receiver without a public URL)."""
    base = _split_base(target, TWILIO_ROUTES)
    public = public_url.rstrip("/") if public_url else _origin(base)
    ws_base = ("wss://" if base.startswith("https://") else "ws://") + base.split("://", 1)[1]
    return TwilioEndpoints(
        voice=base + "/webhook/twilio/voice",
        status=base + "/webhook/twilio/status",
        stream=ws_base + "/stream/twilio",
        public_base=public,
    )


# ---------------------------------------------------------------- delivery


class DialectWebhook:
    """Posts one request and reports it as a `DeliveryRecord`; failures are recorded, never raised."""

    def __init__(self, client: httpx.AsyncClient, on_record: Callable[[DeliveryRecord], None] | None = None) -> None:
        self._client = client
        self._on_record = on_record

    async def post(
        self,
        url: str,
        *,
        kind: str,
        call_id: str,
        body: bytes,
        headers: Mapping[str, str],
        timeout: float = 10.0,
        check: Callable[[httpx.Response], str | None] | None = None,
    ) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            response = await self._client.post(url, content=body, headers=dict(headers), timeout=timeout)
        except httpx.TimeoutException:
            self.record(DeliveryRecord(call_id, kind, None, _ms(started), f"no answer within {timeout:g} s"))
            return None
        except httpx.HTTPError as exc:
            self.record(DeliveryRecord(call_id, kind, None, _ms(started), f"{type(exc).__name__}: {exc}"))
            return None
        latency = _ms(started)
        error = None if response.is_success else f"HTTP {response.status_code}"
        bad = check(response) if check is not None else None
        self.record(DeliveryRecord(call_id, kind, response.status_code, latency, error, bad))
        return response

    def record(self, record: DeliveryRecord) -> None:
        if record.error:
            log.info("posting %s for call %s: %s", record.type, record.call_id, record.error)
        if self._on_record is not None:
            self._on_record(record)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


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


# ---------------------------------------------------------------- the call


class _Player:
    """Scenario timing shared by both dialects: who speaks when, in compressed time."""

    def __init__(self, scenario: Scenario, speed: float) -> None:
        self.scenario = scenario
        self.speed = speed
        self.speaking: set[str] = set()  # "user" / "assistant": the media stream follows it
        self._t0 = time.monotonic()

    def elapsed(self) -> float:
        """Seconds since the call was answered (wall clock, so compressed by `speed`)."""
        return time.monotonic() - self._t0

    def answered(self) -> None:
        self._t0 = time.monotonic()

    async def sleep(self, scenario_seconds: float) -> None:
        if scenario_seconds > 0:
            await asyncio.sleep(scenario_seconds / self.speed)

    def word_s(self) -> float:
        return 1.0 / self.scenario.words_per_second

    async def utter(self, role: str, words: list[str]) -> list[dict[str, Any]]:
        """Speak `words` in real (compressed) time; their Retell-style timings."""
        per_word = self.word_s() / self.speed
        start = self.elapsed()
        timings = [
            {"word": word, "start": round(start + i * per_word, 3), "end": round(start + (i + 0.85) * per_word, 3)}
            for i, word in enumerate(words)
        ]
        self.speaking.add(role)
        try:
            await asyncio.sleep(len(words) * per_word)
        finally:
            self.speaking.discard(role)
        return timings


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
    ) -> None:
        self.scenario = scenario
        self.endpoints = endpoints
        self.webhook = webhook
        self.api_key = api_key
        self.speed = speed
        self.call_id = "call_" + uuid.uuid4().hex[:28]
        self._player = _Player(scenario, speed)
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
        }

    # ---------------------------------------------------------- plumbing

    def _call_object(self) -> dict[str, Any]:
        call = dict(self._call)
        if self._transcript:
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
        body = _compact({"event": event, "call": call if call is not None else self._call_object()})
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
            for step in self.scenario.steps:
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
            # The agent's utterance stops at the last word actually spoken.
            await self._turn("agent", " ".join(step.text.split()[: step.cut_after_words]))
            await self._turn("user", step.user)
        elif isinstance(step, ToolsStep):
            await self._tools(step)
        elif isinstance(step, SilenceStep):
            await self._player.sleep(step.seconds)

    async def _turn(self, role: Literal["agent", "user"], text: str) -> None:
        words = text.split()
        if not words:
            return
        await self._player.sleep(0.25)  # voice latency / endpointing
        timings = await self._player.utter("assistant" if role == "agent" else "user", words)
        utterance = {"role": role, "content": " ".join(words), "words": timings}
        self._transcript.append(utterance)
        self._with_tools.append(utterance)
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
            body = _compact({"name": spec.name, "args": spec.arguments, "call": self._call_object()})
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


def _compact(data: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as Retell sends it (INFERRED in the reference)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------- Twilio


_FORM = "application/x-www-form-urlencoded"
_FRAME_S = 0.02
_FRAME_SAMPLES = 160  # 20 ms at 8 kHz


def _frames(voiced: bool, pitch: float, seed: int, count: int = 10) -> list[str]:
    """Base64 μ-law 20 ms frames: a voiced tone or line noise (precomputed: 50 a second per track)."""
    rng = random.Random(seed)
    out: list[str] = []
    phase = 0.0
    step = 2 * math.pi * pitch / 8000
    for _ in range(count):
        samples = array.array("h", bytes(_FRAME_SAMPLES * 2))
        for i in range(_FRAME_SAMPLES):
            value = rng.randint(-60, 60)
            if voiced:
                value += int(6000 * math.sin(phase) + 1500 * math.sin(3 * phase))
            samples[i] = value
            phase += step
        out.append(base64.b64encode(ulaw_encode(samples)).decode("ascii"))
    return out


_TRACKS: dict[str, tuple[str, list[str], list[str]]] = {
    # Twilio track -> (who is heard on it, voiced frames, quiet frames)
    "inbound": ("user", _frames(True, 180.0, 1), _frames(False, 180.0, 2)),
    "outbound": ("assistant", _frames(True, 240.0, 3), _frames(False, 240.0, 4)),
}


class TwilioCallPlayer:
    """Plays one scenario as a Twilio call: voice webhook, status callbacks, optional Media Stream."""

    def __init__(
        self,
        scenario: Scenario,
        endpoints: TwilioEndpoints,
        webhook: DialectWebhook,
        *,
        auth_token: str | None,
        speed: float = 1.0,
        media_stream: bool = False,
        account_sid: str = ACCOUNT_SID,
    ) -> None:
        self.scenario = scenario
        self.endpoints = endpoints
        self.webhook = webhook
        self.auth_token = auth_token
        self.speed = speed
        self.media_stream = media_stream
        self.account_sid = account_sid
        self.call_sid = "CA" + uuid.uuid4().hex
        self._player = _Player(scenario, speed)
        self._sequence = 0
        self._answered_at: float | None = None

    def _base_params(self, status: str) -> dict[str, str]:
        caller = self.scenario.customer_number
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": status,
            "Called": AGENT_NUMBER,
            "CalledCountry": "US",
            "Caller": caller,
            "Direction": "inbound",
            "From": caller,
            "To": AGENT_NUMBER,
            "ToCountry": "US",
        }

    async def _post(self, url: str, kind: str, params: dict[str, str]) -> httpx.Response | None:
        body = urlencode(params).encode()
        headers = {"content-type": _FORM}
        if self.auth_token:
            headers["x-twilio-signature"] = sign_twilio(self.endpoints.signed_url(url), params, self.auth_token)
        return await self.webhook.post(url, kind=kind, call_id=self.call_sid, body=body, headers=headers)

    async def _status(self, status: str, **extra: str) -> None:
        params = self._base_params(status) | {
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(self._sequence),
            "Timestamp": format_datetime(datetime.now(UTC).replace(microsecond=0)),
            **extra,
        }
        self._sequence += 1
        await self._post(self.endpoints.status, f"status:{status}", params)

    async def run(self) -> None:
        """The whole call. Never raises (but CancelledError)."""
        final = "completed"
        stream: asyncio.Task[None] | None = None
        stop = asyncio.Event()
        try:
            ringing_since = time.time()
            await self._post(
                self.endpoints.voice,
                "voice",
                self._base_params("ringing")
                | {
                    "CallerCountry": "US",
                    "FromCountry": "US",
                    "StirVerstat": "TN-Validation-Passed-A",
                },
            )
            await self._status("initiated")
            await self._status("ringing")
            await self._player.sleep(1.5)
            # Answer in a later wall-clock second than the voice webhook (see the module notes).
            await asyncio.sleep(max(0.0, math.floor(ringing_since) + 1 - time.time()))
            self._player.answered()
            self._answered_at = time.monotonic()
            await self._status("in-progress")
            if self.media_stream:
                stream = asyncio.create_task(self._stream(stop))
            for step in self.scenario.steps:
                await self._player.sleep(step.pause)
                if isinstance(step, EndStep):
                    final = _TWILIO_FINAL.get(step.reason, "completed")
                    break
                if isinstance(step, TransferStep):
                    if step.say:
                        await self._player.utter("assistant", step.say.split())
                    break
                await self._play(step)
            await self._player.sleep(0.2)
        except Exception:
            log.exception("simulated Twilio call %s failed", self.call_sid)
        finally:
            stop.set()
            if stream is not None:
                with contextlib.suppress(Exception):
                    await stream
        duration = time.monotonic() - self._answered_at if self._answered_at is not None else 0.0
        await self._status(
            final,
            CallDuration=str(round(duration)),
            Duration=str(math.ceil(duration / 60)),
            SipResponseCode="200" if final == "completed" else "487",
        )

    async def _play(self, step: Any) -> None:
        player = self._player
        if isinstance(step, SayStep):
            await player.sleep(0.25)
            await player.utter(step.role, step.text.split())
        elif isinstance(step, BargeInStep):
            await player.sleep(0.25)
            words = step.text.split()
            await player.utter("assistant", words[: step.cut_after_words])
            await player.utter("user", step.user.split())
        elif isinstance(step, ToolsStep):
            # Twilio runs no tools: the caller hears the filler, a wait, and the answer.
            if step.filler:
                await player.utter("assistant", step.filler.split())
            await player.sleep(1.0)
            await player.utter("assistant", render(step.say, {}).split())
        elif isinstance(step, SilenceStep):
            await player.sleep(step.seconds)

    # ---------------------------------------------------------- media stream

    async def _stream(self, stop: asyncio.Event) -> None:
        """`<Start><Stream track="both_tracks">`: frames until the call ends, then `stop`."""
        started = time.perf_counter()
        try:
            async with connect(self.endpoints.stream, open_timeout=10, max_size=2**20) as ws:
                self.webhook.record(DeliveryRecord(self.call_sid, "media-stream", 101, _ms(started)))
                await self._stream_frames(ws, stop)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.webhook.record(
                DeliveryRecord(self.call_sid, "media-stream", None, _ms(started), f"{type(exc).__name__}: {exc}")
            )

    async def _stream_frames(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        stream_sid = "MZ" + uuid.uuid4().hex
        sequence = 1

        async def send(frame: dict[str, Any]) -> None:
            nonlocal sequence
            if frame["event"] != "connected":
                frame = {"event": frame.pop("event"), "sequenceNumber": str(sequence), **frame}
                sequence += 1
            await ws.send(json.dumps(frame, separators=(",", ":")))

        await send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await send(
            {
                "event": "start",
                "start": {
                    "streamSid": stream_sid,
                    "accountSid": self.account_sid,
                    "callSid": self.call_sid,
                    "tracks": list(_TRACKS),
                    "customParameters": {"simulator": self.scenario.name},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
                "streamSid": stream_sid,
            }
        )
        loop = asyncio.get_running_loop()
        begin = loop.time()
        chunk = 0
        while not stop.is_set():
            chunk += 1
            for track, (role, voiced, quiet) in _TRACKS.items():
                frames = voiced if role in self._player.speaking else quiet
                await send(
                    {
                        "event": "media",
                        "media": {
                            "track": track,
                            "chunk": str(chunk),
                            "timestamp": str(round((chunk - 1) * _FRAME_S * 1000)),
                            "payload": frames[chunk % len(frames)],
                        },
                        "streamSid": stream_sid,
                    }
                )
            delay = begin + chunk * _FRAME_S - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        await send(
            {
                "event": "stop",
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": stream_sid,
            }
        )
