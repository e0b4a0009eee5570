"""Masking Vapi's live-call URLs (listenUrl/controlUrl) in raw bodies before the history.

`mask_monitor_bytes` finds the keys with `bytes.find` rather than a regex walking the
whole body (it runs on every request). The regex it replaced is the reference: on
real bodies and on random soups of keys, quotes, escapes and control characters,
both give the same bytes.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from console.redact import _MONITOR_URL, _masked_value, mask_monitor_bytes

_REFERENCE = re.compile(_MONITOR_URL.pattern.encode())


def reference(body: bytes) -> bytes:
    return _REFERENCE.sub(
        lambda m: m.group(1) + b'"' + _masked_value(m.group(2).decode("utf-8", "replace")).encode() + b'"', body
    )


LISTEN = "wss://phone-call-websocket.aws-us-west-2-backend-production1.vapi.ai/5f2c9a8e/listen"
CONTROL = "https://phone-call-websocket.aws-us-west-2-backend-production1.vapi.ai/5f2c9a8e/control"


def test_a_call_objects_monitor_urls_keep_scheme_and_host_only() -> None:
    body = (
        '{"message":{"type":"status-update","call":{"id":"c1","monitor":'
        f'{{"listenUrl":"{LISTEN}","controlUrl" : "{CONTROL}"}}}}}}}}'
    ).encode()
    masked = mask_monitor_bytes(body)
    assert b"5f2c9a8e" not in masked
    assert masked.count("vapi.ai/…".encode()) == 2
    assert masked == reference(body)


def test_escaped_and_odd_values_are_masked_as_before() -> None:
    for body in [
        b'{"listenUrl":"wss:\\/\\/h.example\\/secret","x":"controlUrl"}',  # escaped slashes
        b'{"control_url":"not a url","listen_url":5}',
        b'{"a":"\\"listenUrl\\": \\"wss://h/secret\\""}',  # the key inside another string
        b'{"listenUrl":"wss://h/unterminated',
        b'{"listenUrl":"wss://h/a\nb"}',  # a raw control character: not JSON, hidden whole
        b'{"nothing":"here"}',
    ]:
        assert mask_monitor_bytes(body) == reference(body), body


SOUP = [
    b'"listenUrl"',
    b'"controlUrl"',
    b'"listen_url"',
    b'"control_url"',
    b'Url"',
    b'_url"',
    b":",
    b" ",
    b"\t",
    b"\n",
    b'"',
    b"\\",
    b'\\"',
    b",",
    b"{",
    b"}",
    b"x",
    b"wss://h/p",
    b"//",
    b"[::1]",
    b"\xff",
    b"\xe2\x80",
]


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(SOUP), max_size=16))
def test_random_soups_are_masked_exactly_as_the_regex_did(pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    assert mask_monitor_bytes(body) == reference(body)
