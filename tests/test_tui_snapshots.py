"""Snapshots of the main screen in a pinned state (tests/tui_fixtures.py): the
layout at 120x36 (one bottom pane, tabbed) and at 180x50 (all side by side);
then the history (a fixed history file), help and keys screens.

Plain `def` tests: the snapshot plugin runs the app itself (stack-notes §2.5).
Update after a deliberate change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

from tests.tui_fixtures import pinned_app, pinned_tz, settle


def test_main_screen_120x36_timeline(snap_compare, tmp_path):
    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(120, 36), run_before=settle)


def test_main_screen_120x36_events(snap_compare, tmp_path):
    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(120, 36), run_before=partial(settle, bottom="events"))


def test_main_screen_120x36_assistants_without_a_key(snap_compare, tmp_path):
    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(120, 36),
                            run_before=partial(settle, bottom="assistants"))


def test_main_screen_180x50(snap_compare, tmp_path):
    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(180, 50), run_before=settle)


# --- the other screens ------------------------------------------------------------------------


async def _open(pilot, key: str, screen_type: type, *, then: tuple[str, ...] = ()) -> None:
    await settle(pilot)
    await pilot.press(key)
    deadline = time.monotonic() + 10
    while not isinstance(pilot.app.screen, screen_type) and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert isinstance(pilot.app.screen, screen_type)
    await pilot.pause(0.5)  # the screen's first query or worker
    if then:
        await pilot.press(*then)
        await pilot.pause(0.5)
    await pilot.wait_for_scheduled_animations()


def test_history_screen_120x36(snap_compare, tmp_path):
    from console.tui.screens.history import HistoryScreen
    from tests.test_tui_history import write_history

    asyncio.run(write_history(tmp_path / "history.db", calls=30))
    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(120, 36),
                            run_before=partial(_open, key="h", screen_type=HistoryScreen, then=("down", "down")))


def test_help_screen_120x36(snap_compare, tmp_path):
    from console.tui.screens.help import HelpScreen

    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(120, 36),
                            run_before=partial(_open, key="f1", screen_type=HelpScreen))


def test_keys_screen_with_no_keys_set_120x36(snap_compare, tmp_path):
    from console.tui.screens.keys import KeysScreen

    with pinned_tz():
        assert snap_compare(pinned_app(tmp_path), terminal_size=(120, 36),
                            run_before=partial(_open, key="k", screen_type=KeysScreen))
