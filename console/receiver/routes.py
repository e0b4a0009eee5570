"""The webhook pipeline and the route table.

For every delivery: verify -> parse and normalize -> derive cross-message facts
-> commit to SQLite -> answer. Nothing is acknowledged before it is on disk, and
nothing is dropped: refused requests land in the rejected-requests table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from console import __version__
from console.core.calls import CallTracker
from console.core.events import Event, ToolDecided, utc_now
from console.core.http_types import Request, Response
from console.core.replays import REPLAY_HEADER, mark_replayed, replay_call_id, replay_run
from console.core.tools import ToolBatch, ToolCallHandler, ToolOutcome
from console.providers import registry
from console.providers.base import BadPayload, Inbound, WebhookProvider
from console.receiver.http import Router
from console.store.db import DeliveryRecord, Store

log = logging.getLogger(__name__)

EventSink = Callable[[list[Event]], None]


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


DeliverySink = Callable[[DeliverySeen], None]

# Backstop: answer the platform this long before its own deadline whatever the
# handler does. The gate keeps its own, larger margin; this catches anything else.
DEADLINE_MARGIN_S = 0.75
_REPLAY_RUNS_KEPT = 256


@dataclass
class PipelineStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    tool_calls: int = 0
    by_route: dict[str, int] = field(default_factory=dict)


class WebhookPipeline:
    def __init__(
        self,
        providers: dict[str, WebhookProvider],
        store: Store,
        tool_handler: ToolCallHandler,
        *,
        tracker: CallTracker | None = None,
        on_events: EventSink | None = None,
        on_delivery: DeliverySink | None = None,
    ) -> None:
        self.providers = providers
        self.store = store
        self.tool_handler = tool_handler
        self.tracker = tracker or CallTracker()
        self.on_events = on_events
        self.on_delivery = on_delivery
        self.stats = PipelineStats()
        # tool_call_id -> the in-flight decision, so a redelivery joins it.
        self._inflight: dict[str, asyncio.Future[ToolOutcome]] = {}
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
        events = self.tracker.process(inbound.events)
        if inbound.call_id and run is None and (control_url := inbound.extra.get("control_url")):
            self.tracker.note_control_url(inbound.call_id, control_url)
        receipt = await self.store.record_delivery(
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
        )
        self.stats.accepted += 1
        self.stats.by_route[route] = self.stats.by_route.get(route, 0) + 1
        if receipt.duplicate:
            self.stats.duplicates += 1
        elif events:
            self._emit(events)

        if inbound.tool_batch is not None:
            response = provider.tool_reply(inbound.tool_batch, await self._decide(inbound))
        elif inbound.reply is not None:
            response = inbound.reply
        else:
            response = provider.ack(inbound)

        elapsed_ms = (time.perf_counter() - started) * 1000
        self.store.note_reply(receipt.delivery_id, response.status, response.body, elapsed_ms)
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
        events = self.tracker.process(events)
        if events:
            await self.store.record_events(events)
            self._emit(events)

    async def _decide(self, inbound: Inbound) -> list[ToolOutcome]:
        """One outcome per call; a redelivered call joins or repeats its first decision."""
        batch = inbound.tool_batch
        assert batch is not None
        outcomes: dict[str, ToolOutcome] = {}
        waiting: dict[str, asyncio.Future[ToolOutcome]] = {}
        fresh = []
        for call in batch.calls:
            if call.tool_call_id in self._inflight:
                waiting[call.tool_call_id] = self._inflight[call.tool_call_id]
                continue
            recorded = await self.store.tool_outcome(call.tool_call_id)
            if recorded is not None and recorded.decision is not None:
                outcomes[call.tool_call_id] = recorded
            else:
                fresh.append(call)

        if fresh:
            loop = asyncio.get_running_loop()
            futures = {call.tool_call_id: loop.create_future() for call in fresh}
            self._inflight.update(futures)
            try:
                sub_batch = ToolBatch(**{**batch.__dict__, "calls": tuple(fresh)})
                await self.store.record_tool_requests(batch.provider, batch.call_id, list(fresh), inbound.at)
                self.stats.tool_calls += len(fresh)
                decided = await self._decide_in_time(sub_batch)
                await self.store.record_tool_outcomes(batch.provider, batch.call_id, decided, utc_now())
                self._emit([self._decided_event(batch, outcome) for outcome in decided])
                for outcome in decided:
                    outcomes[outcome.tool_call_id] = outcome
                    futures[outcome.tool_call_id].set_result(outcome)
            finally:
                for tool_call_id, future in futures.items():
                    if not future.done():
                        future.cancel()
                    self._inflight.pop(tool_call_id, None)
        for tool_call_id, future in waiting.items():
            try:
                outcomes[tool_call_id] = await asyncio.shield(future)
            except asyncio.CancelledError:
                outcomes[tool_call_id] = self._timeout_outcome(
                    batch, tool_call_id, "the first delivery of this tool call failed"
                )
        return [outcomes[call.tool_call_id] for call in batch.calls]

    async def _decide_in_time(self, batch: ToolBatch) -> list[ToolOutcome]:
        budget = max(0.5, batch.platform_timeout_s - DEADLINE_MARGIN_S)
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
    def _timeout_outcome(batch: ToolBatch, tool_call_id: str, reason: str, by: str = "timeout") -> ToolOutcome:
        name = next((c.name for c in batch.calls if c.tool_call_id == tool_call_id), "")
        return ToolOutcome(
            tool_call_id=tool_call_id,
            name=name,
            decision="rejected",
            by=by,  # type: ignore[arg-type]
            error=f"The tool could not be run: {reason}.",
        )

    @staticmethod
    def _decided_event(batch: ToolBatch, outcome: ToolOutcome) -> ToolDecided:
        return ToolDecided(
            at=utc_now(),
            provider=batch.provider,
            call_id=batch.call_id,  # type: ignore[arg-type]
            tool_call_id=outcome.tool_call_id,
            name=outcome.name,
            decision=outcome.decision,
            by=outcome.by,
            result=outcome.result,
            error=outcome.error,
            latency_ms=outcome.latency_ms,
            arguments=outcome.arguments_sent,
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
        await self.store.record_rejected(
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
        if self.on_delivery is not None:
            try:
                self.on_delivery(delivery)
            except Exception:  # a consumer must never break ingestion
                log.exception("delivery consumer failed")

    def _emit(self, events: list[Event]) -> None:
        if self.on_events is not None and events:
            try:
                self.on_events(events)
            except Exception:  # a consumer must never break ingestion
                log.exception("event consumer failed")


def build_router(pipeline: WebhookPipeline, *, extra: Callable[[Router], None] | None = None) -> Router:
    router = Router()
    started = time.monotonic()
    for spec in registry.specs():
        if spec.name not in pipeline.providers:
            continue
        for route in spec.routes:
            handler = _route_handler(pipeline, route.name)
            for method in route.methods:
                router.add(method, route.path, handler)

    async def healthz(request: Request) -> Response:
        return Response.json(
            200,
            {
                "status": "ok",
                "version": __version__,
                "uptime_s": round(time.monotonic() - started, 1),
                "providers": sorted(pipeline.providers),
            },
        )

    router.add("GET", "/healthz", healthz)
    if extra is not None:
        extra(router)
    return router


def _route_handler(pipeline: WebhookPipeline, route: str):  # type: ignore[no-untyped-def]
    async def handler(request: Request) -> Response:
        return await pipeline.handle(route, request)

    return handler
