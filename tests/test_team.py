"""Team mode on a real `redis-server` (started by each test on a free port): receivers publish
what they recorded, `watch` reads it; Redis going away never costs an acknowledgement or an event."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from console.config import ConfigError, TeamSettings, load_settings
from console.core.events import CallStatus, SpeechStarted, TranscriptFinal
from console.services.team import TeamPublisher, TeamReader
from console.services.team_console import TeamTracker
from tests.helpers.cli import Serve, cli
from tests.helpers.redis_server import RedisServer, free_port, needs_redis
from tests.helpers.secrets import PAYLOADS, VAPI_SECRET
from tests.helpers.team import (
    KEYS,
    history_event_ids,
    instance_of,
    post,
    published,
    start_watch,
    transcript_body,
    wait_until,
)

pytestmark = needs_redis


@pytest.fixture
def redis_server(tmp_path: Path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


# --- settings ------------------------------------------------------------------------------


def test_team_settings_from_the_environment_and_their_checks(tmp_path):
    settings = load_settings(env={"VOICE_CONSOLE_TEAM": "rediss://alice:pw@redis.example:6380/2"})
    assert settings.team.redis_url == "rediss://alice:pw@redis.example:6380/2"
    assert settings.team.name == "default"
    assert TeamSettings().redis_url is None  # single-machine use: no Redis at all
    for bad in ({"redis_url": "http://redis.example"}, {"redis_url": "redis://"}, {"name": "a{b}"}, {"name": ""}):
        with pytest.raises(ValueError):
            TeamSettings(**bad)
    config = tmp_path / "config.toml"
    config.write_text('[team]\nredis_url = "redis://127.0.0.1:6379/0"\nname = "qa team"\n')
    with pytest.raises(ConfigError, match=r"team\.name"):
        load_settings(config, env={})


def test_a_bad_team_url_is_refused_without_printing_its_password(tmp_path):
    result = cli(tmp_path / "h.db", "watch", "--team", "http://alice:hunter2-secret@redis.example:6379")
    assert result.returncode == 2
    assert "must be a Redis URL" in result.stderr
    assert "hunter2-secret" not in result.stderr + result.stdout
    assert "alice:***@redis.example" in result.stderr


def test_watch_without_a_team_says_how_to_name_one(tmp_path):
    result = cli(tmp_path / "h.db", "watch")
    assert result.returncode == 2
    assert "--team redis://" in result.stderr and "VOICE_CONSOLE_TEAM" in result.stderr


# --- over a real Redis -----------------------------------------------------------------------


def test_serve_publishes_what_it_records_and_watch_prints_it(tmp_path, redis_server):
    db = tmp_path / "history.db"
    watcher = start_watch(db, redis_server.url)
    try:
        assert "watching team 'default'" in watcher.stderr.readline()
        serve = Serve(db, "--team", redis_server.url)
        instance = instance_of(serve)
        call_id = f"call-{uuid.uuid4()}"
        try:
            with httpx.Client(base_url=serve.url, timeout=10) as client:
                for n in range(20):
                    assert post(client, transcript_body(call_id, n)).status_code == 200
            wait_until(lambda: len(published(redis_server, instance)) >= 20, what="the stream to hold 20 events")
        finally:
            code, out, err = serve.stop()
        assert code == 0, err
        printed = [json.loads(line) for line in out.splitlines()]
        watched, answered = [], []
        while len(watched) < len(printed) or len(answered) < 20:
            line = watcher.stdout.readline()
            assert line, watcher.stderr.read()
            shown = json.loads(line)
            (answered if "delivery" in shown else watched).append(shown)
    finally:
        watcher.terminate()
        watcher.wait(10)
    # The same events, in the same order, each with the instance that recorded it.
    assert [{k: v for k, v in w.items() if k != "instance"} for w in watched] == printed
    assert {w["instance"] for w in watched} == {instance}
    # And the requests it answered (what the consoles' Events pane lists), with who answered.
    assert {(a["instance"], a["delivery"]["status"], a["delivery"]["verdict"]) for a in answered} == {
        (instance, 200, "ok")
    }
    assert [w["text"] for w in watched if w["kind"] == "transcript.final"] == [
        f"line {n} of {call_id}" for n in range(20)
    ]
    # Its heartbeat says who it is (and holds nothing secret: no control token).
    beat = json.loads(redis_server.client().get(KEYS.instance(instance)))
    assert beat["url"] == serve.url and beat["instance"] == instance
    assert "token" not in json.dumps(beat)


def test_redis_killed_and_restarted_under_load_loses_nothing(tmp_path):
    # Persistent, as a team's Redis would be: what it acknowledged before the kill is there after it.
    server = RedisServer(tmp_path / "redis", persistent=True)
    db = tmp_path / "history.db"
    serve = Serve(db, "--team", server.url)
    instance = instance_of(serve)
    statuses: list[int] = []
    stop = threading.Event()

    def platform() -> None:
        call_id = f"call-{uuid.uuid4()}"
        with httpx.Client(base_url=serve.url, timeout=10) as client:
            n = 0
            while not stop.is_set():
                statuses.append(post(client, transcript_body(call_id, n)).status_code)
                n += 1

    sending = threading.Thread(target=platform)
    sending.start()
    try:
        wait_until(lambda: len(statuses) > 100, what="load before the kill")
        server.kill()
        killed_at = len(statuses)
        wait_until(lambda: len(statuses) > killed_at + 200, what="acknowledgements while Redis is down")
        server.start()  # the same port and dir: the append-only file brings back what it had
        wait_until(lambda: len(statuses) > killed_at + 400, what="load after the restart")
        stop.set()
        sending.join(30)
        assert set(statuses) == {200}
        recorded = history_event_ids(db)
        wait_until(lambda: set(published(server, instance)) >= recorded, what="the backlog to be published")
    finally:
        stop.set()
        sending.join(30)
        code, _, err = serve.stop()
        server.stop()
    assert code == 0, err
    assert "team link down: the team's Redis at " + server.url in err
    assert "team link back (down since" in err
    assert "did not reach the team's Redis" not in err


def test_nothing_secret_reaches_redis(tmp_path, redis_server):
    db = tmp_path / "history.db"
    serve = Serve(db, "--team", redis_server.url)
    instance = instance_of(serve)
    monitor = json.loads((PAYLOADS / "vapi" / "conversation-update.json").read_bytes())["message"]["call"]["monitor"]
    names = [
        "conversation-update.json",
        "status-update.in-progress.json",
        "tool-calls.parallel.json",
        "end-of-call-report.json",
        "assistant.started.json",
    ]
    try:
        with httpx.Client(base_url=serve.url, timeout=30) as client:
            for name in names:
                body = (PAYLOADS / "vapi" / name).read_bytes()
                # The webhook secret inside the payload too: masked wherever it appears.
                body = body.replace(b'"assistantId"', f'"x-note": "{VAPI_SECRET}", "assistantId"'.encode(), 1)
                assert post(client, body).status_code == 200, name
        wait_until(lambda: len(published(redis_server, instance)) >= len(history_event_ids(db)), what="publishing")
    finally:
        serve.stop()
    dump = redis_server.everything()
    assert b"vc:{default}:events" in dump and len(published(redis_server, instance)) > 5
    for secret in (VAPI_SECRET, monitor["controlUrl"], monitor["listenUrl"]):
        assert secret.encode() not in dump, secret


def test_a_receiver_starts_and_acknowledges_with_redis_unreachable_then_publishes(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    db = tmp_path / "history.db"
    serve = Serve(db, "--team", url)
    instance = instance_of(serve)
    server = None
    try:
        with httpx.Client(base_url=serve.url, timeout=10) as client:
            for n in range(30):
                assert post(client, transcript_body("call-early", n)).status_code == 200
            server = RedisServer(tmp_path / "redis", port=port)
            wait_until(lambda: set(published(server, instance)) >= history_event_ids(db), what="the backlog")
            assert len(history_event_ids(db)) >= 30
    finally:
        _, _, err = serve.stop()
        if server is not None:
            server.stop()
    assert f"team link down: the team's Redis at {url} is unreachable" in err


async def test_a_reader_reads_each_event_once_across_a_resend_and_a_restart(tmp_path):
    server = RedisServer(tmp_path / "redis", persistent=True)
    notes: list[str] = []
    settings = TeamSettings(redis_url=server.url)
    reader = TeamReader(settings, since="0-0", note=notes.append, block_ms=100)
    client = server.client()
    event = {"kind": "transcript.final", "at": "2026-12-04T10:00:00Z", "provider": "vapi", "call_id": "c", "text": "hi"}
    for n in (1, 2, 2, 3):  # the second 2: a batch published again after its reply was lost
        client.xadd(KEYS.events, {"i": "a:1", "n": str(n), "e": json.dumps(event)})
    entries = reader.entries()
    got = [await asyncio.wait_for(anext(entries), 10) for _ in range(3)]
    assert [entry.history_id for entry in got] == [1, 2, 3]
    server.kill()
    pending = asyncio.ensure_future(anext(entries))
    await asyncio.sleep(0.5)
    assert not pending.done()
    server.start()
    server.client().xadd(KEYS.events, {"i": "a:1", "n": "4", "e": json.dumps(event)})
    fourth = await asyncio.wait_for(pending, 15)
    assert fourth.history_id == 4 and fourth.event == event
    assert any(note.startswith("team link down") for note in notes)
    assert any(note.startswith("team link back") for note in notes)
    await entries.aclose()
    server.stop()


async def test_the_publisher_never_waits_for_redis_and_keeps_a_bounded_backlog(tmp_path):
    settings = TeamSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", backlog_max=1000)
    notes: list[str] = []
    publisher = TeamPublisher(settings, "a:1", {"url": "http://127.0.0.1:1"}, note=notes.append)
    task = asyncio.create_task(publisher.run())
    event = TranscriptFinal.model_validate(
        {"at": "2026-12-04T10:00:00Z", "provider": "vapi", "call_id": "c", "role": "user", "text": "hi"}
    )
    started = time.perf_counter()
    for n in range(1500):
        publisher.recorded([event], n + 1)
        publisher.delivered((float(n), "vapi", "vapi", "transcript", "c", "ok", None, 200, 1.0, False))
    assert time.perf_counter() - started < 1.0  # queued, not sent: nothing waits for Redis
    await asyncio.sleep(0.3)
    assert publisher.backlog == 1000 and publisher.dropped == 500
    # The Events pane's rows are a live view: only the latest 1,000 wait.
    assert [row[0] for row in publisher._deliveries] == [float(n) for n in range(500, 1500)]
    assert not publisher.link.up and publisher.link.down_since is not None
    assert notes and notes[0].startswith("team link down")
    task.cancel()


def test_a_watcher_starting_mid_call_sees_the_calls_in_progress_at_once(tmp_path, redis_server):
    db = tmp_path / "history.db"
    serve = Serve(db, "--team", redis_server.url)
    instance = instance_of(serve)
    try:
        with httpx.Client(base_url=serve.url, timeout=10) as client:
            for name in ("status-update.ringing.json", "status-update.in-progress.json"):
                body = (PAYLOADS / "vapi" / name).read_bytes()
                assert post(client, body).status_code == 200
        call_id = json.loads(body)["message"]["call"]["id"]
        key = f"vc:{{default}}:call:{call_id}"
        wait_until(lambda: redis_server.client().exists(key), what="the call's summary in Redis")
        assert 0 < redis_server.client().ttl(key) <= 600  # it expires unless the call goes on changing
        watcher = start_watch(db, redis_server.url)
        try:
            first = json.loads(watcher.stdout.readline())
        finally:
            watcher.terminate()
            watcher.wait(10)
    finally:
        serve.stop()
    assert first["instance"] == instance
    assert first["call"]["call_id"] == call_id and first["call"]["status"] == "in-progress"
    assert "control" not in json.dumps(first["call"]).replace('"controllable"', "")


def test_the_redis_password_comes_from_the_keyring_or_environment_and_is_never_printed(tmp_path):
    password = "team-redis-pass-6Hq2"
    server = RedisServer(tmp_path / "redis", password=password)
    try:
        db = tmp_path / "history.db"
        # Without it: the receiver acknowledges all the same and says why Redis refuses it.
        refused = Serve(db, "--team", server.url)
        instance_of(refused)
        with httpx.Client(base_url=refused.url, timeout=10) as client:
            assert post(client, transcript_body("call-x", 1)).status_code == 200
        time.sleep(1.0)  # its first try at Redis
        _, out, err = refused.stop()
        assert f"team link down: the team's Redis at {server.url} refuses this client: it needs a password" in err
        # With it (VOICE_CONSOLE_TEAM_REDIS_PASSWORD; `keys set team` puts it in the keyring).
        serve = Serve(tmp_path / "b.db", "--team", server.url, env={"VOICE_CONSOLE_TEAM_REDIS_PASSWORD": password})
        instance = instance_of(serve)
        with httpx.Client(base_url=serve.url, timeout=10) as client:
            assert post(client, transcript_body("call-y", 1)).status_code == 200
        wait_until(lambda: published(server, instance), what="publishing with the password")
        listed = cli(db, "decide", "--team", server.url, "--list", env={"VOICE_CONSOLE_TEAM_REDIS_PASSWORD": password})
        assert listed.returncode == 0, listed.stderr
        _, out2, err2 = serve.stop()
        for text in (out, err, out2, err2, listed.stdout, listed.stderr):
            assert password not in text
    finally:
        server.stop()


def make_certificates(where: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a certificate for 127.0.0.1 signed by it (openssl): (ca, cert, key)."""
    ca_key, ca, key, request, cert = (
        where / name for name in ("ca.key", "ca.pem", "redis.key", "redis.csr", "redis.pem")
    )
    extensions = where / "san.cnf"
    extensions.write_text("subjectAltName = IP:127.0.0.1\n")
    for command in (
        [
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            ca_key,
            "-out",
            ca,
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request, "-subj", "/CN=127.0.0.1"],
        [
            "x509",
            "-req",
            "-in",
            request,
            "-CA",
            ca,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            cert,
            "-days",
            "2",
            "-extfile",
            extensions,
        ],
    ):
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return ca, cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_a_team_redis_over_tls(tmp_path):
    ca, cert, key = make_certificates(tmp_path)
    port = free_port()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    tls = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(ca),
            "--tls-auth-clients",
            "no",
            "--dir",
            str(redis_dir),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca), socket_timeout=5)
        wait_until(lambda: _pings(client), what="redis-server over TLS")
        url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}"
        serve = Serve(tmp_path / "history.db", "--team", url)
        instance = instance_of(serve)
        with httpx.Client(base_url=serve.url, timeout=10) as http:
            assert post(http, transcript_body("call-tls", 1)).status_code == 200
        wait_until(lambda: client.xlen("vc:{default}:events") > 0, what="an entry published over TLS")
        _, _, err = serve.stop()
        assert "team link down" not in err
        first = next(fields for _, fields in client.xrange("vc:{default}:events") if b"e" in fields)
        assert first[b"i"].decode() == instance and json.loads(first[b"e"])[0]["call_id"] == "call-tls"
    finally:
        tls.terminate()
        tls.wait(10)


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except (redis.exceptions.ConnectionError, OSError):
        return False


def test_a_team_tracker_takes_a_summary_only_when_it_is_newer_than_the_events_it_heard():
    tracker = TeamTracker()
    at = "2026-12-04T10:00:0{}Z"
    tracker.process(
        [CallStatus.model_validate({"at": at.format(1), "provider": "vapi", "call_id": "c", "status": "in-progress"})]
    )
    tracker.process(
        [SpeechStarted.model_validate({"at": at.format(3), "provider": "vapi", "call_id": "c", "role": "user"})]
    )
    older = {"call_id": "c", "provider": "vapi", "status": "in-progress", "last_at": at.format(2), "speaking": []}
    tracker.update([older, {**older, "call_id": "d", "controllable": True}])
    state = tracker.get("c")
    assert state is not None and state.speaking == {"user"}  # the events were ahead of that summary
    assert tracker.get("d") is not None and tracker.get("d").control_url is not None  # a call heard of only there
    newer = {**older, "status": "ended", "ended_reason": "customer-ended-call", "last_at": at.format(5), "barge_ins": 2}
    tracker.update([newer])
    assert tracker.get("c") is state  # the same call, brought up to date (the pane keeps its row)
    assert (state.status, state.ended_reason, state.barge_ins, state.speaking) == (
        "ended",
        "customer-ended-call",
        2,
        set(),
    )
