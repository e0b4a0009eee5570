"""The History screen under Pilot: a real history file written by the real Store,
the console's real receiver reading it, paging, search, timeline, export, replay."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from rich.console import Console
from textual.widgets import Input, Static

from console.config import Settings
from console.core.events import (
    event_from_dict,
)
from console.secrets import SecretStore
from console.services.replay import REPLAY_MARK
from console.store import queries
from console.store.db import Store
from console.store.export import CSV_COLUMNS
from console.tui.app import Services, VoiceConsoleApp
from console.tui.screens.history import (
    PAGE_SIZE,
    STATUS_STYLE,
    HistoryScreen,
    export_path_problem,
    snippet,
)
from console.tui.widgets.panes import LiveCallsTable
from console.tui.widgets.prompt import PromptScreen
from console.tui.widgets.table import WindowTable
from tests.helpers.history import CALLS, T0, call_events, call_id, write_history
from tests.helpers.tui import SIZE, wait_for


def console_app(settings: Settings) -> VoiceConsoleApp:
    return VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))


async def open_history(pilot, app: VoiceConsoleApp) -> HistoryScreen:
    await wait_for(pilot, lambda: app.service is not None, what="the receiver")
    await pilot.press("h")
    screen = await wait_for(
        pilot, lambda: app.screen if isinstance(app.screen, HistoryScreen) else None, what="the history screen"
    )
    await wait_for(pilot, lambda: screen.query_one("#history-calls", WindowTable).row_count > 0, what="calls")
    return screen


def rows(screen: HistoryScreen, table: str = "#history-calls") -> list[str]:
    t = screen.query_one(table, WindowTable)
    return [t.coordinate_to_cell_key((i, 0)).row_key.value for i in range(t.row_count)]  # type: ignore[misc]


def subtitle(screen: HistoryScreen) -> str:
    return str(screen.query_one("#history-list-pane").border_subtitle)


def timeline_text(screen: HistoryScreen) -> str:
    console = Console(width=110, record=True, file=io.StringIO())
    console.print(screen.query_one("#history-timeline", Static).content)
    return console.export_text()


async def test_pages_through_the_calls_newest_first(settings):
    await write_history(settings.db_path)
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot, app)
        assert rows(screen) == [call_id(n) for n in range(CALLS - 1, CALLS - 1 - PAGE_SIZE, -1)]
        assert subtitle(screen) == f"page 1 · calls 1–{PAGE_SIZE} of {CALLS}"
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: subtitle(screen).startswith("page 2"), what="page 2")
        assert subtitle(screen) == f"page 2 · calls 21–40 of {CALLS}"
        assert rows(screen) == [call_id(n) for n in range(24, 4, -1)]
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: subtitle(screen).startswith("page 3"), what="page 3")
        assert subtitle(screen) == f"page 3 · calls 41–45 of {CALLS}"
        assert rows(screen) == [call_id(n) for n in range(4, -1, -1)]
        await pilot.press("right_square_bracket")  # the last page: stays
        await pilot.pause(0.2)
        assert subtitle(screen).startswith("page 3")
        await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: subtitle(screen).startswith("page 2"), what="back to page 2")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main, what="the main screen again")


async def test_the_timeline_of_the_selected_call(settings):
    await write_history(settings.db_path, calls=3)
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot, app)
        await wait_for(pilot, lambda: "call-002" in timeline_text(screen), what="the first call's timeline")
        await pilot.press("down")
        await wait_for(pilot, lambda: "call-001 · vapi · ended" in timeline_text(screen), what="call-001")
        text = timeline_text(screen)
        for expected in (
            "+0:00.000",
            "ringing",
            "in-progress",
            "Sunrise Dental, this is Ava. How can I help?",  # transcript lines, in order, with who spoke
            "caller      I'd like to book a cleaning, reference ref001x.",
            "⚡ barge-in cut: Before I look, could you tell me",
            "book_appointment(date=2026-03-10, time=09:30)",
            "book_appointment approved by operator in 1840 ms",
            "customer-ended-call · 60.0 s · cost 0.0425",
            "Booked a cleaning (call-001).",
            "(1 partial transcripts not shown; a: show them)",
        ):
            assert expected in text, (expected, text)
        assert text.index("Sunrise Dental") < text.index("ref001x") < text.index("You're booked")
        assert "+1:00.000" in text  # relative to the call's first event
        assert "+0:03.000" not in text  # the partial line is hidden by default
        await pilot.press("a")  # every event, the partial transcripts too
        await wait_for(pilot, lambda: "not shown" not in timeline_text(screen), what="the partials")
        partial = [line for line in timeline_text(screen).splitlines() if "+0:03.000" in line]
        assert partial and partial[0].split()[1:] == ["caller", "I'd", "like", "to"]


async def test_search_finds_a_transcript_phrase_and_opens_its_call(settings):
    await write_history(settings.db_path)
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot, app)
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"ref017x", "enter")
        await wait_for(pilot, lambda: subtitle(screen) == "page 1 · lines 1–1 of 1", what="one hit")
        hits = screen.query_one("#history-hits", WindowTable)
        assert hits.display and not screen.query_one("#history-calls").display
        assert "ref017x" in str(hits.get_row_at(0)[3])
        await wait_for(pilot, lambda: "call-017 · vapi" in timeline_text(screen), what="the hit's call")
        # Every call says "book": pages of hits, newest first.
        screen.query_one("#history-search", Input).value = ""
        await pilot.press("slash", *"book cleaning", "enter")
        await wait_for(pilot, lambda: subtitle(screen) == f"page 1 · lines 1–{PAGE_SIZE} of {CALLS}", what="hits")
        await pilot.press("escape")  # back to the call list
        await wait_for(pilot, lambda: screen.query_one("#history-calls").display, what="the call list")
        assert subtitle(screen) == f"page 1 · calls 1–{PAGE_SIZE} of {CALLS}"


async def test_export_the_selected_call_and_everything(settings, tmp_path):
    await write_history(settings.db_path, calls=3)
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot, app)
        status = screen.query_one("#history-status", Static)

        # The selected call, as JSON lines.
        await pilot.press("e")
        prompt = await wait_for(
            pilot, lambda: app.screen if isinstance(app.screen, PromptScreen) else None, what="the path prompt"
        )
        assert prompt.query_one(Input).value.endswith("voice-console-call-call-002.jsonl")  # a sensible default
        target = tmp_path / "call.jsonl"
        prompt.query_one(Input).value = str(target)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Exported" in str(status.content), what="the export")
        events = [event_from_dict(json.loads(line)) for line in target.read_text().splitlines()]
        assert [e.call_id for e in events] == ["call-002"] * len(events)
        assert len(events) == len(call_events(2)) + 1  # + the operator's decision
        assert str(status.content) == f"Exported {len(events)} events as jsonl to {target}"

        # Everything, as CSV (the extension picks the format).
        await pilot.press("E")
        prompt = await wait_for(
            pilot, lambda: app.screen if isinstance(app.screen, PromptScreen) else None, what="the path prompt"
        )
        everything = tmp_path / "all.csv"
        prompt.query_one(Input).value = str(everything)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "as csv" in str(status.content), what="the csv export")
        table = list(csv.DictReader(io.StringIO(everything.read_text())))
        assert tuple(table[0]) == CSV_COLUMNS and len(table) == 3 * (len(call_events(0)) + 1)
        assert {row["call_id"] for row in table} == {"call-000", "call-001", "call-002"}

        # A path that cannot be written: a clear error, nothing left behind.
        await pilot.press("e")
        prompt = await wait_for(
            pilot, lambda: app.screen if isinstance(app.screen, PromptScreen) else None, what="the path prompt"
        )
        prompt.query_one(Input).value = str(tmp_path / "no" / "such" / "dir" / "x.jsonl")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "Cannot write" in str(status.content), what="the error")
        assert "No such file or directory" in str(status.content)
        assert not (tmp_path / "no").exists()


def test_the_export_path_is_checked_before_anything_runs(tmp_path):
    assert export_path_problem("") == "Type a file path."
    assert "ending in .jsonl or .csv" in export_path_problem(str(tmp_path))
    assert "picks the format" in export_path_problem(str(tmp_path / "x.txt"))
    assert export_path_problem(str(tmp_path / "x.CSV")) is None


async def test_replay_shows_the_call_on_the_main_screen_without_touching_the_history(settings):
    await write_history(settings.db_path, calls=2, length_s=6.0)
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot, app)
        counts = await queries.counts(app.service.store)
        await pilot.press("plus", "plus", "plus")  # 1x -> 2x -> 5x -> 10x
        assert app.replay.speed == 10
        await pilot.press("p")
        replayed = REPLAY_MARK + "call-001"
        await wait_for(pilot, lambda: app.screen is app.main, what="the main screen")
        assert app.main.selected_call == replayed  # the operator watches the replay
        await wait_for(
            pilot,
            lambda: (
                replayed in app.main.transcripts
                and "You're booked for Tuesday" in app.main.transcripts[replayed].plain()
            ),
            timeout=10,
            what="the replayed transcript",
        )
        transcript = app.main.transcripts[replayed].plain()
        assert "reference ref001x" in transcript and "barge::Before I look" in transcript
        await wait_for(pilot, lambda: not app.replay.running, what="the end of the replay")
        app.main.refresh_tables()
        calls = app.main.query_one(LiveCallsTable)
        assert str(calls.get_row(replayed)[1]) == "ended"
        assert (
            "tool::book_appointment(date=2026-03-10, time=09:30):approved by operator"
            in app.main.transcripts[replayed].plain()
        )
        assert REPLAY_MARK + "call-001-t1" in app.main.decided  # the function-calls pane has it too
        assert await queries.counts(app.service.store) == counts  # a replay is only shown, never recorded
        del screen


async def test_replay_pauses_changes_speed_and_stops_from_the_main_screen(settings):
    await write_history(settings.db_path, calls=1, length_s=60.0)
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await open_history(pilot, app)
        await pilot.press("p")  # 1x: a minute-long call
        await wait_for(pilot, lambda: app.screen is app.main and app.replay.shown >= 2, what="the first events")
        await pilot.press("space")
        assert app.replay.clock.paused
        shown = app.replay.shown
        await pilot.pause(0.6)
        assert app.replay.shown == shown  # nothing moves while paused
        await pilot.press("plus")
        assert app.replay.clock.speed == 2
        await pilot.press("space", "x")
        assert not app.replay.running and app.replay.clock.stopped
        assert not app.replay.clock.paused
        await pilot.press("x")  # nothing to stop: the key is free again
        assert not app.replay.running
        # Quitting in the middle of a replay is clean.
        await open_history(pilot, app)
        await pilot.press("p")
        await wait_for(pilot, lambda: app.replay.running and app.replay.shown >= 1, what="a second replay")
        await pilot.press("ctrl+q")
    assert app.return_code == 0 and not app.replay.running


def test_search_snippet_keeps_the_match_in_view():
    text = "word " * 30 + "the booking reference is here " + "tail " * 20
    shown = snippet(text, ["booking"], 30)
    assert "booking" in shown.plain and shown.plain.startswith("…") and shown.plain.endswith("…")
    assert len(shown.plain) <= 32
    assert any("reverse" in str(span.style) for span in shown.spans)


@pytest.mark.parametrize("fts", [True, False])
async def test_search_pages_and_counts_agree_with_and_without_fts(settings, fts):
    await write_history(settings.db_path, calls=7)
    async with await Store.open(settings.db_path, fts=fts) as store:
        assert store.fts_enabled is fts
        assert await queries.count_calls(store) == 7
        assert await queries.count_calls(store, provider="retell") == 0
        assert await queries.count_search(store, "booked tuesday") == 7
        first = await queries.search_page(store, "booked tuesday", limit=3)
        rest = await queries.search_page(store, "booked tuesday", limit=10, offset=3)
        assert [h["call_id"] for h in first + rest] == [call_id(n) for n in range(6, -1, -1)]
        assert len({h["id"] for h in first + rest}) == 7
        assert await queries.search(store, "booked tuesday", limit=3) == [
            {k: h[k] for k in ("call_id", "at", "role", "text")} for h in first
        ]
        assert await queries.count_search(store, "ref003x") == 1
        assert await queries.count_search(store, "   ") == 0 and await queries.search_page(store, "") == []


async def test_call_timeline_is_bounded(settings):
    await write_history(settings.db_path, calls=1)
    async with await Store.open(settings.db_path) as store:
        full = await queries.call_timeline(store, call_id(0), limit=1000)
        assert full is not None and full["more"] == 0 and full["hidden_partials"] == 1
        kinds = [e["kind"] for e in full["events"]]
        assert "transcript.partial" not in kinds and kinds[0] == "call.status" and "tool.decided" in kinds
        cut = await queries.call_timeline(store, call_id(0), limit=4)
        assert cut["events"] == full["events"][:4] and cut["more"] == len(full["events"]) - 4
        every = await queries.call_timeline(store, call_id(0), limit=1000, partials=True)
        assert len(every["events"]) == len(full["events"]) + 1 and every["hidden_partials"] == 0
        assert await queries.call_timeline(store, "nope") is None


async def test_raw_messages_are_hidden_from_the_timeline_until_r_and_the_help_says_so(settings):
    from textual.widgets import Label

    from console.core.events import Raw
    from console.tui.screens.help import HelpScreen

    await write_history(settings.db_path, calls=1)
    async with await Store.open(settings.db_path) as store:
        await store.record_events(
            [
                Raw(
                    at=T0 + timedelta(seconds=7),
                    provider="vapi",
                    call_id=call_id(0),
                    type="model-output",
                    data={"output": "Let me"},
                )
            ]
        )
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot, app)
        await wait_for(pilot, lambda: "call-000 · vapi" in timeline_text(screen), what="the timeline")
        text = timeline_text(screen)
        assert "model-output" not in text and "(1 raw messages not shown; r: show them)" in text
        assert "r raw" in str(screen.query_one("#history-status", Static).content)  # the screen's key line
        await pilot.press("f1")
        help_screen = await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, what="help")
        cells = [str(label.render()) for label in help_screen.query(Label)]
        assert any(key == "r" and what == "Raw messages" for key, what in zip(cells, cells[1:], strict=False))
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen, what="back to the history")
        await pilot.press("r")
        await wait_for(pilot, lambda: "model-output" in timeline_text(screen), what="the raw row")
        raw = [line for line in timeline_text(screen).splitlines() if "model-output" in line]
        assert raw and raw[0].split()[1:] == ["raw", "model-output"] and "raw messages not shown" not in raw[0]
        await pilot.press("r")
        await wait_for(pilot, lambda: "model-output" not in timeline_text(screen), what="hidden again")


async def test_a_call_its_console_never_saw_end_shows_as_unknown_with_the_reason(settings):
    """Recorded in progress by a console that is gone: this console's start closes it as
    unknown, and the History screen says so in its own style, never as a live or ended call."""
    async with await Store.open(settings.db_path) as store:
        await store.record_events(call_events(0)[:4])  # ringing, in progress, talking: then nothing
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_history(pilot, app)
        table = screen.query_one("#history-calls", WindowTable)
        status = table.get_row(call_id(0))[3]
        assert str(status) == "? unknown" and status.style == STATUS_STYLE["unknown"]
        assert STATUS_STYLE["unknown"] not in {style for key, style in STATUS_STYLE.items() if key != "unknown"}
        await wait_for(pilot, lambda: "call-000 · vapi · ? unknown" in timeline_text(screen), what="the timeline")
        assert "(no end seen: the console that recorded it is no longer running after the last event at" in " ".join(
            timeline_text(screen).split()
        )
