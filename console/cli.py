"""The `voice-console` command line.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration (one
readable paragraph, never a traceback). Secrets are never taken from argv.

Each subcommand is a module of `console.commands` (see its docstring); this
module only builds the parser from them and dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType
from typing import TYPE_CHECKING

from console import __version__
from console.commands import COMMANDS, add_config_flags
from console.heap import pin_mmap_threshold

if TYPE_CHECKING:
    from console.config import Settings


def _command_module(name: str) -> ModuleType:
    return importlib.import_module(f"console.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-console",
        description="An operator console for voice-AI agents on Vapi, Retell AI and Twilio.",
    )
    parser.add_argument("--version", action="version", version=f"voice-console {__version__}")
    add_config_flags(parser)
    parser.add_argument("--demo", action="store_true", help="try everything against the built-in simulated platform")
    parser.add_argument("--host", help="receiver address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="receiver port (default 8765)")
    parser.add_argument(
        "--retell-llm-forward-to",
        metavar="WSS_URL",
        help="your Retell custom-LLM server: the tap at /llm/retell relays each call's socket to it",
    )
    parser.add_argument(
        "--twilio-stream-forward-to",
        metavar="WSS_URL",
        help="your agent behind <Connect><Stream>: the tap at /stream/twilio relays each Media Stream to it",
    )
    parser.add_argument(
        "--theme",
        metavar="NAME",
        help="colour theme for this run (default: the one picked last time "
        "with ctrl+p; your own go in `voice-console locate themes`)",
    )
    parser.add_argument(
        "--no-attach",
        action="store_true",
        help="receive in this process (stops when the console closes) instead of attaching to a `serve`",
    )
    parser.add_argument(
        "--stop-receiver-on-exit",
        action="store_true",
        help="when this console closes, stop the `serve` it attached to (it keeps receiving otherwise)",
    )
    parser.add_argument(
        "--operator", metavar="NAME", help="who decides from this console, as other consoles see it (default user@host)"
    )
    parser.add_argument(
        "--team",
        metavar="REDIS_URL",
        help="team mode: watch and decide every receiver's calls on the team's Redis (also VOICE_CONSOLE_TEAM)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        _command_module(name).register(subparsers)
    return parser


def _run_tui(args: argparse.Namespace) -> int:
    """No subcommand: the interactive console (Textual is imported only here)."""
    from console.commands import load_settings_or_report

    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    from console.config import ConfigError
    from console.core.policy import default_policy_path, load_policy
    from console.tui.demo import run_tui

    try:
        # The demo uses its own policy unless the user has a policy file.
        policy = load_policy() if (not args.demo or default_policy_path().exists()) else None
    except ConfigError as exc:
        print(f"voice-console: bad tool-call policy: {exc}", file=sys.stderr)
        return 2
    if args.demo or args.no_attach:  # with a team set and --no-attach, its receiver publishes to the team
        return run_tui(settings, demo=args.demo, policy=policy, theme=args.theme)
    if settings.team.redis_url:
        return run_tui(settings, demo=False, theme=args.theme, team=True, operator=args.operator)
    return run_tui(
        settings,
        demo=False,
        theme=args.theme,
        attach=_serve_args(args, settings),
        operator=args.operator,
        stop_receiver_on_exit=args.stop_receiver_on_exit,
    )


def _serve_args(args: argparse.Namespace, settings: Settings) -> list[str]:
    """The `serve` a console starts takes its flags (the rest comes from the same config and env)."""
    out = ["--host", settings.receiver.host, "--port", str(settings.receiver.port)]
    for flag in ("config", "db", "retell_llm_forward_to", "twilio_stream_forward_to"):
        if (value := getattr(args, flag, None)) is not None:
            out += ["--" + flag.replace("_", "-"), str(value)]
    return out


def main(argv: list[str] | None = None) -> int:
    pin_mmap_threshold()  # every command may run for hours: the console, serve, watch
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command is None:
        return _run_tui(args)
    code: int = _command_module(args.command).run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
