"""`voice-console dial --to NUMBER [--from NUMBER] [--provider P]`: place a test call through the
platform's API (Vapi, Retell or Twilio: each provider's dialing client, from the registry).

Numbers may be typed as people write them: `+14155550142`, or national, such as
`(415) 555-0142`, read in `[dial] default_region`. They are checked against
libphonenumber's data, shown with their country and sent as E.164. Works the
same against Vapi and against `voice-console platform` (set
VOICE_CONSOLE_VAPI_BASE_URL to the simulator's URL).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TextIO

from console.commands import load_settings_or_report, provider_names

if TYPE_CHECKING:
    from console.config import Settings
    from console.phone import PhoneNumber
    from console.providers.base import PhoneLine
    from console.secrets import SecretStore


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("dial", help="place a test call")
    parser.add_argument(
        "--to",
        required=True,
        metavar="NUMBER",
        help="the number to call: +14155550142, or national such as '(415) 555-0142' (read in [dial] default_region)",
    )
    parser.add_argument(
        "--from",
        dest="from_number",
        metavar="NUMBER",
        help="call from the account's phone number with this number (default: its first one)",
    )
    parser.add_argument(
        "--assistant",
        "--agent",
        dest="assistant",
        metavar="ID",
        help="the assistant (Vapi) or agent (Retell) to call with (default: the account's first)",
    )
    parser.add_argument("--phone-number", metavar="ID", help="phone number id to call from (default: the first one)")
    parser.add_argument(
        "--provider", choices=list(provider_names()), default="vapi", help="whose API places the call (default vapi)"
    )
    parser.add_argument(
        "--public-url",
        metavar="URL",
        help="twilio: the receiver's public URL, where the call fetches its TwiML (default: receiver.public_url)",
    )
    parser.add_argument("--json", action="store_true", help="print the created call as JSON")


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    import asyncio

    return asyncio.run(run_dial(args, settings))


def _line_id(lines: list[PhoneLine], wanted: PhoneNumber) -> str | None:
    """The id of the account's phone number that is `wanted` (the platform keeps them as E.164)."""
    return next((line.id for line in lines if line.number == wanted.e164), None)


def _masked(value: Any, urls: dict[str, str]) -> Any:
    """The platform's answer with its live URLs masked wherever they appear (for --json)."""
    if isinstance(value, dict):
        return {key: _masked(item, urls) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, urls) for item in value]
    return urls.get(value, value) if isinstance(value, str) else value


async def run_dial(
    args: argparse.Namespace,
    settings: Settings,
    *,
    secret_store: SecretStore | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    from console.phone import PhoneNumberError, parse_phone
    from console.providers import registry
    from console.providers.base import PlatformError
    from console.redact import mask_url
    from console.secrets import SecretStore
    from console.services.keys import missing_key_message

    spec = registry.spec(args.provider)
    if spec.dialing is None or spec.base_url is None:
        dialable = ", ".join(each.name for each in registry.specs() if each.can_dial)
        print(f"voice-console dial: --provider {args.provider} is not in this build yet; use {dialable}.", file=err)
        return 2
    region = settings.dial.default_region
    from_text = getattr(args, "from_number", None)
    try:
        to = parse_phone(args.to, default_region=region, what="--to number")
        from_ = parse_phone(from_text, default_region=region, what="--from number") if from_text else None
    except PhoneNumberError as exc:
        print(f"voice-console dial: {exc}", file=err)
        return 2
    if from_ and args.phone_number:
        print("voice-console dial: give --from NUMBER or --phone-number ID, not both.", file=err)
        return 2
    store = secret_store or SecretStore()
    keys = {}
    for name in spec.dialing.needs:
        lookup = await store.aget(name)
        if not lookup.value:
            print(f"voice-console dial: {missing_key_message(lookup, spec.secret(name).label)}", file=err)
            return 1
        keys[name] = lookup.value
    for name in spec.dialing.optional:
        if value := (await store.aget(name)).value:
            keys[name] = value
    options = {"public_url": settings.receiver.public_url} if spec.dialing.needs_public_url else {}
    agent_word = spec.dialing.agent_word
    try:
        async with spec.dialing.client(keys, spec.base_url(settings), **options) as client:
            assistant = args.assistant
            if not assistant:
                agents = await client.agents(limit=1)
                if not agents:
                    print(
                        f"voice-console dial: the account has no {agent_word}; create one or pass --assistant.",
                        file=err,
                    )
                    return 1
                assistant = agents[0].id
            number = args.phone_number
            if not number:
                lines = await client.phone_lines()
                if not lines:
                    print(
                        "voice-console dial: the account has no phone number to call from; pass --phone-number.",
                        file=err,
                    )
                    return 1
                number = _line_id(lines, from_) if from_ else lines[0].id
                if number is None and from_ is not None:
                    known = ", ".join(line.number for line in lines)
                    print(
                        f"voice-console dial: the account has no phone number {from_.describe()} to call from; "
                        f"its numbers are {known}.",
                        file=err,
                    )
                    return 1
            call = await client.place_call(to=to.e164, line_id=number, agent_id=assistant)
    except PlatformError as exc:
        print(f"voice-console dial: {exc}", file=err)
        return 1
    live = {url: mask_url(url) for url in (call.control_url, call.listen_url) if url}
    if args.json:
        print(json.dumps(_masked(call.raw, live), indent=2), file=out)
    else:
        from_label = from_.describe() if from_ else number
        print(f"{call.id}  {call.status}  to {to.describe()} from {from_label} with {agent_word} {assistant}", file=out)
        if live:
            print(
                f"  control {mask_url(call.control_url or '')} · listen {mask_url(call.listen_url or '')}",
                file=out,
            )
    return 0
