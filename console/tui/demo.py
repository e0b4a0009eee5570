"""The entry point the CLI calls: `voice-console` and `voice-console --demo`."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from console.config import Settings
from console.core.policy import Policy, ToolRule
from console.simulator.scenarios import Scenario, ToolsStep, load_scenario

# Paced for someone reading the screen for the first time: the demo assistant's tools
# give the platform's tool server this long (as a real assistant may, up to Vapi's 300 s),
# and a held call waits this long for the operator before the policy's on_timeout applies.
DEMO_TOOL_TIMEOUT_S = 75
DEMO_HOLD_S = 60
# A new demo call this often (the first at once).
DEMO_INTERVAL_S = 60

# In the demo there is no tool server: an approved call answers these made-up
# results, so the simulated assistant has something real to say.
DEMO_POLICY = Policy(
    tools={
        "default": ToolRule(action="hold", timeout_seconds=DEMO_HOLD_S, result='{"ok": true}'),
        "check_availability": ToolRule(
            action="hold", timeout_seconds=DEMO_HOLD_S, result='{"slots": ["09:30", "14:15"]}'
        ),
        "lookup_patient": ToolRule(
            action="hold", timeout_seconds=DEMO_HOLD_S, result='{"found": true, "name": "Dana Whitfield"}'
        ),
        "book_appointment": ToolRule(
            action="hold", timeout_seconds=DEMO_HOLD_S, result='{"booked": true, "confirmation": "SD-4821"}'
        ),
    }
)


def lengthen_server_timeouts(records: Iterable[Any], timeout_s: float) -> None:
    """Give every `server` block in the simulated platform's records (assistants, their
    tools, phone numbers) `timeoutSeconds = timeout_s`: the receiver holds a tool call no
    longer than the smallest deadline that may apply (tool, assistant, number)."""
    for record in records:
        if isinstance(record, dict):
            server = record.get("server")
            if isinstance(server, dict) and "timeoutSeconds" in server:
                server["timeoutSeconds"] = timeout_s
            lengthen_server_timeouts(record.values(), timeout_s)
        elif isinstance(record, list):
            lengthen_server_timeouts(record, timeout_s)


def demo_scenario(tool_timeout_s: float = DEMO_TOOL_TIMEOUT_S) -> Scenario:
    """The bundled default scenario, its tool calls given `tool_timeout_s` (the deadline
    the simulated platform puts in each tool's `server.timeoutSeconds`)."""
    scenario = load_scenario(None)
    steps = [
        step.model_copy(update={"timeout_seconds": tool_timeout_s}) if isinstance(step, ToolsStep) else step
        for step in scenario.steps
    ]
    return scenario.model_copy(update={"steps": steps})


def run_tui(
    settings: Settings,
    *,
    demo: bool,
    policy: Policy | None = None,
    theme: str | None = None,
    attach: list[str] | None = None,
    operator: str | None = None,
    stop_receiver_on_exit: bool = False,
    team: bool = False,
) -> int:
    """Run the console until the operator quits; the process exit code.

    With `demo`, the simulated Vapi platform runs in-process and dials a call
    every DEMO_INTERVAL_S (the first at once), signed with a secret made up for the
    session; its receiver takes a free port when the configured one is busy.
    An unknown `theme` is bad usage (exit 2, the available names on stderr),
    found before the screen is taken over. With `attach` (the flags for a `serve` of its
    own), the console watches and decides through the `serve` running on this machine —
    started first when none runs — instead of receiving itself.
    """
    from console.tui.app import Services, VoiceConsoleApp
    from console.tui.themes import load_themes, unknown_theme_message

    if theme is not None and (problem := unknown_theme_message(theme, load_themes())):
        print(f"voice-console: --theme: {problem}", file=sys.stderr)
        return 2

    attach_to, started_here = None, False
    if attach is not None:
        from console.services.receiver_process import NoReceiver, find_serve, start_serve

        try:
            attach_to = find_serve(settings.receiver.port)
            if attach_to is None:  # none runs: one of its own, so closing the console does not stop reception
                print("voice-console: starting the receiver…", file=sys.stderr)
                attach_to, started_here = start_serve(attach, settings.receiver.port), True
        except NoReceiver as exc:
            print(f"voice-console: {exc}", file=sys.stderr)
            return exc.code

    # The history writer thread needs the GIL briefly per transaction (see `serve`).
    sys.setswitchinterval(0.0005)
    policy = policy or (DEMO_POLICY if demo else Policy.default("hold"))
    app = VoiceConsoleApp(
        Services(
            settings,
            demo=demo,
            policy=policy,
            theme=theme,
            attach_to=attach_to,
            team=team,
            operator=operator or "",
            receiver_started_here=started_here,
            stop_receiver_on_exit=stop_receiver_on_exit,
            yield_cpu_when_attached=True,
        )
    )
    app.run()
    return app.return_code or 0
