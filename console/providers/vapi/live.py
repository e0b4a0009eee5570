"""Live call control (`call.monitor.controlUrl`) and listening (`call.monitor.listenUrl`).

Both URLs are capabilities: whoever has them can hear or steer the call, and by
default Vapi asks for nothing else. So they are masked in every message and
log line (`mask_url`). Control bodies are sent bare (`{"type": "say", ...}`),
as Vapi's live examples do (reference §6.1). Control requests are never
retried: a repeated `say` is spoken twice.

The listen stream is s16le PCM, 16 kHz, stereo interleaved by default, channel 0
the customer and channel 1 the assistant (reference §6.2, unverified upstream),
so rate, channels and a mono switch are parameters.
"""

from __future__ import annotations

import array
import json
import logging
import math
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import websockets
import websockets.exceptions
from websockets.asyncio.client import connect

from console.providers.base import ControlTarget, PlatformError
from console.providers.vapi.client import validate_e164
from console.redact import mask_url

log = logging.getLogger(__name__)

ControlAction = Literal["mute-assistant", "unmute-assistant", "mute-customer", "unmute-customer"]
CONTROL_ACTIONS: tuple[str, ...] = ("mute-assistant", "unmute-assistant", "mute-customer", "unmute-customer")
MessageRole = Literal["system", "user", "assistant", "tool"]


def _scrub(text: str, url: str) -> str:
    """Remove the URL, and its path on its own, from text a server echoed back."""
    text = text.replace(url, mask_url(url))
    try:
        parts = urlsplit(url)
    except ValueError:
        return text
    for secret in (parts.query, parts.path):
        if len(secret) > 1:
            text = text.replace(secret, "…")
    return text


class LiveControlError(PlatformError):
    """The control URL refused or could not be reached. The URL is shown masked."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status  # 0 when unreachable


class CallControl:
    """Steers one live call through its control URL (a `LiveControl`, console.providers.base)."""

    def __init__(
        self,
        control_url: str,
        *,
        client: httpx.AsyncClient | None = None,
        public_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not control_url.startswith(("http://", "https://")):
            raise ValueError(f"the control URL must be http(s): {mask_url(control_url)}")
        self._url = control_url
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._timeout = httpx.Timeout(timeout_s)
        # Only needed with monitorPlan.controlAuthenticationEnabled; it is the *public* key.
        self._public_key = public_key

    def __repr__(self) -> str:
        return f"CallControl({mask_url(self._url)!r})"

    @property
    def masked_url(self) -> str:
        return mask_url(self._url)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> CallControl:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(self, body: dict[str, Any]) -> Any:
        """POST one control message; returns the parsed answer (undocumented upstream) or None."""
        headers = {"Authorization": f"Bearer {self._public_key}"} if self._public_key else {}
        try:
            response = await self._client.post(self._url, json=body, headers=headers, timeout=self._timeout)
        except httpx.TransportError as exc:
            raise LiveControlError(0, f"control URL {self.masked_url} unreachable ({type(exc).__name__})") from None
        if response.status_code >= 400:
            detail = _scrub(" ".join(response.text.split()), self._url)[:200]
            message = f"control URL {self.masked_url} answered {response.status_code} to {body.get('type')!r}"
            raise LiveControlError(response.status_code, f"{message}: {detail}" if detail else message)
        log.debug("control %s sent to %s", body.get("type"), self.masked_url)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    async def say(self, content: str, *, end_call_after: bool = False, interrupt: bool = False) -> Any:
        """Speak `content`; `interrupt` cuts off whatever the assistant is saying."""
        if not content.strip():
            raise ValueError("nothing to say: the text is empty")
        return await self.send(
            {
                "type": "say",
                "content": content,
                "endCallAfterSpoken": end_call_after,
                "interruptAssistantEnabled": interrupt,
            }
        )

    async def add_message(self, role: MessageRole, content: str, *, trigger_response: bool = True) -> Any:
        """Insert into the conversation; with `trigger_response=False` the model does not answer."""
        if role not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"role must be system, user, assistant or tool, not {role!r}")
        return await self.send(
            {
                "type": "add-message",
                "message": {"role": role, "content": content},
                "triggerResponseEnabled": trigger_response,
            }
        )

    async def control(self, action: ControlAction) -> Any:
        if action not in CONTROL_ACTIONS:
            raise ValueError(f"control must be one of {', '.join(CONTROL_ACTIONS)}, not {action!r}")
        return await self.send({"type": "control", "control": action})

    async def mute_assistant(self) -> Any:
        return await self.control("mute-assistant")

    async def unmute_assistant(self) -> Any:
        return await self.control("unmute-assistant")

    async def mute_customer(self) -> Any:
        return await self.control("mute-customer")

    async def unmute_customer(self) -> Any:
        return await self.control("unmute-customer")

    async def cut_off(self) -> Any:
        raise ValueError("Vapi stops the assistant itself when the caller speaks")

    async def end_call(self) -> Any:
        return await self.send({"type": "end-call"})

    async def transfer(self, *, number: str | None = None, sip: str | None = None, content: str | None = None) -> Any:
        """Transfer to an E.164 number or a SIP URI; `content` is said before transferring."""
        if (number is None) == (sip is None):
            raise ValueError("transfer needs exactly one of number (E.164) or sip (sip:...)")
        if number is not None:
            destination = {"type": "number", "number": validate_e164(number, what="transfer number")}
        else:
            assert sip is not None
            if not sip.startswith(("sip:", "sips:")):
                raise ValueError(f"SIP destination must start with 'sip:' or 'sips:', got {sip!r}")
            destination = {"type": "sip", "sipUri": sip}
        body: dict[str, Any] = {"type": "transfer", "destination": destination}
        if content:
            body["content"] = content
        return await self.send(body)


# listening


@dataclass(frozen=True)
class LevelFrame:
    """Audio level over one frame of the listen stream.

    `levels[i]` is the RMS of channel i as a fraction of full scale (0..1);
    channel 0 is the customer, 1 the assistant; mono streams have one channel.
    `at` is the stream position in seconds (from the sample count, not the clock).
    """

    at: float
    duration: float
    levels: tuple[float, ...]
    speaking: tuple[bool, ...]

    @property
    def customer_level(self) -> float:
        return self.levels[0]

    @property
    def assistant_level(self) -> float | None:
        return self.levels[1] if len(self.levels) > 1 else None

    @property
    def customer_speaking(self) -> bool:
        return self.speaking[0]

    @property
    def assistant_speaking(self) -> bool | None:
        return self.speaking[1] if len(self.speaking) > 1 else None


class ListenError(Exception):
    """The listen socket failed. The URL is shown masked."""


def channel_levels(pcm: bytes, channels: int) -> tuple[float, ...]:
    """RMS per channel of interleaved s16le PCM, 0..1."""
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    levels = []
    for ch in range(channels):
        chan = samples[ch::channels]
        if not chan:
            levels.append(0.0)
            continue
        levels.append(min(1.0, math.sqrt(sum(x * x for x in chan) / len(chan)) / 32768.0))
    return tuple(levels)


async def listen(
    url: str,
    *,
    sample_rate: int = 16000,
    channels: int = 2,
    frame_ms: int = 100,
    mono: bool = False,
    threshold: float = 0.02,
    headers: Mapping[str, str] | None = None,
    on_json: Callable[[Any], None] | None = None,
    open_timeout_s: float = 10.0,
) -> AsyncIterator[LevelFrame]:
    """Connect to a listen URL and yield one `LevelFrame` per `frame_ms` of audio.

    `threshold` is the RMS (fraction of full scale; 0.02 ≈ -34 dBFS) above which a
    channel counts as speaking. `mono=True` treats the stream as one channel
    whatever `channels` says. Text frames are JSON: given to `on_json` if set,
    otherwise ignored. The iterator ends when the call ends (a normal close).
    """
    if mono:
        channels = 1
    if channels < 1 or sample_rate <= 0 or frame_ms <= 0:
        raise ValueError("channels, sample_rate and frame_ms must be positive")
    frame_bytes = max(1, sample_rate * frame_ms // 1000) * channels * 2
    masked = mask_url(url)
    buffer = bytearray()
    position = 0.0
    bytes_per_second = sample_rate * channels * 2

    def frame(chunk: bytes) -> LevelFrame:
        nonlocal position
        levels = channel_levels(chunk, channels)
        duration = len(chunk) / bytes_per_second
        result = LevelFrame(
            at=round(position, 6),
            duration=duration,
            levels=levels,
            speaking=tuple(level >= threshold for level in levels),
        )
        position += duration
        return result

    try:
        ws = await connect(
            url,
            additional_headers=dict(headers or {}),
            open_timeout=open_timeout_s,
            max_size=None,
        )
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        raise ListenError(f"listen URL {masked} could not be opened ({type(exc).__name__})") from None
    log.debug("listening on %s (%d Hz, %d ch)", masked, sample_rate, channels)
    try:
        while True:
            try:
                message = await ws.recv()
            except websockets.exceptions.ConnectionClosedOK:
                break
            except websockets.exceptions.ConnectionClosedError as exc:
                code = exc.rcvd.code if exc.rcvd else None
                raise ListenError(f"listen URL {masked} closed abnormally (code {code})") from None
            if isinstance(message, str):
                if on_json is not None:
                    try:
                        on_json(json.loads(message))
                    except ValueError:
                        log.debug("non-JSON text frame on %s ignored", masked)
                continue
            buffer.extend(message)
            while len(buffer) >= frame_bytes:
                chunk = bytes(buffer[:frame_bytes])
                del buffer[:frame_bytes]
                yield frame(chunk)
        # A last partial frame still carries the final words; keep whole samples only.
        tail = len(buffer) - len(buffer) % (channels * 2)
        if tail:
            yield frame(bytes(buffer[:tail]))
    finally:
        await ws.close()


def open_control(target: ControlTarget) -> CallControl:
    """The console's live control of a Vapi call: its control URL, over the receiver's HTTP client."""
    if target.control_url is None:
        raise ValueError("a Vapi call is controlled through its control URL, and this call has none")
    return CallControl(target.control_url, client=target.http_client)
