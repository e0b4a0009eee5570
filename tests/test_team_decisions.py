"""Held tool calls across a team: two `serve`s on one real Redis; a call held by A is decided from
B's control API or `decide --team`, once team-wide, and A answers the platform."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from console.config import VapiSettings
from console.providers.vapi import sign_vapi_request
from tests.helpers.cli import Serve, cli_env
from tests.helpers.redis_server import RedisServer, needs_redis
from tests.helpers.secrets import PAYLOADS, VAPI_SECRET
from tests.helpers.team import wait_until

pytestmark = needs_redis
PARALLEL = (PAYLOADS / "vapi" / "tool-calls.parallel.json").read_bytes()
IDS = [call["id"] for call in json.loads(PARALLEL)["message"]["toolCallList"]]


class TeamServe(Serve):
    """`serve --team` holding tool calls; `held` collects the ids it announced on stderr."""

    def __init__(self, db: Path, url: str) -> None:
        super().__init__(db, "--team", url, hold=True)
        self.held: list[str] = []
        self.lines: list[str] = []
        self.instance = ""
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 10
        while not self.instance:
            assert time.monotonic() < deadline, self.lines
            time.sleep(0.02)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            if match := re.search(r" as (\S+)$", line.strip()) if "serve: team " in line else None:
                self.instance = match.group(1)
            if match := re.search(r"tool call pending: (\S+)", line):
                self.held.append(match.group(1))

    def stop_quietly(self) -> int:
        self.proc.terminate()
        self.proc.wait(30)
        return self.proc.returncode


def platform_call(url: str, answer: dict[str, Any]) -> threading.Thread:
    """The platform's tool-call request: it stays open until the holding receiver answers."""

    def call() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            headers = {"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, PARALLEL)}
            try:
                response = client.post("/webhook/vapi", content=PARALLEL, headers=headers)
            except httpx.HTTPError as exc:  # the receiver died with the request (a test kills it)
                answer["error"] = exc
                return
            answer["status"], answer["json"] = response.status_code, response.json()

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def decide(db: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "console", "decide", *args], capture_output=True, text=True, env=cli_env(db), timeout=60
    )


def gate_entries(server: RedisServer) -> list[tuple[str, dict[str, Any]]]:
    entries = []
    for _, fields in server.client().xrange("vc:{default}:events"):
        if fields.get(b"g"):
            entries.append((fields[b"i"].decode(), json.loads(fields[b"g"])))
    return entries


def results(answer: dict[str, Any]) -> dict[str, str]:
    return {item["toolCallId"]: json.dumps(item) for item in answer["json"]["results"]}


@pytest.fixture
def team(tmp_path):
    server = RedisServer(tmp_path / "redis")
    a = TeamServe(tmp_path / "a.db", server.url)
    b = TeamServe(tmp_path / "b.db", server.url)
    yield server, a, b
    a.stop_quietly()
    b.stop_quietly()
    server.stop()


def held_in_redis(server: RedisServer, tool_call_id: str) -> bool:
    return server.client().exists(f"vc:{{default}}:held:{tool_call_id}") == 1


def test_a_call_held_by_a_is_decided_from_b_and_from_decide_team_and_a_answers(tmp_path, team):
    server, a, b = team
    answer: dict[str, Any] = {}
    caller = platform_call(a.url, answer)
    wait_until(lambda: all(held_in_redis(server, i) for i in IDS), what="A's held calls in Redis")
    # The team's list names who holds each call.
    listed = decide(tmp_path / "x.db", "--team", server.url, "--list")
    assert listed.returncode == 0, listed.stderr
    assert all(i in listed.stdout for i in IDS) and f"held by {a.instance}" in listed.stdout

    # From B's control API (what a console attached to B does): B records it; A applies it.
    via_b = decide(tmp_path / "b.db", IDS[0], "--approve", "--port", str(b.port), "--operator", "bob")
    assert via_b.returncode == 0, via_b.stderr
    # From anywhere, through the team's Redis.
    via_team = decide(
        tmp_path / "x.db", "--team", server.url, IDS[1], "--reject", "Closed on Sundays.", "--operator", "carol"
    )
    assert via_team.returncode == 0, via_team.stderr
    assert f"held by {a.instance}, which answers the platform" in via_team.stdout
    caller.join(30)
    assert answer["status"] == 200
    assert "Closed on Sundays." in results(answer)[IDS[1]]
    # A second decision is told who won.
    again = decide(tmp_path / "x.db", "--team", server.url, IDS[0], "--reject", "no", "--operator", "dave")
    assert again.returncode == 1 and f"{IDS[0]} was already approved by bob" in again.stderr
    # The team stream tells every console: held by A, decided (by whom), settled.
    wait_until(lambda: sum(g.get("what") == "settled" for _, g in gate_entries(server)) == 2, what="settled entries")
    entries = gate_entries(server)
    assert {i for i, _ in entries} == {a.instance}
    decided = {g["decision"]["tool_call_id"]: g["decision"]["operator"] for _, g in entries if g["what"] == "decided"}
    assert decided == {IDS[0]: "bob", IDS[1]: "carol"}
    assert not any(held_in_redis(server, i) for i in IDS)


def test_two_operators_deciding_the_same_call_at_once_one_wins_the_other_is_told(tmp_path, team):
    server, a, _ = team
    answer: dict[str, Any] = {}
    caller = platform_call(a.url, answer)
    wait_until(lambda: all(held_in_redis(server, i) for i in IDS), what="A's held calls in Redis")
    x = tmp_path / "x.db"
    with ThreadPoolExecutor(2) as pool:
        approve = pool.submit(decide, x, "--team", server.url, IDS[0], "--approve", "--operator", "alice")
        reject = pool.submit(decide, x, "--team", server.url, IDS[0], "--reject", "Nope.", "--operator", "bob")
        outcomes = {"alice": approve.result(), "bob": reject.result()}
    winners = [who for who, result in outcomes.items() if result.returncode == 0]
    assert len(winners) == 1, {who: (r.returncode, r.stderr) for who, r in outcomes.items()}
    (winner,) = winners
    loser = "bob" if winner == "alice" else "alice"
    won = "approved" if winner == "alice" else "rejected"
    assert f"was already {won} by {winner}" in outcomes[loser].stderr
    assert decide(x, "--team", server.url, IDS[1], "--approve").returncode == 0
    caller.join(30)
    assert answer["status"] == 200
    assert ("Nope." in results(answer)[IDS[0]]) == (winner == "bob")
    assert len(a.held) == 2  # A held each call once, and decided it once
    decided = [g for _, g in gate_entries(server) if g["what"] == "decided" and g["decision"]["tool_call_id"] == IDS[0]]
    assert [g["decision"]["operator"] for g in decided] == [winner]


def test_with_redis_down_the_holding_receiver_decides_alone(tmp_path, team):
    server, a, _ = team
    server.kill()
    answer: dict[str, Any] = {}
    caller = platform_call(a.url, answer)
    wait_until(lambda: len(a.held) == 2, what="A to hold both calls")
    for tool_call_id in IDS:
        local = decide(tmp_path / "a.db", tool_call_id, "--approve", "--port", str(a.port), "--operator", "alice")
        assert local.returncode == 0, local.stderr
    caller.join(30)
    assert answer["status"] == 200
    team_down = decide(tmp_path / "x.db", "--team", server.url, IDS[0], "--approve")
    assert team_down.returncode == 1 and "is unreachable" in team_down.stderr


def owner_in_redis(server: RedisServer, tool_call_id: str) -> str | None:
    held = server.client().get(f"vc:{{default}}:held:{tool_call_id}")
    return json.loads(held)["instance"] if held else None


def test_a_retry_on_another_receiver_joins_the_held_call_and_both_get_the_one_decision(tmp_path, team):
    server, a, b = team
    first: dict[str, Any] = {}
    retry: dict[str, Any] = {}
    caller = platform_call(a.url, first)
    wait_until(lambda: all(held_in_redis(server, i) for i in IDS), what="A's held calls in Redis")
    retrier = platform_call(b.url, retry)  # the platform gave up on A's answer and asked B
    wait_until(lambda: len(b.held) == 2, what="B to hold the retry")
    wait_until(lambda: any("joined it" in line for line in b.lines), what="B to join A's calls")
    assert {owner_in_redis(server, i) for i in IDS} == {a.instance}  # A still owns them
    x = tmp_path / "x.db"
    assert decide(x, "--team", server.url, IDS[0], "--approve", "--operator", "alice").returncode == 0
    assert decide(x, "--team", server.url, IDS[1], "--reject", "Fully booked.", "--operator", "alice").returncode == 0
    caller.join(30)
    retrier.join(30)
    assert first["status"] == retry["status"] == 200
    for answer in (first, retry):
        assert "Fully booked." in results(answer)[IDS[1]] and "Fully booked." not in results(answer)[IDS[0]]


def test_the_holding_receiver_killed_its_retry_on_another_is_taken_over_and_answered(tmp_path, team):
    server, a, b = team
    answer: dict[str, Any] = {}
    first: dict[str, Any] = {}
    caller = platform_call(a.url, first)
    wait_until(lambda: all(held_in_redis(server, i) for i in IDS), what="A's held calls in Redis")
    a.proc.kill()  # A dies holding the platform's request; the platform retries to B
    caller.join(30)
    assert "error" in first
    retrier = platform_call(b.url, answer)
    wait_until(lambda: len(b.held) == 2, what="B to hold the retry")
    # One decided while A's heartbeat may still run (it goes to A's inbox; B finds it by its key) ...
    x = tmp_path / "x.db"
    decided = decide(x, "--team", server.url, IDS[0], "--approve", "--operator", "alice")
    assert decided.returncode == 0, decided.stderr
    # ... the other once A's heartbeat has expired and B has taken the call over.
    wait_until(lambda: owner_in_redis(server, IDS[1]) == b.instance, timeout=20, what="B to take the call over")
    decided = decide(x, "--team", server.url, IDS[1], "--reject", "Call back tomorrow.", "--operator", "alice")
    assert decided.returncode == 0 and f"held by {b.instance}" in decided.stdout
    retrier.join(30)
    assert answer["status"] == 200
    assert "Call back tomorrow." in results(answer)[IDS[1]]
    assert any(f"took it over from {a.instance}" in line for line in b.lines)
    taken = [g for i, g in gate_entries(server) if i == b.instance and g["what"] == "held" and g.get("taken_from")]
    assert {g["call"]["tool_call_id"] for g in taken} >= {IDS[1]}
