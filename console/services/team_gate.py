"""Held tool calls in team mode: every instance's in the team's Redis, each decided once team-wide.

The receiver holding a platform's request (the owner) keeps its call in `vc:{team}:held:<id>`
while it waits (expiring after its deadline). A decision from any console, any receiver's control
API or `decide --team` is recorded by one server-side script, first writer wins: the script sets
`vc:{team}:decision:<id>` only if nobody has, queues it on the owner's inbox
(`vc:{team}:inbox:<owner>`) and announces it on the team stream. The owner takes it from its
inbox, applies it to its gate and answers the platform before the deadline. A second decision
is told who won and what they decided.

While Redis is unreachable the owner gates alone: its local operators still decide (the
control API falls back to the local gate), nobody else can.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis

from console.config import TeamSettings
from console.core.gate import (
    CallDecided,
    CallHeld,
    CallSettled,
    CallStalling,
    GateEvent,
    OperatorDecision,
    PendingCall,
    ToolGate,
)
from console.services.team import (
    LINK_ERRORS,
    Backoff,
    LinkState,
    TeamKeys,
    as_text,
    close_quietly,
    connect,
    link_problem,
    unless_a_worker_fails,
)

log = logging.getLogger(__name__)

# How long a decision is remembered after it was made (to tell a late second decision who won).
DECISION_KEPT_MS = 3_600_000
# A held call's key outlives its deadline by this much (its outcome follows on the stream).
HELD_GRACE_MS = 60_000
INBOX_BLOCK_S = 1

# KEYS: held, decision, inbox (the owner's), stream. ARGV: owner expected, decision JSON,
# decided-frame JSON, decision TTL ms, stream max length.
# Returns {"won", owner} | {"lost", the decision JSON} | {"unknown", ""} | {"moved", owner now}.
DECIDE_SCRIPT = """
local held = redis.call('GET', KEYS[1])
if not held then
  local prior = redis.call('GET', KEYS[2])
  if prior then return {'lost', prior} end
  return {'unknown', ''}
end
local owner = cjson.decode(held)['instance']
if owner ~= ARGV[1] then return {'moved', owner} end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[4]) then
  return {'lost', redis.call('GET', KEYS[2])}
end
redis.call('RPUSH', KEYS[3], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'i', owner, 'n', '', 'g', ARGV[3])
return {'won', owner}
"""


# A receiver starts holding a call. KEYS: held. ARGV: held JSON (this instance), TTL ms, this instance,
# the heartbeat keys' prefix. The keys it reads beyond KEYS share the team's hash tag (one slot).
# Returns {"owned", ""} | {"taken", the owner whose heartbeat stopped} | {"joined", the live owner}.
CLAIM_SCRIPT = """
local held = redis.call('GET', KEYS[1])
if held then
  local owner = cjson.decode(held)['instance']
  if owner ~= ARGV[3] then
    if redis.call('EXISTS', ARGV[4] .. owner) == 1 then return {'joined', owner} end
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
    return {'taken', owner}
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'owned', ''}
"""

# A receiver's call is settled: its held key goes, unless another instance holds it now.
RELEASE_SCRIPT = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['instance'] == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""
# How often a receiver that joined another's held call (a platform's retry) looks for its decision.
JOINED_POLL_S = 0.25


@dataclass(frozen=True)
class TeamVerdict:
    """What recording a decision in the team came to."""

    outcome: Literal["won", "lost", "unknown"]
    owner: str | None = None  # won: the instance that answers the platform
    decided: dict[str, Any] | None = None  # lost: the decision that won (decision, operator, at)

    def told(self, tool_call_id: str) -> str:
        """What a losing operator is told."""
        decided = self.decided or {}
        who = decided.get("operator") or "another operator"
        return f"{tool_call_id} was already {decided.get('decision', 'decided')} by {who}"


def decision_json(tool_call_id: str, decision: OperatorDecision, via: str) -> str:
    return json.dumps(
        {
            "tool_call_id": tool_call_id,
            **asdict(decision),
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "via": via,
        },
        ensure_ascii=False,
        default=str,
    )


def decision_from_json(text: str | bytes) -> tuple[str, OperatorDecision]:
    data = json.loads(text)
    return data["tool_call_id"], OperatorDecision(
        decision=data["decision"],
        arguments=data.get("arguments"),
        result=data.get("result"),
        reason=data.get("reason"),
        operator=data.get("operator"),
    )


async def record_decision(
    client: aioredis.Redis, settings: TeamSettings, tool_call_id: str, decision: OperatorDecision, via: str
) -> TeamVerdict:
    """Record `decision` for the held call, first writer wins (one script, atomic)."""
    keys = TeamKeys(settings.name)
    text = decision_json(tool_call_id, decision, via)
    for _ in range(3):  # "moved": the call changed owner between the read and the script
        held_text = await client.get(keys.held(tool_call_id))
        if held_text is None:
            prior = await client.get(keys.decision(tool_call_id))
            if prior is None:
                return TeamVerdict("unknown")
            return TeamVerdict("lost", decided=json.loads(prior))
        held = json.loads(held_text)
        owner = held["instance"]
        frame = json.dumps(
            {"what": "decided", "call": held["call"], "decision": json.loads(text)}, ensure_ascii=False, default=str
        )
        outcome, detail = await client.eval(
            DECIDE_SCRIPT,
            4,
            keys.held(tool_call_id),
            keys.decision(tool_call_id),
            keys.inbox(owner),
            keys.events,
            owner,
            text,
            frame,
            DECISION_KEPT_MS,
            settings.stream_max_len,
        )
        outcome = as_text(outcome)
        if outcome == "won":
            return TeamVerdict("won", owner=owner)
        if outcome == "lost":
            return TeamVerdict("lost", decided=json.loads(detail))
        if outcome == "unknown":
            return TeamVerdict("unknown")
    return TeamVerdict("unknown")


class TeamGateLink:
    """A receiver's gate in the team: its held calls in Redis, decisions from anywhere applied here."""

    def __init__(
        self,
        settings: TeamSettings,
        instance: str,
        gate: ToolGate,
        *,
        note: Callable[[str], None] = lambda _: None,
        client_factory: Callable[[TeamSettings], aioredis.Redis] = connect,
    ) -> None:
        self.settings = settings
        self.instance = instance
        self.keys = TeamKeys(settings.name)
        self._gate = gate
        self._note = note
        self._connect = client_factory
        self._changes: asyncio.Queue[GateEvent] = asyncio.Queue()
        self._client: aioredis.Redis | None = None
        self.link = LinkState()
        self.applied = 0  # decisions from the team applied to this gate
        # Calls this receiver holds too because another holds them (a platform retried here): id -> owner.
        self.joined: dict[str, str] = {}
        gate.subscribe(self._changes.put_nowait)  # the gate's events are masked (`present`)

    async def decide(self, tool_call_id: str, decision: OperatorDecision) -> TeamVerdict:
        """A decision made here (the control API): recorded team-wide first. Raises LINK_ERRORS
        when Redis cannot be asked (the caller decides locally then)."""
        client = self._client
        if client is None or not self.link.up:
            raise ConnectionError("the team link is down")
        return await record_decision(client, self.settings, tool_call_id, decision, self.instance)

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            client, inbox_client = self._connect(self.settings), self._connect(self.settings)
            try:
                await client.ping()
                # What is held now: a link that comes back republishes it.
                for call in self._gate.pending():
                    self._changes.put_nowait(CallHeld(call))
                self._client = client
                self.link = LinkState(up=True)
                backoff.reset()
                inbox = asyncio.create_task(self._inbox(inbox_client), name="team-inbox")
                joined = asyncio.create_task(self._watch_joined(client), name="team-joined")
                try:
                    await self._publish_changes(client, inbox, joined)
                finally:
                    inbox.cancel()
                    joined.cancel()
            except LINK_ERRORS as exc:
                since = self.link.down_since or datetime.now(UTC)
                self.link = LinkState(up=False, down_since=since, problem=link_problem(self.settings, exc))
            finally:
                self._client = None
                await close_quietly(client)
                await close_quietly(inbox_client)
            await backoff.sleep()

    async def _publish_changes(self, client: aioredis.Redis, *workers: asyncio.Task[None]) -> None:
        while True:
            change = await unless_a_worker_fails(self._changes.get(), workers)  # the inbox, the joined calls
            try:
                await self._publish(client, change)
            except LINK_ERRORS:
                self._changes.put_nowait(change)  # again once the link is back (order within a call kept)
                raise

    async def _publish(self, client: aioredis.Redis, change: GateEvent) -> None:
        keys = self.keys
        match change:
            case CallHeld(call):
                await self._claim(client, call)
                return
            case CallStalling(call):
                frame = {"what": "stalling", "call": call.to_dict()}
            case CallDecided(call, decision):
                # Decided here while the team could not be asked (or before the held call reached
                # Redis): claim it so no one else decides it (a decision already there stays).
                text = decision_json(call.tool_call_id, decision, self.instance)
                await client.set(keys.decision(call.tool_call_id), text, nx=True, px=DECISION_KEPT_MS)
                return
            case CallSettled(outcome):
                self.joined.pop(outcome.tool_call_id, None)
                frame = {"what": "settled", "outcome": asdict(outcome)}
                async with client.pipeline(transaction=True) as pipe:
                    pipe.eval(RELEASE_SCRIPT, 1, keys.held(outcome.tool_call_id), self.instance)
                    pipe.xadd(keys.events, self._entry(frame), maxlen=self.settings.stream_max_len, approximate=True)
                    await pipe.execute()
                return
        await client.xadd(keys.events, self._entry(frame), maxlen=self.settings.stream_max_len, approximate=True)

    async def _claim(self, client: aioredis.Redis, call: PendingCall) -> None:
        """Hold `call` in the team: as its owner; or, when another live instance holds it (the
        platform retried here), joined to it; or taken over from an owner whose heartbeat stopped."""
        keys = self.keys
        ttl = int(call.remaining_s() * 1000) + HELD_GRACE_MS
        held = json.dumps({"call": call.to_dict(), "instance": self.instance}, ensure_ascii=False, default=str)
        outcome, owner = await client.eval(
            CLAIM_SCRIPT, 1, keys.held(call.tool_call_id), held, ttl, self.instance, keys.instance("")
        )
        outcome, owner = as_text(outcome), as_text(owner)
        if outcome == "joined":
            # The owner answers the platform's first request and this one answers the retry:
            # both with the one decision, which this receiver looks for.
            self.joined[call.tool_call_id] = owner
            self._note(f"{call.tool_call_id} is held by {owner} too (the platform retried here): joined it")
            return
        if outcome == "taken":
            self._note(f"{call.tool_call_id}: took it over from {owner} (its heartbeat stopped)")
        frame = {"what": "held", "call": call.to_dict(), **({"taken_from": owner} if outcome == "taken" else {})}
        await client.xadd(keys.events, self._entry(frame), maxlen=self.settings.stream_max_len, approximate=True)
        # A decision made while no live instance held it (it went to a dead owner's inbox) applies now.
        if outcome == "taken" and (prior := await client.get(keys.decision(call.tool_call_id))) is not None:
            self._apply(prior)

    async def _watch_joined(self, client: aioredis.Redis) -> None:
        """For calls joined to another instance's: apply their decision once there is one; take a call
        over when its owner's heartbeat stops."""
        keys = self.keys
        while True:
            await asyncio.sleep(JOINED_POLL_S)
            for tool_call_id, owner in list(self.joined.items()):
                decided = await client.get(keys.decision(tool_call_id))
                if decided is not None:
                    self.joined.pop(tool_call_id, None)
                    self._apply(decided)
                elif not await client.exists(keys.instance(owner)) and (call := self._gate.get(tool_call_id)):
                    self.joined.pop(tool_call_id, None)
                    await self._claim(client, call)

    def _apply(self, text: str | bytes) -> None:
        """A decision recorded in the team, for a call this receiver holds: to its gate."""
        try:
            tool_call_id, decision = decision_from_json(text)
        except (ValueError, KeyError, TypeError):
            log.warning("a decision from the team could not be read; skipped")
            return
        try:
            applied = self._gate.resolve(tool_call_id, decision)
        except ValueError as exc:  # an invalid decision (e.g. an edit without arguments)
            self._note(f"a decision for {tool_call_id} from the team was refused: {exc}")
            return
        if applied:
            self.applied += 1
        else:
            self._note(f"a decision for {tool_call_id} from the team came after the call was settled")

    def _entry(self, frame: dict[str, Any]) -> dict[Any, Any]:
        return {"i": self.instance, "n": "", "g": json.dumps(frame, ensure_ascii=False, default=str)}

    async def _inbox(self, client: aioredis.Redis) -> None:
        """Decisions recorded for calls held here: applied to the gate as they come."""
        key = self.keys.inbox(self.instance)
        while True:
            item = await client.blpop([key], timeout=INBOX_BLOCK_S)
            if item is not None:
                self._apply(item[1])
