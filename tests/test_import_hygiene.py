"""Headless modules must not import Textual: the TUI is one consumer among others.

(rich is not checked: httpx pulls it in through its optional CLI extras.)
"""

import subprocess
import sys

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
    "console.store.db",
    "console.store.queries",
    "console.service",
    "console.serve",
    "console.cli",
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
    import console

    from pathlib import Path

    assert Path(console.__file__).resolve().parent == Path(__file__).resolve().parent.parent / "console"
