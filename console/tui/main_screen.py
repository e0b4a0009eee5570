"""The main screen: live calls, the selected call's transcript and barge-in timeline,
tool calls waiting for a decision, every webhook delivery with its verdict (Events),
and the platform's assistants.

It drains the `Feed` every 50 ms and updates its models and widgets in one batch;
tables are rebuilt from core state (the tracker, the gate, read through the console
context) on a timer, as bounded windows. The dialogs and screens it opens get the
context and hand their results back to it with `dismiss`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Tab, Tabs

from console.core.events import Raw, ToolDecided, ToolRequested, utc_now
from console.core.gate import (
    DEFAULT_REJECT_REASON,
    CallDecided,
    CallHeld,
    CallSettled,
    CallStalling,
    OperatorDecision,
    PendingCall,
)
from console.core.timeline import TimelineBook
from console.core.tools import ToolOutcome
from console.providers import registry
from console.tui.context import ConsoleContext
from console.tui.feed import EVENT_LOG_LINES, Feed
from console.tui.messages import CallDialed, ReplayStarted
from console.tui.screens.approve import EditArgumentsScreen, settled_sentence
from console.tui.screens.control import CallControls
from console.tui.screens.dial import DialScreen
from console.tui.screens.history import HistoryScreen
from console.tui.screens.keys import KeysScreen
from console.tui.widgets.assistants import AssistantsPane
from console.tui.widgets.events import EventsPane
from console.tui.widgets.panes import FunctionCallsTable, LiveCallsTable, short_id
from console.tui.widgets.prompt import SETTLING, PromptScreen
from console.tui.widgets.timeline import BargeTimeline
from console.tui.widgets.transcript import CallTranscript, TranscriptPane

MAX_TRANSCRIPTS = 200
MAX_DECIDED_ROWS = 60
# At least this many columns and rows: the bottom panes side by side instead of tabs.
WIDE_COLUMNS, WIDE_ROWS = 160, 44
# Fewer columns or rows than this (80x24, 100x30): the compact layout, where live calls,
# the function calls with their countdowns and the key hints still fit on screen.
COMPACT_COLUMNS, COMPACT_ROWS = 120, 36
# Live calls is as tall as its rows, up to this many (wide: a fifth of the screen).
CALL_ROWS_COMPACT, CALL_ROWS_NORMAL, CALL_ROWS_WIDE = 3, 5, 7
BOTTOM_TABS = {"tab-timeline": "timeline-pane", "tab-events": "events-pane", "tab-assistants": "assistants-pane"}


# How often what arrived is applied to the screen, in one batch. 50 ms rather than 100: event to
# screen p99 69 ms instead of 120 at 213 events/s, for 3 % of a core more (bench/tui_load.py --attached).
FLUSH_EVERY_S = 0.05


class MainScreen(Screen[None]):
    """Live calls, transcript, function calls, and below them the barge-in timeline, the
    webhook deliveries (Events) and the assistants; coordinates the panes."""

    BINDINGS = [
        # The footer fits 120 columns with a focused pane's own keys too (tests/test_tui_palette.py);
        # keys with show=False are in the help screen (f1) and the palette (ctrl+p).
        Binding("a", "approve", "Approve", tooltip="run the tool as the agent asked"),
        Binding("e", "edit", "Edit", tooltip="change the arguments, then run the tool"),
        Binding("o", "override", "Override", tooltip="answer a result yourself; the tool does not run"),
        Binding("r", "reject", "Reject", tooltip="refuse, with a reason the agent may say"),
        Binding("d", "dial", "Dial", tooltip="place a test call (assistant, from-number, number to call)"),
        Binding("s", "say", "Say", show=False, tooltip="the assistant says your words now (selected call)"),
        Binding(
            "n",
            "add_message",
            "Add msg",
            show=False,
            tooltip="insert a system or user message into the selected call's conversation",
        ),
        Binding("m", "mute", "Mute", show=False, tooltip="mute / unmute the assistant on the selected call"),
        Binding(
            "t",
            "transfer",
            "Transfer",
            show=False,
            tooltip="transfer the selected call to a number (national, or + and the country code)",
        ),
        Binding("ctrl+e", "end_call", "End call", show=False, tooltip="hang up the selected call (asks first: y / n)"),
        Binding(
            "x",
            "cut_off",
            "Cut off",
            show=False,
            tooltip="cut the agent off: drop the audio it has queued (a Twilio stream through the tap)",
        ),
        Binding("k", "keys", "Keys", show=False, tooltip="API keys: where each comes from; set, test, delete"),
        Binding("h", "history", "History"),
        # Global: whatever has focus, `/` filters the Events pane (and what is typed next goes there).
        Binding(
            "slash",
            "filter_events",
            "Filter",
            tooltip="filter the Events pane from anywhere: type to narrow, enter keeps, escape clears",
        ),
        Binding(
            "right_square_bracket",
            "bottom_tab(1)",
            "Next pane",
            show=False,
            tooltip="bottom area: timeline → events → assistants (at 120 columns they share one place)",
        ),
        Binding(
            "left_square_bracket",
            "bottom_tab(-1)",
            "Previous pane",
            show=False,
            tooltip="bottom area: the previous of timeline, events, assistants",
        ),
    ]

    def __init__(self, feed: Feed, context: ConsoleContext) -> None:
        super().__init__()
        self.feed = feed
        self.context = context
        self.selected_call: str | None = None
        self.transcripts: OrderedDict[str, CallTranscript] = OrderedDict()
        self.decided: OrderedDict[str, tuple[ToolDecided, dict[str, Any] | None]] = OrderedDict()
        self._requested: OrderedDict[str, ToolRequested] = OrderedDict()
        self.timelines = TimelineBook()
        self._tables_changed = False
        self._waiting_keys: list[str] = []  # the held tool calls at the last table refresh
        self.clock: Callable[[], datetime] = utc_now  # pinned by tests for countdowns and durations
        self.call_controls = CallControls(self, context, lambda: self.selected_call)

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
        # Narrow: one bottom pane at a time, picked by the tabs; wide (-wide): all side by side.
        yield Tabs(
            Tab("Timeline", id="tab-timeline"),
            Tab("Events", id="tab-events"),
            Tab("Assistants", id="tab-assistants"),
            id="bottom-tabs",
        )
        with Horizontal(id="bottom"):
            with Vertical(id="timeline-pane", classes="pane bottom-pane -shown") as pane:
                pane.border_title = "Barge-in timeline"
                yield BargeTimeline(id="timeline")
            with Vertical(id="events-pane", classes="pane bottom-pane") as pane:
                pane.border_title = "Events"
                yield EventsPane(self.context.store, cap=EVENT_LOG_LINES, id="events-box")
            with Vertical(id="assistants-pane", classes="pane bottom-pane") as pane:
                pane.border_title = "Assistants"
                yield AssistantsPane(
                    self.context.assistant_access,
                    self.context.agent_access,
                    self.context.number_access,
                    id="assistants-box",
                )
        yield Footer()

    def on_mount(self) -> None:
        self.set_interval(FLUSH_EVERY_S, self.flush)
        self.set_interval(0.5, self.refresh_tables)  # countdowns and durations tick
        self.set_interval(0.25, self._refresh_tables_if_changed)
        self.query_one("#events-filter").display = False

    def on_resize(self, event: Resize) -> None:
        width, height = event.size
        self.set_class(width >= WIDE_COLUMNS and height >= WIDE_ROWS, "-wide")
        compact = width < COMPACT_COLUMNS or height < COMPACT_ROWS
        self.set_class(compact, "-compact")
        footer = self.query_one(Footer)
        footer.compact = compact
        if footer.show_command_palette == compact:
            # Its room goes to the keys (ctrl+p still works). Not a recomposing reactive, so a
            # resize across the threshold must recompose the footer itself.
            footer.show_command_palette = not compact
            footer.refresh(recompose=True)
        self._fit_calls_pane()

    def _fit_calls_pane(self) -> None:
        """Live calls as tall as its rows (one at least), up to a share of the screen; the
        transcript, function calls and bottom panes share the rest. Only a change of height
        lays the screen out, so a busy console at its cap never does it again."""
        if self.has_class("-compact"):
            cap = CALL_ROWS_COMPACT
        elif self.has_class("-wide"):
            cap = max(CALL_ROWS_WIDE, self.size.height // 5)
        else:
            cap = CALL_ROWS_NORMAL
        rows = min(max(1, self.query_one(LiveCallsTable).row_count), cap)
        height = rows + 3  # the column header and the pane's border
        pane = self.query_one("#calls-pane")
        if pane.styles.height is None or pane.styles.height.value != height:
            pane.styles.height = height

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tabs.id != "bottom-tabs" or event.tab.id not in BOTTOM_TABS:
            return
        for tab_id, pane_id in BOTTOM_TABS.items():
            self.query_one(f"#{pane_id}").set_class(tab_id == event.tab.id, "-shown")

    def show_bottom(self, name: str) -> None:
        """Bring a bottom pane (timeline, events, assistants) forward; a no-op when all show."""
        self.query_one("#bottom-tabs", Tabs).active = f"tab-{name}"

    def action_bottom_tab(self, step: int) -> None:
        """Move to the next/previous bottom pane and focus it, so its own keys work at once."""
        tabs = list(BOTTOM_TABS)
        current = self.query_one("#bottom-tabs", Tabs).active
        tab = tabs[(tabs.index(current) + step) % len(tabs) if current in tabs else 0]
        self.query_one("#bottom-tabs", Tabs).active = tab
        focus = {"tab-timeline": None, "tab-events": "#events", "tab-assistants": "#assistants"}[tab]
        if focus is not None:
            self.call_after_refresh(self.query_one(focus).focus)

    def services_started(self) -> None:
        self.query_one(AssistantsPane).load()

    # --- calls down ------------------------------------------------------------------------

    def flush(self) -> None:
        """Apply everything that arrived since the last flush, in one batch."""
        events, gate_events, notes = self.feed.drain()
        deliveries = self.feed.drain_deliveries()
        if not (events or gate_events or notes or deliveries):
            self._show_timeline()  # a live call's window still slides
            return
        now = self.clock()
        lines = list(notes)
        tools_changed = bool(gate_events)
        self.timelines.apply(events)
        for event in events:
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
            elif isinstance(event, Raw) and isinstance(note := event.data.get("note"), str):
                lines.append(f"{note} ({short_id(event.call_id)})")  # e.g. a tap's malformed frame, its close
        for gate_event in gate_events:
            match gate_event:
                case CallSettled(outcome):
                    # The gate settles each call at once; the pipeline reports (and records) a
                    # batch of parallel calls only when all are settled. Show it now.
                    requested = self._requested.get(outcome.tool_call_id)
                    if requested is not None:
                        decided = outcome.event(provider=requested.provider, call_id=requested.call_id, at=utc_now())
                        self._decided_row(decided)
                        if (transcript := self.transcripts.get(requested.call_id or "")) is not None:
                            transcript.apply(decided)
                case CallDecided(call, decision) if call.tool_call_id not in self.decided:
                    # Another console decided it (this one's own decisions are shown already).
                    who = decision.operator or "another console"
                    lines.append(f"{who}: {decision.decision} {call.name} ({short_id(call.tool_call_id, 12)})")
                    self._show_decision(call, decision)
                case CallHeld(call):
                    lines.append(
                        f"tool call waiting: {call.name} on {short_id(call.call_id)}{self._held_by(call)} · "
                        f"{call.remaining_s():.0f} s to decide (a/e/o/r)"
                    )
                case CallStalling(call):
                    where = f"{short_id(call.call_id)}){self._held_by(call)}"
                    lines.append(f"the platform is stalling while {call.name} waits ({where}")
        if lines or deliveries:
            self.query_one(EventsPane).add(deliveries, [(now, line) for line in lines])
        if self.selected_call is None and self.transcripts:
            self.selected_call = next(reversed(self.transcripts))
        if tools_changed:
            # At most every 250 ms: a cell update drops the table's render caches, and a
            # busy console has tool events in most 50 ms batches.
            self._tables_changed = True
        self._show_transcript()
        self._show_timeline()

    def _held_by(self, call: PendingCall) -> str:
        """On a team: " @ rx-east", the receiver holding the call (it answers the platform)."""
        holders = getattr(self.context.gate, "holders", None)
        holder = holders.get(call.tool_call_id) if holders else None
        return f" @ {holder}" if holder else ""

    def _show_timeline(self) -> None:
        timeline = self.timelines.get(self.selected_call)
        pane = self.query_one("#timeline-pane")
        retitle(
            pane, f"Barge-in timeline · {short_id(self.selected_call)}" if self.selected_call else "Barge-in timeline"
        )
        self.query_one(BargeTimeline).show(timeline, self.clock(), self.context.tap_levels(self.selected_call))

    def _decided_row(self, event: ToolDecided) -> None:
        requested = self._requested.get(event.tool_call_id)
        self.decided[event.tool_call_id] = (event, requested.arguments if requested is not None else None)
        self.decided.move_to_end(event.tool_call_id)
        if len(self.decided) > MAX_DECIDED_ROWS:
            self.decided.popitem(last=False)

    def _refresh_tables_if_changed(self) -> None:
        if self._tables_changed:
            self.refresh_tables()

    def refresh_tables(self) -> None:
        self._tables_changed = False
        if self.context.receiver is None:
            return
        gate = self.context.gate
        pending = gate.pending() if gate is not None else []
        per_call: dict[str, int] = {}
        for call in pending:
            if call.call_id:
                per_call[call.call_id] = per_call.get(call.call_id, 0) + 1
        now = self.clock()
        instances = getattr(self.context.receiver, "instances", None)  # a team's: which receiver has each call
        rows = LiveCallsTable.rows_for(self.context.live_calls(), per_call, now, instances)
        self.query_one(LiveCallsTable).sync(rows)
        self._fit_calls_pane()
        decided = [self.decided[key] for key in reversed(self.decided)]
        tools = self.query_one(FunctionCallsTable)
        tools.sync(FunctionCallsTable.rows_for(pending, decided, now))
        waiting_keys = [call.tool_call_id for call in pending]
        if waiting_keys != self._waiting_keys:
            self._waiting_keys = waiting_keys
            if waiting_keys and tools.selected_key not in waiting_keys and (target := self.target()) is not None:
                # The cursor shows what a/e/o/r act on: off a settled row, onto the call they would decide.
                tools.follow(target.tool_call_id)
        waiting = len(pending)
        retitle(self.query_one("#tools-pane"), f"{waiting} waiting" if waiting else "", subtitle=True)

    def _show_transcript(self) -> None:
        transcript = self.transcripts.get(self.selected_call) if self.selected_call else None
        pane = self.query_one("#transcript-pane")
        retitle(pane, f"Transcript · {short_id(self.selected_call)}" if self.selected_call else "Transcript")
        self.query_one(TranscriptPane).show(transcript)

    # --- messages up -----------------------------------------------------------------------

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "calls" and event.row_key.value and event.row_key.value != self.selected_call:
            self.selected_call = event.row_key.value
            self._show_transcript()
            self._show_timeline()

    # --- approvals -------------------------------------------------------------------------

    def target(self) -> PendingCall | None:
        """The selected pending tool call; else the selected call's oldest; else the oldest."""
        gate = self.context.gate
        if gate is None:
            return None
        pending = gate.pending()
        selected = self.query_one(FunctionCallsTable).selected_key
        for call in pending:
            if call.tool_call_id == selected:
                return call
        for call in pending:
            if call.call_id == self.selected_call:
                return call
        return pending[0] if pending else None

    def settled(self, call: PendingCall) -> str | None:
        """For a dialog deciding `call`: None while the call waits for this console; else
        what happened to it without the dialog (SETTLING while that is not known yet)."""
        gate = self.context.gate
        if gate is not None and gate.get(call.tool_call_id):
            return None
        decided = self.decided.get(call.tool_call_id)
        return settled_sentence(decided[0], call) if decided is not None else SETTLING

    def decide(self, call: PendingCall, decision: OperatorDecision) -> None:
        if decision.operator is None and self.context.operator:
            decision = replace(decision, operator=self.context.operator)
        # This console's own receiver in a team (--no-attach with a team set): its decisions are
        # recorded team-wide first, as every other console's are (first writer wins).
        routing = getattr(self.context.receiver, "decisions", None)
        if routing is not None and routing.team is not None and routing.team.link.up:
            self.run_worker(self._decide_in_team(routing, call, decision), group="team-decide", exit_on_error=False)
            return
        self._decide_here(call, decision)

    async def _decide_in_team(self, routing: Any, call: PendingCall, decision: OperatorDecision) -> None:
        try:
            verdict = await routing.ask_team(call.tool_call_id, decision)
        except ValueError as exc:  # an invalid decision: as the gate would say
            self.notify(str(exc), severity="error", markup=False)
            return
        if verdict is None:  # the team cannot be asked, or does not hold it (yet): decided here
            self._decide_here(call, decision)
            return
        if verdict.outcome == "won":  # the inbox applies it to this receiver's gate
            self.feed.note(f"operator: {decision.decision} {call.name} ({short_id(call.tool_call_id, 12)})")
            self._show_decision(call, decision)
        else:
            self.notify(verdict.told(call.name), severity="warning", markup=False)
        self.refresh_tables()

    def _decide_here(self, call: PendingCall, decision: OperatorDecision) -> None:
        gate = self.context.gate
        assert gate is not None
        if gate.resolve(call.tool_call_id, decision):
            self.feed.note(f"operator: {decision.decision} {call.name} ({short_id(call.tool_call_id, 12)})")
            self._show_decision(call, decision)
        else:
            self.notify(
                self.settled(call) or f"{call.name} was already decided (or timed out).",
                severity="warning",
                markup=False,
            )
        self.refresh_tables()

    def _show_decision(self, call: PendingCall, decision: OperatorDecision) -> None:
        """A decision shown at once; the gate's outcome replaces it when the call is answered (an
        approval is answered with the rest of its batch, after the tool ran)."""
        shown = ToolOutcome(
            call.tool_call_id,
            call.name,
            decision.decision,
            "operator",
            error=decision.reason if decision.decision == "rejected" else None,
            result=None if decision.result is None else str(decision.result),
            arguments_sent=decision.arguments,
            operator=decision.operator,
        ).event(provider=call.provider, call_id=call.call_id, at=utc_now())
        self._decided_row(shown)
        if (transcript := self.transcripts.get(call.call_id or "")) is not None:
            transcript.apply(shown)
            self._show_transcript()

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
            self._ask(
                PromptScreen(
                    f"Reject {call.name}",
                    "Reason the agent may say to the caller:",
                    DEFAULT_REJECT_REASON,
                    pending=call,
                    settled=self.settled,
                ),
                lambda reason: self.decide(call, OperatorDecision("rejected", reason=reason)),
            )

    def action_override(self) -> None:
        if call := self._with_target():
            self._ask(
                PromptScreen(
                    f"Override {call.name}",
                    "Result to send instead of running the tool (text or JSON):",
                    "",
                    check=lambda value: None if value.strip() else "Type a result.",
                    pending=call,
                    settled=self.settled,
                ),
                lambda result: self.decide(call, OperatorDecision("overridden", result=result)),
            )

    def action_edit(self) -> None:
        if call := self._with_target():

            def edited(arguments: dict[str, Any] | None) -> None:
                if arguments is not None:
                    self.decide(call, OperatorDecision("edited", arguments=arguments))

            self.app.push_screen(EditArgumentsScreen(call, self.settled), edited)

    def action_filter_events(self) -> None:
        """`/` anywhere on the main screen: the Events pane comes forward with its filter focused."""
        self.show_bottom("events")
        self.call_after_refresh(self.query_one(EventsPane).action_filter)

    # --- dial, keys, history and live call control (console/tui/screens) ----------------------

    def action_dial(self) -> None:
        self.app.push_screen(DialScreen(self.context), self.call_dialed)

    def call_dialed(self, dialed: CallDialed | None) -> None:
        """Say so, keep the call's control URL for s/n/m/t/ctrl+e, and select the call."""
        if dialed is None:
            return
        if dialed.control_url:
            self.context.learn_control_url(dialed.call_id, dialed.control_url)
        self.query_one(LiveCallsTable).follow(dialed.call_id)  # the operator dialed it to watch it
        self.notify(
            f"Dialed {dialed.to}: call {dialed.call_id} ({dialed.call.status}). It is selected in "
            "Live calls as soon as the platform reports it.",
            markup=False,
            title="Dial",
        )

    def action_keys(self) -> None:
        settings = self.context.settings
        self.app.push_screen(
            KeysScreen(
                self.context.secrets,
                base_urls={spec.name: spec.base_url(settings) for spec in registry.specs() if spec.base_url},
            )
        )

    def action_history(self) -> None:
        self.app.push_screen(
            HistoryScreen(self.context.store, self.context.settings.db_path, self.context.replay), self.replay_started
        )

    def replay_started(self, started: ReplayStarted | None) -> None:
        """Watch the replay: its call is selected, its transcript starts afresh."""
        if started is not None:
            self.transcripts.pop(started.replay_id, None)
            self.selected_call = started.replay_id

    def action_say(self) -> None:
        self.call_controls.say()

    def action_add_message(self) -> None:
        self.call_controls.add_message()

    def action_mute(self) -> None:
        self.call_controls.toggle_mute()

    def action_transfer(self) -> None:
        self.call_controls.transfer()

    def action_end_call(self) -> None:
        self.call_controls.end()

    def action_cut_off(self) -> None:
        self.call_controls.cut_off()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cut_off" and self.context.replay.running:
            return False  # x stops a running replay (the app's key) rather than cutting an agent off
        return super().check_action(action, parameters)


def retitle(widget: Widget, text: str, *, subtitle: bool = False) -> None:
    """Set a border title only when it changes: any assignment repaints the whole pane."""
    attr = "border_subtitle" if subtitle else "border_title"
    if getattr(widget, attr) != text:
        setattr(widget, attr, text)
