"""The suite never touches the user's files: every platformdirs location is in the test's tmp dir,
and the write guard in conftest fails a test that writes anywhere else.

The guard's own tests run a small test file in a real `pytest` subprocess with the suite's
conftest loaded as a plugin, in an environment that looks like a desktop's (XDG_STATE_HOME,
XDG_CACHE_HOME… set to real-looking paths), and read its report.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import platformdirs

from console.config import APP_NAME, config_dir, data_dir, default_config_path, default_db_path, themes_dir

ROOT = Path(__file__).resolve().parent.parent


def _user_paths() -> dict[str, Path]:
    dirs = platformdirs.PlatformDirs(APP_NAME)
    paths = {name: getattr(dirs, name) for name in dir(dirs) if name.startswith("user_") and name.endswith("_path")}
    paths.update(site_data_path=dirs.site_data_path, site_config_path=dirs.site_config_path)
    return paths


def test_every_platformdirs_user_location_is_inside_tmp(tmp_path: Path) -> None:
    paths = _user_paths()
    assert len(paths) >= 18  # data, config, cache, state, log, runtime, documents… all of them
    app = {
        "config_dir": config_dir(),
        "data_dir": data_dir(),
        "config": default_config_path(),
        "db": default_db_path(),
        "themes": themes_dir(),
    }
    outside = {name: path for name, path in {**paths, **app}.items() if not Path(path).is_relative_to(tmp_path)}
    assert not outside


def _desktop_environment(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment of a desktop session whose real dirs live under `desktop`."""
    desktop = tmp_path / "desktop-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "PYTEST_"))}
    env.update(
        {
            "HOME": str(desktop),
            "XDG_CONFIG_HOME": str(desktop / ".config"),
            "XDG_DATA_HOME": str(desktop / ".local" / "share"),
            "XDG_STATE_HOME": str(desktop / ".local" / "state"),
            "XDG_CACHE_HOME": str(desktop / ".cache"),
            "XDG_RUNTIME_DIR": str(desktop / "run"),
            "XDG_DOCUMENTS_DIR": str(desktop / "Documents"),
            "XDG_DATA_DIRS": str(desktop / "usr-share"),
            "XDG_CONFIG_DIRS": str(desktop / "etc-xdg"),
        }
    )
    return env, desktop


def _run_pytest(tmp_path: Path, test_source: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`pytest` in a subprocess on one test file, with this suite's conftest (isolation and guard)."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_inner.py").write_text(test_source)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rE",
            "--tb=short",
            "--basetemp",
            str(tmp_path / "inner-basetemp"),
            str(inner / "test_inner.py"),
        ],
        cwd=ROOT,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


INSIDE_TMP = """
from pathlib import Path

import platformdirs

def test_user_dirs(tmp_path):
    dirs = platformdirs.PlatformDirs("voice-console")
    names = [name for name in dir(dirs) if name.startswith("user_") and name.endswith("_path")]
    outside = [f"{name}={getattr(dirs, name)}" for name in names if not getattr(dirs, name).is_relative_to(tmp_path)]
    assert not outside, outside
"""


def test_a_desktop_environment_does_not_leak_into_tests(tmp_path: Path) -> None:
    env, desktop = _desktop_environment(tmp_path)
    result = _run_pytest(tmp_path, INSIDE_TMP, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert not desktop.exists()  # nothing was made in the "real" dirs either


GUARDED = """
import os
import socket
import sqlite3
import tempfile
import threading
from pathlib import Path

OUTSIDE = Path(os.environ["GUARD_OUTSIDE"])

def test_clean(tmp_path):
    (tmp_path / "a.txt").write_text("inside")
    (tmp_path / "sub").mkdir()
    os.replace(tmp_path / "a.txt", tmp_path / "sub" / "b.txt")
    sqlite3.connect(tmp_path / "history.db").close()
    sqlite3.connect(":memory:").close()
    with tempfile.TemporaryFile() as handle:  # unnamed: nothing is left anywhere
        handle.write(b"x")
    assert (OUTSIDE / "existing.txt").read_text() == "keep"  # reading is fine

def test_clean_atomic_write(tmp_path):
    handle, temporary = tempfile.mkstemp()  # made new in /tmp, then moved into tmp_path
    os.write(handle, b"x")
    os.close(handle)
    os.replace(temporary, tmp_path / "atomic.txt")
    with tempfile.TemporaryDirectory() as scratch:  # made and removed
        Path(scratch, "f").write_text("x")

def test_leaves_a_temp_file():
    os.close(tempfile.mkstemp(prefix="left-behind-", dir=OUTSIDE)[0])

def test_writes_a_file():
    (OUTSIDE / "written.txt").write_text("x")

def test_appends():
    with open(OUTSIDE / "existing.txt", "a") as handle:
        handle.write("")

def test_makes_a_dir():
    (OUTSIDE / "made").mkdir()

def test_replaces(tmp_path):
    (tmp_path / "t").write_text("x")
    os.replace(tmp_path / "t", OUTSIDE / "replaced.txt")

def test_removes():
    (OUTSIDE / "doomed.txt").unlink()

def test_opens_a_database():
    sqlite3.connect(str(OUTSIDE / "history.db")).close()

def test_writes_from_a_thread():
    thread = threading.Thread(target=(OUTSIDE / "threaded.txt").write_text, args=("x",))
    thread.start()
    thread.join()

def test_binds_a_unix_socket():
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(OUTSIDE / "sock"))

def test_writes_via_a_relative_path(monkeypatch):
    monkeypatch.chdir(OUTSIDE)
    Path("relative.txt").write_text("x")
"""
CAUGHT = {
    "test_writes_a_file": "written.txt",
    "test_appends": "existing.txt",
    "test_makes_a_dir": "made",
    "test_replaces": "replaced.txt",
    "test_removes": "doomed.txt",
    "test_opens_a_database": "history.db",
    "test_writes_from_a_thread": "threaded.txt",
    "test_binds_a_unix_socket": "sock",
    "test_writes_via_a_relative_path": "relative.txt",
    "test_leaves_a_temp_file": "left-behind-",
}


def test_the_guard_fails_each_test_that_writes_outside_its_tmp_dir(tmp_path: Path) -> None:
    env, _ = _desktop_environment(tmp_path)
    outside = tmp_path / "users-files"
    outside.mkdir()
    (outside / "existing.txt").write_text("keep")
    (outside / "doomed.txt").write_text("x")
    result = _run_pytest(tmp_path, GUARDED, {**env, "GUARD_OUTSIDE": str(outside)})
    report = result.stdout
    assert result.returncode == 1, report + result.stderr
    errors = {line.split("::")[1].split()[0] for line in report.splitlines() if line.startswith("ERROR ")}
    assert errors == set(CAUGHT), report
    assert f"{len(CAUGHT)} errors" in report and f"{len(CAUGHT) + 2} passed" in report
    for name in CAUGHT.values():
        assert f"{outside / name}" in report, name
    assert "the test wrote outside its tmp dir" in report
