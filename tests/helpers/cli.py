"""Running the real `voice-console` command in subprocesses: isolated env, `serve`, `history`, `decide`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.secrets import RETELL_KEY, VAPI_SECRET

REJECT_POLICY = '[tools.default]\naction = "reject"\nreason = "Tool calls are refused in this test."\n'
# Held for minutes (as far as the platform's deadline allows): a loaded machine starts each `decide` slowly.
HOLD_POLICY = '[tools.default]\naction = "hold"\ntimeout_seconds = 240\n'


def cli_env(db: Path) -> dict[str, str]:
    """The test's isolated environment (conftest set HOME and the XDG dirs) plus known secrets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_CONSOLE_")}
    env.update(
        {
            "VOICE_CONSOLE_DB": str(db),
            "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": VAPI_SECRET,
            "VOICE_CONSOLE_RETELL_API_KEY": RETELL_KEY,
            "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def cli(db: Path, *args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "console", *args],
        capture_output=True,
        text=True,
        env=cli_env(db) | (env or {}),
        timeout=timeout,
    )


def history(db: Path, *args: str) -> subprocess.CompletedProcess:
    return cli(db, "history", *args)


def decide(db: Path, *args: str) -> subprocess.CompletedProcess:
    return cli(db, "decide", *args)


class Serve:
    """`voice-console serve --port 0` in a subprocess; tool calls are rejected by rule unless
    `hold=True` (then they wait for `decide`) or a `--policy` is given."""

    def __init__(self, db: Path, *extra: str, hold: bool = False, env: dict[str, str] | None = None) -> None:
        if "--policy" not in extra:
            policy = db.parent / ("hold-policy.toml" if hold else "reject-policy.toml")
            policy.write_text(HOLD_POLICY if hold else REJECT_POLICY)
            extra = (*extra, "--policy", str(policy))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "console", "serve", "--port", "0", *extra],
            env=cli_env(db) | (env or {}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stderr.readline()
        while " WARNING " in line:  # the history's own notes (a restart after a kill) come first
            line = self.proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:(\d+))", line)
        assert match, f"unexpected first line: {line!r}"
        self.url, self.port = match.group(1), int(match.group(2))

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, out, err
