"""Snapshots of the main screen in a pinned state (tests/tui_fixtures.py): the
layout at 80x24 (compact), 120x36 (one bottom pane, tabbed), 160x48 and 180x50 (all
side by side), with a tool call held for the operator at 80x24 and 160x48; then the
dial dialog at 80x24, the history (a fixed history file), help and keys screens.

Plain `def` tests: the snapshot plugin runs the app itself (stack-notes §2.5).
Update after a deliberate change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

import httpx

from console.secrets import SecretStore
from console.tui.app import Services, VoiceConsoleApp
from tests.helpers.pinned import CALL_ID, PINNED_NOW, ago, pinned_app, pinned_settings, pinned_tz, settle
from tests.helpers.tui import wait_for

HELD_FOR_S = 3  # the held call arrived this long before the pinned clock: "⏳ 12.0s" at the default 15 s
WEBHOOK_SECRET = "snapshot-webhook-secret"


def signed_app(tmp_path) -> VoiceConsoleApp:
    """`pinned_app` with a Vapi webhook secret, so a tool call can be sent to it."""
    store = SecretStore(env={"VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": WEBHOOK_SECRET})
    app = VoiceConsoleApp(Services(pinned_settings(tmp_path), secret_store=store))
    app.main.clock = lambda: PINNED_NOW
    return app


async def settle_with_held_call(pilot) -> None:
    """The pinned screen plus a tool call the receiver holds for the operator, sent over
    HTTP as Vapi sends it; the gate's clock is pinned so the countdown reads the same."""
    await settle(pilot)
    app = pilot.app
    app.service.gate._clock = lambda: ago(HELD_FOR_S)
    body = {
        "message": {
            "type": "tool-calls",
            "call": {"id": CALL_ID},
            "toolCallList": [
                {
                    "id": "call_tool_0002",
                    "type": "function",
                    "function": {
                        "name": "book_appointment",
                        "arguments": {"patient_name": "Dana Whitfield", "date": "2026-02-24", "time": "09:30"},
                    },
                }
            ],
        }
    }

    async def post() -> None:
        async with httpx.AsyncClient() as client:  # answered when the app closes the receiver
            await client.post(
                app.service.server.url + "/webhook/vapi",
                json=body,
                timeout=30,
                headers={app.context.settings.vapi.webhook.secret_header: WEBHOOK_SECRET},
            )

    app.run_worker(post(), exit_on_error=False)
    await wait_for(pilot, lambda: app.service.gate.pending(), "the held tool call")
    await pilot.pause(0.3)
    app.main.flush()
    app.main.refresh_tables()
    await pilot.pause(0.2)
    await pilot.wait_for_scheduled_animations()


def test_main_screen_120x36_timeline(snap_compare, tmp_path):
    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(120, 36), run_before=settle)


def test_main_screen_120x36_events(snap_compare, tmp_path):
    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(120, 36), run_before=partial(settle, bottom="events"))


def test_main_screen_120x36_assistants_without_a_key(snap_compare, tmp_path):
    with pinned_tz():
        assert snap_compare(
            pinned_app(tmp_path), terminal_size=(120, 36), run_before=partial(settle, bottom="assistants")
        )


def test_main_screen_180x50(snap_compare, tmp_path):
    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(180, 50), run_before=settle)


def test_main_screen_80x24_compact_with_a_held_call(snap_compare, tmp_path):
    """The default terminal: live calls, the held call with its countdown and the keys on screen."""
    with pinned_tz():
        assert snap_compare(signed_app(tmp_path), terminal_size=(80, 24), run_before=settle_with_held_call)


def test_main_screen_160x48_with_a_held_call(snap_compare, tmp_path):
    with pinned_tz():
        assert snap_compare(signed_app(tmp_path), terminal_size=(160, 48), run_before=settle_with_held_call)


# --- the other screens ------------------------------------------------------------------------


async def _open(pilot, key: str, screen_type: type, *, then: tuple[str, ...] = ()) -> None:
    await settle(pilot)
    await pilot.press(key)
    deadline = time.monotonic() + 10
    while not isinstance(pilot.app.screen, screen_type) and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert isinstance(pilot.app.screen, screen_type)
    # A blinking cursor is drawn or not depending on when the frame is taken: keep it on.
    for field in pilot.app.screen.query("Input, TextArea"):
        field.cursor_blink = False
    await pilot.pause(0.5)  # the screen's first query or worker
    if then:
        await pilot.press(*then)
        await pilot.pause(0.5)
    await pilot.wait_for_scheduled_animations()


def test_dial_dialog_80x24(snap_compare, tmp_path):
    """The whole form fits; a national number shows formatted with its country."""
    from console.tui.screens.dial import DialScreen

    async def open_dial(pilot) -> None:
        await _open(pilot, key="d", screen_type=DialScreen, then=tuple("4155550142"))
        dialog = pilot.app.screen
        # No key here: wait for that verdict (the keyring lookup runs in a worker), not a clock.
        await wait_for(pilot, lambda: "No Vapi API key" in str(dialog.query_one("#dial-status").content), "the verdict")
        await pilot.pause(0.2)
        await pilot.wait_for_scheduled_animations()

    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(80, 24), run_before=open_dial)


def test_history_screen_120x36(snap_compare, tmp_path):
    from console.tui.screens.history import HistoryScreen
    from tests.helpers.history import write_history

    asyncio.run(write_history(tmp_path / "history.db", calls=30))
    with pinned_tz():
        assert snap_compare(
            pinned_app(tmp_path),
            terminal_size=(120, 36),
            run_before=partial(_open, key="h", screen_type=HistoryScreen, then=("down", "down")),
        )


def test_help_screen_120x36(snap_compare, tmp_path):
    from console.tui.screens.help import HelpScreen

    with pinned_tz():
        assert snap_compare(
            pinned_app(tmp_path), terminal_size=(120, 36), run_before=partial(_open, key="f1", screen_type=HelpScreen)
        )


def test_keys_screen_with_no_keys_set_120x36(snap_compare, tmp_path):
    from console.tui.screens.keys import KeysScreen

    with pinned_tz():
        assert snap_compare(
            pinned_app(tmp_path), terminal_size=(120, 36), run_before=partial(_open, key="k", screen_type=KeysScreen)
        )
