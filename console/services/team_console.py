"""A console on the team's Redis (`voice-console --team URL`): every receiver's calls, events and
held tool calls, decided once team-wide, and the operators present.

`TeamReceiver` is what the TUI's context holds as its receiver in team mode (as it holds an
`AttachedReceiver` for the `serve` on this machine): it reads the team stream (events, held calls'
news), the live calls' summaries and the held calls from Redis, and hands the console what
arrives. Its history is a local SQLite replica fed from the stream. A decision is recorded in
Redis first writer wins (`console.services.team_gate`); the receiver holding the call answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from console.config import TeamSettings, url_for_display
from console.core.calls import CallState, CallTracker
from console.core.events import Event, event_from_dict
from console.core.gate import (
    CallDecided,
    CallHeld,
    CallSettled,
    CallStalling,
    GateEvent,
    OperatorDecision,
    PendingCall,
)
from console.core.tools import ToolOutcome
from console.services.attach import AttachFailed, Consumers, MirroredGate, TappedCalls
from console.services.live import LiveCalls
from console.services.team import (
    LINK_ERRORS,
    TeamEntry,
    TeamKeys,
    TeamReader,
    as_text,
    close_quietly,
    connect,
    link_problem,
    live_calls,
    values_matching,
)
from console.services.team_gate import record_decision
from console.store.db import Store

log = logging.getLogger(__name__)

PRESENCE_S = 1.0
PRESENCE_TTL_S = 5.0
CALLS_POLL_S = 1.0
REPLICA_EVERY_S = 0.2


class TeamGateView(MirroredGate):
    """Every receiver's held tool calls as the team stream tells them, decided through Redis (first
    writer wins); `holders` says which receiver holds each."""

    def __init__(self, settings: TeamSettings, operator: str, note: Callable[[str], None]) -> None:
        super().__init__(operator, note)
        self._settings = settings
        self.holders: dict[str, str] = {}  # tool call id -> the instance holding it

    async def _send(self, call: PendingCall, decision: OperatorDecision) -> None:
        client = connect(self._settings)
        try:
            verdict = await record_decision(client, self._settings, call.tool_call_id, decision, via=self._operator)
        except LINK_ERRORS as exc:
            self._pending[call.tool_call_id] = call  # still waiting: decide again once the link is back
            self._note(f"your decision on {call.name} did not reach the team ({link_problem(self._settings, exc)})")
            return
        finally:
            await close_quietly(client)
        if verdict.outcome == "lost":
            self._note(verdict.told(call.name))
        elif verdict.outcome == "unknown":
            self._note(f"{call.name} is no longer held by any receiver (answered or timed out)")

    def hold(self, call: PendingCall, instance: str) -> None:
        self.held(call)
        self.holders[call.tool_call_id] = instance

    def settled(self, tool_call_id: str) -> None:
        super().settled(tool_call_id)
        self.holders.pop(tool_call_id, None)


class TeamTracker(CallTracker):
    """Every receiver's calls as this console hears of them: the team stream's events applied as
    a receiver's own tracker applies them (so the Live calls pane moves at the stream's pace),
    and the receivers' summaries in Redis for the calls already in progress when it came, or
    whose events it missed (a summary newer than what the events told wins)."""

    def update(self, summaries: list[dict[str, Any]], *, replace_all: bool = False) -> None:
        if replace_all:
            self._calls.clear()
        for summary in summaries:
            told = CallState.from_summary(summary)
            known = self._calls.get(told.call_id)
            if known is None:
                self._calls[told.call_id] = told
            elif told.last_at is not None and (known.last_at is None or told.last_at > known.last_at):
                for name in SUMMARY_FIELDS:
                    setattr(known, name, getattr(told, name))
            elif told.control_url is not None and known.control_url is None:
                known.control_url = told.control_url  # the receiver can steer it
        while len(self._calls) > self._max_calls:
            self._calls.popitem(last=False)


# What `CallState.summary` carries (the control URL only as "the receiver can steer it").
SUMMARY_FIELDS = (
    "status",
    "status_at",
    "ended_reason",
    "first_at",
    "last_at",
    "barge_ins",
    "speaking",
    "last_turn_latency_ms",
    "control_url",
)


class TeamReceiver:
    """What a console on the team sees (the TUI's `ConsoleContext.receiver` in team mode)."""

    team_console = True  # what the console's context asks (it does not import this module: redis-py)

    def __init__(self, settings: TeamSettings, operator: str, consumers: Consumers, store: Store) -> None:
        self.settings = settings
        self.operator = operator
        self.store = store  # the local replica of the team's events
        self._consumers = consumers
        self.tracker = TeamTracker()
        self.taps = TappedCalls()
        self.tap_tokens: dict[str, str | None] = {}
        self.gate = TeamGateView(settings, operator, consumers.note)
        self.http_client = None
        self.consoles: list[str] = [operator]
        self.link_up = True
        self.down_since: datetime | None = None
        self.instances: dict[str, str] = {}  # call id -> the receiver that has it
        self.receiver: dict[str, Any] = {"url": url_for_display(settings.redis_url or ""), "db": str(store.path)}
        self.last_fill = 0
        self.missed = 0  # events the team stream no longer had when this console read on
        self._last_ids: dict[str, int] = {}  # instance -> the last history id read from it
        self._replica: list[Event] = []
        self._keys = TeamKeys(settings.name)
        self._presence_key = self._keys.console(f"{operator}@{socket.gethostname()}")
        # Where this console was in the team stream when it last wrote its replica (kept beside it):
        # a console opened again reads on from there, and counts what the stream no longer has.
        self._position_file = store.path.with_name(store.path.stem + ".position.json")
        since = self._saved_position()
        self._reader = TeamReader(settings, since=since, note=self._link_note)
        self._replica_position = since
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"team {self.settings.name!r} on {url_for_display(self.settings.redis_url or '')}"

    @classmethod
    async def attach(cls, settings: TeamSettings, operator: str, consumers: Consumers, db_path: Path) -> TeamReceiver:
        """Read what the team has now (held calls, live calls), then follow its stream."""
        client = connect(settings)
        try:
            await client.ping()
        except LINK_ERRORS as exc:
            raise AttachFailed(link_problem(settings, exc)) from None
        finally:
            await close_quietly(client)
        store = await Store.open(db_path)
        team = cls(settings, operator, consumers, store)
        try:
            await team._reader.pin()  # first the position, then the state: nothing after it is missed
            await team._load_state()
        except LINK_ERRORS as exc:
            await store.close()
            raise AttachFailed(link_problem(settings, exc)) from None
        team._tasks = [
            asyncio.create_task(team._read(), name="team-read"),
            asyncio.create_task(team._presence(), name="team-presence"),
            asyncio.create_task(team._poll_calls(), name="team-calls"),
            asyncio.create_task(team._write_replica(), name="team-replica"),
        ]
        return team

    def _saved_position(self) -> str:
        """The stream id this console's replica was written up to ("$": none, start from now)."""
        try:
            saved = json.loads(self._position_file.read_text())
            position = str(saved["position"])
            self._last_ids = {str(k): int(v) for k, v in saved.get("last_ids", {}).items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return "$"
        return position if position != "$" else "$"

    def _save_position(self) -> None:
        if self._replica_position == "$":
            return
        data = json.dumps({"position": self._replica_position, "last_ids": self._last_ids})
        temporary = self._position_file.with_suffix(".tmp")
        try:
            temporary.write_text(data)
            temporary.replace(self._position_file)
        except OSError as exc:
            log.warning("the team position could not be kept (%s)", exc)

    async def _load_state(self) -> None:
        client = connect(self.settings)
        try:
            held = [json.loads(value) for value in await values_matching(client, self._keys.held("*"))]
        finally:
            await close_quietly(client)
        for item in sorted(held, key=lambda item: item["call"]["deadline_at"]):
            call = PendingCall.from_dict(item["call"])
            self.gate.hold(call, item["instance"])
            self._consumers.gate(CallHeld(call))
        await self._take_calls(await live_calls(self.settings), replace_all=True)

    async def _take_calls(self, calls: list[dict[str, Any]], *, replace_all: bool = False) -> None:
        for call in calls:
            self.instances[call["call_id"]] = call.pop("instance", "?")
        self.tracker.update(calls, replace_all=replace_all)

    def _link_note(self, line: str) -> None:
        if line.startswith("team link down"):
            self.link_up, self.down_since = False, self.down_since or datetime.now(UTC)
        elif line.startswith("team link back"):
            self.link_up, self.down_since = True, None
        self._consumers.note(line)

    async def _read(self) -> None:
        async for entry in self._reader.entries():
            if entry.deliveries is not None:
                for seen in entry.deliveries:
                    self._consumers.delivery(seen)
                continue
            if entry.gate is not None:
                gate_event = self._gate_event(entry)
                if gate_event is not None:
                    self._consumers.gate(gate_event)
                continue
            try:
                event = event_from_dict(entry.event)
            except ValueError:
                log.warning("an event of the team stream could not be read; skipped")
                continue
            self._note_gap(entry)
            if event.call_id:
                self.instances[event.call_id] = entry.instance
                self.tracker.process([event])  # the call's state only: the receiver derived its events
            self._replica.append(event)
            self._replica_position = entry.stream_id
            self._consumers.events([event])

    def _note_gap(self, entry: TeamEntry) -> None:
        """Events of an instance skipped over: the stream was trimmed past where this console was,
        or that receiver could not publish them. They are in its own history."""
        if entry.history_id is None:
            return
        last = self._last_ids.get(entry.instance)
        self._last_ids[entry.instance] = max(entry.history_id, last or 0)
        if last is not None and entry.history_id > last + 1:
            skipped = entry.history_id - last - 1
            self.missed += skipped
            self._consumers.note(
                f"missed {skipped} events of {entry.instance} (no longer in the team stream; they are in its history)"
            )

    def _gate_event(self, entry: TeamEntry) -> GateEvent | None:
        frame = entry.event
        try:
            if entry.gate in ("held", "stalling"):
                call = PendingCall.from_dict(frame["call"])
                if entry.gate == "held":
                    self.gate.hold(call, entry.instance)
                    return CallHeld(call)
                return CallStalling(call)
            if entry.gate == "decided":
                call = PendingCall.from_dict(frame["call"])
                data = frame["decision"]
                self.gate.settled(call.tool_call_id)
                decision = OperatorDecision(
                    decision=data["decision"],
                    arguments=data.get("arguments"),
                    result=data.get("result"),
                    reason=data.get("reason"),
                    operator=data.get("operator"),
                )
                return CallDecided(call, decision)
            if entry.gate == "settled":
                outcome = ToolOutcome(**frame["outcome"])
                self.gate.settled(outcome.tool_call_id)
                return CallSettled(outcome)
        except (KeyError, TypeError, ValueError):
            log.warning("a held call's news on the team stream could not be read; skipped")
        return None

    async def _presence(self) -> None:
        """This operator's heartbeat, and who else is present."""
        pattern = self._keys.console("*")
        while True:
            client = connect(self.settings)
            try:
                while True:
                    await client.set(self._presence_key, self.operator, px=int(PRESENCE_TTL_S * 1000))
                    names = await values_matching(client, pattern)
                    self.consoles = sorted({as_text(name) for name in names} | {self.operator})
                    await asyncio.sleep(PRESENCE_S)
            except LINK_ERRORS:
                pass  # the reader tells the link's state
            finally:
                await close_quietly(client)
            await asyncio.sleep(PRESENCE_S)

    async def _poll_calls(self) -> None:
        while True:
            await asyncio.sleep(CALLS_POLL_S)
            try:
                await self._take_calls(await live_calls(self.settings))
            except LINK_ERRORS:
                pass

    async def _write_replica(self) -> None:
        """The team's events into the local history (the history browser reads it), then the
        stream position they reach."""
        while True:
            await asyncio.sleep(REPLICA_EVERY_S)
            await self._flush_replica()

    async def _flush_replica(self) -> None:
        if self._replica:
            batch, self._replica = self._replica, []
            position = self._replica_position
            await self.store.record_events(batch, masked=True)
            self._save_position_at(position)

    def _save_position_at(self, position: str) -> None:
        current, self._replica_position = self._replica_position, position
        self._save_position()
        self._replica_position = current

    def steering(self, settings: Any, secrets: Any) -> LiveCalls:
        from console.services.team_control import TeamSteering

        return TeamSteering(
            self.tracker,
            self.taps,
            settings,
            secrets,
            team=self.settings,
            operator=self.operator,
            instances=self.instances,
        )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._flush_replica()
        await self.gate.close()
        client = connect(self.settings)
        try:
            await client.delete(self._presence_key)
        except LINK_ERRORS:
            pass
        finally:
            await close_quietly(client)
        await self.store.close()
