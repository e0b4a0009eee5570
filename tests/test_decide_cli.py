"""Headless decisions: `serve` holds tool calls, `voice-console decide` finds it
through its state file and decides; the platform gets the merged answer."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx

from console.config import VapiSettings
from console.control import read_state
from console.providers.vapi import sign_vapi_request
from tests.test_serve_cli import PAYLOADS, VAPI_SECRET, cli_env, history


def decide(db: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "console", "decide", *args], capture_output=True, text=True,
                          env=cli_env(db), timeout=60)


def test_decide_approves_and_rejects_held_calls(tmp_path):
    db = tmp_path / "history.db"
    proc = subprocess.Popen([sys.executable, "-m", "console", "serve", "--port", "0"], env=cli_env(db),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = re.search(r"listening on (\S+)", proc.stderr.readline()).group(1)
    body = (PAYLOADS / "vapi" / "tool-calls.parallel.json").read_bytes()
    ids = [c["id"] for c in json.loads(body)["message"]["toolCallList"]]
    answer: dict = {}

    def platform() -> None:  # the platform's request stays open until the gate answers
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post("/webhook/vapi", content=body, headers={
                "content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)})
            answer["status"], answer["json"] = response.status_code, response.json()

    caller = threading.Thread(target=platform)
    caller.start()
    try:
        pending: list[str] = []
        while len(pending) < 2:
            line = proc.stderr.readline()
            assert line, "serve exited"
            if match := re.search(r"tool call pending: (\S+)", line):
                pending.append(match.group(1))
                assert f"voice-console decide {match.group(1)}" in line
        assert sorted(pending) == sorted(ids)

        listed = decide(db, "--list")
        assert listed.returncode == 0 and all(i in listed.stdout for i in ids)
        approved = decide(db, ids[0], "--approve")
        assert approved.returncode == 0, approved.stderr
        rejected = decide(db, ids[1], "--reject", "The clinic is closed on Sundays.")
        assert rejected.returncode == 0, rejected.stderr
        caller.join(30)
        again = decide(db, ids[1], "--approve")
        assert again.returncode == 1 and "no pending tool call" in again.stderr
        bad = decide(db, "x", "--edit", "[1, 2]")
        assert bad.returncode == 2

        # The control API refuses requests without the token.
        state = read_state()
        assert state is not None and state.url == url
        assert (os.stat(Path(os.environ["HOME"]) / ".local" / "state" / "voice-console" / "serve.json").st_mode & 0o777) == 0o600
        assert httpx.get(f"{url}/control/pending").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert read_state() is None, "the state file is removed at exit"
    assert state.token not in out + err

    assert answer["status"] == 200
    results = answer["json"]["results"]
    assert [r["toolCallId"] for r in results] == ids
    assert "result" in results[0] and "error" not in results[0]
    assert results[1]["error"] == "The clinic is closed on Sundays."

    call_id = json.loads(body)["message"]["call"]["id"]
    detail = json.loads(history(db, "show", call_id, "--json").stdout)
    decided = {t["tool_call_id"]: (t["decision"], t["by"]) for t in detail["tool_calls"]}
    assert decided == {ids[0]: ("approved", "operator"), ids[1]: ("rejected", "operator")}


def test_decide_without_a_running_serve(tmp_path):
    result = decide(tmp_path / "h.db", "call_x", "--approve")
    assert result.returncode == 1
    assert "no running `voice-console serve`" in result.stderr
