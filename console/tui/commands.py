"""The command palette (ctrl+p): every action the console binds to a key, plus themes.

Commands are derived from the key bindings of the app, the active screen and the
focused widget, so an action another module binds (with a description) shows up
here and in the help screen without touching this file. Only the project's own
bindings are listed (not Textual's focus or copy keys); a few extras that have
no key (themes, screenshot, maximize) are added explicitly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.dom import DOMNode
from textual.screen import Screen

# The help screen lists the screens and widgets of modules under this prefix.
PROJECT_MODULE_PREFIX = "console."
# Bound by Textual itself, shown explicitly where it helps.
PALETTE_ACTIONS = {"command_palette", "app.command_palette"}


def _is_textual(cls: type) -> bool:
    return cls.__module__.split(".", 1)[0] == "textual"


def own_bindings(cls: type[DOMNode]) -> list[Binding]:
    """The bindings declared in `cls`'s MRO outside Textual itself (subclass first, one per key);
    Textual's own (focus, copy, scrolling) are left out."""
    seen: set[str] = set()
    found: list[Binding] = []
    for klass in cls.__mro__:
        if _is_textual(klass) or klass is object:
            continue
        for binding in Binding.make_bindings(klass.__dict__.get("BINDINGS", [])):
            if binding.key not in seen:
                seen.add(binding.key)
                found.append(binding)
    return found


def key_display(app: App[Any], bindings: Iterable[Binding]) -> str:
    return " / ".join(dict.fromkeys(app.get_key_display(binding) for binding in bindings))


@dataclass(frozen=True)
class BoundAction:
    """One action with every key bound to it, on one node (or class, for the help screen)."""

    action: str
    description: str
    tooltip: str
    bindings: tuple[Binding, ...]

    def keys(self, app: App[Any]) -> str:
        return key_display(app, self.bindings)


def group_by_action(bindings: Iterable[Binding]) -> list[BoundAction]:
    """Bindings with a description, one entry per action, in declaration order."""
    grouped: dict[str, list[Binding]] = {}
    for binding in bindings:
        if binding.description and binding.action not in PALETTE_ACTIONS and not binding.system:
            grouped.setdefault(binding.action, []).append(binding)
    return [
        BoundAction(action, items[0].description, next((b.tooltip for b in items if b.tooltip), ""), tuple(items))
        for action, items in grouped.items()
    ]


@dataclass(frozen=True)
class ConsoleCommand:
    title: str
    keys: str
    help: str
    run: Callable[[], Any]


def active_actions(screen: Screen[Any]) -> Iterator[tuple[DOMNode, BoundAction]]:
    """The enabled project actions reachable from `screen` now: focused widget, screen, app.

    Disabled actions (`check_action`) are left out: the palette offers what runs here now."""
    per_node: dict[int, tuple[DOMNode, list[Binding]]] = {}
    own: dict[type[DOMNode], set[str]] = {}
    for active in screen.active_bindings.values():
        node, binding = active.node, active.binding
        if type(node) not in own:
            own[type(node)] = {b.action for b in own_bindings(type(node))}
        if not active.enabled or binding.action not in own[type(node)]:
            continue
        if not binding.show and not isinstance(node, (Screen, App)):
            continue  # a widget's hidden keys are cursor moves, not console actions
        per_node.setdefault(id(node), (node, []))[1].append(binding)
    for node, bindings in per_node.values():
        for bound in group_by_action(bindings):
            yield node, bound


def console_commands(screen: Screen[Any]) -> list[ConsoleCommand]:
    """What the palette offers on `screen`, bound actions first."""
    app = screen.app
    commands: list[ConsoleCommand] = []
    actions: set[str] = set()
    for node, bound in active_actions(screen):
        keys = bound.keys(app)
        actions.add(bound.action.removeprefix("app."))
        commands.append(
            ConsoleCommand(bound.description, keys, bound.tooltip, partial(app.run_action, bound.action, node))
        )
    if "help" not in actions and hasattr(app, "action_help"):
        commands.append(
            ConsoleCommand(
                "Help", "", "Every key, and how approvals and deadlines work", partial(app.run_action, "app.help")
            )
        )
    commands.append(
        ConsoleCommand("Change theme…", "", "Pick a colour theme (remembered for next time)", app.action_change_theme)
    )
    for name in sorted(app.available_themes):
        commands.append(
            ConsoleCommand(
                f"Theme: {name}", "", "in use now" if name == app.theme else "", partial(setattr, app, "theme", name)
            )
        )
    if screen.maximized is not None:
        commands.append(ConsoleCommand("Restore pane size", "", "Undo maximize", screen.action_minimize))
    elif screen.focused is not None and screen.focused.allow_maximize:
        commands.append(
            ConsoleCommand("Maximize pane", "", "Give the focused pane the whole screen", screen.action_maximize)
        )
    commands.append(
        ConsoleCommand(
            "Save screenshot",
            "",
            "Save an SVG of the screen in the current directory",
            lambda: app.set_timer(0.1, app.deliver_screenshot),
        )
    )
    return commands


TITLE_WIDTH = 30  # keys line up in a column after the titles


def _display(title: str, keys: str, matched: Content | None = None) -> Content:
    shown = matched if matched is not None else Content(title)
    if not keys:
        return shown
    return shown + " " * max(2, TITLE_WIDTH - len(title)) + Content.from_markup("[$accent]$keys[/]", keys=keys)


class ConsoleCommands(Provider):
    """Every bound action (with its key), the themes and a few extras."""

    async def startup(self) -> None:
        # Read once when the palette opens: the bindings of the screen it was opened on.
        self._commands = console_commands(self.screen)

    async def discover(self) -> Hits:
        for command in self._commands:
            yield DiscoveryHit(
                _display(command.title, command.keys), command.run, text=command.title, help=command.help or None
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for command in self._commands:
            score = matcher.match(command.title)
            if score > 0:
                # The highlighter reads markup: only plain titles get highlighted letters.
                matched = matcher.highlight(command.title) if not re.search(r"[\[\]]", command.title) else None
                yield Hit(
                    score,
                    _display(command.title, command.keys, matched),
                    command.run,
                    text=command.title,
                    help=command.help or None,
                )
