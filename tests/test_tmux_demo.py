"""End to end in a real terminal: `voice-console --demo` in tmux at 160x48 and at 80x24
(the compact layout), wait for a barge-in and held tool calls on screen, approve them
with `a`, quit, and find the operator's decisions in the history."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


@pytest.mark.parametrize("size", [(160, 48), (80, 24)], ids=["160x48", "80x24"])
def test_demo_in_tmux_approve_and_find_it_in_history(tmp_path: Path, size: tuple[int, int]):
    socket = f"vc-test-{uuid.uuid4().hex[:8]}"
    db = tmp_path / "history.db"
    exit_file = tmp_path / "exit"
    env = {
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "VOICE_CONSOLE_DB": str(db),
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
        "TERM": "xterm-256color",
    }
    command = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    # Without COLUMNS/LINES (pytest's own, 80x24, reach the pane): the app measures the pane.
    command = (
        f"env -u COLUMNS -u LINES {command} {shlex.quote(sys.executable)} -m console --demo --port 0; "
        f"echo $? > {shlex.quote(str(exit_file))}"
    )

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=10).stdout

    def wait_for(text: str, timeout: float = 40) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = tmux("capture-pane", "-p", "-t", "demo")
            if text in screen:
                return screen
            time.sleep(0.3)
        size = tmux("display", "-p", "-t", "demo", "#{window_width}x#{window_height}").strip()
        raise AssertionError(f"{text!r} never appeared ({size}):\n{tmux('capture-pane', '-p', '-t', 'demo')}")

    def decisions() -> list[tuple[str, str]]:
        """The decided tool calls of the first call in the history (readable while the app runs)."""
        run_env = {**env, "PATH": "/usr/bin:/bin"}
        calls = subprocess.run(
            [sys.executable, "-m", "console", "history", "calls", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            env=run_env,
        )
        listed = json.loads(calls.stdout or "[]")
        if not listed:
            return []
        shown = subprocess.run(
            [sys.executable, "-m", "console", "history", "show", listed[-1]["call_id"], "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            env=run_env,
        )
        return [(t["decision"], t["by"]) for t in json.loads(shown.stdout)["tool_calls"] if t["decision"]]

    tmux("new-session", "-d", "-s", "demo", "-x", str(size[0]), "-y", str(size[1]), command)
    try:
        screen = wait_for("barge-in")
        assert screen.splitlines()[1].rstrip().endswith("╮") and len(screen.splitlines()[1].rstrip()) == size[0]
        wait_for(" waiting ─")  # Function calls' subtitle: "2 waiting"
        tmux("send-keys", "-t", "demo", "a")
        wait_for("✓ approved")
        # The demo asks for two tools at once; the platform is answered (and the batch
        # recorded) once both are decided, so approve whatever still waits.
        deadline = time.monotonic() + 40
        while ("approved", "operator") not in decisions():
            assert time.monotonic() < deadline, tmux("capture-pane", "-p", "-t", "demo")
            if " waiting ─" in tmux("capture-pane", "-p", "-t", "demo"):
                tmux("send-keys", "-t", "demo", "a")
            time.sleep(0.5)
        tmux("send-keys", "-t", "demo", "C-q")
        deadline = time.monotonic() + 20
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert exit_file.read_text().strip() == "0"
    finally:
        tmux("kill-server")

    # After a clean exit the decision is still the operator's, not "interrupted".
    assert ("approved", "operator") in decisions()
