"""`voice-console watch --team URL`: the team's live events as NDJSON, one line per event."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from console.commands import add_config_flags, load_settings_or_report

NO_TEAM = (
    "voice-console watch: no team to watch: pass --team redis://HOST:6379/0, set VOICE_CONSOLE_TEAM, "
    "or set [team] redis_url in the settings file. On this machine alone, `voice-console serve` prints "
    "the same lines on its stdout."
)


def register(subparsers: Any) -> None:
    watch = subparsers.add_parser("watch", help="the team's live events as NDJSON (team mode)")
    add_config_flags(watch, suppress=True)
    watch.add_argument(
        "--team",
        metavar="REDIS_URL",
        default=argparse.SUPPRESS,
        help="the team's Redis (also VOICE_CONSOLE_TEAM, or [team] redis_url)",
    )
    watch.add_argument(
        "--from-start", action="store_true", help="first what the team stream still keeps, then what comes"
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    if not settings.team.redis_url:
        print(NO_TEAM, file=sys.stderr)
        return 2
    import asyncio

    from console.secrets import SecretStore
    from console.services.watch import watch_team

    team = settings.team.with_password(SecretStore().get("team_redis_password").value)
    try:
        return asyncio.run(watch_team(team, sys.stdout, sys.stderr, from_start=args.from_start))
    except KeyboardInterrupt:
        return 0
