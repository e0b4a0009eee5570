"""The Retell and Twilio dialects of the simulator against the real receiver, over loopback:
signed webhooks -> providers -> tracker -> SQLite, read back through the history queries."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from console.commands.simulate import register as add_simulate_parser
from console.core.policy import Policy, ToolRule
from console.providers.retell.normalize import epoch_to_dt
from console.simulator import load_scenario
from console.simulator.cli import run_simulate, simulate, simulate_report
from console.simulator.common import DeliveryRecord, DialectWebhook
from console.simulator.retell import RetellCallPlayer, retell_endpoints, retell_function_reply_problem
from console.simulator.scenarios import parse_scenario
from console.simulator.twilio import twilio_endpoints
from console.store import queries
from tests.helpers.secrets import PUBLIC_URL, RETELL_KEY, TWILIO_TOKEN

OVERRIDE = Policy(tools={"default": ToolRule(action="override", result='{"ok": true}')})


@pytest.fixture
async def receiver(start_receiver):
    service, _ = await start_receiver(policy=OVERRIDE)
    return service


async def _calls(service, provider: str) -> list[dict]:
    await asyncio.sleep(0.05)  # the receiver's group commit
    return await queries.list_calls(service.store, limit=100, provider=provider)


def _all_2xx(records: list[DeliveryRecord]) -> None:
    problems = [r for r in records if r.error or r.bad_reply or r.status is None or not 200 <= r.status < 300]
    assert not problems, problems[:3]


# ---------------------------------------------------------------- Retell


async def test_retell_simulation_lands_in_history(receiver):
    records, elapsed = await simulate(
        receiver.server.url,
        load_scenario("booking"),
        calls=3,
        concurrency=3,
        speed=60,
        provider="retell",
        secret=RETELL_KEY,
    )
    report, ok = simulate_report(records, 3, elapsed)
    assert ok, report
    _all_2xx(records)
    assert "tool-call replies of the wrong shape: 0" in report and "tool calls p50" in report
    kinds = {r.type for r in records}
    assert {"call_started", "transcript_updated", "function_call", "call_ended", "call_analyzed"} <= kinds
    assert sum(r.type == "function_call" for r in records) == 3 * 3  # booking: 3 functions a call

    calls = await _calls(receiver, "retell")
    assert len(calls) == 3 and all(c["status"] == "ended" for c in calls)
    counts = await queries.counts(receiver.store)
    assert counts["deliveries"] == len(records) and counts["rejected_requests"] == 0

    detail = await queries.get_call(receiver.store, calls[0]["call_id"])
    assert detail is not None
    call = detail["call"]
    assert call["ended_reason"] == "user_hangup"
    assert call["summary"] == load_scenario("booking").summary
    assert call["duration_s"] is not None and call["cost"] is not None
    events = detail["events"]
    kinds = {e["kind"] for e in events}
    assert {"call.status", "transcript.final", "tool.requested", "tool.decided", "call.ended"} <= kinds
    finals = [(e["role"], e["text"]) for e in events if e["kind"] == "transcript.final"]
    assert ("user", "Hi, I'd like to book a cleaning for next Tuesday.") in finals
    # The barge-in: the caller cuts in after six words, the agent stops two words later; the
    # receiver derives it from the word times, with the words the caller talked over.
    assert ("assistant", "Sure, I can help with that. Before I") in finals
    barge_ins = [e for e in events if e["kind"] == "barge_in"]
    assert [(b["cut_text"], b["source"]) for b in barge_ins] == [("Before I", "word-timings")]
    assert call["barge_ins"] == 1
    # Repeated transcript_updated deliveries do not repeat the finals.
    assert len(finals) == len(set(finals))
    # The agent spoke the receiver's actual answers.
    assistant = [text for role, text in finals if role == "assistant"]
    assert 'You\'re booked: {"ok": true}.' in assistant, assistant
    assert detail["tool_calls"] and all(t["by"] == "rule" for t in detail["tool_calls"])
    assert {t["name"] for t in detail["tool_calls"]} == {"check_availability", "lookup_patient", "book_appointment"}


async def test_retell_signature_is_the_platform_s(receiver):
    """A wrong key is refused by the receiver (and reported as failed deliveries)."""
    records, elapsed = await simulate(
        receiver.server.url + "/webhook/retell",
        load_scenario("silent-caller"),
        calls=1,
        concurrency=1,
        speed=200,
        provider="retell",
        secret="not-the-key",
    )
    report, ok = simulate_report(records, 1, elapsed)
    assert not ok and "HTTP 401" in report
    counts = await queries.counts(receiver.store)
    assert counts["deliveries"] == 0 and counts["rejected_requests"] == len(records)


async def test_retell_bodies_match_the_receiver_fixtures_shape(tmp_path):
    """What the player sends, captured by a stub target: events, call fields, word timings."""
    seen: list[tuple[str, dict, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, json.loads(request.content), request.headers["x-retell-signature"]))
        if request.url.path.endswith("/function"):
            return httpx.Response(200, json={"result": "slot at 9:30"})
        return httpx.Response(204)

    scenario = parse_scenario(
        {
            "name": "t",
            "summary": "S.",
            "steps": [
                {"kind": "say", "role": "assistant", "text": "Hello there, how can I help?", "pause": 0},
                {"kind": "say", "role": "user", "text": "A cleaning please.", "pause": 0},
                {
                    "kind": "tools",
                    "calls": [{"name": "check_availability", "arguments": {"day": "tue"}}],
                    "say": "I have {check_availability}.",
                    "pause": 0,
                },
            ],
        },
        "test",
    )
    records: list[DeliveryRecord] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        player = RetellCallPlayer(
            scenario,
            retell_endpoints("http://recv.test/"),
            DialectWebhook(client, records.append),
            api_key=RETELL_KEY,
            speed=100,
        )
        await player.run()
    paths = [path for path, _, _ in seen]
    events = [body.get("event", "function") for _, body, _ in seen]
    assert events[0] == "call_started" and events[-2:] == ["call_ended", "call_analyzed"]
    assert "function" in events and paths[events.index("function")] == "/webhook/retell/function"
    assert all(sig.startswith("v=") and ",d=" in sig for _, _, sig in seen)
    function = next(body for _, body, _ in seen if "name" in body)
    assert function["name"] == "check_availability" and function["args"] == {"day": "tue"}
    assert function["call"]["call_status"] == "ongoing" and len(function["call"]["transcript_object"]) == 3
    ended = next(body for _, body, _ in seen if body.get("event") == "call_ended")["call"]
    assert ended["disconnection_reason"] == "user_hangup" and ended["duration_ms"] >= 0
    assert ended["call_cost"]["combined_cost"] >= 0 and epoch_to_dt(ended["start_timestamp"]) is not None
    utterances = ended["transcript_object"]
    assert [u["role"] for u in utterances] == ["agent", "user", "agent", "agent"]
    assert utterances[-1]["content"] == "I have slot at 9:30."
    starts = [w["start"] for u in utterances for w in u["words"]]
    assert starts == sorted(starts) and all(w["end"] > w["start"] for u in utterances for w in u["words"])
    roles = [item["role"] for item in ended["transcript_with_tool_calls"]]
    assert "tool_call_invocation" in roles and "tool_call_result" in roles
    analyzed = next(body for _, body, _ in seen if body.get("event") == "call_analyzed")["call"]
    assert analyzed["call_analysis"]["call_summary"] == "S."
    assert not any(r.error or r.bad_reply for r in records)


def test_retell_function_reply_shape_problems():
    assert retell_function_reply_problem(httpx.Response(200, json={"result": "ok"})) is None
    assert "non-2xx" in (retell_function_reply_problem(httpx.Response(500)) or "")
    too_long = retell_function_reply_problem(httpx.Response(200, text="x" * 15_001)) or ""
    assert "15,001" in too_long and "15,000" in too_long


# ---------------------------------------------------------------- Twilio


async def test_twilio_simulation_lands_in_history(receiver):
    # The receiver checks signatures against its public URL, so sign with that.
    records, elapsed = await simulate(
        receiver.server.url,
        load_scenario("booking"),
        calls=3,
        concurrency=3,
        speed=80,
        provider="twilio",
        secret=TWILIO_TOKEN,
        public_url=PUBLIC_URL,
    )
    report, ok = simulate_report(records, 3, elapsed)
    assert ok, report
    _all_2xx(records)
    assert [r.type for r in records if r.call_id == records[0].call_id] == [
        "voice",
        "status:initiated",
        "status:ringing",
        "status:in-progress",
        "status:completed",
    ]
    calls = await _calls(receiver, "twilio")
    assert len(calls) == 3 and all(c["status"] == "ended" for c in calls)
    counts = await queries.counts(receiver.store)
    assert counts["deliveries"] == len(records) and counts["rejected_requests"] == 0
    detail = await queries.get_call(receiver.store, calls[0]["call_id"])
    assert detail is not None and detail["call"]["ended_reason"] == "completed"
    assert detail["call"]["duration_s"] is not None
    statuses = [e["status"] for e in detail["events"] if e["kind"] == "call.status"]
    assert statuses[-1] == "ended" and "in-progress" in statuses


async def test_twilio_signed_over_the_loopback_url_is_refused(receiver):
    """Without --public-url the signature covers the target; this receiver has a public URL."""
    records, _ = await simulate(
        receiver.server.url,
        load_scenario("silent-caller"),
        calls=1,
        concurrency=1,
        speed=200,
        provider="twilio",
        secret=TWILIO_TOKEN,
    )
    assert records and all(r.status == 403 for r in records)


@pytest.mark.e2e
async def test_twilio_media_stream_energy_follows_the_speaker(receiver):
    scenario = parse_scenario(
        {
            "name": "stream",
            "words_per_second": 2.5,
            "steps": [
                {
                    "kind": "say",
                    "role": "assistant",
                    "text": "Thanks for calling, how can I help you today?",
                    "pause": 0.2,
                },
                {
                    "kind": "say",
                    "role": "user",
                    "text": "I would like to book a cleaning for next week please.",
                    "pause": 0.5,
                },
                {"kind": "end", "reason": "customer-ended-call", "pause": 0.5},
            ],
        },
        "test",
    )
    records, elapsed = await simulate(
        receiver.server.url + "/webhook/twilio/voice",
        scenario,
        calls=1,
        concurrency=1,
        speed=4,
        provider="twilio",
        secret=TWILIO_TOKEN,
        public_url=PUBLIC_URL,
        media_stream=True,
    )
    report, ok = simulate_report(records, 1, elapsed)
    assert ok, report
    assert any(r.type == "media-stream" and r.status == 101 for r in records)
    await asyncio.sleep(0.1)
    call_id = next(r.call_id for r in records)
    detail = await queries.get_call(receiver.store, call_id)
    assert detail is not None
    speech = [(e["kind"], e["role"]) for e in detail["events"] if e["kind"].startswith("speech.")]
    assert ("speech.started", "assistant") in speech and ("speech.started", "user") in speech
    started = [role for kind, role in speech if kind == "speech.started"]
    assert started.index("assistant") < started.index("user")
    assert {e["type"] for e in detail["events"] if e["kind"] == "raw"} >= {"stream.start", "stream.stop"}


# ---------------------------------------------------------------- targets and the command


def test_target_is_a_base_url_or_a_route():
    for target in ("http://h:1", "http://h:1/", "http://h:1/webhook/retell", "http://h:1/webhook/retell/function"):
        assert retell_endpoints(target).webhook == "http://h:1/webhook/retell"
        assert retell_endpoints(target).function == "http://h:1/webhook/retell/function"
    prefixed = twilio_endpoints("https://h/app/webhook/twilio/status")
    assert prefixed.voice == "https://h/app/webhook/twilio/voice" and prefixed.stream == "wss://h/app/stream/twilio"
    assert prefixed.signed_url(prefixed.status) == "https://h/app/webhook/twilio/status"
    public = twilio_endpoints("http://127.0.0.1:9/", "https://voice.example.test/")
    assert public.signed_url(public.voice) == "https://voice.example.test/webhook/twilio/voice"
    with pytest.raises(ValueError):
        retell_endpoints("ftp://h/")


async def _run(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers(dest="command"))
    return await run_simulate(parser.parse_args(["simulate", *argv]))


async def test_simulate_command_for_retell_and_twilio(receiver, monkeypatch, capsys):
    monkeypatch.setenv("VOICE_CONSOLE_RETELL_API_KEY", RETELL_KEY)
    monkeypatch.setenv("VOICE_CONSOLE_TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    base = receiver.server.url
    assert (
        await _run(
            [
                "--target",
                base,
                "--provider",
                "retell",
                "--calls",
                "2",
                "--concurrency",
                "2",
                "--speed",
                "80",
                "--scenario",
                "transfer",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "2 calls" in out and "failed deliveries: 0" in out and "call_started" in out
    assert f"posting to the console's retell routes: {base}/webhook/retell, {base}/webhook/retell/function" in err
    assert (
        await _run(
            [
                "--target",
                base + "/webhook/twilio/status",
                "--provider",
                "twilio",
                "--public-url",
                PUBLIC_URL,
                "--speed",
                "80",
            ]
        )
        == 0
    )
    assert "status:completed" in capsys.readouterr().out
    retell = await _calls(receiver, "retell")
    assert len(retell) == 2 and all(c["ended_reason"] == "call_transfer" for c in retell)
    assert await _run(["--target", base, "--provider", "retell", "--public-url", PUBLIC_URL]) == 2
    assert await _run(["--target", "not-a-url", "--provider", "twilio"]) == 2
