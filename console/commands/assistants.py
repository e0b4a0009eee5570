"""`voice-console assistants [--fix]`: will the console see and steer your assistants' calls?

Lists the Vapi assistants (with a Vapi key), the Retell agents (with a Retell key) and the Twilio
numbers (with a Twilio account SID and auth token) with
the operator checks: server messages / webhook events the console needs, server or webhook
URL pointing here, unauthenticated monitor URLs, interruptions turned off, a Retell custom-LLM
socket not going through the tap. `--fix` adds the missing server messages or webhook events
(and, when `[retell] llm_forward_to` is set, points custom-LLM sockets at the tap) with one
update each and exits 0 once none is missing (warnings it cannot fix are reported, not failed).
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
        help="add the server messages / webhook events the console needs, point Twilio numbers here (one update each)",
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
    twilio_sid, twilio_token = await store.aget("twilio_account_sid"), await store.aget("twilio_auth_token")
    twilio_keys = {"twilio_account_sid": twilio_sid.value, "twilio_auth_token": twilio_token.value}
    has_twilio = all(twilio_keys.values())
    if not vapi_key.value and not retell_key.value and not has_twilio:
        print(f"voice-console assistants: {missing_key_message(vapi_key)}", file=err)
        return 1
    public_url = getattr(args, "public_url", None) or settings.receiver.public_url
    code = 0
    if vapi_key.value:
        code = max(code, await _vapi_assistants(args, settings, vapi_key.value, public_url, out, err))
    if retell_key.value:
        tap = await _llm_tap(args, settings, store, public_url, err)
        code = max(code, await _retell_agents(args, settings, retell_key.value, public_url, tap, out, err))
    if has_twilio:
        code = max(code, await _twilio_numbers(args, settings, twilio_keys, public_url, out, err))
    return code


async def _twilio_numbers(
    args: argparse.Namespace,
    settings: Settings,
    keys: dict[str, str | None],
    public_url: str | None,
    out: TextIO,
    err: TextIO,
) -> int:
    from functools import partial

    from console.providers.twilio.checks import check_number, patch_number
    from console.providers.twilio.client import TwilioClient
    from console.services.assistants import fix_number

    kind = _Kind(
        "phone_number",
        "friendly_name",
        "  (Twilio number)",
        "voice URL and status callback",
        lambda number: list(patch_number(number, public_url=public_url)),
        partial(check_number, voice_twiml=settings.twilio.voice_twiml),
        partial(fix_number, public_url=public_url),
    )
    sid, token = keys["twilio_account_sid"], keys["twilio_auth_token"]
    assert sid and token
    async with TwilioClient(sid, token, base_url=settings.twilio.base_url) as client:
        return await _check_each(kind, client, client.list_numbers, args, public_url, out, err)


async def _llm_tap(
    args: argparse.Namespace, settings: Settings, store: SecretStore, public_url: str | None, err: TextIO
) -> Any:
    """Where custom-LLM agents should point; --fix makes the tap's token when there is none yet
    (kept in the keyring, or not made at all: a token that lasts one run would break the agents)."""
    from console.providers.retell.checks import LlmTap, tap_url
    from console.secrets import SecretStoreError

    token = (await store.aget("retell_llm_token")).value
    if token is None and args.fix and public_url:
        import secrets as token_source

        made = token_source.token_urlsafe(24)
        try:
            await store.aset("retell_llm_token", made)
            token = made
        except SecretStoreError as exc:
            print(
                f"voice-console assistants: no tap token could be kept ({exc}); set VOICE_CONSOLE_RETELL_LLM_TOKEN.",
                file=err,
            )
    return LlmTap(tap_url(public_url, token), settings.retell.llm_forward_to)


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
    what: str  # what --fix completes, for people, e.g. "server messages"
    missing: Callable[[dict[str, Any]], list[str]]
    checks: Callable[..., list[Any]]
    # (client, item) -> the item after the fix and what changed, one line each
    fix: Callable[[Any, dict[str, Any]], Awaitable[tuple[dict[str, Any], list[str]]]]


async def _vapi_assistants(
    args: argparse.Namespace, settings: Settings, key: str, public_url: str | None, out: TextIO, err: TextIO
) -> int:
    from console.providers.vapi.checks import check_assistant, missing_server_messages
    from console.providers.vapi.client import VapiClient
    from console.services.assistants import fix_server_messages

    async def fix(client: VapiClient, assistant: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        now = await fix_server_messages(client, assistant)
        if not now:
            return assistant, []
        return {**assistant, "serverMessages": now}, [f"serverMessages now include {', '.join(now)}"]

    kind = _Kind("id", "name", "", "server messages", missing_server_messages, check_assistant, fix)
    async with VapiClient(key, base_url=settings.vapi.base_url) as client:
        return await _check_each(kind, client, client.list_assistants, args, public_url, out, err)


async def _retell_agents(
    args: argparse.Namespace,
    settings: Settings,
    key: str,
    public_url: str | None,
    tap: Any,
    out: TextIO,
    err: TextIO,
) -> int:
    from functools import partial

    from console.providers.retell.checks import check_agent, missing_webhook_events
    from console.providers.retell.client import RetellClient
    from console.services.assistants import fix_agent

    kind = _Kind(
        "agent_id",
        "agent_name",
        "  (Retell agent)",
        "webhook events",
        missing_webhook_events,
        partial(check_agent, tap=tap),
        partial(fix_agent, tap=tap),
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
            changes: list[str] = []
            if args.fix:
                try:  # the checks below describe it as it is after the fix
                    item, changes = await kind.fix(client, item)
                except ApiError as exc:  # report it, and go on fixing the others
                    print(f"  failed  could not add the missing {kind.what}: {exc}", file=out)
                if kind.missing(item):
                    unfixed.append(name)
            _print_checks(kind.checks(item, public_url=public_url), out)
            for change in changes:
                print(f"  fixed   {change}", file=out)
    except ApiError as exc:
        print(f"voice-console assistants: {exc}", file=err)
        return 1
    if unfixed:
        print(f"voice-console assistants: still missing {kind.what} after --fix: {', '.join(unfixed)}.", file=err)
        return 1
    return 0
