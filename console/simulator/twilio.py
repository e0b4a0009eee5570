"""Twilio, as the simulator plays it: the same scenarios as Twilio's voice webhook, status
callbacks and Media Stream, signed as Twilio signs them (reference/retell-twilio.md).

`TwilioCallPlayer` posts form bodies to `<base>/webhook/twilio/voice` (CallStatus
ringing; the TwiML answer is read and ignored) and `<base>/webhook/twilio/status`
(initiated, ringing, in-progress, completed with SequenceNumber, Timestamp, and
CallDuration at the end), each signed with `X-Twilio-Signature` over
`public URL + path`: Twilio signs the URL it requested, which is the receiver's
public (tunnel) URL, not the loopback address the simulator talks to. With
`media_stream=True` it also plays a Media Stream on `<base>/stream/twilio`
(WebSocket; both tracks, μ-law 8 kHz, 20 ms frames) whose energy follows who is
speaking.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import json
import math
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from console.providers import registry
from console.providers.twilio.auth import sign_twilio
from console.providers.twilio.stream import ulaw_encode
from console.simulator.common import (
    AGENT_NUMBER,
    DeliveryRecord,
    DialectWebhook,
    Player,
    log,
    ms_since,
    origin_of,
    split_base,
)
from console.simulator.scenarios import (
    BargeInStep,
    EndStep,
    SayStep,
    Scenario,
    SilenceStep,
    ToolsStep,
    TransferStep,
    render,
)

# The receiver's Twilio routes and Media Stream path, as Twilio's spec declares them.
_SPEC = registry.spec("twilio")
TWILIO_ROUTES = (*(route.path for route in _SPEC.routes), *(stream.path for stream in _SPEC.streams))
ACCOUNT_SID = "AC" + uuid.uuid5(uuid.NAMESPACE_URL, "voice-console/simulator/twilio").hex

_TWILIO_FINAL = {
    "customer-did-not-answer": "no-answer",
    "customer-busy": "busy",
    "twilio-failed-to-connect-call": "failed",
}


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


def twilio_endpoints(target: str, public_url: str | None = None) -> TwilioEndpoints:
    """`target` is the receiver's base URL, or one of its Twilio routes; `public_url` the
    receiver's public base URL as `serve --public-url` has it (default: the target's
    scheme://host:port, right for a receiver without a public URL)."""
    base = split_base(target, TWILIO_ROUTES)
    public = public_url.rstrip("/") if public_url else origin_of(base)
    ws_base = ("wss://" if base.startswith("https://") else "ws://") + base.split("://", 1)[1]
    return TwilioEndpoints(
        voice=base + "/webhook/twilio/voice",
        status=base + "/webhook/twilio/status",
        stream=ws_base + "/stream/twilio",
        public_base=public,
    )


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
        self._player = Player(scenario, speed)
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
                self.webhook.record(DeliveryRecord(self.call_sid, "media-stream", 101, ms_since(started)))
                await self._stream_frames(ws, stop)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.webhook.record(
                DeliveryRecord(self.call_sid, "media-stream", None, ms_since(started), f"{type(exc).__name__}: {exc}")
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
