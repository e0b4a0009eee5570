"""The entry point the CLI calls: `voice-console` and `voice-console --demo`."""

from __future__ import annotations

import sys

from console.config import Settings
from console.core.policy import Policy, ToolRule

# In the demo there is no tool server: an approved call answers these made-up
# results, so the simulated assistant has something real to say.
DEMO_POLICY = Policy(tools={
    "default": ToolRule(action="hold", result='{"ok": true}'),
    "check_availability": ToolRule(action="hold", result='{"slots": ["09:30", "14:15"]}'),
    "lookup_patient": ToolRule(action="hold", result='{"found": true, "name": "Dana Whitfield"}'),
    "book_appointment": ToolRule(action="hold", result='{"booked": true, "confirmation": "SD-4821"}'),
})


def run_tui(settings: Settings, *, demo: bool, policy: Policy | None = None, theme: str | None = None) -> int:
    """Run the console until the operator quits; the process exit code.

    With `demo`, the simulated Vapi platform runs in-process and dials a call
    every 20 s (the first at once), signed with a secret made up for the session.
    An unknown `theme` is bad usage (exit 2, the available names on stderr),
    found before the screen is taken over.
    """
    from console.tui.app import Services, VoiceConsoleApp
    from console.tui.themes import load_themes, unknown_theme_message

    if theme is not None and (problem := unknown_theme_message(theme, load_themes())):
        print(f"voice-console: --theme: {problem}", file=sys.stderr)
        return 2

    # The history writer thread needs the GIL briefly per transaction (see `serve`).
    sys.setswitchinterval(0.0005)
    policy = policy or (DEMO_POLICY if demo else Policy.default("hold"))
    app = VoiceConsoleApp(Services(settings, demo=demo, policy=policy, theme=theme))
    app.run()
    return app.return_code or 0
