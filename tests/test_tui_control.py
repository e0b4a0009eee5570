"""Live call control from the main screen under Pilot: the real receiver, the
in-process simulated platform (`--demo`) and its per-call control URL. Each action
is checked by its effect on the running simulated call."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, Label

from console.config import VapiSettings
from console.core.calls import CallTracker
from console.core.events import CallStatus, utc_now
from console.providers.vapi.normalize import normalize_message
from console.secrets import SecretStore
from console.store.queries import get_call
from console.tui.app import Services, VoiceConsoleApp
from console.tui.screens.control import AddMessageScreen
from console.tui.widgets.panes import LiveCallsTable
from console.tui.widgets.prompt import ConfirmScreen, PromptScreen
from tests.helpers.tui import ONE_HELD, SIZE, demo_app, record_notifications, type_text, wait_for, wait_for_pending

pytestmark = pytest.mark.e2e  # runs the whole simulated platform (--demo)


async def running_call(pilot, app):
    """The selected demo call, held on a tool call so it stays in progress."""
    pending = await wait_for_pending(pilot, app)
    assert app.main.selected_call == pending.call_id
    return pending.call_id, app.platform.calls[pending.call_id]


async def prompt(pilot, app, kind=PromptScreen):
    return await wait_for(pilot, lambda: isinstance(app.screen, kind) and app.screen, what=kind.__name__)


async def history_text(app, call_id: str) -> str:
    return json.dumps((await get_call(app.service.store, call_id))["events"])


async def test_say_add_message_mute_and_end_change_the_running_call(settings):
    app = demo_app(settings, policy=ONE_HELD, demo_speed=15.0)
    async with app.run_test(size=SIZE) as pilot:
        call_id, sim = await running_call(pilot, app)
        notes = record_notifications(app)

        # say: the assistant speaks the operator's words.
        await pilot.press("s")
        await prompt(pilot, app)
        await type_text(pilot, "This is the operator speaking.")
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: "This is the operator speaking." in app.main.transcripts[call_id].plain(),
            what="the said words in the transcript",
        )

        # add message: a system message lands in the conversation, and the assistant answers it.
        await pilot.press("n")
        dialog = await prompt(pilot, app, AddMessageScreen)
        dialog.query_one("#message-text", Input).value = "The caller is a VIP, offer the earliest slot."
        await pilot.press("enter")

        async def message_in_history():
            return "The caller is a VIP, offer the earliest slot." in await history_text(app, call_id)

        for _ in range(100):
            if await message_in_history():
                break
            await pilot.pause(0.1)
        assert await message_in_history()

        # mute, then unmute: the platform's own state for the call.
        await pilot.press("m")
        await wait_for(pilot, lambda: sim.muted == {"assistant"}, what="the assistant muted")
        await wait_for(pilot, lambda: app.main.call_controls.is_muted(call_id), what="the console to know")
        await pilot.press("m")
        await wait_for(pilot, lambda: sim.muted == set(), what="the assistant unmuted")

        # end: nothing happens without a yes.
        await pilot.press("ctrl+e")
        await prompt(pilot, app, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause(0.3)
        assert not sim.ended.is_set() and sim.data["status"] == "in-progress"
        await pilot.press("ctrl+e")
        confirm = await prompt(pilot, app, ConfirmScreen)
        assert "Press y to end it, n or escape to keep it." in str(confirm.query_one("#confirm-text", Label).content)
        await pilot.press("enter")  # neither yes nor no: the dialog stays and says which key does what
        await pilot.pause(0.3)
        assert app.screen is confirm and not sim.ended.is_set()
        assert (
            str(confirm.query_one("#confirm-help", Label).content)
            == "Enter does nothing here. y: end call · n or escape: cancel"
        )
        await pilot.press("n")
        await pilot.pause(0.3)
        assert app.screen is app.main and not sim.ended.is_set()
        await pilot.press("ctrl+e")
        await prompt(pilot, app, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: sim.ended.is_set(), what="the call to end")
        assert sim.data["endedReason"] == "assistant-ended-call"

        # Control on the ended call: a clear error, no dialog.
        tracker = app.service.pipeline.tracker
        await wait_for(pilot, lambda: tracker.get(call_id).status == "ended", what="the ended status")
        notes.clear()
        await pilot.press("s")
        await pilot.pause(0.1)
        assert app.screen is app.main
        assert notes == [("error", f"Call {call_id[:8]} has ended: there is nothing left to control.")]
        # Every success was reported; the control URL never was.
        assert not any("/control" in message or sim.id + "/" in message for _, message in notes)


async def test_transfer_reads_national_numbers_shows_the_country_and_sends_e164(settings):
    app = demo_app(settings, policy=ONE_HELD, demo_speed=15.0)
    async with app.run_test(size=SIZE) as pilot:
        call_id, sim = await running_call(pilot, app)
        await pilot.press("t")
        dialog = await prompt(pilot, app)

        def shown() -> tuple[str, str]:
            return (
                str(dialog.query_one("#prompt-error", Label).content),
                str(dialog.query_one("#prompt-preview", Label).content),
            )

        # A number no network can route is refused, with the reason, while typing and on enter.
        await type_text(pilot, "+10000")
        assert shown() == (
            "The number to transfer to '+10000' is not a valid phone number: it is too short for its country.",
            "",
        )
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.screen is dialog and not sim.ended.is_set()
        # National input, read in the configured region ([dial] default_region, US here), shown with its country.
        dialog.query_one(Input).value = ""
        await type_text(pilot, "(415) 555-0199")
        assert shown() == ("", "→ +1 415-555-0199 · United States")
        await pilot.press("enter")
        await wait_for(pilot, lambda: sim.ended.is_set(), what="the transfer")
        assert sim.data["endedReason"] == "assistant-forwarded-call"
        text = await history_text(app, call_id)
        assert "+14155550199" in text and '"forwarding"' in text  # sent as E.164


async def test_transfer_reads_national_numbers_in_the_configured_region(settings):
    settings.dial.default_region = "GB"
    app = demo_app(settings, policy=ONE_HELD, demo_speed=15.0)
    async with app.run_test(size=SIZE) as pilot:
        call_id, sim = await running_call(pilot, app)
        await pilot.press("t")
        dialog = await prompt(pilot, app)
        assert "a GB number" in str(dialog.query_one("#prompt-text", Label).content)
        await type_text(pilot, "020 7946 0958")
        assert str(dialog.query_one("#prompt-preview", Label).content) == "→ +44 20 7946 0958 · United Kingdom"
        await pilot.press("enter")
        await wait_for(pilot, lambda: sim.ended.is_set(), what="the transfer")
        assert "+442079460958" in await history_text(app, call_id)


async def test_control_errors_are_clear_and_mask_the_url(settings):
    app = demo_app(settings, policy=ONE_HELD, demo_speed=15.0)
    async with app.run_test(size=SIZE) as pilot:
        call_id, sim = await running_call(pilot, app)
        notes = record_notifications(app)
        control_url = app.service.pipeline.tracker.get(call_id).control_url
        assert control_url == sim.data["monitor"]["controlUrl"]  # learnt from the status updates

        # The platform is hanging up (our tracker has not heard yet): its HTTP error, masked.
        sim.ending = True
        await pilot.press("m")
        await wait_for(pilot, lambda: notes, what="the error")
        severity, message = notes[-1]
        assert severity == "error" and "answered 400" in message and "The call has ended" in message
        assert control_url not in message and "/control" not in message and sim.id not in message
        assert f"{app.platform.url}/…" in message  # scheme and host only
        assert not sim.muted

        # A Vapi call whose messages never carried a control URL.
        await app.service.pipeline.ingest_events(
            [CallStatus(at=utc_now(), provider="vapi", call_id="call-without-monitor", status="in-progress")]
        )
        table = app.main.query_one(LiveCallsTable)
        await wait_for(pilot, lambda: "call-without-monitor" in [key for key, _ in table._shown], what="its row")
        table.move_cursor(row=[key for key, _ in table._shown].index("call-without-monitor"))
        await wait_for(pilot, lambda: app.main.selected_call == "call-without-monitor", what="the selection")
        notes.clear()
        await pilot.press("ctrl+e")
        await pilot.pause(0.1)
        assert app.screen is app.main  # no confirmation for a call that cannot be ended from here
        assert notes and notes[0][0] == "error" and "No control URL is known for call call-wit" in notes[0][1]


async def test_with_no_call_there_is_nothing_to_control(settings):
    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="the receiver")
        notes = record_notifications(app)
        for key in ("s", "n", "m", "t", "ctrl+e"):
            await pilot.press(key)
        await pilot.pause(0.1)
        assert app.screen is app.main
        assert notes == [("error", "No call is selected: pick one in Live calls.")] * 5


def test_the_control_url_is_kept_beside_the_events_never_in_them():
    url = "https://phone-call-websocket.example/7f3c-call/control"
    message = {
        "type": "status-update",
        "status": "ringing",
        "timestamp": 1771320600000,
        "call": {"id": "call-1", "monitor": {"controlUrl": url, "listenUrl": "wss://x/listen"}},
    }
    inbound = normalize_message(message, received_at=utc_now(), settings=VapiSettings())
    assert inbound.extra == {"control_url": url}
    assert url not in json.dumps([event.model_dump(mode="json") for event in inbound.events])
    for bad in ("javascript:alert(1)", 42, None):
        message["call"]["monitor"]["controlUrl"] = bad
        assert "control_url" not in normalize_message(message, received_at=utc_now(), settings=VapiSettings()).extra

    tracker = CallTracker()
    tracker.note_control_url("call-2", url)  # from the dial answer, before any webhook
    tracker.process(inbound.events)
    tracker.process([CallStatus(at=utc_now(), provider="vapi", call_id="call-2", status="queued")])
    assert tracker.get("call-1").control_url is None
    tracker.note_control_url("call-1", url)
    assert tracker.get("call-1").control_url == url == tracker.get("call-2").control_url
    assert url not in repr(tracker.get("call-1"))
