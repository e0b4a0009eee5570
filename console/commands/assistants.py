"""`voice-console assistants [--fix]`: will the console see and steer your assistants' calls?

Lists the Vapi assistants with the operator checks (server messages the console
needs, server URL pointing here, unauthenticated monitor URLs); `--fix` adds the
missing server messages with one PATCH per assistant and exits 0 once none is
missing (warnings it cannot fix, such as monitor URLs, are reported, not failed).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, TextIO

from console.commands import load_settings_or_report

if TYPE_CHECKING:
    from console.config import Settings
    from console.secrets import SecretStore


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("assistants", help="check the Vapi assistants the console will watch")
    parser.add_argument("--fix", action="store_true", help="add the server messages the console needs (PATCH)")
    parser.add_argument("--public-url", metavar="URL", help="the receiver's public URL, to check server URLs against")


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    import asyncio

    return asyncio.run(run_assistants(args, settings))


async def run_assistants(
    args: argparse.Namespace,
    settings: Settings,
    *,
    secret_store: SecretStore | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Exit 0 when the assistants were listed (and, with --fix, every missing server message
    is now sent); 1 when the API failed or, with --fix, an assistant still lacks some."""
    from console.providers.vapi.checks import check_assistant, missing_server_messages
    from console.providers.vapi.client import VapiClient, VapiError
    from console.secrets import SecretStore
    from console.services.assistants import fix_server_messages
    from console.services.keys import missing_key_message

    key = await (secret_store or SecretStore()).aget("vapi_api_key")
    if not key.value:
        print(f"voice-console assistants: {missing_key_message(key)}", file=err)
        return 1
    public_url = getattr(args, "public_url", None) or settings.receiver.public_url
    unfixed: list[str] = []
    try:
        async with VapiClient(key.value, base_url=settings.vapi.base_url) as client:
            for assistant in await client.list_assistants():
                name = assistant.get("name") or "(unnamed)"
                print(f"{assistant.get('id')}  {name}", file=out)
                now: list[str] = []
                if args.fix:
                    try:
                        now = await fix_server_messages(client, assistant)
                    except VapiError as exc:  # report it, and go on fixing the others
                        print(f"  failed  could not add the missing server messages: {exc}", file=out)
                    if now:  # the checks below describe the assistant as it is after the fix
                        assistant = {**assistant, "serverMessages": now}
                    if missing_server_messages(assistant):
                        unfixed.append(name)
                for check in check_assistant(assistant, public_url=public_url):
                    print(f"  {check.level:<7} {check.message}", file=out)
                    if check.fix:
                        print(f"          fix: {check.fix}", file=out)
                if now:
                    print(f"  fixed   serverMessages now include {', '.join(now)}", file=out)
    except VapiError as exc:
        print(f"voice-console assistants: {exc}", file=err)
        return 1
    if unfixed:
        print(f"voice-console assistants: still missing server messages after --fix: {', '.join(unfixed)}.", file=err)
        return 1
    return 0
