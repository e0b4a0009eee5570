"""Consoles attached to a running receiver: `GET /control/stream`, a loopback WebSocket.

`voice-console` finds the `serve` on this machine and attaches to it instead of receiving
itself. Each attached console opens this stream with the per-run control token
(`Authorization: Bearer …`) and names its operator (`?operator=alice@laptop`). It gets:

    {"type": "hello", "receiver": {...}, "history_id": N, "calls": [...], "pending": [...], "consoles": [...]}
    {"type": "events", "first_id": N, "events": [...]}     what the history just committed (ids N, N+1, …)
    {"type": "gate", "what": "held" | "stalling", "call": {...}}   a tool call waits / the platform stalls
    {"type": "gate", "what": "decided", "call": {...}, "decision": {...}}   an operator decided it (and who)
    {"type": "gate", "what": "settled", "outcome": {...}}          its outcome, once answered
    {"type": "delivery", ...}                               each webhook request and its answer
    {"type": "calls", "calls": [...]}                       calls whose summary changed (every 100 ms at most)
    {"type": "consoles", "consoles": [...]}                 who is attached
    {"type": "levels", "call_id", "since", "levels": {role: [[epoch s, rms], ...]}}   a tapped call's audio

Every event up to `history_id` is in the history already, every later one comes on the stream,
so a console fills what it missed (at attach, or after the receiver restarted) from the history
file it reads. Decisions and call control go the other way through the control API's HTTP routes.

A console never slows the receiver: each has a bounded queue of frames, and one that falls
that far behind is closed (4000) — it reconnects and fills the gap from the history.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
from dataclasses import asdict, fields, replace
from datetime import timedelta
from itertools import count, takewhile
from typing import Any
from urllib.parse import parse_qs, urlsplit

from console.core.calls import CallTracker
from console.core.events import Event, event_json, utc_now
from console.core.gate import CallDecided, CallHeld, CallSettled, CallStalling, GateEvent, ToolGate
from console.core.http_types import Request, Response, is_loopback
from console.receiver.http import Router
from console.receiver.relay import LiveTaps
from console.receiver.ws import WebSocket, WebSocketClosed
from console.redact import Redactor
from console.services.pipeline import DeliverySeen, WebhookPipeline

log = logging.getLogger(__name__)
_DELIVERY_FIELDS = tuple(field.name for field in fields(DeliverySeen))

STREAM_PATH = "/control/stream"
CONSOLE_QUEUE = 20_000  # frames a console may be behind before it is closed to catch up from the history
CALLS_EVERY_S = 0.1
LEVELS_RESENT = timedelta(seconds=3)
# An event id the history skipped (never emitted) holds the watermark back this long at most.
GAP_PATIENCE_S = 2.0
FELL_BEHIND = 4000
_BEHIND = "fell behind"  # queued (by identity) after a console's last frame once it is too far behind


class _Console:
    def __init__(self, operator: str, ws: WebSocket) -> None:
        self.operator = operator
        self.ws = ws
        # Bounded by `ControlHub._send` (CONSOLE_QUEUE frames), not by the queue: the end-of-stream
        # None must always fit.
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.behind = False


class ControlHub:
    """The receiver's side of attached consoles: who is attached, and what each is sent."""

    def __init__(
        self,
        pipeline: WebhookPipeline,
        gate: ToolGate | None,
        taps: LiveTaps,
        token: str,
        receiver: dict[str, Any],
        *,
        history_id: int = 0,
        redactor: Redactor | None = None,
    ) -> None:
        self._pipeline = pipeline
        self._redactor = redactor or Redactor()  # the held calls in a hello, as the gate's events mask them
        self._tracker: CallTracker = pipeline.tracker
        self._gate = gate
        self._taps = taps
        self._token = token.encode()
        self.receiver = receiver  # url, pid, started, db: for the consoles to say what they attached to
        self._consoles: dict[int, _Console] = {}
        self._ids = count(1)
        self._own_delivery = pipeline.on_delivery  # the embedding process's own consumer, if any
        self._changed: set[str] = set()
        self._levels_seen: dict[str, tuple[Any, ...]] = {}  # call id -> what its levels were when last sent
        self._calls_task: asyncio.Task[None] | None = None
        # Every event id up to `history_id` has been emitted; those above that were emitted early wait here.
        self.history_id = history_id
        self._emitted_above: set[int] = set()
        self._gap_since: float | None = None
        if gate is not None:
            gate.subscribe(self._gate_event)

    # --- the route ---------------------------------------------------------------------------

    def add_route(self, router: Router) -> None:
        router.add_websocket(STREAM_PATH, self._serve, self._admit)

    def _admit(self, request: Request) -> Response | None:
        if not is_loopback(request.client[0]):
            return Response.error(403, "the control API answers loopback clients only")
        supplied = (request.header("authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), self._token):
            return Response.error(401, "a valid control token is required (the one in the serve state file)")
        return None

    async def _serve(self, request: Request, ws: WebSocket) -> None:
        query = parse_qs(urlsplit(request.target).query)
        operator = ((query.get("operator") or [""])[0].strip() or "operator")[:80]
        console = _Console(operator, ws)
        key = next(self._ids)
        # The hello and the registration happen in one step of the loop: nothing emitted in
        # between can be missed or sent twice.
        self._advance_watermark()
        console.queue.put_nowait(self._hello(operator))
        self._consoles[key] = console
        self._install()
        self._broadcast_consoles()
        # Reading notices the console going away (it sends nothing): the sender is told by a None.
        reader = asyncio.create_task(self._drain_input(ws))
        reader.add_done_callback(lambda _: console.queue.put_nowait(None))
        try:
            while (frame := await console.queue.get()) is not None:
                if frame is _BEHIND:  # after everything queued before it
                    await ws.close(FELL_BEHIND, "this console fell behind; it reconnects and fills in from the history")
                    return
                await ws.send(frame)
        except WebSocketClosed:
            return
        finally:
            reader.cancel()
            del self._consoles[key]
            if not self._consoles:
                self._uninstall()
            self._broadcast_consoles()

    @staticmethod
    async def _drain_input(ws: WebSocket) -> None:
        """Consoles send nothing on the stream; reading notices when one goes away."""
        while await ws.recv() is not None:
            pass

    def _hello(self, operator: str) -> str:
        tapped = self._taps
        calls = [dict(state.summary(), tapped=state.call_id in tapped) for state in self._tracker.calls()]
        held = self._gate.pending() if self._gate is not None else []
        pending = [replace(call, arguments=self._redactor.json(call.arguments)).to_dict() for call in held]
        return _dumps(
            {
                "type": "hello",
                "operator": operator,
                "receiver": self.receiver,
                "history_id": self.history_id,
                "calls": calls,
                "pending": pending,
                "gate": self._gate is not None,
                "consoles": self.operators(),
            }
        )

    def operators(self) -> list[str]:
        return [console.operator for console in self._consoles.values()]

    # --- what the receiver tells the consoles ------------------------------------------------

    def _install(self) -> None:
        """Consoles are attached: the pipeline tells the hub (nothing is built for them otherwise)."""
        pipeline = self._pipeline
        pipeline.on_recorded = self._recorded
        own = self._own_delivery

        def delivery(seen: DeliverySeen) -> None:
            if own is not None:
                own(seen)
            self._delivery(seen)

        pipeline.on_delivery = delivery
        if self._calls_task is None:
            self._calls_task = asyncio.create_task(self._send_calls(), name="hub-calls")

    def _uninstall(self) -> None:
        pipeline = self._pipeline
        pipeline.on_recorded = self._recorded_unwatched
        pipeline.on_delivery = self._own_delivery
        if self._calls_task is not None:
            self._calls_task.cancel()
            self._calls_task = None

    def start(self) -> None:
        """Follow the history's ids from now on, attached consoles or not."""
        self._pipeline.on_recorded = self._recorded_unwatched

    def _recorded_unwatched(self, events: list[Event], first_id: int | None) -> None:
        self._note_ids(first_id, len(events))

    def _recorded(self, events: list[Event], first_id: int | None) -> None:
        self._note_ids(first_id, len(events))
        frame = (
            '{"type":"events","first_id":'
            + ("null" if first_id is None else str(first_id))
            + ',"events":['
            + ",".join(event_json(event) for event in events)
            + "]}"
        )
        self._send(frame)
        for event in events:
            if event.call_id:
                self._changed.add(event.call_id)

    def _note_ids(self, first_id: int | None, n: int) -> None:
        if first_id is None or n == 0:
            return
        if first_id == self.history_id + 1 and not self._emitted_above:
            self.history_id = first_id + n - 1
            return
        self._emitted_above.update(range(first_id, first_id + n))
        self._advance_watermark()

    def _advance_watermark(self) -> None:
        above = self._emitted_above
        while self.history_id + 1 in above:
            self.history_id += 1
            above.discard(self.history_id)
        if not above:
            self._gap_since = None
            return
        # An id below the others never came: written by something that does not emit (a crash
        # recovery), or still on its way. Wait a little, then take it as not for the live view.
        now = asyncio.get_running_loop().time()
        if self._gap_since is None:
            self._gap_since = now
        elif now - self._gap_since > GAP_PATIENCE_S:
            self.history_id = min(above)
            above.discard(self.history_id)
            self._gap_since = None
            self._advance_watermark()

    def _delivery(self, seen: DeliverySeen) -> None:
        # Flat fields: a shallow dict, not asdict()'s deep copy (this runs for every request).
        data = {name: getattr(seen, name) for name in _DELIVERY_FIELDS}
        data["at"] = seen.at.isoformat()
        self._send(_dumps({"type": "delivery", **data}))

    def _gate_event(self, event: GateEvent) -> None:
        if not self._consoles:
            return
        match event:
            case CallHeld(call):
                frame = {"type": "gate", "what": "held", "call": call.to_dict()}
            case CallStalling(call):
                frame = {"type": "gate", "what": "stalling", "call": call.to_dict()}
            case CallDecided(call, decision):
                frame = {"type": "gate", "what": "decided", "call": call.to_dict(), "decision": asdict(decision)}
            case CallSettled(outcome):
                frame = {"type": "gate", "what": "settled", "outcome": asdict(outcome)}
        self._send(_dumps(frame))

    async def _send_calls(self) -> None:
        while True:
            await asyncio.sleep(CALLS_EVERY_S)
            for frame in self._levels_frames():
                self._send(frame)
            if not self._changed:
                continue
            changed, self._changed = self._changed, set()
            calls = []
            for call_id in changed:
                state = self._tracker.get(call_id)
                if state is not None:
                    calls.append(dict(state.summary(), tapped=call_id in self._taps))
            if calls:
                self._send(_dumps({"type": "calls", "calls": calls}))

    def _levels_frames(self) -> list[str]:
        """Each tapped call's audio levels that changed (the last LEVELS_RESENT_S of them: a `clear`
        drops levels Twilio never played, so the recent ones are sent whole and replace the console's)."""
        frames = []
        cutoff = utc_now() - LEVELS_RESENT
        for call_id, relay in self._taps.items():
            levels = getattr(relay.session, "levels", None)
            if not isinstance(levels, dict):
                continue
            signature = tuple((len(kept), kept[-1] if kept else None) for kept in levels.values())
            if self._levels_seen.get(call_id) == signature:
                continue
            self._levels_seen[call_id] = signature
            recent = {
                role: [
                    [at.timestamp(), rms]
                    for at, rms in reversed(list(takewhile(lambda b: b[0] >= cutoff, reversed(kept))))
                ]
                for role, kept in levels.items()
            }
            frames.append(_dumps({"type": "levels", "call_id": call_id, "since": cutoff.timestamp(), "levels": recent}))
        for gone in set(self._levels_seen) - {call_id for call_id, _ in self._taps.items()}:
            del self._levels_seen[gone]
        return frames

    def _broadcast_consoles(self) -> None:
        self._send(_dumps({"type": "consoles", "consoles": self.operators()}))

    def _send(self, frame: str) -> None:
        for console in self._consoles.values():
            if console.behind:
                continue
            if console.queue.qsize() >= CONSOLE_QUEUE:
                console.behind = True  # closed once it has sent what it has: it catches up from the history
                console.queue.put_nowait(_BEHIND)
                log.warning("attached console %s fell behind; it will reconnect", console.operator)
                continue
            console.queue.put_nowait(frame)

    async def close(self) -> None:
        """The receiver is stopping: every console is told (1001) and reconnects to the next one."""
        if self._calls_task is not None:
            self._calls_task.cancel()
        for console in list(self._consoles.values()):
            console.ws.shutdown()


def receiver_info(url: str, db: str, started: str) -> dict[str, Any]:
    return {"url": url, "pid": os.getpid(), "started": started, "db": db}


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
