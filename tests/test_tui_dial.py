"""The dial dialog under Pilot, against the real receiver and the in-process simulated
platform (`--demo`), or against a SimulatedPlatform reached with a key from the keyring."""

from __future__ import annotations

import pytest
from textual.widgets import Button, Input, Label, Select

from console.secrets import SERVICE, SecretStore
from console.simulator.retell import AGENT_ID, SimulatedRetell
from console.simulator.vapi import SimulatedPlatform
from console.tui.app import Services, VoiceConsoleApp
from console.tui.screens.dial import DialScreen
from console.tui.widgets.panes import LiveCallsTable
from tests.helpers.secrets import RETELL_KEY
from tests.helpers.tui import SIZE, demo_app, record_notifications, type_text, wait_for

pytestmark = pytest.mark.e2e  # runs the whole simulated platform (--demo)


async def open_dialog(pilot, app: VoiceConsoleApp) -> DialScreen:
    await pilot.press("d")
    dialog = await wait_for(pilot, lambda: isinstance(app.screen, DialScreen) and app.screen, what="the dial dialog")
    await wait_for(pilot, lambda: not dialog.query_one("#dial-from", Select).is_blank(), what="numbers loaded")
    return dialog


def text_of(dialog: DialScreen, selector: str) -> str:
    return str(dialog.query_one(selector, Label).content)


async def test_the_number_is_checked_while_typing_and_a_valid_one_dials(settings):
    app = demo_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.platform is not None and app.platform.calls, what="the first demo call")
        platform = app.platform
        before = set(platform.calls)
        notes = record_notifications(app)
        dialog = await open_dialog(pilot, app)
        button, number = dialog.query_one("#dial-go", Button), dialog.query_one("#dial-to", Input)
        assert str(dialog.query_one("#dial-assistant", Select).value) in platform.assistants
        assert button.disabled and "country code" in text_of(dialog, "#dial-to-error")

        # Numbers no network routes, each refused with its reason (libphonenumber's data).
        for bad, reason in (
            ("+10000", "too short"),
            ("0415 555 0142", "too long"),
            ("+1234567890123456", "too long"),
            ("+0415550142", "not a phone number"),
            ("+1 415 555 01", "not a valid phone number"),
        ):
            number.value = ""
            await type_text(pilot, bad)
            assert number.value == bad  # really typed, key by key
            assert button.disabled, bad
            assert reason in text_of(dialog, "#dial-to-error"), (bad, text_of(dialog, "#dial-to-error"))
            assert dialog.query_one("#dial-to-error", Label).has_class("invalid")
        await pilot.press("enter")  # refused: the dialog stays, nothing was dialed
        await pilot.pause(0.2)
        assert app.screen is dialog and set(platform.calls) == before

        # National input, as people type it: shown with its country, sent as E.164.
        number.value = ""
        await type_text(pilot, "(415) 555-0123")
        assert not button.disabled
        assert text_of(dialog, "#dial-to-error") == "✓ +1 415-555-0123 · United States"
        assert "Ready to dial +14155550123 through the simulated platform" in text_of(dialog, "#dial-status")
        chosen = (
            str(dialog.query_one("#dial-assistant", Select).value),
            str(dialog.query_one("#dial-from", Select).value),
        )
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, DialScreen), what="the dialog to close")

        new = set(platform.calls) - before
        assert len(new) == 1
        call_id = new.pop()
        placed = platform.calls[call_id].data
        assert placed["customer"]["number"] == "+14155550123"
        assert (placed["assistantId"], placed["phoneNumberId"]) == chosen
        assert any(severity == "information" and call_id in message for severity, message in notes)
        # The call shows in Live calls once the platform reports it, with its control URL known.
        table = app.main.query_one(LiveCallsTable)
        await wait_for(pilot, lambda: call_id in [key for key, _ in table._shown], what="the dialed call on screen")
        # ... and selected: its transcript and timeline are the ones on screen.
        await wait_for(pilot, lambda: app.main.selected_call == call_id, what="the dialed call selected")
        assert table.selected_key == call_id
        state = app.service.pipeline.tracker.get(call_id)
        assert state is not None and state.control_url == placed["monitor"]["controlUrl"]
        # The URL is a capability: never in what the operator was told.
        assert not any("/control" in message for _, message in notes)


async def test_each_provider_dials_through_its_simulator_and_escape_cancels(settings):
    app = demo_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.platform is not None and app.platform.calls, what="the first demo call")
        before = set(app.platform.calls)
        dialog = await open_dialog(pilot, app)
        dialog.query_one("#dial-to", Input).value = "+14155550123"
        await pilot.pause(0.05)
        assert not dialog.query_one("#dial-go", Button).disabled
        # Retell and Twilio dial too (here through the demo's simulated platforms).
        dialog.query_one("#dial-provider", Select).value = "retell"
        await wait_for(
            pilot,
            lambda: "through the simulated Retell platform (demo)" in text_of(dialog, "#dial-status"),
            what="the simulated Retell's agent and number",
        )
        assert not dialog.query_one("#dial-go", Button).disabled
        dialog.query_one("#dial-provider", Select).value = "twilio"
        await wait_for(
            pilot,
            lambda: "through the simulated Twilio platform (demo)" in text_of(dialog, "#dial-status"),
            what="the simulated Twilio's number",
        )
        assert not dialog.query_one("#dial-go", Button).disabled
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is app.main, what="the dialog to close")
        await pilot.pause(0.2)
        assert set(app.platform.calls) == before


async def test_without_a_vapi_key_the_dialog_says_so(settings):
    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="the receiver")
        dialog = await wait_for_dialog(pilot, app)
        await wait_for(pilot, lambda: "No Vapi API key" in text_of(dialog, "#dial-status"), what="the explanation")
        status = text_of(dialog, "#dial-status")
        assert "keys screen" in status and status.count("VOICE_CONSOLE_VAPI_API_KEY") == 1  # said once
        dialog.query_one("#dial-to", Input).value = "+14155550123"
        await pilot.pause(0.05)
        assert dialog.query_one("#dial-go", Button).disabled


async def wait_for_dialog(pilot, app: VoiceConsoleApp) -> DialScreen:
    await pilot.press("d")
    return await wait_for(pilot, lambda: isinstance(app.screen, DialScreen) and app.screen, what="the dial dialog")


async def test_a_platform_refusal_is_shown_in_one_line_and_the_dialog_stays(settings, isolated_environment):
    """A key from the keyring, the simulated platform as `vapi.base_url`; the number is
    removed from the account between listing and dialing, so the platform refuses."""
    async with SimulatedPlatform(None) as platform:
        isolated_environment.store[(SERVICE, "vapi_api_key")] = platform.api_key
        settings.vapi.base_url = platform.url
        app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.service is not None, what="the receiver")
            notes = record_notifications(app)
            dialog = await open_dialog(pilot, app)
            platform.phone_numbers.clear()
            dialog.query_one("#dial-to", Input).value = "+14155550123"
            await pilot.pause(0.05)
            await pilot.click("#dial-go")
            await wait_for(pilot, lambda: "Not dialed" in text_of(dialog, "#dial-status"), what="the refusal")
            status = text_of(dialog, "#dial-status")
            assert "Vapi API 400" in status and "Phone Number Not Found" in status and "\n" not in status
            assert any(severity == "error" and "Vapi API 400" in message for severity, message in notes)
            assert app.screen is dialog and not platform.calls
            assert not dialog.query_one("#dial-go", Button).disabled  # fix it and try again


async def test_a_refused_key_is_reported_when_listing(settings, isolated_environment):
    async with SimulatedPlatform(None) as platform:
        isolated_environment.store[(SERVICE, "vapi_api_key")] = "sk-wrong-key-000"
        settings.vapi.base_url = platform.url
        app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.service is not None, what="the receiver")
            dialog = await wait_for_dialog(pilot, app)
            await wait_for(pilot, lambda: "Could not list" in text_of(dialog, "#dial-status"), what="the refusal")
            status = text_of(dialog, "#dial-status")
            assert "401" in status and "sk-wrong-key-000" not in status
            assert dialog.query_one("#dial-go", Button).disabled


async def test_national_numbers_are_read_in_the_configured_region(settings):
    settings.dial.default_region = "GB"
    app = demo_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.platform is not None and app.platform.calls, what="the first demo call")
        before = set(app.platform.calls)
        dialog = await open_dialog(pilot, app)
        await type_text(pilot, "020 7946 0958")
        assert text_of(dialog, "#dial-to-error") == "✓ +44 20 7946 0958 · United Kingdom"
        dialog.query_one("#dial-to", Input).value = "(415) 555-0123"  # a US national number is not British
        await pilot.pause(0.05)
        assert dialog.query_one("#dial-go", Button).disabled and "GB number" in text_of(dialog, "#dial-to-error")
        dialog.query_one("#dial-to", Input).value = "020 7946 0958"
        await pilot.pause(0.05)
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, DialScreen), what="the dialog to close")
        [new] = set(app.platform.calls) - before
        assert app.platform.calls[new].data["customer"]["number"] == "+442079460958"


async def test_a_retell_call_is_dialed_from_the_dialog(settings):
    """The provider choice: Retell's agents and numbers load from its (simulated) API, and the call
    is placed through it with the Retell key."""
    async with SimulatedRetell(None, api_key=RETELL_KEY) as platform:
        settings.retell.base_url = platform.url
        app = VoiceConsoleApp(
            Services(settings, secret_store=SecretStore(env={"VOICE_CONSOLE_RETELL_API_KEY": RETELL_KEY}))
        )
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.service is not None, what="the receiver")
            dialog = await wait_for_dialog(pilot, app)
            await wait_for(pilot, lambda: "No Vapi API key" in text_of(dialog, "#dial-status"), what="Vapi first")
            dialog.query_one("#dial-provider", Select).value = "retell"
            await wait_for(
                pilot, lambda: dialog.query_one("#dial-from", Select).value == "+14155550199", what="numbers"
            )
            assert str(dialog.query_one("#dial-assistant", Select).value) == AGENT_ID
            dialog.query_one("#dial-to", Input).value = "(415) 555-0123"
            await pilot.pause(0.05)
            await pilot.click("#dial-go")
            await wait_for(pilot, lambda: app.screen is app.main, what="the dialog to close")
        [call] = [player.call_object() for player in platform.calls.values()]
        assert (call["from_number"], call["to_number"], call["agent_id"]) == ("+14155550199", "+14155550123", AGENT_ID)
