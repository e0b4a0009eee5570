"""Fuzzing the running receiver over real sockets: raw bytes in, never a 5xx out.

The real service (HTTP server, providers, pipeline, SQLite) runs on its own
event loop in a thread, so hypothesis can drive plain blocking sockets and
shrink any failure to the smallest request that shows it. Every request is
followed by a half-close, so an incomplete request is answered at once (400)
instead of at the request deadline. After each batch a correctly signed
delivery must still get 200: the receiver is alive and serving.

The outcome of every fuzzed request: zero or more complete responses, none
5xx, then the server closes the connection (or keeps it open for a
well-formed keep-alive request) within a few seconds.

CI: about two hundred requests in a few seconds. VOICE_CONSOLE_LONG=1 (or
VOICE_CONSOLE_FUZZ_EXAMPLES=N) for thousands.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.providers.retell import sign_retell
from console.providers.twilio.auth import sign_twilio, url_with_body_hash
from console.store import queries
from tests.helpers.fuzz import FUZZ, LONG, RETELL_DOCS, TWILIO_DOCS, VAPI_DOCS, bodies
from tests.helpers.receiver import (
    READ_TIMEOUT_S,
    ServiceThread,
    exchange,
    post_bytes,
    responses,
    signed_vapi_delivery,
    vapi_headers,
)
from tests.helpers.secrets import PUBLIC_URL, RETELL_KEY, TWILIO_TOKEN

# ------------------------------------------------------------------ checks


def fuzz_exchange(svc: ServiceThread, sent: bytes) -> list[int]:
    """Send one fuzzed request; its answers must be complete, never a server error, then a close.

    The one 5xx allowed is 501 for a Transfer-Encoding other than "chunked": RFC 9112
    §6.1 asks for exactly that, and it says nothing failed on the server.
    """
    data, closed = exchange(svc.port, sent)
    return check_fuzz_reply(svc, sent, data, closed)


def check_fuzz_reply(svc: ServiceThread, sent: bytes, data: bytes, closed: bool) -> list[int]:
    statuses = [status for status, _, _ in responses(data, sent.startswith(b"HEAD "))]
    for status in statuses:
        if status == 501 and b"transfer-encoding" in sent.lower():
            svc.expected_5xx += 1
        else:
            assert status < 500, (statuses, data[:300])
    assert closed, f"the server neither answered nor closed within {READ_TIMEOUT_S} s: {data[:200]!r}"
    return statuses


def assert_still_serving(svc: ServiceThread) -> None:
    data, closed = exchange(svc.port, signed_vapi_delivery(svc), half_close=False)
    [(status, _, body)] = responses(data)
    assert status == 200, body
    assert closed


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    thread = ServiceThread(tmp_path_factory.mktemp("fuzz-http"))
    yield thread
    thread.close()


@pytest.fixture
def alive_after(svc: ServiceThread) -> Iterator[ServiceThread]:
    """Check the service is serving before and after the test (hypothesis runs many examples in between)."""
    assert_still_serving(svc)
    yield svc
    assert_still_serving(svc)
    # No response was a 5xx, whatever the fuzz sent (but the RFC's 501, counted by fuzz_exchange).
    assert svc.call(lambda: svc.service.server.stats.by_class[5]) == svc.expected_5xx


# ------------------------------------------------------------------ strategies: raw requests

methods = st.one_of(
    st.sampled_from(
        [
            "GET",
            "POST",
            "PUT",
            "HEAD",
            "OPTIONS",
            "DELETE",
            "PATCH",
            "CONNECT",
            "TRACE",
            "PRI",
            "get",
            "P OST",
            "",
            "\x00",
            "POST\t",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8),
)
targets = st.one_of(
    st.sampled_from(
        [
            "/webhook/vapi",
            "/webhook/retell",
            "/webhook/retell/function",
            "/webhook/twilio/voice",
            "/webhook/twilio/status",
            "/healthz",
            "/stream/twilio",
            "*",
            "http://x/webhook/vapi",
            "/webhook/vapi?" + "a" * 3000,
            "/%ff%fe",
            "/\xff\xfe",
            "//",
            "/webhook/vapi#frag",
            "",
            "/webhook/twilio/voice?bodySHA256=%zz",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=40).map(lambda t: "/" + t),
)
versions = st.sampled_from(
    ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1 ", "HTTP/1", "http/1.1", "HTTP/9.9", ""]
)
header_lines = st.one_of(
    st.sampled_from(
        [
            "Host: t",
            "Host:",
            "Host: a\x00b",
            "Content-Type: application/json",
            "Content-Type: \xff\xfe",
            "Connection: close",
            "Connection: keep-alive, Upgrade",
            "Upgrade: websocket",
            "Expect: 100-continue",
            "Expect: 200-ok",
            "Transfer-Encoding: chunked",
            "Transfer-Encoding: gzip, chunked",
            "Transfer-Encoding: chunked, identity",
            "Transfer-Encoding: \x0bchunked",
            "Transfer-Encoding:chunked",
            "Content-Length: 0",
            "Content-Length: 5",
            "Content-Length: -1",
            "Content-Length: +5",
            "Content-Length: 5, 5",
            "Content-Length: 5, 6",
            "Content-Length: 1e3",
            "Content-Length: 0x10",
            "Content-Length: " + "9" * 30,
            "Content-Length: " + "1" * 5000,
            "Content-Length: 99999999999999999999",
            " folded: header",
            "\tobs-fold",
            "NoColon",
            ": empty-name",
            "Bad Name: x",
            "X-Vapi-Secret: nope",
            "Authorization: Bearer",
            "X-Retell-Signature: v=1,d=" + "0" * 64,
            "X-Twilio-Signature: " + "=" * 28,
            "X-Long: " + "x" * 20000,
            "X-Utf8: caf\xc3\xa9",
            "X-Bad-Utf8: \xc3\x28\xa0\xa1",
            "X-Ctrl: a\x01b",
            "X-CR: a\rb",
        ]
    ),
    st.tuples(
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12),
        st.text(alphabet=st.characters(min_codepoint=0x00, max_codepoint=0xFF), max_size=40),
    ).map(lambda pair: f"{pair[0]}: {pair[1]}"),
)
chunked_bodies = st.one_of(
    st.sampled_from(
        [
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhel",
            b"ffffffffffffffffffff\r\nx\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b'5;ext="v"\r\nhello\r\n0\r\n\r\n',
            b"5;" + b"e" * 20000 + b"\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"0\r\nTrailer: x\r\n\r\n",
            b"0\r\nBad Trailer\r\n\r\n",
            b"5\nhello\n0\n\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"100000\r\n" + b"a" * 1000,
            b"fffff\r\n" + b"a" * 70000 + b"\r\n0\r\n\r\n",
        ]
    ),
    st.lists(st.binary(max_size=40), max_size=4).map(
        lambda parts: b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    ),
)
raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"", b"{", b"\xff\xfe\xfd", b'{"message":{"type":"\xc3\x28"}}', b"[" * 100_000, b"a" * 2_000_000]),
)


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)) == 0:  # sometimes no HTTP at all
        return draw(
            st.sampled_from(
                [
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # a TLS ClientHello
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",  # the HTTP/2 preface
                    b"\r\n" * 50,
                    b"\x00" * 100,
                    b"GET / HTTP/1.1\n\n",
                    b"GET\r\n\r\n",
                ]
            )
        ) + draw(st.binary(max_size=100))
    line = f"{draw(methods)} {draw(targets)} {draw(versions)}"
    headers = draw(st.lists(header_lines, max_size=6))
    if draw(st.booleans()):
        headers.insert(0, "Host: t")
    newline = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"]))
    head = newline.join(part.encode("latin-1") for part in [line, *headers]) + newline + newline
    chunked = any("chunked" in h.lower() for h in headers)
    body = draw(chunked_bodies if chunked else raw_bodies)
    if not chunked and draw(st.booleans()) and not any(h.lower().startswith("content-length") for h in headers):
        cut = draw(st.sampled_from([0, 1, -1, 100]))  # a declared length that is wrong on purpose
        head = head[: -2 * len(newline)] + newline + b"Content-Length: %d" % max(0, len(body) + cut) + newline * 2
    data = head + body
    if draw(st.integers(0, 4)) == 0:  # truncated anywhere
        data = data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if draw(st.integers(0, 5)) == 0:  # a second, pipelined request behind it
        data += b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    return data


# ------------------------------------------------------------------ fuzz: raw bytes


@FUZZ
@given(data=raw_requests())
def test_garbage_requests_get_4xx_or_a_close_never_5xx(alive_after: ServiceThread, data: bytes) -> None:
    fuzz_exchange(alive_after, data)


# ------------------------------------------------------------------ fuzz: signed hostile bodies


@st.composite
def signed_deliveries(draw: st.DrawFn, svc: ServiceThread) -> tuple[str, bytes]:
    provider = draw(st.sampled_from(["vapi", "retell", "retell.function", "twilio"]))
    now_ms = int(time.time() * 1000)
    if provider == "vapi":
        body = draw(bodies(VAPI_DOCS))
        return provider, post_bytes(
            "/webhook/vapi", body, {"content-type": "application/json", **vapi_headers(svc.service, body)}
        )
    if provider.startswith("retell"):
        body = draw(bodies(RETELL_DOCS))
        path = "/webhook/retell/function" if provider == "retell.function" else "/webhook/retell"
        return provider, post_bytes(
            path,
            body,
            {"content-type": "application/json", "x-retell-signature": sign_retell(body, RETELL_KEY, now_ms)},
        )
    body = draw(bodies(TWILIO_DOCS))
    route = draw(st.sampled_from(["/webhook/twilio/voice", "/webhook/twilio/status"]))
    url = url_with_body_hash(PUBLIC_URL + route, body)
    return provider, post_bytes(
        url[len(PUBLIC_URL) :],
        body,
        {"content-type": "application/json", "x-twilio-signature": sign_twilio(url, body, TWILIO_TOKEN)},
    )


@FUZZ
@given(data=st.data())
def test_signed_hostile_bodies_get_2xx_or_400_never_5xx(alive_after: ServiceThread, data: st.DataObject) -> None:
    """Authentic deliveries with wrong types, huge numbers, deep nesting: stored and answered, or 400."""
    provider, request = data.draw(signed_deliveries(alive_after))
    raw, closed = exchange(alive_after.port, request, half_close=False)
    [(status, _, body)] = responses(raw)
    assert status in (200, 204, 400), (provider, status, body[:300])
    if status == 400:
        assert json.loads(body)["error"]["message"].startswith("bad payload:")
    assert closed


# ------------------------------------------------------------------ targeted cases (regressions)

DEEP = b"[" * 100_000
HUGE_INT = b"9" * 5000


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(DEEP, id="100k-brackets"),
        pytest.param(b'{"message":' + DEEP + b"}", id="100k-brackets-in-message"),
        pytest.param(b'{"message":{"type":"x","a":' + b"[" * 900 + b"]" * 900 + b"}}", id="900-deep-complete"),
        pytest.param(b'{"message":{"type":"status-update","timestamp":' + HUGE_INT + b"}}", id="5000-digit-int"),
        pytest.param(
            b'{"message":{"type":"transcript","role":"user","transcript":"a\\ud800","call":{"id":"c"}}}',
            id="lone-surrogate",
        ),
        pytest.param(
            b'{"message":{"type":"transcript","role":"user","transcript":"\xed\xa0\x80","call":{"id":"c"}}}',
            id="surrogate-bytes",
        ),
    ],
)
def test_hostile_json_is_400_on_every_provider(alive_after: ServiceThread, body: bytes) -> None:
    svc = alive_after
    now_ms = int(time.time() * 1000)
    status_url = url_with_body_hash(PUBLIC_URL + "/webhook/twilio/status", body)
    requests = {
        "vapi": post_bytes("/webhook/vapi", body, vapi_headers(svc.service, body)),
        "retell": post_bytes("/webhook/retell", body, {"x-retell-signature": sign_retell(body, RETELL_KEY, now_ms)}),
        "retell.function": post_bytes(
            "/webhook/retell/function", body, {"x-retell-signature": sign_retell(body, RETELL_KEY, now_ms)}
        ),
        "twilio": post_bytes(
            status_url[len(PUBLIC_URL) :],
            body,
            {"content-type": "application/json", "x-twilio-signature": sign_twilio(status_url, body, TWILIO_TOKEN)},
        ),
    }
    for provider, request in requests.items():
        raw, _ = exchange(svc.port, request, half_close=False)
        [(status, _, reply)] = responses(raw)
        assert status == 400, (provider, reply)
        assert json.loads(reply)["error"]["message"].startswith("bad payload:")


def test_nan_infinity_and_huge_floats_are_stored(alive_after: ServiceThread) -> None:
    svc = alive_after
    body = (
        b'{"message":{"type":"end-of-call-report","cost":Infinity,"durationSeconds":NaN,"endedReason":"x",'
        b'"timestamp":1e999999,"call":{"id":"call-nan"}}}'
    )
    raw, _ = exchange(svc.port, post_bytes("/webhook/vapi", body, vapi_headers(svc.service, body)), half_close=False)
    [(status, _, _)] = responses(raw)
    assert status == 200
    detail = svc.run(queries.get_call(svc.service.store, "call-nan"))
    assert detail is not None and detail["events"]


@pytest.mark.parametrize(
    "request_bytes, expected",
    [
        pytest.param(
            b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\n",
            413,  # over any limit (llhttp says overflow; h11 said "bad Content-Length", 400)
            id="5000-digit-content-length",
        ),
        pytest.param(
            b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n",
            413,
            id="huge-content-length",
        ),
        pytest.param(b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400, id="negative-cl"),
        pytest.param(b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello", 400, id="plus-cl"),
        pytest.param(
            b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffffff\r\n",
            400,
            id="chunk-size-overflow",
        ),
        pytest.param(
            b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            501,
            id="te-twice",
        ),
        pytest.param(
            b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n"
            b"0\r\n\r\n",
            400,
            id="te-and-cl-zero",
        ),
        pytest.param(
            b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n folded: x\r\n\r\nabc", 400, id="obs-fold"
        ),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: t\x00x\r\n\r\n", 400, id="nul-in-header"),
        pytest.param(b"GET /\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n", 400, id="invalid-utf8-target"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, id="http2-preface"),  # refused (h11 took it: 404)
        pytest.param(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 60, 400, id="tls-client-hello"),
        pytest.param(
            b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n", 413, id="body-over-1mib"
        ),
        pytest.param(
            b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nshort", 400, id="truncated-body"
        ),
    ],
)
def test_malformed_framing_on_the_real_service(alive_after: ServiceThread, request_bytes: bytes, expected: int) -> None:
    raw, closed = exchange(alive_after.port, request_bytes)
    assert check_fuzz_reply(alive_after, request_bytes, raw, closed) == [expected]
    [(_, headers, body)] = responses(raw)
    assert headers.get("connection") == "close"
    assert json.loads(body)["error"]["message"]


def test_invalid_utf8_header_value_is_kept_not_fatal(alive_after: ServiceThread) -> None:
    """Header bytes above 0x7f are legal obs-text: the request is served (401 here: the secret is wrong)."""
    body = b'{"message":{"type":"hang","call":{"id":"c"}}}'
    raw, _ = exchange(
        alive_after.port, post_bytes("/webhook/vapi", body, {"X-Vapi-Secret": "\xc3\x28\xff"}), half_close=False
    )
    [(status, _, reply)] = responses(raw)
    assert status == 401 and b"does not match" in reply


# ------------------------------------------------------------------ memory stays bounded


def test_memory_is_bounded_under_a_fuzz_batch(alive_after: ServiceThread) -> None:
    """Thousands of hostile requests leave no growth beyond caches and the SQLite page cache."""
    svc = alive_after
    rounds = 2000 if LONG else 60
    batch = [
        b"THIS IS NOT HTTP\r\n\r\n",
        b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /webhook/vapi HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Long: " + b"x" * 20000,
        post_bytes("/webhook/vapi", DEEP, {"x-vapi-secret": "wrong"}),
        signed_vapi_delivery(svc, "call-memory"),
    ]

    def one_round() -> None:
        for data in batch:
            fuzz_exchange(svc, data)

    for _ in range(10):  # warm up caches, pools and the store's statements
        one_round()
    tracemalloc.start()
    try:
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        for _ in range(rounds):
            one_round()
        elapsed = time.monotonic() - started
        svc.run(asyncio.sleep(0.2))  # let the connections' last callbacks run
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        tracemalloc.stop()
    growth = after - before
    print(
        f"\n{rounds * len(batch)} hostile requests in {elapsed:.1f} s: traced memory {before / 1e6:.2f} -> "
        f"{after / 1e6:.2f} MB (peak {peak / 1e6:.2f} MB), max RSS {rss_before / 1e3:.0f} -> {rss_after / 1e3:.0f} MB"
    )
    assert growth < 4_000_000, f"traced memory grew by {growth / 1e6:.1f} MB"
    assert svc.call(lambda: svc.service.server.stats.connections_open) <= 1
