"""Themes: the bundled TOML files, user themes from the config dir, one toast for
broken files, the choice remembered across runs, `--theme` and `locate themes`.

The app runs for real (receiver on port 0, tmp history); conftest points the
config and state dirs into tmp."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.color import Color
from textual.command import CommandList, CommandPalette
from textual.theme import BUILTIN_THEMES
from textual.widgets import Input

from console.cli import main
from console.config import Settings, themes_dir
from console.secrets import SecretStore
from console.tui.app import Services, VoiceConsoleApp
from console.tui.main_screen import MainScreen
from console.tui.screens.help import HelpScreen
from console.tui.themes import (
    ANSI_NAMES,
    DEFAULT_THEME,
    ThemeFileError,
    bundled_themes_dir,
    load_theme_file,
    load_themes,
    read_remembered_theme,
    theme_state_path,
)
from tests.helpers.tui import wait_for

SIZE = (120, 36)
GOOD_USER_THEME = """
name = "harbour-night"
dark = true
primary = "#3FA7D6"
foreground = "#E6EEF3"
background = "#0B1620"
warning = "#F2B134"
[ansi]
green = "#7BD389"
"""


def console_app(settings: Settings, theme: str | None = None) -> VoiceConsoleApp:
    return VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={}), theme=theme))


def user_theme(file_name: str, text: str) -> Path:
    folder = themes_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    path.write_text(text, encoding="utf-8")
    return path


def contrast(first: tuple[int, int, int], second: tuple[int, int, int]) -> float:
    """WCAG contrast ratio of two sRGB colours."""

    def luminance(rgb: tuple[int, int, int]) -> float:
        def channel(value: int) -> float:
            c = value / 255
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

        r, g, b = (channel(v) for v in rgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def notifications(app: VoiceConsoleApp) -> list:
    return list(app._notifications)


# --- the files ---------------------------------------------------------------------------------


def test_every_bundled_theme_loads_validates_and_is_readable():
    files = sorted(bundled_themes_dir().glob("*.toml"))
    assert len(files) >= 4
    catalog = load_themes(user=Path("/nonexistent"))
    assert catalog.problems == []
    assert DEFAULT_THEME in catalog.themes
    assert {"console-dark", "console-light", "console-high-contrast"} <= set(catalog.themes)
    assert len(catalog.themes) == len(files)  # one theme per file, no duplicate names
    for file in files:
        loaded = load_theme_file(file)
        theme, terminal = loaded.theme, loaded.terminal
        assert catalog.themes[theme.name].file == file
        colours = theme.to_color_system().generate()  # Textual derives every $variable without error
        assert colours["primary"] and colours["text"]
        background = terminal.background_color
        # Body text, and the named colours the tables use for call status (green live,
        # yellow waiting, red barge-ins, cyan agent, magenta tool calls), must read on the
        # background: WCAG AAA for body text, AA for the rest.
        assert contrast(terminal.foreground_color, background) >= 7, theme.name
        for index, name in enumerate(ANSI_NAMES):
            if name in ("green", "yellow", "red", "cyan", "magenta"):
                assert contrast(terminal.ansi_colors[index], background) >= 4.5, (theme.name, name)
        # $warning (countdowns, "2 waiting"), $error and $success are used as text colours too.
        for name in ("warning", "error", "success"):
            colour = Color.parse(getattr(theme, name)).rgb
            assert contrast(colour, background) >= 4.5, (theme.name, name)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "x"\nprimary = "#fff"\nforeground = "#fff"\n', "missing key 'background'"),
        (
            'name = "x"\nprimary = "#ff"\nforeground = "#fff"\nbackground = "#000"\n',
            "key 'primary': '#ff' is not a colour",
        ),
        (
            'name = "x"\nprimary = "#fff"\nforeground = "#fff"\nbackground = "#000"\nacent = "#f00"\n',
            "unknown key 'acent'",
        ),
        (
            'name = "x"\nprimary = "#fff"\nforeground = "#fff"\nbackground = "#000"\n[ansi]\ngreen = "grean"\n',
            "key 'ansi.green': 'grean' is not a colour",
        ),
        ('name = "x\nprimary = 1', "not valid TOML"),
        ('name = "has space"\nprimary = "#fff"\nforeground = "#fff"\nbackground = "#000"\n', "key 'name'"),
    ],
)
def test_a_bad_theme_file_says_what_is_wrong(tmp_path, text, expected):
    file = tmp_path / "bad.toml"
    file.write_text(text)
    with pytest.raises(ThemeFileError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        load_theme_file(file)


# --- in the app --------------------------------------------------------------------------------


async def test_the_app_offers_exactly_the_bundled_themes_and_starts_on_the_default(settings):
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        assert app.theme == DEFAULT_THEME
        assert set(app.available_themes) == set(load_themes().themes)
        assert not set(app.available_themes) & set(BUILTIN_THEMES)  # Textual's own are hidden
        # The theme's palette for named colours (call status in the tables) is in use.
        assert app.ansi_theme_dark is app.themes.catalog.themes[DEFAULT_THEME].terminal


async def test_theme_picked_in_the_palette_is_applied_and_remembered_by_the_next_run(settings):
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
        await pilot.press(*"theme light")
        await pilot.pause(0.5)  # the palette searches in the background
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.theme == "console-light", "the light theme")
        assert not app.current_theme.dark
        assert app.ansi_theme_light is app.themes.catalog.themes["console-light"].terminal
        # The main screen's background really is the theme's.
        assert app.screen.styles.background.hex.upper() == "#F6F8FA"
        await wait_for(pilot, lambda: read_remembered_theme() == "console-light", "the state file")
    assert json.loads(theme_state_path().read_text()) == {"theme": "console-light"}

    again = console_app(settings)
    async with again.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert again.theme == "console-light"

    # --theme wins for that run and does not change what is remembered.
    forced = console_app(settings, theme="console-phosphor")
    async with forced.run_test(size=SIZE) as pilot:
        await pilot.pause(0.2)
        assert forced.theme == "console-phosphor"
    assert read_remembered_theme() == "console-light"


async def test_a_user_theme_from_the_config_dir_is_offered_and_usable(settings):
    user_theme("harbour.toml", GOOD_USER_THEME)
    app = console_app(settings, theme="harbour-night")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        assert app.theme == "harbour-night"
        assert "harbour-night" in app.available_themes
        assert notifications(app) == []
        # Unset named colours keep Textual's defaults; set ones are the file's.
        assert tuple(app.ansi_theme_dark.ansi_colors[2]) == (0x7B, 0xD3, 0x89)
        assert app.screen.styles.background.hex.upper() == "#0B1620"


async def test_broken_user_themes_give_one_error_toast_and_a_working_fallback(settings):
    user_theme("typo.toml", 'name = "typo"\nprimary = "#fff"\nforeground = "#fff"\nbackground = "#00000g"\n')
    user_theme("half.toml", 'name = "half"\nprimary = "#fff"\n')
    user_theme("garbled.toml", 'name = "garbled\n')
    user_theme("harbour.toml", GOOD_USER_THEME)
    theme_state_path().parent.mkdir(parents=True, exist_ok=True)
    theme_state_path().write_text(json.dumps({"theme": "half"}))  # last time's theme is now broken
    app = console_app(settings)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        await pilot.pause(0.3)
        shown = notifications(app)
        assert len(shown) == 1
        toast = shown[0]
        assert toast.severity == "error"
        for expected in (
            "3 theme files",
            "typo.toml",
            "'#00000g' is not a colour",
            "half.toml",
            "missing key 'background'",
            "garbled.toml",
            "not valid TOML",
            DEFAULT_THEME,
        ):
            assert expected in toast.message, expected
        assert app.theme == DEFAULT_THEME
        assert "harbour-night" in app.available_themes and "half" not in app.available_themes
        await pilot.press("f1")  # and the console works
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")


async def test_unknown_theme_in_the_app_falls_back_with_a_warning(settings):
    app = console_app(settings, theme="no-such-theme")
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await pilot.pause(0.3)
        assert app.theme == DEFAULT_THEME
        [toast] = notifications(app)
        assert toast.severity == "warning" and "no-such-theme" in toast.message


async def test_a_state_file_that_cannot_be_written_is_not_fatal(settings):
    state = theme_state_path()
    state.parent.parent.mkdir(parents=True, exist_ok=True)
    state.parent.write_text("a file where the state folder should be")
    app = console_app(settings)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        app.theme = "console-solarized"
        toast = await wait_for(pilot, lambda: notifications(app), "the warning")
        assert toast[0].severity == "warning" and "cannot be saved" in toast[0].message
        assert app.theme == "console-solarized" and app.is_running


# --- the command line --------------------------------------------------------------------------


def test_unknown_theme_on_the_command_line_is_exit_2_listing_the_names(capsys):
    assert main(["--theme", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no theme named 'nope'" in err
    for name in load_themes().names:
        assert name in err
    assert str(themes_dir()) in err


def test_theme_flag_naming_a_broken_user_file_says_what_is_wrong(capsys):
    user_theme("mine.toml", 'name = "mine"\nprimary = "#fff"\nforeground = "#fff"\n')
    assert main(["--theme", "mine"]) == 2
    err = capsys.readouterr().err
    assert "mine.toml cannot be used: missing key 'background'" in err


def test_locate_themes_prints_the_user_themes_dir(capsys):
    assert main(["locate", "themes"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(themes_dir())
    assert printed.startswith(str(Path.home()))  # conftest's tmp home, i.e. the user config dir
    assert printed.endswith(str(Path("voice-console") / "themes"))


def test_a_user_theme_with_a_bundled_name_replaces_it():
    user_theme(
        "my-dark.toml", 'name = "console-dark"\nprimary = "#FF00FF"\nforeground = "#FFFFFF"\nbackground = "#101010"\n'
    )
    catalog = load_themes()
    assert catalog.problems == []
    assert catalog.themes["console-dark"].user and catalog.themes["console-dark"].theme.primary == "#FF00FF"
    assert set(catalog.names) == {file.stem for file in bundled_themes_dir().glob("*.toml")}


async def test_the_theme_picker_offers_only_the_console_themes(settings):
    user_theme("harbour.toml", GOOD_USER_THEME)
    app = console_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen), "the main screen")
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
        await pilot.press(*"change theme")
        await pilot.pause(0.5)
        await pilot.press("enter")
        picker = await wait_for(
            pilot,
            lambda: (
                isinstance(app.screen, CommandPalette)
                and "theme" in app.screen.query_one(Input).placeholder
                and app.screen
            ),
            "the picker",
        )
        options = picker.query_one(CommandList)
        await wait_for(pilot, lambda: options.option_count > 0, "theme names")
        await pilot.pause(0.3)
        offered = {option.hit.text for option in options.options}
        assert offered == set(load_themes().names) and "harbour-night" in offered


def test_a_wheel_carries_the_bundled_themes_where_the_loader_looks(monkeypatch, tmp_path):
    """`themes/` is outside the package: pyproject ships it as data files under the prefix,
    and an installed console (no checkout beside it) loads them from there."""
    import sys
    import tomllib

    import console

    root = Path(console.__file__).parent.parent
    data_files = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    assert data_files == {"share/voice-console/themes": ["themes/*.toml"]}
    installed = tmp_path / "site-packages" / "console" / "__init__.py"
    monkeypatch.setattr(console, "__file__", str(installed))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    assert bundled_themes_dir() == tmp_path / "prefix" / "share" / "voice-console" / "themes"


# --- the selected row in 256 and 16 colours ---------------------------------------------------


def shown_background(style, system) -> str | None:
    """The background a terminal of colour `system` paints for a rendered `style`."""
    colour = style.color if style.reverse else style.bgcolor
    if colour is None:
        return None
    shown = colour.downgrade(system)
    return str(shown.number) if shown.number is not None else shown.name


def row_backgrounds(strip, x0: int, x1: int, system) -> set[str | None]:
    """The backgrounds of the cells x0..x1 of a rendered screen line."""
    found, x = set(), 0
    for segment in strip:
        if x < x1 and x + segment.cell_length > x0 and segment.style is not None:
            found.add(shown_background(segment.style, system))
        x += segment.cell_length
    return found


@pytest.mark.parametrize("focused", [False, True], ids=["blurred", "focused"])
async def test_the_selected_row_stands_out_in_256_and_16_colours_in_every_theme(settings, focused):
    """The Function calls cursor (the row a/e/o/r act on, mostly while another pane has focus)
    must stay a band of its own when a 256- or 16-colour terminal (tmux) rounds the colours,
    and carry a mark that needs no colour at all."""
    from rich.color import ColorSystem

    from console.core.events import ToolDecided, ToolRequested, utc_now
    from console.tui.widgets.panes import FunctionCallsTable
    from console.tui.widgets.table import CURSOR_MARK

    app = console_app(settings)
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: app.service is not None, "the receiver")
        table = app.main.query_one(FunctionCallsTable)
        for n in range(4):  # four decided tool calls, through the feed as the receiver reports them
            common = {
                "at": utc_now(),
                "provider": "vapi",
                "call_id": f"call-{n % 2}",
                "tool_call_id": f"tool-{n}",
                "name": "check_availability",
            }
            app.feed.events_in(
                [
                    ToolRequested(arguments={"n": n}, **common),
                    ToolDecided(decision="approved" if n % 2 else "rejected", by="operator", **common),
                ]
            )
        await wait_for(pilot, lambda: table.row_count == 4, "four rows")
        table.move_cursor(row=1, animate=False)
        (table if focused else app.main.query_one("#calls")).focus()
        for name in load_themes().names:
            app.theme = name
            await pilot.pause(0.1)
            region = table.content_region
            strips = app.screen._compositor.render_strips()
            header, rows = strips[region.y], strips[region.y + 1 : region.y + 5]
            marks = [strip.text[region.x : region.x + 1] for strip in rows]
            assert [mark == CURSOR_MARK for mark in marks] == [False, True, False, False], (name, marks)
            for system in (ColorSystem.TRUECOLOR, ColorSystem.EIGHT_BIT, ColorSystem.STANDARD):
                cursor = row_backgrounds(rows[1], region.x, region.right, system)
                assert len(cursor) == 1, (name, system, cursor)  # one band across the row
                for label, other in (("header", header), ("row 0", rows[0]), ("row 2", rows[2]), ("row 3", rows[3])):
                    assert cursor.isdisjoint(row_backgrounds(other, region.x, region.right, system)), (
                        name,
                        system.name,
                        label,
                    )
