"""The operator console: `VoiceConsoleApp` runs the receiver (and, with --demo, the
simulated platform) in its own event loop; `MainScreen` shows live calls, the
selected call's transcript, tool calls waiting for a decision, and every event.

Data flow: the receiver calls `Feed.events_in` / the gate calls `Feed.gate_in`
(cheap appends, in the loop); `MainScreen` drains the feed every 100 ms and
updates its models and widgets in one batch; tables are rebuilt from core state
(tracker, gate) on a timer, as bounded windows.
"""

from __future__ import annotations

import json
import logging
import secrets as token_source
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Log

from console.config import Settings
from console.core.events import Event, ToolDecided, ToolRequested, utc_now
from console.core.gate import DEFAULT_REJECT_REASON, GateEvent, OperatorDecision, PendingCall
from console.core.policy import Policy
from console.providers.vapi.client import VapiClient, VapiError
from console.secrets import SecretLookup, SecretStore
from console.service import ReceiverService
from console.simulator.platform import SimulatedPlatform
from console.tui.widgets.panes import FunctionCallsTable, LiveCallsTable, short_id
from console.tui.widgets.prompt import PromptScreen
from console.tui.widgets.transcript import CallTranscript, TranscriptPane, short_json

log = logging.getLogger(__name__)

DEMO_CUSTOMER = "+14155550142"
MAX_TRANSCRIPTS = 200
MAX_DECIDED_ROWS = 60
EVENT_LOG_LINES = 2000


# --- services ---------------------------------------------------------------------------------


@dataclass
class Services:
    """Everything the app starts, passed in so tests run the real thing on loopback."""

    settings: Settings
    secret_store: SecretStore | None = None  # None: the default store (env, then keyring)
    demo: bool = False
    demo_interval_s: float = 20.0  # a new demo call this often (the first one at once)
    demo_speed: float = 3.0  # scenario time compression: a tool call waits ~8 s after the dial
    policy: Policy = field(default_factory=lambda: Policy.default("hold"))

    async def secrets(self) -> dict[str, SecretLookup]:
        found = await (self.secret_store or SecretStore()).aget_all()
        if self.demo:  # the in-process platform and the receiver share a fresh webhook secret
            found["vapi_webhook_secret"] = SecretLookup("vapi_webhook_secret", token_source.token_urlsafe(24), "env")
        return found

    async def start_receiver(self, secrets: dict[str, SecretLookup],
                             on_events: Callable[[list[Event]], None]) -> ReceiverService:
        return await ReceiverService.start(self.settings, secrets, on_events=on_events, policy=self.policy)

    async def start_platform(self, receiver: ReceiverService, secrets: dict[str, SecretLookup]) -> SimulatedPlatform:
        platform = SimulatedPlatform(
            receiver.server.url + "/webhook/vapi",
            webhook_settings=self.settings.vapi,
            webhook_secret=secrets["vapi_webhook_secret"].value,
            speed=self.demo_speed,
            port=0,
        )
        await platform.start()
        return platform


class Feed:
    """Where the receiver and the gate drop what happened; drained in batches by the screen."""

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.gate: deque[GateEvent] = deque()
        self.notes: deque[str] = deque(maxlen=500)

    def events_in(self, events: list[Event]) -> None:
        self.events.extend(events)

    def gate_in(self, item: GateEvent) -> None:
        self.gate.append(item)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def drain(self) -> tuple[list[Event], list[GateEvent], list[str]]:
        events, gate, notes = list(self.events), list(self.gate), list(self.notes)
        self.events.clear()
        self.gate.clear()
        self.notes.clear()
        return events, gate, notes


def describe(event: Event) -> str:
    """One Events-pane line for a normalized event."""
    at = event.at.astimezone().strftime("%H:%M:%S.%f")[:-3]
    data: dict[str, Any] = event.model_dump(exclude={"at", "provider", "call_id", "kind"}, exclude_none=True)
    if isinstance(event, ToolRequested):
        detail = f"{event.name}({short_json(event.arguments, 60)}) {event.tool_call_id}"
    elif isinstance(event, ToolDecided):
        latency = f" {event.latency_ms:.0f} ms" if event.latency_ms is not None else ""
        outcome = event.result if event.result is not None else event.error
        detail = f"{event.name} {event.decision} by {event.by}{latency}: {short_json(outcome or '', 60)}"
    elif "text" in data:
        detail = f"{data.pop('role', '')}: {short_json(data.pop('text'), 70)}"
    elif event.kind == "raw":
        detail = str(data.get("type", ""))
    else:
        detail = " ".join(f"{key}={short_json(value, 50)}" for key, value in data.items())
    return f"{at} {event.provider:<6} {short_id(event.call_id)} {event.kind:<18} {detail}"


# --- the main screen --------------------------------------------------------------------------


class MainScreen(Screen[None]):
    """Live calls, transcript, function calls and events; coordinates the panes."""

    BINDINGS = [
        Binding("a", "approve", "Approve"),
        Binding("e", "edit", "Edit args"),
        Binding("o", "override", "Override"),
        Binding("r", "reject", "Reject"),
    ]

    def __init__(self, feed: Feed) -> None:
        super().__init__()
        self.feed = feed
        self.service: ReceiverService | None = None
        self.selected_call: str | None = None
        self.transcripts: OrderedDict[str, CallTranscript] = OrderedDict()
        self.decided: OrderedDict[str, tuple[ToolDecided, dict[str, Any] | None]] = OrderedDict()
        self._requested: OrderedDict[str, ToolRequested] = OrderedDict()

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="calls-pane", classes="pane") as pane:
            pane.border_title = "Live calls"
            yield LiveCallsTable(id="calls")
        with Horizontal(id="middle"):
            with Vertical(id="transcript-pane", classes="pane") as pane:
                pane.border_title = "Transcript"
                yield TranscriptPane(id="transcript")
            with Vertical(id="tools-pane", classes="pane") as pane:
                pane.border_title = "Function calls"
                yield FunctionCallsTable(id="tools")
        with Vertical(id="events-pane", classes="pane") as pane:
            pane.border_title = "Events"
            yield Log(max_lines=EVENT_LOG_LINES, id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(0.1, self.flush)
        self.set_interval(0.5, self.refresh_tables)

    # --- calls down ------------------------------------------------------------------------

    def attach(self, service: ReceiverService) -> None:
        self.service = service

    def flush(self) -> None:
        """Apply everything that arrived since the last flush, in one batch."""
        events, gate_events, notes = self.feed.drain()
        if not (events or gate_events or notes):
            return
        lines = list(notes)
        tools_changed = bool(gate_events)
        for event in events:
            lines.append(describe(event))
            if event.call_id:
                transcript = self.transcripts.get(event.call_id)
                if transcript is None:
                    transcript = self.transcripts[event.call_id] = CallTranscript(event.call_id)
                    if len(self.transcripts) > MAX_TRANSCRIPTS:
                        self.transcripts.popitem(last=False)
                transcript.apply(event)
            if isinstance(event, ToolRequested):
                self._requested[event.tool_call_id] = event
                if len(self._requested) > 4 * MAX_DECIDED_ROWS:
                    self._requested.popitem(last=False)
                tools_changed = True
            elif isinstance(event, ToolDecided):
                self._decided_row(event)
                tools_changed = True
        for kind, payload in gate_events:
            if kind == "resolved":
                # The gate settles each call at once; the pipeline reports (and records) a
                # batch of parallel calls only when all are settled. Show it now.
                requested = self._requested.get(payload.tool_call_id)
                if requested is not None:
                    decided = ToolDecided(
                        at=utc_now(), provider=requested.provider, call_id=requested.call_id,
                        tool_call_id=payload.tool_call_id, name=payload.name, decision=payload.decision,
                        by=payload.by, result=payload.result, error=payload.error, latency_ms=payload.latency_ms,
                        arguments=payload.arguments_sent,
                    )
                    self._decided_row(decided)
                    if requested.call_id in self.transcripts:
                        self.transcripts[requested.call_id].apply(decided)
            elif kind == "pending":
                lines.append(f"tool call waiting: {payload.name} on {short_id(payload.call_id)} · "
                             f"{payload.remaining_s():.0f} s to decide (a/e/o/r)")
            elif kind == "stalling":
                lines.append(f"the platform is stalling while {payload.name} waits ({short_id(payload.call_id)})")
        if lines:
            self.query_one("#events", Log).write_lines(lines)
        if self.selected_call is None and self.transcripts:
            self.selected_call = next(reversed(self.transcripts))
        if tools_changed:
            self.refresh_tables()
        self._show_transcript()

    def _decided_row(self, event: ToolDecided) -> None:
        requested = self._requested.get(event.tool_call_id)
        self.decided[event.tool_call_id] = (event, requested.arguments if requested is not None else None)
        self.decided.move_to_end(event.tool_call_id)
        if len(self.decided) > MAX_DECIDED_ROWS:
            self.decided.popitem(last=False)

    def refresh_tables(self) -> None:
        if self.service is None:
            return
        pending = self.service.gate.pending() if self.service.gate is not None else []
        per_call: dict[str, int] = {}
        for call in pending:
            if call.call_id:
                per_call[call.call_id] = per_call.get(call.call_id, 0) + 1
        self.query_one(LiveCallsTable).sync(LiveCallsTable.rows(self.service.pipeline.tracker.calls(), per_call))
        decided = [self.decided[key] for key in reversed(self.decided)]
        self.query_one(FunctionCallsTable).sync(FunctionCallsTable.rows(pending, decided))
        waiting = len(pending)
        self.query_one("#tools-pane").border_subtitle = f"{waiting} waiting" if waiting else ""

    def _show_transcript(self) -> None:
        transcript = self.transcripts.get(self.selected_call) if self.selected_call else None
        pane = self.query_one("#transcript-pane")
        pane.border_title = f"Transcript · {short_id(self.selected_call)}" if self.selected_call else "Transcript"
        self.query_one(TranscriptPane).show(transcript)

    # --- messages up -----------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "calls" and event.row_key.value and event.row_key.value != self.selected_call:
            self.selected_call = event.row_key.value
            self._show_transcript()

    # --- approvals -------------------------------------------------------------------------

    def target(self) -> PendingCall | None:
        """The selected pending tool call; else the selected call's oldest; else the oldest."""
        if self.service is None or self.service.gate is None:
            return None
        pending = self.service.gate.pending()
        selected = self.query_one(FunctionCallsTable).selected_key
        for call in pending:
            if call.tool_call_id == selected:
                return call
        for call in pending:
            if call.call_id == self.selected_call:
                return call
        return pending[0] if pending else None

    def decide(self, call: PendingCall, decision: OperatorDecision) -> None:
        assert self.service is not None and self.service.gate is not None
        if self.service.gate.resolve(call.tool_call_id, decision):
            self.feed.note(f"operator: {decision.decision} {call.name} ({short_id(call.tool_call_id, 12)})")
            # Shown at once; the gate's outcome replaces it when the call is answered (an
            # approval is answered with the rest of its batch, after the tool ran).
            shown = ToolDecided(
                at=utc_now(), provider=call.provider, call_id=call.call_id,  # type: ignore[arg-type]
                tool_call_id=call.tool_call_id, name=call.name, decision=decision.decision, by="operator",
                error=decision.reason if decision.decision == "rejected" else None,
                result=None if decision.result is None else str(decision.result), arguments=decision.arguments,
            )
            self._decided_row(shown)
            if call.call_id in self.transcripts:
                self.transcripts[call.call_id].apply(shown)
                self._show_transcript()
        else:
            self.notify(f"{call.name} was already decided (or timed out).", severity="warning")
        self.refresh_tables()

    def _with_target(self) -> PendingCall | None:
        call = self.target()
        if call is None:
            self.notify("No tool call is waiting for a decision.", severity="warning")
        return call

    def action_approve(self) -> None:
        if call := self._with_target():
            self.decide(call, OperatorDecision("approved"))

    def _ask(self, screen: PromptScreen, then: Callable[[str], None]) -> None:
        def done(value: str | None) -> None:
            if value is not None:
                then(value)

        self.app.push_screen(screen, done)

    def action_reject(self) -> None:
        if call := self._with_target():
            self._ask(PromptScreen(f"Reject {call.name}", "Reason the agent may say to the caller:",
                                   DEFAULT_REJECT_REASON, pending=call),
                      lambda reason: self.decide(call, OperatorDecision("rejected", reason=reason)))

    def action_override(self) -> None:
        if call := self._with_target():
            self._ask(PromptScreen(f"Override {call.name}", "Result to send instead of running the tool (text or JSON):",
                                   "", check=lambda value: None if value.strip() else "Type a result.", pending=call),
                      lambda result: self.decide(call, OperatorDecision("overridden", result=result)))

    def action_edit(self) -> None:
        if call := self._with_target():
            self._ask(PromptScreen(f"Edit {call.name}", "Arguments as a JSON object:", json.dumps(call.arguments),
                                   check=json_object_problem, pending=call),
                      lambda text: self.decide(call, OperatorDecision("edited", arguments=json.loads(text))))


def json_object_problem(text: str) -> str | None:
    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"Not valid JSON: {exc}"
    return None if isinstance(value, dict) else "The arguments must be a JSON object ({...})."


# --- the app ----------------------------------------------------------------------------------


class VoiceConsoleApp(App[None]):
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "voice-console"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services
        self.feed = Feed()
        self.main = MainScreen(self.feed)
        self.service: ReceiverService | None = None
        self.platform: SimulatedPlatform | None = None
        self._phone_number_id: str | None = None
        self._assistant_id: str | None = None

    def on_mount(self) -> None:
        self.sub_title = "starting…"
        self.push_screen(self.main)
        self.start_services()

    @work(exclusive=True, group="services", exit_on_error=False)
    async def start_services(self) -> None:
        settings = self.services.settings
        secrets = await self.services.secrets()
        try:
            self.service = await self.services.start_receiver(secrets, self.feed.events_in)
        except OSError as exc:
            self.exit(return_code=1, message=f"voice-console: cannot listen on {settings.receiver.host}:"
                                             f"{settings.receiver.port}: {exc.strerror or exc}")
            return
        if self.service.gate is not None:
            self.service.gate.subscribe(self.feed.gate_in)
        self.main.attach(self.service)
        for warning in self.service.warnings:
            self.feed.note(f"warning: {warning}")
        self.sub_title = f"receiver {self.service.server.url} · history {settings.db_path}"
        if self.services.demo:
            self.platform = await self.services.start_platform(self.service, secrets)
            self.sub_title = f"DEMO · simulated platform {self.platform.url} · receiver {self.service.server.url}"
            self.feed.note(f"demo: simulated Vapi platform on {self.platform.url}; a call every "
                           f"{self.services.demo_interval_s:g} s")
            self.dial_demo_call()
            self.set_interval(self.services.demo_interval_s, self.dial_demo_call)

    @work(group="demo-dial", exit_on_error=False)
    async def dial_demo_call(self) -> None:
        platform = self.platform
        if platform is None:
            return
        try:
            async with VapiClient(platform.api_key, base_url=platform.url, max_retries=0) as client:
                if self._phone_number_id is None or self._assistant_id is None:
                    self._phone_number_id = (await client.list_phone_numbers())[0]["id"]
                    self._assistant_id = (await client.list_assistants(limit=1))[0]["id"]
                call = await client.create_phone_call(phone_number_id=self._phone_number_id,
                                                      customer_number=DEMO_CUSTOMER, assistant_id=self._assistant_id)
        except (VapiError, IndexError, KeyError) as exc:
            self.feed.note(f"demo: could not dial: {exc}")
            return
        self.feed.note(f"demo: dialed {DEMO_CUSTOMER} → call {short_id(call.get('id'))}")

    async def on_unmount(self) -> None:
        for worker in list(self.workers):
            if worker.group == "services":  # still starting: let it stop before closing what it made
                worker.cancel()
                try:
                    await worker.wait()
                except Exception:
                    pass
        platform, self.platform = self.platform, None
        service, self.service = self.service, None
        if platform is not None:
            await platform.close()
        if service is not None:
            await service.close()
