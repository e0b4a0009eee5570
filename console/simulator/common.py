"""What the simulator's dialect players share: how a delivery is posted and reported, the
scenario clock (who speaks when, in compressed time), and base URLs.

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

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import httpx

from console.simulator.scenarios import Scenario

if TYPE_CHECKING:
    from console.receiver.http import HttpServer

log = logging.getLogger(__name__)

AGENT_NUMBER = "+14155550199"  # the number the simulated caller dials


@dataclass(frozen=True)
class DeliveryRecord:
    """One message posted: what the target answered, for reports."""

    call_id: str
    type: str
    status: int | None  # None: no HTTP answer (refused, timed out)
    latency_ms: float
    error: str | None = None
    bad_reply: str | None = None  # a tool-call answer of the wrong shape


def split_base(target: str, routes: tuple[str, ...]) -> str:
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


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


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
            self.record(DeliveryRecord(call_id, kind, None, ms_since(started), f"no answer within {timeout:g} s"))
            return None
        except httpx.HTTPError as exc:
            self.record(DeliveryRecord(call_id, kind, None, ms_since(started), f"{type(exc).__name__}: {exc}"))
            return None
        latency = ms_since(started)
        error = None if response.is_success else f"HTTP {response.status_code}"
        bad = check(response) if check is not None else None
        self.record(DeliveryRecord(call_id, kind, response.status_code, latency, error, bad))
        return response

    def record(self, record: DeliveryRecord) -> None:
        if record.error:
            log.info("posting %s for call %s: %s", record.type, record.call_id, record.error)
        if self._on_record is not None:
            self._on_record(record)


class LoopbackPlatform:
    """What every simulated platform shares: its HTTP server on loopback, one outgoing client, and
    the calls it plays, stopped when it closes. `await start()` … `await close()`, or `async with`."""

    server: HttpServer
    _client: httpx.AsyncClient | None

    @property
    def url(self) -> str:
        return self.server.url

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient()

    def _running(self) -> list[asyncio.Task[Any]]:
        """The calls still playing (cancelled at close)."""
        return []

    async def start(self) -> None:
        self._client = self._new_client()
        await self.server.start()

    async def close(self) -> None:
        tasks = self._running()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        await self.server.close()
        if self._client is not None:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class Player:
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

    def word_times(self, words: list[str], start: float) -> list[dict[str, Any]]:
        """Retell-style timings of `words` said from `start` (seconds since the call was answered)."""
        per_word = self.word_s() / self.speed
        return [
            {"word": word, "start": round(start + i * per_word, 3), "end": round(start + (i + 0.85) * per_word, 3)}
            for i, word in enumerate(words)
        ]

    async def utter(self, role: str, words: list[str]) -> list[dict[str, Any]]:
        """Speak `words` in real (compressed) time; their Retell-style timings."""
        timings = self.word_times(words, self.elapsed())
        self.speaking.add(role)
        try:
            await asyncio.sleep(len(words) * self.word_s() / self.speed)
        finally:
            self.speaking.discard(role)
        return timings


def compact_body(data: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as Retell sends it (INFERRED in the reference)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------- Twilio
