"""`voice-console assistants [--fix]`: will the console see and steer your assistants' calls?

Lists the Vapi assistants (with a Vapi key) and the Retell agents (with a Retell key) with
the operator checks: server messages / webhook events the console needs, server or webhook
URL pointing here, unauthenticated monitor URLs, interruptions turned off. `--fix` adds the
missing server messages or webhook events with one update each and exits 0 once none is
missing (warnings it cannot fix are reported, not failed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from console.commands import load_settings_or_report

if TYPE_CHECKING:
    from console.config import Settings
    from console.secrets import SecretStore


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "assistants", help="check the Vapi assistants and Retell agents the console will watch"
    )
    parser.add_argument(
        "--fix",
        action="store_true",
        help="add the server messages / webhook events the console needs (one update each)",
    )
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
    """Exit 0 when the assistants (and Retell agents) were listed and, with --fix, nothing the
    fix repairs is still missing; 1 when an API failed or, with --fix, something still is."""
    from console.secrets import SecretStore
    from console.services.keys import missing_key_message

    store = secret_store or SecretStore()
    vapi_key, retell_key = await store.aget("vapi_api_key"), await store.aget("retell_api_key")
    if not vapi_key.value and not retell_key.value:
        print(f"voice-console assistants: {missing_key_message(vapi_key)}", file=err)
        return 1
    public_url = getattr(args, "public_url", None) or settings.receiver.public_url
    code = 0
    if vapi_key.value:
        code = max(code, await _vapi_assistants(args, settings, vapi_key.value, public_url, out, err))
    if retell_key.value:
        code = max(code, await _retell_agents(args, settings, retell_key.value, public_url, out, err))
    return code


def _print_checks(checks: list[Any], out: TextIO) -> None:
    for check in checks:
        print(f"  {check.level:<7} {check.message}", file=out)
        if check.fix:
            print(f"          fix: {check.fix}", file=out)


@dataclass(frozen=True)
class _Kind:
    """What differs between Vapi's assistants and Retell's agents in this listing."""

    id_key: str
    name_key: str
    label: str  # after the name, e.g. "  (Retell agent)"
    field: str  # what --fix completes, e.g. "serverMessages"
    what: str  # the same for people, e.g. "server messages"
    missing: Callable[[dict[str, Any]], list[str]]
    checks: Callable[..., list[Any]]
    fix: Callable[[Any, dict[str, Any]], Awaitable[list[str]]]


async def _vapi_assistants(
    args: argparse.Namespace, settings: Settings, key: str, public_url: str | None, out: TextIO, err: TextIO
) -> int:
    from console.providers.vapi.checks import check_assistant, missing_server_messages
    from console.providers.vapi.client import VapiClient
    from console.services.assistants import fix_server_messages

    kind = _Kind(
        "id",
        "name",
        "",
        "serverMessages",
        "server messages",
        missing_server_messages,
        check_assistant,
        fix_server_messages,
    )
    async with VapiClient(key, base_url=settings.vapi.base_url) as client:
        return await _check_each(kind, client, client.list_assistants, args, public_url, out, err)


async def _retell_agents(
    args: argparse.Namespace, settings: Settings, key: str, public_url: str | None, out: TextIO, err: TextIO
) -> int:
    from console.providers.retell.checks import check_agent, missing_webhook_events
    from console.providers.retell.client import RetellClient
    from console.services.assistants import fix_webhook_events

    kind = _Kind(
        "agent_id",
        "agent_name",
        "  (Retell agent)",
        "webhook_events",
        "webhook events",
        missing_webhook_events,
        check_agent,
        fix_webhook_events,
    )
    async with RetellClient(key, base_url=settings.retell.base_url) as client:
        return await _check_each(kind, client, client.list_agents, args, public_url, out, err)


async def _check_each(
    kind: _Kind,
    client: Any,
    listing: Callable[[], Awaitable[list[dict[str, Any]]]],
    args: argparse.Namespace,
    public_url: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """List each one with its checks; with --fix, complete what it must send (one update each)."""
    from console.providers.rest import ApiError

    unfixed: list[str] = []
    try:
        for item in await listing():
            name = item.get(kind.name_key) or "(unnamed)"
            print(f"{item.get(kind.id_key)}  {name}{kind.label}", file=out)
            now: list[str] = []
            if args.fix:
                try:
                    now = await kind.fix(client, item)
                except ApiError as exc:  # report it, and go on fixing the others
                    print(f"  failed  could not add the missing {kind.what}: {exc}", file=out)
                if now:  # the checks below describe it as it is after the fix
                    item = {**item, kind.field: now}
                if kind.missing(item):
                    unfixed.append(name)
            _print_checks(kind.checks(item, public_url=public_url), out)
            if now:
                print(f"  fixed   {kind.field} now include {', '.join(now)}", file=out)
    except ApiError as exc:
        print(f"voice-console assistants: {exc}", file=err)
        return 1
    if unfixed:
        print(f"voice-console assistants: still missing {kind.what} after --fix: {', '.join(unfixed)}.", file=err)
        return 1
    return 0
