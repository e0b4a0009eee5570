"""Colour themes: TOML files read at run time, validated, turned into Textual themes.

The bundled themes live in the top-level `themes/` folder; users add their own in
`voice-console locate themes` (same format, a user theme with a bundled name
replaces it). A file that cannot be used is skipped and reported once, in one
toast, and the app falls back to a bundled theme: a bad theme never stops the
console. The chosen theme is remembered in a small state file.

Textual's own themes are not offered: each bundled theme here sets the colours
the tables and transcript use by name (call status, speakers, barge-ins, waiting
tool calls) through its `[ansi]` table, and was checked on the live screens;
Textual's themes leave those to a fixed palette that is hard to read on some of
them (yellow "ringing" on a light background). A user who wants one copies its
colours into a TOML file.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import tomllib
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from rich.terminal_theme import TerminalTheme
from textual._ansi_theme import (  # Textual's defaults for ANSI colours
    ALABASTER,
    MONOKAI,
)
from textual.color import Color, ColorParseError
from textual.markup import escape
from textual.theme import Theme

import console
from console.config import APP_NAME, TOML_READ_ERRORS, themes_dir, toml_problem

if TYPE_CHECKING:
    from textual.app import App

log = logging.getLogger(__name__)

DEFAULT_THEME = "console-dark"
STATE_FILE = "tui-state.json"
ANSI_NAMES = ("black", "red", "green", "yellow", "blue", "magenta", "cyan", "white")
ERROR_TOAST_SECONDS = 20


def bundled_themes_dir() -> Path:
    """The checkout's top-level `themes/` (source and editable installs), else where a
    wheel puts them (`[tool.setuptools.data-files]`): `<prefix>/share/voice-console/themes`."""
    checkout = Path(console.__file__).parent.parent / "themes"
    if (checkout / f"{DEFAULT_THEME}.toml").is_file():
        return checkout
    return Path(sys.prefix) / "share" / APP_NAME / "themes"


def theme_state_path() -> Path:
    return platformdirs.user_state_path(APP_NAME) / STATE_FILE


# --- the file format ---------------------------------------------------------------------------


def _colour(value: str) -> str:
    try:
        Color.parse(value)
    except ColorParseError:
        raise ValueError(f"{value!r} is not a colour (use #RRGGBB, rgb(…) or a colour name)") from None
    return value


class AnsiPalette(BaseModel):
    """What the named colours in tables and transcript (`green`, `yellow`…) look like."""

    model_config = ConfigDict(extra="forbid")

    black: str | None = None
    red: str | None = None
    green: str | None = None
    yellow: str | None = None
    blue: str | None = None
    magenta: str | None = None
    cyan: str | None = None
    white: str | None = None
    bright_black: str | None = None
    bright_red: str | None = None
    bright_green: str | None = None
    bright_yellow: str | None = None
    bright_blue: str | None = None
    bright_magenta: str | None = None
    bright_cyan: str | None = None
    bright_white: str | None = None

    @field_validator("*")
    @classmethod
    def _is_colour(cls, value: str | None) -> str | None:
        return None if value is None else _colour(value)

    def terminal_theme(self, base: TerminalTheme, background: str, foreground: str) -> TerminalTheme:
        """`base` with the colours this palette sets replaced."""

        def rgb(value: str) -> tuple[int, int, int]:
            return Color.parse(value).rgb

        names = [*ANSI_NAMES, *(f"bright_{name}" for name in ANSI_NAMES)]
        colours = [
            rgb(value) if (value := getattr(self, name)) else base.ansi_colors[index]
            for index, name in enumerate(names)
        ]
        return TerminalTheme(rgb(background), rgb(foreground), colours[:8], colours[8:])


class ThemeFile(BaseModel):
    """One theme file. Colours are anything Textual parses: #RRGGBB, rgb(…), names."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=60)
    dark: bool = True
    primary: str
    foreground: str
    background: str
    secondary: str | None = None
    accent: str | None = None
    warning: str | None = None
    error: str | None = None
    success: str | None = None
    surface: str | None = None
    panel: str | None = None
    boost: str | None = None
    luminosity_spread: float = Field(0.15, ge=0, le=1)
    text_alpha: float = Field(0.95, ge=0, le=1)
    # Extra TCSS variables ($name), for user stylesheets.
    variables: dict[str, str] = Field(default_factory=dict)
    ansi: AnsiPalette = Field(default_factory=AnsiPalette)

    @field_validator(
        "primary",
        "foreground",
        "background",
        "secondary",
        "accent",
        "warning",
        "error",
        "success",
        "surface",
        "panel",
        "boost",
    )
    @classmethod
    def _is_colour(cls, value: str | None) -> str | None:
        return None if value is None else _colour(value)

    def to_textual(self) -> Theme:
        return Theme(
            name=self.name,
            primary=self.primary,
            secondary=self.secondary,
            accent=self.accent,
            warning=self.warning,
            error=self.error,
            success=self.success,
            foreground=self.foreground,
            background=self.background,
            surface=self.surface,
            panel=self.panel,
            boost=self.boost,
            dark=self.dark,
            luminosity_spread=self.luminosity_spread,
            text_alpha=self.text_alpha,
            variables=dict(self.variables),
        )

    def terminal_theme(self) -> TerminalTheme:
        return self.ansi.terminal_theme(MONOKAI if self.dark else ALABASTER, self.background, self.foreground)


@dataclass(frozen=True)
class LoadedTheme:
    theme: Theme
    terminal: TerminalTheme
    file: Path
    user: bool


@dataclass(frozen=True)
class ThemeProblem:
    file: Path
    message: str

    def __str__(self) -> str:
        return f"{self.file.name}: {self.message}"


class ThemeFileError(Exception):
    pass


def _explain(err: ValidationError) -> str:
    problems = []
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "missing":
            problems.append(f"missing key '{key}'")
        elif item["type"] == "extra_forbidden":
            problems.append(f"unknown key '{key}'")
        else:
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] != "value_error" and "input" in item:
                message = f"{message} (got {item['input']!r})"
            problems.append(f"key '{key}': {message}")
    return "; ".join(problems)


def load_theme_file(file: Path, *, user: bool = False) -> LoadedTheme:
    """Read and validate one theme file; `ThemeFileError` says what is wrong, in a line."""
    try:
        with file.open("rb") as handle:
            data = tomllib.load(handle)
    except TOML_READ_ERRORS as exc:  # issue 12: also not UTF-8, nested too deeply, huge integers
        raise ThemeFileError(toml_problem(exc)) from None
    try:
        parsed = ThemeFile.model_validate(data)
    except ValidationError as exc:
        raise ThemeFileError(_explain(exc)) from None
    return LoadedTheme(parsed.to_textual(), parsed.terminal_theme(), file, user)


@dataclass
class ThemeCatalog:
    themes: dict[str, LoadedTheme] = field(default_factory=dict)
    problems: list[ThemeProblem] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return sorted(self.themes)

    def problem_for(self, name: str) -> ThemeProblem | None:
        """The problem of a file that looks like it meant to define theme `name`."""
        return next((problem for problem in self.problems if problem.file.stem == name), None)


def load_themes(bundled: Path | None = None, user: Path | None = None) -> ThemeCatalog:
    """Every usable theme (user files override bundled ones of the same name) and the problems."""
    catalog = ThemeCatalog()
    for folder, is_user in ((bundled or bundled_themes_dir(), False), (user or themes_dir(), True)):
        try:
            files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
        except OSError as exc:
            catalog.problems.append(ThemeProblem(folder, f"cannot be listed ({exc.strerror or exc})"))
            continue
        seen: dict[str, Path] = {}
        for file in files:
            try:
                loaded = load_theme_file(file, user=is_user)
            except ThemeFileError as exc:
                catalog.problems.append(ThemeProblem(file, str(exc)))
                continue
            name = loaded.theme.name
            if name in seen:
                catalog.problems.append(ThemeProblem(file, f"theme '{name}' is already defined by {seen[name].name}"))
                continue
            seen[name] = file
            catalog.themes[name] = loaded
    if not catalog.themes:  # not even a bundled file: never leave the app without a theme
        catalog.themes[DEFAULT_THEME] = _last_resort()
    return catalog


def _last_resort() -> LoadedTheme:
    theme = ThemeFile(
        name=DEFAULT_THEME,
        primary="#4AA3FF",
        foreground="#D8DEE9",
        background="#0E1117",
        accent="#FFB454",
        warning="#FFB454",
        error="#FF6B6B",
        success="#5FD38D",
    )
    return LoadedTheme(theme.to_textual(), theme.terminal_theme(), Path("(built in)"), False)


def unknown_theme_message(name: str, catalog: ThemeCatalog) -> str | None:
    """None if `name` is a theme; else one paragraph for `--theme NAME` (exit 2)."""
    if name in catalog.themes:
        return None
    message = f"there is no theme named {name!r}. Available: {', '.join(catalog.names)}."
    if problem := catalog.problem_for(name):
        message += f" The theme file {problem.file} cannot be used: {problem.message}."
    else:
        message += f" Your own themes go in {themes_dir()} (see `voice-console locate themes`)."
    return message


# --- remembering the choice --------------------------------------------------------------------


def read_remembered_theme(path: Path | None = None) -> str | None:
    try:
        data = json.loads((path or theme_state_path()).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = data.get("theme") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def remember_theme(name: str, path: Path | None = None) -> None:
    """Write the state file atomically (a crash never leaves half a file)."""
    path = path or theme_state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    data["theme"] = name
    handle, temporary = tempfile.mkstemp(prefix=".tui-state.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# --- the app side ------------------------------------------------------------------------------


class AppThemes:
    """Loads the themes for one app, applies the chosen one, reports problems, remembers changes.

    `install` runs in `App.__init__` (files are read before the UI loop starts);
    `start` runs in `on_mount` (toasts and watchers need a running app).
    """

    def __init__(
        self,
        requested: str | None = None,
        *,
        bundled: Path | None = None,
        user: Path | None = None,
        state_path: Path | None = None,
    ) -> None:
        self.catalog = load_themes(bundled, user)
        self.state_path = state_path or theme_state_path()
        self.requested = requested
        self.remembered = read_remembered_theme(self.state_path)
        self.fallback_note: str | None = None
        self.chosen = self._choose()
        self._last_remembered = self.chosen
        self._write_failed = False

    def _choose(self) -> str:
        available = self.catalog.themes
        default = DEFAULT_THEME if DEFAULT_THEME in available else self.catalog.names[0]
        if self.requested:
            if self.requested in available:
                return self.requested
            self.fallback_note = f"There is no theme named {self.requested!r}; using {default}."
            return default
        if self.remembered:
            if self.remembered in available:
                return self.remembered
            self.fallback_note = f"The theme used last time ({self.remembered!r}) is not available; using {default}."
        return default

    def install(self, app: App[Any]) -> None:
        for loaded in self.catalog.themes.values():
            app.register_theme(loaded.theme)
        app.theme = self.chosen
        for name in list(app.available_themes):
            if name not in self.catalog.themes:
                app.unregister_theme(name)

    def start(self, app: App[Any]) -> None:
        self._apply_terminal_colours(app, app.current_theme)
        app.theme_changed_signal.subscribe(app, partial(self._theme_changed, app))
        self.report(app)

    def report(self, app: App[Any]) -> None:
        """One toast for everything wrong with the theme files (and the fallback, if any)."""
        problems = self.catalog.problems
        if problems:
            count = f"{len(problems)} theme files" if len(problems) > 1 else "A theme file"
            lines = [f"{count} could not be used:"]
            lines += [f"• {escape(str(problem))}" for problem in problems]
            if self.fallback_note:
                lines.append(escape(self.fallback_note))
            lines.append(f"Themes folder: {escape(str(themes_dir()))}")
            app.notify("\n".join(lines), title="Themes", severity="error", timeout=ERROR_TOAST_SECONDS)
        elif self.fallback_note:
            app.notify(escape(self.fallback_note), title="Themes", severity="warning")

    def _apply_terminal_colours(self, app: App[Any], theme: Theme) -> None:
        loaded = self.catalog.themes.get(theme.name)
        if loaded is None:
            return
        if theme.dark:
            app.ansi_theme_dark = loaded.terminal
        else:
            app.ansi_theme_light = loaded.terminal

    def _theme_changed(self, app: App[Any], theme: Theme) -> None:
        self._apply_terminal_colours(app, theme)
        if theme.name != self._last_remembered:
            self._last_remembered = theme.name
            app.run_worker(
                partial(self._remember, app, theme.name),
                thread=True,
                exit_on_error=False,
                group="theme-state",
                exclusive=True,
                description="remember the theme",
            )

    def _remember(self, app: App[Any], name: str) -> None:
        try:
            remember_theme(name, self.state_path)
        except OSError as exc:  # not fatal: the theme just is not remembered
            log.warning("cannot remember the theme in %s: %s", self.state_path, exc)
            if not self._write_failed:
                self._write_failed = True
                app.notify(
                    escape(f"The theme choice cannot be saved to {self.state_path}: {exc.strerror or exc}"),
                    title="Themes",
                    severity="warning",
                )
