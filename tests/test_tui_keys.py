"""The keys screen under Pilot: the conftest in-memory keyring, no keyring at all, the
null keyring, and `test` against a SimulatedPlatform as the Vapi API."""

from __future__ import annotations

import keyring
import keyring.backends.fail
import keyring.backends.null
from textual.widgets import DataTable, Input, Static

from console.secrets import NO_KEYRING_HELP, NULL_KEYRING_HELP, SERVICE, SecretStore, secret_env
from console.simulator.vapi import SimulatedPlatform
from console.tui.app import Services, VoiceConsoleApp
from console.tui.screens.keys import KeysScreen
from console.tui.widgets.prompt import ConfirmScreen, PromptScreen
from tests.helpers.tui import SIZE, record_notifications, type_text, wait_for

SECRET = "sk-live-very-secret-7f3c9a1e"


def console_app(settings, env: dict[str, str] | None = None) -> VoiceConsoleApp:
    return VoiceConsoleApp(Services(settings, secret_store=SecretStore(env=env or {})))


async def open_keys(pilot, app: VoiceConsoleApp) -> KeysScreen:
    await wait_for(pilot, lambda: app.service is not None, what="the receiver")
    await pilot.press("k")
    screen = await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen) and app.screen, what="the keys screen")
    await wait_for(pilot, lambda: len(screen.sources) == len(secret_env()), what="the sources")
    return screen


def source_cell(screen: KeysScreen, name: str) -> str:
    return str(screen.query_one("#keys-table", DataTable).get_cell(name, "source"))


def select(screen: KeysScreen, name: str) -> None:
    table = screen.query_one("#keys-table", DataTable)
    table.move_cursor(row=table.get_row_index(name))


def result(screen: KeysScreen) -> str:
    return str(screen.query_one("#keys-result", Static).content)


async def test_sources_set_and_delete_without_ever_showing_the_value(settings, isolated_environment):
    isolated_environment.store[(SERVICE, "twilio_account_sid")] = "AC" + "0" * 32
    app = console_app(settings, env={"VOICE_CONSOLE_RETELL_API_KEY": "key-from-env"})
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_keys(pilot, app)
        assert screen.sources == {
            "vapi_api_key": "none",
            "vapi_webhook_secret": "none",
            "retell_api_key": "env (VOICE_CONSOLE_RETELL_API_KEY)",
            "retell_llm_token": "keyring",  # made by the console at its start, kept for the next
            "twilio_account_sid": "keyring",
            "twilio_auth_token": "none",
            "twilio_shared_key": "none",
            "twilio_api_key_sid": "none",
            "twilio_api_key_secret": "none",
            "twilio_stream_token": "keyring",  # made at start too
            "team_redis_password": "none",  # team mode's, when the Redis URL has none
        }
        assert [source_cell(screen, name) for name in screen.sources] == [
            "none",
            "none",
            "env",
            "keyring",
            "keyring",
            "none",
            "none",
            "none",
            "none",
            "keyring",
            "none",
        ]
        assert "OS keyring: conftest MemoryKeyring" in str(screen.query_one("#keys-keyring").content)

        select(screen, "vapi_api_key")
        await pilot.press("s")
        dialog = await wait_for(
            pilot, lambda: isinstance(app.screen, PromptScreen) and app.screen, what="the set dialog"
        )
        assert dialog.query_one(Input).password
        await type_text(pilot, SECRET)
        assert dialog.query_one(Input).value == SECRET
        screenshot = app.export_screenshot()
        assert "vapi_api_key" in screenshot and SECRET not in screenshot  # the text is there, the value is dots
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: isolated_environment.store.get((SERVICE, "vapi_api_key")) == SECRET,
            what="the key in the keyring",
        )
        await wait_for(pilot, lambda: screen.sources["vapi_api_key"] == "keyring", what="the new source")
        assert source_cell(screen, "vapi_api_key") == "keyring"
        assert "Stored vapi_api_key in the OS keyring" in result(screen)
        assert SECRET not in app.export_screenshot()

        # An env override still wins: set says so.
        select(screen, "retell_api_key")
        await pilot.press("s")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), what="the set dialog")
        await type_text(pilot, "retell-key-in-keyring")
        await pilot.press("enter")
        await wait_for(pilot, lambda: "takes precedence" in result(screen), what="the env note")
        assert "VOICE_CONSOLE_RETELL_API_KEY" in result(screen)

        select(screen, "vapi_api_key")
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("n")
        await pilot.pause(0.2)
        assert isolated_environment.store.get((SERVICE, "vapi_api_key")) == SECRET  # kept
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: (SERVICE, "vapi_api_key") not in isolated_environment.store, what="the delete")
        await wait_for(pilot, lambda: screen.sources["vapi_api_key"] == "none", what="the source back to none")
        assert "Deleted vapi_api_key from the OS keyring." in result(screen)
        assert SECRET not in app.export_screenshot()
        await pilot.press("escape")
        assert app.screen is app.main


async def test_no_keyring_is_explained_and_set_explains_instead_of_asking(settings):
    keyring.set_keyring(keyring.backends.fail.Keyring())  # conftest restores the previous backend
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        notes = record_notifications(app)
        screen = await open_keys(pilot, app)
        await wait_for(
            pilot, lambda: NO_KEYRING_HELP in str(screen.query_one("#keys-keyring").content), what="the explanation"
        )
        assert set(screen.sources.values()) == {"none"}
        await pilot.press("s")
        await wait_for(pilot, lambda: "cannot be stored" in result(screen), what="the explanation on set")
        assert app.screen is screen  # no prompt for a value that could not be kept
        assert NO_KEYRING_HELP in result(screen) and "never stores keys in plaintext" in result(screen)
        assert any(severity == "error" and message == NO_KEYRING_HELP for severity, message in notes)
        await pilot.press("x")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the confirmation")
        await pilot.press("y")
        await wait_for(pilot, lambda: "was not deleted" in result(screen), what="the explanation on delete")
        await pilot.press("t")
        await wait_for(pilot, lambda: result(screen).startswith("✗ vapi"), what="the test result")
        assert "No usable OS keyring" in result(screen)


async def test_the_null_keyring_is_explained_too(settings):
    keyring.set_keyring(keyring.backends.null.Keyring())
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_keys(pilot, app)
        await wait_for(
            pilot, lambda: NULL_KEYRING_HELP in str(screen.query_one("#keys-keyring").content), what="the explanation"
        )
        await pilot.press("s")
        await wait_for(pilot, lambda: "cannot be stored" in result(screen), what="the explanation on set")
        assert app.screen is screen


async def test_test_runs_the_cli_probe_against_the_simulated_platform(settings, isolated_environment):
    async with SimulatedPlatform(None) as platform:
        settings.vapi.base_url = platform.url
        app = console_app(settings)
        async with app.run_test(size=SIZE) as pilot:
            screen = await open_keys(pilot, app)
            select(screen, "vapi_api_key")
            await pilot.press("t")
            await wait_for(pilot, lambda: result(screen).startswith("✗ vapi"), what="the missing-key result")
            assert "vapi_api_key is not set" in result(screen)

            isolated_environment.store[(SERVICE, "vapi_api_key")] = "sk-wrong"
            await pilot.press("t")
            await wait_for(pilot, lambda: "refused" in result(screen), what="the refusal")
            assert f"refused by {platform.url} (401)" in result(screen) and "sk-wrong" not in app.export_screenshot()

            await pilot.press("s")
            await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), what="the set dialog")
            await type_text(pilot, platform.api_key)
            await pilot.press("enter")
            await wait_for(pilot, lambda: "Stored vapi_api_key" in result(screen), what="the stored key")
            await pilot.press("t")
            await wait_for(pilot, lambda: result(screen).startswith("✓ vapi"), what="the accepted key")
            assert f"vapi_api_key (keyring): ok, accepted by {platform.url}" in result(screen)
            assert platform.api_key not in app.export_screenshot()
