"""VapiClient against a local HTTP server standing in for api.vapi.ai (real sockets, loopback)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from console.core.http_types import Request, Response
from console.providers.rest import error_line, retry_after_seconds
from console.providers.vapi.client import (
    VapiAuthError,
    VapiClient,
    VapiConnectionError,
    VapiError,
    validate_e164,
)
from console.receiver.http import HttpServer

KEY = "sk-test-0123456789abcdef"
ASSISTANT = {
    "id": "5b0a4f4e-3c7e-4d8e-9d0a-1f2e3d4c5b6a",
    "orgId": "org-1",
    "name": "Front desk",
    "createdAt": "2026-08-01T10:00:00.000Z",
    "updatedAt": "2026-08-01T10:00:00.000Z",
    "firstMessage": "Hello, how can I help?",
    "server": {"url": "https://example.ngrok.app/webhook/vapi"},
}
PHONE = {"id": "pn-1", "provider": "vapi", "number": "+14155550100", "orgId": "org-1"}
CREATE_CALL_KEYS = {"assistantId", "assistant", "assistantOverrides", "phoneNumberId", "customer", "name", "transport"}


def nest(status: int, error: str, message: Any) -> Response:
    return Response.json(status, {"statusCode": status, "error": error, "message": message})


class FakeVapi:
    """Just enough of Vapi's REST API: bearer auth, bare arrays, NestJS errors, scripted failures."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: dict[tuple[str, str], list[Response]] = {}
        self.delay_s = 0.0
        self.server = HttpServer(self.handle, port=0)

    def fail_next(self, method: str, path: str, *responses: Response) -> None:
        self.script.setdefault((method, path), []).extend(responses)

    def hits(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r.method == method and r.path == path)

    async def handle(self, request: Request) -> Response:
        self.requests.append(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        queued = self.script.get((request.method, request.path))
        if queued:
            return queued.pop(0)
        if request.header("authorization") != f"Bearer {KEY}":
            return nest(
                401,
                "Unauthorized",
                "Invalid Key. Hot tip, you may be using the private key instead of the public key, or vice versa.",
            )
        body = json.loads(request.body) if request.body else None
        match request.method, request.path:
            case "GET", "/assistant":
                return Response.json(200, [ASSISTANT][: int(request.query_params().get("limit", 100))])
            case "GET", path if path == f"/assistant/{ASSISTANT['id']}":
                return Response.json(200, ASSISTANT)
            case "GET", path if path.startswith("/assistant/"):
                return nest(404, "Not Found", "Couldn't Get Assistant. Assistant Not Found.")
            case "POST", "/assistant":
                return Response.json(201, {**body, "id": "new-asst", "orgId": "org-1"})
            case "PATCH", path if path == f"/assistant/{ASSISTANT['id']}":
                unknown = [k for k in body if k not in ("serverMessages", "name", "server", "monitorPlan")]
                if unknown:
                    return nest(400, "Bad Request", [f"property {k} should not exist" for k in unknown])
                return Response.json(200, {**ASSISTANT, **body})
            case "POST", "/call" | "/call/web":
                unknown = [k for k in body if k not in CREATE_CALL_KEYS]
                if unknown:
                    return nest(400, "Bad Request", [f"property {k} should not exist" for k in unknown])
                call = {
                    "id": "call-1",
                    "orgId": "org-1",
                    "status": "queued",
                    "type": "outboundPhoneCall",
                    **body,
                    "monitor": {
                        "listenUrl": "wss://phone.example/call-1/listen",
                        "controlUrl": "https://phone.example/call-1/control",
                    },
                }
                if "transport" in body:
                    call["type"] = "vapi.websocketCall"
                    call["transport"] = {**body["transport"], "websocketCallUrl": "wss://api.example/call-1/transport"}
                return Response.json(201, call)
            case "GET", "/call":
                return Response.json(200, [{"id": "call-1", "status": "ended"}])
            case "GET", "/call/call-1":
                return Response.json(200, {"id": "call-1", "status": "in-progress"})
            case "GET", "/phone-number":
                return Response.json(200, [PHONE])
            case "GET", "/tool":  # as a v2-style envelope, which the client also accepts
                return Response.json(
                    200, {"results": [{"id": "tool-1", "type": "function"}], "metadata": {"totalItems": 1}}
                )
        return nest(404, "Not Found", f"Cannot {request.method} {request.path}")


@pytest.fixture
async def vapi() -> AsyncIterator[FakeVapi]:
    fake = FakeVapi()
    await fake.server.start()
    yield fake
    await fake.server.close()


class Sleeps:
    """Records backoff delays instead of waiting them out (the requests are still real)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def client_for(fake: FakeVapi, key: str = KEY, **kwargs: Any) -> VapiClient:
    return VapiClient(key, base_url=fake.server.url, **kwargs)


async def test_assistants_round_trip(vapi: FakeVapi) -> None:
    async with client_for(vapi) as client:
        listed = await client.list_assistants(limit=1)
        got = await client.get_assistant(ASSISTANT["id"])
        created = await client.create_assistant({"name": "Test"})
        updated = await client.update_assistant(ASSISTANT["id"], {"serverMessages": ["transcript"]})
    assert listed == [ASSISTANT]
    assert got["name"] == "Front desk"
    assert created["id"] == "new-asst"
    assert updated["serverMessages"] == ["transcript"]
    assert vapi.requests[0].query == "limit=1"
    assert all(r.header("authorization") == f"Bearer {KEY}" for r in vapi.requests)


async def test_lists_accept_bare_arrays_and_results_envelopes(vapi: FakeVapi) -> None:
    async with client_for(vapi) as client:
        assert await client.list_phone_numbers() == [PHONE]
        assert await client.list_tools() == [{"id": "tool-1", "type": "function"}]
        assert (await client.list_calls(assistant_id="a1", limit=5))[0]["id"] == "call-1"
        assert (await client.get_call("call-1"))["status"] == "in-progress"
    calls = [r for r in vapi.requests if r.path == "/call"][0]
    assert calls.query_params() == {"limit": "5", "assistantId": "a1"}


async def test_phone_call_sends_the_minimal_outbound_body(vapi: FakeVapi) -> None:
    async with client_for(vapi) as client:
        call = await client.create_phone_call(phone_number_id="pn-1", customer_number="+14155550142", assistant_id="a1")
    assert call["status"] == "queued" and call["monitor"]["controlUrl"]
    sent = json.loads(vapi.requests[-1].body)
    assert sent == {"assistantId": "a1", "phoneNumberId": "pn-1", "customer": {"number": "+14155550142"}}


@pytest.mark.parametrize("number", ["4155550142", "+0155550142", "+1 415 555 0142", "+1415555014212345", "", "+"])
async def test_non_e164_number_is_refused_before_sending(vapi: FakeVapi, number: str) -> None:
    async with client_for(vapi) as client:
        with pytest.raises(ValueError, match="E.164"):
            await client.create_phone_call(phone_number_id="pn-1", customer_number=number, assistant_id="a1")
    assert vapi.requests == []


async def test_websocket_and_web_calls(vapi: FakeVapi) -> None:
    async with client_for(vapi) as client:
        ws_call = await client.create_websocket_call(assistant_id="a1")
        web = await client.create_web_call(assistant={"firstMessage": "hi"})
    assert ws_call["type"] == "vapi.websocketCall" and ws_call["transport"]["websocketCallUrl"].startswith("wss://")
    sent = json.loads(vapi.requests[0].body)
    assert sent["transport"] == {
        "provider": "vapi.websocket",
        "audioFormat": {"format": "pcm_s16le", "container": "raw", "sampleRate": 16000},
    }
    assert vapi.requests[1].path == "/call/web" and web["id"] == "call-1"


async def test_401_says_the_key_was_refused_without_showing_it(vapi: FakeVapi) -> None:
    bad = "sk-wrong-key-987654321"
    sleeps = Sleeps()
    async with client_for(vapi, key=bad, sleep=sleeps) as client:
        with pytest.raises(VapiAuthError) as info:
            await client.list_assistants()
    text = str(info.value)
    assert info.value.status == 401
    assert text.startswith("Vapi API 401 Unauthorized: the API key was refused")
    assert bad not in text and "\n" not in text and bad not in repr(client)
    assert sleeps.delays == [] and len(vapi.requests) == 1  # a refused key is not retried


async def test_404_is_one_readable_line(vapi: FakeVapi) -> None:
    async with client_for(vapi) as client:
        with pytest.raises(VapiError) as info:
            await client.get_assistant("missing-id")
    assert info.value.status == 404
    assert str(info.value) == "Vapi API 404 Not Found: Couldn't Get Assistant. Assistant Not Found."


async def test_400_unknown_property_lists_every_message(vapi: FakeVapi) -> None:
    async with client_for(vapi) as client:
        with pytest.raises(VapiError) as info:
            await client.update_assistant(ASSISTANT["id"], {"metadata": {}, "foo": 1})
    assert (
        str(info.value) == "Vapi API 400 Bad Request: property metadata should not exist; property foo should not exist"
    )
    assert info.value.body["statusCode"] == 400


async def test_429_honours_retry_after_seconds_then_succeeds(vapi: FakeVapi) -> None:
    vapi.fail_next(
        "GET",
        "/assistant",
        Response.json(
            429,
            {"statusCode": 429, "error": "Too Many Requests", "message": "Rate limit exceeded"},
            headers=(("Retry-After", "2"),),
        ),
    )
    sleeps = Sleeps()
    async with client_for(vapi, sleep=sleeps) as client:
        assert await client.list_assistants() == [ASSISTANT]
    assert sleeps.delays == [2.0]
    assert vapi.hits("GET", "/assistant") == 2


async def test_retry_after_http_date_and_cap(vapi: FakeVapi) -> None:
    soon = email.utils.formatdate(time.time() + 5, usegmt=True)
    vapi.fail_next(
        "GET",
        "/phone-number",
        Response.json(429, {"statusCode": 429, "message": "slow down"}, headers=(("Retry-After", soon),)),
        Response.json(503, {"statusCode": 503, "message": "maintenance"}, headers=(("Retry-After", "3600"),)),
    )
    sleeps = Sleeps()
    async with client_for(vapi, sleep=sleeps, max_delay_s=10) as client:
        assert await client.list_phone_numbers() == [PHONE]
    assert 3.5 <= sleeps.delays[0] <= 5.0
    assert sleeps.delays[1] == 10  # an hour-long Retry-After is capped, not obeyed blindly


async def test_500_is_retried_with_growing_jittered_backoff_then_reported(vapi: FakeVapi) -> None:
    vapi.fail_next("GET", "/assistant", *[nest(500, "Internal Server Error", "Internal server error")] * 4)
    sleeps = Sleeps()
    async with client_for(vapi, sleep=sleeps, max_retries=3, backoff_base_s=1.0) as client:
        with pytest.raises(VapiError) as info:
            await client.list_assistants()
    assert str(info.value) == "Vapi API 500 Internal Server Error: Internal server error"
    assert vapi.hits("GET", "/assistant") == 4
    assert [0.5 <= sleeps.delays[0] <= 1, 1 <= sleeps.delays[1] <= 2, 2 <= sleeps.delays[2] <= 4] == [True] * 3


async def test_real_backoff_recovers_from_503s(vapi: FakeVapi) -> None:
    vapi.fail_next("GET", "/tool", *[nest(503, "Service Unavailable", "try later")] * 2)
    async with client_for(vapi, backoff_base_s=0.01) as client:
        assert len(await client.list_tools()) == 1
    assert vapi.hits("GET", "/tool") == 3


async def test_post_call_is_not_repeated_after_a_500_but_is_after_a_429(vapi: FakeVapi) -> None:
    vapi.fail_next("POST", "/call", nest(500, "Internal Server Error", "system failure"))
    sleeps = Sleeps()
    async with client_for(vapi, sleep=sleeps) as client:
        with pytest.raises(VapiError, match="500"):
            await client.create_phone_call(phone_number_id="pn-1", customer_number="+14155550142", assistant_id="a1")
        assert vapi.hits("POST", "/call") == 1  # a second POST could dial the customer twice
        vapi.fail_next("POST", "/call", nest(429, "Too Many Requests", "Over concurrency limit"))
        call = await client.create_phone_call(phone_number_id="pn-1", customer_number="+14155550142", assistant_id="a1")
    assert call["id"] == "call-1" and vapi.hits("POST", "/call") == 3


async def test_unreachable_api_is_retried_then_reported() -> None:
    server = HttpServer(lambda request: None, port=0)  # type: ignore[arg-type, return-value]
    await server.start()
    url = server.url
    await server.close()  # nothing listens on this port any more
    sleeps = Sleeps()
    async with VapiClient(KEY, base_url=url, sleep=sleeps, max_retries=2) as client:
        with pytest.raises(VapiConnectionError) as info:
            await client.list_assistants()
    assert info.value.status == 0 and "unreachable" in str(info.value) and KEY not in str(info.value)
    assert len(sleeps.delays) == 2


async def test_read_timeout_on_get_is_retried(vapi: FakeVapi) -> None:
    vapi.delay_s = 0.5
    sleeps = Sleeps()
    async with client_for(vapi, sleep=sleeps, max_retries=1, timeout_s=0.1) as client:
        with pytest.raises(VapiConnectionError, match="ReadTimeout"):
            await client.list_assistants()
    assert len(sleeps.delays) == 1


async def test_non_json_error_body_and_key_scrubbing(vapi: FakeVapi) -> None:
    vapi.fail_next("GET", "/call/call-1", Response.text(502, "<html>\n<body>Bad gateway</body>\n</html>"))
    async with client_for(vapi, max_retries=0) as client:
        with pytest.raises(VapiError) as info:
            await client.get_call("call-1")
    assert str(info.value) == "Vapi API 502 Bad Gateway: <html> <body>Bad gateway</body> </html>"
    line, _ = error_line(400, "Bad Request", json.dumps({"message": f"key {KEY} is odd"}).encode(), secret=KEY)
    assert KEY not in line and "***" in line


def test_retry_after_parsing_and_e164_helper() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("-3") == 0.0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: go now
    assert validate_e164("+447700900123") == "+447700900123"
    with pytest.raises(ValueError, match="E.164"):
        validate_e164("07700 900123")


async def test_ids_cannot_change_the_path() -> None:
    async with VapiClient(KEY) as client:
        with pytest.raises(ValueError):
            await client.get_assistant("../call")
