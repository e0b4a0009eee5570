"""The webhook pipeline: the one owner of what happens to a delivery and its tool calls.

For every delivery: verify -> parse and normalize -> derive cross-message facts
(the call tracker, which also keeps each call's live-control URL) -> commit to the
history -> answer. Nothing is acknowledged before it is on disk, and nothing is
dropped: refused requests land in the rejected-requests table. Tool calls are
decided once (redeliveries join the first decision, decided ones are answered from
the history) before the platform's deadline; Vapi's `hang` marks held calls
stalling, and the filler speaks through the call's control URL while one waits.
Live consumers (the TUI, serve's NDJSON) see what the history keeps: secrets masked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

import httpx

from console.core.calls import CallTracker
from console.core.events import CallHang, DecidedBy, Event, utc_now
from console.core.gate import CallDecided, CallSettled, GateEvent, PendingCall, ToolGate
from console.core.http_types import Request, Response
from console.core.latency import LatencyHistogram
from console.core.replays import REPLAY_HEADER, mark_replayed, replay_call_id, replay_run
from console.core.tools import ToolBatch, ToolCall, ToolCallHandler, ToolOutcome
from console.providers import registry
from console.providers.base import BadPayload, Inbound, WebhookProvider
from console.redact import Redactor, mask_event
from console.store.db import DeliveryReceipt, DeliveryRecord

log = logging.getLogger(__name__)


class HistoryWriter(Protocol):
    """What the pipeline needs of the history (console.store.db.Store)."""

    async def record_delivery(
        self, rec: DeliveryRecord, events: Sequence[Event], *, masked: bool = False
    ) -> DeliveryReceipt: ...

    async def record_events(
        self, events: Sequence[Event], delivery_id: int | None = None, *, masked: bool = False
    ) -> int | None: ...

    def note_reply(self, delivery_id: int, status: int, body: bytes, elapsed_ms: float) -> None: ...

    async def record_rejected(
        self,
        provider: str | None,
        route: str,
        method: str,
        path: str,
        client: str,
        reason: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        at: datetime,
    ) -> None: ...

    async def record_tool_requests(
        self, provider: str, call_id: str | None, calls: Sequence[ToolCall], at: datetime
    ) -> None: ...

    async def tool_outcome(self, tool_call_id: str) -> ToolOutcome | None: ...


EventSink = Callable[[list[Event]], None]
# Events with the history id of the first (the rest follow in order): for consoles attached to `serve`.
RecordedSink = Callable[[list[Event], int | None], None]


@dataclass(frozen=True, slots=True)
class DeliverySeen:
    """One webhook request and what we answered, for live views (the TUI's Events pane).

    Accepted requests carry their `deliveries` row id; refused ones (bad
    signature, bad payload) their `reason` and no id: they are in `rejected_requests`.
    """

    at: datetime
    provider: str
    route: str
    method: str
    path: str
    message_type: str | None
    call_id: str | None
    verdict: str  # "ok" | "rejected"
    reason: str | None
    auth_scheme: str | None
    status: int
    elapsed_ms: float
    delivery_id: int | None = None
    duplicate: bool = False
    instance: str | None = None  # the team's receiver that had it (team mode); None: this one


DeliverySink = Callable[[DeliverySeen], None]
# What the team's consoles get of a delivery (their Events pane's columns), in TEAM_ROW_FIELDS'
# order: built straight from the request's values, as it is built for every request.
TeamRow = tuple[float, str, str, str | None, str | None, str, str | None, int, float, bool]
TeamRowSink = Callable[[TeamRow], None]
TEAM_ROW_FIELDS = (
    "at",
    "provider",
    "route",
    "message_type",
    "call_id",
    "verdict",
    "reason",
    "status",
    "elapsed_ms",
    "duplicate",
)


def team_row(seen: DeliverySeen) -> TeamRow:
    return (
        seen.at.timestamp(),
        seen.provider,
        seen.route,
        seen.message_type,
        seen.call_id,
        seen.verdict,
        seen.reason,
        seen.status,
        round(seen.elapsed_ms, 2),
        seen.duplicate,
    )


# A handler other than the gate gets this margin before the platform's deadline. The gate
# keeps its own (`[gate] safety_margin_seconds`) and is only cut off at the deadline itself,
# a backstop that never fires unless it is broken: one margin per tool call.
DEADLINE_MARGIN_S = 0.75
_REPLAY_RUNS_KEPT = 256


@dataclass
class PipelineStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    tool_calls: int = 0
    by_route: dict[str, int] = field(default_factory=dict)
    # From having the whole request to the answer, for accepted deliveries that are not
    # tool calls (those wait for a decision by design): how fast platforms hear back.
    acknowledged: LatencyHistogram = field(default_factory=LatencyHistogram)


class WebhookPipeline:
    def __init__(
        self,
        providers: dict[str, WebhookProvider],
        history: HistoryWriter,
        tool_handler: ToolCallHandler,
        *,
        tracker: CallTracker | None = None,
        redactor: Redactor | None = None,
        on_events: EventSink | None = None,
        on_delivery: DeliverySink | None = None,
    ) -> None:
        """`on_events` and `on_delivery` are the live consumers: they get what `redactor` leaves.
        When `tool_handler` is a `ToolGate`, Vapi's `hang` marks its held calls stalling."""
        self.providers = providers
        self.history = history
        self.tool_handler = tool_handler
        self.tracker = tracker or CallTracker()
        self.redactor = redactor or Redactor()
        self.on_events = on_events
        self.on_delivery = on_delivery
        # Set while consoles are attached (`console.services.hub`): what they get, with history ids.
        self.on_recorded: RecordedSink | None = None
        # Team mode (`console.services.team`): the same, for the team's Redis.
        self.to_team: RecordedSink | None = None
        self.to_team_delivery: TeamRowSink | None = None
        self._gate = tool_handler if isinstance(tool_handler, ToolGate) else None
        self.stats = PipelineStats()
        # tool_call_id -> the decision its first delivery is making, for redeliveries to join
        # (None: that delivery was abandoned, a redelivery takes over).
        self._inflight: dict[str, asyncio.Future[ToolOutcome | None]] = {}
        # replayed (marked) call id -> the replay run it last saw
        self._replay_runs: OrderedDict[str, str] = OrderedDict()

    async def handle(self, route: str, request: Request) -> Response:
        started = time.perf_counter()
        received_at = utc_now()
        provider = self.providers[route.split(".", 1)[0]]

        verdict = provider.verify(route, request)
        if not verdict.ok:
            return await self._reject(
                provider.name,
                route,
                request,
                received_at,
                f"authentication failed ({verdict.scheme}): {verdict.reason}",
                registry.auth_failure_status(provider.name),
                started,
                verdict.scheme,
            )
        try:
            inbound = provider.parse(route, request, received_at)
        except BadPayload as exc:
            return await self._reject(
                provider.name, route, request, received_at, f"bad payload: {exc}", 400, started, verdict.scheme
            )

        run = replay_run(request.header(REPLAY_HEADER))
        if run is not None:
            inbound = self._as_replay(inbound, run)
        events = self._masked(self.tracker.process(inbound.events))
        if inbound.call_id and run is None and (control_url := inbound.extra.get("control_url")):
            self.tracker.note_control_url(inbound.call_id, control_url)
        receipt = await self.history.record_delivery(
            DeliveryRecord(
                provider=provider.name,
                route=route,
                method=request.method,
                path=request.target,
                message_type=inbound.message_type,
                call_id=inbound.call_id,
                received_at=received_at,
                body=request.body,
                headers=list(request.headers),
                auth_scheme=verdict.scheme,
                dedupe_key=inbound.dedupe_key,
                replay_run=run,
            ),
            events,
            masked=True,
        )
        self.stats.accepted += 1
        self.stats.by_route[route] = self.stats.by_route.get(route, 0) + 1
        if receipt.duplicate:
            self.stats.duplicates += 1
        elif events:
            self._emit(events, receipt.first_event_id)

        if inbound.tool_batch is not None:
            response = provider.tool_reply(inbound.tool_batch, await self._decide(inbound))
        elif inbound.reply is not None:
            response = inbound.reply
        else:
            response = provider.ack(inbound)

        now = time.perf_counter()
        elapsed_ms = (now - started) * 1000
        if inbound.tool_batch is None:
            self.stats.acknowledged.add((now - (request.arrived or started)) * 1000)
        self.history.note_reply(receipt.delivery_id, response.status, response.body, elapsed_ms)
        if self.to_team_delivery is not None:  # a row, not a DeliverySeen: this runs per request
            self.to_team_delivery(
                (
                    received_at.timestamp(),
                    provider.name,
                    route,
                    inbound.message_type,
                    inbound.call_id,
                    "ok",
                    None,
                    response.status,
                    round(elapsed_ms, 2),
                    receipt.duplicate,
                )
            )
        if self.on_delivery is not None:  # headless serve has no consumer: build nothing on the hot path
            self._seen(
                DeliverySeen(
                    received_at,
                    provider.name,
                    route,
                    request.method,
                    request.target,
                    inbound.message_type,
                    inbound.call_id,
                    "ok",
                    None,
                    verdict.scheme,
                    response.status,
                    elapsed_ms,
                    receipt.delivery_id,
                    receipt.duplicate,
                )
            )
        return response

    def _as_replay(self, inbound: Inbound, run: str) -> Inbound:
        """A delivery re-posted by `voice-console replay`, recorded and shown under the call id
        marked `↻`: the original call's record stays as the platform made it. The replay's
        copies of the live-call capabilities (monitor URLs, masked when stored) are not used."""
        call_id = replay_call_id(inbound.call_id)
        if call_id is not None and self._replay_runs.get(call_id) != run:
            # Another run of the same call: it plays from the start, not as more of the last one.
            self.tracker.forget(call_id)
            self._replay_runs[call_id] = run
            self._replay_runs.move_to_end(call_id)
            if len(self._replay_runs) > _REPLAY_RUNS_KEPT:
                self._replay_runs.popitem(last=False)
        batch = inbound.tool_batch
        return replace(
            inbound,
            call_id=call_id,
            events=[mark_replayed(event) for event in inbound.events],
            tool_batch=None if batch is None else replace(batch, call_id=replay_call_id(batch.call_id)),
            extra={key: value for key, value in inbound.extra.items() if key != "control_url"},
        )

    async def ingest_events(self, events: list[Event]) -> None:
        """Events that arrive outside a webhook delivery (media streams): same path to disk."""
        events = self._masked(self.tracker.process(events))
        if events:
            self._emit(events, await self.history.record_events(events, masked=True))

    async def _decide(self, inbound: Inbound) -> list[ToolOutcome]:
        """One outcome per call, each tool call decided once: a redelivery joins the decision
        its first delivery is making (and takes the call over if that one is abandoned), or
        gets the decision the history recorded, so a tool never runs twice."""
        batch = inbound.tool_batch
        assert batch is not None
        loop = asyncio.get_running_loop()
        outcomes: dict[str, ToolOutcome] = {}
        waiting: dict[str, asyncio.Future[ToolOutcome | None]] = {}
        mine: dict[str, asyncio.Future[ToolOutcome | None]] = {}
        for call in batch.calls:
            tool_call_id = call.tool_call_id
            if tool_call_id in mine or tool_call_id in waiting:
                continue  # the same id twice in one batch: one decision answers both
            if tool_call_id in self._inflight:
                waiting[tool_call_id] = self._inflight[tool_call_id]
            else:  # claimed before any await, so a delivery arriving meanwhile joins this one
                mine[tool_call_id] = self._inflight[tool_call_id] = loop.create_future()
        # At once: a joined call may have to be taken over and held again meanwhile.
        await asyncio.gather(
            *([self._decide_claimed(inbound, batch, mine, outcomes)] if mine else []),
            *(self._join(inbound, batch, tool_call_id, future, outcomes) for tool_call_id, future in waiting.items()),
        )
        return [outcomes[call.tool_call_id] for call in batch.calls]

    async def _decide_claimed(
        self,
        inbound: Inbound,
        batch: ToolBatch,
        futures: dict[str, asyncio.Future[ToolOutcome | None]],
        outcomes: dict[str, ToolOutcome],
    ) -> None:
        """Decide the calls this delivery claimed (or answer them from the history), record
        requests and outcomes, and hand each outcome to the redeliveries that joined: None
        when this delivery was abandoned before deciding, so one of them takes the call over."""
        try:
            fresh = []
            for tool_call_id, future in futures.items():
                recorded = await self.history.tool_outcome(tool_call_id)
                if recorded is not None and recorded.decision is not None:
                    outcomes[tool_call_id] = recorded
                    future.set_result(recorded)
                else:
                    fresh.append(next(c for c in batch.calls if c.tool_call_id == tool_call_id))
            if fresh:
                await self.history.record_tool_requests(batch.provider, batch.call_id, fresh, inbound.at)
                self.stats.tool_calls += len(fresh)
                decided = await self._decide_in_time(replace(batch, calls=tuple(fresh)))
                now = utc_now()
                events = self._masked(
                    [o.event(provider=batch.provider, call_id=batch.call_id, at=now) for o in decided]
                )
                self._emit(events, await self.history.record_events(events, masked=True))
                for outcome in decided:
                    outcomes[outcome.tool_call_id] = outcome
                    futures[outcome.tool_call_id].set_result(outcome)
        except asyncio.CancelledError:
            for future in futures.values():
                if not future.done():
                    future.set_result(None)
            raise
        finally:
            for tool_call_id, future in futures.items():
                if not future.done():
                    future.set_result(self._timeout_outcome(batch, tool_call_id, "the first delivery of it failed"))
                if self._inflight.get(tool_call_id) is future:
                    del self._inflight[tool_call_id]

    async def _join(
        self,
        inbound: Inbound,
        batch: ToolBatch,
        tool_call_id: str,
        future: asyncio.Future[ToolOutcome | None],
        outcomes: dict[str, ToolOutcome],
    ) -> None:
        while True:
            # shield: this delivery being cancelled must not cancel the first one's answer.
            outcome = await asyncio.shield(future)
            if outcome is not None:
                outcomes[tool_call_id] = outcome
                return
            # The first delivery was abandoned: take the call over, unless another redelivery did.
            taken_by = self._inflight.get(tool_call_id)
            if taken_by is None:
                mine = self._inflight[tool_call_id] = asyncio.get_running_loop().create_future()
                await self._decide_claimed(inbound, batch, {tool_call_id: mine}, outcomes)
                return
            future = taken_by

    async def _decide_in_time(self, batch: ToolBatch) -> list[ToolOutcome]:
        margin = 0.0 if self._gate is not None else DEADLINE_MARGIN_S
        budget = max(0.5, batch.platform_timeout_s - margin)
        try:
            async with asyncio.timeout(budget):
                decided = await self.tool_handler.decide(batch)
        except TimeoutError:
            return [
                self._timeout_outcome(batch, c.tool_call_id, "no decision before the platform's deadline")
                for c in batch.calls
            ]
        except Exception:  # a broken handler must still yield a valid answer
            log.exception("tool handler failed")
            return [
                self._timeout_outcome(batch, c.tool_call_id, "the tool handler failed", by="rule") for c in batch.calls
            ]
        by_id = {o.tool_call_id: o for o in decided}
        return [
            by_id.get(c.tool_call_id)
            or self._timeout_outcome(batch, c.tool_call_id, "the tool handler gave no answer", by="rule")
            for c in batch.calls
        ]

    @staticmethod
    def _timeout_outcome(batch: ToolBatch, tool_call_id: str, reason: str, by: DecidedBy = "timeout") -> ToolOutcome:
        name = next((c.name for c in batch.calls if c.tool_call_id == tool_call_id), "")
        return ToolOutcome(
            tool_call_id=tool_call_id,
            name=name,
            decision="rejected",
            by=by,
            error=f"The tool could not be run: {reason}.",
        )

    async def _reject(
        self,
        provider: str,
        route: str,
        request: Request,
        at: datetime,
        reason: str,
        status: int,
        started: float,
        auth_scheme: str | None = None,
    ) -> Response:
        self.stats.rejected += 1
        await self.history.record_rejected(
            provider,
            route,
            request.method,
            request.target,
            f"{request.client[0]}:{request.client[1]}",
            reason,
            list(request.headers),
            request.body,
            at,
        )
        self._seen(
            DeliverySeen(
                at,
                provider,
                route,
                request.method,
                request.target,
                None,
                None,
                "rejected",
                reason,
                auth_scheme,
                status,
                (time.perf_counter() - started) * 1000,
            )
        )
        return Response.error(status, reason)

    def _seen(self, delivery: DeliverySeen) -> None:
        if self.on_delivery is None and self.to_team_delivery is None:
            return
        path = self.redactor.text(delivery.path)
        reason = None if delivery.reason is None else self.redactor.text(delivery.reason)
        if path != delivery.path or reason != delivery.reason:
            delivery = replace(delivery, path=path, reason=reason)
        if self.on_delivery is not None:
            try:
                self.on_delivery(delivery)
            except Exception:  # a consumer must never break ingestion
                log.exception("delivery consumer failed")
        if self.to_team_delivery is not None and delivery.verdict != "ok":  # accepted ones: in `handle`
            self.to_team_delivery(team_row(delivery))

    def _emit(self, events: list[Event], first_id: int | None = None) -> None:
        if self._gate is not None:
            # Vapi sends `hang` while it waits on us: mark that call's held tool calls as stalling.
            for event in events:
                if isinstance(event, CallHang) and event.call_id:
                    self._gate.mark_stalling(event.call_id)
        if self.on_events is not None and events:
            try:
                self.on_events(events)
            except Exception:  # a consumer must never break ingestion
                log.exception("event consumer failed")
        if self.on_recorded is not None and events:
            try:
                self.on_recorded(events, first_id)
            except Exception:
                log.exception("attached consoles' feed failed")
        if self.to_team is not None and events:
            try:
                self.to_team(events, first_id)
            except Exception:
                log.exception("the team link's feed failed")

    def _masked(self, events: list[Event]) -> list[Event]:
        """The one masking of events, where they leave the pipeline: the history and every live
        consumer (the TUI, serve's NDJSON) get the same objects, secrets and live-call URLs masked."""
        return [mask_event(event, self.redactor) for event in events]


class ControlUrlFiller:
    """While a tool call is held, the assistant says `text` through the call's live-control URL
    (Vapi), as the call tracker keeps it; calls without one stay silent."""

    def __init__(self, tracker: CallTracker, http_client: httpx.AsyncClient, text: str) -> None:
        self._tracker = tracker
        self._http = http_client
        self._text = text

    async def __call__(self, pending: PendingCall) -> None:
        url = self._tracker.control_url(pending.call_id)
        if url:
            await self._http.post(url, json={"type": "say", "content": self._text}, timeout=5)


def redact_gate_event(event: GateEvent, redactor: Redactor) -> GateEvent:
    """A gate event for subscribers (the TUI, serve's log) with secrets masked; the gate keeps the originals."""
    if isinstance(event, CallSettled):
        outcome = event.outcome
        masked = replace(
            outcome,
            result=None if outcome.result is None else redactor.text(outcome.result),
            error=None if outcome.error is None else redactor.text(outcome.error),
            arguments_sent=None if outcome.arguments_sent is None else redactor.json(outcome.arguments_sent),
        )
        return event if masked == outcome else CallSettled(masked)
    arguments = redactor.json(event.call.arguments)
    if arguments != event.call.arguments:
        event = replace(event, call=replace(event.call, arguments=arguments))
    if isinstance(event, CallDecided):  # the operator's own words and values too
        decision = event.decision
        masked_decision = replace(
            decision,
            reason=None if decision.reason is None else redactor.text(decision.reason),
            result=None if decision.result is None else redactor.json(decision.result),
            arguments=None if decision.arguments is None else redactor.json(decision.arguments),
        )
        if masked_decision != decision:
            event = CallDecided(event.call, masked_decision)
    return event
