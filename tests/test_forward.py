"""Forwarding to the user's tool server: bodies rebuilt for fewer calls or edited
arguments, in the platform's own representation, and re-signed as the platform would.

Batches come from the real providers parsing the payload fixtures; the tool
server is the console's own HTTP server on loopback.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from console.config import RetellSettings, VapiSettings, VapiWebhookSettings
from console.core.forward import ForwardingToolHandler, rebuild_body
from console.core.http_types import Request
from console.core.tools import ToolBatch, ToolCall
from console.providers.retell import RetellProvider, sign_retell, verify_retell_signature
from console.providers.vapi import VapiProvider, sign_vapi_request, verify_vapi_request
from tests.helpers.secrets import PAYLOADS, RETELL_KEY, VAPI_SECRET
from tests.helpers.tool_server import ToolServer, recording_tool_server

RECEIVED = datetime(2026, 2, 15, 10, 0, 0, tzinfo=UTC)
HMAC = VapiWebhookSettings(auth="hmac")


def vapi_batch(name: str, headers: dict[str, str] | None = None) -> ToolBatch:
    body = (PAYLOADS / "vapi" / name).read_bytes()
    pairs = (("content-type", "application/json"), *((k, v) for k, v in (headers or {}).items()))
    request = Request(method="POST", target="/webhook/vapi", headers=pairs, body=body)
    inbound = VapiProvider(VapiSettings(), VAPI_SECRET).parse("vapi", request, RECEIVED)
    assert inbound.tool_batch is not None
    return inbound.tool_batch


def retell_batch(name: str, target: str = "/webhook/retell/function", method: str = "POST") -> ToolBatch:
    body = (PAYLOADS / "retell" / name).read_bytes() if name else b""
    request = Request(method=method, target=target, headers=(("content-type", "application/json"),), body=body)
    inbound = RetellProvider(RetellSettings(), RETELL_KEY).parse("retell.function", request, RECEIVED)
    assert inbound.tool_batch is not None
    return inbound.tool_batch


def edited(batch: ToolBatch, **arguments: dict[str, Any]) -> ToolBatch:
    """The batch with some calls' arguments replaced (keyed by tool_call_id)."""
    calls = tuple(replace(c, arguments=arguments.get(c.tool_call_id, c.arguments)) for c in batch.calls)
    return replace(batch, calls=calls)


def only(batch: ToolBatch, *ids: str) -> ToolBatch:
    return replace(batch, calls=tuple(c for c in batch.calls if c.tool_call_id in ids))


def reparse(batch: ToolBatch, body: bytes) -> list[ToolCall]:
    """What the provider reads from a rebuilt body: it must still be a valid delivery."""
    rebuilt = replace(batch, raw_body=body)
    if batch.provider == "vapi":
        request = Request(method="POST", target="/webhook/vapi", headers=(), body=body)
        inbound = VapiProvider(VapiSettings(), VAPI_SECRET).parse("vapi", request, RECEIVED)
    else:
        request = Request(method=rebuilt.method, target=rebuilt.path, headers=(), body=body)
        inbound = RetellProvider(RetellSettings(), RETELL_KEY).parse("retell.function", request, RECEIVED)
    assert inbound.tool_batch is not None
    return list(inbound.tool_batch.calls)


def message(body: bytes) -> dict[str, Any]:
    return json.loads(body)["message"]


NEW = {"date": "2026-03-03", "reason": "whitening ñ"}

VAPI_FIXTURES = [
    "tool-calls.captured-2024.json",
    "tool-calls.oas.json",
    "tool-calls.parallel.json",
    "tool-calls.prose-arguments-string.json",
    "tool-calls.prose.json",
    "tool-calls.tool-with-tool-call-list-only.json",
    "function-call.json",
    "function-call.parameters-object.json",
]


# --- rebuild_body -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VAPI_FIXTURES)
def test_an_unchanged_vapi_batch_keeps_the_original_bytes(name: str) -> None:
    batch = vapi_batch(name)
    assert rebuild_body(batch) is batch.raw_body


@pytest.mark.parametrize("name", ["function_call.json", "function_call_args_only.json"])
def test_an_unchanged_retell_batch_keeps_the_original_bytes(name: str) -> None:
    batch = retell_batch(name, "/webhook/retell/function?name=check_availability")
    assert rebuild_body(batch) is batch.raw_body


# fixture -> (where the arguments sit in each item, whether they are a JSON string)
REPRESENTATIONS = {
    "tool-calls.oas.json": ("function", "arguments", True),
    "tool-calls.captured-2024.json": ("function", "arguments", False),
    "tool-calls.prose.json": (None, "parameters", False),
    "tool-calls.prose-arguments-string.json": (None, "arguments", True),
    "tool-calls.tool-with-tool-call-list-only.json": (None, "arguments", True),
}


def _arguments_of(item: dict[str, Any], nested: str | None, key: str) -> Any:
    return (item[nested] if nested else item)[key]


@pytest.mark.parametrize("name", sorted(REPRESENTATIONS))
def test_edited_tool_call_arguments_keep_the_platforms_representation(name: str) -> None:
    batch = vapi_batch(name)
    (call,) = batch.calls
    body = rebuild_body(edited(batch, **{call.tool_call_id: NEW}))

    nested, key, as_string = REPRESENTATIONS[name]
    msg = message(body)
    items = [e["toolCall"] for e in msg.get("toolWithToolCallList", [])]
    items += msg.get("toolCallList", []) + msg.get("toolCalls", [])
    assert items, "every list the platform sent is still there"
    for item in items:
        value = _arguments_of(item, nested, key)
        assert isinstance(value, str) is as_string
        assert (json.loads(value) if as_string else value) == NEW
    assert reparse(batch, body) == [replace(call, arguments=NEW)]
    # Everything else is untouched: the call, the artifact, the tools' JSON Schemas.
    original = message(batch.raw_body)
    for field in ("call", "artifact", "assistant", "timestamp", "type"):
        assert msg.get(field) == original.get(field)
    for before, after in zip(
        original.get("toolWithToolCallList", []), msg.get("toolWithToolCallList", []), strict=True
    ):
        assert {k: v for k, v in after.items() if k != "toolCall"} == {
            k: v for k, v in before.items() if k != "toolCall"
        }
    assert "\n" not in body.decode() and "ñ" in body.decode()  # compact UTF-8, like the platform


def test_captured_shape_edits_the_legacy_duplicate_too() -> None:
    batch = vapi_batch("tool-calls.captured-2024.json")
    call_id = batch.calls[0].tool_call_id
    msg = message(rebuild_body(edited(batch, **{call_id: {"phone": "+14155550100"}})))
    assert msg["toolCallList"] == msg["toolCalls"]
    assert msg["toolCallList"][0]["function"]["arguments"] == {"phone": "+14155550100"}
    assert msg["toolWithToolCallList"][0]["toolCall"]["function"]["arguments"] == {"phone": "+14155550100"}


def test_a_sub_batch_keeps_only_its_calls_in_every_list() -> None:
    batch = vapi_batch("tool-calls.parallel.json")
    first, second = batch.calls
    body = rebuild_body(only(batch, second.tool_call_id))
    msg = message(body)
    for key in ("toolCallList", "toolCalls"):
        assert [item["id"] for item in msg[key]] == [second.tool_call_id]
    assert [e["toolCall"]["id"] for e in msg["toolWithToolCallList"]] == [second.tool_call_id]
    assert msg["toolWithToolCallList"][0]["function"]["name"] == second.name
    # The kept call is byte-for-byte what the platform sent (its argument string included).
    original = message(batch.raw_body)
    assert msg["toolCallList"][0] == original["toolCallList"][1]
    assert reparse(batch, body) == [second]


def test_a_sub_batch_with_an_edit() -> None:
    batch = vapi_batch("tool-calls.parallel.json")
    first, second = batch.calls
    body = rebuild_body(edited(only(batch, first.tool_call_id), **{first.tool_call_id: {"phone": "+1999"}}))
    msg = message(body)
    assert [item["id"] for item in msg["toolCallList"]] == [first.tool_call_id]
    assert msg["toolCallList"][0]["function"]["arguments"] == '{"phone":"+1999"}'
    assert reparse(batch, body) == [replace(first, arguments={"phone": "+1999"})]


@pytest.mark.parametrize(
    ("name", "as_string"), [("function-call.json", True), ("function-call.parameters-object.json", False)]
)
def test_legacy_function_call_parameters_keep_their_representation(name: str, as_string: bool) -> None:
    batch = vapi_batch(name)
    new = {"to": "+14155550100", "text": "Moved to Wed 18 Feb."}
    body = rebuild_body(edited(batch, **{batch.calls[0].tool_call_id: new}))
    parameters = message(body)["functionCall"]["parameters"]
    assert isinstance(parameters, str) is as_string
    assert (json.loads(parameters) if as_string else parameters) == new
    assert [c.arguments for c in reparse(batch, body)] == [new]


def test_retell_full_payload_replaces_args_and_keeps_the_call() -> None:
    batch = retell_batch("function_call.json")
    new = {"date": "2026-08-12", "service": "whitening"}
    body = rebuild_body(edited(batch, **{batch.calls[0].tool_call_id: new}))
    data, original = json.loads(body), json.loads(batch.raw_body)
    assert data["args"] == new
    assert data["name"] == original["name"] and data["call"] == original["call"]
    assert "Ana Muñoz".encode() in body  # UTF-8 kept, never \u-escaped
    assert [c.arguments for c in reparse(batch, body)] == [new]


def test_retell_args_only_body_is_the_new_arguments() -> None:
    batch = retell_batch("function_call_args_only.json", "/webhook/retell/function?name=check_availability")
    new = {"date": "2026-08-12"}
    assert json.loads(rebuild_body(edited(batch, **{batch.calls[0].tool_call_id: new}))) == new


def test_retell_get_function_has_no_body_to_rebuild() -> None:
    batch = retell_batch("", "/webhook/retell/function?name=check_availability&date=2026-08-11", method="GET")
    assert rebuild_body(edited(batch, **{batch.calls[0].tool_call_id: {"date": "x"}})) == b""


def test_arguments_the_model_broke_are_unchanged_unless_edited() -> None:
    body = json.dumps(
        {
            "message": {
                "type": "tool-calls",
                "toolCallList": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "book", "arguments": '{"date": "2026-02-1'},
                    }
                ],
            }
        }
    ).encode()
    request = Request(method="POST", target="/webhook/vapi", headers=(), body=body)
    batch = VapiProvider(VapiSettings(), None).parse("vapi", request, RECEIVED).tool_batch
    assert batch is not None
    assert rebuild_body(batch) is body
    fixed = message(rebuild_body(edited(batch, call_1={"date": "2026-02-17"})))
    assert fixed["toolCallList"][0]["function"]["arguments"] == '{"date":"2026-02-17"}'


@pytest.mark.parametrize("dialect", ["vapi-tool-calls", "vapi-function-call", "retell-function"])
def test_a_batch_without_an_original_body_gets_a_minimal_one(dialect: str) -> None:
    provider = "retell" if dialect == "retell-function" else "vapi"
    batch = ToolBatch(provider, dialect, "call-9", (ToolCall("tc-1", "lookup", {"id": 7}),), 10.0)  # type: ignore[arg-type]
    calls = reparse(batch, rebuild_body(batch))
    assert [(c.name, c.arguments) for c in calls] == [("lookup", {"id": 7})]
    if dialect == "vapi-tool-calls":
        assert calls[0].tool_call_id == "tc-1"  # the other dialects derive their ids from the content


# --- ForwardingToolHandler over the wire -------------------------------------------------------


@pytest.fixture
async def tool_server() -> AsyncIterator[ToolServer]:
    async with recording_tool_server(result=lambda tool_call_id, name, arguments: f"ran {tool_call_id}") as tools:
        yield tools


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def vapi_signer(batch: ToolBatch, body: bytes) -> dict[str, str]:
    return sign_vapi_request(HMAC, VAPI_SECRET, body)


def retell_signer(batch: ToolBatch, body: bytes) -> dict[str, str]:
    return {"x-retell-signature": sign_retell(body, RETELL_KEY, int(time.time() * 1000))}


async def test_unchanged_batch_is_forwarded_verbatim_with_its_original_auth(
    tool_server: ToolServer, client: httpx.AsyncClient
) -> None:
    original = vapi_batch("tool-calls.parallel.json")
    headers = sign_vapi_request(HMAC, VAPI_SECRET, original.raw_body)
    batch = vapi_batch("tool-calls.parallel.json", {"x-vapi-secret": "kept", **headers})
    signed: list[bytes] = []

    def signer(b: ToolBatch, body: bytes) -> dict[str, str]:
        signed.append(body)
        return {}

    outcomes = await ForwardingToolHandler(tool_server.url, client, signer=signer).decide(batch)
    assert [o.result for o in outcomes] == [f"ran {c.tool_call_id}" for c in batch.calls]
    (got,) = tool_server.received
    assert got.body == batch.raw_body and signed == []
    assert got.header("x-vapi-secret") == "kept" and got.header("x-signature") == headers["x-signature"]


async def test_rebuilt_vapi_body_is_resigned_and_verifies(tool_server: ToolServer, client: httpx.AsyncClient) -> None:
    original = vapi_batch("tool-calls.parallel.json")
    headers = sign_vapi_request(HMAC, VAPI_SECRET, original.raw_body)
    batch = vapi_batch(
        "tool-calls.parallel.json", {"x-vapi-secret": "stale", "authorization": "Bearer stale", **headers}
    )
    first, second = batch.calls
    sub = edited(only(batch, second.tool_call_id), **{second.tool_call_id: NEW})

    outcomes = await ForwardingToolHandler(tool_server.url, client, signer=vapi_signer).decide(sub)
    (outcome,) = outcomes
    assert (outcome.tool_call_id, outcome.arguments_sent) == (second.tool_call_id, NEW)
    assert outcome.result == f"ran {second.tool_call_id}"
    (got,) = tool_server.received
    assert got.body == rebuild_body(sub) != batch.raw_body
    assert got.header("x-vapi-secret") is None and got.header("authorization") is None
    assert got.header_values("x-signature") != [headers["x-signature"]] and len(got.header_values("x-signature")) == 1
    assert got.header("content-type") == "application/json"
    # The tool server can verify it exactly as it verifies Vapi.
    assert verify_vapi_request(HMAC, VAPI_SECRET, got, loopback=False).ok
    assert [c.arguments for c in reparse(batch, got.body)] == [NEW]


async def test_rebuilt_retell_body_is_resigned_and_verifies(tool_server: ToolServer, client: httpx.AsyncClient) -> None:
    batch = retell_batch("function_call.json")
    batch = replace(
        batch, headers=batch.headers + (("x-retell-signature", sign_retell(batch.raw_body, RETELL_KEY, 1)),)
    )
    sub = edited(batch, **{batch.calls[0].tool_call_id: {"date": "2026-08-12"}})
    outcomes = await ForwardingToolHandler(tool_server.url, client, signer=retell_signer).decide(sub)
    assert outcomes[0].result == "ran"
    (got,) = tool_server.received
    assert json.loads(got.body)["args"] == {"date": "2026-08-12"}
    assert len(got.header_values("x-retell-signature")) == 1
    verdict = verify_retell_signature(
        got.body, got.header("x-retell-signature"), RETELL_KEY, now_ms=int(time.time() * 1000), skew_ms=300_000
    )
    assert verdict.ok


async def test_rebuilt_body_without_a_signer_keeps_the_original_headers(
    tool_server: ToolServer, client: httpx.AsyncClient
) -> None:
    batch = vapi_batch("tool-calls.oas.json", {"x-vapi-secret": VAPI_SECRET})
    sub = edited(batch, **{batch.calls[0].tool_call_id: NEW})
    await ForwardingToolHandler(tool_server.url, client).decide(sub)
    (got,) = tool_server.received
    assert got.body == rebuild_body(sub)
    assert got.header("x-vapi-secret") == VAPI_SECRET  # still valid: a shared secret does not sign the body


async def test_a_broken_signer_fails_every_call_without_sending(
    tool_server: ToolServer, client: httpx.AsyncClient
) -> None:
    batch = vapi_batch("tool-calls.parallel.json")

    def broken(b: ToolBatch, body: bytes) -> dict[str, str]:
        raise ValueError("no secret")

    handler = ForwardingToolHandler(tool_server.url, client, signer=broken)
    outcomes = await handler.decide(only(batch, batch.calls[0].tool_call_id))
    assert [o.error for o in outcomes] == ["the forwarded request could not be signed (ValueError)"]
    assert tool_server.received == []


async def test_retell_get_function_keeps_its_query_string():
    import httpx as _httpx

    from console.core.forward import ForwardingToolHandler as _Forward
    from console.core.http_types import Response as _Response
    from console.core.tools import ToolBatch as _Batch
    from console.core.tools import ToolCall as _Call
    from console.receiver.http import HttpServer, Router

    targets = []

    async def tool(request):
        targets.append((request.method, request.target))
        return _Response.json(200, {"result": "open"})

    router = Router()
    router.add("GET", "/fn", tool)
    server = HttpServer(router, port=0)
    await server.start()
    try:
        batch = _Batch(
            provider="retell",
            dialect="retell-function",
            call_id="c1",
            calls=(_Call("rt_1", "check_hours", {"day": "monday"}),),
            platform_timeout_s=10,
            raw_body=b"",
            method="GET",
            path="/webhook/retell/function?name=check_hours&day=monday",
        )
        async with _httpx.AsyncClient() as client:
            [outcome] = await _Forward(f"{server.url}/fn", client).decide(batch)
        assert outcome.result == "open"
        assert targets == [("GET", "/fn?name=check_hours&day=monday")]
    finally:
        await server.close()
