"""Retell provider: signatures, webhook normalization, call_inbound and custom functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from console.config import RetellCallInboundSettings, RetellSettings
from console.core.calls import CallTracker
from console.core.events import (
    BargeIn,
    CallEnded,
    CallStatus,
    Raw,
    SpeechStarted,
    SpeechStopped,
    ToolRequested,
    TranscriptFinal,
    event_from_dict,
    event_to_dict,
)
from console.core.http_types import Request
from console.core.tools import ToolOutcome
from console.providers.base import BadPayload, WebhookProvider
from console.providers.retell import FUNCTION_REPLY_LIMIT, RetellProvider, sign_retell, verify_retell_signature
from tests.helpers.secrets import RETELL_KEY

PAYLOADS = Path(__file__).parent / "payloads" / "retell"
NOW_MS = 1785772900000  # a little after the fixture calls (2026-08-03T16:01:40Z)
RECEIVED = datetime(2026, 8, 3, 16, 1, 40, tzinfo=UTC)
CALL_ID = "call_7f3c2a9e4b1d8e6f0a2c4b7d9e1f"
CALL_START = datetime(2026, 8, 3, 16, 0, 0, tzinfo=UTC)


def fixture(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def provider(
    settings: RetellSettings | None = None, key: str | None = RETELL_KEY, now_ms: int = NOW_MS
) -> RetellProvider:
    return RetellProvider(settings or RetellSettings(), key, clock=lambda: now_ms / 1000)


def request(
    body: bytes, target: str = "/webhook/retell", *, signature: str | None = None, method: str = "POST"
) -> Request:
    headers = [("host", "127.0.0.1:8765"), ("content-type", "application/json")]
    if signature is not None:
        headers.append(("x-retell-signature", signature))
    return Request(method=method, target=target, headers=tuple(headers), body=body)


def parse(name: str, p: RetellProvider | None = None, target: str = "/webhook/retell", route: str = "retell"):
    return (p or provider()).parse(route, request(fixture(name), target), RECEIVED)


def test_satisfies_the_provider_protocol() -> None:
    p: WebhookProvider = provider()
    assert p.name == "retell"


# -- signature ----------------------------------------------------------------------


def test_sdk_test_vector() -> None:
    body = b'{"event":"call_ended"}'
    header = sign_retell(body, "test-api-key", 1700000000000)
    assert header == "v=1700000000000,d=07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e"
    verdict = verify_retell_signature(body, header, "test-api-key", now_ms=1700000000000, skew_ms=300_000)
    assert verdict.ok and verdict.scheme == "retell-signature"


@pytest.mark.parametrize("name", sorted(p.name for p in PAYLOADS.glob("*.json")))
def test_every_fixture_verifies_over_its_raw_bytes(name: str) -> None:
    body = fixture(name)
    verdict = provider().verify("retell", request(body, signature=sign_retell(body, RETELL_KEY, NOW_MS - 1500)))
    assert verdict.ok, verdict.reason


def test_function_get_with_empty_body_signs_the_empty_string() -> None:
    req = request(
        b"", "/webhook/retell/function?name=lookup", signature=sign_retell(b"", RETELL_KEY, NOW_MS), method="GET"
    )
    assert provider().verify("retell.function", req).ok


def _failures(body: bytes) -> dict[str, tuple[RetellProvider, Request]]:
    good = sign_retell(body, RETELL_KEY, NOW_MS)
    digest = good.split(",d=")[1]
    return {
        "missing": (provider(), request(body)),
        "no key configured": (provider(key=None), request(body, signature=good)),
        "wrong key": (provider(), request(body, signature=sign_retell(body, "key_someone_else", NOW_MS))),
        "tampered body": (provider(), request(body + b" ", signature=good)),
        "truncated digest": (provider(), request(body, signature=good[:-1])),
        "upper-case hex": (provider(), request(body, signature=f"v={NOW_MS},d={digest.upper()}")),
        "trailing junk": (provider(), request(body, signature=good + ",x=1")),
        "leading junk": (provider(), request(body, signature="t=1," + good)),
        "no timestamp": (provider(), request(body, signature=f"d={digest}")),
        "stale": (provider(), request(body, signature=sign_retell(body, RETELL_KEY, NOW_MS - 300_001))),
        "future-dated": (provider(), request(body, signature=sign_retell(body, RETELL_KEY, NOW_MS + 300_001))),
        "absurd timestamp": (provider(), request(body, signature=sign_retell(body, RETELL_KEY, 10**20))),
    }


@pytest.mark.parametrize("case", list(_failures(b"{}")))
def test_bad_signatures_fail_without_leaking_secrets(case: str) -> None:
    body = fixture("call_started.json")
    p, req = _failures(body)[case]
    verdict = p.verify("retell", req)
    assert not verdict.ok
    assert verdict.scheme == "retell-signature"
    assert verdict.reason
    expected_digest = sign_retell(body, RETELL_KEY, NOW_MS).split(",d=")[1]
    for secret in (RETELL_KEY, expected_digest, expected_digest[:16]):
        assert secret not in verdict.reason


def test_failure_reasons_say_what_is_wrong() -> None:
    body = fixture("call_started.json")
    reasons = {case: p.verify("retell", req).reason for case, (p, req) in _failures(body).items()}
    assert "VOICE_CONSOLE_RETELL_API_KEY" in reasons["no key configured"]
    assert "missing" in reasons["missing"]
    assert "malformed" in reasons["truncated digest"]
    assert "old" in reasons["stale"]
    assert "future" in reasons["future-dated"]
    assert "does not match" in reasons["wrong key"]


@pytest.mark.parametrize("offset_ms", [300_000, -300_000, 0])
def test_exactly_five_minutes_either_way_passes(offset_ms: int) -> None:
    body = fixture("call_started.json")
    req = request(body, signature=sign_retell(body, RETELL_KEY, NOW_MS - offset_ms))
    assert provider().verify("retell", req).ok


# -- call events ---------------------------------------------------------------------


def test_call_started() -> None:
    inbound = parse("call_started.json")
    assert inbound.provider == "retell"
    assert inbound.message_type == "call_started"
    assert inbound.call_id == CALL_ID
    assert inbound.at == CALL_START
    assert inbound.events == [CallStatus(at=CALL_START, provider="retell", call_id=CALL_ID, status="in-progress")]
    assert inbound.reply is None and inbound.tool_batch is None
    assert inbound.dedupe_key == f"retell:call_started:{CALL_ID}"
    assert inbound.extra["from_number"] == "+14155550142"
    assert inbound.extra["direction"] == "inbound"


def test_demo_data_key_and_event_timestamp_are_tolerated() -> None:
    inbound = parse("call_started_data_key.json")
    assert inbound.call_id == CALL_ID
    assert inbound.at == CALL_START + timedelta(milliseconds=180)  # event_timestamp wins
    assert [type(e) for e in inbound.events] == [CallStatus]
    assert inbound.events[0].at == CALL_START  # the status is dated by start_timestamp


def test_call_ended_with_transcript() -> None:
    inbound = parse("call_ended.json")
    end = CALL_START + timedelta(milliseconds=28_680)
    assert inbound.at == end
    status, ended, *rest = inbound.events
    assert status == CallStatus(at=end, provider="retell", call_id=CALL_ID, status="ended", ended_reason="user_hangup")
    assert isinstance(ended, CallEnded)
    assert ended.reason == "user_hangup"
    assert ended.duration_s == pytest.approx(28.68)
    assert ended.cost == pytest.approx(0.0339)  # 3.39 cents -> dollars
    assert ended.summary is None

    finals = [e for e in rest if isinstance(e, TranscriptFinal)]
    assert [(f.role, f.text[:12]) for f in finals] == [
        ("assistant", "Hi, thanks f"),
        ("user", "Hi, I'd like"),
        ("assistant", "Sure, let me"),
        ("assistant", "I have nine "),
        ("user", "Two PM, plea"),
        ("assistant", "You're booke"),
        ("user", "Thanks, bye."),
    ]
    assert finals[0].at == CALL_START + timedelta(seconds=0.52)  # call start + first word
    assert finals[1].at == CALL_START + timedelta(seconds=5.845)
    assert all(f.call_id == CALL_ID for f in finals)

    raws = [e for e in rest if isinstance(e, Raw)]
    assert [r.type for r in raws] == ["tool_call_invocation", "tool_call_result"]
    assert raws[0].data["name"] == "check_availability"
    assert json.loads(raws[0].data["arguments"]) == {"date": "2026-08-11", "service": "cleaning"}


def test_call_ended_for_a_call_that_never_connected() -> None:
    inbound = parse("call_ended_dial_no_answer.json")
    status, ended = inbound.events
    assert status.status == "ended" and status.ended_reason == "dial_no_answer"
    assert ended.reason == "dial_no_answer" and ended.duration_s == 0


def test_call_analyzed_carries_the_summary() -> None:
    inbound = parse("call_analyzed.json")
    assert inbound.message_type == "call_analyzed"
    [ended] = inbound.events
    assert isinstance(ended, CallEnded)
    assert ended.summary == "The caller, Ana Muñoz, booked a teeth cleaning for Tuesday at 2 PM."
    assert ended.reason == "user_hangup"
    assert inbound.dedupe_key == f"retell:call_analyzed:{CALL_ID}"


def test_transcript_updated_finals_and_tool_items() -> None:
    p = provider()
    first = parse("transcript_updated.json", p)
    assert first.message_type == "transcript_updated"
    assert first.at == RECEIVED  # no timestamp describes this moment
    assert first.dedupe_key is None  # it repeats during the call
    finals = [e for e in first.events if isinstance(e, TranscriptFinal)]
    assert [f.role for f in finals] == ["assistant", "user", "assistant", "assistant"]
    assert [e.type for e in first.events if isinstance(e, Raw)] == ["tool_call_invocation", "tool_call_result"]

    # The next delivery repeats the transcript: finals again (the tracker de-duplicates
    # them), tool items only once per call.
    again = parse("transcript_updated.json", p)
    assert [e for e in again.events if isinstance(e, TranscriptFinal)] == finals
    assert not [e for e in again.events if isinstance(e, Raw)]

    # call_ended dates the same utterances identically, so they de-duplicate too.
    ended = parse("call_ended.json", p)
    ended_finals = {(f.role, f.at, f.text) for f in ended.events if isinstance(f, TranscriptFinal)}
    assert {(f.role, f.at, f.text) for f in finals} <= ended_finals
    assert not [e for e in ended.events if isinstance(e, Raw)]


def test_utterances_without_word_times_get_stable_times() -> None:
    body = {
        "event": "transcript_updated",
        "call": {
            "call_id": "call_x",
            "start_timestamp": 1785772800000,
            "transcript_object": [
                {"role": "agent", "content": "Hello?", "words": [{"word": "Hello?", "start": 1.0, "end": 1.5}]},
                {"role": "user", "content": "Hi there", "words": []},
                {"role": "transfer_target", "content": "Front desk, Maria speaking.", "words": []},
            ],
        },
    }
    raw = json.dumps(body).encode()
    p = provider()
    a = p.parse("retell", request(raw), RECEIVED)
    b = provider().parse("retell", request(raw), RECEIVED + timedelta(seconds=9))
    assert [e.at for e in a.events] == [e.at for e in b.events]
    assert a.events[1].at == CALL_START + timedelta(seconds=1.5)  # the previous utterance's end
    assert isinstance(a.events[2], Raw) and a.events[2].type == "transfer_target"


def _words(start: float, text: str, step: float = 0.5) -> list[dict]:
    return [
        {"word": word, "start": round(start + i * step, 3), "end": round(start + i * step + 0.4, 3)}
        for i, word in enumerate(text.split())
    ]


# The agent offers two times (a word every 0.5 s from 1.0 s); the caller answers at 3.2 s, while
# the agent's "or" is being said: what the caller talked over is the words after it, "two PM".
OFFER = {"role": "agent", "content": "I have nine AM or two PM", "words": _words(1.0, "I have nine AM or two PM")}
ANSWER = {"role": "user", "content": "Two PM please", "words": _words(3.2, "Two PM please")}
BOOKED = {"role": "agent", "content": "Booked for two", "words": _words(5.5, "Booked for two")}


def transcript_update(*utterances: dict, event: str = "transcript_updated") -> bytes:
    call = {"call_id": "call_b", "start_timestamp": 1785772800000, "transcript_object": list(utterances)}
    if event == "call_ended":
        call |= {"end_timestamp": 1785772808000, "disconnection_reason": "user_hangup"}
    return json.dumps({"event": event, "call": call}).encode()


def derived(inbound) -> list[tuple[str, float, str | None]]:
    """(kind and role, seconds from call start, cut text) of the speech events and barge-ins."""
    out = []
    for e in inbound.events:
        if isinstance(e, (SpeechStarted, SpeechStopped, BargeIn)):
            what = e.kind if isinstance(e, BargeIn) else f"{e.kind} {e.role}"
            out.append((what, round((e.at - CALL_START).total_seconds(), 3), getattr(e, "cut_text", None)))
    return out


def test_word_timings_give_speech_events_and_a_barge_in_with_what_the_caller_talked_over() -> None:
    p = provider()
    first = p.parse("retell", request(transcript_update(OFFER, ANSWER)), RECEIVED)
    # The caller's utterance is the last one: it may still grow, so only its barge-in is final.
    assert derived(first) == [
        ("speech.started assistant", 1.0, None),
        ("barge_in", 3.2, "two PM"),
        ("speech.stopped assistant", 4.4, None),
    ]
    [barge] = [e for e in first.events if isinstance(e, BargeIn)]
    assert barge.source == "word-timings" and barge.call_id == "call_b"

    # The next turn repeats the transcript: the caller's speech now, nothing twice.
    second = p.parse("retell", request(transcript_update(OFFER, ANSWER, BOOKED)), RECEIVED)
    assert derived(second) == [("speech.started user", 3.2, None), ("speech.stopped user", 4.6, None)]
    ended = p.parse("retell", request(transcript_update(OFFER, ANSWER, BOOKED, event="call_ended")), RECEIVED)
    assert derived(ended) == [("speech.started assistant", 5.5, None), ("speech.stopped assistant", 6.9, None)]


def test_the_call_tracker_gets_one_barge_in_and_the_turn_latency_from_them() -> None:
    p, tracker = provider(), CallTracker()
    kept = []
    for body in (
        transcript_update(OFFER, ANSWER),
        transcript_update(OFFER, ANSWER),  # a redelivery
        transcript_update(OFFER, ANSWER, BOOKED),
        transcript_update(OFFER, ANSWER, BOOKED, event="call_ended"),
    ):
        kept += tracker.process(p.parse("retell", request(body), RECEIVED).events)
    barges = [e for e in kept if isinstance(e, BargeIn)]
    assert [(b.cut_text, b.source) for b in barges] == [("two PM", "word-timings")]  # not also as an overlap
    state = tracker.get("call_b")
    assert state is not None and state.barge_ins == 1
    assert state.last_turn_latency_ms == pytest.approx(900)  # the caller stops at 4.6 s, the agent starts at 5.5 s


def test_a_barge_in_is_one_event_whatever_order_the_updates_arrive_in() -> None:
    p = provider()
    later = p.parse("retell", request(transcript_update(OFFER, ANSWER, BOOKED)), RECEIVED)
    earlier = p.parse("retell", request(transcript_update(OFFER, ANSWER)), RECEIVED)
    assert [what for what, _, _ in derived(later)].count("barge_in") == 1
    assert derived(earlier) == []


def test_speech_that_follows_the_agent_is_no_barge_in() -> None:
    reply = {"role": "user", "content": "Two PM", "words": _words(4.5, "Two PM")}
    inbound = provider().parse("retell", request(transcript_update(OFFER, reply, BOOKED)), RECEIVED)
    assert "barge_in" not in [what for what, _, _ in derived(inbound)]


def test_transfer_started() -> None:
    inbound = parse("transfer_started.json")
    status, raw = inbound.events
    assert status.status == "forwarding"
    assert isinstance(raw, Raw) and raw.type == "transfer_started"
    assert raw.data["call"]["transfer_destination"] == "+14155550111"


def test_unknown_event_is_kept_raw() -> None:
    inbound = parse("unknown_event_chat_started.json")
    assert inbound.message_type == "chat_started"
    assert inbound.call_id is None
    [raw] = inbound.events
    assert raw.type == "chat_started" and raw.data == json.loads(fixture("unknown_event_chat_started.json"))


def test_every_event_round_trips_through_its_json_form() -> None:
    for path in PAYLOADS.glob("*.json"):
        route = "retell.function" if path.name.startswith("function_call") else "retell"
        for event in provider().parse(route, request(path.read_bytes()), RECEIVED).events:
            assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe{",
        b"[1, 2]",
        b'{"call": {"call_id": "call_x"}}',
        b'{"event": "call_ended"}',
        b'{"event": "call_ended", "call": "call_x"}',
        b'{"event": "call_ended", "call": {"start_timestamp": 1}}',
        b'{"event": "call_ended", "call": {"call_id": "c", "transcript_object": "oops"}}',
        b'{"event": "call_inbound"}',
    ],
)
def test_bad_payloads(body: bytes) -> None:
    with pytest.raises(BadPayload):
        provider().parse("retell", request(body), RECEIVED)


def test_ack_is_204() -> None:
    inbound = parse("call_started.json")
    assert provider().ack(inbound).status == 204


# -- call_inbound ------------------------------------------------------------------------


def test_call_inbound_with_default_settings() -> None:
    inbound = parse("call_inbound.json")
    assert inbound.message_type == "call_inbound"
    assert inbound.call_id is None
    [raw] = inbound.events
    assert raw.type == "call_inbound" and raw.call_id is None
    assert inbound.reply is not None and inbound.reply.status == 200
    assert json.loads(inbound.reply.body) == {"call_inbound": {}}
    assert inbound.extra == {
        "from_number": "+14155550142",
        "to_number": "+14155550199",
        "agent_id": "agent_3b8e2c1d9f7a6e5d4c3b2a19",
    }


def test_call_inbound_answer_from_settings() -> None:
    settings = RetellSettings(
        call_inbound=RetellCallInboundSettings(
            override_agent_id="agent_after_hours",
            override_agent_version=7,
            dynamic_variables={"customer_name": "Ana Muñoz"},
        )
    )
    inbound = parse("call_inbound.json", provider(settings))
    assert inbound.reply is not None
    assert json.loads(inbound.reply.body) == {
        "call_inbound": {
            "override_agent_id": "agent_after_hours",
            "override_agent_version": 7,
            "dynamic_variables": {"customer_name": "Ana Muñoz"},
        }
    }


# -- custom functions -----------------------------------------------------------------------


FN = "/webhook/retell/function"


def test_function_call_full_payload() -> None:
    body = fixture("function_call.json")
    inbound = provider().parse("retell.function", request(body, FN), RECEIVED)
    assert inbound.message_type == "function_call"
    assert inbound.call_id == CALL_ID
    assert inbound.at == RECEIVED
    [requested] = inbound.events
    assert isinstance(requested, ToolRequested)
    assert requested.name == "check_availability"
    assert requested.arguments == {"date": "2026-08-11", "service": "cleaning"}
    assert requested.tool_call_id.startswith("rt_") and len(requested.tool_call_id) == 27

    batch = inbound.tool_batch
    assert batch is not None
    assert batch.provider == "retell" and batch.dialect == "retell-function"
    assert batch.call_id == CALL_ID
    assert batch.platform_timeout_s == 120.0
    assert [(c.tool_call_id, c.name, c.arguments) for c in batch.calls] == [
        (requested.tool_call_id, "check_availability", requested.arguments)
    ]
    assert batch.raw_body == body and batch.path == FN and batch.method == "POST"
    assert batch.extra == {"payload": "full"}
    assert inbound.dedupe_key == f"retell.function:{requested.tool_call_id}"


def test_function_timeout_comes_from_settings() -> None:
    p = provider(RetellSettings(function_timeout_seconds=30))
    inbound = p.parse("retell.function", request(fixture("function_call.json"), FN), RECEIVED)
    assert inbound.tool_batch is not None and inbound.tool_batch.platform_timeout_s == 30


def test_function_call_id_is_stable_across_retries_and_restarts() -> None:
    body = fixture("function_call.json")
    first = provider().parse("retell.function", request(body, FN), RECEIVED)
    retry = provider().parse("retell.function", request(body, FN), RECEIVED + timedelta(seconds=120))
    assert first.events[0].tool_call_id == retry.events[0].tool_call_id

    # The same function with the same arguments later in the call is a new call.
    later = json.loads(body)
    later["call"]["transcript_object"].append({"role": "user", "content": "Actually, check again.", "words": []})
    again = provider().parse("retell.function", request(json.dumps(later).encode(), FN), RECEIVED)
    assert again.events[0].tool_call_id != first.events[0].tool_call_id

    # Key order in the arguments does not matter.
    reordered = json.loads(body)
    reordered["args"] = {"service": "cleaning", "date": "2026-08-11"}
    same = provider().parse("retell.function", request(json.dumps(reordered).encode(), FN), RECEIVED)
    assert same.events[0].tool_call_id == first.events[0].tool_call_id


def test_function_call_args_only_with_name_in_query() -> None:
    body = fixture("function_call_args_only.json")
    inbound = provider().parse("retell.function", request(body, FN + "?name=check_availability"), RECEIVED)
    [requested] = inbound.events
    assert requested.name == "check_availability"
    assert requested.arguments == {"date": "2026-08-11", "service": "cleaning"}
    assert inbound.call_id is None
    assert inbound.tool_batch is not None and inbound.tool_batch.extra == {"payload": "args-only"}
    assert inbound.tool_batch.path == FN + "?name=check_availability"


def test_function_call_args_only_without_name() -> None:
    # An argument called "name" does not make the body look like the full payload.
    body = b'{"name":"Ana Mu\xc3\xb1oz","phone":"+14155550142"}'
    inbound = provider().parse("retell.function", request(body, FN), RECEIVED)
    [requested] = inbound.events
    assert requested.name == "unknown"
    assert requested.arguments == {"name": "Ana Muñoz", "phone": "+14155550142"}


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "PATCH"])
def test_function_call_with_empty_body(method: str) -> None:
    req = request(b"", FN + "?name=lookup_order&order_id=A-1001&call_id=call_q", method=method)
    inbound = provider().parse("retell.function", req, RECEIVED)
    [requested] = inbound.events
    assert requested.name == "lookup_order"
    assert requested.arguments == {"order_id": "A-1001", "call_id": "call_q"}
    assert inbound.call_id == "call_q"
    assert inbound.tool_batch is not None
    assert inbound.tool_batch.method == method and inbound.tool_batch.extra == {"payload": "empty"}


def test_function_call_with_null_args() -> None:
    body = b'{"name":"end_of_day_report","args":null,"call":{"call_id":"call_z"}}'
    inbound = provider().parse("retell.function", request(body, FN), RECEIVED)
    assert [(e.name, e.arguments, e.call_id) for e in inbound.events if isinstance(e, ToolRequested)] == [
        ("end_of_day_report", {}, "call_z")
    ]


@pytest.mark.parametrize("body", [b"[]", b'"text"', b"{bad json"])
def test_function_bad_payloads(body: bytes) -> None:
    with pytest.raises(BadPayload):
        provider().parse("retell.function", request(body, FN), RECEIVED)


def _batch():
    inbound = provider().parse("retell.function", request(fixture("function_call.json"), FN), RECEIVED)
    assert inbound.tool_batch is not None
    return inbound.tool_batch


def _outcome(**kw) -> ToolOutcome:
    call = _batch().calls[0]
    return ToolOutcome(tool_call_id=call.tool_call_id, name=call.name, **kw)


def test_tool_reply_result() -> None:
    reply = provider().tool_reply(
        _batch(), [_outcome(decision="approved", by="operator", result='{"slots":["14:00"]}')]
    )
    assert reply.status == 200 and reply.content_type == "application/json"
    assert json.loads(reply.body) == {"result": '{"slots":["14:00"]}'}


def test_tool_reply_rejection_is_an_error_the_agent_can_say() -> None:
    outcome = _outcome(decision="rejected", by="timeout", error="The operator did not answer in time.")
    reply = provider().tool_reply(_batch(), [outcome])
    assert reply.status == 200
    assert json.loads(reply.body) == {"error": "The operator did not answer in time."}


def test_tool_reply_without_outcome() -> None:
    reply = provider().tool_reply(_batch(), [])
    assert "error" in json.loads(reply.body)


@pytest.mark.parametrize(
    "text",
    ["x" * 20_000, '"\n' * 9_000, "ñ" * 15_000, "a" * 14_988],
    ids=["long", "escapes", "non-ascii", "just-fits"],
)
def test_tool_reply_is_capped_at_15000_characters(text: str) -> None:
    reply = provider().tool_reply(_batch(), [_outcome(decision="overridden", by="operator", result=text)])
    decoded = reply.body.decode()
    assert len(decoded) <= FUNCTION_REPLY_LIMIT
    result = json.loads(decoded)["result"]
    if len(json.dumps({"result": text}, separators=(",", ":"), ensure_ascii=False)) > FUNCTION_REPLY_LIMIT:
        assert result.endswith("[truncated by voice-console]")
        assert len(decoded) > FUNCTION_REPLY_LIMIT - 10  # cut no more than needed
    else:
        assert result == text


def test_absurd_word_times_are_dropped_not_a_crash() -> None:
    """Found by the fuzzer: a word starting 250 billion seconds into the call overflowed the date."""
    from console.providers.retell.wire import Word

    assert Word(word="Hi", start=251616528000.0, end=0.7).start is None
    assert Word(word="Hi", start=float("nan"), end=-1).end is None and Word(word="Hi", start=float("nan")).start is None
    assert Word(word="Hi", start=1.25, end=1.5).start == 1.25


def test_one_speaker_stopping_as_the_other_starts_is_no_barge_in() -> None:
    """Word times that meet exactly (the agent's last word ends as the caller's first begins)."""
    from console.core.calls import CallTracker
    from console.providers.retell.normalize import SeenOnce, speech_events
    from console.providers.retell.wire import RetellCall

    call = RetellCall.model_validate(
        {
            "call_id": "call_tie",
            "start_timestamp": 1_785_772_800_000,
            "transcript_object": [
                {
                    "role": "agent",
                    "content": "Hello there",
                    "words": [{"word": "Hello", "start": 0.5, "end": 0.9}, {"word": "there", "start": 1.0, "end": 1.3}],
                },
                {"role": "user", "content": "Hi", "words": [{"word": "Hi", "start": 1.3, "end": 1.6}]},
            ],
        }
    )
    events = speech_events(call, SeenOnce(), complete=True)
    assert [e.kind for e in events] == ["speech.started", "speech.stopped", "speech.started", "speech.stopped"]
    assert not [e for e in CallTracker().process(events) if e.kind == "barge_in"]
