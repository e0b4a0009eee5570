"""`voice-console dial --to +E164`: place a test call through the platform's API.

Works the same against Vapi and against `voice-console platform` (set
VOICE_CONSOLE_VAPI_BASE_URL to the simulator's URL).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from console.config import Settings
from console.providers.vapi.client import VapiClient, VapiError, validate_e164
from console.providers.vapi.live import mask_url
from console.secrets import SecretStore


def add_dial_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("dial", help="place a test call")
    parser.add_argument("--to", required=True, metavar="+E164", help="the number to call, e.g. +14155550142")
    parser.add_argument("--assistant", metavar="ID", help="assistant id (default: the first assistant)")
    parser.add_argument("--phone-number", metavar="ID", help="phone number id to call from (default: the first one)")
    parser.add_argument("--provider", choices=["vapi", "retell", "twilio"], default="vapi")
    parser.add_argument("--json", action="store_true", help="print the created call as JSON")
    return parser


async def run_dial(args: argparse.Namespace, settings: Settings, *, secret_store: SecretStore | None = None,
                   out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    if args.provider != "vapi":
        print(f"voice-console dial: --provider {args.provider} is not in this build yet; use vapi.", file=err)
        return 2
    try:
        validate_e164(args.to, what="--to")
    except ValueError as exc:
        print(f"voice-console dial: {exc}", file=err)
        return 2
    key = await (secret_store or SecretStore()).aget("vapi_api_key")
    if not key.value:
        print(f"voice-console dial: no Vapi API key: {key.note} (`voice-console keys set vapi` or VOICE_CONSOLE_VAPI_API_KEY)",
              file=err)
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
                    print("voice-console dial: the account has no phone number to call from; pass --phone-number.", file=err)
                    return 1
                number = numbers[0]["id"]
            call = await client.create_phone_call(phone_number_id=number, customer_number=args.to, assistant_id=assistant)
    except VapiError as exc:
        print(f"voice-console dial: {exc}", file=err)
        return 1
    monitor = call.get("monitor") or {}
    if args.json:
        masked = {**call, "monitor": {k: mask_url(v) if isinstance(v, str) else v for k, v in monitor.items()}}
        print(json.dumps(masked, indent=2), file=out)
    else:
        print(f"{call.get('id')}  {call.get('status')}  to {args.to} from {number} with assistant {assistant}", file=out)
        if monitor:
            print(f"  control {mask_url(monitor.get('controlUrl', ''))} · listen {mask_url(monitor.get('listenUrl', ''))}",
                  file=out)
    return 0
