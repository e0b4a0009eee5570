"""`voice-console platform [--provider vapi|retell]`: a simulated platform (the simulator is
`console.simulator`): Vapi's REST API, server messages, control and listen URLs, or Retell's
REST API and signed webhooks."""

from __future__ import annotations

import argparse
from typing import Any

from console.commands import load_settings_or_report
from console.commands.simulate import SCENARIO_HELP, ScenarioHelpFormatter, _positive_float

DEFAULT_WEBHOOK = "http://127.0.0.1:8765/webhook/vapi"  # `voice-console serve` on its default port
SIMULATED = ("vapi", "retell", "twilio")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "platform",
        formatter_class=ScenarioHelpFormatter,
        help="run a simulated platform: Vapi (REST, webhooks, control and listen URLs) or Retell",
        description="A local stand-in for Vapi: its REST API, signed server messages to --webhook, "
        "and per-call control and listen URLs, playing a call scenario for every call created. "
        "With --provider retell, Retell's REST API (agents, numbers, calls, live control) and its "
        "signed webhooks to the agent's --webhook (the receiver's base URL). With --provider twilio, "
        "Twilio's REST API (calls, numbers): a placed call fetches its TwiML from its Url, signed, posts its "
        "status callbacks and follows a <Connect><Stream> with a two-way media stream.",
    )
    parser.add_argument(
        "--provider", choices=SIMULATED, default="vapi", help="which platform to simulate (default vapi)"
    )
    parser.add_argument(
        "--port",
        dest="platform_port",
        type=int,
        default=0,
        metavar="P",
        help="port to listen on (default: any free port)",
    )
    parser.add_argument(
        "--speed", type=_positive_float, default=1.0, metavar="X", help="play scenarios X times faster (default 1)"
    )
    parser.add_argument(
        "--webhook",
        metavar="URL",
        default=DEFAULT_WEBHOOK,
        help=f"the server URL messages are posted to (default {DEFAULT_WEBHOOK}; "
        "for retell the receiver's base URL, default http://127.0.0.1:8765)",
    )
    parser.add_argument("--scenario", metavar="NAME|FILE", default=None, help=SCENARIO_HELP)
    parser.add_argument(
        "--llm-websocket-url",
        metavar="WS_URL",
        help="retell: add a custom-LLM agent whose calls open this socket (e.g. the console's tap, "
        "ws://127.0.0.1:8765/llm/retell/<token>); the call id is appended",
    )


def run(args: argparse.Namespace) -> int:
    if load_settings_or_report(args) is None:
        return 2
    import asyncio

    from console.simulator.cli import run_platform

    try:
        return asyncio.run(run_platform(args))
    except KeyboardInterrupt:
        return 0
