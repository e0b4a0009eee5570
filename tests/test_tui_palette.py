"""The command palette, the help screen and the footer, read from the real bindings.

Expected entries are taken from the classes' own BINDINGS here, so an action
another module binds is checked without editing this file."""

from __future__ import annotations

import pytest
from textual.binding import Binding
from textual.command import CommandList, CommandPalette
from textual.widgets import Footer, Input, Label, Static
from textual.widgets._footer import FooterKey

from console.config import Settings
from console.secrets import SecretStore
from console.tui.app import Services, VoiceConsoleApp
from console.tui.main_screen import MainScreen
from console.tui.screens.help import APPROVALS_TEXT, HelpScreen
from console.tui.themes import load_themes
from console.tui.widgets.prompt import PromptScreen
from tests.helpers.tui import ONE_HELD, decision_in_history, demo_app, wait_for, wait_for_pending

pytestmark = pytest.mark.e2e  # runs the whole simulated platform (--demo)

SIZE = (120, 36)


def console_app(settings: Settings) -> VoiceConsoleApp:
    return VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))


def described(*classes) -> list[Binding]:
    """Every binding with a description the given classes declare themselves."""
    return [
        binding
        for cls in classes
        for binding in Binding.make_bindings(cls.__dict__.get("BINDINGS", []))
        if binding.description
    ]


def shown(hit) -> str:
    """What a palette entry shows: the title, then its keys."""
    return hit.prompt.plain


def keys_of(app: VoiceConsoleApp, binding: Binding) -> list[str]:
    """The keys shown for `binding`'s action (every key bound to it)."""
    keys = [app.get_key_display(b) for b in described(MainScreen, VoiceConsoleApp) if b.action == binding.action]
    return " / ".join(dict.fromkeys(keys)).split()


async def open_palette(pilot, app: VoiceConsoleApp, query: str = "") -> dict[str, object]:
    await pilot.press("ctrl+p")
    palette = await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette) and app.screen, "the palette")
    if query:
        await pilot.press(*query)
    options = palette.query_one(CommandList)
    await wait_for(pilot, lambda: options.option_count > 0, "palette entries")
    count = -1
    while count != options.option_count:  # until the list stops growing
        count = options.option_count
        await pilot.pause(0.3)
    return {option.hit.text: option.hit for option in options.options}


async def test_palette_lists_every_bound_action_with_its_key_and_the_themes(settings):
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        main = app.screen
        enabled = {
            (active.binding.action, active.binding.key) for active in main.active_bindings.values() if active.enabled
        }
        expected = [b for b in described(MainScreen, VoiceConsoleApp) if (b.action, b.key) in enabled]
        assert {"approve", "edit", "override", "reject", "help", "quit"} <= {b.action for b in expected}
        hits = await open_palette(pilot, app)
        for binding in expected:
            assert binding.description in hits, binding
            assert shown(hits[binding.description]).split() == [*binding.description.split(), *keys_of(app, binding)]
        assert shown(hits["Help"]).split() == ["Help", "f1", "/", "?"]  # both keys of one action, one entry
        for name in load_themes().names:
            assert f"Theme: {name}" in hits
        assert "Change theme…" in hits
        # Textual's own focus and copy keys are not the console's actions.
        assert not {"Focus Next", "Focus Previous", "Copy selected text"} & set(hits)


async def test_palette_adds_the_focused_panes_own_actions(settings):
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        main = app.screen
        panes = [
            widget
            for widget in main.query("*")
            if widget.focusable and described(type(widget)) and type(widget).__module__.startswith("console.")
        ]
        assert panes, "no pane binds keys of its own"
        for pane in panes:
            main.set_focus(pane)
            await pilot.pause(0.1)
            hits = await open_palette(pilot, app)
            # Its shown keys are actions; its hidden ones (cursor moves) are not listed.
            shown = {b.description for b in described(type(pane)) if b.show}
            hidden = {b.description for b in described(type(pane)) if not b.show} - shown
            assert shown <= set(hits), pane
            assert not hidden & set(hits), pane
            assert "Approve" in hits  # the screen's actions stay
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is main, "the palette closed")


async def test_a_palette_hit_runs_its_action(settings):
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        hits = await open_palette(pilot, app, "help")
        assert "Help" in hits
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen from the palette")
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "back on the main screen")

        hits = await open_palette(pilot, app, "Theme: console-phosphor")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.theme == "console-phosphor", "the theme from the palette")


async def test_approving_from_the_palette_decides_the_waiting_call(settings):
    app = demo_app(settings, policy=ONE_HELD)
    async with app.run_test(size=SIZE) as pilot:
        target = await wait_for_pending(pilot, app)
        hits = await open_palette(pilot, app, "approve")
        assert shown(hits["Approve"]).split() == ["Approve", "a"]
        await pilot.press("enter")
        tool = await decision_in_history(pilot, app, target.call_id, target.tool_call_id)
        assert (tool["decision"], tool["by"]) == ("approved", "operator")


async def test_help_lists_every_binding_by_area_and_closes_with_escape(settings):
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        await pilot.press("f1")
        help_screen = await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen, "help")
        titles = [str(label.render()) for label in help_screen.query(".help-group")]
        assert titles[:2] == ["Everywhere", "Main screen"]

        def rows(grid) -> list[tuple[list[str], str]]:
            cells = [str(label.render()) for label in grid.query(Label)]
            return [(keys.split(" / "), what) for keys, what in zip(cells[0::3], cells[1::3], strict=False)]

        grids = help_screen.query(".help-list")
        everywhere, main_screen = rows(grids[0]), rows(grids[1])
        for group, classes in ((everywhere, [VoiceConsoleApp]), (main_screen, [MainScreen])):
            for binding in described(*classes):  # each on a row: its keys, then what it does
                assert any(
                    app.get_key_display(binding) in keys and what == binding.description for keys, what in group
                ), binding
        assert (["^p"], "Command palette") in everywhere
        # Dialogs are listed too (the prompt's escape), without help listing itself.
        assert any("Prompt screen" in title for title in titles)
        assert not any("Help screen" in title for title in titles)
        about = str(help_screen.query_one("#help-approvals", Static).render())
        assert "How approvals and deadlines work" in about and "on_timeout" in about
        assert "How approvals" in APPROVALS_TEXT
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "help closed")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "help on ?")
        await pilot.press("question_mark")  # ? again closes it
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "help closed by ?")


async def test_question_mark_in_a_text_box_is_typed_not_help(settings):
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        app.push_screen(PromptScreen("Say", "Text to say:"))
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), "the prompt")
        await pilot.press("o", "k", "question_mark")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PromptScreen)
        assert app.screen.query_one(Input).value == "ok?"


async def test_footer_shows_the_important_keys_within_120_columns_whatever_has_focus(settings):
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        main = app.screen
        focusable = [widget for widget in main.query("*") if widget.focusable]
        assert len(focusable) >= 3
        footer = main.query_one(Footer)
        for widget in [None, *focusable]:
            main.set_focus(widget)
            # A text box takes the letter keys, so then only the others show.
            important = (
                {"help", "quit"}
                if isinstance(widget, Input)
                else {"approve", "edit", "override", "reject", "dial", "history", "help", "quit"}
            )

            def laid_out() -> bool:
                keys = list(footer.query(FooterKey))
                return important <= {key.action for key in keys} and all(key.region.width for key in keys)

            await wait_for(pilot, laid_out, f"the important keys in the footer, focus on {widget}")
            keys = list(footer.query(FooterKey))
            # Every shown key is fully on screen: none cut off or hidden under the
            # palette key docked at the right.
            palette = next(key for key in keys if key.action == "command_palette")
            assert palette.region.right <= SIZE[0]
            for key in keys:
                if key is not palette:
                    assert key.region.right <= palette.region.x, (widget, key.action)
