"""`voice-console dial --to NUMBER [--from NUMBER]`: place a test call through the platform's API.

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

from console.commands import PROVIDER_NAMES, load_settings_or_report

if TYPE_CHECKING:
    from console.config import Settings
    from console.phone import PhoneNumber
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
    parser.add_argument("--assistant", metavar="ID", help="assistant id (default: the first assistant)")
    parser.add_argument("--phone-number", metavar="ID", help="phone number id to call from (default: the first one)")
    parser.add_argument("--provider", choices=list(PROVIDER_NAMES), default="vapi")
    parser.add_argument("--json", action="store_true", help="print the created call as JSON")


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    import asyncio

    return asyncio.run(run_dial(args, settings))


def _number_id(numbers: list[dict[str, Any]], wanted: PhoneNumber) -> str | None:
    """The id of the account's phone number that is `wanted` (the platform keeps them as E.164)."""
    return next((str(n["id"]) for n in numbers if n.get("number") == wanted.e164 and n.get("id")), None)


async def run_dial(
    args: argparse.Namespace,
    settings: Settings,
    *,
    secret_store: SecretStore | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    from console.phone import PhoneNumberError, parse_phone
    from console.providers.vapi.client import VapiClient, VapiError
    from console.redact import mask_url
    from console.secrets import SecretStore
    from console.services.keys import missing_key_message

    if args.provider != "vapi":
        print(f"voice-console dial: --provider {args.provider} is not in this build yet; use vapi.", file=err)
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
    key = await (secret_store or SecretStore()).aget("vapi_api_key")
    if not key.value:
        print(f"voice-console dial: {missing_key_message(key)}", file=err)
        return 1
    try:
        async with VapiClient(key.value, base_url=settings.vapi.base_url) as client:
            assistant = args.assistant
            if not assistant:
                assistants = await client.list_assistants(limit=1)
                if not assistants:
                    print("voice-console dial: the account has no assistant; create one or pass --assistant.", file=err)
                    return 1
                assistant = assistants[0]["id"]
            number = args.phone_number
            if not number:
                numbers = await client.list_phone_numbers()
                if not numbers:
                    print(
                        "voice-console dial: the account has no phone number to call from; pass --phone-number.",
                        file=err,
                    )
                    return 1
                number = _number_id(numbers, from_) if from_ else numbers[0]["id"]
                if number is None:
                    known = ", ".join(str(n.get("number") or n.get("id")) for n in numbers)
                    print(
                        f"voice-console dial: the account has no phone number {from_.describe()} to call from; "
                        f"its numbers are {known}.",
                        file=err,
                    )
                    return 1
            call = await client.create_phone_call(
                phone_number_id=number, customer_number=to.e164, assistant_id=assistant
            )
    except VapiError as exc:
        print(f"voice-console dial: {exc}", file=err)
        return 1
    monitor = call.get("monitor") or {}
    if args.json:
        masked = {**call, "monitor": {k: mask_url(v) if isinstance(v, str) else v for k, v in monitor.items()}}
        print(json.dumps(masked, indent=2), file=out)
    else:
        from_label = from_.describe() if from_ else number
        print(
            f"{call.get('id')}  {call.get('status')}  to {to.describe()} from {from_label} with assistant {assistant}",
            file=out,
        )
        if monitor:
            print(
                f"  control {mask_url(monitor.get('controlUrl', ''))}"
                f" · listen {mask_url(monitor.get('listenUrl', ''))}",
                file=out,
            )
    return 0
