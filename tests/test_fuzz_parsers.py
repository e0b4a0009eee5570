"""Fuzzing every provider's verify and parse code directly (sans-I/O), with hypothesis.

Bodies start from the real fixture payloads; hypothesis replaces fields at any
depth with values of the wrong type or shape (huge and non-finite numbers,
lone surrogates, deep nesting, strings where objects belong...), drops fields,
or sends bytes that are not JSON at all. Every outcome must be one of:

* `parse` returns an `Inbound` whose events serialize to UTF-8 JSON (what the
  store writes) and whose tool batch, if any, renders a valid reply;
* `parse` raises the provider's own `BadPayload` (the receiver's 400);
* `verify` returns a failed `Verdict` (never raises, never passes a forgery).

CI runs a few hundred examples in seconds; VOICE_CONSOLE_LONG=1 runs thousands.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.config import load_settings
from console.core import strictjson
from console.core.events import event_json
from console.core.http_types import Request, Response
from console.core.tools import ToolOutcome
from console.providers.base import BadPayload, Inbound, Verdict
from console.providers.retell import RetellProvider
from console.providers.twilio import TwilioProvider
from console.providers.vapi import VapiProvider
from tests.helpers.fuzz import FUZZ, RETELL_DOCS, TWILIO_DOCS, TWILIO_FORMS, VAPI_DOCS, bodies, raw_garbage
from tests.helpers.secrets import PUBLIC_URL

RECEIVED = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


# ------------------------------------------------------------------ checks


def check_inbound(provider: Any, inbound: Inbound) -> None:
    assert isinstance(inbound, Inbound)
    for event in inbound.events:
        event_json(event).encode("utf-8")  # what the store writes: must be real text
    if inbound.reply is not None:
        assert isinstance(inbound.reply, Response)
    batch = inbound.tool_batch
    if batch is not None:
        for call in batch.calls:
            json.dumps(call.arguments).encode("utf-8")
        outcomes = [
            ToolOutcome(tool_call_id=c.tool_call_id, name=c.name, decision="rejected", by="rule", error="fuzz says no")
            for c in batch.calls
        ]
        reply = provider.tool_reply(batch, outcomes)
        assert isinstance(reply, Response) and 200 <= reply.status < 300
    else:
        assert isinstance(provider.ack(inbound), Response)


def parse_cleanly(provider: Any, route: str, request: Request) -> None:
    """The contract: an Inbound that can be stored and answered, or BadPayload."""
    try:
        inbound = provider.parse(route, request, RECEIVED)
    except BadPayload as exc:
        assert str(exc)  # a reason for the 400 and the rejected-requests table
        return
    check_inbound(provider, inbound)


def make_settings():
    return load_settings(env={}, overrides={})


# ------------------------------------------------------------------ parse fuzzing


@FUZZ
@given(body=bodies(VAPI_DOCS))
def test_vapi_parse_never_fails_unexpectedly(body: bytes) -> None:
    provider = VapiProvider(make_settings().vapi, "s3cret")
    parse_cleanly(provider, "vapi", Request("POST", "/webhook/vapi", (("content-type", "application/json"),), body))


@FUZZ
@given(
    body=bodies(RETELL_DOCS),
    route=st.sampled_from(["retell", "retell.function"]),
    query=st.sampled_from(["", "?name=book", "?name=&call_id=x", "?call_id=%ff%fe", "?" + "a=1&" * 50]),
    method=st.sampled_from(["POST", "GET", "DELETE"]),
)
def test_retell_parse_never_fails_unexpectedly(body: bytes, route: str, query: str, method: str) -> None:
    provider = RetellProvider(make_settings().retell, "key_retell")
    path = "/webhook/retell/function" if route == "retell.function" else "/webhook/retell"
    parse_cleanly(provider, route, Request(method, path + query, (("content-type", "application/json"),), body))


@st.composite
def twilio_requests(draw: st.DrawFn) -> Request:
    kind = draw(st.sampled_from(["form", "json", "get", "garbage"]))
    route_path = draw(st.sampled_from(["/webhook/twilio/voice", "/webhook/twilio/status"]))
    if kind == "json":
        body = draw(bodies(TWILIO_DOCS))
        return Request("POST", route_path, (("content-type", "application/json"),), body)
    if kind == "garbage":
        body = draw(raw_garbage)
        ctype = draw(st.sampled_from(["application/x-www-form-urlencoded", "", "text/plain"]))
        return Request("POST", route_path, (("content-type", ctype),) if ctype else (), body)
    form = dict(draw(st.sampled_from(TWILIO_FORMS)))
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(form) + ["CallSid", "Timestamp", "SequenceNumber", "CallDuration"]))
        value = draw(
            st.one_of(
                st.text(max_size=40),
                st.sampled_from(
                    ["", "-1", "9" * 5000, "1e999", "NaN", "Mon, 99 Foo 2026 99:99:99 +9999", "%ff", "\x00"]
                ),
            )
        )
        if draw(st.booleans()) and name in form:
            del form[name]
        else:
            form[name] = value
    encoded = urlencode(form)
    if draw(st.booleans()):
        encoded += draw(st.sampled_from(["&%ff=%fe", "&=&&", "&CallSid=second", "&%zz", "&a=%ED%A0%80"]))
    if kind == "get":
        return Request("GET", route_path + "?" + encoded, (), b"")
    return Request("POST", route_path, (("content-type", "application/x-www-form-urlencoded"),), encoded.encode())


@FUZZ
@given(request=twilio_requests())
def test_twilio_parse_never_fails_unexpectedly(request: Request) -> None:
    provider = TwilioProvider(make_settings().twilio, "twilio-token", PUBLIC_URL)
    route = "twilio.voice" if request.path.endswith("/voice") else "twilio.status"
    parse_cleanly(provider, route, request)


# ------------------------------------------------------------------ verify fuzzing

header_names = st.sampled_from(
    [
        "x-vapi-secret",
        "authorization",
        "x-signature",
        "x-timestamp",
        "svix-id",
        "x-retell-signature",
        "x-twilio-signature",
        "host",
        "x-forwarded-proto",
        "x-forwarded-host",
        "content-type",
    ]
)
header_values = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80),
    st.sampled_from(
        [
            "[",
            "[::1",
            "a]:80",
            "h:99999",
            "h:-1",
            "Bearer ",
            "Bearer",
            "v=,d=",
            "v=1,d=" + "0" * 64,
            "v=" + "9" * 5000 + ",d=" + "a" * 64,
            "1e999",
            "NaN",
            "-1",
            "9" * 5000,
            "sha256=",
            "=" * 10,
            "v1,abc",
            "\xff\xfe",
        ]
    ),
)


@FUZZ
@given(
    headers=st.lists(st.tuples(header_names, header_values), max_size=6),
    body=st.binary(max_size=64),
    auth=st.sampled_from(["secret", "bearer", "hmac", "none"]),
    target=st.sampled_from(["/webhook/vapi", "/webhook/twilio/voice?bodySHA256=%ff", "/webhook/retell?x=\xff"]),
)
def test_verify_never_raises_and_never_passes_a_forgery(
    headers: list[tuple[str, str]], body: bytes, auth: str, target: str
) -> None:
    config = load_settings(env={}, overrides={"vapi": {"webhook": {"auth": auth}}})
    request = Request("POST", target, tuple(headers), body)
    providers = [
        ("vapi", VapiProvider(config.vapi, "s3cret-value", loopback=False)),
        ("retell", RetellProvider(config.retell, "key_retell")),
        ("retell.function", RetellProvider(config.retell, "key_retell")),
        ("twilio.voice", TwilioProvider(config.twilio, "twilio-token", None)),
        ("twilio.status", TwilioProvider(config.twilio, "twilio-token", PUBLIC_URL)),
    ]
    for route, provider in providers:
        verdict = provider.verify(route, request)
        assert isinstance(verdict, Verdict)
        assert not verdict.ok, (route, headers)
        assert verdict.reason and "s3cret-value" not in verdict.reason and "twilio-token" not in verdict.reason


# ------------------------------------------------------------------ the strict JSON decoder (regressions)


@pytest.mark.parametrize(
    "document, problem",
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a":' + b"[" * 65 + b"]" * 65 + b"}", "nested too deeply"),
        (b'{"a":' + b"9" * 5000 + b"}", "number in the JSON is too long"),
        (b'{"a":"\\ud800"}', "unpaired UTF-16 surrogate"),
        (b'{"\\udc00":1}', "unpaired UTF-16 surrogate"),
        (b'["\xed\xa0\x80"]', "unpaired UTF-16 surrogate"),
        ('{"a":"\\ud800"}', "unpaired UTF-16 surrogate"),
    ],
)
def test_strict_json_refuses_what_would_break_the_store(document: bytes | str, problem: str) -> None:
    with pytest.raises(strictjson.JsonRefused, match=problem):
        strictjson.loads(document)


def test_strict_json_accepts_what_json_accepts_otherwise() -> None:
    assert strictjson.loads(b'{"e":"\\ud83d\\ude00"}') == {"e": "\U0001f600"}
    assert strictjson.loads(b"[" * 64 + b"]" * 64) is not None
    assert strictjson.loads(b'{"a":' + b"9" * 4000 + b"}")["a"] > 10**3999
    assert strictjson.loads('{"a": [1, 2.5, NaN]}')["a"][:2] == [1, 2.5]
    assert strictjson.loads(b"\xef\xbb\xbf{}") == {}  # json.loads' own BOM handling
    assert strictjson.loads(b"1e999999") == float("inf")


@pytest.mark.parametrize(
    "arguments", ['{"a":"\\ud800"}', "[" * 5000 + "]" * 5000, '{"a":' + "[" * 100 + "]" * 100 + "}"]
)
def test_undecodable_tool_arguments_are_kept_as_text(arguments: str) -> None:
    """A tool call whose argument string is hostile JSON is still shown and answered."""
    provider = VapiProvider(make_settings().vapi, "s3cret")
    body = json.dumps(
        {
            "message": {
                "type": "tool-calls",
                "call": {"id": "c1"},
                "toolCallList": [
                    {"id": "t1", "type": "function", "function": {"name": "book", "arguments": arguments}}
                ],
            }
        }
    ).encode()
    inbound = provider.parse("vapi", Request("POST", "/webhook/vapi", (), body), RECEIVED)
    [call] = inbound.tool_batch.calls
    assert list(call.arguments.values()) == [arguments]
    check_inbound(provider, inbound)


def test_vapi_timestamp_too_large_for_a_float_is_ignored() -> None:
    provider = VapiProvider(make_settings().vapi, "s3cret")
    body = b'{"message":{"type":"status-update","status":"ringing","timestamp":' + b"9" * 4000 + b',"call":{"id":"c"}}}'
    inbound = provider.parse("vapi", Request("POST", "/webhook/vapi", (), body), RECEIVED)
    assert inbound.at == RECEIVED
    check_inbound(provider, inbound)


def test_twilio_unparsable_host_is_a_failed_verdict() -> None:
    """Found by fuzzing: "Host: [" made urlsplit raise inside verify (a 500)."""
    provider = TwilioProvider(make_settings().twilio, "twilio-token", None)
    request = Request("POST", "/webhook/twilio/voice", (("host", "["), ("x-twilio-signature", "AAAA")), b"CallSid=CA1")
    verdict = provider.verify("twilio.voice", request)
    assert not verdict.ok and "Host header is not a valid host" in verdict.reason


def test_retell_transcript_item_with_a_list_role_is_skipped() -> None:
    """Found by fuzzing: an unhashable role ([]) in transcript_with_tool_calls raised TypeError."""
    provider = RetellProvider(make_settings().retell, "key_retell")
    body = json.dumps(
        {
            "event": "transcript_updated",
            "call": {
                "call_id": "call-odd-role",
                "start_timestamp": 1785772800000,
                "transcript_with_tool_calls": [{"role": [], "content": "x"}, {"role": "user", "content": "hello"}],
            },
        }
    ).encode()
    inbound = provider.parse("retell", Request("POST", "/webhook/retell", (), body), RECEIVED)
    assert [getattr(e, "text", None) for e in inbound.events if e.kind == "transcript.final"] == ["hello"]
    check_inbound(provider, inbound)
