"""The help screen (f1 or ?): every key, grouped by where it works, and how
approvals and deadlines work. Read from the bindings themselves, so it stays true
when an action is added."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import re
from typing import Any, TypeVar

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

from console.tui.commands import (
    PROJECT_MODULE_PREFIX,
    BoundAction,
    group_by_action,
    own_bindings,
)

_T = TypeVar("_T")
log = logging.getLogger(__name__)

# Where the project's screens and widgets live; imported so every one is listed.
SCANNED_PACKAGES = ("console.tui.screens", "console.tui.widgets")

APPROVALS_TEXT = """\
[b]How approvals and deadlines work[/b]

When an agent calls a tool and your policy holds it, the call waits under [b]Function calls[/b] with a countdown \
(⏳). Decide before it runs out:

[b $accent]a[/] approve: run the tool as asked
[b $accent]e[/] edit the arguments (JSON, checked against the tool's schema when the platform sent one; \
ctrl+s sends), then run it
[b $accent]o[/] override: answer a result yourself, the tool does not run
[b $accent]r[/] reject, with a reason the agent may say

The keys act on the highlighted function-call row, else on the oldest waiting call of the selected live call, \
else on the oldest waiting anywhere.

The platform only waits so long for a webhook answer (Vapi: the tool's timeout, 20 s unless set; Retell: 120 s). \
The console always answers [i]before[/i] that deadline: when the policy's [b]timeout_seconds[/b] pass (15 s by \
default, capped 1.5 s before the platform's deadline), the rule's [b]on_timeout[/b] applies (reject unless set) and \
is recorded as a timeout, never as yours. A call is never left hanging. A dialog still open then closes itself \
and says what the policy did.

Rules in policy.toml (next to `voice-console locate config`) can approve, reject or override tools without asking.

With several consoles (attached to one `serve`, or on a team's Redis with [b]--team[/b]) each call is decided \
once: the first decision wins, every console shows who made it, and one that decided second is told who won. \
On a team, Live calls shows which receiver has each call ([i]vapi @ rx-east[/i]), Events which receiver answered \
each request, and the title who else is present; live control goes to the receiver that has the call.

[b]ctrl+p[/b] finds any action or theme by name."""


def _import_project_screens() -> None:
    for package_name in SCANNED_PACKAGES:
        try:
            package = importlib.import_module(package_name)
            for module in pkgutil.iter_modules(package.__path__, package_name + "."):
                importlib.import_module(module.name)
        except Exception:  # a module that does not import is left out of help, never fatal here
            log.exception("help: cannot import %s", package_name)


def _subclasses(cls: type[_T]) -> list[type[_T]]:
    found: list[type[_T]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def help_title(cls: type[DOMNode]) -> str:
    """`HELP_TITLE` if the class has one, else its name in words: MainScreen → "Main screen"."""
    if title := cls.__dict__.get("HELP_TITLE"):
        return str(title)
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+", cls.__name__)
    return " ".join([words[0], *(word.lower() for word in words[1:])]) if words else cls.__name__


def help_groups(app: App[Any], origin: Screen[Any] | None = None) -> list[tuple[str, list[BoundAction]]]:
    """(title, actions) per place: everywhere (the app), the screen help was opened on,
    then every other screen and widget of the project that binds keys."""
    _import_project_screens()
    palette = BoundAction(
        "command_palette",
        "Command palette",
        "find any action or theme by name",
        (Binding(app.COMMAND_PALETTE_BINDING, "command_palette", key_display=app.COMMAND_PALETTE_DISPLAY),),
    )
    groups = [("Everywhere", [*group_by_action(own_bindings(type(app))), palette])]
    candidates = {
        cls
        for cls in _subclasses(DOMNode)
        if cls.__module__.startswith(PROJECT_MODULE_PREFIX)
        and "BINDINGS" in cls.__dict__
        and not issubclass(cls, (App, HelpScreen))
    }
    first = [type(origin)] if origin is not None and type(origin) in candidates else []
    screens = sorted((cls for cls in candidates if issubclass(cls, Screen) and cls not in first), key=help_title)
    widgets = sorted((cls for cls in candidates if not issubclass(cls, Screen)), key=help_title)
    # Dialogs that bind the same keys (most: escape to cancel) share one group.
    merged: dict[tuple[tuple[str, str, str], ...], list[str]] = {}
    by_signature: dict[tuple[tuple[str, str, str], ...], list[BoundAction]] = {}
    for cls in [*first, *screens, *widgets]:
        actions = group_by_action(own_bindings(cls))
        if actions:
            signature = tuple((action.keys(app), action.description, action.tooltip) for action in actions)
            merged.setdefault(signature, []).append(help_title(cls))
            by_signature[signature] = actions
    groups += [(", ".join(titles), by_signature[signature]) for signature, titles in merged.items()]
    return groups


class HelpScreen(ModalScreen[None]):
    """Keys and a short guide; escape (or f1, ?) closes it."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("f1,question_mark,q", "close", "Close", show=False),
    ]

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    #help-box {
        width: 116;
        max-width: 100%;
        height: 90%;
        border: thick $accent;
        background: $surface;
        padding: 0 1;
    }
    #help-columns {
        height: 1fr;
    }
    #help-keys, #help-about {
        scrollbar-size-vertical: 1;
    }
    #help-keys {
        width: 1fr;
        padding-right: 1;
    }
    #help-about {
        width: 46;
        padding: 0 1;
        border-left: vkey $panel-lighten-2;
    }
    .help-group {
        color: $primary;
        text-style: bold;
        margin-top: 1;
    }
    .help-list {
        grid-size: 3;
        grid-columns: 8 17 1fr;
        grid-gutter: 0 1;
        height: auto;
    }
    .help-list Label {
        width: 100%;
    }
    .help-key {
        color: $accent;
        text-style: bold;
    }
    .help-more {
        color: $text-muted;
    }
    #help-hint {
        color: $text-muted;
        width: 1fr;
        content-align: right middle;
    }
    """

    def __init__(self, origin: Screen[Any] | None = None) -> None:
        super().__init__()
        self.origin = origin

    @classmethod
    def toggle(cls, app: App[Any]) -> None:
        """Open help over the current screen, or close it if it is showing."""
        if isinstance(app.screen, cls):
            app.screen.dismiss()
        else:
            app.push_screen(cls(app.screen))

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box") as box:
            box.border_title = "Keys and help"
            with Horizontal(id="help-columns"):
                with VerticalScroll(id="help-keys"):
                    for title, actions in help_groups(self.app, self.origin):
                        yield Label(title, classes="help-group")
                        with Grid(classes="help-list"):  # keys · what · more, each column wraps
                            for action in actions:
                                yield Label(action.keys(self.app), classes="help-key", markup=False)
                                yield Label(action.description, classes="help-what", markup=False)
                                yield Label(action.tooltip, classes="help-more", markup=False)
                with VerticalScroll(id="help-about"):
                    yield Static(Content.from_markup(APPROVALS_TEXT), id="help-approvals")
            yield Label("escape: close · ↑↓ scroll", id="help-hint")

    def on_mount(self) -> None:
        self.query_one("#help-keys").focus()

    def action_close(self) -> None:
        self.dismiss()
