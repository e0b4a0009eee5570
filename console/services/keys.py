"""API keys as both `voice-console keys` and the TUI's keys screen see them: which keys
each provider has, where each comes from, and `probe_keys`, which tests them against
the provider's API and returns the result (no line of it ever contains a key).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TextIO

import httpx

from console.config import ENV_KEYS, Settings
from console.providers import registry
from console.secrets import (
    SecretLookup,
    SecretStore,
    SecretStoreError,
    keyring_problem,
    secret_env,
)


def provider_keys() -> dict[str, tuple[str, ...]]:
    """Each provider's secret names, in the order they are listed (from the providers' specs), then
    the others' (`team`: the team's Redis password)."""
    keys = {spec.name: tuple(secret.name for secret in spec.secrets) for spec in registry.specs()}
    keys.update((owner, tuple(secret.name for secret in secrets)) for owner, secrets in registry.OTHER_SECRETS.items())
    return keys


EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class KeysUsage(Exception):
    """Bad usage: message printed, exit 2."""


def no_keyring(write: Callable[[str], object], problem: str, *, wrote: bool = True) -> int:
    """Why no key can be kept, and the environment variables that work instead, told through `write`."""
    write(f"voice-console keys: {problem}\n")
    env_list = ", ".join(sorted(secret_env().values()))
    write(f"  The environment variables are: {env_list}.\n")
    if wrote:
        write("  Nothing was written to a file: voice-console never stores keys in plaintext.\n")
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


@dataclass(frozen=True)
class ProbeLine:
    text: str  # as the CLI prints it, newline included
    error: bool  # the CLI prints it on stderr


@dataclass(frozen=True)
class KeyProbe:
    """What `keys test PROVIDER` found: the exit code and the lines that explain it, in order."""

    code: int
    lines: list[ProbeLine]

    @property
    def ok(self) -> bool:
        return self.code == EXIT_OK

    def text(self) -> str:
        return "".join(line.text for line in self.lines)

    def print(self, out: TextIO, err: TextIO) -> None:
        for line in self.lines:
            (err if line.error else out).write(line.text)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[ProbeLine] = []

    def out(self, text: str) -> None:
        self.lines.append(ProbeLine(text, error=False))

    def err(self, text: str) -> None:
        self.lines.append(ProbeLine(text, error=True))


async def _missing(store: SecretStore, lookups: list[SecretLookup], report: _Lines) -> int | None:
    """Exit code when a needed key is missing (explaining a missing keyring first), else None."""
    absent = [lookup for lookup in lookups if lookup.value is None]
    if not absent:
        return None
    problem = await check_keyring(store)
    if problem:
        return no_keyring(report.err, problem)
    for lookup in absent:
        report.err(f"voice-console keys: {lookup.name} is {lookup.note or 'not set.'}\n")
    return EXIT_FAIL


async def _send(name: str, request: httpx.Request, source: str, hint: str, report: _Lines) -> int:
    """Send one read-only request; 2xx = ok, 401/403 = refused, anything else reported as is."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.send(request)
    except httpx.TransportError as exc:
        report.err(
            f"{name} ({source}): not tested, {request.url.scheme}://{request.url.host} unreachable "
            f"({type(exc).__name__}).\n"
        )
        return EXIT_FAIL
    where = f"{request.url.scheme}://{request.url.netloc.decode()}"
    if response.is_success:
        report.out(f"{name} ({source}): ok, accepted by {where}.\n")
        return EXIT_OK
    if response.status_code in (401, 403):
        report.err(f"{name} ({source}): refused by {where} ({response.status_code}).{hint}\n")
        return EXIT_FAIL
    report.err(f"{name} ({source}): the test request failed: {where} answered {response.status_code}.\n")
    return EXIT_FAIL


async def _test(
    check: registry.KeyCheck, spec: registry.ProviderSpec, store: SecretStore, base_url: str, report: _Lines
) -> int:
    lookups = {secret.name: await store.aget(secret.name) for secret in spec.secrets}
    for line in check.notes({name: lookup.source if lookup.value else None for name, lookup in lookups.items()}):
        report.out(line + "\n")
    needed = [lookups[name] for name in check.needs]
    code = await _missing(store, needed, report)
    if code is None:
        values = {lookup.name: lookup.value for lookup in needed if lookup.value is not None}
        if (problem := check.problem(values)) is not None:
            raise KeysUsage(problem)
        source = "/".join(lookup.source for lookup in needed)
        code = await _send(check.proves, check.request(values, base_url), source, check.refused_hint, report)
    return code


async def probe_keys(
    provider: str,
    store: SecretStore,
    base_urls: Mapping[str, str | None] | None = None,
) -> KeyProbe:
    """`keys test PROVIDER`: one read-only request with the provider's keys, sent to
    `base_urls[provider]` (default: the settings' base URL). The CLI prints the result
    and the TUI's keys screen shows it; no line of it contains a key."""
    report = _Lines()
    if provider == "team":
        report.err(
            "voice-console keys: the team's Redis password has no test of its own here: "
            "`voice-console decide --team REDIS_URL --list` connects with it and says if Redis refuses it.\n"
        )
        return KeyProbe(EXIT_USAGE, report.lines)
    try:
        spec = registry.spec(provider)
    except registry.UnknownProvider:
        spec = None
    if spec is None or spec.key_check is None:
        testable = [spec.name for spec in registry.specs() if spec.key_check is not None]
        report.err(f"voice-console keys: unknown provider {provider!r}; choose one of {', '.join(testable)}.\n")
        return KeyProbe(EXIT_USAGE, report.lines)
    base_url = (base_urls or {}).get(provider) or next(
        (os.environ.get(variable) for variable, key in ENV_KEYS.items() if key == (provider, "base_url")), None
    )
    if not base_url and spec.base_url is not None:
        base_url = spec.base_url(Settings())
    try:
        code = await _test(spec.key_check, spec, store, (base_url or "").rstrip("/"), report)
    except KeysUsage as exc:
        report.err(f"voice-console keys: {exc}\n")
        code = EXIT_USAGE
    return KeyProbe(code, report.lines)
