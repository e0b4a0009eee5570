"""`voice-console keys set|delete|list|test PROVIDER`: API keys in the OS keyring.

Values are read with hidden input (or one line of piped stdin), never from
argv, and are never printed. Keyring calls run in a thread with a timeout.
With no usable keyring the command says so and explains the options; there is
no plaintext fallback. What the TUI shares lives in `console.services.keys`.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from console.commands import load_settings_or_report, provider_names

if TYPE_CHECKING:
    from console.secrets import SecretStore


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "keys",
        help="store, delete, list or test API keys (OS keyring; VOICE_CONSOLE_* env vars override)",
        description="Keys live in the OS keyring (service 'voice-console'). Values are typed with hidden "
        "input or piped on stdin, never given as arguments.",
    )
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="set|delete|list|test")
    providers = sorted(provider_names())
    owners = [*providers, "team"]  # team: the team's Redis password (team mode)

    set_cmd = commands.add_parser("set", help="store a key (hidden input, or one line from stdin)")
    set_cmd.add_argument("provider", choices=owners)
    set_cmd.add_argument("--name", help="which key, e.g. vapi_api_key or webhook_secret (asked when omitted)")

    delete = commands.add_parser("delete", help="remove a provider's keys from the keyring")
    delete.add_argument("provider", choices=owners)
    delete.add_argument("--name", help="only this key (default: all of the provider's keys)")

    list_cmd = commands.add_parser("list", help="show where each key comes from (env, keyring, none)")
    list_cmd.add_argument("provider", nargs="?", choices=owners)

    test = commands.add_parser("test", help="check a key against the provider's API")
    test.add_argument("provider", choices=providers)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    from console.providers import registry

    return run_keys(args, base_urls={spec.name: spec.base_url(settings) for spec in registry.specs() if spec.base_url})


def _resolve_name(provider: str, name: str | None) -> str | None:
    from console.services.keys import KeysUsage, provider_keys

    if name is None:
        return None
    names = provider_keys()[provider]
    for candidate in names:
        if name in (candidate, candidate.removeprefix(f"{provider}_")):
            return candidate
    raise KeysUsage(f"{provider} has no key named {name!r}; choose one of: {', '.join(names)}.")


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _choose_name(provider: str, stdin: TextIO, err: TextIO) -> str:
    from console.providers import registry
    from console.services.keys import KeysUsage, provider_keys

    # The console makes the taps' tokens itself: a user sets one only by naming it.
    made = registry.made_secret_names()
    names = tuple(name for name in provider_keys()[provider] if name not in made) or provider_keys()[provider]
    if len(names) == 1:
        return names[0]
    if not _isatty(stdin):
        # Piped stdin carries the value, so it cannot also answer the question.
        raise KeysUsage(f"{provider} has several keys; say which with --name ({' or '.join(names)}).")
    for index, name in enumerate(names, 1):
        err.write(f"  {index}. {name}\n")
    err.write(f"Which {provider} key? [1-{len(names)}]: ")
    err.flush()
    answer = stdin.readline().strip()
    if answer.isdigit() and 1 <= int(answer) <= len(names):
        return names[int(answer) - 1]
    chosen = _resolve_name(provider, answer) if answer else None
    if chosen is None:
        raise KeysUsage(f"no key chosen; nothing stored. Use --name ({' or '.join(names)}).")
    return chosen


def _read_value(name: str, stdin: TextIO, err: TextIO) -> str:
    if _isatty(stdin):
        return getpass.getpass(f"{name} (input hidden): ", stream=err).strip()
    return stdin.readline().strip()


async def _set(args: argparse.Namespace, store: SecretStore, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    from console.secrets import SERVICE, KeyringUnavailable, SecretStoreError
    from console.services.keys import EXIT_FAIL, EXIT_OK, KeysUsage, check_keyring, env_override_note, no_keyring

    name = _resolve_name(args.provider, args.name) or _choose_name(args.provider, stdin, err)
    # Check before asking: nobody should type a secret only to be told it cannot be kept.
    problem = await check_keyring(store)
    if problem:
        return no_keyring(err.write, problem)
    try:
        # Read on this thread on purpose: Ctrl-C must reach getpass, and nothing else runs meanwhile.
        value = _read_value(name, stdin, err)
    except (EOFError, KeyboardInterrupt):
        err.write("voice-console keys: cancelled, nothing stored.\n")
        return EXIT_FAIL
    if not value:
        raise KeysUsage(f"no value was entered for {name}; nothing stored.")
    try:
        await store.aset(name, value)
    except KeyringUnavailable as exc:
        return no_keyring(err.write, str(exc))
    except SecretStoreError as exc:
        err.write(f"voice-console keys: {name} was not stored: {exc}\n")
        return EXIT_FAIL
    out.write(f"Stored {name} in the OS keyring (service {SERVICE}).\n")
    if note := env_override_note(store, name):
        out.write(note + "\n")
    return EXIT_OK


async def _delete(args: argparse.Namespace, store: SecretStore, out: TextIO, err: TextIO) -> int:
    from console.secrets import KeyringUnavailable, SecretStoreError
    from console.services.keys import EXIT_FAIL, EXIT_OK, check_keyring, env_override_note, no_keyring, provider_keys

    name = _resolve_name(args.provider, args.name)
    names = (name,) if name else provider_keys()[args.provider]
    problem = await check_keyring(store)
    if problem:
        return no_keyring(err.write, problem)
    for each in names:
        try:
            deleted = await store.adelete(each)
        except KeyringUnavailable as exc:
            return no_keyring(err.write, str(exc))
        except SecretStoreError as exc:
            err.write(f"voice-console keys: {each} was not deleted: {exc}\n")
            return EXIT_FAIL
        out.write(f"Deleted {each} from the OS keyring.\n" if deleted else f"{each} was not in the keyring.\n")
        if note := env_override_note(store, each, deleted=True):
            out.write(note + "\n")
    return EXIT_OK


async def _list(args: argparse.Namespace, store: SecretStore, out: TextIO, err: TextIO) -> int:
    import asyncio

    from console.services.keys import EXIT_OK, check_keyring, no_keyring, provider_keys, source_label

    keys = provider_keys()
    providers = [args.provider] if args.provider else list(keys)
    names = [name for provider in providers for name in keys[provider]]
    problem = await check_keyring(store)
    lookups = await asyncio.gather(*(store.aget(name) for name in names))
    width = max(len(name) for name in names)
    for lookup in lookups:
        out.write(f"{lookup.name:<{width}}  {source_label(store, lookup)}\n")
    if problem:
        # The listing itself worked (the environment was read): the missing keyring is a note, not a failure.
        no_keyring(err.write, f"the OS keyring is absent, so only the environment was read. {problem}", wrote=False)
    return EXIT_OK


async def run_keys_async(
    args: argparse.Namespace,
    *,
    secret_store: SecretStore | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    base_urls: Mapping[str, str | None] | None = None,
) -> int:
    from console.secrets import SecretStore
    from console.services.keys import EXIT_USAGE, KeysUsage, probe_keys

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
            probe = await probe_keys(args.provider, store, base_urls)
            probe.print(out, err)
            return probe.code
    except KeysUsage as exc:
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
    base_urls: Mapping[str, str | None] | None = None,
) -> int:
    """Synchronous entry point for the CLI (use `run_keys_async` inside a running loop)."""
    import asyncio

    try:
        return asyncio.run(
            run_keys_async(
                args,
                secret_store=secret_store,
                stdin=stdin,
                out=out,
                err=err,
                base_urls=base_urls,
            )
        )
    except KeyboardInterrupt:
        from console.services.keys import EXIT_FAIL

        err.write("voice-console keys: cancelled.\n")
        return EXIT_FAIL
