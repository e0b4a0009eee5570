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
import time

import httpx

from console.config import VapiSettings
from console.providers.vapi import sign_vapi_request
from console.services.serve_state import ServeState, read_state, state_file, write_state
from tests.helpers.cli import Serve, cli_env, decide, history
from tests.helpers.secrets import PAYLOADS, VAPI_SECRET


def test_decide_approves_and_rejects_held_calls(tmp_path):
    db = tmp_path / "history.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "--port", "0"],
        env=cli_env(db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = re.search(r"listening on (\S+)", proc.stderr.readline()).group(1)
    body = (PAYLOADS / "vapi" / "tool-calls.parallel.json").read_bytes()
    ids = [c["id"] for c in json.loads(body)["message"]["toolCallList"]]
    answer: dict = {}

    def platform() -> None:  # the platform's request stays open until the gate answers
        with httpx.Client(base_url=url, timeout=30) as client:
            response = client.post(
                "/webhook/vapi",
                content=body,
                headers={"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)},
            )
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
        assert again.returncode == 1 and "was already rejected by " in again.stderr  # and who rejected it
        bad = decide(db, "x", "--edit", "[1, 2]")
        assert bad.returncode == 2

        # The control API refuses requests without the token.
        path = state_file(int(url.rsplit(":", 1)[1]))
        state = read_state(path)
        assert state is not None and state.url == url and state.pid == proc.pid
        assert (os.stat(path).st_mode & 0o777) == 0o600
        assert httpx.get(f"{url}/control/pending").status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert not path.exists(), "the state file is removed at exit"
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


def with_timeout(value: object, seconds: int) -> object:
    """The delivery with every server's `timeoutSeconds` set, as an assistant may configure it."""
    if isinstance(value, dict):
        return {k: seconds if k == "timeoutSeconds" else with_timeout(v, seconds) for k, v in value.items()}
    if isinstance(value, list):
        return [with_timeout(item, seconds) for item in value]
    return value


def hold_tool_calls(url: str, answer: dict) -> threading.Thread:
    """Post a Vapi tool-calls delivery; the request stays open until the calls are decided
    (for up to 300 s: a loaded machine starts each `decide` slowly)."""
    delivery = json.loads((PAYLOADS / "vapi" / "tool-calls.parallel.json").read_bytes())
    body = json.dumps(with_timeout(delivery, 300)).encode()

    def platform() -> None:
        with httpx.Client(base_url=url, timeout=300) as client:  # a platform waits as long as its deadline
            response = client.post(
                "/webhook/vapi",
                content=body,
                headers={"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)},
            )
            answer["status"], answer["json"] = response.status_code, response.json()

    thread = threading.Thread(target=platform, daemon=True)
    thread.start()
    return thread


def listed_ids(db, *args: str, want: int) -> list[str]:
    deadline = time.monotonic() + 60
    while True:
        listed = decide(db, "--list", *args)
        assert listed.returncode == 0, listed.stderr
        ids = [line.split()[0] for line in listed.stdout.splitlines()]
        if len(ids) >= want:
            return ids
        assert time.monotonic() < deadline, f"{want} pending calls never showed up: {ids}"
        time.sleep(0.1)


def test_two_serves_decide_asks_which_and_survives_one_stopping(tmp_path):
    db = tmp_path / "history.db"
    first, second = Serve(db, hold=True), Serve(tmp_path / "second.db", hold=True)
    answer: dict = {}
    try:
        caller = hold_tool_calls(first.url, answer)
        both = decide(db, "--list")
        assert both.returncode == 2, both.stderr
        for serve in (first, second):
            assert f"{serve.url}  pid {serve.proc.pid}  started 20" in both.stderr
        assert "--port P or --url URL" in both.stderr
        ambiguous = decide(db, "call_x", "--approve")
        assert ambiguous.returncode == 2 and "--port P" in ambiguous.stderr

        ids = listed_ids(db, "--port", str(first.port), want=2)
        assert listed_ids(db, "--url", first.url + "/", want=2) == ids
        other = decide(db, "--list", "--port", str(second.port))
        assert other.returncode == 0 and other.stdout == ""  # the other one holds nothing
        elsewhere = decide(db, "--list", "--port", "1")
        assert elsewhere.returncode == 1 and "no running `voice-console serve` on port 1" in elsewhere.stderr
        assert first.url in elsewhere.stderr and second.url in elsewhere.stderr

        # The one started last stops: the first still runs and `decide` finds it with no flags.
        assert second.stop()[0] == 0
        assert not state_file(second.port).exists() and state_file(first.port).exists()
        assert listed_ids(db, want=2) == ids
        for tool_call_id in ids:
            decided = decide(db, tool_call_id, "--approve")
            assert decided.returncode == 0, decided.stderr
        caller.join(60)
        assert not caller.is_alive(), "the platform's request was not answered"
    finally:
        if second.proc.poll() is None:
            second.stop()
        assert first.stop()[0] == 0
    assert answer["status"] == 200 and [r["toolCallId"] for r in answer["json"]["results"]] == ids


def test_state_files_of_dead_serves_are_ignored_and_kept(tmp_path):
    db = tmp_path / "h.db"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    stale = write_state(
        ServeState(url="http://127.0.0.1:9", token="t", pid=dead_pid, started="2026-01-01T00:00:00+00:00")
    )
    only_stale = decide(db, "--list")
    assert only_stale.returncode == 1
    assert f"no longer running (pid {dead_pid}) were ignored" in only_stale.stderr
    serve = Serve(db, hold=True)
    try:
        alive = decide(db, "--list")  # the live one is picked, the dead one does not make it ambiguous
        assert alive.returncode == 0, alive.stderr
    finally:
        assert serve.stop()[0] == 0
    assert stale.exists(), "a process never removes another process's state file"
