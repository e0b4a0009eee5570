"""The whole receiving side over real sockets: receiver -> providers -> tracker -> SQLite.

Every fixture payload of every provider is posted, correctly and wrongly signed,
to a running `ReceiverService`; what was stored is read back through the same
queries the history command uses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from console.core.http_types import Request, Response
from console.core.tools import NO_HANDLER_MESSAGE
from console.providers.retell import sign_retell
from console.providers.twilio.auth import sign_twilio
from console.store import queries
from tests.helpers.receiver import vapi_headers
from tests.helpers.secrets import PAYLOADS, PUBLIC_URL, RETELL_KEY, TWILIO_TOKEN, VAPI_SECRET


@pytest.fixture
async def running(start_receiver):
    service, seen = await start_receiver()
    async with httpx.AsyncClient(base_url=service.server.url, timeout=10) as client:
        yield service, client, seen


def vapi_fixtures() -> list[Path]:
    return sorted(p for p in (PAYLOADS / "vapi").glob("*.json"))


async def test_every_vapi_message_type_is_stored_and_answered(running):
    service, client, seen = running
    files = vapi_fixtures()
    assert len(files) > 40
    for path in files:
        body = path.read_bytes()
        response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
        assert response.status_code == 200, (path.name, response.text)
        kind = json.loads(body)["message"]["type"]
        if kind == "tool-calls":
            results = response.json()["results"]
            calls = json.loads(body)["message"]
            assert results and all(r["error"] == NO_HANDLER_MESSAGE for r in results), path.name
            assert all("\n" not in r["error"] for r in results)
        elif kind == "function-call":
            assert NO_HANDLER_MESSAGE in response.json()["result"]
        elif kind == "assistant-request":
            assert "error" in response.json() or "assistantId" in response.json()

    counts = await queries.counts(service.store)
    assert counts["deliveries"] == len(files)
    assert counts["rejected_requests"] == 0
    calls = await queries.list_calls(service.store)
    assert calls, "the fixture call is listed"
    detail = await queries.get_call(service.store, calls[0]["call_id"])
    kinds = {event["kind"] for event in detail["events"]}
    assert {
        "call.status",
        "speech.started",
        "transcript.final",
        "transcript.partial",
        "barge_in",
        "tool.requested",
        "tool.decided",
        "call.hang",
        "call.ended",
        "raw",
    } <= kinds
    assert detail["tool_calls"] and all(t["decision"] == "rejected" and t["by"] == "rule" for t in detail["tool_calls"])
    # Everything stored was also emitted live (minus exact repeats).
    assert len(seen) >= len(detail["events"]) - 1
    # /healthz says how fast deliveries were acknowledged, tool calls (which wait for a decision) aside.
    kinds_posted = [json.loads(path.read_bytes())["message"]["type"] for path in files]
    tool_calls = sum(kind in ("tool-calls", "function-call") for kind in kinds_posted)
    acknowledged = (await client.get("/healthz")).json()["acknowledged"]
    assert acknowledged["n"] == len(files) - tool_calls
    assert 0 < acknowledged["p50_ms"] <= acknowledged["p99_ms"] <= acknowledged["max_ms"] < 10_000


async def test_unknown_vapi_type_is_accepted_and_kept_raw(running):
    service, client, _ = running
    body = json.dumps(
        {
            "message": {
                "type": "brand-new-thing-2027",
                "timestamp": 1764000000000,
                "call": {"id": "call-unknown"},
                "x": [1, 2],
            }
        }
    ).encode()
    response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
    assert response.status_code == 200
    detail = await queries.get_call(service.store, "call-unknown")
    assert [e["kind"] for e in detail["events"]] == ["raw"]
    assert detail["events"][0]["type"] == "brand-new-thing-2027"


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({}, "missing"),
        ({"x-vapi-secret": "wrong-secret-value"}, "does not match"),
        ({"x-vapi-secret": VAPI_SECRET[:-3]}, "does not match"),
    ],
)
async def test_bad_vapi_secret_is_refused_and_recorded(running, headers, reason):
    service, client, _ = running
    body = (PAYLOADS / "vapi" / "hang.json").read_bytes()
    response = await client.post("/webhook/vapi", content=body, headers={"content-type": "application/json", **headers})
    assert response.status_code == 401
    assert reason in response.json()["error"]["message"]
    rejected = await queries.rejected(service.store)
    assert len(rejected) == 1 and reason in rejected[0]["reason"]
    assert (await queries.counts(service.store))["deliveries"] == 0


async def test_bad_json_is_400_and_recorded(running):
    service, client, _ = running
    body = b'{"message": {"type": "status-update", '
    response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]
    assert len(await queries.rejected(service.store)) == 1


async def test_duplicates_are_recorded_once(running):
    service, client, seen = running
    body = (PAYLOADS / "vapi" / "transcript.user-final.json").read_bytes()
    for _ in range(3):
        response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
        assert response.status_code == 200
    counts = await queries.counts(service.store)
    assert counts["deliveries"] == 3
    assert counts["events"] == 1
    assert len(seen) == 1


async def test_out_of_order_status_keeps_the_newest(running):
    service, client, _ = running

    def status(status: str, ms: int, **extra) -> bytes:
        return json.dumps(
            {
                "message": {
                    "type": "status-update",
                    "status": status,
                    "timestamp": ms,
                    "call": {"id": "call-ooo", "status": "ringing"},
                    **extra,
                }
            }
        ).encode()

    for body in (
        status("ended", 1764000060000, endedReason="customer-ended-call"),
        status("ringing", 1764000000000),
        status("in-progress", 1764000005000),
    ):
        assert (
            await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
        ).status_code == 200
    [call] = [c for c in await queries.list_calls(service.store) if c["call_id"] == "call-ooo"]
    assert call["status"] == "ended" and call["ended_reason"] == "customer-ended-call"
    assert call["started_at"].startswith("2025-11-24T16:00:05")


async def test_parallel_tool_calls_forwarded_and_merged_in_order(start_receiver, tool_server):
    async def reversed_results(request: Request) -> Response:
        calls = json.loads(request.body)["message"]["toolCallList"]
        # Answer in reverse order, one as an object, to check matching and flattening.
        results = [
            {"toolCallId": c["id"], "result": {"ok": True, "tool": c["function"]["name"]}} for c in reversed(calls)
        ]
        return Response.json(200, {"results": results})

    tool_server.answer = reversed_results
    seen_by_tool_server = tool_server.received
    service, _ = await start_receiver(forward={"to": tool_server.url})
    body = (PAYLOADS / "vapi" / "tool-calls.parallel.json").read_bytes()
    ids = [c["id"] for c in json.loads(body)["message"]["toolCallList"]]
    async with httpx.AsyncClient(base_url=service.server.url) as client:
        response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
        again = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["toolCallId"] for r in results] == ids
    assert all(json.loads(r["result"])["ok"] for r in results)
    # A redelivery gets the recorded answer; the user's server is not called twice.
    assert again.json() == response.json()
    assert len(seen_by_tool_server) == 1
    assert seen_by_tool_server[0].body == body
    detail = await queries.get_call(service.store, json.loads(body)["message"]["call"]["id"])
    assert {t["decision"] for t in detail["tool_calls"]} == {"approved"}


async def test_forward_target_down_still_answers_in_time(start_receiver):
    service, _ = await start_receiver(forward={"to": "http://127.0.0.1:9/nothing-listens-here"})
    body = (PAYLOADS / "vapi" / "tool-calls.oas.json").read_bytes()
    async with httpx.AsyncClient(base_url=service.server.url) as client:
        started = time.monotonic()
        response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
    assert response.status_code == 200
    assert time.monotonic() - started < 5
    [result] = response.json()["results"]
    assert "unreachable" in result["error"]


async def test_slow_tool_server_is_cut_off_before_the_platform_deadline(start_receiver, tool_server):
    tool_server.delay_s = 30
    service, _ = await start_receiver(forward={"to": tool_server.url}, vapi={"default_tool_timeout_seconds": 3})
    message = json.loads((PAYLOADS / "vapi" / "tool-calls.oas.json").read_text())
    for key in ("assistant", "phoneNumber"):
        message["message"].pop(key, None)
    for tool in message["message"].get("toolWithToolCallList", []):
        tool.pop("server", None)
    body = json.dumps(message).encode()
    async with httpx.AsyncClient(base_url=service.server.url, timeout=10) as client:
        started = time.monotonic()
        response = await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
    assert response.status_code == 200
    assert time.monotonic() - started < 3
    assert response.json()["results"][0]["error"]


def retell_fixtures() -> list[Path]:
    return sorted((PAYLOADS / "retell").glob("*.json"))


async def test_every_retell_payload_is_verified_and_stored(running):
    service, client, _ = running
    files = retell_fixtures()
    assert files
    for path in files:
        body = path.read_bytes()
        route = "/webhook/retell/function" if path.name.startswith("function") else "/webhook/retell"
        headers = {
            "content-type": "application/json",
            "x-retell-signature": sign_retell(body, RETELL_KEY, int(time.time() * 1000)),
        }
        response = await client.post(route, content=body, headers=headers)
        assert 200 <= response.status_code < 300, (path.name, response.text)
        if path.name.startswith("call_inbound"):
            assert "call_inbound" in response.json()
        if path.name.startswith("function"):
            assert NO_HANDLER_MESSAGE in response.text
    stale = sign_retell(files[0].read_bytes(), RETELL_KEY, int(time.time() * 1000) - 10 * 60 * 1000)
    response = await client.post(
        "/webhook/retell", content=files[0].read_bytes(), headers={"x-retell-signature": stale}
    )
    assert response.status_code == 401
    assert (await queries.counts(service.store))["rejected_requests"] == 1


async def test_twilio_voice_and_status_signed_against_the_public_url(running):
    service, client, _ = running
    params = {
        "CallSid": "CA" + "1" * 32,
        "AccountSid": "AC" + "2" * 32,
        "From": "+14155550142",
        "To": "+14155550100",
        "CallStatus": "ringing",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
    }
    body = urlencode(params)
    signature = sign_twilio(PUBLIC_URL + "/webhook/twilio/voice", params, TWILIO_TOKEN)
    response = await client.post(
        "/webhook/twilio/voice",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    assert "<Response>" in response.text

    done = {
        **params,
        "CallStatus": "completed",
        "CallDuration": "42",
        "SequenceNumber": "3",
        "Timestamp": "Tue, 24 Nov 2026 12:00:42 +0000",
    }
    signature = sign_twilio(PUBLIC_URL + "/webhook/twilio/status", done, TWILIO_TOKEN)
    response = await client.post(
        "/webhook/twilio/status",
        content=urlencode(done),
        headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature},
    )
    assert 200 <= response.status_code < 300
    [call] = [c for c in await queries.list_calls(service.store) if c["provider"] == "twilio"]
    assert call["status"] == "ended" and call["ended_reason"] == "completed"

    response = await client.post(
        "/webhook/twilio/status",
        content=urlencode(done),
        headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": "AAAA"},
    )
    assert response.status_code == 403


async def test_twilio_fixtures_if_any(running):
    service, client, _ = running
    for path in sorted((PAYLOADS / "twilio").glob("*.form")):
        route = "/webhook/twilio/status" if "status" in path.name else "/webhook/twilio/voice"
        body = path.read_text().strip()
        from urllib.parse import parse_qsl

        signature = sign_twilio(PUBLIC_URL + route, parse_qsl(body, keep_blank_values=True), TWILIO_TOKEN)
        response = await client.post(
            route,
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature},
        )
        assert 200 <= response.status_code < 300, (path.name, response.text)


async def test_health_and_unknown_routes(running):
    _, client, _ = running
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert health.json()["acknowledged"] == {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    assert (await client.get("/webhook/nope")).status_code == 404
    assert (await client.get("/webhook/vapi")).status_code == 405


async def test_no_secret_reaches_the_database(running, tmp_path):
    service, client, _ = running
    for path in vapi_fixtures()[:10]:
        body = path.read_bytes()
        await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
    # A payload that itself carries the secret (a static server header echoed back).
    leaky = json.dumps(
        {
            "message": {
                "type": "status-update",
                "status": "ringing",
                "timestamp": 1764000000000,
                "call": {"id": "call-leak"},
                "assistant": {"server": {"headers": {"x-vapi-secret": VAPI_SECRET}}},
            }
        }
    ).encode()
    await client.post("/webhook/vapi", content=leaky, headers=vapi_headers(service, leaky))
    await client.post("/webhook/vapi", content=leaky, headers={"x-vapi-secret": VAPI_SECRET + "-wrong"})
    await service.close()
    for file in tmp_path.glob("history.db*"):
        data = file.read_bytes()
        for secret in (VAPI_SECRET, RETELL_KEY, TWILIO_TOKEN):
            assert secret.encode() not in data, (file.name, secret)
