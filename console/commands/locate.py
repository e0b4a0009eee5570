"""`voice-console locate config|db|themes`: print where a file lives."""

from __future__ import annotations

import argparse
from typing import Any

from console.commands import add_config_flags, load_settings_or_report


def register(subparsers: Any) -> None:
    locate = subparsers.add_parser("locate", help="print where a file lives")
    add_config_flags(locate, suppress=True)
    locate.add_argument("what", choices=["config", "db", "themes"])


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    from console.config import default_config_path, themes_dir

    if args.what == "config":
        print(settings.source or getattr(args, "config", None) or default_config_path())
    elif args.what == "db":
        print(settings.db_path)
    else:
        print(themes_dir())
    return 0
