"""`voice-console replay CALL_ID --to URL [--speed X]`: re-post a stored call's webhook deliveries.

The engine (pacing, signing, posting) is `console.services.replay`, shared with the TUI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from console.commands import add_config_flags, load_settings_or_report

if TYPE_CHECKING:
    from console.config import Settings


def register(subparsers: Any) -> None:
    replay = subparsers.add_parser(
        "replay",
        help="re-post a stored call's webhook deliveries to a receiver, on their original timing",
        description=(
            "Re-post the webhook deliveries stored for CALL_ID to URL (each to its original path under it, "
            "e.g. /webhook/vapi), spaced as they originally arrived divided by --speed. Secrets are never "
            "stored: bodies are signed again with the secrets from the environment or the OS keyring. "
            "Each carries the header X-Voice-Console-Replay: a voice-console receiver records it as a replay "
            "(under the call id marked ↻), never as more of the original call, and never replays it again. "
            "CALL_ID is a full id or any unique prefix of one (the console's short ids work). "
            "Exit 0 when every delivery got a 2xx answer; 1 when one did not, or when the history or the call "
            "is not there; 2 for bad arguments or a prefix that matches several calls (they are listed)."
        ),
    )
    replay.add_argument("call_id", metavar="CALL_ID")
    replay.add_argument(
        "--to", required=True, metavar="URL", help="the receiver's base URL, e.g. http://127.0.0.1:8765"
    )
    replay.add_argument(
        "--speed",
        type=_speed_arg,
        default=1.0,
        metavar="X",
        help="time compression: 2 plays twice as fast (default 1, the original timing)",
    )
    replay.add_argument(
        "--public-url",
        metavar="URL",
        help="the base URL the receiver checks signatures against (default: receiver.public_url "
        "from the settings, else --to)",
    )
    add_config_flags(replay, suppress=True)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    import asyncio

    try:
        return asyncio.run(run_replay(args, settings))
    except KeyboardInterrupt:
        return 1


def _speed_arg(text: str) -> float:
    from console.services.replay import valid_speed

    try:
        return valid_speed(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


async def run_replay(
    args: argparse.Namespace,
    settings: Settings,
    *,
    out: TextIO | None = None,
    err: TextIO | None = None,
    secret_store: Any = None,
) -> int:
    import contextlib
    import time

    import httpx

    from console.commands.history import resolve_call
    from console.core.replays import is_replay_call, new_run_id, original_call_id
    from console.redact import Redactor
    from console.secrets import SecretStore
    from console.services.replay import DeliverySigner, ReplayClock, replay_deliveries, stored_deliveries
    from console.store.db import Store, StoreError

    out = out or sys.stdout
    err = err or sys.stderr

    base_url: str = args.to
    if not _http_url(base_url):
        print(f"voice-console replay: --to must be an http:// or https:// URL, not {base_url!r}", file=err)
        return 2
    db_path = Path(settings.db_path).expanduser()
    if not db_path.is_file():
        # Not there at run time: 1, as `history` says it.
        print(f"voice-console replay: no history database at {db_path} (pass --db or set VOICE_CONSOLE_DB)", file=err)
        return 1
    try:
        store = await Store.open(db_path)
    except (StoreError, OSError) as exc:
        print(f"voice-console replay: {exc}", file=err)
        return 1
    try:
        call_id, code = await resolve_call(store, args.call_id, db_path, err, "replay")
        if call_id is None:
            return code
        deliveries = await stored_deliveries(store, call_id)
    finally:
        await store.close()
    if not deliveries and is_replay_call(call_id):
        print(
            f"voice-console replay: {call_id} is a replay recorded by this console; replays are not "
            f"replayed again (replay the original: {original_call_id(call_id)})",
            file=err,
        )
        return 1
    if not deliveries:
        print(
            f"voice-console replay: call {call_id} has no stored webhook deliveries to re-post "
            "(its events came another way, e.g. a media stream)",
            file=err,
        )
        return 1

    lookups = await (secret_store or SecretStore()).aget_all()
    secrets = {name: lookup.value for name, lookup in lookups.items()}
    redactor = Redactor(secrets.values())
    signer = DeliverySigner(settings, secrets, settings.receiver.public_url or base_url)
    for provider in sorted({d.provider for d in deliveries}):
        if problem := signer.missing(provider):
            print(f"voice-console replay: warning: {problem}", file=err)

    def say(text: str, stream: TextIO | None = None) -> None:
        print(redactor.text(text), file=stream or out, flush=True)

    total = len(deliveries)
    span = deliveries[-1].received_at - deliveries[0].received_at
    run_id = new_run_id()
    say(
        f"replaying {total} deliveries of call {call_id} to {base_url} at {args.speed:g}x "
        f"(originally {span:.1f} s, about {span / args.speed:.1f} s now; replay run {run_id})"
    )
    clock = ReplayClock(args.speed)
    accepted = 0
    started = time.perf_counter()
    width = len(str(total))
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0)) as client,
        contextlib.aclosing(replay_deliveries(deliveries, base_url, signer, clock, client, run_id=run_id)) as results,
    ):
        number = 0
        async for result in results:
            number += 1
            accepted += result.ok
            d = result.delivery
            if result.status is None:
                outcome = f"no answer ({result.error})"
            else:
                outcome = f"{result.status}" + (f" {result.error}" if result.error else "")
            say(
                f"[{number:>{width}}/{total}] +{result.offset_s:7.2f}s {d.method} {d.path.split('?')[0]} "
                f"{d.message_type or '-'} -> {outcome} ({result.elapsed_ms:.0f} ms)"
            )
            if result.status is None and number == 1 and "Connect" in (result.error or ""):
                clock.stop()
                say(f"voice-console replay: cannot reach {base_url}; stopped", err)
                return 1
    elapsed = time.perf_counter() - started
    refused = total - accepted
    say(f"replayed {total} deliveries in {elapsed:.1f} s: {accepted} accepted (2xx), {refused} not")
    return 0 if refused == 0 else 1
