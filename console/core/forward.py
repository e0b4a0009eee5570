"""Pass tool calls on to the user's own webhook server and relay its answers.

Whatever the target does — answers, answers garbage, is slow, is down — every
call gets an outcome before the deadline, with an error that says what happened.

The platform's body is forwarded verbatim while it still says what is being
asked. When the gate drops calls from a batch or an operator edits arguments,
`rebuild_body` writes the body the platform would have sent for just those
calls, and an optional signer re-authenticates it the way the platform would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from console.core.tools import ToolBatch, ToolCall, ToolOutcome, decode_arguments

# Headers that describe the hop, not the message; httpx sets its own.
_HOP_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "expect", "trailer"}
)
# Auth headers the platforms send; they sign the original body, not a rebuilt one.
SIGNATURE_HEADERS = frozenset({"x-vapi-secret", "authorization", "x-signature", "x-timestamp", "x-retell-signature"})

# Returns the auth headers the platform would send with `body` (a rebuilt body for `batch`).
Signer = Callable[[ToolBatch, bytes], dict[str, str]]


def one_line(value: Any) -> str:
    """Platforms want tool results as single-line strings; objects are JSON-encoded,
    and pretty-printed JSON text is re-encoded compactly."""
    if not isinstance(value, str):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    lines = value.splitlines()
    if len(lines) > 1 and value.lstrip()[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(value), separators=(",", ":"), ensure_ascii=False)
        except ValueError:
            pass
    return " ".join(lines).strip()


# --- rebuilding a platform body for fewer calls or edited arguments -------------------------


def rebuild_body(batch: ToolBatch) -> bytes:
    """The body the platform would have sent for exactly `batch.calls`.

    Unchanged bytes when the original already says exactly that; otherwise the
    original re-serialized with other calls removed and edited arguments
    written back in the representation the platform used. Without a usable
    original body, a minimal body of the dialect is made up from the batch.
    """
    return _rebuild(batch)[0]


def _rebuild(batch: ToolBatch) -> tuple[bytes, bool]:
    """(body, changed): `changed` is False only when `body` is the original bytes."""
    if batch.dialect == "retell-function" and batch.extra.get("payload") == "empty":
        # A GET/DELETE function carries its arguments in the query; the body stays empty.
        return batch.raw_body, False
    data = _decode(batch.raw_body)
    if data is None:
        return _dump(_synthesize(batch)), True
    if batch.dialect == "retell-function":
        data, changed = _rebuild_retell(data, batch)
    else:
        message = data.get("message")
        if not isinstance(message, dict):
            return _dump(_synthesize(batch)), True
        rebuild = _rebuild_function_call if batch.dialect == "vapi-function-call" else _rebuild_tool_calls
        changed = rebuild(message, batch)
    return (_dump(data), True) if changed else (batch.raw_body, False)


def _decode(body: bytes) -> dict[str, Any] | None:
    if not body.strip():
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _dump(data: Any) -> bytes:
    # Compact UTF-8, as both platforms send it.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _rebuild_tool_calls(message: dict[str, Any], batch: ToolBatch) -> bool:
    wanted = {call.tool_call_id: call for call in batch.calls}
    changed = False
    for key in ("toolCallList", "toolCalls"):
        items = message.get(key)
        if isinstance(items, list):
            kept = []
            for item in items:
                keep, edited = _keep_item(item, wanted)
                changed |= edited or not keep
                if keep:
                    kept.append(item)
            message[key] = kept
    entries = message.get("toolWithToolCallList")
    if isinstance(entries, list):
        kept = []
        for entry in entries:
            # Only `toolCall` holds arguments; the entry's `function.parameters` is the JSON Schema.
            tool_call = entry.get("toolCall") if isinstance(entry, dict) else None
            keep, edited = _keep_item(tool_call, wanted)
            changed |= edited or not keep
            if keep:
                kept.append(entry)
        message["toolWithToolCallList"] = kept
    return changed


def _keep_item(item: Any, wanted: dict[str, ToolCall]) -> tuple[bool, bool]:
    """(keep, arguments edited). Items without a usable id are not calls anyone answers: kept as sent."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
        return True, False
    call = wanted.get(item["id"])
    if call is None:
        return False, False
    return True, _substitute_item_arguments(item, call.arguments)


def _substitute_item_arguments(item: dict[str, Any], arguments: dict[str, Any]) -> bool:
    """Write `arguments` where the parser read them (function.arguments ?? arguments ??
    function.parameters ?? parameters), in the same representation. True if it changed."""
    function = item.get("function") if isinstance(item.get("function"), dict) else None
    for container, key in (
        (function, "arguments"),
        (item, "arguments"),
        (function, "parameters"),
        (item, "parameters"),
    ):
        if container is not None and container.get(key) is not None:
            return _substitute(container, key, arguments)
    if not arguments:
        return False
    if function is not None:
        function["arguments"] = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)  # OAS: a string
    else:
        item["parameters"] = arguments  # the flattened prose form
    return True


def _rebuild_function_call(message: dict[str, Any], batch: ToolBatch) -> bool:
    function = message.get("functionCall")
    if not isinstance(function, dict) or not batch.calls:
        return False
    # The parser reads `parameters` first, then `arguments`.
    key = "arguments" if function.get("parameters") is None and function.get("arguments") is not None else "parameters"
    return _substitute(function, key, batch.calls[0].arguments)


def _rebuild_retell(data: dict[str, Any], batch: ToolBatch) -> tuple[dict[str, Any], bool]:
    if not batch.calls:
        return data, False
    arguments = batch.calls[0].arguments
    full = batch.extra.get("payload") == "full" or (
        "payload" not in batch.extra
        and isinstance(data.get("name"), str)
        and (isinstance(data.get("args"), dict) or isinstance(data.get("call"), dict))
    )
    if not full:  # "Payload: args only": the body is the arguments object itself
        return arguments, data != arguments
    if data.get("args") == arguments:
        return data, False
    data["args"] = arguments
    return data, True


def _substitute(container: dict[str, Any], key: str, arguments: dict[str, Any]) -> bool:
    raw = container.get(key)
    if raw is not None and _same_arguments(raw, arguments):
        return False
    if isinstance(raw, str):  # a JSON string stays a JSON string
        container[key] = json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)
    else:
        container[key] = arguments
    return True


def _same_arguments(raw: Any, arguments: dict[str, Any]) -> bool:
    """Whether `arguments` is what the provider parsed out of `raw` (nothing edited)."""
    return decode_arguments(raw) == arguments


def _synthesize(batch: ToolBatch) -> dict[str, Any]:
    """A minimal body of the dialect, for a batch that arrived without a usable original."""
    call_ref = {"id": batch.call_id} if batch.call_id else None
    if batch.dialect == "retell-function":
        first = batch.calls[0] if batch.calls else ToolCall("", "", {})
        body: dict[str, Any] = {"name": first.name, "args": first.arguments}
        if batch.call_id:
            body["call"] = {"call_id": batch.call_id}
        return body
    if batch.dialect == "vapi-function-call":
        first = batch.calls[0] if batch.calls else ToolCall("", "", {})
        function = {"name": first.name, "parameters": first.arguments}
        message: dict[str, Any] = {"type": "function-call", "functionCall": function}
    else:
        message = {
            "type": "tool-calls",
            "toolCallList": [
                {"id": c.tool_call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in batch.calls
            ],
        }
    if call_ref is not None:
        message["call"] = call_ref
    return {"message": message}


# --- the handler ------------------------------------------------------------------------------


class ForwardingToolHandler:
    """Forward every call of a batch to `url` in one request, in the platform's dialect.

    `signer`: re-authenticates a rebuilt body (the lead wires it to
    `sign_vapi_request` / `sign_retell`); without it a rebuilt body keeps the
    original auth headers, which still hold for secret/bearer auth but not for
    a body signature.
    """

    def __init__(
        self, url: str, client: httpx.AsyncClient, *, timeout_s: float = 10.0, signer: Signer | None = None
    ) -> None:
        self.url = url
        self._client = client
        self._timeout_s = timeout_s
        self._signer = signer

    def prepare(self, batch: ToolBatch) -> tuple[bytes, list[tuple[str, str]]]:
        """The body and headers to send for `batch` (the original ones when nothing changed)."""
        headers = [(k, v) for k, v in batch.headers if k.lower() not in _HOP_HEADERS]
        body, changed = _rebuild(batch)
        if not changed:
            return body, headers
        if self._signer is not None:
            auth = self._signer(batch, body)
            drop = SIGNATURE_HEADERS | {name.lower() for name in auth}
            headers = [(k, v) for k, v in headers if k.lower() not in drop] + list(auth.items())
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("content-type", batch.content_type or "application/json"))
        return body, headers

    async def decide(self, batch: ToolBatch) -> list[ToolOutcome]:
        started = time.perf_counter()
        try:
            body, headers = self.prepare(batch)
        except Exception as exc:  # a broken signer must still yield an answer per call
            return self._all_failed(batch, started, f"the forwarded request could not be signed ({type(exc).__name__})")
        url = self.url
        if not batch.raw_body and "?" in batch.path:
            # Retell GET/DELETE functions carry their arguments in the query string.
            url += ("&" if "?" in url else "?") + batch.path.split("?", 1)[1]
        try:
            response = await self._client.request(
                batch.method,
                url,
                content=body,
                headers=headers,
                timeout=min(self._timeout_s, batch.platform_timeout_s),
            )
        except httpx.TimeoutException:
            return self._all_failed(batch, started, f"the tool server at {self.url} did not answer in time")
        except httpx.HTTPError as exc:
            return self._all_failed(
                batch, started, f"the tool server at {self.url} is unreachable ({type(exc).__name__})"
            )
        if not 200 <= response.status_code < 300:
            return self._all_failed(
                batch, started, f"the tool server at {self.url} answered HTTP {response.status_code}"
            )
        return self._outcomes(batch, response, started)

    def _outcomes(self, batch: ToolBatch, response: httpx.Response, started: float) -> list[ToolOutcome]:
        latency = (time.perf_counter() - started) * 1000
        if batch.dialect == "retell-function":
            text = response.text
            try:
                body = response.json()
                if isinstance(body, dict) and ("result" in body or "error" in body):
                    if body.get("error") is not None:
                        return [self._outcome(batch.calls[0], latency, error=one_line(body["error"]))]
                    text = one_line(body.get("result"))
            except ValueError:
                pass
            return [self._outcome(batch.calls[0], latency, result=text)]
        try:
            body = response.json()
        except ValueError:
            return self._all_failed(
                batch, started, f"the tool server at {self.url} answered with a body that is not JSON"
            )
        if batch.dialect == "vapi-function-call":
            if isinstance(body, dict) and "result" in body:
                return [self._outcome(batch.calls[0], latency, result=one_line(body["result"]))]
            return self._all_failed(batch, started, 'the tool server answered without a "result" field')
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            return self._all_failed(batch, started, 'the tool server answered without a "results" array')
        by_id = {r.get("toolCallId"): r for r in results if isinstance(r, dict)}
        outcomes = []
        for call in batch.calls:
            item = by_id.get(call.tool_call_id)
            if item is None:
                outcomes.append(
                    self._outcome(
                        call, latency, error=f"the tool server returned no result for toolCallId {call.tool_call_id}"
                    )
                )
            elif item.get("error") is not None:
                outcomes.append(self._outcome(call, latency, error=one_line(item["error"])))
            else:
                outcomes.append(self._outcome(call, latency, result=one_line(item.get("result", ""))))
        return outcomes

    @staticmethod
    def _outcome(call: ToolCall, latency: float, *, result: str | None = None, error: str | None = None) -> ToolOutcome:
        return ToolOutcome(
            tool_call_id=call.tool_call_id,
            name=call.name,
            decision="approved",
            by="rule",
            result=result,
            error=error,
            latency_ms=round(latency, 2),
            arguments_sent=call.arguments,
        )

    def _all_failed(self, batch: ToolBatch, started: float, reason: str) -> list[ToolOutcome]:
        latency = (time.perf_counter() - started) * 1000
        return [self._outcome(call, latency, error=reason) for call in batch.calls]
