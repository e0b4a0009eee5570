"""Where a running `serve` leaves its URL and control token, and how `decide` finds it.

`serve` writes a 0600 state file named after its port (`serve-8765.json` in the
state dir), so `voice-console decide` on the same machine needs no flags when
one runs and takes `--port`/`--url` when several do. Kept free of heavy imports:
`decide` starts with this module alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs

from console import APP_NAME


def state_dir() -> Path:
    return platformdirs.user_state_path(APP_NAME)


def state_file(port: int) -> Path:
    """One file per running receiver, keyed by its port: two `serve`s never share one."""
    return state_dir() / f"serve-{port}.json"


@dataclass(frozen=True)
class ServeState:
    url: str
    token: str
    pid: int
    started: str = ""  # ISO 8601, UTC: tells two running `serve`s apart

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 0

    def __repr__(self) -> str:  # keep the token out of tracebacks and logs
        return f"ServeState(url={self.url!r}, pid={self.pid}, started={self.started!r})"


def write_state(state: ServeState, path: Path | None = None) -> Path:
    """Write atomically with mode 0600: the token is a credential."""
    path = path or state_file(state.port)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": state.url, "token": state.token, "pid": state.pid, "started": state.started}, handle)
    os.replace(tmp, path)
    return path


def remove_state(state: ServeState, path: Path | None = None) -> None:
    """Remove the file only if it is still ours: a process never removes another's."""
    path = path or state_file(state.port)
    current = read_state(path)
    if current is not None and current.pid == state.pid and current.token == state.token:
        path.unlink(missing_ok=True)


def read_state(path: Path) -> ServeState | None:
    try:
        data = json.loads(path.read_text())
        state = ServeState(
            url=str(data["url"]), token=str(data["token"]), pid=int(data["pid"]), started=str(data.get("started") or "")
        )
        state.port  # noqa: B018  (a URL with an impossible port raises here, not later)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return state


def pid_alive(pid: int) -> bool:
    if pid <= 0:  # kill(0 or -n) would signal a whole process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    except (OverflowError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class RunningServes:
    live: list[ServeState]
    stale: list[ServeState]  # files left by a `serve` that is gone (killed, crashed)


def running_serves() -> RunningServes:
    """Every `serve` on this machine according to its state file, live ones by port."""
    live: list[ServeState] = []
    stale: list[ServeState] = []
    for path in sorted(state_dir().glob("serve-*.json")):
        state = read_state(path)
        if state is not None:
            (live if pid_alive(state.pid) else stale).append(state)
    return RunningServes(sorted(live, key=lambda s: s.port), stale)
