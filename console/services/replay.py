"""Replay a stored call: its normalized events (into the console) or its webhook
deliveries (re-posted to a receiver), on the original timing scaled by a speed.

Textual-free, shared by the TUI's History screen and `voice-console replay`:
- `ReplayClock` is the virtual time of a replay: it runs `speed` times faster
  than the wall clock and can change speed, pause, resume and stop mid-run;
- `paced(items, when, clock)` yields items when the clock reaches their offset
  from the first item;
- `stored_events` / `stored_deliveries` read a call back from the history;
- `DeliverySigner` re-authenticates a stored body the way the platform would
  (secrets are never stored, so they come from the environment or keyring);
- `replay_deliveries` re-posts them (`voice-console replay` is `console.commands.replay`).

Stored bodies and headers are already redacted of the configured secrets; the
command prints only what it sent and the status it got, passed once more
through a `Redactor` holding every secret it signs with.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import httpx

from console import __version__
from console.config import Settings
from console.core.events import Event, event_from_dict
from console.core.replays import REPLAY_HEADER, REPLAY_MARK, new_run_id
from console.providers import registry
from console.store.db import Store
from console.store.queries import call_event_pages

T = TypeVar("T")

# REPLAY_MARK is prefixed to the call id (and here tool-call ids) of replayed events, so
# the console shows a replay like a live call without ever mixing it up with one.
SPEEDS = (1.0, 2.0, 5.0, 10.0)
# A delivery waits at most this long for the previous one's reply before it is
# sent anyway: order is kept for quick replies, a held tool call blocks nothing.
ORDER_GRACE_S = 0.5
_PAGE = 500


# --- time ---------------------------------------------------------------------------------


class ReplayClock:
    """Virtual seconds since the replay began, advancing at `speed` x the wall clock."""

    def __init__(self, speed: float = 1.0, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._speed = valid_speed(speed)
        self._base = 0.0  # virtual seconds at the anchor
        self._anchor = monotonic()
        self._paused = False
        self._stopped = False
        self._changed = asyncio.Event()

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def position(self) -> float:
        if self._paused or self._stopped:
            return self._base
        return self._base + (self._monotonic() - self._anchor) * self._speed

    def set_speed(self, speed: float) -> None:
        speed = valid_speed(speed)
        self._rebase()
        self._speed = speed
        self._wake()

    def pause(self) -> None:
        if not self._paused:
            self._rebase()
            self._paused = True
            self._wake()

    def resume(self) -> None:
        if self._paused:
            self._anchor = self._monotonic()
            self._paused = False
            self._wake()

    def toggle_pause(self) -> bool:
        """Pause or resume; True when now paused."""
        self.resume() if self._paused else self.pause()
        return self._paused

    def stop(self) -> None:
        self._rebase()
        self._stopped = True
        self._paused = False
        self._wake()

    async def wait_until(self, offset: float) -> bool:
        """Sleep until the virtual time reaches `offset`; False when stopped first."""
        while not self._stopped:
            changed = self._changed
            if self._paused:
                delay = None
            else:
                left = offset - self.position
                if left <= 0:
                    return True
                delay = left / self._speed
            try:
                await asyncio.wait_for(changed.wait(), delay)
            except TimeoutError:
                pass
        return False

    def _rebase(self) -> None:
        self._base = self.position
        self._anchor = self._monotonic()

    def _wake(self) -> None:
        # Waiters hold the old event; a fresh one is armed for the next change.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def valid_speed(speed: float) -> float:
    speed = float(speed)
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"the replay speed must be a positive number, not {speed!r}")
    return speed


def next_speed(speed: float, step: int) -> float:
    """The next of SPEEDS up (step 1) or down (step -1) from `speed`, clamped at the ends."""
    if step > 0:
        return next((s for s in SPEEDS if s > speed), SPEEDS[-1])
    return next((s for s in reversed(SPEEDS) if s < speed), SPEEDS[0])


async def _aiter(items: AsyncIterable[T] | Iterable[T]) -> AsyncIterator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def paced(
    items: AsyncIterable[T] | Iterable[T], when: Callable[[T], float], clock: ReplayClock
) -> AsyncIterator[T]:
    """Each item once the clock reaches its time (`when`, in seconds) minus the first
    item's; an item earlier than the first comes at once. Ends when the clock stops."""
    origin: float | None = None
    async for item in _aiter(items):
        at = when(item)
        if origin is None:
            origin = at
        if not await clock.wait_until(max(0.0, at - origin)):
            return
        yield item


# --- reading a call back --------------------------------------------------------------------


async def stored_events(store: Store, call_id: str, *, page: int = _PAGE) -> AsyncIterator[Event]:
    """A call's normalized events in time order, read a page at a time."""
    async for rows in call_event_pages(store, call_id, page):
        for row in rows:
            try:
                yield event_from_dict(json.loads(row["data"]))
            except ValueError:
                continue  # written by a newer version with a kind this one does not know


def as_replay(event: Event, at: datetime | None = None) -> Event:
    """The event marked as a replay (call and tool-call ids prefixed), re-dated to `at` if given."""
    update: dict[str, Any] = {} if at is None else {"at": at}
    if event.call_id:
        update["call_id"] = REPLAY_MARK + event.call_id
    tool_call_id = getattr(event, "tool_call_id", None)
    if tool_call_id:
        update["tool_call_id"] = REPLAY_MARK + tool_call_id
    return event.model_copy(update=update)


@dataclass(frozen=True)
class StoredDelivery:
    """One accepted webhook request as stored (body and headers redacted)."""

    id: int
    received_at: float  # Unix seconds
    provider: str
    route: str
    method: str
    path: str  # the request target: path and query
    message_type: str | None
    content_type: str | None
    body: bytes


async def stored_deliveries(store: Store, call_id: str) -> list[StoredDelivery]:
    """The call's first deliveries (not the platform's retries, nor earlier replays), in the order received."""
    rows = await store.fetchall(
        "SELECT id, received_at, provider, route, method, path, message_type, headers, body FROM deliveries"
        " WHERE call_id = ? AND duplicate_of IS NULL AND replay_run IS NULL ORDER BY received_at, id",
        (call_id,),
    )
    out = []
    for row in rows:
        headers = json.loads(row["headers"])
        content_type = next((value for name, value in headers if name.lower() == "content-type"), None)
        out.append(
            StoredDelivery(
                id=row["id"],
                received_at=row["received_at"],
                provider=row["provider"],
                route=row["route"],
                method=row["method"],
                path=row["path"],
                message_type=row["message_type"],
                content_type=content_type,
                body=bytes(row["body"]),
            )
        )
    return out


# --- signing --------------------------------------------------------------------------------


class DeliverySigner:
    """The auth headers a platform would send with a body, as the receiver expects them
    (each provider's `sign` in its spec).

    `public_url` is the base URL the receiver believes it is called at: Twilio
    signs the full URL, and so does a Vapi HMAC payload with `{url}`.
    """

    def __init__(self, settings: Settings, secrets: Mapping[str, str | None], public_url: str) -> None:
        self._settings = settings
        self._secrets = dict(secrets)
        self._public_url = public_url.rstrip("/")

    def _spec(self, provider: str) -> registry.ProviderSpec | None:
        try:
            spec = registry.spec(provider)
        except registry.UnknownProvider:
            return None
        return spec if spec.sign is not None and spec.signing_secret else None

    def needs(self, provider: str) -> bool:
        spec = self._spec(provider)
        return spec is not None and spec.needs_signature(self._settings)

    def missing(self, provider: str) -> str | None:
        """Why `provider`'s deliveries will go unsigned, or None when they can be signed."""
        spec = self._spec(provider)
        if spec is None or spec.signing_secret is None or not self.needs(provider):
            return None
        if self._secrets.get(spec.signing_secret):
            return None
        secret = spec.secret(spec.signing_secret)
        return (
            f"no {secret.label} (set {secret.env} or `voice-console keys set {provider}`): "
            f"{provider} deliveries are sent unsigned and a receiver will refuse them"
        )

    def sign(self, delivery: StoredDelivery, body: bytes) -> tuple[str, dict[str, str]]:
        """The request target to post to (made true for the body, e.g. Twilio's body hash) and the auth headers."""
        path = delivery.path
        spec = self._spec(delivery.provider)
        if spec is None:
            return path, {}
        if spec.retarget is not None:
            path = spec.retarget(path, body)
        secret = self._secrets.get(spec.signing_secret or "")
        if not secret or spec.sign is None or not self.needs(delivery.provider):
            return path, {}
        request = registry.SignRequest(
            self._settings, secret, delivery.method, self._public_url + path, body, delivery.content_type
        )
        return path, spec.sign(request)


# --- re-posting -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryResult:
    delivery: StoredDelivery
    offset_s: float  # when it was due, in the original call's time
    status: int | None  # None: no answer
    elapsed_ms: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def replay_deliveries(
    deliveries: list[StoredDelivery],
    base_url: str,
    signer: DeliverySigner,
    clock: ReplayClock,
    client: httpx.AsyncClient,
    *,
    run_id: str | None = None,
) -> AsyncGenerator[DeliveryResult, None]:
    """Post each delivery to `base_url` + its original path at its original offset;
    results in the order they were sent.

    Each carries `X-Voice-Console-Replay: <run_id>` so a voice-console receiver
    records it as a replay, apart from the call it came from (outside the signature:
    it grants nothing, the receiver still checks the platform's signature)."""
    base_url = base_url.rstrip("/")
    run_id = run_id or new_run_id()
    origin = deliveries[0].received_at if deliveries else 0.0
    sent: list[asyncio.Task[DeliveryResult]] = []

    async def post(delivery: StoredDelivery, before: asyncio.Task[DeliveryResult] | None) -> DeliveryResult:
        if before is not None:
            await asyncio.wait({before}, timeout=ORDER_GRACE_S)
        body = delivery.body
        offset = delivery.received_at - origin
        try:
            path, headers = signer.sign(delivery, body)
        except Exception as exc:
            return DeliveryResult(delivery, offset, None, 0.0, f"cannot sign it: {exc}")
        headers["user-agent"] = f"voice-console-replay/{__version__}"
        headers[REPLAY_HEADER] = run_id
        if delivery.content_type:
            headers["content-type"] = delivery.content_type
        started = time.perf_counter()
        try:
            response = await client.request(delivery.method, base_url + path, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return DeliveryResult(
                delivery,
                offset,
                None,
                (time.perf_counter() - started) * 1000,
                f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
            )
        return DeliveryResult(
            delivery,
            offset,
            response.status_code,
            (time.perf_counter() - started) * 1000,
            None if response.is_success else _reason(response),
        )

    queue: asyncio.Queue[asyncio.Task[DeliveryResult] | None] = asyncio.Queue()

    async def schedule() -> None:
        before: asyncio.Task[DeliveryResult] | None = None
        try:
            async for delivery in paced(deliveries, lambda d: d.received_at, clock):
                before = asyncio.create_task(post(delivery, before))
                sent.append(before)
                queue.put_nowait(before)
        finally:
            queue.put_nowait(None)

    producer = asyncio.create_task(schedule())
    try:
        # Results in the order sent, each as soon as it is in (not when the next one is due).
        while (task := await queue.get()) is not None:
            yield await task
        await producer  # re-raises what stopped the schedule, if anything did
    finally:
        producer.cancel()
        for task in sent:
            task.cancel()


def _reason(response: httpx.Response) -> str:
    """The receiver's one-line reason for a refusal (its error bodies carry no secrets)."""
    try:
        data = response.json()
        message = data.get("error", {}).get("message") if isinstance(data, dict) else None
    except (ValueError, AttributeError):
        message = None
    text = message if isinstance(message, str) else response.text
    text = " ".join(text.split())
    return text[:200] + ("…" if len(text) > 200 else "")
