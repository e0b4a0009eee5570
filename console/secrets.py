"""API keys and webhook secrets: environment first, then the OS keyring.

There is no plaintext fallback. Keyring calls can block (an unlock prompt, a
slow D-Bus), so the async helpers run them in a thread with a timeout, and a
missing keyring backend is reported as a plain note rather than an exception.
"""

from __future__ import annotations

import asyncio
import os
import secrets as token_source
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import keyring
import keyring.backends.fail
import keyring.backends.null
import keyring.errors

from console.providers import registry

SERVICE = "voice-console"

_T = TypeVar("_T")


def secret_env() -> dict[str, str]:
    """Every secret's name -> the environment variable that overrides the keyring (DESIGN.md
    contract), from the providers' specs: a provider added to the registry adds its secrets."""
    return {name: secret.env for name, secret in registry.secret_names().items()}


def env_name(name: str) -> str:
    """`VOICE_CONSOLE_<NAME>`; a KeyError for names no provider declares (a programming error)."""
    return registry.secret_names()[name].env


NO_KEYRING_HELP = (
    "No usable OS keyring was found (common on headless Linux). Set the "
    "VOICE_CONSOLE_* environment variables instead, or install and select a "
    "keyring backend (see `python -m keyring diagnose`)."
)


NULL_KEYRING_HELP = (
    "The selected keyring backend (keyring.backends.null.Keyring, e.g. from "
    "PYTHON_KEYRING_BACKEND) stores nothing. Set the VOICE_CONSOLE_* environment "
    "variables instead, or select a real keyring backend."
)


def in_daemon_thread(func: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
    """Run a blocking call in a daemon thread.

    Unlike `asyncio.to_thread`, a call stuck on an unlock prompt neither blocks
    `asyncio.run()` from returning nor the process from exiting after a timeout.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()

    def settle(result: _T) -> None:
        if not future.done():
            future.set_result(result)

    def fail(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def work() -> None:
        try:
            try:
                result = func(*args)
            except BaseException as exc:
                loop.call_soon_threadsafe(fail, exc)
            else:
                loop.call_soon_threadsafe(settle, result)
        except RuntimeError:
            pass  # the loop is gone: nobody is waiting any more

    threading.Thread(target=work, name="keyring-call", daemon=True).start()
    return future


class SecretStoreError(Exception):
    """A keyring write or delete failed; the message is one readable sentence."""


class KeyringUnavailable(SecretStoreError):
    """There is no keyring that can store anything (headless Linux, null backend)."""


def keyring_problem() -> str | None:
    """Why the current keyring cannot store secrets, or None when it can (as far as we can tell)."""
    backend = keyring.get_keyring()
    if isinstance(backend, keyring.backends.fail.Keyring):
        return NO_KEYRING_HELP
    if isinstance(backend, keyring.backends.null.Keyring):
        return NULL_KEYRING_HELP
    return None


@dataclass(frozen=True)
class SecretLookup:
    name: str
    value: str | None
    source: Literal["env", "keyring", "none", "session"]  # session: made for this run, not kept
    note: str = ""  # why it is missing, when it is

    def __repr__(self) -> str:  # never show the value, even in a traceback
        return f"SecretLookup(name={self.name!r}, source={self.source!r}, set={self.value is not None})"


class SecretStore:
    def __init__(self, env: Mapping[str, str] | None = None, *, timeout_s: float = 5.0) -> None:
        self._env = os.environ if env is None else env
        self._timeout_s = timeout_s

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    def get(self, name: str) -> SecretLookup:
        """Blocking lookup; call from a thread (or use `aget`)."""
        variable = env_name(name)
        if self._env.get(variable):
            return SecretLookup(name, self._env[variable], "env")
        return self.get_from_keyring(name)

    def env_name(self, name: str) -> str:
        return env_name(name)

    def env_has(self, name: str) -> bool:
        return bool(self._env.get(env_name(name)))

    def get_from_keyring(self, name: str) -> SecretLookup:
        """Blocking keyring-only lookup (ignores the environment override)."""
        variable = env_name(name)
        try:
            value = keyring.get_password(SERVICE, name)
        except keyring.errors.NoKeyringError:
            return SecretLookup(name, None, "none", NO_KEYRING_HELP)
        except keyring.errors.KeyringError as exc:
            return SecretLookup(name, None, "none", f"the keyring refused the lookup ({type(exc).__name__}).")
        if value:
            return SecretLookup(name, value, "keyring")
        return SecretLookup(name, None, "none", f"not set: use `{variable}` or the OS keyring.")

    async def aget(self, name: str) -> SecretLookup:
        try:
            return await asyncio.wait_for(in_daemon_thread(self.get, name), self._timeout_s)
        except TimeoutError:
            return SecretLookup(name, None, "none", f"the keyring did not answer within {self._timeout_s:g} s.")

    async def aget_all(self, *, make_missing: bool = False) -> dict[str, SecretLookup]:
        """Every secret; with `make_missing`, the ones the console makes itself (a tap's token)
        are made when not set and kept in the keyring (for this run only when it cannot keep them)."""
        lookups = await asyncio.gather(*(self.aget(name) for name in registry.secret_names()))
        found = {lookup.name: lookup for lookup in lookups}
        if make_missing:
            for name in registry.made_secret_names():
                if found[name].value:
                    continue
                value = token_source.token_urlsafe(24)
                try:
                    await self.aset(name, value)
                except SecretStoreError as exc:
                    found[name] = SecretLookup(name, value, "session", f"made for this run only: {exc}")
                else:
                    found[name] = SecretLookup(name, value, "keyring")
        return found

    def set(self, name: str, value: str) -> None:
        """Blocking keyring write; raises SecretStoreError (never writes anywhere else)."""
        env_name(name)  # unknown names are a programming error
        if not value:
            raise SecretStoreError("refusing to store an empty value.")
        problem = keyring_problem()
        if problem:
            raise KeyringUnavailable(problem)
        try:
            keyring.set_password(SERVICE, name, value)
        except keyring.errors.NoKeyringError:
            raise KeyringUnavailable(NO_KEYRING_HELP) from None
        except keyring.errors.KeyringLocked:
            raise SecretStoreError("the keyring is locked (unlock it and try again).") from None
        except keyring.errors.KeyringError as exc:
            raise SecretStoreError(f"the keyring refused to store {name} ({type(exc).__name__}).") from None

    def delete(self, name: str) -> bool:
        """Blocking keyring delete; False when there was nothing stored."""
        env_name(name)
        problem = keyring_problem()
        if problem:
            raise KeyringUnavailable(problem)
        try:
            if keyring.get_password(SERVICE, name) is None:
                return False
            keyring.delete_password(SERVICE, name)
        except keyring.errors.NoKeyringError:
            raise KeyringUnavailable(NO_KEYRING_HELP) from None
        except keyring.errors.PasswordDeleteError:
            return False
        except keyring.errors.KeyringLocked:
            raise SecretStoreError("the keyring is locked (unlock it and try again).") from None
        except keyring.errors.KeyringError as exc:
            raise SecretStoreError(f"the keyring refused to delete {name} ({type(exc).__name__}).") from None
        return True

    async def run_off_loop(self, func: Callable[..., _T], *args: Any) -> _T:
        try:
            return await asyncio.wait_for(in_daemon_thread(func, *args), self._timeout_s)
        except TimeoutError:
            raise SecretStoreError(
                f"the keyring did not answer within {self._timeout_s:g} s (is an unlock prompt waiting?)."
            ) from None

    async def aset(self, name: str, value: str) -> None:
        await self.run_off_loop(self.set, name, value)

    async def adelete(self, name: str) -> bool:
        return await self.run_off_loop(self.delete, name)

    async def aget_from_keyring(self, name: str) -> SecretLookup:
        try:
            return await self.run_off_loop(self.get_from_keyring, name)
        except SecretStoreError as exc:
            return SecretLookup(name, None, "none", str(exc))
