"""Screens and widgets do not reach into the app: they get a `ConsoleContext` in their
constructors and hand results back up. Checked on the source with `ast`, so a
TYPE_CHECKING import or a `getattr(app, "service")` counts as much as a plain one.

What a screen or widget may use of `self.app` (or of an `app` it is given) is
Textual's own `App` API: notify, push_screen, console, size... Anything the
console's app adds (main, service, services, platform, replay, feed, context) is
out of reach, and so is the receiver's pipeline.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from textual.app import App

TUI = Path(__file__).resolve().parent.parent / "console" / "tui"
LAYERS = ("screens", "widgets")
# Modules above the screens and widgets: importing them would make a cycle and a back door.
ABOVE = ("console.tui.app", "console.tui.main_screen")


def _is_app(node: ast.expr) -> bool:
    """`app`, `self.app`, `self.screen.app`: an expression naming the running app."""
    return (isinstance(node, ast.Name) and node.id == "app") or (isinstance(node, ast.Attribute) and node.attr == "app")


# Textual's App API: its class attributes and what its constructor sets (console, ...).
APP_API = set(dir(App)) | set(vars(App()))


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import names (`from console.tui import app` names console.tui.app)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    module = node.module or ""
    return [module, *(f"{module}.{alias.name}" for alias in node.names)]


def _above(name: str) -> bool:
    return any(name == above or name.startswith(above + ".") for above in ABOVE)


def reaches_into_the_app(source: str, filename: str = "<source>") -> list[str]:
    """Every place in `source` that imports the app or uses what the console's app adds to Textual's."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            named = [name for name in _imported(node) if _above(name)]
            if named:
                found.append(f"{where} imports {named[0]}")
        elif isinstance(node, ast.Attribute):
            if _is_app(node.value) and node.attr not in APP_API:
                found.append(f"{where} uses app.{node.attr}")
            elif node.attr == "pipeline":
                found.append(f"{where} uses the receiver's pipeline (ask the console context)")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and _is_app(node.args[0])
        ):
            name = node.args[1]
            if not (isinstance(name, ast.Constant) and name.value in APP_API):
                found.append(f"{where} uses {node.func.id}(app, {ast.unparse(name)})")
    return found


def test_screens_and_widgets_never_reach_into_the_app():
    modules = sorted(path for layer in LAYERS for path in (TUI / layer).rglob("*.py"))
    assert len(modules) >= 10  # the check ran over the real packages
    found = [
        problem
        for path in modules
        for problem in reaches_into_the_app(path.read_text(encoding="utf-8"), str(path.relative_to(TUI)))
    ]
    assert found == []


def test_the_check_sees_each_way_of_reaching_in():
    source = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from console.tui.app import VoiceConsoleApp
from console.tui import app
import console.tui.main_screen

def open_dial(app):
    app.service.pipeline.tracker.note_control_url("c", "u")
    app.main.query_one(object)

class DialScreen:
    def region(self):
        return self.app.services.settings, self.screen.app.platform, getattr(self.app, "replay", None)

    def fine(self):
        self.app.notify("hello")
        self.app.push_screen(self)
        return self.app.size, self.app.console, getattr(self.app, "screen")
"""
    assert sorted(reaches_into_the_app(source)) == [
        "<source>:10 uses app.main",
        "<source>:14 uses app.platform",
        "<source>:14 uses app.services",
        "<source>:14 uses getattr(app, 'replay')",
        "<source>:4 imports console.tui.app",
        "<source>:5 imports console.tui.app",
        "<source>:6 imports console.tui.main_screen",
        "<source>:9 uses app.service",
        "<source>:9 uses the receiver's pipeline (ask the console context)",
    ]


# The history's SQL lives in console/store (queries.py): the console asks it questions by name.
SQL = re.compile(r"\bSELECT\b.*\bFROM\b|\bINSERT INTO\b|\bUPDATE \w+ SET\b|\bDELETE FROM\b|\bPRAGMA \w+", re.DOTALL)


def sql_in(root: Path) -> list[str]:
    """Every string constant under `root` that reads as an SQL statement."""
    return [
        f"{path.relative_to(root)}:{node.lineno}"
        for path in sorted(root.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value)
    ]


def test_no_sql_in_the_console():
    assert sql_in(TUI) == []


def test_the_sql_check_sees_a_query_in_a_string(tmp_path):
    (tmp_path / "leaky.py").write_text(
        'ROWS = "SELECT data FROM events WHERE delivery_id = ?"\nHELP = "select a row from the list"\n'
        'COUNT = f"SELECT count(*) AS n FROM events {WHERE}"\n'
    )
    assert sql_in(tmp_path) == ["leaky.py:1", "leaky.py:3"]
