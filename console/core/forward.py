"""Pass tool calls on to the user's own webhook server and relay its answers.

Whatever the target does — answers, answers garbage, is slow, is down — every
call gets an outcome before the deadline, with an error that says what happened.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from console.core.tools import ToolBatch, ToolCall, ToolOutcome

# Headers that describe the hop, not the message; httpx sets its own.
_HOP_HEADERS = frozenset(
    {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "expect", "trailer"}
)


def one_line(value: Any) -> str:
    """Platforms want tool results as single-line strings; objects are JSON-encoded."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return " ".join(text.splitlines()).strip()


class ForwardingToolHandler:
    def __init__(self, url: str, client: httpx.AsyncClient, *, timeout_s: float = 10.0) -> None:
        self.url = url
        self._client = client
        self._timeout_s = timeout_s

    async def decide(self, batch: ToolBatch) -> list[ToolOutcome]:
        started = time.perf_counter()
        headers = [(k, v) for k, v in batch.headers if k.lower() not in _HOP_HEADERS]
        try:
            response = await self._client.request(
                batch.method,
                self.url,
                content=batch.raw_body,
                headers=headers,
                timeout=min(self._timeout_s, batch.platform_timeout_s),
            )
        except httpx.TimeoutException:
            return self._all_failed(batch, started, f"the tool server at {self.url} did not answer in time")
        except httpx.HTTPError as exc:
            return self._all_failed(batch, started, f"the tool server at {self.url} is unreachable ({type(exc).__name__})")
        if not 200 <= response.status_code < 300:
            return self._all_failed(batch, started, f"the tool server at {self.url} answered HTTP {response.status_code}")
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
            return self._all_failed(batch, started, f"the tool server at {self.url} answered with a body that is not JSON")
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
                outcomes.append(self._outcome(call, latency, error=f"the tool server returned no result for toolCallId {call.tool_call_id}"))
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
