"""The entry point the CLI calls: `voice-console` and `voice-console --demo`."""

from __future__ import annotations

import sys

from console.config import Settings


def run_tui(settings: Settings, *, demo: bool) -> int:
    """Run the console until the operator quits; the process exit code.

    With `demo`, the simulated Vapi platform runs in-process and dials a call
    every 20 s (the first at once), signed with a secret made up for the session.
    """
    from console.tui.app import Services, VoiceConsoleApp

    # The history writer thread needs the GIL briefly per transaction (see `serve`).
    sys.setswitchinterval(0.0005)
    app = VoiceConsoleApp(Services(settings, demo=demo))
    app.run()
    return app.return_code or 0
