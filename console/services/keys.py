"""API keys as both `voice-console keys` and the TUI's keys screen see them: which keys
each provider has, where each comes from, and `probe_keys`, which tests them against
the provider's API and returns the result (no line of it ever contains a key).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import httpx

from console.providers.vapi.client import (
    DEFAULT_BASE_URL,
    VapiAuthError,
    VapiClient,
    VapiConnectionError,
    VapiError,
)
from console.secrets import (
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


class KeysUsage(Exception):
    """Bad usage: message printed, exit 2."""


def no_keyring(write: Callable[[str], object], problem: str, *, wrote: bool = True) -> int:
    """Why no key can be kept, and the environment variables that work instead, told through `write`."""
    write(f"voice-console keys: {problem}\n")
    env_list = ", ".join(
        sorted({f"VOICE_CONSOLE_{name.upper()}" for names in PROVIDER_KEYS.values() for name in names})
    )
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


async def _test_vapi(store: SecretStore, base_url: str, report: _Lines) -> int:
    lookup = await store.aget("vapi_api_key")
    secret = await store.aget("vapi_webhook_secret")
    if secret.value is None:
        report.out("vapi_webhook_secret: not set (needed to verify webhooks in the default 'secret' mode).\n")
    else:
        report.out(
            f"vapi_webhook_secret: set ({secret.source}); Vapi sends it to the console, so it is checked "
            "when a webhook arrives, not here.\n"
        )
    if (code := await _missing(store, [lookup], report)) is not None:
        return code
    assert lookup.value is not None
    async with VapiClient(lookup.value, base_url=base_url, max_retries=1, timeout_s=10) as client:
        try:
            await client.list_assistants(limit=1)
        except VapiAuthError:
            report.err(
                f"vapi_api_key ({lookup.source}): refused by {base_url} (401). Check that it is the private key.\n"
            )
            return EXIT_FAIL
        except VapiConnectionError as exc:
            report.err(f"vapi_api_key ({lookup.source}): not tested, {exc}.\n")
            return EXIT_FAIL
        except VapiError as exc:
            report.err(f"vapi_api_key ({lookup.source}): the test request failed: {exc}\n")
            return EXIT_FAIL
    report.out(f"vapi_api_key ({lookup.source}): ok, accepted by {base_url}.\n")
    return EXIT_OK


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


async def _probe(name: str, request: httpx.Request, source: str, report: _Lines) -> int:
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
        report.err(f"{name} ({source}): refused by {where} ({response.status_code}).\n")
        return EXIT_FAIL
    report.err(f"{name} ({source}): the test request failed: {where} answered {response.status_code}.\n")
    return EXIT_FAIL


async def _test_retell(store: SecretStore, base_url: str, report: _Lines) -> int:
    lookup = await store.aget("retell_api_key")
    if (code := await _missing(store, [lookup], report)) is not None:
        return code
    assert lookup.value is not None
    # `POST /v2/list-agents` (2026 API): the cheapest authenticated read.
    request = httpx.Request(
        "POST", f"{base_url}/v2/list-agents", json={"limit": 1}, headers={"Authorization": f"Bearer {lookup.value}"}
    )
    return await _probe("retell_api_key", request, lookup.source, report)


async def _test_twilio(store: SecretStore, base_url: str, report: _Lines) -> int:
    sid, token = await store.aget("twilio_account_sid"), await store.aget("twilio_auth_token")
    if (code := await _missing(store, [sid, token], report)) is not None:
        return code
    assert sid.value is not None and token.value is not None
    if not sid.value.startswith("AC") or "/" in sid.value:
        raise KeysUsage("twilio_account_sid should look like AC followed by 32 hex digits.")
    # Fetching the account itself needs both halves and changes nothing.
    request = httpx.Request(
        "GET",
        f"{base_url}/2010-04-01/Accounts/{sid.value}.json",
        headers={"Authorization": "Basic " + base64.b64encode(f"{sid.value}:{token.value}".encode()).decode()},
    )
    return await _probe("twilio_auth_token", request, f"{sid.source}/{token.source}", report)


async def probe_keys(
    provider: str,
    store: SecretStore,
    *,
    vapi_base_url: str | None = None,
    retell_base_url: str | None = None,
    twilio_base_url: str | None = None,
) -> KeyProbe:
    """`keys test PROVIDER`: one read-only request with the provider's keys. The CLI prints
    the result and the TUI's keys screen shows it; no line of it contains a key."""
    report = _Lines()
    try:
        if provider == "vapi":
            base_url = vapi_base_url or os.environ.get("VOICE_CONSOLE_VAPI_BASE_URL") or DEFAULT_BASE_URL
            code = await _test_vapi(store, base_url.rstrip("/"), report)
        elif provider == "retell":
            code = await _test_retell(store, (retell_base_url or RETELL_BASE_URL).rstrip("/"), report)
        elif provider == "twilio":
            code = await _test_twilio(store, (twilio_base_url or TWILIO_BASE_URL).rstrip("/"), report)
        else:
            report.err(
                f"voice-console keys: unknown provider {provider!r}; "
                f"choose one of {', '.join(sorted(PROVIDER_KEYS))}.\n"
            )
            code = EXIT_USAGE
    except KeysUsage as exc:
        report.err(f"voice-console keys: {exc}\n")
        code = EXIT_USAGE
    return KeyProbe(code, report.lines)
