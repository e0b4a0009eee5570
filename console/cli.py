"""The `voice-console` command line.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration (one
readable paragraph, never a traceback). Secrets are never taken from argv.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from console import __version__
from console.config import ConfigError, Settings, load_settings, themes_dir


def _add_config_flags(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--config", metavar="F", default=default, help="settings file (TOML); default: `voice-console locate config`")
    parser.add_argument("--db", metavar="F", default=default, help="history database (SQLite); default: `voice-console locate db`")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-console",
        description="An operator console for voice-AI agents on Vapi, Retell AI and Twilio.",
    )
    parser.add_argument("--version", action="version", version=f"voice-console {__version__}")
    _add_config_flags(parser)
    parser.add_argument("--demo", action="store_true", help="try everything against the built-in simulated platform")
    parser.add_argument("--host", help="receiver address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="receiver port (default 8765)")
    parser.add_argument("--theme", metavar="NAME", help="colour theme for this run (default: the one picked last time "
                        "with ctrl+p; your own go in `voice-console locate themes`)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log diagnostics to stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the webhook receiver headless, NDJSON events on stdout")
    _add_config_flags(serve, suppress=True)
    serve.add_argument("--host", default=argparse.SUPPRESS, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=argparse.SUPPRESS, help="port to bind (default 8765)")
    serve.add_argument("--forward-to", metavar="URL", help="pass tool calls on to your own webhook server and relay its answers")
    serve.add_argument("--public-url", metavar="URL", help="the public base URL the platforms call (needed for Twilio signatures)")
    serve.add_argument("--policy", metavar="F", help="tool-call policy (TOML); default: policy.toml in the config dir")

    from console.decide import add_decide_parser

    add_decide_parser(commands)

    from console.keys import add_keys_parser

    add_keys_parser(commands)

    from console.simulator.cli import add_platform_parser, add_simulate_parser

    add_platform_parser(commands)
    add_simulate_parser(commands)

    from console.dial import add_dial_parser

    add_dial_parser(commands)

    from console.assistants import add_assistants_parser

    add_assistants_parser(commands)

    from console.history import add_history_parser

    history = add_history_parser(commands)
    _add_config_flags(history, suppress=True)

    from console.replay import add_replay_parser

    _add_config_flags(add_replay_parser(commands), suppress=True)

    locate = commands.add_parser("locate", help="print where a file lives")
    _add_config_flags(locate, suppress=True)
    locate.add_argument("what", choices=["config", "db", "themes"])
    return parser


# The settings each flag overrides, so a bad value names the flag.
FLAG_KEYS = {
    "--host": "receiver.host",
    "--port": "receiver.port",
    "--public-url": "receiver.public_url",
    "--db": "storage.db",
    "--forward-to": "forward.to",
}


def _settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, dict[str, object]] = {}
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"), None)
        if value is not None:
            section, name = key.split(".")
            overrides.setdefault(section, {})[name] = value
    return load_settings(getattr(args, "config", None), overrides=overrides,
                         flags={key: flag for flag, key in FLAG_KEYS.items()})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        settings = _settings_from_args(args)
    except ConfigError as exc:
        print(f"voice-console: bad configuration: {exc}", file=sys.stderr)
        return 2

    if args.command == "serve":
        from console.core.policy import load_policy
        from console.serve import run_serve

        try:
            policy = load_policy(args.policy, default_action="approve" if settings.forward.to else "hold")
        except ConfigError as exc:
            print(f"voice-console: bad tool-call policy: {exc}", file=sys.stderr)
            return 2
        try:
            return asyncio.run(run_serve(settings, policy=policy))
        except KeyboardInterrupt:
            return 0
    if args.command in ("platform", "simulate"):
        from console.simulator.cli import run_platform, run_simulate

        runner = run_platform if args.command == "platform" else run_simulate
        try:
            return asyncio.run(runner(args))
        except KeyboardInterrupt:
            return 0
    if args.command == "assistants":
        from console.assistants import run_assistants

        return asyncio.run(run_assistants(args, settings))
    if args.command == "dial":
        from console.dial import run_dial

        return asyncio.run(run_dial(args, settings))
    if args.command == "keys":
        from console.keys import run_keys

        return run_keys(args, vapi_base_url=settings.vapi.base_url, retell_base_url=settings.retell.base_url,
                        twilio_base_url=settings.twilio.base_url)
    if args.command == "decide":
        from console.decide import run_decide

        return run_decide(args)
    if args.command == "history":
        from console.history import run_history

        return asyncio.run(run_history(args, settings.db_path))
    if args.command == "replay":
        from console.replay import run_replay

        try:
            return asyncio.run(run_replay(args, settings))
        except KeyboardInterrupt:
            return 1
    if args.command == "locate":
        if args.what == "config":
            from console.config import default_config_path

            print(settings.source or getattr(args, "config", None) or default_config_path())
        elif args.what == "db":
            print(settings.db_path)
        else:
            print(themes_dir())
        return 0

    # No subcommand: the interactive console (Textual is imported only here).
    from console.core.policy import default_policy_path, load_policy
    from console.tui.demo import run_tui

    try:
        # The demo uses its own policy unless the user has a policy file.
        policy = load_policy() if (not args.demo or default_policy_path().exists()) else None
    except ConfigError as exc:
        print(f"voice-console: bad tool-call policy: {exc}", file=sys.stderr)
        return 2
    return run_tui(settings, demo=args.demo, policy=policy, theme=args.theme)


if __name__ == "__main__":
    sys.exit(main())
