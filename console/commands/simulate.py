"""`voice-console simulate`: drive a receiver with realistic signed platform traffic (the simulator is
`console.simulator`; this module holds the parser, which must not import it: that costs pydantic and httpx).
"""

from __future__ import annotations

import argparse
from typing import Any

from console.commands import load_settings_or_report, provider_names

SCENARIO_PLACEHOLDER = "{bundled scenarios}"
SCENARIO_HELP = f"a bundled scenario ({SCENARIO_PLACEHOLDER}) or a TOML file; default booking"


class ScenarioHelpFormatter(argparse.HelpFormatter):
    """Names the bundled scenarios only when the help is shown: finding them imports the simulator."""

    def _expand_help(self, action: argparse.Action) -> str:
        text = super()._expand_help(action)
        if SCENARIO_PLACEHOLDER in text:
            from console.simulator.scenarios import bundled_scenarios

            text = text.replace(SCENARIO_PLACEHOLDER, ", ".join(bundled_scenarios()))
        return text


# These names show in argparse's "invalid _positive_float value" message: keep them.
def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        formatter_class=ScenarioHelpFormatter,
        help="drive a webhook receiver with realistic signed Vapi, Retell or Twilio traffic "
        "and report what it answered",
        description="Play scenario calls at a receiver as the chosen platform would send them, signed as it "
        "signs them, and report the answers: statuses, latency, tool-call replies of the wrong shape.",
    )
    parser.add_argument(
        "--target",
        required=True,
        metavar="URL",
        help="vapi: the Vapi webhook URL (e.g. http://127.0.0.1:8765/webhook/vapi; a URL with "
        "no path gets /webhook/vapi appended); "
        "retell/twilio: the receiver's base URL (e.g. http://127.0.0.1:8765), the "
        "console's routes are appended; a URL ending in one of those routes also works",
    )
    parser.add_argument(
        "--provider",
        default="vapi",
        choices=list(provider_names()),
        help="which platform's webhooks to send (default vapi)",
    )
    parser.add_argument("--scenario", metavar="NAME|FILE", default=None, help=SCENARIO_HELP)
    parser.add_argument("--calls", type=_positive_int, default=1, metavar="N", help="how many calls (default 1)")
    parser.add_argument(
        "--concurrency", type=_positive_int, default=1, metavar="C", help="calls at the same time (default 1)"
    )
    parser.add_argument(
        "--speed", type=_positive_float, default=10.0, metavar="X", help="play scenarios X times faster (default 10)"
    )
    parser.add_argument(
        "--public-url",
        dest="sim_public_url",
        metavar="URL",
        default=None,
        help="twilio: the receiver's public base URL (as given to `serve --public-url`); "
        "X-Twilio-Signature is computed over it + the route path (default: the target's "
        "scheme://host:port)",
    )
    parser.add_argument(
        "--media-stream",
        action="store_true",
        help="twilio: also play each call's audio as a Media Stream on /stream/twilio",
    )


def run(args: argparse.Namespace) -> int:
    if load_settings_or_report(args) is None:
        return 2
    import asyncio

    from console.simulator.cli import run_simulate

    try:
        return asyncio.run(run_simulate(args))
    except KeyboardInterrupt:
        return 0
