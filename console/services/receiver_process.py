"""The receiver a console attaches to: the `serve` already running on this machine, or one this
console starts as a process of its own (so that closing the console does not stop reception).

Kept free of the receiver's modules: `voice-console` decides where to attach before anything
heavy is imported.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from console.services.serve_state import ServeState, pid_alive, read_state, running_serves, state_dir, state_file

# How much an attached console lowers its own CPU priority: on a machine whose cores are busy the
# scheduler then runs the receiver (and its writer) first, so rendering never delays a platform's
# answer. bench/tui_load.py at ~1,000 events/s on 2 cores: the receiver's ack p99 within 1-2 ms of
# `serve` alone with the console at 10, 2-3 ms above it at 0; the console's own p99s rise by
# 10-25 ms when the cores are contended (the trade: the platform first).
ATTACHED_CONSOLE_NICENESS = 10
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 15.0
LOG_NAME = "receiver.log"


class NoReceiver(Exception):
    """No receiver to attach to, and none could be started; the message says why. `code`: the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Receiver:
    state: ServeState
    started_here: bool  # this console started it (and may stop it on the way out)

    def __repr__(self) -> str:
        return f"Receiver({self.state!r}, started_here={self.started_here})"


def default_operator() -> str:
    """Who decides from this console, as the others see it: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "operator"
    return f"{user}@{socket.gethostname().split('.')[0]}"


def find_serve(port: int) -> ServeState | None:
    """The `serve` to attach to: the one on `port`, else the only one running; NoReceiver (exit 2)
    when several run and none is on `port`."""
    live = running_serves().live
    on_port = [state for state in live if state.port == port]
    if on_port:
        return on_port[0]
    if len(live) == 1:
        return live[0]
    if live:
        listing = "\n".join(f"  {state.url}  pid {state.pid}" for state in live)
        raise NoReceiver(
            f"{len(live)} `voice-console serve`s are running on this machine and none on port {port}:\n"
            f"{listing}\nSay which with --port P (or run one alone with --no-attach).",
            2,
        )
    return None


def yield_cpu_to_the_receiver(increment: int = ATTACHED_CONSOLE_NICENESS) -> None:
    """Lower this thread's priority (Linux: threads started from it afterwards inherit it; the
    processes it starts too, so a receiver must be started before). Where that is not possible
    the console runs as it is."""
    try:
        os.nice(increment)
    except (AttributeError, OSError):  # no nice() on this platform, or not allowed
        pass


def log_path() -> Path:
    return state_dir() / LOG_NAME


def start_serve(serve_args: list[str], port: int, *, timeout_s: float = START_TIMEOUT_S) -> ServeState:
    """`voice-console serve` as a process of its own (its own session: the terminal's ^C and hang-up
    do not reach it), its notes appended to the receiver log; its state once it listens."""
    log = log_path()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} started by voice-console\n".encode())
        out.flush()
        child = subprocess.Popen(
            [sys.executable, "-m", "console", "serve", *serve_args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # its NDJSON: the console gets the same events from the stream
            stderr=out,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise NoReceiver(f"the receiver did not start: {_last_line(log)} (the whole log: {log})")
        state = read_state(state_file(port)) if port else None
        found = (
            state
            if state is not None and state.pid == child.pid
            else next((s for s in running_serves().live if s.pid == child.pid), None)
        )
        if found is not None:
            return found
        time.sleep(0.05)
    child.terminate()
    raise NoReceiver(f"the receiver did not start within {timeout_s:g} s (its log: {log})")


def stop_serve(state: ServeState, *, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Ask a running `serve` to stop (SIGTERM: it answers what is in flight and commits first);
    whether it stopped in time."""
    try:
        os.kill(state.pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _running(state.pid):
            return True
        time.sleep(0.05)
    return False


def _running(pid: int) -> bool:
    """Alive and not a zombie (a child of this process that exited is one until it is reaped)."""
    if not pid_alive(pid):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: alive as far as can be told
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1].removeprefix("voice-console serve: ") if lines else "(nothing in its log)"
