"""API keys and webhook secrets: environment first, then the OS keyring.

There is no plaintext fallback. Keyring calls can block (an unlock prompt, a
slow D-Bus), so the async helpers run them in a thread with a timeout, and a
missing keyring backend is reported as a plain note rather than an exception.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import keyring
import keyring.errors

SERVICE = "voice-console"

# name -> environment variable that overrides the keyring (DESIGN.md contract).
SECRET_ENV = {
    "vapi_api_key": "VOICE_CONSOLE_VAPI_API_KEY",
    "vapi_webhook_secret": "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET",
    "retell_api_key": "VOICE_CONSOLE_RETELL_API_KEY",
    "twilio_account_sid": "VOICE_CONSOLE_TWILIO_ACCOUNT_SID",
    "twilio_auth_token": "VOICE_CONSOLE_TWILIO_AUTH_TOKEN",
}

NO_KEYRING_HELP = (
    "No usable OS keyring was found (common on headless Linux). Set the "
    "VOICE_CONSOLE_* environment variables instead, or install and select a "
    "keyring backend (see `python -m keyring diagnose`)."
)


@dataclass(frozen=True)
class SecretLookup:
    name: str
    value: str | None
    source: Literal["env", "keyring", "none"]
    note: str = ""  # why it is missing, when it is

    def __repr__(self) -> str:  # never show the value, even in a traceback
        return f"SecretLookup(name={self.name!r}, source={self.source!r}, set={self.value is not None})"


class SecretStore:
    def __init__(self, env: Mapping[str, str] | None = None, *, timeout_s: float = 5.0) -> None:
        self._env = os.environ if env is None else env
        self._timeout_s = timeout_s

    def get(self, name: str) -> SecretLookup:
        """Blocking lookup; call from a thread (or use `aget`)."""
        env_name = SECRET_ENV[name]
        if self._env.get(env_name):
            return SecretLookup(name, self._env[env_name], "env")
        try:
            value = keyring.get_password(SERVICE, name)
        except keyring.errors.NoKeyringError:
            return SecretLookup(name, None, "none", NO_KEYRING_HELP)
        except keyring.errors.KeyringError as exc:
            return SecretLookup(name, None, "none", f"the keyring refused the lookup ({type(exc).__name__}).")
        if value:
            return SecretLookup(name, value, "keyring")
        return SecretLookup(name, None, "none", f"not set: use `{env_name}` or the OS keyring.")

    async def aget(self, name: str) -> SecretLookup:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.get, name), self._timeout_s)
        except TimeoutError:
            return SecretLookup(name, None, "none", f"the keyring did not answer within {self._timeout_s:g} s.")

    async def aget_all(self) -> dict[str, SecretLookup]:
        lookups = await asyncio.gather(*(self.aget(name) for name in SECRET_ENV))
        return {lookup.name: lookup for lookup in lookups}
