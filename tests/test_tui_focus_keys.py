"""Keys whose meaning does not depend on focus work from anywhere on the main screen;
keys that do (a pane's own) show in the footer only while that pane has focus.

The pinned main screen (tests/tui_fixtures.py): the real receiver, one scripted call."""

from __future__ import annotations

import pytest
from textual.widgets import Footer, Input, Tabs
from textual.widgets._footer import FooterKey

from console.tui.widgets.events import EventsPane
from tests.helpers.pinned import pinned_app, settle
from tests.helpers.tui import record_notifications, type_text, wait_for


def focusable_panes(main) -> list:
    return [widget for widget in main.query("*") if widget.focusable and widget.id != "events-filter"]


@pytest.mark.parametrize("size", [(80, 24), (120, 36), (180, 50)])
async def test_slash_filters_the_events_from_every_pane(tmp_path, size):
    app = pinned_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        main = app.main
        events = main.query_one(EventsPane)
        box = events.query_one("#events-filter", Input)
        notes = record_notifications(app)
        panes = focusable_panes(main)
        assert len(panes) >= 4
        for pane in panes:
            main.set_focus(pane)
            await pilot.pause(0.05)
            # Typed as someone expecting a search box would: every letter is also a main-screen key.
            await type_text(pilot, "/transfer")
            await pilot.pause(0.05)
            assert app.screen is main, f"a dialog opened from {pane}"
            assert main.focused is box and box.value == "transfer", pane
            assert events.model.filter == "transfer"
            assert main.query_one("#bottom-tabs", Tabs).active == "tab-events"
            assert main.query_one("#events-pane").has_class("-shown")
            await pilot.press("escape")  # clears and hides the filter, back to the deliveries
            await pilot.pause(0.05)
            assert events.model.filter == "" and not box.display
        assert notes == []  # no key did anything else: no "no call selected", no "nothing waits"


async def test_a_panes_own_keys_show_only_while_it_has_focus_and_filter_always(tmp_path):
    app = pinned_app(tmp_path)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot, bottom="events")
        main = app.main
        footer = main.query_one(Footer)
        for pane in focusable_panes(main):
            main.set_focus(pane)
            in_events = any(isinstance(node, EventsPane) for node in pane.ancestors)

            def footer_fits() -> bool:
                actions = {key.action for key in footer.query(FooterKey)}
                # `/` always (the Events pane's own binding or the screen's); Raw JSON only in Events.
                return bool({"filter", "filter_events"} & actions) and ("raw" in actions) == in_events

            await wait_for(pilot, footer_fits, f"the footer for {pane}")
