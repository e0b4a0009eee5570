"""The main screen's Assistants, Barge-in timeline and Events panes under Pilot,
against the real receiver and the real simulated platform on loopback."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import httpx
import pytest
from rich.console import Console
from textual.widgets import Static

from console.core.events import utc_now
from console.providers.vapi.checks import REQUIRED_SERVER_MESSAGES
from console.providers.vapi.client import VapiClient
from console.secrets import SecretStore
from console.services.pipeline import DeliverySeen
from console.simulator.retell import AGENT_ID as RETELL_AGENT_ID
from console.simulator.vapi import PHONE_NUMBER_ID, RECEPTIONIST_ID
from console.tui.app import Services, VoiceConsoleApp
from console.tui.widgets.assistants import AssistantsPane
from console.tui.widgets.events import DELIVERY_CAP, DeliveryView, EventsPane, RawDeliveryScreen
from console.tui.widgets.panes import LiveCallsTable
from console.tui.widgets.timeline import BargeTimeline, render_timeline
from tests.helpers.tui import SIZE, demo_app, wait_for

pytestmark = pytest.mark.e2e  # runs the whole simulated platform (--demo)


def plain(renderable) -> str:
    console = Console(width=200, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def assistants_pane(app: VoiceConsoleApp) -> AssistantsPane:
    return app.main.query_one(AssistantsPane)


def events_pane(app: VoiceConsoleApp) -> EventsPane:
    return app.main.query_one(EventsPane)


async def test_assistants_pane_lists_warns_and_F_fixes_server_messages(settings):
    app = demo_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = assistants_pane(app)
        await wait_for(pilot, lambda: pane.loads >= 1 and pane.assistants, what="the simulated assistants")
        assert RECEPTIONIST_ID in pane.assistants
        # An assistant that only asks for status updates: the console would be blind.
        async with VapiClient(app.platform.api_key, base_url=app.platform.url) as client:
            blind = await client.create_assistant(
                {
                    "name": "Blind assistant",
                    "serverMessages": ["status-update"],
                    "server": {"url": "https://example.test/hook", "secret": "hook-secret-value"},
                }
            )
        app.main.show_bottom("assistants")
        pane.table.focus()
        loads = pane.loads
        await pilot.press("R")
        await wait_for(pilot, lambda: pane.loads > loads and blind["id"] in pane.assistants, what="the reload")
        codes = [check.code for check in pane.checks[blind["id"]]]
        assert "server-messages-missing" in codes
        pane.table.move_cursor(row=list(pane.assistants).index(blind["id"]))
        await pilot.pause(0.1)
        shown = plain(pane.query_one("#assistant-config", Static).content)
        assert "Blind assistant" in shown and "press F to apply" in shown
        assert "hook-secret-value" not in shown and "•••• (set)" in shown  # the server secret is masked
        loads = pane.loads
        await pilot.press("F")
        await wait_for(pilot, lambda: pane.loads > loads, what="the reload after the fix")
        async with VapiClient(app.platform.api_key, base_url=app.platform.url) as client:
            fixed = await client.get_assistant(blind["id"])
        assert fixed["serverMessages"][0] == "status-update"  # kept what it had
        assert set(REQUIRED_SERVER_MESSAGES) <= set(fixed["serverMessages"])
        assert "server-messages-missing" not in [check.code for check in pane.checks[blind["id"]]]
        assert pane.table.selected_key == blind["id"]  # still on the assistant that was fixed


async def test_assistants_pane_without_a_key_explains_in_one_line(settings):
    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))
    async with app.run_test(size=SIZE) as pilot:
        pane = assistants_pane(app)
        await wait_for(pilot, lambda: pane.loads >= 1, what="the assistants pane")
        assert pane.status.startswith("No Vapi API key") and "\n" not in pane.status
        assert "keys set vapi" in pane.status


async def test_timeline_marks_the_barge_ins_of_the_storm_scenario(settings):
    app = demo_app(settings, demo_speed=2.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.platform is not None, what="the demo platform")
        async with VapiClient(app.platform.api_key, base_url=app.platform.url) as client:
            call = await client.create_phone_call(
                phone_number_id=PHONE_NUMBER_ID,
                customer_number="+14155550100",
                assistant_id=RECEPTIONIST_ID,
                assistant_overrides={"variableValues": {"scenario": "barge-in-storm"}},
            )
        table = app.main.query_one(LiveCallsTable)
        await wait_for(pilot, lambda: call["id"] in [key for key, _ in table._shown], what="the storm call listed")
        table.focus()
        table.move_cursor(row=[key for key, _ in table._shown].index(call["id"]))  # select it, as the operator would
        await wait_for(pilot, lambda: app.main.selected_call == call["id"], what="the storm call selected")
        timeline = app.main.timelines.get(call["id"])
        await wait_for(
            pilot,
            lambda: sum(m.time_to_stop_ms is not None for m in timeline.barge_ins) >= 2,
            timeout=30,
            what="two settled barge-ins",
        )
        widget = app.main.query_one(BargeTimeline)
        await wait_for(pilot, lambda: widget.timeline is timeline, what="the timeline of the selected call")
        # The simulator stops the agent's voice 0.2 s of scenario time after the caller cuts in.
        for mark in timeline.barge_ins:
            if mark.time_to_stop_ms is not None:
                assert 0 <= mark.time_to_stop_ms < 1000
        assert all(0 <= turn.latency_ms < 5000 for turn in timeline.turns)
        text = render_timeline(timeline, app.main.clock(), 110, 12).plain
        caller, agent, marks = text.splitlines()[:3]
        assert "█" in caller and "█" in agent and "↯" in marks
        assert "agent stopped after" in text
        assert f"Barge-in timeline · {call['id'][:8]}" in app.main.query_one("#timeline-pane").border_title


async def test_events_pane_verdicts_filter_and_raw_json_without_secrets(settings):
    app = demo_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = events_pane(app)
        await wait_for(
            pilot,
            lambda: any(row.seen and row.seen.verdict == "ok" for row in pane.model.rows),
            what="an accepted delivery",
        )
        wrong = "definitely-not-the-secret"
        async with httpx.AsyncClient() as client:
            response = await client.post(
                app.service.server.url + "/webhook/vapi",
                headers={"x-vapi-secret": wrong},
                json={"message": {"type": "status-update", "status": "ringing"}},
            )
        assert response.status_code == 401
        await wait_for(
            pilot,
            lambda: any(row.seen and row.seen.verdict == "rejected" for row in pane.model.rows),
            what="the rejected delivery",
        )
        rejected = next(row.seen for row in pane.model.rows if row.seen and row.seen.verdict == "rejected")
        assert rejected.status == 401 and "authentication failed" in rejected.reason

        # `/` then typing narrows the list; escape clears it.
        app.main.show_bottom("events")
        await pilot.pause(0.1)
        pane.view.focus()
        await pilot.press("slash")
        for key in "rejected":
            await pilot.press(key)
        await pilot.press("enter")
        assert pane.model.visible and all(row.seen and row.seen.verdict == "rejected" for row in pane.model.visible)
        assert "rejected" in app.main.query_one("#events-pane").border_subtitle

        # `v` on the selected (rejected) delivery: the stored request, the signature header masked.
        await pilot.press("v")
        await wait_for(
            pilot, lambda: isinstance(app.screen, RawDeliveryScreen) and app.screen.text, what="the raw view"
        )
        raw = app.screen.text
        assert "authentication failed" in raw and "[redacted]" in raw and wrong not in raw
        assert '"status-update"' in raw
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, RawDeliveryScreen), what="the raw view to close")

        pane.view.focus()
        await pilot.press("escape")
        assert pane.model.filter == "" and len(pane.model.visible) == len(pane.model.rows)

        # An accepted delivery: body, our reply and its normalized events, never the webhook secret.
        pane.apply_filter("speech-update")
        pane.view.cursor = 0
        await pilot.press("v")
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, RawDeliveryScreen) and app.screen.text,
            what="the raw view of an accepted delivery",
        )
        raw = app.screen.text
        assert '"speech-update"' in raw and "// our reply: 200" in raw and "speech." in raw
        assert app.platform._secret not in raw and "[redacted]" in raw


async def test_events_pane_stays_bounded_under_10k_deliveries(settings):
    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="the receiver")
        pane = events_pane(app)
        start = utc_now()
        started = time.perf_counter()
        for batch in range(100):  # 100 flushes of 100 deliveries: a heavy minute for the UI
            for i in range(100):
                n = batch * 100 + i
                app.feed.deliveries_in(
                    DeliverySeen(
                        start + timedelta(milliseconds=n),
                        "vapi",
                        "vapi",
                        "POST",
                        "/webhook/vapi",
                        "speech-update",
                        f"call-{n % 7}",
                        "ok",
                        None,
                        "secret",
                        200,
                        0.5,
                        delivery_id=n + 1,
                    )
                )
            app.main.flush()
        elapsed = time.perf_counter() - started
        await pilot.pause(0.1)
        assert len(pane.model.rows) == DELIVERY_CAP and len(pane.model.visible) == DELIVERY_CAP
        assert pane.model.rows[-1].seen.delivery_id == 10_000  # the newest kept, the oldest dropped
        assert pane.view.virtual_size.height == DELIVERY_CAP
        assert elapsed < 10, f"100 flushes took {elapsed:.2f} s"
        # The feed itself is bounded too when nothing drains it.
        for _ in range(DELIVERY_CAP + 500):
            app.feed.deliveries_in(
                DeliverySeen(start, "vapi", "vapi", "POST", "/", None, None, "ok", None, None, 200, 0.1)
            )
        assert len(app.feed.deliveries) == DELIVERY_CAP


async def test_narrow_layout_tabs_one_bottom_pane_wide_shows_all(settings):
    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))
    async with app.run_test(size=SIZE) as pilot:
        bottom = ["#timeline-pane", "#events-pane", "#assistants-pane"]
        shown = lambda: [app.main.query_one(pane).display for pane in bottom]  # noqa: E731
        await pilot.pause(0.1)
        assert shown() == [True, False, False] and app.main.query_one("#bottom-tabs").display
        await pilot.press("right_square_bracket")  # `]`: the next bottom pane, focused
        await pilot.pause(0.1)
        assert shown() == [False, True, False] and isinstance(app.focused, DeliveryView)
        await pilot.press("right_square_bracket", "left_square_bracket", "left_square_bracket")
        await pilot.pause(0.1)
        assert shown() == [True, False, False]
        app.main.show_bottom("events")
        await pilot.pause(0.1)
        assert shown() == [False, True, False]
        await pilot.resize_terminal(180, 50)
        await wait_for(pilot, lambda: app.main.has_class("-wide"), what="the wide layout")
        await pilot.pause(0.1)
        assert shown() == [True, True, True] and not app.main.query_one("#bottom-tabs").display
        widths = [app.main.query_one(pane).region.width for pane in bottom]
        assert widths[0] >= 55 and widths[1] >= 70 and widths[2] >= 40, widths  # a whole delivery row fits
        await pilot.resize_terminal(120, 36)
        await wait_for(pilot, lambda: not app.main.has_class("-wide"), what="the narrow layout")
        await pilot.pause(0.1)
        assert shown() == [False, True, False]
        assert app.main.query_one(DeliveryView).region.height >= 5


def test_timeline_rows_stay_in_line_at_any_width():
    from rich.cells import cell_len

    from console.core.calls import CallTracker
    from console.core.timeline import TimelineBook
    from tests.helpers.pinned import CALL_ID, PINNED_NOW, script

    book = TimelineBook()
    book.apply(CallTracker().process(script()))  # as the pipeline delivers them: one barge-in, at the overlap
    timeline = book.get(CALL_ID)
    for width in (40, 67, 118, 176):
        lines = render_timeline(timeline, PINNED_NOW, width, 12).plain.splitlines()
        assert all(cell_len(line) == width for line in lines[:4]), width  # lanes, marks, axis: one cell per column
        assert lines[3].rstrip().endswith("now") and "-60s" in lines[3]
    text = render_timeline(timeline, PINNED_NOW, 118, 12).plain
    assert "latency last 640 ms · median 730 ms (2 turns)" in text
    assert "barge-ins 1 · time-to-stop last 240 ms" in text


def test_delivery_log_filters_and_stays_bounded_without_textual():
    from console.tui.widgets.events import DeliveryLog, LogRow

    log = DeliveryLog(cap=5)
    now = utc_now()
    rows = [
        LogRow(
            now,
            seen=DeliverySeen(
                now,
                "vapi" if n % 2 else "retell",
                "vapi",
                "POST",
                "/",
                "speech-update",
                f"c{n}",
                "ok" if n % 3 else "rejected",
                None if n % 3 else "bad sig",
                None,
                200 if n % 3 else 401,
                1.0,
            ),
        )
        for n in range(12)
    ]
    log.add(rows[:8])
    assert len(log.rows) == 5 and [row.seen.call_id for row in log.visible] == ["c3", "c4", "c5", "c6", "c7"]
    log.set_filter("  REJECTED ")
    assert [row.seen.call_id for row in log.visible] == ["c3", "c6"]
    log.add(rows[8:])  # new rows are filtered as they come
    assert [row.seen.call_id for row in log.visible] == ["c9"]  # c3 and c6 fell out of the last 5
    log.set_filter("")
    assert len(log.visible) == 5


def test_config_view_masks_secrets_at_any_depth():
    from console.tui.widgets.assistants import MASK, mask_secrets

    shown = mask_secrets(
        {
            "server": {"url": "https://x", "secret": "s3", "headers": {"Authorization": "Bearer t"}},
            "credentialIds": ["cred-1"],
            "model": {"apiKey": "k", "model": "gpt-4o"},
            "name": "A",
            "response_engine": {"llm_websocket_url": "wss://t.example/llm/retell/tok3n"},
            "webhook_url": "https://hooks.example/retell?sig=abc",
        }
    )
    assert shown == {
        "server": {"url": "https://x", "secret": MASK, "headers": {"Authorization": MASK}},
        "credentialIds": MASK,
        "model": {"apiKey": MASK, "model": "gpt-4o"},
        "name": "A",
        "response_engine": {"llm_websocket_url": "wss://t.example/llm/retell/<token>"},  # the tap's token
        "webhook_url": "https://hooks.example/retell?…",  # a query may carry a secret
    }


# --- 80x24: the compact layout and every dialog fit -------------------------------------------


def within(widget, size) -> bool:
    region = widget.region
    return (
        region.width > 0
        and region.height > 0
        and region.x >= 0
        and region.y >= 0
        and region.right <= size[0]
        and region.bottom <= size[1]
    )


def screen_text(app) -> list[str]:
    return [strip.text for strip in app.screen._compositor.render_strips()]


async def test_at_80x24_calls_countdowns_keys_and_every_dialog_fit(settings):
    from textual.widgets import Button, Footer

    from console.tui.screens.approve import EditArgumentsScreen
    from console.tui.screens.dial import DialScreen
    from console.tui.screens.help import HelpScreen
    from console.tui.widgets.panes import FunctionCallsTable
    from console.tui.widgets.prompt import ConfirmScreen, PromptScreen
    from tests.helpers.tui import ONE_HELD, wait_for_pending

    size = (80, 24)
    app = demo_app(settings, policy=ONE_HELD)
    async with app.run_test(size=size) as pilot:
        held = await wait_for_pending(pilot, app)
        await pilot.pause(0.6)  # a table refresh
        main = app.main
        assert main.has_class("-compact")
        for selector in ("#calls-pane", "#transcript-pane", "#tools-pane", "#bottom", Footer):
            assert within(main.query_one(selector), size), selector
        lines = screen_text(app)
        assert len(lines) == 24 and all(len(line) <= 80 for line in lines)
        # The held call's row shows its countdown, marked as the one the keys act on.
        tools = main.query_one(FunctionCallsTable)
        assert tools.selected_key == held.tool_call_id
        row = next(line for line in lines if "▶" in line and held.name[:12] in line)
        assert "⏳" in row and "s " in row[row.index("⏳") :], row
        assert all(key in lines[-1] for key in ("Approve", "Edit", "Override", "Reject", "Dial", "Quit", "Help"))
        # Live calls: its one call, with the pane no taller than its rows.
        assert main.query_one("#calls-pane").region.height == 4

        async def open_and_check(key: str, screen_type: type, box: str, then: str = "escape") -> None:
            await pilot.press(key)
            dialog = await wait_for(
                pilot, lambda: isinstance(app.screen, screen_type) and app.screen, what=f"the dialog of {key}"
            )
            await pilot.pause(0.3)
            assert within(dialog.query_one(box), size), (key, dialog.query_one(box).region)
            for button in dialog.query(Button):
                assert within(button, size), (key, button.id, button.region)
            await pilot.press(then)
            await wait_for(pilot, lambda: app.screen is main, what=f"the dialog of {key} to close")

        await open_and_check("r", PromptScreen, "#prompt-box")
        await open_and_check("o", PromptScreen, "#prompt-box")
        await open_and_check("e", EditArgumentsScreen, "#edit-box")
        await open_and_check("d", DialScreen, "#dial-box")
        dial_help = "enter: dial · escape: cancel"
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, DialScreen), what="the dial dialog")
        await pilot.pause(0.3)
        assert any(dial_help in line for line in screen_text(app))  # the whole form, to its last line
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is main, what="the dial dialog to close")
        await open_and_check("f1", HelpScreen, "#help-box")
        main.query_one("#calls").focus()
        await open_and_check("ctrl+e", ConfirmScreen, "#confirm-box", then="n")


async def test_arguments_are_cut_where_the_pane_ends_not_at_a_fixed_width(settings):
    """Function calls' arguments take the row's room (whole at 200 columns, cut with … at 120
    without the table growing sideways); the transcript wraps them whole."""
    from console.core.events import ToolDecided, ToolRequested
    from console.tui.widgets.panes import MIN_ARGUMENTS_WIDTH, FunctionCallsTable
    from console.tui.widgets.transcript import short_json

    arguments = {"patient_name": "Dana Whitfield", "date": "2026-02-24", "time": "09:30"}
    note = "prefers the morning hygienist; allergic to latex gloves"  # a value longer than 40
    shown = short_json(arguments, 10_000)
    assert len(shown) > 40
    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="the receiver")
        common = {
            "at": utc_now(),
            "provider": "vapi",
            "call_id": "call-1",
            "tool_call_id": "tool-1",
            "name": "book_appointment",
        }
        app.feed.events_in(
            [
                ToolRequested(arguments=arguments, **common),
                ToolDecided(decision="approved", by="operator", **common),
                ToolRequested(**{**common, "tool_call_id": "tool-2"}, arguments={"note": note}),
            ]
        )
        table = app.main.query_one(FunctionCallsTable)
        await wait_for(pilot, lambda: table.row_count == 1, what="the decided row")
        assert note in app.main.transcripts["call-1"].plain()  # the transcript wraps it whole

        def row_width() -> int:
            return sum(column.get_render_width(table) for column in table.columns.values())

        for size in ((200, 60), (120, 36), (160, 48)):
            await pilot.resize_terminal(*size)
            await pilot.pause(0.7)  # a table refresh after the resize
            cell, room = str(table.get_row_at(0)[5]), table.scrollable_content_region.width
            assert cell == shown or (cell.endswith("…") and shown.startswith(cell[:-1])), size
            if size == (120, 36):  # no room left at all: the least that says something, scrolled to
                assert len(cell) == MIN_ARGUMENTS_WIDTH
                continue
            # Cut only where the pane ends: then the row fills the pane exactly, and never overflows it.
            assert row_width() == room if cell != shown else row_width() <= room, size
            if size == (200, 60):
                assert len(cell) > 40, cell  # it used to stop at 40 characters whatever the room


async def test_live_calls_is_as_tall_as_its_calls_and_the_panes_share_the_rest(settings):
    """200x60 with one call: Live calls was 10 rows for 1; now the transcript, function
    calls and bottom panes get the height. Many calls grow it up to a fifth of the screen."""
    from console.core.events import CallStatus

    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="the receiver")
        main = app.main
        calls = main.query_one(LiveCallsTable)

        async def add_calls(count: int) -> None:
            start = calls.row_count
            events = [
                CallStatus(at=utc_now(), provider="vapi", call_id=f"call-{start + n}", status="in-progress")
                for n in range(count)
            ]
            app.feed.events_in(app.service.pipeline.tracker.process(events))
            await wait_for(pilot, lambda: calls.row_count == start + count, what=f"{start + count} calls")
            await pilot.pause(0.1)

        def height(selector: str) -> int:
            return main.query_one(selector).region.height

        await add_calls(1)
        assert height("#calls-pane") == 4  # border, header, the call
        assert height("#middle") >= 24 and height("#bottom") >= 24
        assert height("#calls-pane") + height("#middle") + height("#bottom") == 60 - 2  # header, footer
        await add_calls(5)
        assert height("#calls-pane") == 6 + 3
        await add_calls(30)
        assert height("#calls-pane") == 60 // 5 + 3  # capped; the table scrolls
        assert height("#middle") >= 16 and height("#bottom") >= 16
        await pilot.resize_terminal(80, 24)
        await pilot.pause(0.2)
        assert height("#calls-pane") == 3 + 3  # compact: three rows
        # Shrunk past the threshold, the footer gives the palette hint's room to the keys.
        await pilot.pause(0.2)
        assert all(key in screen_text(app)[-1] for key in ("Quit", "Help")), screen_text(app)[-1]


async def test_retell_agents_are_listed_checked_and_F_fixes_their_webhook_events(settings):
    """Under --demo the simulated Retell's agent is listed beside Vapi's assistants; an agent that
    does not send transcript_updated is flagged and F adds it with one update."""
    app = demo_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = assistants_pane(app)
        await wait_for(pilot, lambda: pane.loads >= 1 and RETELL_AGENT_ID in pane.agents, what="the Retell agent")
        assert RECEPTIONIST_ID in pane.assistants
        # The demo's agent sends what the console needs and points at its receiver: nothing to fix.
        assert [check.level for check in pane.checks[RETELL_AGENT_ID] if check.level != "info"] == []
        agent = app._retell.agents[RETELL_AGENT_ID]
        agent["webhook_events"] = None  # Retell's defaults: no transcript_updated
        app.main.show_bottom("assistants")
        pane.table.focus()
        loads = pane.loads
        await pilot.press("R")
        await wait_for(pilot, lambda: pane.loads > loads, what="the reload")
        assert "webhook-events-missing" in [check.code for check in pane.checks[RETELL_AGENT_ID]]
        pane.table.move_cursor(row=[*pane.assistants, *pane.agents].index(RETELL_AGENT_ID))
        await pilot.pause(0.1)
        shown = plain(pane.query_one("#assistant-config", Static).content)
        assert agent["agent_name"] in shown and "missing: transcript_updated" in shown and "press F to apply" in shown
        loads = pane.loads
        await pilot.press("F")
        await wait_for(pilot, lambda: pane.loads > loads, what="the reload after the fix")
        assert agent["webhook_events"] == ["call_started", "call_ended", "call_analyzed", "transcript_updated"]
        assert "webhook-events-missing" not in [check.code for check in pane.checks[RETELL_AGENT_ID]]
        assert pane.table.selected_key == RETELL_AGENT_ID


async def test_twilio_numbers_are_listed_checked_and_F_points_them_here(settings):
    """Under --demo the simulated Twilio's number is listed beside the assistants and agents: with no
    voice URL or status callback of its own it is flagged, and F points both here with one update."""
    from console.simulator.twilio import NUMBER_SID

    app = demo_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        pane = assistants_pane(app)
        await wait_for(pilot, lambda: pane.loads >= 1 and NUMBER_SID in pane.numbers, what="the Twilio number")
        codes = [check.code for check in pane.checks[NUMBER_SID]]
        assert "voice-url-missing" in codes and "status-callback-missing" in codes
        app.main.show_bottom("assistants")
        pane.table.focus()
        pane.table.move_cursor(row=[*pane.assistants, *pane.agents, *pane.numbers].index(NUMBER_SID))
        await pilot.pause(0.1)
        shown = plain(pane.query_one("#assistant-config", Static).content)
        assert "+14155550188" in shown and "none (Twilio's default)" in shown and "press F to apply" in shown
        loads = pane.loads
        await pilot.press("F")
        await wait_for(pilot, lambda: pane.loads > loads, what="the reload after the fix")
        number = app._twilio.numbers[NUMBER_SID]
        receiver = app.service.server.url
        assert number["voice_url"] == receiver + "/webhook/twilio/voice"
        assert number["status_callback"] == receiver + "/webhook/twilio/status"
        assert [check.level for check in pane.checks[NUMBER_SID] if check.level != "info"] == []
        assert pane.table.selected_key == NUMBER_SID
