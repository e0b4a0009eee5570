"""Headless modules must not import Textual: the TUI is one consumer among others.
The layers import only downwards, and the command line starts without the heavy parts.

(rich is not checked: httpx pulls it in through its optional CLI extras.)
"""

import ast
import subprocess
import sys
from pathlib import Path

from console.commands import COMMANDS

CONSOLE = Path(__file__).resolve().parent.parent / "console"

HEADLESS = [
    "console.core.events",
    "console.core.calls",
    "console.core.tools",
    "console.core.forward",
    "console.config",
    "console.secrets",
    "console.redact",
    "console.providers.vapi",
    "console.providers.retell",
    "console.providers.twilio",
    "console.receiver.http",
    "console.receiver.routes",
    "console.services.pipeline",
    "console.store.db",
    "console.store.queries",
    "console.services.receiver",
    "console.services.serve",
    "console.services.control",
    "console.services.serve_state",
    "console.services.replay",
    "console.services.keys",
    "console.services.assistants",
    "console.cli",
    *(f"console.commands.{name}" for name in COMMANDS),
]


def test_headless_modules_do_not_import_textual():
    code = (
        "import sys\n"
        f"for name in {HEADLESS!r}:\n"
        "    __import__(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'textual')\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_console_package_is_this_checkout():
    from pathlib import Path

    import console

    assert Path(console.__file__).resolve().parent == Path(__file__).resolve().parent.parent / "console"


# core ← providers ← receiver, store (and the simulator) ← services ← commands, tui ← cli.
# Top-level modules (config, redact, phone) sit with core; secrets (the keyring, and the
# providers' secret names from their registry) beside the receiver and the store.
LAYER = {
    "secrets": 2,
    "core": 0,
    "providers": 1,
    "receiver": 2,
    "store": 2,
    "simulator": 2,
    "services": 3,
    "commands": 4,
    "tui": 4,
    "cli": 5,
    "__main__": 5,
}
# Side by side, never into each other: the CLI and the TUI share services only; the receiver
# (HTTP, routes, sockets) knows nothing of the history, the pipeline in services joins them.
APART = {("commands", "tui"), ("tui", "commands"), ("receiver", "store"), ("store", "receiver")}
# Known exceptions, each with why; remove one when its import goes.
ALLOWED: set[tuple[str, str]] = set()


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYER else "base"


def _module_name(path: Path) -> str:
    parts = path.relative_to(CONSOLE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, name: str, *, package: bool = False) -> list[str]:
    """Every console module a module imports, at any depth (TYPE_CHECKING and function-local too)."""
    here = name if package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from .ws` in console.receiver.http is console.receiver.ws
                parts = here.split(".")
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return [module for module in found if module == "console" or module.startswith("console.")]


def _allowed(importer: str, imported: str) -> bool:
    return any(importer.startswith(a) and (imported == b or imported.startswith(b + ".")) for a, b in ALLOWED)


def layer_violations() -> list[str]:
    bad = []
    for path in sorted(CONSOLE.rglob("*.py")):
        importer = _module_name(path)
        mine = _area(importer)
        for imported in _imports(path.read_text(), importer, package=path.name == "__init__.py"):
            theirs = _area(imported)
            upwards = LAYER.get(theirs, 0) > LAYER.get(mine, 0)
            if (upwards or (mine, theirs) in APART) and not _allowed(importer, imported):
                bad.append(f"{importer} ({mine}) imports {imported} ({theirs})")
    return sorted(set(bad))


def test_layers_import_only_downwards():
    assert layer_violations() == []


def test_layer_check_sees_relative_typing_and_local_imports():
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .ws import WebSocket\n"
        "from ..config import Settings\n"
        "if TYPE_CHECKING:\n"
        "    from console.tui.app import ConsoleApp\n"
        "def run():\n"
        "    import console.commands.serve\n"
    )
    found = _imports(source, "console.receiver.http")
    assert {"console.receiver.ws", "console.config", "console.tui.app", "console.commands.serve"} <= set(found)
    assert [_area(m) for m in ("console.services.receiver", "console.config", "console.cli")] == [
        "services",
        "base",
        "cli",
    ]


def test_parser_builds_without_the_heavy_parts():
    """`voice-console --help`, `decide` and `history calls` start fast: building the parser imports
    no pydantic, httpx, Textual, SQLite driver or keyring, and none of the receiving side. The
    provider registry is read for the providers' names, and loads none of them."""
    code = (
        "import sys\n"
        "from console.cli import build_parser\n"
        "build_parser()\n"
        "heavy = {'pydantic', 'httpx', 'textual', 'aiosqlite', 'keyring', 'asyncio', 'websockets'}\n"
        "light = {'console.providers', 'console.providers.registry'}\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy\n"
        "    or m not in light and m.startswith(('console.providers', 'console.receiver', 'console.store',\n"
        "                                        'console.simulator', 'console.config', 'console.tui')))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
