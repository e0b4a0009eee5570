"""End to end through the real command: `voice-console serve` in a subprocess,
real webhooks over loopback, then `voice-console history` reading them back."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from console.config import VapiSettings
from console.providers.retell import sign_retell
from console.providers.vapi import sign_vapi_request
from tests.helpers.cli import REJECT_POLICY, Serve, cli, cli_env, history
from tests.helpers.secrets import PAYLOADS, RETELL_KEY, VAPI_SECRET


def post_vapi(client: httpx.Client, name: str, **overrides) -> httpx.Response:
    body = (PAYLOADS / "vapi" / name).read_bytes()
    if overrides:
        message = json.loads(body)
        message["message"].update(overrides)
        body = json.dumps(message).encode()
    headers = {"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)}
    return client.post("/webhook/vapi", content=body, headers=headers)


CALL_SEQUENCE = [
    "status-update.ringing.json",
    "status-update.in-progress.json",
    "speech-update.assistant-started.json",
    "model-output.json",
    "transcript.assistant-final.json",
    "speech-update.user-started.json",
    # Vapi's own report of the same interruption, 300 ms after the user started talking.
    ("user-interrupted.json", {"timestamp": 1771148404400}),
    "transcript.user-final.json",
    "tool-calls.parallel.json",
    "hang.json",
    "end-of-call-report.json",
    "status-update.ended.json",
]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_stores_prints_and_stops_cleanly(tmp_path, sig):
    db = tmp_path / "history.db"
    serve = Serve(db)
    try:
        with httpx.Client(base_url=serve.url, timeout=10) as client:
            for item in CALL_SEQUENCE:
                name, overrides = item if isinstance(item, tuple) else (item, {})
                response = post_vapi(client, name, **overrides)
                assert response.status_code == 200, (name, response.text)
            body = (PAYLOADS / "retell" / "call_started.json").read_bytes()
            response = client.post(
                "/webhook/retell",
                content=body,
                headers={"x-retell-signature": sign_retell(body, RETELL_KEY, int(time.time() * 1000))},
            )
            assert response.status_code in (200, 204)
    finally:
        code, out, err = serve.stop(sig)
    assert code == 0, err
    assert "Traceback" not in err
    lines = [json.loads(line) for line in out.splitlines()]
    kinds = [line["kind"] for line in lines]
    for kind in (
        "call.status",
        "speech.started",
        "transcript.final",
        "barge_in",
        "tool.requested",
        "tool.decided",
        "call.ended",
    ):
        assert kind in kinds
    assert all({"kind", "at", "provider", "call_id"} <= set(line) for line in lines)
    assert kinds.count("barge_in") == 1, "speech overlap and user-interrupted are one barge-in"
    for text in (out, err, *(p.read_bytes().decode("latin-1") for p in tmp_path.glob("history.db*"))):
        assert VAPI_SECRET not in text and RETELL_KEY not in text

    calls = history(db, "calls", "--json")
    assert calls.returncode == 0, calls.stderr
    listed = json.loads(calls.stdout)
    vapi_call = next(c for c in listed if c["provider"] == "vapi")
    assert set(vapi_call) == {
        "call_id",
        "provider",
        "status",
        "started_at",
        "ended_at",
        "ended_reason",
        "barge_ins",
        "tool_calls",
    }
    assert vapi_call["status"] == "ended" and vapi_call["barge_ins"] == 1 and vapi_call["tool_calls"] >= 2

    shown = history(db, "show", vapi_call["call_id"], "--json")
    assert shown.returncode == 0
    detail = json.loads(shown.stdout)
    assert set(detail) == {"call", "events", "tool_calls"}
    assert [t["decision"] for t in detail["tool_calls"]] == ["rejected"] * len(detail["tool_calls"])
    assert len(detail["events"]) == sum(1 for line in lines if line["call_id"] == vapi_call["call_id"])

    table = history(db, "calls")
    assert table.returncode == 0 and vapi_call["call_id"] in table.stdout

    final_text = json.loads((PAYLOADS / "vapi" / "transcript.user-final.json").read_text())["message"]["transcript"]
    word = max(final_text.split(), key=len).strip(".,?!")
    found = history(db, "search", word, "--json")
    assert found.returncode == 0 and any(word.lower() in hit["text"].lower() for hit in json.loads(found.stdout))

    out_file = tmp_path / "export.csv"
    exported = history(db, "export", "--format", "csv", "--out", str(out_file))
    assert exported.returncode == 0 and out_file.read_text().startswith("at,provider,call_id,kind")

    missing = history(db, "show", "no-such-call")
    assert missing.returncode == 1 and "no-such-call" in missing.stderr


def test_serve_on_a_busy_port_names_the_fix(tmp_path):
    """Whoever holds the port, the message says how to start anyway: `--port P` or `--port 0`."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        result = cli(tmp_path / "a.db", "serve", "--port", port, timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in result.stderr
    assert "--port P" in result.stderr and "--port 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_on_a_port_another_serve_holds_says_which(tmp_path):
    first = Serve(tmp_path / "a.db")
    try:
        second = cli(tmp_path / "b.db", "serve", "--port", str(first.port), timeout=30)
        assert second.returncode == 1
        assert f"by another `voice-console serve` (pid {first.proc.pid})" in second.stderr
        assert "--port 0" in second.stderr and "Traceback" not in second.stderr
    finally:
        assert first.stop()[0] == 0


def test_history_on_a_missing_database_is_a_clear_error(tmp_path):
    result = history(tmp_path / "never.db", "calls")
    assert result.returncode == 1
    assert "never.db" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "never.db").exists()


def test_sigterm_under_load_loses_no_acknowledged_event(tmp_path):
    """Stop `serve` while 16 clients are posting: every event that got a 2xx is on disk."""
    import sqlite3
    import threading

    db = tmp_path / "history.db"
    serve = Serve(db)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(worker: int) -> None:
        with httpx.Client(base_url=serve.url, timeout=5) as http:
            for n in range(100_000):
                if stop.is_set():
                    return
                call_id = f"load-{worker}-{n}"
                body = json.dumps(
                    {
                        "message": {
                            "type": "status-update",
                            "status": "ringing",
                            "timestamp": 1764000000000 + n,
                            "call": {"id": call_id},
                        }
                    }
                ).encode()
                try:
                    response = http.post(
                        "/webhook/vapi",
                        content=body,
                        headers={
                            "content-type": "application/json",
                            **sign_vapi_request(VapiSettings(), VAPI_SECRET, body),
                        },
                    )
                except httpx.HTTPError:
                    return  # the server went away mid-request: not acknowledged
                if response.status_code == 200:
                    with lock:
                        acked.append(call_id)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    code, _, err = serve.stop(signal.SIGTERM)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert code == 0, err
    assert len(acked) > 50
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT call_id FROM deliveries")}
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged events are not in the history"


def test_every_payload_read_back_through_the_history_cli(tmp_path):
    """All Vapi message types, Retell events and Twilio callbacks through `serve`,
    then read back with `history show --json`."""
    from urllib.parse import parse_qsl

    from console.providers.twilio.auth import sign_twilio

    db = tmp_path / "history.db"
    env_token = "serve-test-twilio-token-0c1d"
    env = cli_env(db)
    env["VOICE_CONSOLE_TWILIO_AUTH_TOKEN"] = env_token
    public = "https://voice.example.test"
    policy = tmp_path / "reject-policy.toml"
    policy.write_text(REJECT_POLICY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "--port", "0", "--public-url", public, "--policy", str(policy)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = re.search(r"listening on (\S+)", proc.stderr.readline()).group(1)
    expected_types: dict[str, set[str]] = {}
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            for path in sorted((PAYLOADS / "vapi").glob("*.json")):
                assert post_vapi(client, path.name).status_code == 200, path.name
                message = json.loads(path.read_text())["message"]
                call_id = (message.get("call") or {}).get("id")
                if call_id:
                    expected_types.setdefault(call_id, set()).add(message["type"])
            for path in sorted((PAYLOADS / "retell").glob("*.json")):
                body = path.read_bytes()
                route = "/webhook/retell/function" if path.name.startswith("function") else "/webhook/retell"
                response = client.post(
                    route,
                    content=body,
                    headers={"x-retell-signature": sign_retell(body, RETELL_KEY, int(time.time() * 1000))},
                )
                assert response.status_code < 300, path.name
            for path in sorted((PAYLOADS / "twilio").glob("*.form")):
                route = "/webhook/twilio/status" if "status" in path.name else "/webhook/twilio/voice"
                body = path.read_text().strip()
                signature = sign_twilio(public + route, parse_qsl(body, keep_blank_values=True), env_token)
                response = client.post(
                    route,
                    content=body,
                    headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature},
                )
                assert response.status_code < 300, path.name
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0

    listed = json.loads(history(db, "calls", "--json", "--limit", "1000").stdout)
    assert {c["provider"] for c in listed} == {"vapi", "retell", "twilio"}
    for call_id, types in expected_types.items():
        detail = json.loads(history(db, "show", call_id, "--json").stdout)
        assert detail["events"], call_id
        raw_types = {e["type"] for e in detail["events"] if e["kind"] == "raw"}
        kinds = {e["kind"] for e in detail["events"]}
        # Every message type left a trace: modelled kinds or a raw event of that type.
        modelled = {
            "status-update",
            "speech-update",
            "transcript",
            'transcript[transcriptType="final"]',
            "user-interrupted",
            "tool-calls",
            "function-call",
            "hang",
            "end-of-call-report",
        }
        assert (types - modelled) <= raw_types | {"status-update"}, (types - modelled) - raw_types
        assert "call.ended" in kinds if "end-of-call-report" in types else True


def test_serve_keeps_acknowledging_when_nobody_reads_its_stdout(tmp_path):
    # The helper's stdout pipe is read only at the end: ~1 MB of NDJSON would fill it 15 times over.
    serve = Serve(tmp_path / "history.db")
    message = json.loads((PAYLOADS / "vapi" / "transcript.user-final.json").read_bytes())
    try:
        with httpx.Client(base_url=serve.url, timeout=10) as client:
            for n in range(2500):
                message["message"]["transcript"] = f"line {n} " + "words " * 40
                message["message"]["timestamp"] = 1771148400000 + n
                body = json.dumps(message).encode()
                headers = {"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)}
                assert client.post("/webhook/vapi", content=body, headers=headers).status_code == 200
    finally:
        code, out, err = serve.stop()
    assert code == 0, err
    lines = out.splitlines()
    assert sum(json.loads(line)["kind"] == "transcript.final" for line in lines) == 2500  # all written in the end


async def test_ndjson_lines_past_the_backlog_are_dropped_whole_and_said_once():
    import asyncio
    import os

    from console.core.events import TranscriptFinal
    from console.services.serve import NdjsonPrinter

    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    notes: list[str] = []
    printer = NdjsonPrinter(os.fdopen(write_end, "w"), notes.append, backlog_bytes=200_000)
    event = TranscriptFinal.model_validate(
        {"at": "2026-12-04T10:00:00Z", "provider": "vapi", "call_id": "c", "role": "user", "text": "x" * 200}
    )
    started = time.perf_counter()
    for _ in range(5000):  # ~1.5 MB: the pipe holds 64 KB, the backlog 200 KB
        printer([event])
        printer.flush()
    assert time.perf_counter() - started < 2  # the loop never waited for the pipe
    assert printer.dropped > 3000
    assert len(notes) == 1 and "stdout is not being read" in notes[0]
    written = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            chunk = os.read(read_end, 1 << 16)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        if not chunk:
            break
        written += chunk
        if written.count(b"\n") + printer.dropped >= 5000:
            break
    os.close(read_end)
    lines = written.splitlines()
    assert lines and all(json.loads(line)["text"] == "x" * 200 for line in lines)  # whole lines only
    assert len(lines) + printer.dropped == 5000


async def test_ndjson_to_a_file_or_dev_null_is_written_at_once_and_to_a_pipe_by_a_thread(tmp_path):
    import os

    from console.core.events import TranscriptFinal
    from console.services.serve import NdjsonPrinter, never_blocks

    read_end, write_end = os.pipe()
    with (
        open(os.devnull, "w") as null,  # noqa: ASYNC230 (no loop to block: the printer needs one running)
        open(tmp_path / "events.ndjson", "w") as file,  # noqa: ASYNC230
        os.fdopen(write_end, "w") as pipe,
    ):
        assert never_blocks(null) and never_blocks(file) and not never_blocks(pipe)
        event = TranscriptFinal.model_validate(
            {"at": "2026-12-04T10:00:00Z", "provider": "vapi", "call_id": "c", "role": "user", "text": "hi"}
        )
        to_file = NdjsonPrinter(file)
        for _ in range(3):
            to_file([event])
            to_file.flush()
        to_file.close()
        assert to_file._writer is None  # no thread: a file never waits for a reader
        to_pipe = NdjsonPrinter(pipe)
        to_pipe([event])
        to_pipe.flush()
        to_pipe.close()
        assert to_pipe._writer is not None
    os.close(read_end)
    lines = (tmp_path / "events.ndjson").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == ["hi"] * 3
