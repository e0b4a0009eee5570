"""Team mode on Redis: receivers publish what they recorded, consoles and `watch` read it.

A receiver commits every event to its own SQLite before the platform hears back, as always;
only then does the event go to the team: `TeamPublisher.recorded` queues it in memory and
returns at once, and a task of its own sends the queue to Redis. Redis is never on the
acknowledgement's path: while it is unreachable the queue (bounded) waits, the link says
since when, and the queue is published in order once Redis is back.

Keys, all under one Redis Cluster hash tag so a team's keys share a slot (`vc:{team}:…`):

    vc:{team}:events               a stream: an entry per published run of events,
                                   {"i": instance, "n": the first's history id, "e": a JSON array of
                                   events with consecutive ids}; or a held call's news {"i", "g"};
                                   or the webhook requests answered lately {"i", "d": a JSON array
                                   of TEAM_ROW_FIELDS arrays}, for the consoles' Events pane (not
                                   the requests themselves: they stay in the receiver's history)
    vc:{team}:instance:<name>      a receiver's heartbeat (JSON: url, host, pid, started), expires
                                   INSTANCE_TTL_S after its last beat
    vc:{team}:call:<call id>       a live call's summary and the instance that has it, refreshed while
                                   it changes, expiring CALL_TTL_S after (ENDED_CALL_TTL_S once ended)
    vc:{team}:held:<tool call id>  a held tool call (console.services.team_gate), and its decision

Events are the pipeline's masked ones (secrets, control and listen URLs masked, as the
history keeps them): nothing else of a call's reaches Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, RedisError

from console.config import TeamSettings, url_for_display
from console.core.calls import CallState
from console.core.events import Event, event_json
from console.services.pipeline import TEAM_ROW_FIELDS, DeliverySeen, TeamRow

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_S = 1.0
INSTANCE_TTL_S = 5.0
# Live calls' summaries go to Redis at most this often (a busy call changes with every event);
# a new status at once, anything else at most every CALL_REWRITE_S. They are for a console
# attaching mid-call and for what one missed: consoles follow calls from the stream's events.
CALLS_EVERY_S = 0.5
CALL_REWRITE_S = 5.0
CALL_TTL_S = 600
ENDED_CALL_TTL_S = 60
# Entries per round trip: big enough to catch up quickly after an outage, small enough
# that one pipeline does not hold the loop for long.
PUBLISH_BATCH = 500
# What is recorded within this long after a quiet moment goes in one round trip.
PUBLISH_LINGER_S = 0.02
CALLS_REMEMBERED = 5000
RECONNECT_FIRST_S = 0.1
RECONNECT_MAX_S = 5.0
CONNECT_TIMEOUT_S = 2.0
# A stalled Redis must not hold a publish forever: the link is dropped and tried again.
COMMAND_TIMEOUT_S = 5.0
# Deliveries waiting while Redis is away: a live view's, so only the latest are kept.
DELIVERIES_KEPT = 1000
# Events a reader remembers to drop a resent batch's: many batches' worth.
RECENT_KEPT = 20 * PUBLISH_BATCH
# Redis errors and the sockets' own (a reset connection surfaces as either).
LINK_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class Backoff:
    """The wait before a link tries again: RECONNECT_FIRST_S, doubled after each failure up to
    RECONNECT_MAX_S, and the first again once the link works (`reset`)."""

    def __init__(self) -> None:
        self.wait = RECONNECT_FIRST_S

    def reset(self) -> None:
        self.wait = RECONNECT_FIRST_S

    async def sleep(self) -> None:
        await asyncio.sleep(self.wait)
        self.wait = min(self.wait * 2, RECONNECT_MAX_S)


class TeamKeys:
    """The team's Redis keys (`vc:{name}:…`: the braces are a Cluster hash tag)."""

    def __init__(self, team: str) -> None:
        self.prefix = f"vc:{{{team}}}:"
        self.events = self.prefix + "events"

    def instance(self, name: str) -> str:
        return f"{self.prefix}instance:{name}"

    def call(self, call_id: str) -> str:
        return f"{self.prefix}call:{call_id}"

    def held(self, tool_call_id: str) -> str:  # console.services.team_gate
        return f"{self.prefix}held:{tool_call_id}"

    def decision(self, tool_call_id: str) -> str:
        return f"{self.prefix}decision:{tool_call_id}"

    def inbox(self, instance: str) -> str:
        return f"{self.prefix}inbox:{instance}"

    def control(self, instance: str) -> str:  # console.services.team_control
        return f"{self.prefix}control:{instance}"

    def reply(self, request_id: str) -> str:
        return f"{self.prefix}reply:{request_id}"

    def console(self, name: str) -> str:  # a console's presence (console.services.team_console)
        return f"{self.prefix}console:{name}"


async def unless_a_worker_fails(awaitable: Awaitable[T], workers: Iterable[asyncio.Task[None]]) -> T:
    """What `awaitable` gives, unless one of a link's side tasks ends first: then its error is
    raised (they end only when the link fails). A result already there is returned first."""
    waiting = asyncio.ensure_future(awaitable)
    await asyncio.wait({waiting, *workers}, return_when=asyncio.FIRST_COMPLETED)
    if waiting.done():
        return waiting.result()
    waiting.cancel()
    for worker in workers:
        if worker.done():
            worker.result()  # raises
    raise ConnectionError("a team link's task ended")


def default_instance(port: int) -> str:
    """This receiver's name in the team when none is configured: host:port."""
    return f"{socket.gethostname()}:{port}"


def connect(settings: TeamSettings) -> aioredis.Redis:
    """A client for the team's Redis; nothing is sent until it is used."""
    assert settings.redis_url is not None
    extra: dict[str, Any] = {"password": settings.password} if settings.password else {}
    return aioredis.Redis.from_url(
        settings.redis_url,
        **extra,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=COMMAND_TIMEOUT_S,
        # The link reconnects by itself, with its own backoff, and says so: no hidden retries.
        retry_on_timeout=False,
        retry=None,
    )


AUTH_HINTS = ("NOAUTH", "WRONGPASS", "AUTH", "HELLO must be called", "invalid username-password")


def link_problem(settings: TeamSettings, exc: BaseException) -> str:
    """Why the team's Redis cannot be used, for a person (the URL's password masked)."""
    where = url_for_display(settings.redis_url or "")
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, AuthenticationError) or any(hint in detail for hint in AUTH_HINTS):
        how = "the password it was given is wrong" if settings.password or "@" in where else "it needs a password"
        return (
            f"the team's Redis at {where} refuses this client: {how} (in the URL, `voice-console keys set team`, "
            "or VOICE_CONSOLE_TEAM_REDIS_PASSWORD)"
        )
    return f"the team's Redis at {where} is unreachable ({url_for_display(detail)})"


def runs(chunks: list[tuple[int | None, list[str]]]) -> list[tuple[int | None, str]]:
    """Recorded chunks as stream entries: events with consecutive history ids share one entry (a
    JSON array, the first id in "n"): one entry per delivery's or flush's events, not one per event."""
    entries: list[tuple[int | None, str]] = []
    first: int | None = None
    texts: list[str] = []
    for chunk_first, chunk in chunks:
        if texts and (chunk_first is None or first is None or chunk_first != first + len(texts)):
            entries.append((first, "[" + ",".join(texts) + "]"))
            texts = []
        if not texts:
            first = chunk_first
        texts.extend(chunk)
    if texts:
        entries.append((first, "[" + ",".join(texts) + "]"))
    return entries


# One round trip, one reply for a whole batch: redis-py's cost is per command sent and parsed,
# and that cost is on the receiver's loop. The keys share the team's hash tag (one Cluster slot).
PUBLISH_SCRIPT = """
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'i', ARGV[2], 'n', ARGV[i], 'e', ARGV[i + 1])
end
if ARGV[3] ~= '' then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'i', ARGV[2], 'd', ARGV[3])
end
return (#ARGV - 3) / 2
"""
CALLS_SCRIPT = """
for i, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[2 * i - 1], 'EX', ARGV[2 * i])
end
return #KEYS
"""


def delivery_from_row(row: list[Any], instance: str) -> DeliverySeen:
    """A delivery as a receiver published it (`TeamRow`); raises (TypeError, ValueError) on anything else."""
    fields = dict(zip(TEAM_ROW_FIELDS, row, strict=True))
    return DeliverySeen(
        at=datetime.fromtimestamp(float(fields["at"]), UTC),
        provider=str(fields["provider"]),
        route=str(fields["route"]),
        method="POST",
        path="",
        message_type=fields["message_type"],
        call_id=fields["call_id"],
        verdict=str(fields["verdict"]),
        reason=fields["reason"],
        auth_scheme=None,
        status=int(fields["status"]),
        elapsed_ms=float(fields["elapsed_ms"]),
        duplicate=bool(fields["duplicate"]),
        instance=instance,
    )


@dataclass
class LinkState:
    """How a team link is doing, for the console's title and `serve`'s notes."""

    up: bool = False
    down_since: datetime | None = None
    problem: str | None = None


class TeamPublisher:
    """A receiver's side of the team: recorded events to the team stream, in order.

    `recorded(events, first_id)` is the pipeline's sink (called after the commit); `run()` is
    the task that publishes. `note` hears when the link goes down and comes back.
    """

    def __init__(
        self,
        settings: TeamSettings,
        instance: str,
        info: dict[str, Any],
        *,
        note: Callable[[str], None] = lambda _: None,
        client_factory: Callable[[TeamSettings], aioredis.Redis] = connect,
        call_state: Callable[[str], CallState | None] = lambda _: None,
    ) -> None:
        self.settings = settings
        self.instance = instance
        self.keys = TeamKeys(settings.name)
        self._call_state = call_state
        self._changed_calls: set[str] = set()
        # call id -> (what a console shows of it, when its key was last written): a call whose
        # shown state is the same is not written again until its key needs its TTL renewed.
        self._calls_written: OrderedDict[str, tuple[tuple[Any, ...], float]] = OrderedDict()
        self._info = {**info, "instance": instance, "host": socket.gethostname(), "pid": os.getpid()}
        self._note = note
        self._connect = client_factory
        # What each `recorded` call was given, as (first history id, the events' JSON texts):
        # one append per delivery, not per event.
        self._queue: deque[tuple[int | None, list[str]]] = deque()
        self._queued = 0  # events in the queue
        self._deliveries: deque[TeamRow] = deque(maxlen=DELIVERIES_KEPT)
        self._wake = asyncio.Event()
        self.empty = asyncio.Event()  # set while nothing waits to be published
        self.empty.set()
        self.link = LinkState()
        self.published = 0
        # Events that did not fit the backlog while Redis was away (the oldest go first). They
        # are in this receiver's history; the team's view lacks them, and says how many.
        self.dropped = 0

    @property
    def backlog(self) -> int:
        return self._queued

    def recorded(self, events: list[Event], first_id: int | None) -> None:
        """The pipeline's sink, after the commit: queue and return (never waits for Redis)."""
        self._queue.append((first_id, [event_json(event) for event in events]))
        self._queued += len(events)
        self._changed_calls.update(event.call_id for event in events if event.call_id)
        if self._queued > self.settings.backlog_max:
            self._drop_oldest(self._queued - self.settings.backlog_max)
        self.empty.clear()
        self._wake.set()

    def delivered(self, row: TeamRow) -> None:
        """The pipeline's sink for each request answered (a refusal's reason masked already): for
        the consoles' Events pane, in the next batch; while Redis is away only the latest are kept."""
        self._deliveries.append(row)
        self.empty.clear()
        self._wake.set()

    def _drop_oldest(self, count: int) -> None:
        queue = self._queue
        self.dropped += count
        self._queued -= count
        while count:
            first_id, texts = queue[0]
            if len(texts) > count:  # the rest of this chunk stays, its first id moved on
                queue[0] = (None if first_id is None else first_id + count, texts[count:])
                return
            queue.popleft()
            count -= len(texts)

    async def run(self) -> None:
        """Publish until cancelled; reconnect with backoff whenever the link fails."""
        backoff = Backoff()
        while True:
            client = self._connect(self.settings)
            try:
                await client.ping()
                self._up()
                backoff.reset()
                beats = asyncio.create_task(self._beat(client), name="team-heartbeat")
                calls = asyncio.create_task(self._calls(client), name="team-calls")
                try:
                    await self._publish(client, beats, calls)
                finally:
                    beats.cancel()
                    calls.cancel()
            except LINK_ERRORS as exc:
                self._down(exc)
            finally:
                await close_quietly(client)
            await backoff.sleep()

    async def _publish(self, client: aioredis.Redis, *workers: asyncio.Task[None]) -> None:
        queue = self._queue
        publish = client.register_script(PUBLISH_SCRIPT)
        head = [str(self.settings.stream_max_len), self.instance]
        deliveries = self._deliveries
        while True:
            if not queue and not deliveries:
                self.empty.set()
                self._wake.clear()
                await unless_a_worker_fails(self._wake.wait(), workers)  # the heartbeat, the calls
                # What else is recorded meanwhile goes in the same round trip: fewer, larger
                # entries cost the receiver's loop less (the consoles hear of it a little later).
                await asyncio.sleep(PUBLISH_LINGER_S)
                continue
            chunks, events = [], 0
            for chunk in queue:
                if events >= PUBLISH_BATCH:
                    break
                chunks.append(chunk)
                events += len(chunk[1])
            answered = list(deliveries)
            deliveries.clear()
            args = [*head, json.dumps(answered, ensure_ascii=False, separators=(",", ":")) if answered else ""]
            for first_id, texts in runs(chunks):
                args += ("" if first_id is None else str(first_id), texts)
            try:
                await publish(keys=[self.keys.events], args=args, client=client)
            except LINK_ERRORS:  # sent again with what came meanwhile (the latest kept)
                room = DELIVERIES_KEPT - len(deliveries)
                deliveries.extendleft(reversed(answered[max(0, len(answered) - room) :]))
                raise
            # Taken off only once Redis has them: a failure mid-batch sends the batch again
            # (readers drop what they saw, by instance and history id). The backlog may have
            # dropped its oldest meanwhile: only what is still at the front is taken off.
            for chunk in chunks:
                if queue and queue[0] is chunk:
                    queue.popleft()
                    self._queued -= len(chunk[1])
            self.published += events

    async def _calls(self, client: aioredis.Redis) -> None:
        """The summaries of the calls that changed, so a console attaching mid-call sees them at once."""
        write_calls = client.register_script(CALLS_SCRIPT)
        while True:
            await asyncio.sleep(CALLS_EVERY_S)
            if not self._changed_calls:
                continue
            changed, self._changed_calls = self._changed_calls, set()
            now = time.monotonic()
            written = self._calls_written
            writes: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
            for call_id in changed:
                state = self._call_state(call_id)
                if state is None:
                    continue
                shown = (
                    state.status,
                    tuple(sorted(state.speaking)),
                    state.barge_ins,
                    state.last_turn_latency_ms,
                    state.ended_reason,
                    state.control_url is not None,
                )
                before = written.get(call_id)
                if before is not None and before[0][0] == shown[0]:
                    age = now - before[1]
                    if before[0] == shown and age < CALL_TTL_S / 4:
                        continue
                    if age < CALL_REWRITE_S:  # not yet: kept for a later pass
                        self._changed_calls.add(call_id)
                        continue
                writes.append((call_id, shown, state.summary()))
            if not writes:
                continue
            keys, args = [], []
            for call_id, _, summary in writes:
                keys.append(self.keys.call(call_id))
                args.append(json.dumps({"instance": self.instance, **summary}, ensure_ascii=False, default=str))
                args.append(str(ENDED_CALL_TTL_S if summary.get("status") == "ended" else CALL_TTL_S))
            try:
                await write_calls(keys=keys, args=args, client=client)
            except LINK_ERRORS:
                self._changed_calls |= changed  # again once the link is back
                raise
            for call_id, shown, _ in writes:
                written[call_id] = (shown, now)
                written.move_to_end(call_id)
            while len(written) > CALLS_REMEMBERED:
                written.popitem(last=False)

    async def _beat(self, client: aioredis.Redis) -> None:
        key = self.keys.instance(self.instance)
        while True:
            beat = {**self._info, "at": datetime.now(UTC).isoformat(timespec="milliseconds")}
            await client.set(key, json.dumps(beat), px=int(INSTANCE_TTL_S * 1000))
            await asyncio.sleep(HEARTBEAT_S)

    def _up(self) -> None:
        was_down = self.link.down_since
        self.link = LinkState(up=True)
        if was_down is not None:
            self._note(
                f"team link back (down since {was_down.astimezone():%H:%M:%S}); "
                f"publishing {self._queued} events that waited"
            )

    def _down(self, exc: BaseException) -> None:
        problem = link_problem(self.settings, exc)
        if self.link.up or self.link.down_since is None:
            self._note(f"team link down: {problem}; receiving goes on, events wait to be published")
        self.link = LinkState(up=False, down_since=self.link.down_since or datetime.now(UTC), problem=problem)


@dataclass(frozen=True)
class TeamEntry:
    """One entry of the team stream: an event (which instance recorded it, under which of its
    history ids) or, with `gate` set, a held tool call's news (held, stalling, decided, settled)."""

    stream_id: str
    instance: str
    history_id: int | None
    event: dict[str, Any]
    gate: str | None = None
    deliveries: list[DeliverySeen] | None = None  # a "d" entry: the requests an instance answered


class TeamReader:
    """Reads the team stream from a position on, across disconnects, without duplicates."""

    def __init__(
        self,
        settings: TeamSettings,
        *,
        since: str = "$",
        note: Callable[[str], None] = lambda _: None,
        client_factory: Callable[[TeamSettings], aioredis.Redis] = connect,
        block_ms: int = 1000,
    ) -> None:
        self.settings = settings
        self.keys = TeamKeys(settings.name)
        self.position = since  # the last stream id read ("$": only what comes from now on)
        self._note = note
        self._connect = client_factory
        self._block_ms = block_ms
        # (instance, history id) of the entries read lately: a batch published again after a
        # lost reply is read once. Bounded; ids only repeat within a batch's resend.
        self._recent: set[tuple[str, int]] = set()
        self._recent_order: deque[tuple[str, int]] = deque()
        self.link = LinkState()

    async def entries(self) -> AsyncIterator[TeamEntry]:
        backoff = Backoff()
        while True:
            client = self._connect(self.settings)
            try:
                await self._pin(client)
                if not self.link.up:
                    if self.link.down_since is not None:
                        self._note(f"team link back (down since {self.link.down_since.astimezone():%H:%M:%S})")
                    self.link = LinkState(up=True)
                backoff.reset()
                while True:
                    answer: Any = await client.xread(  # RESP2: [[stream, [(id, fields), …]]]
                        {self.keys.events: self.position}, count=1000, block=self._block_ms
                    )
                    for _stream, items in answer or []:
                        for stream_id, fields in items:
                            self.position = as_text(stream_id)
                            for entry in self._entries(self.position, fields):
                                yield entry
            except LINK_ERRORS as exc:
                problem = link_problem(self.settings, exc)
                if self.link.up or self.link.down_since is None:
                    self._note(f"team link down: {problem}")
                self.link = LinkState(up=False, down_since=self.link.down_since or datetime.now(UTC), problem=problem)
            finally:
                await close_quietly(client)
            await backoff.sleep()

    async def pin(self) -> None:
        """Resolve "$" (from now on) to the stream's last id now, so nothing after this moment is
        missed however late the reading starts. Raises LINK_ERRORS."""
        client = self._connect(self.settings)
        try:
            await self._pin(client)
        finally:
            await close_quietly(client)

    async def _pin(self, client: aioredis.Redis) -> None:
        if self.position != "$":
            await client.ping()
            return
        info = await client.xinfo_stream(self.keys.events) if await client.exists(self.keys.events) else {}
        last = info.get("last-generated-id") if info else None
        self.position = as_text(last) if last else "0-0"

    def _entries(self, stream_id: str, fields: dict[Any, Any]) -> list[TeamEntry]:
        values = {as_text(key): as_text(value) for key, value in fields.items()}
        instance = values.get("i", "")
        number = values.get("n") or None
        first_id = int(number) if number and number.isdigit() else None
        try:
            data = json.loads(values["g"] if "g" in values else values["d"] if "d" in values else values.get("e", ""))
        except ValueError:
            log.warning("team stream entry %s is not JSON; skipped", stream_id)
            return []
        if "d" in values:
            try:
                deliveries = [delivery_from_row(row, instance) for row in data]
            except (TypeError, ValueError, KeyError):
                log.warning("team stream entry %s: deliveries not understood; skipped", stream_id)
                return []
            return [TeamEntry(stream_id, instance, None, {}, deliveries=deliveries)]
        if "g" in values:
            if not isinstance(data, dict):
                return []
            return [TeamEntry(stream_id, instance, None, data, gate=str(data.pop("what", "")))]
        events = data if isinstance(data, list) else [data]
        entries = []
        for offset, event in enumerate(events):
            history_id = None if first_id is None else first_id + offset
            if not isinstance(event, dict) or self._seen(instance, history_id):
                continue
            entries.append(TeamEntry(stream_id, instance, history_id, event))
        return entries

    def _seen(self, instance: str, history_id: int | None) -> bool:
        """Whether this event was read already (a batch published again after a lost reply)."""
        if history_id is None:
            return False
        key = (instance, history_id)
        if key in self._recent:
            return True
        self._recent.add(key)
        self._recent_order.append(key)
        if len(self._recent_order) > RECENT_KEPT:
            self._recent.discard(self._recent_order.popleft())
        return False


async def live_calls(settings: TeamSettings, client: aioredis.Redis | None = None) -> list[dict[str, Any]]:
    """Every instance's calls as Redis keeps them now (each with its `instance`), oldest first."""
    own = client is None
    client = client or connect(settings)
    try:
        values = await values_matching(client, TeamKeys(settings.name).call("*"))
    finally:
        if own:
            await close_quietly(client)
    calls = [json.loads(value) for value in values]
    return sorted(calls, key=lambda call: call.get("first_at") or "")


async def values_matching(client: aioredis.Redis, pattern: str) -> list[bytes | str]:
    """The values of the keys matching `pattern` now: one SCAN, then one MGET (keys that expired
    in between are left out)."""
    found = [key async for key in client.scan_iter(match=pattern, count=500)]
    return [value for value in (await client.mget(found) if found else []) if value is not None]


def as_text(value: Any) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def close_quietly(client: aioredis.Redis) -> None:
    """Close a client whose link may be gone already (closing it then raises)."""
    try:
        await client.aclose()
    except LINK_ERRORS:
        pass
