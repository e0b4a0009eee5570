"""Shared test set-up: every test runs isolated from the developer's machine.

No real config, keyring or history is touched: XDG dirs point into tmp, the
VOICE_CONSOLE_* variables are cleared, and the keyring is an in-memory backend.
"""

from __future__ import annotations

import os
from pathlib import Path

import keyring
import keyring.backend
import pytest

PAYLOADS = Path(__file__).parent / "payloads"


class MemoryKeyring(keyring.backend.KeyringBackend):
    """In-memory keyring for tests only.

    Its priority raises, so keyring's auto-detection never picks it for the
    whole process (see stack-notes §4); `set_keyring` still uses it.
    """

    @keyring.backend.properties.classproperty
    def priority(cls) -> float:  # type: ignore[override]
        raise RuntimeError("test-only backend")

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.store.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.store[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.store.pop((service, username), None)


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in list(os.environ):
        if name.startswith("VOICE_CONSOLE_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    previous = keyring.get_keyring()
    memory = MemoryKeyring()
    keyring.set_keyring(memory)
    yield memory
    keyring.set_keyring(previous)
