"""Shared test set-up: every test runs isolated from the developer's machine.

No real config, state, cache, keyring or history is touched: HOME and every XDG
location platformdirs reads point into the test's tmp dir, the VOICE_CONSOLE_*
variables are cleared, and the keyring is an in-memory backend.

A write guard proves it: an audit hook (sys.addaudithook) records the paths each
test writes (write-mode `open`, mkdir, rename/replace, remove, rmdir, links,
chmod/utime, rmtree, `sqlite3.connect`, AF_UNIX bind) and the test fails at
teardown if any lies outside its tmp dir and the allow-list (/dev, /proc, the
pytest temp area, __pycache__, the hypothesis database, the snapshot dirs).
A file or dir the test itself made new and removed or moved away again (an atomic
write through /tmp) left no trace and passes.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import keyring
import keyring.backend
import pytest

ROOT = Path(__file__).resolve().parent.parent


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


# --- every platformdirs location in tmp -------------------------------------------------------

# The user's media dirs (XDG_DOCUMENTS_DIR…) would win over the tmp HOME; they are removed.
_MEDIA_DIR = re.compile(r"XDG_[A-Z]+_DIR")


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    WRITE_GUARD.allow_test_dirs(tmp_path, tmp_path_factory.getbasetemp())
    for name in list(os.environ):
        if name.startswith("VOICE_CONSOLE_") or _MEDIA_DIR.fullmatch(name):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)  # the XDG spec (and platformdirs) want it private
    for name, path in {
        "HOME": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_RUNTIME_DIR": runtime,
        "XDG_CONFIG_DIRS": tmp_path / "etc" / "xdg",
        "XDG_DATA_DIRS": tmp_path / "usr" / "share",
    }.items():
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    previous = keyring.get_keyring()
    memory = MemoryKeyring()
    keyring.set_keyring(memory)
    yield memory
    keyring.set_keyring(previous)


# --- the write guard ------------------------------------------------------------------------------

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
# Audit event -> the positions of (path, dir_fd) pairs it writes; dir_fd None when the event has none.
_WRITES: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.mkdir": ((0, 2),),
    "os.rename": ((0, 2), (1, 3)),  # os.replace too
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.symlink": ((1, 2),),
    "os.link": ((1, 3),),
    "os.truncate": ((0, None),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "shutil.rmtree": ((0, 1),),
}
_WATCHED = frozenset({"open", "sqlite3.connect", "socket.bind", *_WRITES})


def _absolute(path: Any, dir_fd: Any = None) -> str | None:
    if not isinstance(path, (str, bytes, os.PathLike)):
        return None  # a file descriptor: opened (and checked) by path before
    text = os.fsdecode(path)
    if isinstance(dir_fd, int) and dir_fd >= 0 and not os.path.isabs(text):
        text = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), text)
    return os.path.realpath(text)


def _written_paths(event: str, args: tuple[Any, ...]) -> list[str | None]:
    if event == "open":
        path, _mode, flags = args
        if not flags & _WRITE_FLAGS:
            return []
        # Opening a directory "for writing" is O_TMPFILE: an unnamed file that vanishes on close.
        return [] if isinstance(path, int) or os.path.isdir(path) else [_absolute(path)]
    if event == "sqlite3.connect":
        database = os.fsdecode(args[0]) if isinstance(args[0], (str, bytes, os.PathLike)) else ""
        if database in ("", ":memory:") or re.search(r"[?&]mode=(ro|memory)\b", database):
            return []
        return [_absolute(database.removeprefix("file:").split("?", 1)[0])]
    if event == "socket.bind":
        address = args[1]
        named = isinstance(address, (str, bytes)) and address[:1] not in ("\0", b"\0")
        return [_absolute(address)] if named else []
    return [_absolute(args[at], args[fd] if fd is not None else None) for at, fd in _WRITES[event]]


def _under(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


class WriteGuard:
    """Records the paths a test writes, from an audit hook (it cannot be removed, so it idles between tests)."""

    def __init__(self) -> None:
        self.recording = False
        self.writes: list[tuple[str, str]] = []
        self.created: set[str] = set()  # made new by the test (O_EXCL, mkdir): nothing of the user's
        self.allowed: list[str] = []

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.recording or event not in _WATCHED:
            return
        try:
            paths = [path for path in _written_paths(event, args) if path]
            if event == "os.mkdir" or event == "open" and args[2] & os.O_EXCL:
                self.created.update(paths)
        except Exception:
            return
        self.writes.extend((event, path) for path in paths)

    def start(self) -> None:
        self.writes, self.created, self.allowed, self.recording = [], set(), [], True

    def allow_test_dirs(self, tmp_path: Path, basetemp: Path) -> None:
        # pytest's own area: the numbered run dirs it makes, rotates and removes, shared fixtures' dirs.
        area = basetemp.parent if basetemp.parent.name.startswith("pytest-of-") else basetemp
        self.allowed = [os.path.realpath(tmp_path), os.path.realpath(area)]

    def stop(self) -> list[str]:
        """What the test wrote outside the allowed places, one line each."""
        self.recording = False
        roots = [*self.allowed, "/dev", "/proc", str(ROOT / "tests" / "__snapshots__")]  # --snapshot-update
        if os.environ.get("TEXTUAL_SNAPSHOT_TEMPDIR"):  # pytest-textual-snapshot's report data
            roots.append(os.path.realpath(os.environ["TEXTUAL_SNAPSHOT_TEMPDIR"]))
        if hypothesis := sys.modules.get("hypothesis.configuration"):  # its example database
            roots.append(os.path.realpath(hypothesis.storage_directory(intent_to_write=False).home_directory))
        outside = []
        for event, path in self.writes:
            inside = _under(path, roots)
            # A temporary file or dir the test made and moved or removed again (an atomic write) left no trace.
            gone = _under(path, self.created) and not os.path.lexists(path)
            if not (inside or gone) and "__pycache__" not in Path(path).parts and (event, path) not in outside:
                outside.append((event, path))
        self.writes, self.created = [], set()
        return [f"{event}: {path}" for event, path in outside]


WRITE_GUARD = WriteGuard()
sys.addaudithook(WRITE_GUARD.audit)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    WRITE_GUARD.start()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if call.when == "teardown":
        outside = WRITE_GUARD.stop()
        if outside:
            report.outcome = "failed"
            report.longrepr = (
                "the test wrote outside its tmp dir (tests must never touch the user's files):\n  "
                + "\n  ".join(outside)
            )
    return report


@pytest.fixture
def settings(tmp_path: Path):
    """Settings for a console or receiver under test: any free port, a history in tmp."""
    from console.config import ReceiverSettings, Settings, StorageSettings

    return Settings(receiver=ReceiverSettings(port=0), storage=StorageSettings(db=tmp_path / "history.db"))


@pytest.fixture
async def start_receiver(tmp_path: Path):
    """Starts real receivers on free ports (`tests.helpers.receiver.start_service`, the same
    options); each is closed at teardown. Returns (service, the events it emitted)."""
    from tests.helpers.receiver import start_service

    started = []

    async def start(**options: Any):
        service, seen = await start_service(tmp_path, **options)
        started.append(service)
        return service, seen

    yield start
    for service in reversed(started):
        await service.close()


@pytest.fixture
async def tool_server():
    """A real tool server on loopback (`tests.helpers.tool_server.ToolServer`, default options)."""
    from tests.helpers.tool_server import recording_tool_server

    async with recording_tool_server() as tools:
        yield tools
