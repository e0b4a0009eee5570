"""`voice-console keys set|delete|list|test PROVIDER`: API keys in the OS keyring.

Values are read with hidden input (or one line of piped stdin), never from
argv, and are never printed. Keyring calls run in a thread with a timeout.
With no usable keyring the command says so and explains the options; there is
no plaintext fallback.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import getpass
import os
import sys
from typing import Any, TextIO

import httpx

from console.providers.vapi.client import (
    DEFAULT_BASE_URL,
    VapiAuthError,
    VapiClient,
    VapiConnectionError,
    VapiError,
)
from console.secrets import (
    SERVICE,
    KeyringUnavailable,
    SecretLookup,
    SecretStore,
    SecretStoreError,
    keyring_problem,
)

PROVIDER_KEYS: dict[str, tuple[str, ...]] = {
    "vapi": ("vapi_api_key", "vapi_webhook_secret"),
    "retell": ("retell_api_key",),
    "twilio": ("twilio_account_sid", "twilio_auth_token", "twilio_shared_key"),
}

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
RETELL_BASE_URL = "https://api.retellai.com"
TWILIO_BASE_URL = "https://api.twilio.com"


class _Usage(Exception):
    """Bad usage: message printed, exit 2."""


def add_keys_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "keys",
        help="store, delete, list or test API keys (OS keyring; VOICE_CONSOLE_* env vars override)",
        description="Keys live in the OS keyring (service 'voice-console'). Values are typed with hidden "
        "input or piped on stdin, never given as arguments.",
    )
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="set|delete|list|test")
    providers = sorted(PROVIDER_KEYS)

    set_cmd = commands.add_parser("set", help="store a key (hidden input, or one line from stdin)")
    set_cmd.add_argument("provider", choices=providers)
    set_cmd.add_argument("--name", help="which key, e.g. vapi_api_key or webhook_secret (asked when omitted)")

    delete = commands.add_parser("delete", help="remove a provider's keys from the keyring")
    delete.add_argument("provider", choices=providers)
    delete.add_argument("--name", help="only this key (default: all of the provider's keys)")

    list_cmd = commands.add_parser("list", help="show where each key comes from (env, keyring, none)")
    list_cmd.add_argument("provider", nargs="?", choices=providers)

    test = commands.add_parser("test", help="check a key against the provider's API")
    test.add_argument("provider", choices=providers)
    return parser


def _resolve_name(provider: str, name: str | None) -> str | None:
    if name is None:
        return None
    names = PROVIDER_KEYS[provider]
    for candidate in names:
        if name in (candidate, candidate.removeprefix(f"{provider}_")):
            return candidate
    raise _Usage(f"{provider} has no key named {name!r}; choose one of: {', '.join(names)}.")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _choose_name(provider: str, stdin: TextIO, err: TextIO) -> str:
    names = PROVIDER_KEYS[provider]
    if len(names) == 1:
        return names[0]
    if not _isatty(stdin):
        # Piped stdin carries the value, so it cannot also answer the question.
        raise _Usage(f"{provider} has several keys; say which with --name ({' or '.join(names)}).")
    for index, name in enumerate(names, 1):
        err.write(f"  {index}. {name}\n")
    err.write(f"Which {provider} key? [1-{len(names)}]: ")
    err.flush()
    answer = stdin.readline().strip()
    if answer.isdigit() and 1 <= int(answer) <= len(names):
        return names[int(answer) - 1]
    chosen = _resolve_name(provider, answer) if answer else None
    if chosen is None:
        raise _Usage(f"no key chosen; nothing stored. Use --name ({' or '.join(names)}).")
    return chosen


def _read_value(name: str, stdin: TextIO, err: TextIO) -> str:
    if _isatty(stdin):
        return getpass.getpass(f"{name} (input hidden): ", stream=err).strip()
    return stdin.readline().strip()


def _no_keyring(err: TextIO, problem: str, *, wrote: bool = True) -> int:
    err.write(f"voice-console keys: {problem}\n")
    env_list = ", ".join(sorted({f"VOICE_CONSOLE_{name.upper()}" for names in PROVIDER_KEYS.values() for name in names}))
    err.write(f"  The environment variables are: {env_list}.\n")
    if wrote:
        err.write("  Nothing was written to a file: voice-console never stores keys in plaintext.\n")
    return EXIT_FAIL


def missing_key_message(lookup: SecretLookup, label: str = "Vapi API key") -> str:
    """`no Vapi API key: <why, and what to do>`, the advice said once: the lookup's note carries it."""
    return f"no {label}: {lookup.note or f'{lookup.name} is not set.'}"


async def check_keyring(store: SecretStore) -> str | None:
    """Why the keyring cannot keep secrets (one paragraph), or None; never blocks the loop."""
    try:
        return await store.run_off_loop(keyring_problem)
    except SecretStoreError as exc:
        return str(exc)


def source_label(store: SecretStore, lookup: SecretLookup) -> str:
    """Where a key comes from, never its value: `env (VOICE_CONSOLE_…)`, `keyring` or `none`."""
    if lookup.source == "env":
        return f"env ({store.env_name(lookup.name)})"
    return "keyring" if lookup.source == "keyring" else "none"


def env_override_note(store: SecretStore, name: str, *, deleted: bool = False) -> str | None:
    """The environment variable wins over the keyring: say so after a set or delete."""
    if not store.env_has(name):
        return None
    if deleted:
        return f"Note: {store.env_name(name)} is still set in this environment and still provides {name}."
    return f"Note: {store.env_name(name)} is set in this environment and takes precedence over the keyring."


async def _set(args: argparse.Namespace, store: SecretStore, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    name = _resolve_name(args.provider, args.name) or _choose_name(args.provider, stdin, err)
    # Check before asking: nobody should type a secret only to be told it cannot be kept.
    problem = await check_keyring(store)
    if problem:
        return _no_keyring(err, problem)
    try:
        # Read on this thread on purpose: Ctrl-C must reach getpass, and nothing else runs meanwhile.
        value = _read_value(name, stdin, err)
    except (EOFError, KeyboardInterrupt):
        err.write("voice-console keys: cancelled, nothing stored.\n")
        return EXIT_FAIL
    if not value:
        raise _Usage(f"no value was entered for {name}; nothing stored.")
    try:
        await store.aset(name, value)
    except KeyringUnavailable as exc:
        return _no_keyring(err, str(exc))
    except SecretStoreError as exc:
        err.write(f"voice-console keys: {name} was not stored: {exc}\n")
        return EXIT_FAIL
    out.write(f"Stored {name} in the OS keyring (service {SERVICE}).\n")
    if note := env_override_note(store, name):
        out.write(note + "\n")
    return EXIT_OK


async def _delete(args: argparse.Namespace, store: SecretStore, out: TextIO, err: TextIO) -> int:
    name = _resolve_name(args.provider, args.name)
    names = (name,) if name else PROVIDER_KEYS[args.provider]
    problem = await check_keyring(store)
    if problem:
        return _no_keyring(err, problem)
    for each in names:
        try:
            deleted = await store.adelete(each)
        except KeyringUnavailable as exc:
            return _no_keyring(err, str(exc))
        except SecretStoreError as exc:
            err.write(f"voice-console keys: {each} was not deleted: {exc}\n")
            return EXIT_FAIL
        out.write(f"Deleted {each} from the OS keyring.\n" if deleted else f"{each} was not in the keyring.\n")
        if note := env_override_note(store, each, deleted=True):
            out.write(note + "\n")
    return EXIT_OK


async def _list(args: argparse.Namespace, store: SecretStore, out: TextIO, err: TextIO) -> int:
    providers = [args.provider] if args.provider else list(PROVIDER_KEYS)
    names = [name for provider in providers for name in PROVIDER_KEYS[provider]]
    problem = await check_keyring(store)
    lookups = await asyncio.gather(*(store.aget(name) for name in names))
    width = max(len(name) for name in names)
    for lookup in lookups:
        out.write(f"{lookup.name:<{width}}  {source_label(store, lookup)}\n")
    if problem:
        # The listing itself worked (the environment was read): the missing keyring is a note, not a failure.
        _no_keyring(err, f"the OS keyring is absent, so only the environment was read. {problem}", wrote=False)
    return EXIT_OK


async def _test_vapi(store: SecretStore, base_url: str, out: TextIO, err: TextIO) -> int:
    lookup = await store.aget("vapi_api_key")
    secret = await store.aget("vapi_webhook_secret")
    if secret.value is None:
        out.write("vapi_webhook_secret: not set (needed to verify webhooks in the default 'secret' mode).\n")
    else:
        out.write(
            f"vapi_webhook_secret: set ({secret.source}); Vapi sends it to the console, so it is checked "
            "when a webhook arrives, not here.\n"
        )
    if (code := await _missing(store, [lookup], err)) is not None:
        return code
    assert lookup.value is not None
    async with VapiClient(lookup.value, base_url=base_url, max_retries=1, timeout_s=10) as client:
        try:
            await client.list_assistants(limit=1)
        except VapiAuthError:
            err.write(f"vapi_api_key ({lookup.source}): refused by {base_url} (401). Check that it is the private key.\n")
            return EXIT_FAIL
        except VapiConnectionError as exc:
            err.write(f"vapi_api_key ({lookup.source}): not tested, {exc}.\n")
            return EXIT_FAIL
        except VapiError as exc:
            err.write(f"vapi_api_key ({lookup.source}): the test request failed: {exc}\n")
            return EXIT_FAIL
    out.write(f"vapi_api_key ({lookup.source}): ok, accepted by {base_url}.\n")
    return EXIT_OK


async def _missing(store: SecretStore, lookups: list[SecretLookup], err: TextIO) -> int | None:
    """Exit code when a needed key is missing (explaining a missing keyring first), else None."""
    absent = [lookup for lookup in lookups if lookup.value is None]
    if not absent:
        return None
    problem = await check_keyring(store)
    if problem:
        return _no_keyring(err, problem)
    for lookup in absent:
        err.write(f"voice-console keys: {lookup.name} is {lookup.note or 'not set.'}\n")
    return EXIT_FAIL


async def _probe(name: str, request: httpx.Request, source: str, out: TextIO, err: TextIO) -> int:
    """Send one read-only request; 2xx = ok, 401/403 = refused, anything else reported as is."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.send(request)
    except httpx.TransportError as exc:
        err.write(f"{name} ({source}): not tested, {request.url.scheme}://{request.url.host} unreachable ({type(exc).__name__}).\n")
        return EXIT_FAIL
    where = f"{request.url.scheme}://{request.url.netloc.decode()}"
    if response.is_success:
        out.write(f"{name} ({source}): ok, accepted by {where}.\n")
        return EXIT_OK
    if response.status_code in (401, 403):
        err.write(f"{name} ({source}): refused by {where} ({response.status_code}).\n")
        return EXIT_FAIL
    err.write(f"{name} ({source}): the test request failed: {where} answered {response.status_code}.\n")
    return EXIT_FAIL


async def _test_retell(store: SecretStore, base_url: str, out: TextIO, err: TextIO) -> int:
    lookup = await store.aget("retell_api_key")
    if (code := await _missing(store, [lookup], err)) is not None:
        return code
    assert lookup.value is not None
    # `POST /v2/list-agents` (2026 API): the cheapest authenticated read.
    request = httpx.Request("POST", f"{base_url}/v2/list-agents", json={"limit": 1},
                            headers={"Authorization": f"Bearer {lookup.value}"})
    return await _probe("retell_api_key", request, lookup.source, out, err)


async def _test_twilio(store: SecretStore, base_url: str, out: TextIO, err: TextIO) -> int:
    sid, token = await store.aget("twilio_account_sid"), await store.aget("twilio_auth_token")
    if (code := await _missing(store, [sid, token], err)) is not None:
        return code
    assert sid.value is not None and token.value is not None
    if not sid.value.startswith("AC") or "/" in sid.value:
        raise _Usage("twilio_account_sid should look like AC followed by 32 hex digits.")
    # Fetching the account itself needs both halves and changes nothing.
    request = httpx.Request("GET", f"{base_url}/2010-04-01/Accounts/{sid.value}.json",
                            headers={"Authorization": "Basic " + base64.b64encode(f"{sid.value}:{token.value}".encode()).decode()})
    return await _probe("twilio_auth_token", request, f"{sid.source}/{token.source}", out, err)


async def probe_provider_keys(
    provider: str,
    store: SecretStore,
    out: TextIO,
    err: TextIO,
    *,
    vapi_base_url: str | None = None,
    retell_base_url: str | None = None,
    twilio_base_url: str | None = None,
) -> int:
    """`keys test PROVIDER`: one read-only request with the provider's keys; the exit code.
    Also used by the TUI's keys screen. Nothing written to `out`/`err` contains a key."""
    try:
        if provider == "vapi":
            base_url = vapi_base_url or os.environ.get("VOICE_CONSOLE_VAPI_BASE_URL") or DEFAULT_BASE_URL
            return await _test_vapi(store, base_url.rstrip("/"), out, err)
        if provider == "retell":
            return await _test_retell(store, (retell_base_url or RETELL_BASE_URL).rstrip("/"), out, err)
        if provider == "twilio":
            return await _test_twilio(store, (twilio_base_url or TWILIO_BASE_URL).rstrip("/"), out, err)
    except _Usage as exc:
        err.write(f"voice-console keys: {exc}\n")
        return EXIT_USAGE
    err.write(f"voice-console keys: unknown provider {provider!r}; choose one of {', '.join(sorted(PROVIDER_KEYS))}.\n")
    return EXIT_USAGE


async def run_keys_async(
    args: argparse.Namespace,
    *,
    secret_store: SecretStore | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    vapi_base_url: str | None = None,
    retell_base_url: str | None = None,
    twilio_base_url: str | None = None,
) -> int:
    store = secret_store or SecretStore()
    stdin = stdin or sys.stdin
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        if args.keys_command == "set":
            return await _set(args, store, stdin, out, err)
        if args.keys_command == "delete":
            return await _delete(args, store, out, err)
        if args.keys_command == "list":
            return await _list(args, store, out, err)
        if args.keys_command == "test":
            return await probe_provider_keys(args.provider, store, out, err, vapi_base_url=vapi_base_url,
                                             retell_base_url=retell_base_url, twilio_base_url=twilio_base_url)
    except _Usage as exc:
        err.write(f"voice-console keys: {exc}\n")
        return EXIT_USAGE
    err.write("voice-console keys: choose one of set, delete, list, test.\n")
    return EXIT_USAGE


def run_keys(
    args: argparse.Namespace,
    *,
    secret_store: SecretStore | None = None,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    vapi_base_url: str | None = None,
    retell_base_url: str | None = None,
    twilio_base_url: str | None = None,
) -> int:
    """Synchronous entry point for the CLI (use `run_keys_async` inside a running loop)."""
    try:
        return asyncio.run(
            run_keys_async(
                args,
                secret_store=secret_store,
                stdin=stdin,
                out=out,
                err=err,
                vapi_base_url=vapi_base_url,
                retell_base_url=retell_base_url,
                twilio_base_url=twilio_base_url,
            )
        )
    except KeyboardInterrupt:
        err.write("voice-console keys: cancelled.\n")
        return EXIT_FAIL
