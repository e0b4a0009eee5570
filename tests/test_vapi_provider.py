"""The Vapi provider, sans-I/O: fixtures -> events, auth modes, replies, bad payloads."""

from __future__ import annotations

import base64
import hmac
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from console.config import (
    ConfigError,
    VapiAssistantRequestSettings,
    VapiHmacSettings,
    VapiSettings,
    VapiWebhookSettings,
    load_settings,
)
from console.core.calls import CallTracker
from console.core.events import event_from_dict, event_to_dict
from console.core.http_types import Request
from console.core.tools import RAW_ARGUMENTS_KEY, ToolBatch, ToolCall, ToolOutcome
from console.providers.base import BadPayload, Inbound
from console.providers.vapi import VapiProvider, sign_vapi_request
from console.providers.vapi.auth import NO_SECRET_REASON
from console.providers.vapi.normalize import function_call_id
from console.providers.vapi.replies import NO_OUTCOME_ERROR, one_line, tool_reply
from console.providers.vapi.wire import MESSAGE_MODELS, parse_vapi_time
from tests.helpers.secrets import VAPI_SECRET

PAYLOADS = Path(__file__).parent / "payloads" / "vapi"
ROUTE = "/webhook/vapi"
RECEIVED = datetime(2026, 2, 15, 10, 0, 0, tzinfo=UTC)
CALL = "5f2c9a8e-3b1d-4e7a-9c6f-2d8b1a7e4c30"
NOW = 1771148460.0  # 2026-02-15T09:41:00Z


def load(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def request(body: bytes | dict[str, Any], headers: dict[str, str] | None = None, target: str = ROUTE) -> Request:
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    pairs = [("host", "console.tunnel.example"), ("content-type", "application/json")]
    pairs += [(k.lower(), v) for k, v in (headers or {}).items()]
    return Request(method="POST", target=target, headers=tuple(pairs), body=body)


def provider(settings: VapiSettings | None = None, secret: str | None = VAPI_SECRET, **kwargs: Any) -> VapiProvider:
    kwargs.setdefault("clock", lambda: NOW)
    return VapiProvider(settings or VapiSettings(), secret, **kwargs)


def parse(body: bytes | dict[str, Any], settings: VapiSettings | None = None) -> Inbound:
    return provider(settings).parse(ROUTE, request(body), RECEIVED)


def message(type_: str, **fields: Any) -> dict[str, Any]:
    return {"message": {"type": type_, "timestamp": 1771148400000, "call": {"id": CALL}, **fields}}


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


# --- every fixture -> the expected events ------------------------------------------

T0 = 1771148400000

EXPECTED: dict[str, list[dict[str, Any]]] = {
    "assistant-request.json": [{"kind": "raw", "type": "assistant-request"}],
    "assistant.speechStarted.json": [
        {
            "kind": "raw",
            "type": "assistant.speechStarted",
            "data": {
                "text": "Tuesday the seventeenth I have nine thirty or two fifteen,",
                "turn": 2,
                "source": "model",
            },
        }
    ],
    "assistant.started.json": [{"kind": "raw", "type": "assistant.started"}],
    "call.artifact.upload.json": [{"kind": "raw", "type": "call.artifact.upload"}],
    "call.delete.failed.json": [{"kind": "raw", "type": "call.delete.failed"}],
    "call.deleted.json": [{"kind": "raw", "type": "call.deleted"}],
    "call.endpointing.request.json": [{"kind": "raw", "type": "call.endpointing.request"}],
    "campaign.predial.json": [{"kind": "raw", "type": "campaign.predial", "data": {"campaignId": "cmp_6a1b2c3d4e5f"}}],
    "chat.created.json": [{"kind": "raw", "type": "chat.created", "call_id": None}],
    "chat.deleted.json": [{"kind": "raw", "type": "chat.deleted", "call_id": None}],
    "conversation-update.json": [{"kind": "raw", "type": "conversation-update"}],
    "end-of-call-report.json": [
        {"kind": "call.status", "status": "ended", "ended_reason": "customer-ended-call"},
        {
            "kind": "call.ended",
            "reason": "customer-ended-call",
            "summary": "Dana Whitfield booked a cleaning for Tuesday 17 February at 9:30.",
            "cost": 0.1873,
            "duration_s": 62.5,
        },
    ],
    "end-of-call-report.legacy.json": [
        {
            "kind": "call.status",
            "status": "ended",
            "ended_reason": "assistant-ended-call",
            "call_id": "b1d0a7e2-6c3f-4e58-9a21-7f4c8e3d2b10",
        },
        {
            "kind": "call.ended",
            "reason": "assistant-ended-call",
            "summary": "The caller asked about Saturday hours and was told the office is open 9 to 1.",
            "cost": 0.0412,
            "duration_s": 34.52,
        },
    ],
    "function-call.json": [
        {
            "kind": "tool.requested",
            "name": "sendConfirmationSms",
            "arguments": {"to": "+14155550142", "text": "See you Tue 17 Feb at 9:30."},
        }
    ],
    "function-call.parameters-object.json": [
        {
            "kind": "tool.requested",
            "name": "sendConfirmationSms",
            "arguments": {"to": "+14155550142", "text": "See you Tue 17 Feb at 9:30."},
        }
    ],
    "handoff-destination-request.json": [{"kind": "raw", "type": "handoff-destination-request"}],
    "hang.json": [{"kind": "call.hang"}],
    "knowledge-base-request.json": [{"kind": "raw", "type": "knowledge-base-request"}],
    "language-change-detected.json": [{"kind": "raw", "type": "language-change-detected", "data": {"language": "es"}}],
    "language-changed.json": [{"kind": "raw", "type": "language-changed", "data": {"language": "es"}}],
    "model-output.json": [
        {
            "kind": "raw",
            "type": "model-output",
            "data": {
                "turnId": "turn_7c1e9a2b4d",
                "output": "Tuesday the seventeenth I have nine thirty or two fifteen,",
            },
        }
    ],
    "phone-call-control.json": [{"kind": "raw", "type": "phone-call-control", "data": {"request": "forward"}}],
    "session.created.json": [{"kind": "raw", "type": "session.created", "call_id": None}],
    "session.deleted.json": [{"kind": "raw", "type": "session.deleted", "call_id": None}],
    "session.updated.json": [{"kind": "raw", "type": "session.updated", "call_id": None}],
    "speech-update.assistant-started.json": [{"kind": "speech.started", "role": "assistant", "turn": 0}],
    "speech-update.assistant-stopped.json": [{"kind": "speech.stopped", "role": "assistant", "turn": 0}],
    "speech-update.malformed-fields.json": [{"kind": "raw", "type": "speech-update"}],
    "speech-update.user-started.json": [{"kind": "speech.started", "role": "user", "turn": 1}],
    "speech-update.user-stopped.json": [{"kind": "speech.stopped", "role": "user", "turn": 1}],
    "status-update.ended.json": [{"kind": "call.status", "status": "ended", "ended_reason": "customer-ended-call"}],
    "status-update.forwarding.json": [{"kind": "call.status", "status": "forwarding"}],
    "status-update.in-progress.json": [{"kind": "call.status", "status": "in-progress"}],
    "status-update.not-found.json": [{"kind": "raw", "type": "status-update", "data": {"status": "not-found"}}],
    "status-update.queued.json": [{"kind": "call.status", "status": "queued"}],
    "status-update.ringing.json": [{"kind": "call.status", "status": "ringing"}],
    "status-update.scheduled.json": [{"kind": "call.status", "status": "queued"}],
    "tool-calls.captured-2024.json": [
        {
            "kind": "tool.requested",
            "tool_call_id": "call_wM3bX8tq2Rz5",
            "name": "lookup_patient",
            "arguments": {"phone": "+14155550142"},
        }
    ],
    "tool-calls.oas.json": [
        {
            "kind": "tool.requested",
            "tool_call_id": "call_Qm2s8VbX1fK4nT0p",
            "name": "check_availability",
            "arguments": {"date": "2026-02-17", "reason": "cleaning"},
        }
    ],
    "tool-calls.parallel.json": [
        {
            "kind": "tool.requested",
            "tool_call_id": "call_P1a9Xc2Vb7Nm",
            "name": "lookup_patient",
            "arguments": {"phone": "+14155550142"},
        },
        {
            "kind": "tool.requested",
            "tool_call_id": "call_P2k4Lq8Rt3Wz",
            "name": "check_availability",
            "arguments": {"date": "2026-02-17", "reason": "cleaning"},
        },
    ],
    "tool-calls.prose-arguments-string.json": [
        {
            "kind": "tool.requested",
            "tool_call_id": "toolu_01HqR7wN2mC",
            "name": "check_availability",
            "arguments": {"date": "2026-02-18"},
        }
    ],
    "tool-calls.prose.json": [
        {
            "kind": "tool.requested",
            "tool_call_id": "toolu_01DTz6yQ4kV",
            "name": "book_appointment",
            "arguments": {"patient_name": "Dana Whitfield", "date": "2026-02-17", "time": "09:30"},
        }
    ],
    "tool-calls.tool-with-tool-call-list-only.json": [
        {
            "kind": "tool.requested",
            "tool_call_id": "call_Yt5uI8oP3aS1",
            "name": "lookup_patient",
            "arguments": {"phone": "+14155550142"},
        }
    ],
    "transcript.assistant-final.json": [
        {
            "kind": "transcript.final",
            "role": "assistant",
            "text": "Thanks for calling Sunrise Dental, this is Ava. How can I help?",
        }
    ],
    "transcript.final-only-subscription.json": [
        {"kind": "transcript.final", "role": "user", "text": "Hi, I'd like to book a cleaning for next Tuesday."}
    ],
    "transcript.iso-timestamp.json": [
        {
            "kind": "transcript.final",
            "role": "user",
            "text": "Yes, my name is Dana Whitfield.",
            "at": "2026-02-15T09:40:09.800000Z",
        }
    ],
    "transcript.user-final.json": [
        {"kind": "transcript.final", "role": "user", "text": "Hi, I'd like to book a cleaning for next Tuesday."}
    ],
    "transcript.user-partial.json": [{"kind": "transcript.partial", "role": "user", "text": "Hi, I'd like to book"}],
    "transfer-destination-request.json": [{"kind": "raw", "type": "transfer-destination-request"}],
    "transfer-update.json": [{"kind": "raw", "type": "transfer-update"}],
    "unknown-type.json": [
        {
            "kind": "raw",
            "type": "workflow.node.started",
            "data": {"node": {"name": "collect_reason", "type": "conversation"}},
        }
    ],
    "user-interrupted.json": [{"kind": "barge_in", "source": "user-interrupted"}],
    "voice-input.json": [{"kind": "raw", "type": "voice-input"}],
    "voice-request.json": [{"kind": "raw", "type": "voice-request", "data": {"sampleRate": 24000}}],
}

FIXTURES = sorted(path.name for path in PAYLOADS.glob("*.json"))


def test_every_fixture_has_an_expectation() -> None:
    assert FIXTURES == sorted(EXPECTED)


def test_every_documented_type_has_a_fixture() -> None:
    types = {json.loads(load(name))["message"]["type"] for name in FIXTURES}
    assert set(MESSAGE_MODELS) <= types


def _subset(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        if isinstance(value, dict) and key == "data":
            for sub_key, sub_value in value.items():
                assert actual[key][sub_key] == sub_value, (key, sub_key)
        else:
            assert actual.get(key) == value, key


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_parses_into_expected_events(name: str) -> None:
    wire = json.loads(load(name))["message"]
    inbound = parse(load(name))

    assert inbound.provider == "vapi"
    assert inbound.message_type == wire["type"]
    expected_call_id = (wire.get("call") or {}).get("id")
    assert inbound.call_id == expected_call_id
    assert inbound.at == parse_vapi_time(wire["timestamp"])
    assert inbound.at.tzinfo is not None and inbound.at.utcoffset() == timedelta(0)

    assert len(inbound.events) == len(EXPECTED[name]), inbound.events
    for event, expected in zip(inbound.events, EXPECTED[name], strict=True):
        actual = event_to_dict(event)
        assert actual["provider"] == "vapi"
        assert actual["call_id"] == expected_call_id
        assert event.at == inbound.at
        _subset(actual, expected)
        # The contract JSON form reads back into the same event.
        assert event_from_dict(actual) == event


@pytest.mark.parametrize("name", FIXTURES)
def test_raw_events_drop_the_bulky_envelope(name: str) -> None:
    for event in parse(load(name)).events:
        if event.kind == "raw" and "unparsed_tool_calls" not in event.data:
            assert event.data["type"] == json.loads(load(name))["message"]["type"]
            assert not {"call", "assistant", "phoneNumber", "customer", "artifact"} & set(event.data)


# --- replies to request types ----------------------------------------------------------

REPLIES: dict[str, Any] = {
    "assistant-request.json": {"error": "Sorry, no assistant is configured for this number."},
    "transfer-destination-request.json": {"error": "No transfer destination is configured in voice-console."},
    # `destination` is required by Vapi even when the answer is "do not hand off".
    "handoff-destination-request.json": {
        "destination": {"type": "assistant"},
        "error": "No handoff destination is configured in voice-console.",
    },
    "knowledge-base-request.json": {"documents": []},
    "call.endpointing.request.json": {"timeoutSeconds": 1.5},
    "campaign.predial.json": {"eligible": True},
}


@pytest.mark.parametrize("name", FIXTURES)
def test_reply_only_for_config_answered_requests(name: str) -> None:
    inbound = parse(load(name))
    if name in REPLIES:
        assert inbound.reply is not None and inbound.reply.status == 200
        assert json.loads(inbound.reply.body) == REPLIES[name]
    elif name == "voice-request.json":
        assert inbound.reply is not None and inbound.reply.status == 200
        assert inbound.reply.body == b""
        assert inbound.reply.content_type == "audio/l16; rate=24000; channels=1"
    else:
        assert inbound.reply is None
    assert (inbound.tool_batch is not None) == name.startswith(("tool-calls", "function-call"))


def test_assistant_request_answers_from_config() -> None:
    by_id = VapiSettings(assistant_request=VapiAssistantRequestSettings(assistant_id="asst_123"))
    assert json.loads(parse(load("assistant-request.json"), by_id).reply.body) == {"assistantId": "asst_123"}
    transient = {"name": "Test", "firstMessage": "Hello from voice-console."}
    inline = VapiSettings(assistant_request=VapiAssistantRequestSettings(assistant=transient))
    assert json.loads(parse(load("assistant-request.json"), inline).reply.body) == {"assistant": transient}


def test_transfer_destination_from_config() -> None:
    settings = VapiSettings(transfer_destination="+16505550100")
    body = json.loads(parse(load("transfer-destination-request.json"), settings).reply.body)
    assert body["destination"] == {"type": "number", "number": "+16505550100"}
    assert body["message"]["type"] == "request-start" and body["message"]["content"]


@pytest.mark.parametrize(
    "configured, destination",
    [
        ("Billing", {"type": "assistant", "assistantName": "Billing"}),
        ({"assistant_name": "Billing"}, {"type": "assistant", "assistantName": "Billing"}),
        (
            {"assistant_id": "5b0a7c1e-2f3d-4e5f-8a9b-0c1d2e3f4a5b"},
            {"type": "assistant", "assistantId": "5b0a7c1e-2f3d-4e5f-8a9b-0c1d2e3f4a5b"},
        ),
    ],
)
def test_handoff_destination_from_config(configured: Any, destination: dict[str, str]) -> None:
    settings = VapiSettings.model_validate({"handoff_destination": configured})
    body = json.loads(parse(load("handoff-destination-request.json"), settings).reply.body)
    assert body == {"destination": destination}


@pytest.mark.parametrize(
    "line",
    [
        "handoff_destination = 3",
        'handoff_destination = ""',
        'handoff_destination = { assistant_name = "A", assistant_id = "b" }',
        'handoff_destination = { assistantId = "b" }',
    ],
)
def test_handoff_destination_must_name_one_assistant(tmp_path: Path, line: str) -> None:
    file = tmp_path / "config.toml"
    file.write_text(f"[vapi]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(file, env={})
    assert str(file) in str(caught.value) and "'vapi.handoff_destination" in str(caught.value)


def test_ack_is_an_empty_object() -> None:
    inbound = parse(load("status-update.ringing.json"))
    response = provider().ack(inbound)
    assert (response.status, json.loads(response.body)) == (200, {})


# --- tool calls -------------------------------------------------------------------------


def test_tool_batch_carries_the_request() -> None:
    body = load("tool-calls.parallel.json")
    req = request(body, target="/webhook/vapi?src=tunnel")
    inbound = provider().parse(ROUTE, req, RECEIVED)
    batch = inbound.tool_batch
    assert batch is not None
    assert batch.provider == "vapi" and batch.dialect == "vapi-tool-calls" and batch.call_id == CALL
    assert [c.tool_call_id for c in batch.calls] == ["call_P1a9Xc2Vb7Nm", "call_P2k4Lq8Rt3Wz"]
    assert batch.raw_body == body
    assert batch.headers == req.headers
    assert batch.path == "/webhook/vapi" and batch.method == "POST"
    assert batch.content_type == "application/json"


@pytest.mark.parametrize(
    ("name", "timeout"),
    [
        ("tool-calls.parallel.json", 12.0),  # tool servers 12 and 45, assistant 60
        ("tool-calls.oas.json", 20.0),  # the assistant's server
        ("tool-calls.tool-with-tool-call-list-only.json", 20.0),  # tool 30, assistant 20
        ("tool-calls.captured-2024.json", 33.0),  # nothing configured: the settings default
        ("function-call.json", 20.0),
    ],
)
def test_platform_timeout(name: str, timeout: float) -> None:
    inbound = parse(load(name), VapiSettings(default_tool_timeout_seconds=33))
    assert inbound.tool_batch is not None and inbound.tool_batch.platform_timeout_s == timeout


def test_phone_number_server_timeout_counts() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = message(
        "tool-calls",
        toolCallList=[call],
        phoneNumber={"server": {"timeoutSeconds": 8}},
        assistant={"server": {"timeoutSeconds": 25}},
    )
    assert parse(body).tool_batch.platform_timeout_s == 8


def test_legacy_duplicate_tool_calls_are_not_doubled() -> None:
    inbound = parse(load("tool-calls.captured-2024.json"))
    assert len(inbound.tool_batch.calls) == 1
    assert [e.kind for e in inbound.events] == ["tool.requested"]


def test_tool_calls_falls_back_to_legacy_list() -> None:
    call = {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": {"x": 1}}}
    inbound = parse(message("tool-calls", toolCallList=[], toolCalls=[call, call]))
    assert [(c.tool_call_id, c.name, c.arguments) for c in inbound.tool_batch.calls] == [("call_a", "lookup", {"x": 1})]


def test_prose_item_borrows_its_name_from_tool_with_tool_call_list() -> None:
    body = message(
        "tool-calls",
        toolCallList=[{"id": "t1", "parameters": {"a": 1}}],
        toolWithToolCallList=[{"name": "named_tool", "toolCall": {"id": "t1", "parameters": {"a": 1}}}],
    )
    assert parse(body).tool_batch.calls == (ToolCall("t1", "named_tool", {"a": 1}),)


def test_broken_argument_json_is_kept_not_dropped() -> None:
    cut_off = '{"date": "2026-02-'  # e.g. the tool-arg token cap
    body = message(
        "tool-calls",
        toolCallList=[
            {"id": "c1", "type": "function", "function": {"name": "book", "arguments": cut_off}},
            {"id": "c2", "type": "function", "function": {"name": "book", "arguments": '"{\\"date\\": \\"x\\"}"'}},
            {"id": "c3", "type": "function", "function": {"name": "book", "arguments": ""}},
        ],
    )
    calls = parse(body).tool_batch.calls
    assert calls[0].arguments == {RAW_ARGUMENTS_KEY: cut_off}
    assert calls[1].arguments == {"date": "x"}  # double-encoded
    assert calls[2].arguments == {}


def test_unparsable_items_are_reported_as_raw() -> None:
    good = {"id": "c1", "type": "function", "function": {"name": "book", "arguments": "{}"}}
    body = message("tool-calls", toolCallList=[good, {"type": "function"}, "garbage"])
    inbound = parse(body)
    assert [c.tool_call_id for c in inbound.tool_batch.calls] == ["c1"]
    assert [e.kind for e in inbound.events] == ["tool.requested", "raw"]
    assert inbound.events[1].data == {"unparsed_tool_calls": [{"type": "function"}, "garbage"]}
    assert inbound.extra["unparsed_tool_calls"] == 2


def test_function_call_id_is_stable_across_redelivery() -> None:
    first = parse(load("function-call.json")).tool_batch
    again = parse(load("function-call.json")).tool_batch
    assert first.dialect == "vapi-function-call"
    assert first.calls[0].tool_call_id == again.calls[0].tool_call_id
    assert first.calls[0].tool_call_id.startswith("fc_")
    # Same call, a later message: a different call.
    later = json.loads(load("function-call.json"))
    later["message"]["timestamp"] += 5000
    assert parse(later).tool_batch.calls[0].tool_call_id != first.calls[0].tool_call_id
    # Key order of the parameters does not matter.
    assert function_call_id("c", "f", {"a": 1, "b": 2}, 1) == function_call_id("c", "f", {"b": 2, "a": 1}, 1)


# --- tool_reply --------------------------------------------------------------------------


def _batch(dialect: str = "vapi-tool-calls", n: int = 2) -> ToolBatch:
    calls = tuple(ToolCall(f"call_{i}", f"tool_{i}", {}) for i in range(n))
    return ToolBatch(provider="vapi", dialect=dialect, call_id=CALL, calls=calls, platform_timeout_s=20)  # type: ignore[arg-type]


def test_tool_reply_results_in_batch_order() -> None:
    outcomes = [  # deliberately out of order: matched by id
        ToolOutcome("call_1", "tool_1", "rejected", "operator", error="Not allowed\nright now."),
        ToolOutcome("call_0", "tool_0", "approved", "rule", result='{\n  "slots": ["09:30", "14:15"]\n}'),
    ]
    response = tool_reply(_batch(), outcomes)
    assert response.status == 200 and response.content_type == "application/json"
    assert json.loads(response.body) == {
        "results": [
            {"toolCallId": "call_0", "name": "tool_0", "result": '{"slots":["09:30","14:15"]}'},
            {"toolCallId": "call_1", "name": "tool_1", "error": "Not allowed right now."},
        ]
    }
    assert b"\\n" not in response.body and b"\n" not in response.body


def test_tool_reply_missing_outcome_is_an_error_entry() -> None:
    outcomes = [ToolOutcome("call_0", "tool_0", "approved", "operator", result="ok")]
    results = json.loads(tool_reply(_batch(), outcomes).body)["results"]
    assert results[1] == {"toolCallId": "call_1", "name": "tool_1", "error": NO_OUTCOME_ERROR}


def test_tool_reply_rejected_without_reason_and_empty_result() -> None:
    outcomes = [
        ToolOutcome("call_0", "tool_0", "approved", "operator"),
        ToolOutcome("call_1", "tool_1", "rejected", "timeout"),
    ]
    results = json.loads(tool_reply(_batch(), outcomes).body)["results"]
    assert results[0]["result"] == ""
    assert "error" in results[1] and results[1]["error"]


def test_function_call_reply() -> None:
    batch = _batch("vapi-function-call", 1)
    ok = tool_reply(batch, [ToolOutcome("call_0", "tool_0", "overridden", "operator", result="Sent.")])
    assert (ok.status, json.loads(ok.body)) == (200, {"result": "Sent."})
    bad = tool_reply(batch, [ToolOutcome("call_0", "tool_0", "rejected", "operator", error="No SMS\nconsent.")])
    assert json.loads(bad.body) == {"result": "Error: No SMS consent."}


def test_one_line() -> None:
    assert one_line({"a": [1, 2]}) == '{"a":[1,2]}'
    assert one_line("plain") == "plain"
    assert one_line("line one\r\n  line two\n") == "line one line two"
    assert one_line("[\n 1,\n 2\n]") == "[1,2]"
    assert one_line(None) == ""


def test_provider_tool_reply_round_trip() -> None:
    vapi = provider()
    inbound = vapi.parse(ROUTE, request(load("tool-calls.parallel.json")), RECEIVED)
    calls = inbound.tool_batch.calls
    outcomes = [ToolOutcome(c.tool_call_id, c.name, "approved", "rule", result="done") for c in calls]
    body = json.loads(vapi.tool_reply(inbound.tool_batch, outcomes).body)
    assert [r["toolCallId"] for r in body["results"]] == ["call_P1a9Xc2Vb7Nm", "call_P2k4Lq8Rt3Wz"]


# --- tolerance: timestamps, malformed, unknown --------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1728393715369, ms(1728393715369)),
        (1728393715.369, ms(1728393715369)),  # epoch seconds
        ("1728393715369", ms(1728393715369)),
        ("2024-07-04T05:39:10.225Z", datetime(2024, 7, 4, 5, 39, 10, 225000, tzinfo=UTC)),
        ("2024-07-04T07:39:10.225+02:00", datetime(2024, 7, 4, 5, 39, 10, 225000, tzinfo=UTC)),
        ("2024-07-04T05:39:10", datetime(2024, 7, 4, 5, 39, 10, tzinfo=UTC)),  # naive -> UTC
        (None, None),
        ("yesterday", None),
        (True, None),
        ({"ms": 1}, None),
        (float("nan"), None),
        (1e30, None),
    ],
)
def test_parse_vapi_time(value: Any, expected: datetime | None) -> None:
    assert parse_vapi_time(value) == expected


@pytest.mark.parametrize("timestamp", [None, "not a time", {"weird": True}])
def test_missing_or_bad_timestamp_uses_receipt_time(timestamp: Any) -> None:
    body = message("hang")
    if timestamp is None:
        del body["message"]["timestamp"]
    else:
        body["message"]["timestamp"] = timestamp
    inbound = parse(body)
    assert inbound.at == RECEIVED and inbound.events[0].at == RECEIVED


@pytest.mark.parametrize(
    "fields",
    [
        {"status": 42},  # status-update
        {},  # status-update without a status
    ],
)
def test_malformed_status_update_becomes_raw(fields: dict[str, Any]) -> None:
    inbound = parse(message("status-update", **fields))
    assert [e.kind for e in inbound.events] == ["raw"]
    assert "malformed" in inbound.extra


@pytest.mark.parametrize(
    ("type_", "fields"),
    [
        ("transcript", {"role": "user", "transcriptType": "partial", "transcript": {"text": "x"}}),
        ("transcript", {"role": "user", "transcript": "no transcriptType"}),
        ("speech-update", {"status": "paused", "role": "user"}),
        ("user-interrupted", {"turnId": ["t1"]}),
    ],
)
def test_malformed_informational_becomes_raw(type_: str, fields: dict[str, Any]) -> None:
    inbound = parse(message(type_, **fields))
    assert [(e.kind, e.type) for e in inbound.events] == [("raw", type_)]
    assert inbound.extra["malformed"]


def test_malformed_envelope_keeps_the_message() -> None:
    body = message("speech-update", status="started", role="user", turn=3)
    body["message"]["call"] = "not-an-object"
    body["message"]["assistant"] = ["nope"]
    inbound = parse(body)
    assert inbound.call_id is None
    assert event_to_dict(inbound.events[0])["kind"] == "speech.started"


def test_end_of_call_report_survives_bad_fields_and_uses_costs() -> None:
    body = message(
        "end-of-call-report",
        endedReason="silence-timed-out",
        cost="n/a",
        costs=[{"type": "transport", "minutes": 2.5, "cost": 0.02}, {"type": "vapi", "minutes": 2.5, "cost": 0.125}, 7],
        analysis="not an object",
    )
    ended = parse(body).events[1]
    assert ended.kind == "call.ended"
    assert ended.reason == "silence-timed-out"
    assert ended.cost == pytest.approx(0.145)
    assert ended.duration_s == pytest.approx(150.0)
    assert ended.summary is None


def test_user_interrupted_exposes_turn_id_outside_the_event() -> None:
    inbound = parse(load("user-interrupted.json"))
    # Beside it, as beside every message with call.monitor: the control URL the call tracker keeps.
    control_url = json.loads(load("user-interrupted.json"))["message"]["call"]["monitor"]["controlUrl"]
    assert inbound.extra == {"turn_id": "turn_7c1e9a2b4d", "control_url": control_url}
    assert inbound.events[0].cut_text is None


def test_role_aliases() -> None:
    inbound = parse(message("transcript", role="bot", transcriptType="final", transcript="Hello."))
    assert inbound.events[0].role == "assistant"


# --- bad payloads -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("invalid/empty.txt", "empty"),
        ("invalid/not-json.txt", "not JSON"),
        ("invalid/array-body.json", "not an object"),
        ("invalid/bare-message.json", 'missing the outer "message" wrapper'),
        ("invalid/no-type.json", "message.type is missing"),
        ("invalid/tool-calls.no-parsable-call.json", "no tool call with an id and a function name"),
        ("invalid/function-call.no-name.json", "functionCall"),
    ],
)
def test_bad_payloads(name: str, fragment: str) -> None:
    with pytest.raises(BadPayload) as info:
        parse(load(name))
    assert fragment in str(info.value)


def test_non_utf8_body_is_bad_payload() -> None:
    with pytest.raises(BadPayload):
        parse(b'{"message": {"type": "\xff\xfe"}}')


# --- auth ----------------------------------------------------------------------------------


def hmac_settings(**plan: Any) -> VapiSettings:
    return VapiSettings(webhook=VapiWebhookSettings(auth="hmac", hmac=VapiHmacSettings(**plan)))


def verify(
    settings: VapiSettings,
    headers: dict[str, str],
    body: bytes = b'{"message":{"type":"hang"}}',
    secret: str | None = VAPI_SECRET,
    **kwargs: Any,
):
    return provider(settings, secret, **kwargs).verify(ROUTE, request(body, headers))


def assert_clean(reason: str, *forbidden: str) -> None:
    assert reason
    for value in (VAPI_SECRET, *forbidden):
        assert value not in reason


SECRET_MODE = VapiSettings()
BEARER_MODE = VapiSettings(webhook=VapiWebhookSettings(auth="bearer"))
BEARER_RAW_MODE = VapiSettings(
    webhook=VapiWebhookSettings(auth="bearer", bearer_header="X-Api-Token", bearer_prefix=False)
)


def test_secret_mode() -> None:
    assert verify(SECRET_MODE, {"X-Vapi-Secret": VAPI_SECRET}).ok
    assert verify(SECRET_MODE, {"x-vapi-secret": VAPI_SECRET}).scheme == "secret"
    # A keyring value with a trailing newline still matches.
    assert verify(SECRET_MODE, {"x-vapi-secret": VAPI_SECRET}, secret=VAPI_SECRET + "\n").ok

    missing = verify(SECRET_MODE, {})
    assert not missing.ok and missing.reason == "missing x-vapi-secret header"
    for wrong in ("nope", VAPI_SECRET[:-3], VAPI_SECRET + "x", VAPI_SECRET.upper()):
        verdict = verify(SECRET_MODE, {"x-vapi-secret": wrong})
        assert not verdict.ok
        assert_clean(verdict.reason, wrong)
        assert "x-vapi-secret" in verdict.reason and "does not match" in verdict.reason


def test_secret_mode_custom_header() -> None:
    settings = VapiSettings(webhook=VapiWebhookSettings(secret_header="X-Console-Key"))
    assert verify(settings, {"x-console-key": VAPI_SECRET}).ok
    assert verify(settings, {"x-vapi-secret": VAPI_SECRET}).reason == "missing x-console-key header"


@pytest.mark.parametrize("mode", ["secret", "bearer", "hmac"])
@pytest.mark.parametrize("secret", [None, ""])
def test_no_secret_configured(mode: str, secret: str | None) -> None:
    settings = VapiSettings(webhook=VapiWebhookSettings(auth=mode))  # type: ignore[arg-type]
    verdict = verify(settings, {"x-vapi-secret": "anything"}, secret=secret)
    assert not verdict.ok and verdict.reason == NO_SECRET_REASON and verdict.scheme == mode


def test_bearer_mode() -> None:
    assert verify(BEARER_MODE, {"Authorization": f"Bearer {VAPI_SECRET}"}).ok
    assert verify(BEARER_MODE, {"Authorization": f"bearer {VAPI_SECRET}"}).ok
    assert verify(BEARER_MODE, {}).reason == "missing authorization header"
    no_prefix = verify(BEARER_MODE, {"Authorization": VAPI_SECRET})
    assert not no_prefix.ok and "Bearer" in no_prefix.reason
    assert_clean(no_prefix.reason)
    basic = verify(BEARER_MODE, {"Authorization": "Basic dXNlcjpwYXNz"})
    assert not basic.ok
    wrong = verify(BEARER_MODE, {"Authorization": f"Bearer {VAPI_SECRET[:10]}"})
    assert not wrong.ok and wrong.reason == "authorization bearer token does not match the configured secret"
    assert_clean(wrong.reason, VAPI_SECRET[:10])


def test_bearer_mode_without_prefix() -> None:
    assert verify(BEARER_RAW_MODE, {"X-Api-Token": VAPI_SECRET}).ok
    assert not verify(BEARER_RAW_MODE, {"X-Api-Token": f"Bearer {VAPI_SECRET}"}).ok
    assert verify(BEARER_RAW_MODE, {"Authorization": f"Bearer {VAPI_SECRET}"}).reason == "missing x-api-token header"


def test_none_mode_only_on_loopback() -> None:
    settings = VapiSettings(webhook=VapiWebhookSettings(auth="none"))
    assert verify(settings, {}, secret=None, loopback=True).ok
    verdict = verify(settings, {}, secret=VAPI_SECRET, loopback=False)
    assert not verdict.ok and "loopback" in verdict.reason and verdict.scheme == "none"


# HMAC: an independent computation, not just a round trip through sign_vapi_request.
BODY = load("tool-calls.parallel.json")


def independent_signature(
    timestamp: str, body: bytes = BODY, algorithm: str = "sha256", secret: str = VAPI_SECRET
) -> bytes:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, algorithm).digest()


HMAC_DEFAULT = hmac_settings()


@pytest.mark.parametrize(
    "timestamp", [str(int(NOW * 1000)), str(int(NOW)), str(int(NOW - 200)), str(int(NOW * 1000) + 120_000)]
)
def test_hmac_accepts_correct_signature_in_seconds_or_ms(timestamp: str) -> None:
    headers = {"x-signature": independent_signature(timestamp).hex(), "x-timestamp": timestamp}
    verdict = verify(HMAC_DEFAULT, headers, BODY)
    assert verdict.ok and verdict.scheme == "hmac"


def test_hmac_failures_are_specific_and_leak_nothing() -> None:
    ts = str(int(NOW * 1000))
    good = independent_signature(ts)
    expected_forms = (good.hex(), base64.b64encode(good).decode())

    def check(headers: dict[str, str], fragment: str, body: bytes = BODY) -> None:
        verdict = verify(HMAC_DEFAULT, headers, body)
        assert not verdict.ok, headers
        assert fragment in verdict.reason, verdict.reason
        assert_clean(verdict.reason, *expected_forms)

    check({"x-timestamp": ts}, "missing x-signature header")
    check({"x-signature": good.hex()}, "missing x-timestamp header")
    check({"x-signature": good.hex(), "x-timestamp": "soon"}, "x-timestamp is not a Unix time")
    check({"x-signature": ("0" * 64), "x-timestamp": ts}, "x-signature does not match")
    check({"x-signature": good.hex(), "x-timestamp": ts}, "x-signature does not match", body=BODY + b" ")
    check({"x-signature": good.hex()[:32], "x-timestamp": ts}, "16-byte signature but sha256 gives 32 bytes")
    sha1 = independent_signature(ts, algorithm="sha1").hex()
    check({"x-signature": sha1, "x-timestamp": ts}, "20-byte signature but sha256 gives 32 bytes")
    check({"x-signature": "not-hex!", "x-timestamp": ts}, "x-signature is not hex-encoded")
    stale = str(int((NOW - 412) * 1000))
    check(
        {"x-signature": independent_signature(stale).hex(), "x-timestamp": stale},
        "x-timestamp is 412 s old, outside the 300 s window",
    )
    future = str(int(NOW + 3600))
    check(
        {"x-signature": independent_signature(future).hex(), "x-timestamp": future},
        "x-timestamp is 3600 s in the future, outside the 300 s window",
    )


def test_hmac_signature_of_the_body_alone_is_rejected() -> None:
    # The x-vapi-signature myth: HMAC(body) without the timestamp.
    ts = str(int(NOW * 1000))
    body_only = hmac.new(VAPI_SECRET.encode(), BODY, "sha256").hexdigest()
    assert not verify(HMAC_DEFAULT, {"x-signature": body_only, "x-timestamp": ts}, BODY).ok


def test_hmac_wrong_secret_rejected() -> None:
    ts = str(int(NOW * 1000))
    sig = independent_signature(ts, secret="another-secret").hex()
    verdict = verify(HMAC_DEFAULT, {"x-signature": sig, "x-timestamp": ts}, BODY)
    assert not verdict.ok and verdict.reason == "x-signature does not match"


@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "sha1"])
def test_hmac_algorithms(algorithm: str) -> None:
    settings = hmac_settings(algorithm=algorithm)
    ts = str(int(NOW * 1000))
    sig = independent_signature(ts, algorithm=algorithm).hex()
    assert verify(settings, {"x-signature": sig, "x-timestamp": ts}, BODY).ok
    other = "sha512" if algorithm != "sha512" else "sha256"
    wrong = verify(settings, {"x-signature": independent_signature(ts, algorithm=other).hex(), "x-timestamp": ts}, BODY)
    assert not wrong.ok and "different algorithm" in wrong.reason


def test_hmac_base64_prefix_and_custom_headers() -> None:
    settings = hmac_settings(
        signature_header="X-Hub-Signature",
        timestamp_header="X-Hub-Timestamp",
        signature_prefix="sha256=",
        signature_encoding="base64",
    )
    ts = str(int(NOW))
    sig = "sha256=" + base64.b64encode(independent_signature(ts)).decode()
    assert verify(settings, {"x-hub-signature": sig, "x-hub-timestamp": ts}, BODY).ok
    no_prefix = verify(settings, {"x-hub-signature": sig[len("sha256=") :], "x-hub-timestamp": ts}, BODY)
    assert not no_prefix.ok and no_prefix.reason == "x-hub-signature lacks the 'sha256=' prefix"
    truncated = verify(settings, {"x-hub-signature": sig[:-12], "x-hub-timestamp": ts}, BODY)
    assert not truncated.ok


def test_hmac_secret_is_base64_and_payload_placeholders() -> None:
    key = b"\x00\x01binary-key\xff"
    secret = "whsec_" + base64.b64encode(key).decode()
    settings = hmac_settings(
        secret_is_base64=True,
        payload_format="{svix-id}.{timestamp}.{method}.{url}.{body}",
        signature_prefix="v1,",
        signature_encoding="base64",
    )
    ts = str(int(NOW))
    url = "https://console.tunnel.example/webhook/vapi"
    payload = f"msg_2x9.{ts}.POST.{url}.".encode() + BODY
    sig = "v1," + base64.b64encode(hmac.new(key, payload, "sha256").digest()).decode()
    headers = {"svix-id": "msg_2x9", "x-timestamp": ts, "x-signature": f"v1,bm90LXRoaXMtb25l {sig}"}
    vapi = provider(settings, secret, public_url="https://console.tunnel.example")
    assert vapi.verify(ROUTE, request(BODY, headers)).ok
    # Without the public URL the Host header gives the same URL here, but http://.
    assert not provider(settings, secret).verify(ROUTE, request(BODY, headers)).ok
    missing_id = {k: v for k, v in headers.items() if k != "svix-id"}
    assert "missing svix-id header" in vapi.verify(ROUTE, request(BODY, missing_id)).reason
    bad_secret = provider(settings, "not base64!!").verify(ROUTE, request(BODY, headers))
    assert not bad_secret.ok and "not valid base64" in bad_secret.reason


def test_hmac_url_from_vapi_listen_forwarding() -> None:
    # `vapi listen` forwards with the URL Vapi originally posted to.
    settings = hmac_settings(payload_format="{url}|{timestamp}.{body}")
    original = "https://abc.ngrok.app/webhook/vapi"
    headers = sign_vapi_request(settings, VAPI_SECRET, BODY, url=original, now=NOW)
    headers.update({"x-vapi-forwarded": "true", "x-vapi-original-url": original})
    assert verify(settings, headers, BODY).ok
    headers["x-vapi-original-url"] = "https://elsewhere.example/webhook/vapi"
    assert not verify(settings, headers, BODY).ok


def test_hmac_without_timestamp_signs_the_body() -> None:
    settings = hmac_settings(include_timestamp=False)
    sig = hmac.new(VAPI_SECRET.encode(), BODY, "sha256").hexdigest()
    assert verify(settings, {"x-signature": sig}, BODY).ok


def test_hmac_body_containing_placeholders_is_not_expanded() -> None:
    body = b'{"message":{"type":"hang","note":"{timestamp}.{body}"}}'
    ts = str(int(NOW))
    sig = independent_signature(ts, body=body).hex()
    assert verify(HMAC_DEFAULT, {"x-signature": sig, "x-timestamp": ts}, body).ok


@pytest.mark.parametrize(
    "settings",
    [
        SECRET_MODE,
        BEARER_MODE,
        BEARER_RAW_MODE,
        HMAC_DEFAULT,
        hmac_settings(algorithm="sha512", signature_encoding="base64", signature_prefix="sha512="),
        hmac_settings(payload_format="{method} {url}\n{timestamp}\n{body}"),
        hmac_settings(payload_format="{svix-id}.{timestamp}.{body}"),
        hmac_settings(include_timestamp=False),
        VapiSettings(webhook=VapiWebhookSettings(auth="none")),
    ],
)
def test_sign_vapi_request_round_trip(settings: VapiSettings) -> None:
    url = "https://console.tunnel.example/webhook/vapi"
    vapi = provider(settings, public_url="https://console.tunnel.example")
    for unit in ("s", "ms"):
        headers = sign_vapi_request(
            settings, VAPI_SECRET, BODY, method="POST", url=url, now=NOW - 5, timestamp_unit=unit
        )
        assert vapi.verify(ROUTE, request(BODY, headers)).ok, headers
        # Only HMAC covers the body; the header modes prove the secret alone.
        tampered = vapi.verify(ROUTE, request(BODY + b"\n", headers))
        assert tampered.ok is (settings.webhook.auth != "hmac")


def test_sign_vapi_request_default_hmac_matches_independent_computation() -> None:
    now = datetime.fromtimestamp(NOW, UTC)
    headers = sign_vapi_request(HMAC_DEFAULT.webhook, VAPI_SECRET, BODY, now=now)
    assert headers["x-timestamp"] == str(int(NOW * 1000))
    assert headers["x-signature"] == independent_signature(headers["x-timestamp"]).hex()


# --- model-output: a token string or a tool-call object ------------------------------------


def test_model_output_is_accepted_as_a_token_string_and_as_a_tool_call_object() -> None:
    """Vapi types `output` as an object ("a token or tool call"); tokens arrive as strings too."""
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
    tracker = CallTracker()
    for output in ("Your visit is on Tuesday ", tool_call, "at nine."):
        inbound = parse(message("model-output", output=output, turnId="turn_1"))
        [event] = inbound.events
        assert event.kind == "raw" and event.data["output"] == output
        tracker.process(inbound.events)
    cut = parse(message("user-interrupted", turnId="turn_1"))
    [barge_in] = tracker.process(cut.events)
    # The tool-call object adds no words to what the assistant meant to say.
    assert barge_in.cut_text == "Your visit is on Tuesday at nine."
