"""Twilio provider: request validation, voice/status webhooks and Media Streams."""

from __future__ import annotations

import base64
import json
import math
import random
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator, get_signature_algorithm

from console.config import TwilioSettings, load_settings
from console.core.events import CallEnded, CallStatus, Raw, SpeechStarted, SpeechStopped, event_from_dict, event_to_dict
from console.core.http_types import Request
from console.providers.base import BadPayload, WebhookProvider
from console.providers.twilio import (
    EMPTY_TWIML,
    MediaStreamSession,
    TwilioProvider,
    VadSettings,
    compute_signature,
    sign_twilio,
    ulaw_decode,
    ulaw_encode,
    url_with_body_hash,
)
from console.providers.twilio.auth import url_variants
from console.providers.twilio.provider import SAY_TWIML
from console.providers.twilio.stream import ULAW_TO_LINEAR
from console.providers.twilio.wire import parse_form
from console.services.receiver import ReceiverService
from console.store import queries
from tests.helpers.receiver import start_service
from tests.helpers.secrets import PUBLIC_URL, TWILIO_SHARED_KEY, TWILIO_TOKEN, secret_lookups

PAYLOADS = Path(__file__).parent / "payloads" / "twilio"
PUBLIC = "https://voice-console.example.ngrok.app"
RECEIVED = datetime(2026, 8, 3, 16, 30, 0, tzinfo=UTC)
FORM = "application/x-www-form-urlencoded"
CALL_IN = "CA5f2b7c9d1e3a4b6c8d0e2f4a6b8c0d1e"
CALL_OUT = "CA8e0a2c4e6b8d0f2a4c6e8b0d2f4a6c8e"


def fixture(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def provider(
    settings: TwilioSettings | None = None,
    token: str | None = TWILIO_TOKEN,
    public_url: str | None = PUBLIC,
    shared_key: str | None = None,
) -> TwilioProvider:
    return TwilioProvider(settings or TwilioSettings(), token, public_url, shared_key=shared_key)


def request(
    body: bytes,
    target: str = "/webhook/twilio/voice",
    *,
    signature: str | None = None,
    content_type: str = FORM,
    method: str = "POST",
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> Request:
    headers = [("host", "127.0.0.1:8765"), ("content-type", content_type), *extra_headers]
    if signature is not None:
        headers.append(("x-twilio-signature", signature))
    return Request(method=method, target=target, headers=tuple(headers), body=body)


def signed(name: str, target: str, base: str = PUBLIC, token: str = TWILIO_TOKEN) -> Request:
    body = fixture(name)
    return request(
        body, target, signature=sign_twilio(base + target, parse_qsl(body.decode(), keep_blank_values=True), token)
    )


def test_satisfies_the_provider_protocol() -> None:
    p: WebhookProvider = provider()
    assert p.name == "twilio"


# -- SDK test vectors (twilio-python tests/unit/test_request_validator.py) ----------------

URI = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
SDK_TOKEN = "12345"
JSON_BODY = b'{"property": "value", "boolean": true}'


def test_sdk_vector_form() -> None:
    assert compute_signature(URI, PARAMS, SDK_TOKEN) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_sdk_vector_repeated_names() -> None:
    pairs = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert compute_signature(URI, pairs, SDK_TOKEN) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    assert compute_signature(URI, {"Sid": "CA123", "SidAccount": "AC123", "Digits": ["5678", "1234"]}, SDK_TOKEN) == (
        "IK+Dwps556ElfBT0I3Rgjkr1wJU="
    )


def test_sdk_vector_json_body() -> None:
    url = url_with_body_hash(URI, JSON_BODY)
    assert url == URI + "&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
    assert sign_twilio(url, JSON_BODY, SDK_TOKEN) == "a9nBmqA0ju/hNViExpshrM61xv4="


def _sdk_request(url: str, signature: str, body: bytes | None = None) -> tuple[TwilioProvider, Request]:
    """A request whose public URL is `url` (base configured, target from the URL)."""
    scheme, rest = url.split("://", 1)
    host, _, target = rest.partition("/")
    p = TwilioProvider(TwilioSettings(), SDK_TOKEN, f"{scheme}://{host}")
    if body is None:
        body = "&".join(f"{k}={v}" for k, v in PARAMS.items()).replace("+", "%2B").encode()
        return p, request(body, "/" + target, signature=signature)
    return p, request(body, "/" + target, signature=signature, content_type="application/json")


@pytest.mark.parametrize(
    ("url", "signature"),
    [
        (URI, "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        # removes the port on https: requested with :1234, signed without
        (URI.replace(".com", ".com:1234"), "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
        # keeps a non-standard port on http: signed with :1234
        (URI.replace(".com", ".com:1234").replace("https", "http"), "Zmvh+3yNM1Phv2jhDCwEM3q5ebU="),
        # adds :443 on https
        (URI, "kvajT1Ptam85bY51eRf/AJRuM3w="),
        # adds :80 on http
        (URI.replace("https", "http"), "0ZXoZLH/DfblKGATFgpif+LLRf4="),
    ],
    ids=["plain", "removes-port-https", "keeps-port-http", "adds-443", "adds-80"],
)
def test_sdk_vectors_through_verify(url: str, signature: str) -> None:
    p, req = _sdk_request(url, signature)
    verdict = p.verify("twilio.voice", req)
    assert verdict.ok, verdict.reason
    assert verdict.scheme == "twilio-signature"


def test_sdk_json_vector_through_verify() -> None:
    p, req = _sdk_request(url_with_body_hash(URI, JSON_BODY), "a9nBmqA0ju/hNViExpshrM61xv4=", JSON_BODY)
    assert p.verify("twilio.status", req).ok


def test_url_variants() -> None:
    assert url_variants("https://a.example/x?q=1") == ["https://a.example/x?q=1", "https://a.example:443/x?q=1"]
    assert url_variants("http://a.example:8080/x") == ["http://a.example/x", "http://a.example:8080/x"]
    assert url_variants("http://[::1]:8080/x") == ["http://[::1]/x", "http://[::1]:8080/x"]
    # The rest of the URL is kept byte for byte (no re-encoding, no dropped "?").
    assert url_variants("https://a.example/x?b=%2f&a=1+2&") == [
        "https://a.example/x?b=%2f&a=1+2&",
        "https://a.example:443/x?b=%2f&a=1+2&",
    ]


# -- verify with the fixtures ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(p.name for p in PAYLOADS.glob("*.form")))
def test_every_form_fixture_verifies(name: str) -> None:
    target = "/webhook/twilio/voice" if name.startswith("voice") else "/webhook/twilio/status"
    verdict = provider().verify("twilio.status", signed(name, target))
    assert verdict.ok, verdict.reason


def test_query_string_is_signed_exactly_as_sent() -> None:
    target = "/webhook/twilio/voice?tenant=north%2Fwest&b=1&a=2"
    assert provider().verify("twilio.voice", signed("voice_inbound.form", target)).ok


def test_json_body_fixture_with_body_sha256() -> None:
    body = fixture("status_completed_json.json")
    url = url_with_body_hash(PUBLIC + "/webhook/twilio/status", body)
    target = url[len(PUBLIC) :]
    good = request(body, target, signature=sign_twilio(url, body, TWILIO_TOKEN), content_type="application/json")
    assert provider().verify("twilio.status", good).ok

    tampered = request(
        body.replace(b'"55"', b'"56"'),
        target,
        signature=sign_twilio(url, body, TWILIO_TOKEN),
        content_type="application/json",
    )
    verdict = provider().verify("twilio.status", tampered)
    assert not verdict.ok and "bodySHA256" in verdict.reason


def test_signed_with_port_443_passes() -> None:
    target = "/webhook/twilio/voice"
    body = fixture("voice_inbound.form")
    signature = sign_twilio(PUBLIC.replace(".app", ".app:443") + target, parse_form(body), TWILIO_TOKEN)
    assert provider().verify("twilio.voice", request(body, target, signature=signature)).ok


def test_public_url_with_standard_port_accepts_a_signature_without_it() -> None:
    p = provider(public_url="https://voice-console.example.ngrok.app:443")
    assert p.verify("twilio.voice", signed("voice_inbound.form", "/webhook/twilio/voice")).ok


def _failures() -> dict[str, tuple[TwilioProvider, Request]]:
    body = fixture("voice_inbound.form")
    target = "/webhook/twilio/voice"
    good = sign_twilio(PUBLIC + target, parse_form(body), TWILIO_TOKEN)
    return {
        "missing": (provider(), request(body, target)),
        "no token configured": (provider(token=None), request(body, target, signature=good)),
        "wrong token": (
            provider(),
            request(body, target, signature=sign_twilio(PUBLIC + target, parse_form(body), "0" * 32)),
        ),
        "truncated": (provider(), request(body, target, signature=good[:-2])),
        "tampered param": (provider(), request(body.replace(b"ringing", b"in-progress"), target, signature=good)),
        "whitespace stripped": (provider(), request(body.replace(b"MUNOZ+&", b"MUNOZ&"), target, signature=good)),
        "wrong port": (
            provider(),
            request(body, target, signature=sign_twilio(PUBLIC + ":8443" + target, parse_form(body), TWILIO_TOKEN)),
        ),
        "wrong path": (provider(), request(body, target + "/", signature=good)),
        "http instead of https": (
            provider(),
            request(
                body,
                target,
                signature=sign_twilio(PUBLIC.replace("https", "http") + target, parse_form(body), TWILIO_TOKEN),
            ),
        ),
        "query re-encoded": (
            provider(),
            request(
                body,
                target + "?a=%2F",
                signature=sign_twilio(PUBLIC + target + "?a=%2f", parse_form(body), TWILIO_TOKEN),
            ),
        ),
        "bad form encoding": (provider(), request(b"CallSid=%FF%FE", target, signature=good)),
    }


@pytest.mark.parametrize("case", list(_failures()))
def test_bad_signatures_fail_without_leaking_secrets(case: str) -> None:
    p, req = _failures()[case]
    verdict = p.verify("twilio.voice", req)
    assert not verdict.ok
    assert verdict.scheme == "twilio-signature"
    assert verdict.reason
    good = sign_twilio(PUBLIC + "/webhook/twilio/voice", parse_form(fixture("voice_inbound.form")), TWILIO_TOKEN)
    assert TWILIO_TOKEN not in verdict.reason and good not in verdict.reason


def test_failure_reasons_say_what_is_wrong() -> None:
    reasons = {case: p.verify("twilio.voice", req).reason for case, (p, req) in _failures().items()}
    assert "VOICE_CONSOLE_TWILIO_AUTH_TOKEN" in reasons["no token configured"]
    assert "missing" in reasons["missing"]
    assert PUBLIC + "/webhook/twilio/voice" in reasons["wrong token"]  # names the URL it checked
    assert "form" in reasons["bad form encoding"]


def test_url_rebuilt_from_forwarded_headers_when_no_public_url() -> None:
    body = fixture("voice_inbound.form")
    target = "/webhook/twilio/voice"
    headers = (("x-forwarded-proto", "https"),)
    ok = request(
        body,
        target,
        signature=sign_twilio("https://127.0.0.1:8765" + target, parse_form(body), TWILIO_TOKEN),
        extra_headers=headers,
    )
    assert provider(public_url=None).verify("twilio.voice", ok).ok

    # Signed for the public tunnel, but the console does not know its URL: say so.
    bad = request(body, target, signature=sign_twilio(PUBLIC + target, parse_form(body), TWILIO_TOKEN))
    verdict = provider(public_url=None).verify("twilio.voice", bad)
    assert not verdict.ok
    assert "http://127.0.0.1:8765/webhook/twilio/voice" in verdict.reason
    assert "public URL" in verdict.reason and "rebuilt" in verdict.reason


def test_validation_can_be_switched_off() -> None:
    p = provider(TwilioSettings(validate_signature=False), token=None)
    verdict = p.verify("twilio.voice", request(fixture("voice_inbound.form")))
    assert verdict.ok and verdict.scheme == "none"


def test_get_webhooks_sign_the_url_only() -> None:
    query = fixture("voice_inbound.form").decode()
    target = "/webhook/twilio/voice?" + query
    req = request(
        b"", target, signature=sign_twilio(PUBLIC + target, None, TWILIO_TOKEN), method="GET", content_type=""
    )
    assert provider().verify("twilio.voice", req).ok
    inbound = provider().parse("twilio.voice", req, RECEIVED)
    assert inbound.call_id == CALL_IN


# -- the twilio SDK as oracle: SharedKey signatures and GET webhooks ----------------------------

SHARED_SETTINGS = "key=webhooks_sharedkey_9a8b7c6d,algorithm=HMAC_SHA256"


def shared_request(
    body: bytes, signature: str | None, settings: str = SHARED_SETTINGS, target: str = "/webhook/twilio/voice"
) -> Request:
    return request(
        body, target, signature=signature, extra_headers=(("x-twilio-webhooks-signature-settings", settings),)
    )


def sdk_signature(secret: str, url: str, body: bytes, algorithm: str | None = None) -> str:
    return RequestValidator(secret).compute_signature(
        url, dict(parse_qsl(body.decode(), keep_blank_values=True)), algorithm
    )


def test_shared_key_signature_made_by_the_sdk_is_accepted() -> None:
    body = fixture("voice_inbound.form")
    url = PUBLIC + "/webhook/twilio/voice"
    signature = sdk_signature(TWILIO_SHARED_KEY, url, body, "HMAC_SHA256")
    sdk = RequestValidator(TWILIO_SHARED_KEY)
    assert sdk.validate(url, dict(parse_qsl(body.decode())), signature, get_signature_algorithm(SHARED_SETTINGS))
    verdict = provider(shared_key=TWILIO_SHARED_KEY).verify("twilio.voice", shared_request(body, signature))
    assert verdict.ok and verdict.scheme == "twilio-shared-key"
    # Our signer agrees with the SDK's, so the simulator and tests can sign SharedKey requests too.
    assert sign_twilio(url, parse_form(body), TWILIO_SHARED_KEY, "HMAC_SHA256") == signature


def test_shared_key_wrong_key_is_refused_naming_the_header() -> None:
    body = fixture("voice_inbound.form")
    signature = sdk_signature("some-other-shared-key", PUBLIC + "/webhook/twilio/voice", body, "HMAC_SHA256")
    verdict = provider(shared_key=TWILIO_SHARED_KEY).verify("twilio.voice", shared_request(body, signature))
    assert not verdict.ok and verdict.scheme == "twilio-shared-key"
    assert verdict.reason.startswith("X-Twilio-Signature does not match under X-Twilio-Webhooks-Signature-Settings")
    assert "key=webhooks_sharedkey_9a8b7c6d" in verdict.reason and "HMAC_SHA256" in verdict.reason
    assert TWILIO_SHARED_KEY not in verdict.reason and signature not in verdict.reason


def test_shared_key_without_a_configured_secret_says_which_secret_is_missing() -> None:
    body = fixture("voice_inbound.form")
    signature = sdk_signature(TWILIO_SHARED_KEY, PUBLIC + "/webhook/twilio/voice", body, "HMAC_SHA256")
    verdict = provider(shared_key=None).verify("twilio.voice", shared_request(body, signature))
    assert not verdict.ok
    assert "X-Twilio-Webhooks-Signature-Settings" in verdict.reason
    assert "VOICE_CONSOLE_TWILIO_SHARED_KEY" in verdict.reason and "keys set twilio" in verdict.reason


def test_shared_key_alone_needs_no_auth_token() -> None:
    body = fixture("voice_inbound.form")
    signature = sdk_signature(TWILIO_SHARED_KEY, PUBLIC + "/webhook/twilio/voice", body, "HMAC_SHA256")
    assert provider(token=None, shared_key=TWILIO_SHARED_KEY).verify("twilio.voice", shared_request(body, signature)).ok
    classic = signed("voice_inbound.form", "/webhook/twilio/voice")
    assert (
        "VOICE_CONSOLE_TWILIO_AUTH_TOKEN"
        in provider(token=None, shared_key=TWILIO_SHARED_KEY).verify("twilio.voice", classic).reason
    )


def test_unknown_shared_key_algorithm_is_refused_naming_the_header() -> None:
    body = fixture("voice_inbound.form")
    settings = "key=webhooks_sharedkey_9a8b7c6d,algorithm=HMAC_SHA512"
    signature = sdk_signature(TWILIO_SHARED_KEY, PUBLIC + "/webhook/twilio/voice", body, "HMAC_SHA256")
    verdict = provider(shared_key=TWILIO_SHARED_KEY).verify("twilio.voice", shared_request(body, signature, settings))
    assert not verdict.ok and "HMAC_SHA512" in verdict.reason
    assert "X-Twilio-Webhooks-Signature-Settings" in verdict.reason
    assert not RequestValidator(TWILIO_SHARED_KEY).validate(
        PUBLIC + "/webhook/twilio/voice", {}, signature, "HMAC_SHA512"
    )


@pytest.mark.parametrize("settings", ["", "   "])
def test_a_blank_settings_header_is_a_classic_signature(settings: str) -> None:
    body = fixture("voice_inbound.form")
    signature = sign_twilio(PUBLIC + "/webhook/twilio/voice", parse_form(body), TWILIO_TOKEN)
    verdict = provider().verify("twilio.voice", shared_request(body, signature, settings))
    assert verdict.ok and verdict.scheme == "twilio-signature"
    assert get_signature_algorithm(settings) == "HMAC_SHA1"


def test_classic_sha1_matches_the_sdk_on_every_fixture() -> None:
    for path in sorted(PAYLOADS.glob("*.form")):
        body = path.read_bytes()
        url = PUBLIC + "/webhook/twilio/status"
        assert sign_twilio(url, parse_form(body), TWILIO_TOKEN) == sdk_signature(TWILIO_TOKEN, url, body), path.name


# -- over the socket: GET webhooks, SharedKey and its missing secret -------------------------------


async def _get(service: ReceiverService, target: str, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=service.server.url, timeout=10) as client:
        return await client.get(target, headers=headers)


@pytest.mark.parametrize(
    "route, name",
    [("/webhook/twilio/voice", "voice_inbound.form"), ("/webhook/twilio/status", "status_3_completed.form")],
)
async def test_get_webhooks_are_accepted_over_the_socket(tmp_path: Path, route: str, name: str) -> None:
    service, _ = await start_service(tmp_path)
    try:
        target = route + "?" + fixture(name).decode().strip()
        # Twilio signs a GET over the full URL with its query and no body parameters.
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(PUBLIC_URL + target, {})
        assert RequestValidator(TWILIO_TOKEN).validate(PUBLIC_URL + target, {}, signature)
        response = await _get(service, target, {"x-twilio-signature": signature})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/xml")
        call_sid = dict(parse_qsl(target.split("?", 1)[1]))["CallSid"]
        [call] = [c for c in await queries.list_calls(service.store) if c["call_id"] == call_sid]
        assert call["provider"] == "twilio"
        forged = await _get(service, target.replace("CallSid=CA", "CallSid=CB"), {"x-twilio-signature": signature})
        assert forged.status_code == 403
    finally:
        await service.close()


async def test_shared_key_over_the_socket_and_without_its_secret(tmp_path: Path) -> None:
    params = dict(parse_qsl(fixture("voice_inbound.form").decode()))
    signature = RequestValidator(TWILIO_SHARED_KEY).compute_signature(
        PUBLIC_URL + "/webhook/twilio/voice", params, "HMAC_SHA256"
    )
    headers = {
        "content-type": FORM,
        "x-twilio-signature": signature,
        "x-twilio-webhooks-signature-settings": SHARED_SETTINGS,
    }
    for secrets, expected in (
        (secret_lookups(), 200),
        ({k: v for k, v in secret_lookups().items() if k != "twilio_shared_key"}, 403),
    ):
        settings = load_settings(
            env={},
            overrides={
                "receiver": {"port": 0, "public_url": PUBLIC_URL},
                "storage": {"db": str(tmp_path / f"{expected}.db")},
            },
        )
        service = await ReceiverService.start(settings, secrets)
        try:
            async with httpx.AsyncClient(base_url=service.server.url, timeout=10) as client:
                response = await client.post("/webhook/twilio/voice", content=urlencode(params), headers=headers)
            assert response.status_code == expected, response.text
            if expected == 403:
                reason = response.json()["error"]["message"]
                assert "X-Twilio-Webhooks-Signature-Settings" in reason and "VOICE_CONSOLE_TWILIO_SHARED_KEY" in reason
        finally:
            await service.close()


# -- form parsing --------------------------------------------------------------------------------


def test_form_parsing_keeps_repeats_and_whitespace() -> None:
    pairs = parse_form(b"StatusCallbackEvent=initiated&StatusCallbackEvent=answered&Name=+a+b+&Empty=")
    assert pairs == [
        ("StatusCallbackEvent", "initiated"),
        ("StatusCallbackEvent", "answered"),
        ("Name", " a b "),
        ("Empty", ""),
    ]


@pytest.mark.parametrize("body", [b"CallSid=%FF", b"CallSid=\xff\xfe"])
def test_bad_form_encoding_is_a_bad_payload(body: bytes) -> None:
    with pytest.raises(BadPayload):
        provider().parse("twilio.status", request(body, "/webhook/twilio/status"), RECEIVED)


def test_missing_call_sid_is_a_bad_payload() -> None:
    with pytest.raises(BadPayload, match="CallSid"):
        provider().parse("twilio.voice", request(b"From=%2B14155550142"), RECEIVED)


# -- voice webhook ---------------------------------------------------------------------------------


def test_voice_inbound() -> None:
    inbound = provider().parse("twilio.voice", request(fixture("voice_inbound.form")), RECEIVED)
    assert inbound.provider == "twilio" and inbound.message_type == "voice"
    assert inbound.call_id == CALL_IN
    assert inbound.at == RECEIVED
    assert inbound.events == [CallStatus(at=RECEIVED, provider="twilio", call_id=CALL_IN, status="ringing")]
    assert inbound.reply is not None
    assert inbound.reply.status == 200
    assert inbound.reply.content_type.startswith("text/xml")
    assert inbound.reply.body == SAY_TWIML.encode()  # no tap token here: no stream to connect
    assert inbound.extra["from"] == "+14155550142"
    assert inbound.extra["to"] == "+14155550199"
    assert inbound.extra["direction"] == "inbound"


def test_voice_reply_comes_from_settings() -> None:
    twiml = '<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="wss://x.example/stream/twilio"/></Connect></Response>'
    inbound = provider(TwilioSettings(voice_twiml=twiml)).parse(
        "twilio.voice", request(fixture("voice_inbound.form")), RECEIVED
    )
    assert inbound.reply is not None and inbound.reply.body == twiml.encode()


def test_voice_connects_a_stream_to_the_tap_by_default_and_fills_stream_url() -> None:
    from console.providers.twilio.client import tap_stream_url
    from console.providers.twilio.provider import TwilioProvider

    stream_url = tap_stream_url("https://voice.example.test", "t0k")
    assert stream_url == "wss://voice.example.test/stream/twilio/t0k"
    default = TwilioProvider(TwilioSettings(), TWILIO_TOKEN, "https://voice.example.test", stream_token="t0k")
    body = default.parse("twilio.voice", request(fixture("voice_inbound.form")), RECEIVED).reply.body.decode()
    assert '<Connect><Stream url="wss://voice.example.test/stream/twilio/t0k"/></Connect>' in body
    custom = TwilioSettings(
        voice_twiml='<Response><Say>Hi</Say><Connect><Stream url="{stream_url}"/></Connect></Response>'
    )
    templated = TwilioProvider(custom, TWILIO_TOKEN, "https://voice.example.test", stream_token="t0k")
    body = templated.parse("twilio.voice", request(fixture("voice_inbound.form")), RECEIVED).reply.body.decode()
    assert (
        body
        == '<Response><Say>Hi</Say><Connect><Stream url="wss://voice.example.test/stream/twilio/t0k"/></Connect></Response>'
    )
    assert tap_stream_url(None, "t") is None and tap_stream_url("http://127.0.0.1:8765", "t").startswith("ws://")


def test_voice_without_call_status_is_ringing() -> None:
    inbound = provider().parse("twilio.voice", request(b"CallSid=CA1&From=%2B1"), RECEIVED)
    assert [e.status for e in inbound.events if isinstance(e, CallStatus)] == ["ringing"]


# -- status callbacks -------------------------------------------------------------------------------


STATUS = "/webhook/twilio/status"


def status(name: str, p: TwilioProvider | None = None):
    return (p or provider()).parse("twilio.status", request(fixture(name), STATUS), RECEIVED)


def test_status_callback_lifecycle() -> None:
    initiated = status("status_0_initiated.form")
    assert initiated.message_type == "status"
    assert initiated.call_id == CALL_OUT
    assert initiated.at == datetime(2026, 8, 3, 16, 10, 0, tzinfo=UTC)  # + 0 us
    assert initiated.events == [CallStatus(at=initiated.at, provider="twilio", call_id=CALL_OUT, status="queued")]
    assert initiated.dedupe_key == f"twilio:{CALL_OUT}:status:0"
    assert initiated.reply is None

    assert [e.status for e in status("status_1_ringing.form").events] == ["ringing"]
    assert [e.status for e in status("status_2_in_progress.form").events] == ["in-progress"]

    completed = status("status_3_completed.form")
    state, ended = completed.events
    assert state == CallStatus(
        at=completed.at, provider="twilio", call_id=CALL_OUT, status="ended", ended_reason="completed"
    )
    assert ended == CallEnded(at=completed.at, provider="twilio", call_id=CALL_OUT, reason="completed", duration_s=55.0)
    assert completed.extra["sip_response_code"] == "200"


def test_out_of_order_callbacks_sort_by_time_and_sequence() -> None:
    names = ["status_2_in_progress.form", "status_0_initiated.form", "status_3_completed.form", "status_1_ringing.form"]
    arrived = [status(n) for n in names]
    ordered = sorted(arrived, key=lambda i: i.at)
    assert [i.extra["sequence_number"] for i in ordered] == [0, 1, 2, 3]
    # initiated and ringing share a second; the sequence number breaks the tie.
    assert ordered[0].at < ordered[1].at
    assert ordered[1].at - ordered[0].at == timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("status_busy.form", "busy"),
        ("status_no_answer.form", "no-answer"),
        ("status_failed.form", "failed"),
        ("status_canceled.form", "canceled"),
    ],
)
def test_unsuccessful_calls_end_with_their_status(name: str, reason: str) -> None:
    state, ended = status(name).events
    assert isinstance(state, CallStatus) and state.status == "ended" and state.ended_reason == reason
    assert isinstance(ended, CallEnded) and ended.reason == reason and ended.duration_s == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("queued", "queued"),
        ("initiated", "queued"),
        ("ringing", "ringing"),
        ("in-progress", "in-progress"),
        ("completed", "ended"),
        ("busy", "ended"),
        ("failed", "ended"),
        ("no-answer", "ended"),
        ("canceled", "ended"),
    ],
)
def test_status_mapping(value: str, expected: str) -> None:
    inbound = provider().parse("twilio.status", request(f"CallSid=CA1&CallStatus={value}".encode(), STATUS), RECEIVED)
    assert inbound.events[0].status == expected
    assert inbound.at == RECEIVED  # no Timestamp: receipt time
    assert inbound.dedupe_key is None


def test_unknown_status_is_kept_raw() -> None:
    inbound = provider().parse("twilio.status", request(b"CallSid=CA1&CallStatus=teleported&X=1&X=2", STATUS), RECEIVED)
    [raw] = inbound.events
    assert isinstance(raw, Raw) and raw.type == "status"
    assert raw.data == {"CallSid": "CA1", "CallStatus": "teleported", "X": ["1", "2"]}


def test_bad_timestamp_falls_back_to_receipt_time() -> None:
    body = b"CallSid=CA1&CallStatus=ringing&Timestamp=yesterday&SequenceNumber=x"
    assert provider().parse("twilio.status", request(body, STATUS), RECEIVED).at == RECEIVED


def test_json_status_body() -> None:
    body = fixture("status_completed_json.json")
    target = url_with_body_hash(PUBLIC + STATUS, body)[len(PUBLIC) :]
    inbound = provider().parse("twilio.status", request(body, target, content_type="application/json"), RECEIVED)
    assert inbound.call_id == CALL_OUT
    assert [e.kind for e in inbound.events] == ["call.status", "call.ended"]
    assert inbound.events[1].duration_s == 55


def test_ack_is_empty_twiml() -> None:
    inbound = status("status_1_ringing.form")
    reply = provider().ack(inbound)
    assert reply.status == 200 and reply.content_type.startswith("text/xml")
    assert reply.body == EMPTY_TWIML.encode()


def test_every_event_round_trips_through_its_json_form() -> None:
    for path in PAYLOADS.glob("*.form"):
        route = "twilio.voice" if path.name.startswith("voice") else "twilio.status"
        for event in provider().parse(route, request(path.read_bytes()), RECEIVED).events:
            assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


# -- mu-law -----------------------------------------------------------------------------------------


def test_ulaw_decode_matches_the_g711_reference() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # gone in Python 3.13
    every_byte = bytes(range(256))
    reference = audioop.ulaw2lin(every_byte, 2)
    assert list(ULAW_TO_LINEAR) == [
        int.from_bytes(reference[i : i + 2], "little", signed=True) for i in range(0, 512, 2)
    ]


def test_ulaw_round_trip_stays_within_quantization_error() -> None:
    samples = list(range(-32768, 32768, 37))
    decoded = ulaw_decode(ulaw_encode(samples))
    for original, back in zip(samples, decoded, strict=True):
        assert abs(original - back) <= max(8, abs(original) // 16 + 8)
    assert ulaw_decode(ulaw_encode([0])) == [0]


# -- Media Streams ----------------------------------------------------------------------------------


STREAM_START = datetime(2026, 8, 3, 16, 0, 0, tzinfo=UTC)


def feed_fixture(session: MediaStreamSession) -> list:
    events = []
    for i, line in enumerate(fixture("media_stream.jsonl").decode().splitlines()):
        events += session.feed(line, STREAM_START + timedelta(milliseconds=20 * i))
    return events


def test_media_stream_fixture() -> None:
    session = MediaStreamSession()
    events = feed_fixture(session)
    summary = [(e.kind, getattr(e, "type", None) or getattr(e, "role", None)) for e in events]
    assert summary == [
        ("raw", "stream.start"),
        ("speech.started", "user"),
        ("speech.stopped", "user"),
        ("raw", "stream.dtmf"),
        ("raw", "stream.mark"),
        ("speech.started", "user"),
        ("speech.stopped", "user"),  # still talking at `stop`: closed by it
        ("raw", "stream.stop"),
    ]
    assert all(e.call_id == CALL_IN and e.provider == "twilio" for e in events)
    start_frame_at = STREAM_START + timedelta(milliseconds=20)  # the start frame is line 2
    started, stopped = events[1], events[2]
    # Dated in stream time: the loud section spans 300-900 ms of audio.
    assert started.at == start_frame_at + timedelta(milliseconds=300)
    assert stopped.at == start_frame_at + timedelta(milliseconds=900)
    assert (started.turn, stopped.turn, events[5].turn, events[6].turn) == (1, 1, 2, 2)
    assert events[6].at == start_frame_at + timedelta(milliseconds=1700)  # end of audio
    assert events[3].data["dtmf"]["digit"] == "1"

    assert session.call_id == CALL_IN
    assert session.stream_sid == "MZ4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c"
    assert session.custom_parameters == {"caller": "+14155550142"}
    assert session.media_format["encoding"] == "audio/x-mulaw"
    assert session.protocol == "Call"
    assert session.stopped
    assert session.stats() == {
        "frames": 90,
        "media_frames": 85,
        "bad_frames": 0,
        "ignored_frames": 0,
        "last_error": None,
        "out_of_order": 0,
        "skipped": 0,
    }


SILENCE = [0] * 160


def tone(amplitude: int, n: int = 160, offset: int = 0) -> list[int]:
    return [int(amplitude * math.sin(2 * math.pi * 300 * (offset + i) / 8000)) for i in range(n)]


def media(samples: list[int], ms: int, track: str = "inbound") -> str:
    payload = base64.b64encode(ulaw_encode(samples)).decode()
    return json.dumps(
        {"event": "media", "media": {"track": track, "chunk": "1", "timestamp": str(ms), "payload": payload}}
    )


START_FRAME = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {"callSid": "CA42", "streamSid": "MZ42", "tracks": ["inbound", "outbound"]},
    }
)


def run(frames: list[str]) -> tuple[MediaStreamSession, list]:
    session = MediaStreamSession()
    events = []
    for frame in frames:
        events += session.feed(frame, STREAM_START)
    return session, events


def speech(events: list) -> list[tuple[str, str, float]]:
    return [
        (e.kind, e.role, (e.at - STREAM_START) / timedelta(milliseconds=1))
        for e in events
        if isinstance(e, (SpeechStarted, SpeechStopped))
    ]


def test_vad_ignores_a_short_blip() -> None:
    frames = [START_FRAME] + [media(tone(8000) if 10 <= i < 13 else SILENCE, 20 * i) for i in range(50)]
    assert speech(run(frames)[1]) == []


def test_vad_bridges_a_short_pause_and_stops_after_400ms() -> None:
    loud = set(range(10, 30)) | set(range(40, 60))  # 200 ms gap in the middle
    frames = [START_FRAME] + [media(tone(8000) if i in loud else SILENCE, 20 * i) for i in range(100)]
    assert speech(run(frames)[1]) == [
        ("speech.started", "user", 200.0),
        ("speech.stopped", "user", 1200.0),
    ]


def test_vad_outbound_track_is_the_assistant() -> None:
    frames = [START_FRAME] + [media(tone(8000), 20 * i, track="outbound") for i in range(10)]
    assert speech(run(frames)[1]) == [("speech.started", "assistant", 0.0)]


def test_vad_handles_chunks_of_any_size() -> None:
    # Outbound audio may arrive in arbitrary lengths; 1 s of tone in 333-sample chunks.
    samples = tone(8000, 8000)
    frames = [START_FRAME]
    for start in range(0, len(samples), 333):
        frames.append(media(samples[start : start + 333], start // 8))
    frames += [media(SILENCE * 5, 1000 + 100 * i) for i in range(5)]
    assert speech(run(frames)[1]) == [("speech.started", "user", 0.0), ("speech.stopped", "user", 1000.0)]


def test_vad_threshold_is_configurable() -> None:
    quiet_speech = [START_FRAME] + [media(tone(600), 20 * i) for i in range(10)]
    assert speech(run(quiet_speech)[1]) == []
    session = MediaStreamSession(VadSettings(threshold_rms=200))
    events = [e for f in quiet_speech for e in session.feed(f, STREAM_START)]
    assert [e.kind for e in events if isinstance(e, SpeechStarted)] == ["speech.started"]


def test_noise_never_triggers_the_vad() -> None:
    rng = random.Random(1)
    frames = [START_FRAME] + [media([rng.randint(-300, 300) for _ in range(160)], 20 * i) for i in range(200)]
    assert speech(run(frames)[1]) == []


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        "[]",
        '"media"',
        '{"event": "media"}',
        '{"event": "media", "media": {"payload": "***"}}',
        '{"event": "media", "media": {"payload": "AAAA", "timestamp": "soon"}}',
        '{"event": "start", "start": "nope"}',
        '{"event": "dtmf", "dtmf": {}}',
        b"\xff\xfe",
    ],
)
def test_bad_frames_are_counted_not_raised(frame: str | bytes) -> None:
    session = MediaStreamSession()
    assert session.feed(frame, STREAM_START) == []
    assert session.bad_frames == 1
    assert session.last_error


def test_unknown_frames_and_frames_after_stop_are_ignored() -> None:
    session, events = run(
        [
            START_FRAME,
            '{"event": "clear", "streamSid": "MZ42"}',
            media(tone(8000), 0, track="sideways"),
            '{"event": "stop", "stop": {"callSid": "CA42"}}',
            media(tone(8000), 20),
        ]
    )
    assert [e.kind for e in events] == ["raw", "raw"]
    assert session.ignored_frames == 3
    assert session.bad_frames == 0


def test_stop_without_start_still_names_the_call() -> None:
    _, events = run(['{"event": "stop", "sequenceNumber": "9", "stop": {"callSid": "CA77"}}'])
    assert [(e.kind, e.call_id) for e in events] == [("raw", "CA77")]
