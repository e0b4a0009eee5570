"""`voice-console replay` and the pacing shared with the TUI.

The source history is made by the real simulator (Vapi, Retell and Twilio
dialects) against a real receiver; the replay re-posts it over real sockets to
a second receiver with its own database, which checks every signature.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from console.cli import build_parser, main
from console.commands import settings_from_args as _settings_from_args
from console.commands.history import run_history
from console.commands.replay import run_replay
from console.core.policy import Policy, ToolRule
from console.services.replay import (
    REPLAY_MARK,
    ReplayClock,
    next_speed,
    paced,
    stored_deliveries,
    stored_events,
)
from console.simulator import load_scenario
from console.simulator.cli import simulate
from console.store import queries
from console.store.db import Store
from tests.helpers.receiver import start_service, vapi_headers
from tests.helpers.secrets import PAYLOADS, PUBLIC_URL, RETELL_KEY, TWILIO_TOKEN, VAPI_SECRET

SECRETS = (VAPI_SECRET, RETELL_KEY, TWILIO_TOKEN)
OVERRIDE = Policy(tools={"default": ToolRule(action="override", result='{"ok": true}')})


@dataclass(frozen=True)
class Source:
    db: Path
    calls: dict[str, str]  # provider -> call id


async def _record_source(directory: Path) -> Source:
    """One booking call per provider, through the real simulator and receiver."""
    service, _ = await start_service(directory, policy=OVERRIDE)
    try:
        booking = load_scenario("booking")
        await asyncio.gather(
            simulate(
                service.server.url + "/webhook/vapi",
                booking,
                calls=1,
                concurrency=1,
                speed=20,
                settings=service.settings,
                secret=VAPI_SECRET,
            ),
            simulate(
                service.server.url, booking, calls=1, concurrency=1, speed=40, provider="retell", secret=RETELL_KEY
            ),
            simulate(
                service.server.url,
                booking,
                calls=1,
                concurrency=1,
                speed=40,
                provider="twilio",
                secret=TWILIO_TOKEN,
                public_url=PUBLIC_URL,
            ),
        )
        await asyncio.sleep(0.1)  # the last group commit
        calls = {c["provider"]: c["call_id"] for c in await queries.list_calls(service.store)}
    finally:
        await service.close()
    assert set(calls) == {"vapi", "retell", "twilio"}
    return Source(directory / "history.db", calls)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Source:
    # Built once: a sync fixture runs outside the tests' event loops.
    return asyncio.run(_record_source(tmp_path_factory.mktemp("source")))


@pytest.fixture
def signing_env(monkeypatch):
    monkeypatch.setenv("VOICE_CONSOLE_VAPI_WEBHOOK_SECRET", VAPI_SECRET)
    monkeypatch.setenv("VOICE_CONSOLE_RETELL_API_KEY", RETELL_KEY)
    monkeypatch.setenv("VOICE_CONSOLE_TWILIO_AUTH_TOKEN", TWILIO_TOKEN)


async def replay(*argv: str) -> tuple[int, str, str]:
    """The command as `voice-console replay ...` runs it, in this test's loop."""
    args = build_parser().parse_args(["replay", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = await run_replay(args, _settings_from_args(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def history(*argv: str) -> tuple[int, str, str]:
    """`voice-console history ...` as the command runs it, in this test's loop."""
    args = build_parser().parse_args(["history", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = await run_history(args, _settings_from_args(args).db_path, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def sent_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("[")]


def as_platform_sent(detail: dict) -> list[str]:
    """The call's events minus the tool decisions (those are the receiving console's own),
    without their times (a Retell function call is dated when it is received)."""
    return sorted(
        json.dumps({k: v for k, v in e.items() if k != "at"}, sort_keys=True)
        for e in detail["events"]
        if e["kind"] != "tool.decided"
    )


@pytest.mark.parametrize("provider", ["vapi", "retell", "twilio"])
async def test_replay_into_a_second_receiver_is_accepted_and_recorded(source, signing_env, tmp_path, provider):
    call_id = source.calls[provider]
    target, _ = await start_service(tmp_path / "second")
    try:
        code, out, err = await replay(
            call_id, "--to", target.server.url, "--speed", "10", "--public-url", PUBLIC_URL, "--db", str(source.db)
        )
        async with await Store.open(source.db) as original:
            deliveries = await stored_deliveries(original, call_id)
            before = await queries.get_call(original, call_id)
        assert code == 0, out + err
        lines = [line for line in out.splitlines() if line.startswith("[")]
        assert len(lines) == len(deliveries) > 3
        assert all("-> 2" in line for line in lines), lines
        assert f"{len(deliveries)} accepted (2xx), 0 not" in out.splitlines()[-1]
        await asyncio.sleep(0.1)  # the target's group commit
        counts = await queries.counts(target.store)
        assert counts["rejected_requests"] == 0  # every re-signed delivery passed the receiver's check
        assert counts["deliveries"] == len(deliveries)
        # Recorded as a replay: under the call id marked ↻, never as the platform's own call.
        assert await queries.get_call(target.store, call_id) is None
        after = await queries.get_call(target.store, REPLAY_MARK + call_id)
        assert after is not None and after["call"]["status"] == "ended"
        after["events"] = [{**e, "call_id": e["call_id"].removeprefix(REPLAY_MARK)} for e in after["events"]]
        # The same call, event for event, as the second console normalized it.
        assert as_platform_sent(after) == as_platform_sent(before)
        assert {"call.status", "transcript.final"} & {e["kind"] for e in after["events"]}
        assert not any(secret in out + err for secret in SECRETS)
    finally:
        await target.close()


# One call as Vapi sends it: every message carries call.monitor, whose URLs the history masks,
# so a stored body is not the body received and a replay of it is no duplicate of the original.
VAPI_CALL = (
    "status-update.ringing",
    "status-update.in-progress",
    "transcript.assistant-final",
    "speech-update.user-started",
    "transcript.user-final",
    "model-output",
    "status-update.ended",
    "end-of-call-report",
)


async def test_replaying_into_the_same_receiver_twice_never_doubles_the_call(signing_env, tmp_path):
    """The replayer marks its deliveries (X-Voice-Console-Replay); the receiver records them
    apart (under ↻ + the call id), they are never replayed again, and `history show/export`
    leave them out unless --include-replays asks for them."""
    db = tmp_path / "history.db"
    receiver, _ = await start_service(tmp_path)  # one console: it records the call, then its replays
    try:
        async with httpx.AsyncClient(base_url=receiver.server.url) as client:
            for name in VAPI_CALL:
                body = (PAYLOADS / "vapi" / f"{name}.json").read_bytes()
                response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(receiver, body))
                assert response.status_code == 200, response.text
        call_id = json.loads(body)["message"]["call"]["id"]
        await asyncio.sleep(0.1)  # the receiver's group commit
        code, before, _ = await history("show", call_id, "--json", "--db", str(db))
        assert code == 0
        own = json.loads(before)
        sent = []
        for _ in range(2):
            code, out, err = await replay(
                call_id, "--to", receiver.server.url, "--speed", "50", "--public-url", PUBLIC_URL, "--db", str(db)
            )
            assert code == 0, out + err
            sent.append(len(sent_lines(out)))
            await asyncio.sleep(0.1)
        assert sent == [len(VAPI_CALL)] * 2  # the second replay sends what the first did

        # The call's own record is as the platform made it.
        assert (await history("show", call_id, "--json", "--db", str(db)))[1] == before
        code, table, _ = await history("show", call_id, "--db", str(db))
        assert code == 0 and "↻" not in table.split("\n\n")[1]
        assert "events from replays of this call not shown; use --include-replays" in table
        _, exported, _ = await history("export", "--call", call_id, "--db", str(db))
        assert len(exported.splitlines()) == len(own["events"])

        # Asked for, both replays show, marked.
        code, shown, _ = await history("show", call_id, "--json", "--include-replays", "--db", str(db))
        merged = json.loads(shown)
        replayed = [e for e in merged["events"] if e.get("replay")]
        assert code == 0 and Counter(e["kind"] for e in replayed) == Counter(e["kind"] for e in own["events"] * 2)
        assert {e["call_id"] for e in replayed} == {REPLAY_MARK + call_id}
        assert [e for e in merged["events"] if not e.get("replay")] == own["events"]
        _, table, _ = await history("show", call_id, "--include-replays", "--db", str(db))
        assert "↻ call.status" in table
        _, exported, _ = await history("export", "--call", call_id, "--include-replays", "--db", str(db))
        assert len(exported.splitlines()) == len(merged["events"])
        _, everything, _ = await history("export", "--db", str(db))
        assert len(everything.splitlines()) == len(own["events"])

        # A replay's record is never replayed again.
        code, out, err = await replay(REPLAY_MARK + call_id, "--to", receiver.server.url, "--db", str(db))
        assert code == 1 and "not replayed again" in err and not sent_lines(out)
    finally:
        await receiver.close()


async def test_the_replay_header_does_not_bypass_the_signature_check(tmp_path):
    receiver, _ = await start_service(tmp_path)
    body = json.dumps({"message": {"type": "status-update", "status": "in-progress", "call": {"id": "c-forged"}}})
    try:
        async with httpx.AsyncClient(base_url=receiver.server.url) as client:
            response = await client.post(
                "/webhook/vapi",
                content=body,
                headers={"content-type": "application/json", "x-vapi-secret": "wrong", "x-voice-console-replay": "r-1"},
            )
        counts = await queries.counts(receiver.store)
    finally:
        await receiver.close()
    assert response.status_code == 401
    assert counts["deliveries"] == 0 and counts["rejected_requests"] == 1


async def test_replay_signs_for_a_receiver_that_checks_vapi_hmac_over_the_url(source, signing_env, tmp_path):
    """The receiver checks an HMAC over method, URL, timestamp and body: the replay signs
    the same way, from the settings file it is given (as the platform is configured)."""
    hmac = {
        "auth": "hmac",
        "hmac": {
            "payload_format": "{method} {url} {timestamp}.{body}",
            "signature_encoding": "base64",
            "signature_prefix": "v1=",
        },
    }
    target, _ = await start_service(tmp_path / "second", vapi={"webhook": hmac})
    config = tmp_path / "settings.toml"
    config.write_text(
        '[vapi.webhook]\nauth = "hmac"\n[vapi.webhook.hmac]\n'
        'payload_format = "{method} {url} {timestamp}.{body}"\n'
        'signature_encoding = "base64"\nsignature_prefix = "v1="\n'
    )
    try:
        # This receiver has a public URL (a tunnel's): the signed URL must be that one.
        code, out, err = await replay(
            source.calls["vapi"],
            "--to",
            target.server.url,
            "--speed",
            "20",
            "--public-url",
            PUBLIC_URL,
            "--config",
            str(config),
            "--db",
            str(source.db),
        )
        await asyncio.sleep(0.1)
        counts = await queries.counts(target.store)
    finally:
        await target.close()
    assert code == 0, out + err
    assert counts["rejected_requests"] == 0 and counts["deliveries"] > 3
    assert VAPI_SECRET not in out + err


async def test_replay_keeps_the_original_timing_scaled_by_speed(source, signing_env, tmp_path):
    call_id = source.calls["vapi"]
    async with await Store.open(source.db) as original:
        deliveries = await stored_deliveries(original, call_id)
    span = deliveries[-1].received_at - deliveries[0].received_at
    assert span > 1.0, "the source call is long enough to measure"
    target, _ = await start_service(tmp_path / "second")
    try:
        started = time.perf_counter()
        code, out, _ = await replay(call_id, "--to", target.server.url, "--speed", "2", "--db", str(source.db))
        elapsed = time.perf_counter() - started
    finally:
        await target.close()
    assert code == 0, out
    expected = span / 2
    assert expected * 0.8 <= elapsed <= expected + 3.0, (elapsed, expected)
    # Each line shows when the delivery was due in the original call.
    offsets = [float(line.split("+", 1)[1].split("s", 1)[0]) for line in out.splitlines() if line.startswith("[")]
    assert offsets == sorted(offsets) and offsets[-1] == pytest.approx(span, abs=0.01)


async def test_a_wrong_secret_is_refused_and_exits_1_without_printing_it(source, tmp_path, monkeypatch):
    wrong = "not-the-vapi-secret-0451"
    monkeypatch.setenv("VOICE_CONSOLE_VAPI_WEBHOOK_SECRET", wrong)
    target, _ = await start_service(tmp_path / "second")
    try:
        code, out, err = await replay(
            source.calls["vapi"], "--to", target.server.url, "--speed", "50", "--db", str(source.db)
        )
        counts = await queries.counts(target.store)
    finally:
        await target.close()
    assert code == 1
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert lines and all("-> 401" in line for line in lines)
    assert "does not match" in lines[0]  # the receiver's reason, one line
    assert counts["deliveries"] == 0 and counts["rejected_requests"] == len(lines)
    assert wrong not in out + err and VAPI_SECRET not in out + err


async def test_missing_secret_warns_and_the_refusal_exits_1(source, tmp_path):
    target, _ = await start_service(tmp_path / "second")
    try:
        code, out, err = await replay(
            source.calls["retell"], "--to", target.server.url, "--speed", "50", "--db", str(source.db)
        )
    finally:
        await target.close()
    assert code == 1
    assert "no Retell API key (set VOICE_CONSOLE_RETELL_API_KEY" in err
    assert all("-> 401" in line for line in out.splitlines() if line.startswith("["))


def test_unknown_call_id_exits_1_with_a_clear_message(source, capsys):
    """Not found at run time: 1, as in `history show` (2 is for bad usage)."""
    code = main(["replay", "no-such-call", "--to", "http://127.0.0.1:9", "--db", str(source.db)])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert f"no call with id no-such-call in {source.db}" in captured.err
    assert main(["history", "show", "no-such-call", "--db", str(source.db)]) == 1


def test_a_missing_history_exits_1_as_in_history(capsys):
    assert main(["replay", "call-x", "--to", "http://127.0.0.1:9", "--db", "/nonexistent/h.db"]) == 1
    assert "no history database at /nonexistent/h.db" in capsys.readouterr().err
    assert main(["history", "show", "call-x", "--db", "/nonexistent/h.db"]) == 1


def test_bad_target_url_exits_2(capsys):
    assert main(["replay", "call-x", "--to", "ftp://example.test"]) == 2
    assert "--to must be an http:// or https:// URL" in capsys.readouterr().err


@pytest.mark.parametrize("speed", ["0", "-1", "fast", "nan"])
def test_bad_speed_is_a_usage_error(capsys, speed):
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", "call-x", "--to", "http://127.0.0.1:9", "--speed", speed])
    assert exit_info.value.code == 2
    assert "--speed" in capsys.readouterr().err


async def test_an_unreachable_target_stops_at_once_with_exit_1(source, signing_env, unused_tcp_port):
    started = time.perf_counter()
    code, out, err = await replay(
        source.calls["vapi"], "--to", f"http://127.0.0.1:{unused_tcp_port}", "--db", str(source.db)
    )
    assert code == 1 and "cannot reach" in err
    assert time.perf_counter() - started < 5  # not the whole call at 1x
    assert len([line for line in out.splitlines() if line.startswith("[")]) == 1


# --- what the TUI replays: stored events, paced ---------------------------------------------------


async def test_stored_events_come_back_in_time_order(source):
    async with await Store.open(source.db) as store:
        events = [e async for e in stored_events(store, source.calls["vapi"], page=7)]
        detail = await queries.get_call(store, source.calls["vapi"])
    assert [json.loads(e.model_dump_json())["kind"] for e in events] == [e["kind"] for e in detail["events"]]
    assert [e.at for e in events] == sorted(e.at for e in events)


async def test_clock_speed_pause_and_stop():
    clock = ReplayClock(10)
    started = time.monotonic()
    assert await clock.wait_until(1.0)  # 1 s of call time at 10x
    assert 0.08 <= time.monotonic() - started < 0.6
    clock.pause()
    held = clock.position

    async def resume_later() -> None:
        await asyncio.sleep(0.2)
        assert clock.position == held  # time stands still while paused
        clock.set_speed(5)
        clock.resume()

    resumer = asyncio.create_task(resume_later())
    started = time.monotonic()
    assert await clock.wait_until(held + 0.5)  # 0.5 s more at 5x, after the pause
    waited = time.monotonic() - started
    await resumer
    assert 0.25 <= waited < 0.9
    stopper = asyncio.get_running_loop().call_later(0.05, clock.stop)
    assert not await clock.wait_until(1000)
    stopper.cancel()
    assert clock.stopped


async def test_paced_yields_on_offsets_from_the_first_item():
    clock = ReplayClock(20)
    started = time.monotonic()
    seen = []
    async for at in paced([100.0, 100.0, 99.0, 102.0], lambda x: x, clock):
        seen.append((at, time.monotonic() - started))
    assert [at for at, _ in seen] == [100.0, 100.0, 99.0, 102.0]
    assert seen[2][1] < 0.05  # earlier than the first: at once
    assert 0.08 <= seen[3][1] < 0.6  # 2 s of call time at 20x


def test_speed_steps():
    assert [next_speed(s, 1) for s in (1, 2, 5, 10)] == [2, 5, 10, 10]
    assert [next_speed(s, -1) for s in (1, 2, 5, 10)] == [1, 1, 2, 5]
    assert next_speed(3, 1) == 5 and next_speed(3, -1) == 2
    with pytest.raises(ValueError):
        ReplayClock(0)


def test_signer_refreshes_twilio_body_hash_and_signs_the_public_url():
    import hashlib

    from console.config import load_settings
    from console.providers.twilio.auth import signature_matches
    from console.services.replay import DeliverySigner, StoredDelivery

    body = b'{"CallSid": "CA1", "CallStatus": "completed"}'
    delivery = StoredDelivery(
        1,
        0.0,
        "twilio",
        "twilio.status",
        "POST",
        "/webhook/twilio/status?bodySHA256=stale&x=1",
        "status",
        "application/json",
        body,
    )
    signer = DeliverySigner(load_settings(env={}), {"twilio_auth_token": TWILIO_TOKEN}, PUBLIC_URL + "/")
    path, headers = signer.sign(delivery, body)
    assert path == f"/webhook/twilio/status?bodySHA256={hashlib.sha256(body).hexdigest()}&x=1"
    assert signature_matches(PUBLIC_URL + path, [], headers["x-twilio-signature"], TWILIO_TOKEN)
    assert signer.missing("twilio") is None
    unsigned = DeliverySigner(load_settings(env={}), {}, PUBLIC_URL)
    assert unsigned.sign(delivery, body)[1] == {}
    assert "VOICE_CONSOLE_TWILIO_AUTH_TOKEN" in unsigned.missing("twilio")
