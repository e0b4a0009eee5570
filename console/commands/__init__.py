"""The subcommands: one module each, with `register(subparsers)` and `run(args) -> int`.

Every module is imported to build the parser (`voice-console --help` lists them all),
so `register` stays cheap: argparse and static choices only. Heavy imports (pydantic
settings, httpx, the store, Textual) happen inside `run`, for the one command that runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from console.config import Settings

# In the order `voice-console --help` lists them.
COMMANDS = (
    "serve",
    "decide",
    "call",
    "keys",
    "platform",
    "simulate",
    "dial",
    "assistants",
    "history",
    "replay",
    "watch",
    "locate",
)


def provider_names() -> tuple[str, ...]:
    """The registry's provider names, read without importing the provider packages (parsers offer them)."""
    from console.providers import registry

    return registry.names()


# The settings each flag overrides, so a bad value names the flag.
FLAG_KEYS = {
    "--host": "receiver.host",
    "--port": "receiver.port",
    "--public-url": "receiver.public_url",
    "--db": "storage.db",
    "--forward-to": "forward.to",
    "--retell-llm-forward-to": "retell.llm_forward_to",
    "--twilio-stream-forward-to": "twilio.stream_forward_to",
    "--team": "team.redis_url",
}


def add_config_flags(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config", metavar="F", default=default, help="settings file (TOML); default: `voice-console locate config`"
    )
    parser.add_argument(
        "--db", metavar="F", default=default, help="history database (SQLite); default: `voice-console locate db`"
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings file, then the environment, then the flags; raises `ConfigError`."""
    from console.config import load_settings

    overrides: dict[str, dict[str, object]] = {}
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag.removeprefix("--").replace("-", "_"), None)
        if value is not None:
            section, name = key.split(".")
            overrides.setdefault(section, {})[name] = value
    return load_settings(
        getattr(args, "config", None), overrides=overrides, flags={key: flag for flag, key in FLAG_KEYS.items()}
    )


def load_settings_or_report(args: argparse.Namespace) -> Settings | None:
    """The settings, or None once the one-paragraph problem is on stderr (exit 2)."""
    from console.config import ConfigError

    try:
        return settings_from_args(args)
    except ConfigError as exc:
        print(f"voice-console: bad configuration: {exc}", file=sys.stderr)
        return None
