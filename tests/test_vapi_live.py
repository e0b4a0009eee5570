"""Live control (local HTTP server as the control URL) and listening (local websockets server)."""

from __future__ import annotations

import array
import json
import math
import random
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from console.core.http_types import Request, Response
from console.providers.vapi.live import (
    CallControl,
    LevelFrame,
    ListenError,
    LiveControlError,
    channel_levels,
    listen,
)
from console.receiver.http import HttpServer
from console.redact import mask_url

SECRET_PATH = "/7f3c9a1e-call/control-s3cr3t"


# control


class ControlUrl:
    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[Request] = []
        self.status = status
        self.server = HttpServer(self.handle, port=0)

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        if request.path != SECRET_PATH:
            return Response.json(404, {"statusCode": 404, "message": f"Cannot POST {request.path}"})
        self.bodies.append(json.loads(request.body))
        if self.status != 200:
            return Response.json(self.status, {"statusCode": self.status, "message": f"no call at {request.path}"})
        return Response.json(200, {"ok": True})

    @property
    def url(self) -> str:
        return self.server.url + SECRET_PATH


@pytest.fixture
async def control_url() -> AsyncIterator[ControlUrl]:
    fake = ControlUrl()
    await fake.server.start()
    yield fake
    await fake.server.close()


async def test_every_control_message_is_a_bare_json_post(control_url: ControlUrl) -> None:
    async with CallControl(control_url.url) as control:
        assert await control.say("One moment, please.") == {"ok": True}
        await control.say("Goodbye.", end_call_after=True, interrupt=True)
        await control.add_message("system", "The customer is a VIP.", trigger_response=False)
        await control.add_message("user", "What are your hours?")
        await control.mute_assistant()
        await control.unmute_assistant()
        await control.mute_customer()
        await control.unmute_customer()
        await control.transfer(number="+14155550199", content="Transferring you now.")
        await control.transfer(sip="sip:desk@example.com")
        await control.end_call()
    assert control_url.bodies == [
        {
            "type": "say",
            "content": "One moment, please.",
            "endCallAfterSpoken": False,
            "interruptAssistantEnabled": False,
        },
        {"type": "say", "content": "Goodbye.", "endCallAfterSpoken": True, "interruptAssistantEnabled": True},
        {
            "type": "add-message",
            "message": {"role": "system", "content": "The customer is a VIP."},
            "triggerResponseEnabled": False,
        },
        {
            "type": "add-message",
            "message": {"role": "user", "content": "What are your hours?"},
            "triggerResponseEnabled": True,
        },
        {"type": "control", "control": "mute-assistant"},
        {"type": "control", "control": "unmute-assistant"},
        {"type": "control", "control": "mute-customer"},
        {"type": "control", "control": "unmute-customer"},
        {
            "type": "transfer",
            "destination": {"type": "number", "number": "+14155550199"},
            "content": "Transferring you now.",
        },
        {"type": "transfer", "destination": {"type": "sip", "sipUri": "sip:desk@example.com"}},
        {"type": "end-call"},
    ]
    assert all(r.method == "POST" and r.content_type == "application/json" for r in control_url.requests)
    assert all(r.header("authorization") is None for r in control_url.requests)


async def test_public_key_is_sent_when_control_auth_is_on(control_url: ControlUrl) -> None:
    async with CallControl(control_url.url, public_key="pk-public") as control:
        await control.end_call()
    assert control_url.requests[0].header("authorization") == "Bearer pk-public"


async def test_bad_arguments_are_refused_locally(control_url: ControlUrl) -> None:
    async with CallControl(control_url.url) as control:
        with pytest.raises(ValueError, match="E.164"):
            await control.transfer(number="555-0199")
        with pytest.raises(ValueError):
            await control.transfer(number="+14155550199", sip="sip:x@y")
        with pytest.raises(ValueError):
            await control.control("mute-everyone")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            await control.say("   ")
        with pytest.raises(ValueError):
            await control.add_message("bot", "hi")  # type: ignore[arg-type]
    assert control_url.requests == []


async def test_control_errors_never_show_the_url_path(control_url: ControlUrl) -> None:
    control_url.status = 404
    async with CallControl(control_url.url) as control:
        with pytest.raises(LiveControlError) as info:
            await control.say("hello")
        assert info.value.status == 404
        assert SECRET_PATH not in str(info.value) and "s3cr3t" not in repr(control)
        assert str(info.value).startswith(f"control URL http://127.0.0.1:{control_url.server.port}/… answered 404")
    await control_url.server.close()
    async with CallControl(control_url.url) as control:
        with pytest.raises(LiveControlError) as info:
            await control.end_call()
    assert info.value.status == 0 and "unreachable" in str(info.value) and "s3cr3t" not in str(info.value)


def test_mask_url() -> None:
    assert mask_url("wss://aws-us-west-2-production1-phone-call-websocket.vapi.ai/abc-123/listen") == (
        "wss://aws-us-west-2-production1-phone-call-websocket.vapi.ai/…"
    )
    assert mask_url("https://user:pw@host.example:8443/x/control?token=1") == "https://host.example:8443/…"
    assert mask_url("http://[::1]:9000/c") == "http://[::1]:9000/…"
    assert mask_url("not a url") == "<url hidden>"


# listening

RATE = 16000
# (seconds, who is speaking): the customer talks over the assistant at 0.6-0.8 s (a barge-in).
SCRIPT: list[tuple[float, str]] = [(0.3, "none"), (0.3, "assistant"), (0.2, "both"), (0.4, "customer"), (0.2, "none")]


def pcm(script: list[tuple[float, str]], *, channels: int, rate: int = RATE, seed: int = 7) -> bytes:
    """Interleaved s16le: a loud tone on the speaking channel, faint noise elsewhere."""
    rng = random.Random(seed)
    samples = array.array("h")
    n = 0
    for seconds, who in script:
        for _ in range(int(seconds * rate)):
            tone = int(9000 * math.sin(2 * math.pi * 220 * n / rate))
            active = (who in ("customer", "both"), who in ("assistant", "both"))
            for ch in range(channels):
                on = active[ch] if channels == 2 else who != "none"
                samples.append(tone if on else rng.randint(-60, 60))
            n += 1
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def expected_speaking(script: list[tuple[float, str]], frame_s: float) -> list[tuple[bool, bool]]:
    out = []
    for seconds, who in script:
        for _ in range(round(seconds / frame_s)):
            out.append((who in ("customer", "both"), who in ("assistant", "both")))
    return out


async def stream_server(
    audio: bytes,
    *,
    chunk: int = 1001,
    close_code: int = 1000,
    texts: list[str] | None = None,
    need_auth: str | None = None,
):
    seen_headers: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        seen_headers.append(ws.request.headers)
        if need_auth and ws.request.headers.get("Authorization") != need_auth:
            await ws.close(4001, "unauthorized")
            return
        for text in texts or []:
            await ws.send(text)
        # Odd chunk sizes split samples across frames, as a network would.
        for start in range(0, len(audio), chunk):
            await ws.send(audio[start : start + chunk])
        await ws.close(close_code)

    server = await serve(handler, "127.0.0.1", 0)
    port = list(server.sockets)[0].getsockname()[1]
    return server, f"ws://127.0.0.1:{port}/7f3c9a1e-call/listen-s3cr3t", seen_headers


async def collect(url: str, **kwargs: Any) -> list[LevelFrame]:
    return [frame async for frame in listen(url, **kwargs)]


async def test_stereo_levels_follow_the_scripted_speaker() -> None:
    server, url, _ = await stream_server(pcm(SCRIPT, channels=2))
    texts: list[Any] = []
    try:
        frames = await collect(url, on_json=texts.append)
    finally:
        server.close()
        await server.wait_closed()
    assert [(f.customer_speaking, f.assistant_speaking) for f in frames] == expected_speaking(SCRIPT, 0.1)
    assert [f.at for f in frames[:3]] == [0.0, 0.1, 0.2]
    assert all(abs(f.duration - 0.1) < 1e-9 for f in frames)
    loud = frames[4]  # assistant speaking alone
    assert 0.15 < loud.assistant_level < 0.25 and loud.customer_level < 0.01  # type: ignore[operator]


async def test_text_frames_are_surfaced_as_json() -> None:
    server, url, _ = await stream_server(
        pcm([(0.2, "assistant")], channels=2), texts=['{"type":"status","status":"in-progress"}', "not json"]
    )
    texts: list[Any] = []
    try:
        frames = await collect(url, on_json=texts.append)
    finally:
        server.close()
        await server.wait_closed()
    assert texts == [{"type": "status", "status": "in-progress"}]
    assert len(frames) == 2


async def test_mono_switch_and_other_rates_and_frame_sizes() -> None:
    script = [(0.2, "none"), (0.4, "customer"), (0.2, "none")]
    server, url, _ = await stream_server(pcm(script, channels=1, rate=8000), chunk=333)
    try:
        frames = await collect(url, sample_rate=8000, mono=True, frame_ms=200)
    finally:
        server.close()
        await server.wait_closed()
    assert [f.speaking for f in frames] == [(False,), (True,), (True,), (False,)]
    assert frames[0].assistant_level is None and len(frames[1].levels) == 1


async def test_partial_tail_is_flushed_and_auth_header_is_sent() -> None:
    server, url, headers = await stream_server(pcm([(0.25, "customer")], channels=2), need_auth="Bearer pk-public")
    try:
        frames = await collect(url, headers={"Authorization": "Bearer pk-public"})
    finally:
        server.close()
        await server.wait_closed()
    assert headers[0]["Authorization"] == "Bearer pk-public"
    assert len(frames) == 3 and abs(frames[-1].duration - 0.05) < 1e-9 and frames[-1].customer_speaking


async def test_abnormal_close_and_refused_connection_hide_the_url() -> None:
    server, url, _ = await stream_server(pcm([(0.1, "none")], channels=2), close_code=1011)
    try:
        with pytest.raises(ListenError) as info:
            await collect(url)
    finally:
        server.close()
        await server.wait_closed()
    assert "1011" in str(info.value) and "s3cr3t" not in str(info.value)
    with pytest.raises(ListenError) as refused:
        await collect(url)  # the server is gone
    assert "could not be opened" in str(refused.value) and "s3cr3t" not in str(refused.value)


def test_channel_levels_of_full_scale_and_silence() -> None:
    full = array.array("h", [32767, 0, -32768, 0] * 10)
    if sys.byteorder == "big":
        full.byteswap()
    left, right = channel_levels(full.tobytes(), 2)
    assert left == pytest.approx(1.0, abs=1e-4) and right == 0.0
    assert channel_levels(b"", 2) == (0.0, 0.0)
