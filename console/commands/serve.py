"""`voice-console serve`: the receiver and the history without the TUI, NDJSON events on stdout."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from console.commands import add_config_flags, load_settings_or_report


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the webhook receiver headless, NDJSON events on stdout")
    add_config_flags(serve, suppress=True)
    serve.add_argument("--host", default=argparse.SUPPRESS, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=argparse.SUPPRESS, help="port to bind (default 8765)")
    serve.add_argument(
        "--forward-to", metavar="URL", help="pass tool calls on to your own webhook server and relay its answers"
    )
    serve.add_argument(
        "--retell-llm-forward-to",
        metavar="WSS_URL",
        help="your Retell custom-LLM server: the tap at /llm/retell relays each call's socket to it",
    )
    serve.add_argument(
        "--twilio-stream-forward-to",
        metavar="WSS_URL",
        help="your agent behind <Connect><Stream>: the tap at /stream/twilio relays each Media Stream to it",
    )
    serve.add_argument(
        "--public-url", metavar="URL", help="the public base URL the platforms call (needed for Twilio signatures)"
    )
    serve.add_argument("--policy", metavar="F", help="tool-call policy (TOML); default: policy.toml in the config dir")
    serve.add_argument(
        "--team",
        metavar="REDIS_URL",
        default=argparse.SUPPRESS,
        help="team mode: publish what this receiver records to the team's Redis (redis:// or rediss://)",
    )
    serve.add_argument(
        "--stop",
        action="store_true",
        help="stop the `serve` running on this machine (the one on --port when several run) and exit",
    )


def run(args: argparse.Namespace) -> int:
    if args.stop:
        return stop(getattr(args, "port", None))
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    import asyncio

    from console.config import ConfigError
    from console.core.policy import load_policy
    from console.services.serve import run_serve

    try:
        policy = load_policy(args.policy, default_action="approve" if settings.forward.to else "hold")
    except ConfigError as exc:
        print(f"voice-console: bad tool-call policy: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run_serve(settings, policy=policy))
    except KeyboardInterrupt:
        return 0


def stop(port: int | None) -> int:
    """`serve --stop`: the running one stops as on SIGTERM (in-flight requests answered, all committed)."""
    from console.commands.decide import NoServe, pick_serve
    from console.services.receiver_process import stop_serve

    try:
        state = pick_serve(port)
    except NoServe as exc:
        print(f"voice-console serve --stop: {exc}", file=sys.stderr)
        return exc.code
    if not stop_serve(state):
        print(
            f"voice-console serve --stop: the receiver at {state.url} (pid {state.pid}) did not stop", file=sys.stderr
        )
        return 1
    print(f"voice-console serve: stopped the receiver at {state.url} (pid {state.pid})", file=sys.stderr)
    return 0
