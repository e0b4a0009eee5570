"""Strict JSON for webhook bodies: what `json.loads` accepts, minus what breaks later.

`json.loads` accepts input that nothing downstream can handle, so a signed but
hostile (or broken) body would end in a 500 instead of a 400:

* nesting deep enough to exhaust the interpreter's recursion limit, here
  (RecursionError) or in any later recursive step (pydantic serialization, the
  store's redaction), so nesting is capped at `MAX_DEPTH`;
* unpaired UTF-16 surrogates (a `"\\ud800"` escape, or its raw bytes, which
  `json.loads` lets through), which cannot be encoded to UTF-8 for SQLite;
* integers past Python's int/str conversion limit (4300 digits): a plain
  ValueError with an unhelpful message.

All three raise `JsonRefused`, a ValueError, so every provider's existing
`except ValueError` turns them into its own BadPayload (and a tool-argument
string into kept-as-text arguments). Syntax errors stay `json.JSONDecodeError`
and undecodable bytes `UnicodeDecodeError`.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "JsonRefused", "loads"]

# Real webhooks nest about 10 levels; tool arguments a few more. Far below the
# depth at which pydantic or the interpreter give up.
MAX_DEPTH = 64

_decode = json.JSONDecoder().decode
# Only bodies that could hold a surrogate are walked: an escape \uD800-\uDFFF or
# the raw bytes ED A0..BF that "surrogatepass" decodes to one.
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_MAYBE_SURROGATE_TEXT = re.compile("\\\\u[dD][89a-fA-F]|[\ud800-\udfff]")


class JsonRefused(ValueError):
    """Valid JSON syntax that the receiver will not accept (see the module docstring)."""


def loads(document: bytes | str) -> Any:
    """Decode like `json.loads(document)`, with the checks above."""
    try:
        if type(document) is bytes and document[:1] in (b"{", b"[") and document[1:2] != b"\x00":
            # What json.loads(bytes) does for UTF-8 (its encoding sniffing only
            # differs when the second byte is NUL), minus the sniffing.
            data = _decode(document.decode("utf-8", "surrogatepass"))
        else:
            data = json.loads(document)
    except RecursionError:
        raise JsonRefused(f"the JSON is nested too deeply (limit {MAX_DEPTH} levels)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except ValueError as exc:  # the int/str digit limit
        raise JsonRefused(f"a number in the JSON is too long ({exc})") from None
    # Depth can only exceed the limit when there are more openers than the limit.
    suspect: object
    if isinstance(document, str):
        suspect = document.count("{") + document.count("[") > MAX_DEPTH or _MAYBE_SURROGATE_TEXT.search(document)
    else:
        suspect = document.count(b"{") + document.count(b"[") > MAX_DEPTH or _MAYBE_SURROGATE.search(document)
    if suspect:
        _check(data)
    return data


def _check(root: Any) -> None:
    """Walk the decoded value once, without recursion: depth and surrogates."""
    stack = [(root, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        kind = type(node)
        if kind is str:
            _check_text(node)
            continue
        if depth > MAX_DEPTH:
            raise JsonRefused(f"the JSON is nested too deeply (limit {MAX_DEPTH} levels)")
        if kind is dict:
            for key, value in node.items():
                _check_text(key)
                if type(value) in (dict, list, str):
                    push((value, depth + 1))
        elif kind is list:
            for value in node:
                if type(value) in (dict, list, str):
                    push((value, depth + 1))


def _check_text(text: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise JsonRefused(
            "the JSON contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not valid Unicode text"
        ) from None
