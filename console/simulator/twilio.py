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
import hmac
import json
import math
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode
from xml.etree import ElementTree

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from console.core.http_types import Request, Response
from console.providers import registry
from console.providers.twilio.auth import sign_twilio
from console.providers.twilio.stream import ulaw_encode, ulaw_rms
from console.receiver.http import HttpServer
from console.simulator.common import (
    AGENT_NUMBER,
    DeliveryRecord,
    DialectWebhook,
    LoopbackPlatform,
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
    # Where a URL named in TwiML (a stream's) really is; None: as named.
    tunnel: Callable[[str], str] | None = None

    def signed_url(self, url: str) -> str:
        """The URL Twilio would have requested: the public base + the request's path and query as
        they go on the wire (percent-encoded, as the receiver sees them: `public_url + request target`)."""
        return self.public_base + httpx.URL(url).raw_path.decode("ascii")


def twilio_endpoints(target: str, public_url: str | None = None) -> TwilioEndpoints:
    """`target` is the receiver's base URL, or one of its Twilio routes; `public_url` the
    receiver's public base URL as `serve --public-url` has it (default: the target's
    scheme://host:port, right for a receiver without a public URL)."""
    base = split_base(target, TWILIO_ROUTES)
    public = public_url.rstrip("/") if public_url else origin_of(base)
    ws_base = ("wss://" if base.startswith("https://") else "ws://") + base.split("://", 1)[1]

    def tunnel(url: str) -> str:
        """A socket URL the receiver's TwiML names on its public URL, reached at the target instead."""
        public_ws = ("wss://" if public.startswith("https://") else "ws://") + public.split("://", 1)[1]
        origin = origin_of(base)
        target_ws = ("wss://" if origin.startswith("https://") else "ws://") + origin.split("://", 1)[1]
        return target_ws + url[len(public_ws) :] if url.startswith(public_ws) else url

    return TwilioEndpoints(
        voice=base + "/webhook/twilio/voice",
        status=base + "/webhook/twilio/status",
        stream=ws_base + "/stream/twilio",
        public_base=public,
        tunnel=tunnel,
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
        call: dict[str, str] | None = None,
        status_events: frozenset[str] | None = None,
        twiml: str = "",
        out_of_order: bool = False,
    ) -> None:
        """`call`: a call placed through the REST API (its CallSid, From, To, Direction), which
        follows the TwiML its voice URL answers: a `<Connect><Stream>` opens a two-way stream there.
        `status_events`: the StatusCallbackEvents asked for (None: every one; `completed` always)."""
        self.call = call or {}
        self.status_events = status_events
        self.twiml = twiml  # what the call does: given inline, or what the voice URL answers
        # Twilio's callbacks are separate requests that may arrive out of order: `initiated` after `ringing`.
        self.out_of_order = out_of_order
        self._deferred: dict[str, str] | None = None
        self.status = "queued"
        self.ended = asyncio.Event()
        self._hang_up: asyncio.Event = asyncio.Event()
        self.agent_frames: list[dict[str, Any]] = []  # what the agent sent on a two-way stream
        self.said: list[str] = []  # what the call's <Say>s spoke (after a redirect)
        self.streams_opened = 0
        self._redirects: asyncio.Queue[tuple[str, str]] = asyncio.Queue()  # (TwiML, URL): one is given
        self.scenario = scenario
        self.endpoints = endpoints
        self.webhook = webhook
        self.auth_token = auth_token
        self.speed = speed
        self.media_stream = media_stream
        self.account_sid = account_sid
        self.call_sid = self.call.get("CallSid") or "CA" + uuid.uuid4().hex
        self._player = Player(scenario, speed)
        self._sequence = 0
        self._answered_at: float | None = None

    def _base_params(self, status: str) -> dict[str, str]:
        caller = self.call.get("From") or self.scenario.customer_number
        called = self.call.get("To") or AGENT_NUMBER
        return {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.call_sid,
            "CallStatus": status,
            "Called": called,
            "CalledCountry": "US",
            "Caller": caller,
            "Direction": self.call.get("Direction") or "inbound",
            "From": caller,
            "To": called,
            "ToCountry": "US",
        }

    def hang_up(self) -> None:
        """`Status=completed`/`canceled` through the API: the call ends now."""
        self._hang_up.set()

    def redirect(self, *, twiml: str = "", url: str = "") -> None:
        """`Twiml`/`Url` through the API: the call leaves what it was doing (a stream is stopped) and
        follows the new TwiML (fetched from `url`, signed, as a voice webhook is)."""
        self._redirects.put_nowait((twiml, url))

    async def _post(self, url: str, kind: str, params: dict[str, str]) -> httpx.Response | None:
        body = urlencode(params).encode()
        headers = {"content-type": _FORM}
        if self.auth_token:
            headers["x-twilio-signature"] = sign_twilio(self.endpoints.signed_url(url), params, self.auth_token)
        return await self.webhook.post(url, kind=kind, call_id=self.call_sid, body=body, headers=headers)

    async def _status(self, status: str, **extra: str) -> None:
        self.status = status
        event = {"in-progress": "answered", "initiated": "initiated", "ringing": "ringing"}.get(status, "completed")
        if not self.endpoints.status or (
            self.status_events is not None and event not in self.status_events | {"completed"}
        ):
            return
        params = self._base_params(status) | {
            "CallbackSource": "call-progress-events",
            "SequenceNumber": str(self._sequence),
            "Timestamp": format_datetime(datetime.now(UTC).replace(microsecond=0)),
            **extra,
        }
        self._sequence += 1
        if self.out_of_order and status == "initiated":
            self._deferred = params  # sent after the next one, its SequenceNumber kept
            return
        await self._post(self.endpoints.status, f"status:{status}", params)
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            await self._post(self.endpoints.status, f"status:{deferred['CallStatus']}", deferred)

    async def run(self) -> None:
        """The whole call. Never raises (but CancelledError)."""
        final = "completed"
        stream: asyncio.Task[None] | None = None
        stop = asyncio.Event()
        try:
            ringing_since = time.time()
            outbound = bool(self.call)  # placed through the API: its URL is fetched once answered
            if not outbound:
                await self._voice("ringing")
            await self._status("initiated")
            await self._status("ringing")
            await self._player.sleep(1.5)
            # Answer in a later wall-clock second than the voice webhook (see the module notes).
            await asyncio.sleep(max(0.0, math.floor(ringing_since) + 1 - time.time()))
            self._player.answered()
            self._answered_at = time.monotonic()
            if outbound:
                await self._voice("in-progress")
            await self._status("in-progress")
            stream = asyncio.create_task(self._media(stop))
            scenario = asyncio.create_task(self._steps())
            hung_up = asyncio.create_task(self._hang_up.wait())
            await asyncio.wait({scenario, hung_up}, return_when=asyncio.FIRST_COMPLETED)
            for task in (scenario, hung_up):
                task.cancel()
            if not self._hang_up.is_set() and not scenario.cancelled() and scenario.exception() is None:
                final = scenario.result()
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
        self.ended.set()

    async def _voice(self, status: str) -> None:
        """The voice webhook: the TwiML it answers is what the call does (a call placed with inline
        TwiML has none)."""
        if not self.endpoints.voice:
            return
        extra = {"CallerCountry": "US", "FromCountry": "US", "StirVerstat": "TN-Validation-Passed-A"}
        answer = await self._post(self.endpoints.voice, "voice", self._base_params(status) | extra)
        self.twiml = answer.text if answer is not None and answer.is_success else ""

    async def _steps(self) -> str:
        """The scenario's steps; the call's final status."""
        for step in self.scenario.steps:
            await self._player.sleep(step.pause)
            if isinstance(step, EndStep):
                return _TWILIO_FINAL.get(step.reason, "completed")
            if isinstance(step, TransferStep):
                if step.say:
                    await self._player.utter("assistant", step.say.split())
                break
            await self._play(step)
        await self._player.sleep(0.2)
        return "completed"

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

    async def _media(self, stop: asyncio.Event) -> None:
        """The call's TwiML, then each redirect's in turn: a redirect stops what plays now (a stream
        gets its `stop` frame and is closed) before the new TwiML starts, as on Twilio."""
        twiml, first = self.twiml, True
        while not stop.is_set():
            leg_stop = asyncio.Event()
            leg = asyncio.create_task(self._follow(twiml, leg_stop, first=first))
            redirected = asyncio.create_task(self._redirects.get())
            ended = asyncio.create_task(stop.wait())
            await asyncio.wait({redirected, ended}, return_when=asyncio.FIRST_COMPLETED)
            leg_stop.set()
            with contextlib.suppress(Exception):
                await leg
            ended.cancel()
            if not redirected.done():
                redirected.cancel()
                return
            new_twiml, url = redirected.result()
            if url:
                params = self._base_params("in-progress")
                answer = await self._post(url, "voice:redirect", params)
                new_twiml = answer.text if answer is not None and answer.is_success else ""
            twiml, first = new_twiml, False

    async def _follow(self, twiml: str, stop: asyncio.Event, *, first: bool) -> None:
        """One TwiML document on the call's media: its `<Say>`s spoken (about 0.3 s a word), then its
        `<Connect><Stream>` (or, for the call's first TwiML, the one-way stream a scenario asks for)."""
        for text in says(twiml):
            self.said.append(text)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.3 * len(text.split()) / self.speed)
            if stop.is_set():
                return
        two_way = connect_stream(twiml)
        if two_way is not None:
            await self._two_way_stream(two_way, stop)
        elif first and self.media_stream:
            await self._stream(stop)

    async def _two_way_stream(self, two_way: ConnectStream, stop: asyncio.Event) -> None:
        """`<Connect><Stream>`: the caller's audio to the stream's URL, the agent's audio played back."""
        tunnel = self.endpoints.tunnel
        url = tunnel(two_way.url) if tunnel is not None else two_way.url
        await self._open_stream(url, lambda ws: _two_way_stream_frames(self, ws, two_way, stop))

    async def _stream(self, stop: asyncio.Event) -> None:
        """`<Start><Stream track="both_tracks">`: frames until the call ends, then `stop`."""
        await self._open_stream(self.endpoints.stream, lambda ws: self._stream_frames(ws, stop))

    async def _open_stream(self, url: str, play: Callable[[ClientConnection], Awaitable[None]]) -> None:
        """Open the stream's socket, record how that went (a delivery of its own), and play it."""
        started = time.perf_counter()
        try:
            async with connect(url, open_timeout=10, max_size=2**20) as ws:
                self.streams_opened += 1
                self.webhook.record(DeliveryRecord(self.call_sid, "media-stream", 101, ms_since(started)))
                await play(ws)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self.webhook.record(
                DeliveryRecord(self.call_sid, "media-stream", None, ms_since(started), f"{type(exc).__name__}: {exc}")
            )

    async def _stream_frames(self, ws: ClientConnection, stop: asyncio.Event) -> None:
        side = TwilioSide(ws, self.account_sid, self.call_sid)
        await side.begin(list(_TRACKS), {"simulator": self.scenario.name})
        while not stop.is_set():
            side.chunk += 1
            for track, (role, voiced, quiet) in _TRACKS.items():
                frames = voiced if role in self._player.speaking else quiet
                await side.media(track, frames[side.chunk % len(frames)])
            await side.pace(stop)
        await side.end()


class TwilioSide:
    """Twilio's end of one media stream: frames numbered as Twilio numbers them (`sequenceNumber`
    across all but `connected`), media chunks 20 ms apart in stream time."""

    def __init__(self, ws: ClientConnection, account_sid: str, call_sid: str) -> None:
        self.ws = ws
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.chunk = 0
        self._account_sid, self._call_sid = account_sid, call_sid
        self._sequence = 1
        self._loop = asyncio.get_running_loop()
        self._begin = self._loop.time()

    async def send(self, frame: dict[str, Any]) -> None:
        if frame["event"] != "connected":
            frame = {"event": frame.pop("event"), "sequenceNumber": str(self._sequence), **frame}
            self._sequence += 1
        await self.ws.send(json.dumps(frame, separators=(",", ":")))

    async def begin(self, tracks: list[str], parameters: dict[str, str]) -> None:
        """`connected`, then `start` with the tracks and the `<Parameter>`s; stream time starts now."""
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        start = {
            "streamSid": self.stream_sid,
            "accountSid": self._account_sid,
            "callSid": self._call_sid,
            "tracks": tracks,
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await self.send({"event": "start", "start": start, "streamSid": self.stream_sid})
        self._begin = self._loop.time()

    async def media(self, track: str, payload: str) -> None:
        """This chunk's 20 ms of `track`."""
        stamp = str(round((self.chunk - 1) * _FRAME_S * 1000))
        media = {"track": track, "chunk": str(self.chunk), "timestamp": stamp, "payload": payload}
        await self.send({"event": "media", "media": media, "streamSid": self.stream_sid})

    async def mark(self, name: str) -> None:
        await self.send({"event": "mark", "streamSid": self.stream_sid, "mark": {"name": name}})

    async def pace(self, stop: asyncio.Event) -> None:
        """Until the next chunk is due (or the call stops)."""
        delay = self._begin + self.chunk * _FRAME_S - self._loop.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def end(self) -> None:
        ended = {"accountSid": self._account_sid, "callSid": self._call_sid}
        await self.send({"event": "stop", "stop": ended, "streamSid": self.stream_sid})


# ---------------------------------------------------------- <Connect><Stream>


@dataclass(frozen=True)
class ConnectStream:
    url: str
    parameters: dict[str, str]


def connect_stream(twiml: str) -> ConnectStream | None:
    """The two-way stream a TwiML answer connects the call to (`<Connect><Stream url>`), if any."""
    if "<Connect" not in twiml:
        return None
    try:
        root = ElementTree.fromstring(twiml.strip())
    except ElementTree.ParseError:
        return None
    stream = root.find("./Connect/Stream")
    if stream is None or not stream.get("url"):
        return None
    parameters = {str(p.get("name")): str(p.get("value") or "") for p in stream.findall("./Parameter") if p.get("name")}
    return ConnectStream(str(stream.get("url")), parameters)


def says(twiml: str) -> list[str]:
    """The words of a TwiML answer's top-level `<Say>`s, in order."""
    if "<Say" not in twiml:
        return []
    try:
        root = ElementTree.fromstring(twiml.strip())
    except ElementTree.ParseError:
        return []
    return [" ".join((say.text or "").split()) for say in root.findall("./Say")]


class Playback:
    """What Twilio does with the agent's side of a two-way stream: it queues the agent's audio and
    plays it in order at 8 kHz (a byte of μ-law is 1/8 ms), echoes each `mark` once the audio sent
    before it has played, and on `clear` drops what is queued and echoes every pending mark."""

    def __init__(self) -> None:
        self.queued_ms = 0.0  # audio waiting to be played
        self.played_ms = 0.0
        self._marks: list[tuple[float, str]] = []  # (played_ms at which it is reached, name)

    def media(self, payload: str) -> None:
        self.queued_ms += len(base64.b64decode(payload)) / 8

    def mark(self, name: str) -> None:
        self._marks.append((self.played_ms + self.queued_ms, name))

    def clear(self) -> list[str]:
        self.queued_ms = 0.0
        names = [name for _, name in self._marks]
        self._marks.clear()
        return names

    def advance(self, ms: float) -> tuple[bool, list[str]]:
        """Play up to `ms` of queued audio: (whether any played, the marks reached)."""
        played = min(ms, self.queued_ms)
        self.queued_ms -= played
        self.played_ms += played
        reached = [name for at, name in self._marks if at <= self.played_ms]
        self._marks = [(at, name) for at, name in self._marks if at > self.played_ms]
        return played > 0, reached


async def _two_way_stream_frames(
    self: TwilioCallPlayer, ws: ClientConnection, connect: ConnectStream, stop: asyncio.Event
) -> None:
    side = TwilioSide(ws, self.account_sid, self.call_sid)
    playback = Playback()

    async def agent_side() -> None:
        async for message in ws:
            try:
                frame = json.loads(message)
            except ValueError:
                continue  # Twilio would close with 31924; the simulator just ignores it
            if not isinstance(frame, dict):
                continue
            self.agent_frames.append(frame)
            event = frame.get("event")
            if event == "media":
                playback.media(str(frame.get("media", {}).get("payload", "")))
            elif event == "mark":
                playback.mark(str(frame.get("mark", {}).get("name", "")))
            elif event == "clear":
                for name in playback.clear():
                    await side.mark(name)

    await side.begin(["inbound"], connect.parameters)
    reader = asyncio.create_task(agent_side())
    _, voiced, quiet = _TRACKS["inbound"]
    try:
        while not stop.is_set() and not reader.done():
            side.chunk += 1
            frames = voiced if "user" in self._player.speaking else quiet
            await side.media("inbound", frames[side.chunk % len(frames)])
            _, reached = playback.advance(_FRAME_S * 1000)
            for name in reached:
                await side.mark(name)
            await side.pace(stop)
        await side.end()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketException):
            await reader


# ---------------------------------------------------------- the REST API


SIM_TWILIO_TOKEN = "sim-twilio-auth-token"
DIALED_NUMBER = "+14155550188"  # the simulated account's one number
NUMBER_SID = "PN" + uuid.uuid5(uuid.NAMESPACE_URL, "voice-console/simulator/twilio/number").hex
_API = "/2010-04-01/Accounts"
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _twilio_error(status: int, code: int, message: str) -> Response:
    """Twilio's error body: a code, the message, and where the code is explained."""
    body = {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return Response.json(status, body)


def _rfc2822(at: float | None = None) -> str:
    return format_datetime(datetime.fromtimestamp(at if at is not None else time.time(), UTC))


class SimulatedTwilio(LoopbackPlatform):
    """A Twilio stand-in on loopback: the REST calls the console makes (calls: create, fetch, list,
    update; incoming numbers: list, update) over real HTTP with Basic auth. A created call fetches
    its `Url` once answered with a signed request (`X-Twilio-Signature` over the URL it requested),
    posts its status callbacks with `SequenceNumber`, and follows a `<Connect><Stream>` answer with
    a two-way Media Stream that honours `mark` and `clear` (`TwilioCallPlayer`).

    `await start()`, `.url`, `await close()`.
    """

    def __init__(
        self,
        *,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = SIM_TWILIO_TOKEN,
        api_keys: dict[str, str] | None = None,
        speed: float = 1.0,
        scenario: Scenario | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tunnels: dict[str, str] | None = None,
        out_of_order: bool = False,
    ) -> None:
        """`out_of_order`: each call's `initiated` callback arrives after its `ringing`, as Twilio's
        separate requests sometimes do (the receiver orders them by SequenceNumber).

        `tunnels`: public origin -> where it really is (`{"https://abc.ngrok.app": "http://127.0.0.1:8765"}`),
        as a tunnel would carry Twilio's requests: signatures cover the public URL, requests go to the
        other. Sockets follow (wss:// to ws://)."""
        from console.simulator.scenarios import load_scenario

        if speed <= 0:
            raise ValueError("speed must be positive")
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.api_keys = dict(api_keys or {})  # API key SID -> secret, also accepted
        self.speed = speed
        self.scenario = scenario if isinstance(scenario, Scenario) else load_scenario(scenario)
        self.deliveries: deque[DeliveryRecord] = deque(maxlen=10_000)
        self.server = HttpServer(self._handle, host=host, port=port)
        self.numbers: dict[str, dict[str, Any]] = {
            NUMBER_SID: {
                "sid": NUMBER_SID,
                "account_sid": account_sid,
                "phone_number": DIALED_NUMBER,
                "friendly_name": "(415) 555-0188 (simulated)",
                "voice_url": "",
                "voice_method": "POST",
                "status_callback": "",
                "status_callback_method": "POST",
                "capabilities": {"voice": True, "sms": True, "mms": False, "fax": False},
                "date_created": _rfc2822(),
                "date_updated": _rfc2822(),
                "api_version": "2010-04-01",
                "uri": f"{_API}/{account_sid}/IncomingPhoneNumbers/{NUMBER_SID}.json",
            }
        }
        self.tunnels = {origin.rstrip("/"): target.rstrip("/") for origin, target in (tunnels or {}).items()}
        self.out_of_order = out_of_order
        self.calls: dict[str, dict[str, Any]] = {}  # sid -> the call resource
        self.players: dict[str, TwilioCallPlayer] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._client: httpx.AsyncClient | None = None

    def _running(self) -> list[asyncio.Task[Any]]:
        return list(self._tasks.values())

    # ---------------------------------------------------------- HTTP

    def _authorized(self, request: Request) -> bool:
        header = request.header("authorization") or ""
        if not header.startswith("Basic "):
            return False
        try:
            user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        if user == self.account_sid:
            return hmac.compare_digest(secret, self.auth_token)
        known = self.api_keys.get(user)
        return known is not None and hmac.compare_digest(secret, known)

    async def _handle(self, request: Request) -> Response:
        if not self._authorized(request):
            return _twilio_error(401, 20003, "Authenticate")
        parts = [part for part in request.path.split("/") if part]
        if parts[:2] != ["2010-04-01", "Accounts"] or parts[2:3] not in (
            [self.account_sid],
            [f"{self.account_sid}.json"],
        ):
            return _twilio_error(404, 20404, f"The requested resource {request.path} was not found")
        form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        query = request.query_params()
        match request.method, parts[3:]:
            case "GET", []:
                return Response.json(200, {"sid": self.account_sid, "status": "active", "type": "Full"})
            case "POST", ["Calls.json"]:
                return self._create_call(form)
            case "GET", ["Calls.json"]:
                return self._page("Calls.json", "calls", [self._call(sid) for sid in reversed(self.calls)], query)
            case "POST", ["Calls", name] if name.endswith(".json"):
                return self._update_call(name.removesuffix(".json"), form)
            case "GET", ["Calls", name] if name.endswith(".json"):
                sid = name.removesuffix(".json")
                return Response.json(200, self._call(sid)) if sid in self.calls else self._no_call(sid)
            case "GET", ["IncomingPhoneNumbers.json"]:
                numbers = list(self.numbers.values())
                return self._page("IncomingPhoneNumbers.json", "incoming_phone_numbers", numbers, query)
            case "POST", ["IncomingPhoneNumbers", name] if name.endswith(".json"):
                return self._update_number(name.removesuffix(".json"), form)
        return _twilio_error(404, 20404, f"The requested resource {request.path} was not found")

    def _page(self, tail: str, key: str, items: list[dict[str, Any]], query: dict[str, str]) -> Response:
        size = max(1, min(1000, int(query.get("PageSize") or 50)))
        page = max(0, int(query.get("Page") or 0))
        if status := query.get("Status"):
            items = [item for item in items if item.get("status") == status]
        chunk = items[page * size : (page + 1) * size]
        base = f"{_API}/{self.account_sid}/{tail}"
        more = (page + 1) * size < len(items)
        return Response.json(
            200,
            {
                key: chunk,
                "page": page,
                "page_size": size,
                "start": page * size,
                "end": page * size + max(len(chunk) - 1, 0),
                "uri": f"{base}?PageSize={size}&Page={page}",
                "first_page_uri": f"{base}?PageSize={size}&Page=0",
                "next_page_uri": f"{base}?PageSize={size}&Page={page + 1}" if more else None,
                "previous_page_uri": f"{base}?PageSize={size}&Page={page - 1}" if page else None,
            },
        )

    def _no_call(self, sid: str) -> Response:
        return _twilio_error(
            404, 20404, f"The requested resource {_API}/{self.account_sid}/Calls/{sid}.json was not found"
        )

    def _call(self, sid: str) -> dict[str, Any]:
        call = self.calls[sid]
        player = self.players.get(sid)
        if player is not None:
            call["status"] = player.status
        return dict(call)

    def _create_call(self, form: dict[str, list[str]]) -> Response:
        one = {key: values[-1] for key, values in form.items() if values}
        to, from_ = one.get("To", ""), one.get("From", "")
        if not to:
            return _twilio_error(400, 21201, "No 'To' number is specified")
        if not _E164.match(to):
            return _twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_:
            return _twilio_error(400, 21213, "No 'From' number is specified")
        if from_ not in {number["phone_number"] for number in self.numbers.values()}:
            return _twilio_error(
                400, 21210, f"The source phone number provided, {from_}, is not yet verified for your account."
            )
        if bool(one.get("Url")) == bool(one.get("Twiml")):
            return _twilio_error(400, 21205, "Exactly one of Url and Twiml is required")
        sid = "CA" + uuid.uuid4().hex
        now = _rfc2822()
        self.calls[sid] = {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": to,
            "to_formatted": to,
            "from": from_,
            "from_formatted": from_,
            "phone_number_sid": NUMBER_SID,
            "status": "queued",
            "direction": "outbound-api",
            "api_version": "2010-04-01",
            "date_created": now,
            "date_updated": now,
            "start_time": None,
            "end_time": None,
            "duration": None,
            "price": None,
            "price_unit": "USD",
            "answered_by": None,
            "caller_name": None,
            "forwarded_from": None,
            "group_sid": None,
            "parent_call_sid": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": f"{_API}/{self.account_sid}/Calls/{sid}.json",
            "subresource_uris": {},
        }
        url, twiml = one.get("Url"), one.get("Twiml")
        status = one.get("StatusCallback", "")
        if url or status:
            assert self._client is not None, "start() the platform first"
            endpoints = TwilioEndpoints(
                voice=self._through(url) if url else "",
                status=self._through(status) if status else "",
                stream="",
                public_base=origin_of(url or status),
                tunnel=self._through,
            )
            events = form.get("StatusCallbackEvent")
            player = TwilioCallPlayer(
                self.scenario,
                endpoints,
                DialectWebhook(self._client, on_record=self.deliveries.append),
                auth_token=self.auth_token,
                speed=self.speed,
                account_sid=self.account_sid,
                call={"CallSid": sid, "From": from_, "To": to, "Direction": "outbound-api"},
                status_events=frozenset(events) if events else frozenset(),
                twiml=twiml or "",
                out_of_order=self.out_of_order,
            )
            self.players[sid] = player
            self._tasks[sid] = asyncio.create_task(self._play(sid, player), name=f"twilio-call:{sid}")
        return Response.json(201, self._call(sid))

    async def _play(self, sid: str, player: TwilioCallPlayer) -> None:
        started = time.time()
        await player.run()
        duration = round(time.time() - started)
        self.calls[sid].update(
            end_time=_rfc2822(), duration=str(duration), date_updated=_rfc2822(), start_time=_rfc2822(started)
        )

    def _through(self, url: str) -> str:
        """Where a public URL really is (the tunnels), for requests and sockets alike."""
        socket = url.startswith(("ws://", "wss://"))
        web = url.replace("wss://", "https://", 1).replace("ws://", "http://", 1) if socket else url
        for origin, target in self.tunnels.items():
            if web == origin or web.startswith(origin + "/"):
                web = target + web[len(origin) :]
                break
        return web.replace("https://", "wss://", 1).replace("http://", "ws://", 1) if socket else web

    def _update_call(self, sid: str, form: dict[str, list[str]]) -> Response:
        if sid not in self.calls:
            return self._no_call(sid)
        one = {key: values[-1] for key, values in form.items() if values}
        player = self.players.get(sid)
        status = one.get("Status")
        if status is not None:
            if status not in ("completed", "canceled"):
                return _twilio_error(400, 21218, f"Invalid Status: {status}")
            if player is None or player.ended.is_set():
                return _twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
            player.hang_up()
        elif one.get("Url") or one.get("Twiml"):
            if player is None or player.ended.is_set() or player.status != "in-progress":
                return _twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
            self.calls[sid]["redirected_to"] = one.get("Twiml") or one.get("Url")
            player.redirect(twiml=one.get("Twiml", ""), url=self._through(one["Url"]) if one.get("Url") else "")
        self.calls[sid]["date_updated"] = _rfc2822()
        return Response.json(200, self._call(sid))

    def _update_number(self, sid: str, form: dict[str, list[str]]) -> Response:
        number = self.numbers.get(sid)
        if number is None:
            return _twilio_error(404, 20404, f"The requested resource IncomingPhoneNumbers/{sid}.json was not found")
        fields = {"VoiceUrl": "voice_url", "StatusCallback": "status_callback", "FriendlyName": "friendly_name"}
        for name, key in fields.items():
            if name in form:
                number[key] = form[name][-1]
        number["date_updated"] = _rfc2822()
        return Response.json(200, dict(number))


# ---------------------------------------------------------- an agent behind <Connect><Stream>


class SimulatedAgent:
    """The user's agent behind `<Connect><Stream>`, as a Twilio user would write one, on loopback:
    it speaks (voiced μ-law queued faster than real time, a `mark` after each sentence), listens
    with its own small VAD, and answers once the caller stops. One that `stops_on_barge_in` sends
    `clear` as soon as it hears the caller over its own audio; one that does not talks on.

    `async with SimulatedAgent() as agent: agent.url`.
    """

    SENTENCE_FRAMES = 90  # 1.8 s of speech per sentence
    LISTEN_FRAMES = 3  # 60 ms of the caller's voice before it reacts
    QUIET_FRAMES = 25  # 500 ms of quiet: the caller's turn is over

    def __init__(self, *, stops_on_barge_in: bool | None = True, host: str = "127.0.0.1", port: int = 0) -> None:
        """`stops_on_barge_in` None: streams take turns, the first one stopping, the next talking on."""
        self.stops_on_barge_in = stops_on_barge_in
        self._host, self._port = host, port
        self._server: Any = None
        self.streams = 0
        self.clears = 0

    @property
    def url(self) -> str:
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"ws://{host}:{port}/agent"

    async def __aenter__(self) -> SimulatedAgent:
        from websockets.asyncio.server import serve

        self._server = await serve(self._handle, self._host, self._port, compression=None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _speak(self, ws: Any, sid: str, sentences: int, first: int) -> None:
        _, voiced, _ = _TRACKS["outbound"]
        for sentence in range(first, first + sentences):
            for index in range(self.SENTENCE_FRAMES):
                frame = {"event": "media", "streamSid": sid, "media": {"payload": voiced[index % len(voiced)]}}
                await ws.send(json.dumps(frame, separators=(",", ":")))
            await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": f"sentence-{sentence}"}}))

    async def _handle(self, ws: Any) -> None:
        self.streams += 1
        stops = self.stops_on_barge_in if self.stops_on_barge_in is not None else self.streams % 2 == 1
        sid, loud, quiet, said = "", 0, 0, 0
        heard_caller = False
        with contextlib.suppress(WebSocketException):
            async for message in ws:
                try:
                    frame = json.loads(message)
                except ValueError:
                    continue
                event = frame.get("event")
                if event == "start":
                    sid = str(frame.get("streamSid") or "")
                    await self._speak(ws, sid, 2, said)  # the greeting: two sentences, queued at once
                    said += 2
                elif event == "media":
                    audio = base64.b64decode(frame.get("media", {}).get("payload", ""))
                    if ulaw_rms(audio) > 700:
                        loud, quiet = loud + 1, 0
                        if loud == self.LISTEN_FRAMES:
                            heard_caller = True
                            if stops:
                                self.clears += 1
                                await ws.send(json.dumps({"event": "clear", "streamSid": sid}))
                    else:
                        loud, quiet = 0, quiet + 1
                        if heard_caller and quiet == self.QUIET_FRAMES:  # the caller is done: answer
                            heard_caller = False
                            await self._speak(ws, sid, 1, said)
                            said += 1
