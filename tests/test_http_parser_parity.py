"""The receiver's parser (httptools/llhttp) refuses everything h11 refused, and reads the rest alike.

h11 parsed every request before; it stays the oracle here. Each input goes to the real
server over a real loopback socket (then a half-close, so an incomplete request is
answered rather than timed out) and, separately, through an `h11.Connection`:

* h11 refuses it, or finds it incomplete → the server refuses it too (4xx or 5xx), and
  the route's handler never sees it;
* h11 accepts it → the server either refuses it (llhttp is stricter in places: control
  characters in values, duplicate equal Content-Lengths, bare LF) or hands the handler
  exactly what h11 read: method, target, headers (names lower-cased, values trimmed), body.

Two differences are allowed and named: llhttp skips blank lines before a request line
(RFC 9112 2.2 says a server SHOULD) and reads runs of spaces in the request line as
one. Neither changes where a body ends, which is what smuggling is about.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from console.receiver.http import HttpServer, Limits
from tests.helpers.http_server import TEST_LIMITS, make_router

Parsed = tuple[str, str, list[list[str]], str]  # method, target, headers, body


def h11_reading(data: bytes) -> Parsed | str:
    """What h11 makes of the first request in `data`: the request, or "refused"/"incomplete"."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=TEST_LIMITS.max_head_bytes)
    conn.receive_data(data)
    head: h11.Request | None = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif event is h11.NEED_DATA or event is h11.PAUSED:
                return "incomplete"
    except h11.RemoteProtocolError:
        return "refused"
    assert head is not None
    if len(body) > TEST_LIMITS.max_body_bytes:
        return "refused"
    headers = [[name.decode("latin-1"), value.decode("latin-1")] for name, value in head.headers]
    return (head.method.decode(), head.target.decode("latin-1"), headers, body.decode("utf-8", "replace"))


async def server_reading(server: HttpServer, data: bytes) -> tuple[int, bytes]:
    """The status and body of the server's first answer to `data` (sent, then half-closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        writer.write_eof()
        raw = await asyncio.wait_for(reader.read(-1), 5)
    finally:
        writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    lines = head.split(b"\r\n")[1:]
    length = next((int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")), 0)
    return status, rest[:length]


def allowed_difference(data: bytes) -> bool:
    request_line = data.split(b"\n", 1)[0]
    return data.startswith((b"\r", b"\n")) or b"  " in request_line


async def check_parity(server: HttpServer, data: bytes) -> str:
    expected = h11_reading(data)
    status, body = await server_reading(server, data)
    if isinstance(expected, str):
        if status < 400 and allowed_difference(data):
            return "lenient (allowed)"
        assert status >= 400, f"h11 found this {expected}, the server answered {status}: {data!r}"
        return "refused by both"
    if status >= 400:
        return "refused by the server only"
    assert status == 200, (status, body, data)
    got = json.loads(body)
    method, target, headers, text = expected
    assert (got["method"], got["target"], got["headers"], got["body"]) == (method, target, headers, text), data
    return "read alike"


@pytest.fixture
async def server() -> AsyncIterator[HttpServer]:
    # A short deadline: an incomplete request that the half-close did not end is answered fast.
    limits = Limits(**{**TEST_LIMITS.__dict__, "request_deadline_s": 1.0})
    server = HttpServer(make_router(), host="127.0.0.1", port=0, limits=limits)
    await server.start()
    yield server
    await server.close(grace_s=0.5)


SMUGGLING_AND_FRAMING = {
    "cl-and-te": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
    "te-and-cl": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n",
    "conflicting-cl": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl-list": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 6\r\n\r\nhello!",
    "cl-plus": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello",
    "cl-negative": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
    "cl-hex": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello",
    "cl-inner-space": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1 2\r\n\r\nhello",
    "te-gzip": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te-gzip-chunked": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-twice": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    "te-space-before-colon": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te-obs-fold": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "te-vertical-tab": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
    "chunk-size-garbage": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ffffffffffffffffffffff\r\n",
    "chunk-bad-terminator": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
    "chunk-negative": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "missing-host": b"GET /echo HTTP/1.1\r\n\r\n",
    "space-in-name": b"GET /echo HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
    "empty-name": b"GET /echo HTTP/1.1\r\nHost: t\r\n: x\r\n\r\n",
    "nul-in-value": b"GET /echo HTTP/1.1\r\nHost: t\x00x\r\n\r\n",
    "lf-in-value": b"GET /echo HTTP/1.1\r\nHost: t\r\nX: a\nb\r\n\r\n",
    "bare-cr": b"GET /echo HTTP/1.1\rHost: t\r\n\r\n",
    "non-ascii-target": b"GET /\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n",
    "tab-in-target": b"GET /a\tb HTTP/1.1\r\nHost: t\r\n\r\n",
    "http-0.9": b"GET /echo\r\n\r\n",
    "http-2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "tls-hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 60,
    "truncated-body": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nshort",
    "truncated-chunked": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "body-over-limit": b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n\r\n",
    "head-over-limit": b"GET /echo HTTP/1.1\r\nHost: t\r\nX-Long: " + b"z" * 20000 + b"\r\n\r\n",
    # Accepted by both, and read alike:
    "plain": b"POST /echo?a=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    "chunked-with-extension-and-trailer": b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "whitespace-around-values": b"GET /echo HTTP/1.1\r\nHost:   t  \r\nX-A:\tb c\t \r\nX-Empty:\r\n\r\n",
    "mixed-case-names": b"GET /echo HTTP/1.1\r\nHOST: t\r\nX-MiXeD: Value\r\n\r\n",
    "obs-text-value": b"GET /echo HTTP/1.1\r\nHost: t\r\nX: caf\xe9\r\n\r\n",
    "http-1.0": b"GET /echo HTTP/1.0\r\n\r\n",
    "absolute-form": b"GET http://t/echo HTTP/1.1\r\nHost: t\r\n\r\n",
}


@pytest.mark.parametrize("data", SMUGGLING_AND_FRAMING.values(), ids=SMUGGLING_AND_FRAMING.keys())
async def test_the_parser_refuses_what_h11_refused(server: HttpServer, data: bytes) -> None:
    await check_parity(server, data)


async def test_the_corpus_covers_both_verdicts(server: HttpServer) -> None:
    verdicts = [await check_parity(server, data) for data in SMUGGLING_AND_FRAMING.values()]
    assert verdicts.count("refused by both") >= 25  # and both CL+TE cases, which h11 let through, by the server
    assert verdicts.count("read alike") >= 6


BASES = [
    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    b"GET /echo?q=1 HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n",
]
INTERESTING = [b"\r", b"\n", b" ", b"\t", b":", b"\x00", b"0", b"9", b"a", b",", b";", b"-", b"\x7f", b"\xff", b"\x0b"]
edits = st.lists(
    st.tuples(st.sampled_from(["insert", "replace", "delete"]), st.floats(0, 1), st.sampled_from(INTERESTING)),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, changes: list[tuple[str, float, bytes]]) -> bytes:
    for op, where, byte in changes:
        at = min(int(where * len(data)), len(data) - 1)
        if op == "insert":
            data = data[:at] + byte + data[at:]
        elif op == "replace":
            data = data[:at] + byte + data[at + 1 :]
        else:
            data = data[:at] + data[at + 1 :]
    return data


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from(BASES), changes=edits)
def test_mutated_requests_are_refused_or_read_as_h11_reads_them(
    base: bytes, changes: list[tuple[str, float, bytes]]
) -> None:
    data = mutate(base, changes)

    async def run() -> None:
        limits = Limits(**{**TEST_LIMITS.__dict__, "request_deadline_s": 1.0})
        server = HttpServer(make_router(), host="127.0.0.1", port=0, limits=limits)
        await server.start()
        try:
            await check_parity(server, data)
        finally:
            await server.close(grace_s=0.5)

    asyncio.run(run())
