"""`voice-console assistants [--fix]`: will the console see and steer your assistants' calls?

Lists the Vapi assistants with the operator checks (server messages the console
needs, server URL pointing here, unauthenticated monitor URLs); `--fix` adds the
missing server messages with one PATCH per assistant.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from console.config import Settings
from console.providers.vapi.checks import check_assistant, patch_server_messages
from console.providers.vapi.client import VapiClient, VapiError
from console.secrets import SecretStore


def add_assistants_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("assistants", help="check the Vapi assistants the console will watch")
    parser.add_argument("--fix", action="store_true", help="add the server messages the console needs (PATCH)")
    parser.add_argument("--public-url", metavar="URL", help="the receiver's public URL, to check server URLs against")
    return parser


async def fix_server_messages(client: VapiClient, assistant: dict[str, Any]) -> list[str]:
    """Add the server messages the console needs with one PATCH (the CLI's --fix and the
    TUI's `F`); the assistant's list afterwards, or [] when nothing was missing."""
    patch = patch_server_messages(assistant)
    if not patch:
        return []
    await client.update_assistant(assistant["id"], patch)
    return list(patch["serverMessages"])


async def run_assistants(args: argparse.Namespace, settings: Settings, *, secret_store: SecretStore | None = None,
                         out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    key = await (secret_store or SecretStore()).aget("vapi_api_key")
    if not key.value:
        print(f"voice-console assistants: no Vapi API key: {key.note}", file=err)
        return 1
    public_url = getattr(args, "public_url", None) or settings.receiver.public_url
    try:
        async with VapiClient(key.value, base_url=settings.vapi.base_url) as client:
            for assistant in await client.list_assistants():
                name = assistant.get("name") or "(unnamed)"
                print(f"{assistant.get('id')}  {name}", file=out)
                checks = check_assistant(assistant, public_url=public_url)
                for check in checks:
                    print(f"  {check.level:<7} {check.message}", file=out)
                    if check.fix:
                        print(f"          fix: {check.fix}", file=out)
                if args.fix and (now := await fix_server_messages(client, assistant)):
                    print(f"  fixed   serverMessages now include {', '.join(now)}", file=out)
    except VapiError as exc:
        print(f"voice-console assistants: {exc}", file=err)
        return 1
    return 0
