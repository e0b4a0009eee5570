"""Hypothesis strategies for webhook bodies: the real fixture payloads with fields replaced at any
depth by values of the wrong type or shape, dropped fields, or bytes that are not JSON at all.

CI runs a few hundred examples per test; VOICE_CONSOLE_LONG=1 (or VOICE_CONSOLE_FUZZ_EXAMPLES=N) thousands.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any
from urllib.parse import parse_qsl

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.helpers.secrets import PAYLOADS

LONG = os.environ.get("VOICE_CONSOLE_LONG", "") not in ("", "0")
EXAMPLES = int(os.environ.get("VOICE_CONSOLE_FUZZ_EXAMPLES", "4000" if LONG else "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)

# ------------------------------------------------------------------ strategies

# Placeholders serialized as strings, then swapped for raw JSON text that
# json.dumps cannot produce (or only slowly): the nasty number and nesting cases.
RAW_TOKENS = {
    "@@HUGE_INT@@": "9" * 5000,  # past Python's 4300-digit int/str limit
    "@@BIG_INT@@": "9" * 4000,  # parses, but overflows float()
    "@@HUGE_FLOAT@@": "1e999999",  # inf
    "@@TINY_FLOAT@@": "-1e-999999",
    "@@NEG_ZERO@@": "-0.0",
    "@@LONE_SURROGATE@@": '"\\ud800x"',
    "@@LOW_SURROGATE@@": '"\\udfff"',
    "@@PAIRED_SURROGATE@@": '"\\ud83d\\ude00"',  # a valid emoji, must be accepted
    "@@DEEP_OK@@": "[" * 60 + "]" * 60,
    "@@DEEP_64@@": '{"a":' * 63 + "1" + "}" * 63,
    "@@DEEP_65@@": "[" * 65 + "]" * 65,
    "@@DEEP_2000@@": "[" * 2000 + "]" * 2000,
    "@@DEEP_100K@@": "[" * 100_000,  # unterminated as well
}
_TOKEN_RE = re.compile("|".join(re.escape(json.dumps(t)) for t in RAW_TOKENS))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            " ",
            "null",
            "0",
            "-1",
            "1e309",
            "NaN",
            "2026-13-45T99:99:99Z",
            "\x00",
            "é" * 3,
            "true",
            "{}",
            "[]",
            '{"a": 1}',
            "ended",
            "user",
            "tool-calls",
        ]
    ),
    st.sampled_from(sorted(RAW_TOKENS)),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=8), children, max_size=4),
    ),
    max_leaves=12,
)


def to_body(value: Any) -> bytes:
    text = json.dumps(value, allow_nan=True, ensure_ascii=False)
    text = _TOKEN_RE.sub(lambda m: RAW_TOKENS[json.loads(m.group(0))], text)
    return text.encode("utf-8", "surrogatepass")


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside a JSON document (keys and list indices)."""
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out += paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value[:6]):
            out += paths(child, prefix + (index,))
    return out


def replaced(document: Any, path: tuple, new: Any, delete: bool) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        copy = dict(document)
        if delete and not rest:
            copy.pop(head, None)
        else:
            copy[head] = replaced(document[head], rest, new, delete)
        return copy
    copy = list(document)
    if delete and not rest:
        del copy[head]
    else:
        copy[head] = replaced(document[head], rest, new, delete)
    return copy


@st.composite
def mutated_json(draw: st.DrawFn, documents: list[Any]) -> bytes:
    """A fixture document with one to three fields replaced (or dropped) by garbage."""
    document = draw(st.sampled_from(documents))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths(document)))
        document = replaced(document, path, draw(json_values), delete=bool(path) and draw(st.booleans()))
    return to_body(document)


raw_garbage = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b" ",
            b"null",
            b"[]",
            b'""',
            b"{",
            b'{"message":',
            b"\xff\xfe{\x00}\x00",
            b"\xef\xbb\xbf{}",
            b'{"a":1}\x00',
            b"\xed\xa0\x80",
            b'{"message":{"type":"\xed\xa0\x80"}}',
            b"[" * 100_000,
            b"9" * 5000,
            b'{"event":"call_ended","call":' + b"[" * 3000 + b"}",
        ]
    ),
)


def fixture_documents(provider: str) -> list[Any]:
    return [json.loads(p.read_bytes()) for p in sorted((PAYLOADS / provider).glob("*.json"))]


VAPI_DOCS = fixture_documents("vapi")
RETELL_DOCS = fixture_documents("retell")
TWILIO_FORMS = [
    dict(parse_qsl(p.read_text().strip(), keep_blank_values=True)) for p in sorted((PAYLOADS / "twilio").glob("*.form"))
]
TWILIO_DOCS = fixture_documents("twilio")


def bodies(documents: list[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(mutated_json(documents), mutated_json(documents), raw_garbage)
