"""End to end in a real terminal, attached: `voice-console` in tmux with no receiver running starts
`serve` as a process of its own and attaches to it; a held tool call is approved with `a` while the
platform's request waits; quitting with a live call asks, `k` leaves the receiver receiving; a second
console attaches to the same receiver and shows what was decided; `s` stops the receiver on the way out."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket as sockets
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from console.services.receiver_process import ATTACHED_CONSOLE_NICENESS
from tests.helpers.secrets import PAYLOADS, VAPI_SECRET

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

PARALLEL = json.loads((PAYLOADS / "vapi" / "tool-calls.parallel.json").read_text())


def free_port() -> int:
    with sockets.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def console_env(tmp_path: Path, db: Path) -> dict[str, str]:
    """A console's environment in tmux: every user dir under tmp_path, no keyring, the test's secret."""
    return {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "VOICE_CONSOLE_DB": str(db),
        "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": VAPI_SECRET,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "TERM": "xterm-256color",
    }


def command_prefix(env: dict[str, str]) -> str:
    """What a tmux command line starts with: the environment, without the test's terminal size."""
    return "env -u COLUMNS -u LINES " + " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())


def test_the_console_starts_a_receiver_attaches_and_leaves_it_receiving(tmp_path: Path):
    from console.config import VapiSettings
    from console.providers.vapi import sign_vapi_request

    socket = f"vc-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    db = tmp_path / "history.db"
    env = console_env(tmp_path, db)
    run_env = {**env, "PATH": "/usr/bin:/bin"}
    prefix = command_prefix(env)

    def console(name: str, *flags: str) -> None:
        exit_file = tmp_path / f"exit-{name}"
        command = (
            f"{prefix} {shlex.quote(sys.executable)} -m console --port {port} --operator {name} {' '.join(flags)}; "
            f"echo $? > {shlex.quote(str(exit_file))}"
        )
        tmux("new-session", "-d", "-s", name, "-x", "160", "-y", "48", command)

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10).stdout

    def screen(name: str) -> str:
        return tmux("capture-pane", "-p", "-t", name)

    def wait_for(name: str, text: str, timeout: float = 40) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = screen(name)
            if text in shown:
                return shown
            time.sleep(0.3)
        raise AssertionError(f"{text!r} never appeared on {name}'s console:\n{screen(name)}")

    def exited(name: str, timeout: float = 20) -> str:
        exit_file = tmp_path / f"exit-{name}"
        deadline = time.monotonic() + timeout
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        return exit_file.read_text().strip()

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "console", *args], capture_output=True, text=True, timeout=30, env=run_env
        )

    answered: list[httpx.Response] = []

    def platform() -> None:
        body = json.dumps(PARALLEL).encode()
        headers = {"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)}
        answered.append(httpx.post(f"http://127.0.0.1:{port}/webhook/vapi", content=body, headers=headers, timeout=60))

    console("alice")
    try:
        attached = wait_for("alice", f"attached to http://127.0.0.1:{port}")
        # the console yields the CPU to the receiver it started (which kept its own priority)
        serve_pid = int(attached.split(f"attached to http://127.0.0.1:{port} (pid ", 1)[1].split(")", 1)[0])
        console_pid = _console_pid(tmux("display-message", "-p", "-t", "alice", "#{pane_pid}"))
        assert _niceness(console_pid) == min(19, _niceness(serve_pid) + ATTACHED_CONSOLE_NICENESS)
        waiting = threading.Thread(target=platform)
        waiting.start()
        wait_for("alice", " waiting ─")
        deadline = time.monotonic() + 40
        while waiting.is_alive():  # both calls of the batch: the platform is answered once both are decided
            assert time.monotonic() < deadline, screen("alice")
            if " waiting ─" in screen("alice"):
                tmux("send-keys", "-t", "alice", "a")
            time.sleep(0.5)
        assert answered and answered[0].status_code == 200
        wait_for("alice", "alice ")  # the decisions' "by" column names the operator
        tmux("send-keys", "-t", "alice", "C-q")  # the call is still live: the console asks
        wait_for("alice", "Quit, keep receiving (k)")
        tmux("send-keys", "-t", "alice", "k")
        assert exited("alice") == "0"
        listed = json.loads(cli("history", "calls", "--json").stdout)
        assert listed, "the receiver recorded the call"
        # the receiver still runs: a second console attaches to it and shows what alice decided
        console("bob")
        shown = wait_for("bob", "already running")
        assert "✓ approved" in wait_for("bob", "✓ approved") and "alice" in shown + screen("bob")
        tmux("send-keys", "-t", "bob", "C-q")
        wait_for("bob", "Quit and stop it (s)")
        tmux("send-keys", "-t", "bob", "s")
        assert exited("bob") == "0"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (refused := _refused(port)):
            time.sleep(0.2)
        assert refused, "the receiver stopped with the console that asked"
    finally:
        tmux("kill-server")
        cli("serve", "--stop", "--port", str(port))
    detail = json.loads(cli("history", "show", listed[-1]["call_id"], "--json").stdout)
    assert {(t["decision"], t["by"]) for t in detail["tool_calls"]} == {("approved", "operator")}
    operators = {e.get("operator") for e in detail["events"] if e["kind"] == "tool.decided"}
    assert operators == {"alice"}


def _niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _console_pid(pane_pid: str) -> int:
    """The console's process: the pane's shell's child (the pane runs `env … python …; echo $?`)."""
    children = Path(f"/proc/{pane_pid.strip()}/task/{pane_pid.strip()}/children").read_text().split()
    return int(children[0])


def _refused(port: int) -> bool:
    try:
        with sockets.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except OSError:
        return True


def test_kill_9_of_the_console_leaves_the_receiver_answering(tmp_path: Path):
    """The console dies (kill -9) while a tool call is held: the receiver it attached to goes on, the
    platform's request is answered by the policy's timeout (not dropped), and later webhooks are received."""
    import signal

    from console.config import VapiSettings
    from console.providers.vapi import sign_vapi_request

    socket = f"vc-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    policy = tmp_path / "config" / "voice-console" / "policy.toml"
    policy.parent.mkdir(parents=True)
    policy.write_text('[tools.default]\naction = "hold"\ntimeout_seconds = 4\non_timeout = "reject"\n')
    env = console_env(tmp_path, tmp_path / "history.db")
    prefix = command_prefix(env)
    command = f"{prefix} {shlex.quote(sys.executable)} -m console --port {port}"

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10).stdout

    def post(body: bytes) -> httpx.Response:
        headers = {"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)}
        return httpx.post(f"http://127.0.0.1:{port}/webhook/vapi", content=body, headers=headers, timeout=30)

    tmux("new-session", "-d", "-s", "console", "-x", "160", "-y", "48", command)
    try:
        deadline = time.monotonic() + 40
        while f"attached to http://127.0.0.1:{port}" not in tmux("capture-pane", "-p", "-t", "console"):
            assert time.monotonic() < deadline, tmux("capture-pane", "-p", "-t", "console")
            time.sleep(0.3)
        answered: list[httpx.Response] = []
        held = threading.Thread(target=lambda: answered.append(post(json.dumps(PARALLEL).encode())))
        held.start()
        while " waiting ─" not in tmux("capture-pane", "-p", "-t", "console"):
            assert time.monotonic() < deadline, tmux("capture-pane", "-p", "-t", "console")
            time.sleep(0.2)
        pid = int(tmux("display-message", "-p", "-t", "console", "#{pane_pid}").strip())
        os.kill(pid, signal.SIGKILL)  # the console, mid-decision
        held.join(30)
        assert answered and answered[0].status_code == 200  # answered by the receiver, by its policy
        results = answered[0].json()["results"]
        assert all("did not answer in time" in (r.get("error") or r.get("result") or "") for r in results), results
        later = json.dumps({"message": {"type": "status-update", "status": "ended", "call": {"id": "after-kill"}}})
        assert post(later.encode()).status_code == 200  # still receiving
    finally:
        tmux("kill-server")
        subprocess.run(
            [sys.executable, "-m", "console", "serve", "--stop", "--port", str(port)],
            env={**env, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            timeout=30,
        )
