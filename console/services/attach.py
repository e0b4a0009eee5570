"""A console attached to the `serve` running on this machine (`console.services.hub` is the other end).

The receiver keeps receiving when the console closes: the console only watches and decides.
`AttachedReceiver` opens the hub's stream with the control token from the serve's state file,
mirrors what the receiver knows (its calls, its held tool calls), and hands the console what
arrives: events, gate events, deliveries. It reads the history from the same SQLite file,
read-only. Decisions and call control go through the control API, named after the operator.

When the stream drops (the receiver restarted, or this console fell behind) it reconnects to
the `serve` on the same port — re-reading its state file, for a restarted one has a new token —
and fills what it missed from the history: every event has a history id, and the hub says up
to which id the history holds what the stream did not send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from console.core.calls import CallState
from console.core.events import Event, event_from_dict, utc_now
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
from console.providers.base import PlatformError
from console.services.hub import STREAM_PATH
from console.services.live import LiveCalls, Target
from console.services.pipeline import DeliverySeen
from console.services.serve_state import ServeState, pid_alive, read_state, state_file
from console.store.db import Store

log = logging.getLogger(__name__)

RECONNECT_EVERY_S = 0.5
FILL_LIMIT = 100_000  # events filled from the history after one gap, at most (the rest: history browser)
LIVE_CALL_EVENTS = 5_000  # per live call, read from the history when the console attaches
SEEN_AHEAD = 10_000  # ids seen past a missing one before the missing one is given up
LEVELS_KEPT = 600  # per role and call: a minute of 100 ms buckets, as the tap keeps them
MAX_LEVEL_CALLS = 200


class AttachFailed(Exception):
    """The console could not attach; the message says why, for the operator."""


@dataclass
class Consumers:
    """Where an attached console's news goes (the TUI's feed)."""

    events: Callable[[list[Event]], None]
    gate: Callable[[GateEvent], None]
    delivery: Callable[[DeliverySeen], None]
    note: Callable[[str], None]


class MirrorTracker:
    """The receiver's calls as its hub describes them (`CallState.summary`): the most recently
    changed `max_calls`, as the receiver's own tracker keeps them (a long run must not grow it)."""

    def __init__(self, max_calls: int = 2000) -> None:
        self._calls: OrderedDict[str, CallState] = OrderedDict()
        self._max_calls = max_calls

    def get(self, call_id: str) -> CallState | None:
        return self._calls.get(call_id)

    def calls(self) -> list[CallState]:
        return list(self._calls.values())

    def note_control_url(self, call_id: str, url: str) -> None:
        """The receiver learns control URLs itself (the dial answer goes through it too)."""

    def update(self, summaries: list[dict[str, Any]], *, replace_all: bool = False) -> set[str]:
        """Take these summaries; the ids of the calls whose socket runs through a tap."""
        if replace_all:
            self._calls.clear()
        tapped: set[str] = set()
        for summary in summaries:
            state = CallState.from_summary(summary)
            self._calls[state.call_id] = state
            self._calls.move_to_end(state.call_id)
            if summary.get("tapped"):
                tapped.add(state.call_id)
        while len(self._calls) > self._max_calls:
            self._calls.popitem(last=False)
        return tapped


class TappedCalls:
    """Which calls run through the receiver's taps (their sockets stay with the receiver), and the
    audio levels the receiver sends of them (for the timeline)."""

    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.levels: dict[str, dict[str, deque[tuple[datetime, float]]]] = {}

    def __contains__(self, call_id: str) -> bool:
        return call_id in self.ids

    def get(self, call_id: str) -> Any:
        """What the console's timeline reads of a tapped call (its `session.levels`), else None."""
        levels = self.levels.get(call_id)
        return SimpleNamespace(session=SimpleNamespace(levels=levels)) if levels is not None else None

    def take_levels(self, call_id: str, since: float, levels: dict[str, list[list[float]]]) -> None:
        """The receiver's recent levels replace what was kept from `since` on."""
        kept = self.levels.setdefault(call_id, {})
        cutoff = datetime.fromtimestamp(since, UTC)
        for role, buckets in levels.items():
            lane = kept.setdefault(role, deque(maxlen=LEVELS_KEPT))
            while lane and lane[-1][0] >= cutoff:
                lane.pop()
            lane.extend((datetime.fromtimestamp(at, UTC), rms) for at, rms in buckets)
        if len(self.levels) > MAX_LEVEL_CALLS:
            del self.levels[next(iter(self.levels))]


class MirroredGate:
    """Held tool calls that a receiver elsewhere holds, as a console sees them; decided elsewhere.

    `resolve` answers at once, as the receiver's own gate does: the call leaves this console's
    pending list and `_send` delivers the decision in the background (the operator is told if it
    came second); the outcome arrives with the receiver's news."""

    def __init__(self, operator: str, note: Callable[[str], None]) -> None:
        self._operator = operator
        self._note = note
        self._pending: dict[str, PendingCall] = {}
        self._sending: set[asyncio.Task[None]] = set()

    def pending(self) -> list[PendingCall]:
        return list(self._pending.values())

    def get(self, tool_call_id: str) -> PendingCall | None:
        return self._pending.get(tool_call_id)

    def resolve(self, tool_call_id: str, decision: OperatorDecision) -> bool:
        call = self._pending.pop(tool_call_id, None)
        if call is None:
            return False
        task = asyncio.get_running_loop().create_task(self._send(call, replace(decision, operator=self._operator)))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return True

    async def _send(self, call: PendingCall, decision: OperatorDecision) -> None:
        raise NotImplementedError

    # the receiver's side

    def replace_all(self, pending: list[dict[str, Any]]) -> None:
        self._pending = {call.tool_call_id: call for call in map(PendingCall.from_dict, pending)}

    def held(self, call: PendingCall) -> None:
        self._pending[call.tool_call_id] = call

    def settled(self, tool_call_id: str) -> None:
        self._pending.pop(tool_call_id, None)

    async def close(self) -> None:
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=5)


class RemoteGate(MirroredGate):
    """The held tool calls of the `serve` this console is attached to, decided through its control
    API; if another console decided first, the receiver says who."""

    def __init__(self, client: httpx.AsyncClient, operator: str, note: Callable[[str], None]) -> None:
        super().__init__(operator, note)
        self._client = client

    async def _send(self, call: PendingCall, decision: OperatorDecision) -> None:
        body: dict[str, Any] = {
            "tool_call_id": call.tool_call_id,
            "decision": {"approved": "approve", "edited": "edit", "overridden": "override", "rejected": "reject"}[
                decision.decision
            ],
            "operator": decision.operator,
        }
        if decision.arguments is not None:
            body["arguments"] = decision.arguments
        if decision.result is not None:
            body["result"] = decision.result
        if decision.reason is not None:
            body["reason"] = decision.reason
        try:
            response = await self._client.post("/control/decide", json=body, timeout=5)
        except httpx.HTTPError as exc:
            self._note(f"your decision on {call.name} did not reach the receiver ({type(exc).__name__})")
            return
        if response.status_code != 200:
            self._note(f"your decision on {call.name} was refused: {_message(response)}")


class RequestedControl:
    """A live call steered by asking the receiver that has it (`LiveControl`): each action is one
    request, `_call(action, **extra)`, in the control API's terms (`console.services.control.steer`)."""

    async def __aenter__(self) -> RequestedControl:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def _call(self, action: str, **extra: Any) -> Any:
        raise NotImplementedError

    async def say(self, content: str) -> Any:
        return await self._call("say", text=content)

    async def add_message(self, role: Any, content: str, *, trigger_response: bool = True) -> Any:
        return await self._call("context", text=content, respond=trigger_response)

    async def mute_assistant(self) -> Any:
        return await self._call("mute")

    async def unmute_assistant(self) -> Any:
        return await self._call("unmute")

    async def transfer(self, *, number: str) -> Any:
        return await self._call("transfer", number=number)

    async def end_call(self) -> Any:
        return await self._call("end")

    async def cut_off(self) -> Any:
        return await self._call("cut")


class RemoteControl(RequestedControl):
    """A live call steered through the receiver's control API."""

    def __init__(self, client: httpx.AsyncClient, call_id: str) -> None:
        self._client = client
        self._call_id = call_id

    async def _call(self, action: str, **extra: Any) -> Any:
        try:
            response = await self._client.post(
                "/control/call", json={"call_id": self._call_id, "action": action, **extra}, timeout=15
            )
        except httpx.HTTPError as exc:
            raise PlatformError(f"the receiver could not be reached ({type(exc).__name__})") from None
        if response.status_code != 200:
            raise PlatformError(_message(response))
        return response.json()


@dataclass
class RemoteSteering(LiveCalls):
    """`LiveCalls` for an attached console: the same checks on the mirrored calls, then the
    receiver's control API does it (it holds the keys, control URLs and taps)."""

    client: httpx.AsyncClient | None = None

    async def open(self, target: Target) -> RemoteControl:
        assert self.client is not None
        return RemoteControl(self.client, target.call_id)


class AttachedReceiver:
    """What a console attached to a running `serve` sees of it (the TUI's `ConsoleContext.receiver`)."""

    def __init__(self, state: ServeState, operator: str, consumers: Consumers) -> None:
        self.state = state
        self.store: Store = None  # type: ignore[assignment]  # opened by `attach` once the receiver says where
        self.operator = operator
        self._consumers = consumers
        self.http_client = httpx.AsyncClient(base_url=state.url, headers=_auth(state.token))
        self.tracker = MirrorTracker()
        self.taps = TappedCalls()
        self.tap_tokens: dict[str, str | None] = {}
        self.gate: RemoteGate | None = None
        self.consoles: list[str] = []
        self.link_up = False
        self.down_since: datetime | None = None
        self.receiver: dict[str, Any] = {}
        # History ids seen: all up to `_seen_upto`, and these above it (the stream's order may differ).
        self._seen_upto = 0
        self._seen_above: set[int] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.last_fill = 0  # events read from the history after the last reconnect

    @property
    def url(self) -> str:
        return self.state.url

    @classmethod
    async def attach(
        cls, state: ServeState, operator: str, consumers: Consumers, *, db_path: Any = None
    ) -> AttachedReceiver:
        """Open the stream, then the history the receiver writes (its own `db`, unless `db_path`
        says otherwise), read-only; AttachFailed says why not."""
        attached = cls(state, operator, consumers)
        try:
            ws = await attached._connect(state)
            hello = await attached._read_hello(ws)
            path = db_path or attached.receiver.get("db")
            if not path:
                raise AttachFailed("the receiver did not say where its history is")
            try:
                attached.store = await Store.open(path, read_only=True)
            except Exception as exc:
                await ws.close()
                raise AttachFailed(f"cannot read the receiver's history at {path}: {exc}") from None
            await attached._take_hello(hello, first=True)
        except BaseException:
            await attached._close_clients()
            raise
        attached._task = asyncio.create_task(attached._run(ws), name="attached-receiver")
        return attached

    async def _connect(self, state: ServeState) -> ClientConnection:
        url = state.url.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + STREAM_PATH
        try:
            return await connect(
                url + "?" + httpx.QueryParams({"operator": self.operator}).__str__(),
                additional_headers=_auth(state.token),
                open_timeout=5,
                max_size=None,
                max_queue=None,  # the hub bounds what it queues for this console; reading never waits
            )
        except InvalidStatus as exc:
            raise AttachFailed(
                f"the receiver at {state.url} refused this console ({exc.response.status_code})"
            ) from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise AttachFailed(f"the receiver at {state.url} could not be reached ({type(exc).__name__})") from None

    async def _read_hello(self, ws: ClientConnection) -> dict[str, Any]:
        try:
            hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        except (TimeoutError, ConnectionClosed, ValueError) as exc:
            await ws.close()
            raise AttachFailed(f"the receiver did not say hello ({type(exc).__name__})") from None
        if not isinstance(hello, dict) or hello.get("type") != "hello":
            await ws.close()
            raise AttachFailed("the receiver answered with something other than its hello")
        self.receiver = dict(hello.get("receiver") or {})
        return hello

    async def _take_hello(self, hello: dict[str, Any], *, first: bool) -> None:
        """What the receiver has now: its calls, its held tool calls; what the history holds that
        this console has not seen (the live calls' story at first, the gap after a reconnect)."""
        self.consoles = list(hello.get("consoles") or [])
        self.taps.ids = self.tracker.update(list(hello.get("calls") or []), replace_all=True)
        if hello.get("gate") and self.gate is None:
            self.gate = RemoteGate(self.http_client, self.operator, self._consumers.note)
        if self.gate is not None:
            self.gate.replace_all(list(hello.get("pending") or []))
        history_id = int(hello.get("history_id") or 0)
        if first:
            await self._load_live_calls(history_id)
        else:
            await self._fill_gap(history_id)

    async def _load_live_calls(self, history_id: int) -> None:
        """What the calls in progress said before this console attached, from the history."""
        self._seen_upto = history_id
        live = [state.call_id for state in self.tracker.calls() if state.status != "ended"]
        events: list[Event] = []
        for call_id in live:
            rows = await self.store.fetchall(
                "SELECT data FROM (SELECT id, data FROM events WHERE call_id = ? AND id <= ? ORDER BY id DESC LIMIT ?)"
                " ORDER BY id",
                (call_id, history_id, LIVE_CALL_EVENTS),
            )
            events += _parse_rows(rows)
        if events:
            events.sort(key=lambda event: event.at)
            self._consumers.events(events)

    async def _fill_gap(self, history_id: int) -> int:
        """Events the history holds that the stream did not bring (ids above what was seen)."""
        rows = await self.store.fetchall(
            "SELECT id, data FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
            (self._seen_upto, history_id, FILL_LIMIT),
        )
        fresh = [row for row in rows if row["id"] not in self._seen_above]
        events = _parse_rows(fresh)
        self.last_fill = len(events)
        # Ids seen live above `history_id` stay seen: they will not come again.
        self._seen_upto = max(self._seen_upto, history_id)
        self._seen_above = {event_id for event_id in self._seen_above if event_id > self._seen_upto}
        if events:
            self._consumers.events(events)
        return len(events)

    async def _run(self, ws: ClientConnection) -> None:
        self.link_up = True
        while not self._closing:
            try:
                await self._read(ws)
            except ConnectionClosed:  # the receiver went away without closing: reconnect all the same
                pass
            except Exception:  # a bug in a consumer must not end the link for good: start afresh
                log.exception("the attached console's stream failed")
                await ws.close()
            if self._closing:
                return
            self.link_up = False
            self.down_since = utc_now()
            code = ws.close_code
            why = "the receiver stopped" if code == 1001 else "the link dropped" if code != 4000 else "fell behind"
            self._consumers.note(
                f"receiver link down since {self.down_since.astimezone():%H:%M:%S} ({why}): reconnecting"
            )
            again = await self._reconnect()
            if again is None:
                return
            ws = again

    async def _reconnect(self) -> ClientConnection | None:
        port = self.state.port
        while not self._closing:
            await asyncio.sleep(RECONNECT_EVERY_S)
            state = read_state(state_file(port))
            if state is None or not pid_alive(state.pid):
                continue
            try:
                ws = await self._connect(state)
                if state.token != self.state.token:
                    self.state = state
                    self.http_client.headers.update(_auth(state.token))
                await self._take_hello(await self._read_hello(ws), first=False)
            except AttachFailed:
                continue
            down = (utc_now() - self.down_since).total_seconds() if self.down_since else 0.0
            self.link_up, self.down_since = True, None
            self._consumers.note(
                f"receiver link back after {down:.1f} s (pid {state.pid}): {self.last_fill} event(s) it got "
                "meanwhile filled in from the history"
            )
            return ws
        return None

    async def _read(self, ws: ClientConnection) -> None:
        consumers = self._consumers
        async for message in ws:
            frame = json.loads(message)
            kind = frame.get("type")
            if kind == "events":
                events = self._unseen(frame.get("first_id"), frame.get("events") or [])
                if events:
                    consumers.events(events)
            elif kind == "calls":
                self.taps.ids |= self.tracker.update(frame["calls"])
                for summary in frame["calls"]:
                    if not summary.get("tapped"):
                        self.taps.ids.discard(summary["call_id"])
            elif kind == "gate":
                consumers.gate(self._gate_event(frame))
            elif kind == "delivery":
                frame.pop("type")
                frame["at"] = datetime.fromisoformat(frame["at"])
                consumers.delivery(DeliverySeen(**frame))
            elif kind == "consoles":
                self.consoles = list(frame["consoles"])
            elif kind == "levels":
                self.taps.take_levels(frame["call_id"], frame["since"], frame["levels"])

    def _unseen(self, first_id: int | None, raw: list[dict[str, Any]]) -> list[Event]:
        if first_id is None:
            return [event_from_dict(data) for data in raw]
        events = []
        for offset, data in enumerate(raw):
            event_id = first_id + offset
            if event_id <= self._seen_upto or event_id in self._seen_above:
                continue
            self._seen_above.add(event_id)
            events.append(event_from_dict(data))
        above = self._seen_above
        if len(above) > SEEN_AHEAD:  # an id the receiver never sent (it skipped it): stop waiting for it
            self._seen_upto = min(above) - 1
        while self._seen_upto + 1 in above:
            self._seen_upto += 1
            above.discard(self._seen_upto)
        return events

    def _gate_event(self, frame: dict[str, Any]) -> GateEvent:
        gate = self.gate
        what = frame.get("what")
        if what == "settled":
            outcome = ToolOutcome(**frame["outcome"])
            if gate is not None:
                gate.settled(outcome.tool_call_id)
            return CallSettled(outcome)
        call = PendingCall.from_dict(frame["call"])
        if what == "decided":
            if gate is not None:
                gate.settled(call.tool_call_id)
            return CallDecided(call, OperatorDecision(**frame["decision"]))
        if gate is not None:
            gate.held(call)
        return CallHeld(call) if what == "held" else CallStalling(call)

    def steering(self, settings: Any, secrets: Any) -> RemoteSteering:
        return RemoteSteering(self.tracker, self.taps, settings, secrets, client=self.http_client)

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._close_clients()

    async def _close_clients(self) -> None:
        if self.gate is not None:
            await self.gate.close()
        await self.http_client.aclose()
        if self.store is not None:
            await self.store.close()


def _auth(token: str) -> Mapping[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}"


def _parse_rows(rows: list[Any]) -> list[Event]:
    events = []
    for row in rows:
        try:
            events.append(event_from_dict(json.loads(row["data"])))
        except ValueError:
            log.warning("an event in the history could not be read back; skipped")
    return events
