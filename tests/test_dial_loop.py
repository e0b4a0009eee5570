"""The whole loop with no account, through the real commands: `serve`, `platform`,
`dial`, then `history` — a dialed call's whole timeline lands in the history."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

from tests.test_serve_cli import cli_env, history

POLICY = '[tools.default]\naction = "override"\nresult = \'{"available": true}\'\n'


def test_dial_through_the_simulated_platform_into_history(tmp_path):
    db = tmp_path / "history.db"
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = cli_env(db)
    serve = subprocess.Popen([sys.executable, "-m", "console", "serve", "--port", "0", "--policy", str(policy)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    receiver = re.search(r"listening on (\S+)", serve.stderr.readline()).group(1)
    platform = subprocess.Popen([sys.executable, "-m", "console", "platform", "--speed", "25",
                                 "--webhook", receiver + "/webhook/vapi"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        platform_url = re.search(r"platform on (\S+)", platform.stdout.readline()).group(1)
        dial_env = {**env, "VOICE_CONSOLE_VAPI_BASE_URL": platform_url, "VOICE_CONSOLE_VAPI_API_KEY": "sim-private-key"}

        def dial(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "console", "dial", *args], env=dial_env,
                                  capture_output=True, text=True, timeout=60)

        bad = dial("--to", "0415 555 0142")
        assert bad.returncode == 2 and "E.164" in bad.stderr
        placed = dial("--to", "+14155550142", "--json")
        assert placed.returncode == 0, placed.stderr
        call = json.loads(placed.stdout)
        assert call["status"] == "queued" and "/control" not in json.dumps(call["monitor"])  # masked

        for _ in range(300):
            listed = json.loads(history(db, "calls", "--json").stdout or "[]")
            if any(c["call_id"] == call["id"] and c["status"] == "ended" for c in listed):
                detail = json.loads(history(db, "show", call["id"], "--json").stdout)
                if any(e["kind"] == "call.ended" for e in detail["events"]):
                    break
            time.sleep(0.1)
        kinds = {e["kind"] for e in detail["events"]}
        assert {"transcript.partial", "transcript.final", "barge_in", "tool.requested", "tool.decided", "call.ended"} <= kinds
        assert all(t["decision"] == "overridden" and t["by"] == "rule" for t in detail["tool_calls"])
        # The assistant spoke the tool's actual answer.
        assert any("available" in e.get("text", "").lower() or "true" in e.get("text", "").lower()
                   for e in detail["events"] if e["kind"] == "transcript.final" and e["role"] == "assistant")
    finally:
        platform.send_signal(signal.SIGINT)
        serve.send_signal(signal.SIGTERM)
        platform.communicate(timeout=30)
        serve.communicate(timeout=30)
    assert serve.returncode == 0


def test_dial_without_a_key_says_so(tmp_path):
    result = subprocess.run([sys.executable, "-m", "console", "dial", "--to", "+14155550142"],
                            env=cli_env(tmp_path / "h.db"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "no Vapi API key" in result.stderr and "Traceback" not in result.stderr
