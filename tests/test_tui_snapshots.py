"""Snapshots of the main screen in a pinned state (tests/tui_fixtures.py): the
layout at 120x36 (one bottom pane, tabbed) and at 180x50 (all side by side).

Plain `def` tests: the snapshot plugin runs the app itself (stack-notes §2.5).
Update after a deliberate change with `pytest tests/test_tui_snapshots.py --snapshot-update`
and look at the SVGs in tests/__snapshots__/ before committing them.
"""

from __future__ import annotations

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
