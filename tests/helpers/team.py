"""Team mode in tests: signed Vapi posts to a `serve --team`, its instance name, what reached the
team stream, and `watch --team` in a subprocess."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from console.config import VapiSettings
from console.providers.vapi import sign_vapi_request
from console.services.team import TeamKeys
from tests.helpers.cli import Serve, cli_env
from tests.helpers.redis_server import RedisServer
from tests.helpers.secrets import PAYLOADS, VAPI_SECRET

KEYS = TeamKeys("default")


def transcript_body(call_id: str, n: int) -> bytes:
    message = json.loads((PAYLOADS / "vapi" / "transcript.user-final.json").read_bytes())
    message["message"]["transcript"] = f"line {n} of {call_id}"
    message["message"]["call"]["id"] = call_id
    message["message"]["timestamp"] = 1771148400000 + n
    return json.dumps(message).encode()


def post(client: httpx.Client, body: bytes) -> httpx.Response:
    headers = {"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)}
    return client.post("/webhook/vapi", content=body, headers=headers)


def history_event_ids(db: Path) -> set[int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as connection:
        return {row[0] for row in connection.execute("SELECT id FROM events")}


def published(server: RedisServer, instance: str) -> list[int]:
    """The history ids of the events the stream holds for `instance`, in stream order, duplicates
    included (an entry holds a run of events with consecutive ids, the first's in "n")."""
    ids = []
    for _, fields in server.client().xrange(KEYS.events):
        if fields[b"i"].decode() == instance and fields.get(b"n") and fields.get(b"e"):
            first = int(fields[b"n"])
            ids += [first + offset for offset in range(len(json.loads(fields[b"e"])))]
    return ids


def wait_until(condition, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def instance_of(serve: Serve) -> str:
    line = serve.proc.stderr.readline()
    while "team " not in line:
        assert line, "serve ended before naming its team"
        line = serve.proc.stderr.readline()
    return line.rstrip().rsplit(" as ", 1)[1]


def start_watch(db: Path, url: str) -> subprocess.Popen[str]:
    """`voice-console watch --team URL` in a subprocess (stdout: its NDJSON, stderr: its notes)."""
    return subprocess.Popen(
        [sys.executable, "-m", "console", "watch", "--team", url],
        env=cli_env(db),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def read_watch_until(watcher: subprocess.Popen[str], done, timeout: float = 20.0) -> list[dict]:
    """`watch`'s lines until `done(lines so far)` says so (read on a thread: a pipe has no timeout)."""
    lines: list[dict] = []
    finished = threading.Event()

    def read() -> None:
        assert watcher.stdout is not None
        for line in watcher.stdout:
            lines.append(json.loads(line))
            if done(lines):
                break
        finished.set()

    threading.Thread(target=read, daemon=True).start()
    assert finished.wait(timeout) and done(lines), f"watch printed only {lines}"
    return lines
