"""Replies to Vapi's request-type messages (reference/vapi.md §3, §4.2).

Always HTTP 200 with a bare JSON body: Vapi ignores the body of any non-2xx
answer, and the model then hears "no result returned".
"""

from __future__ import annotations

import json
from typing import Any

from console.config import VapiSettings
from console.core.http_types import Response
from console.core.tools import ToolBatch, ToolOutcome

NO_OUTCOME_ERROR = "voice-console produced no decision for this tool call."
REJECTED_ERROR = "The tool call was rejected."
NO_TRANSFER_ERROR = "No transfer destination is configured in voice-console."
NO_HANDOFF_ERROR = "No handoff destination is configured in voice-console."
TRANSFER_MESSAGE = "Transferring your call now."
# `call.endpointing.request`: the console is not an endpointing model. 1.5 s is
# Vapi's own default wait when a transcript has no end punctuation, the safe
# side: it never cuts a caller off, at the cost of a slower reply.
ENDPOINTING_TIMEOUT_SECONDS = 1.5
DEFAULT_SAMPLE_RATE = 16000


def one_line(value: Any) -> str:
    """A tool result as Vapi wants it: a single-line string.

    Objects are JSON-encoded; a pretty-printed JSON string is re-encoded
    compactly; other text has its line breaks folded into spaces.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    lines = value.splitlines()
    if len(lines) <= 1:
        return lines[0] if lines else ""
    stripped = value.strip()
    if stripped[:1] in ("{", "["):
        try:
            return json.dumps(json.loads(stripped), ensure_ascii=False, separators=(",", ":"))
        except ValueError:
            pass
    return " ".join(line.strip() for line in lines if line.strip())


def _match_outcomes(batch: ToolBatch, outcomes: list[ToolOutcome]) -> list[ToolOutcome | None]:
    """One outcome per call in batch order: by id, else by position."""
    by_id: dict[str, ToolOutcome] = {}
    for item in outcomes:
        by_id.setdefault(item.tool_call_id, item)
    matched: list[ToolOutcome | None] = []
    for index, call in enumerate(batch.calls):
        outcome = by_id.get(call.tool_call_id)
        if outcome is None and len(outcomes) == len(batch.calls):
            outcome = outcomes[index]
        matched.append(outcome)
    return matched


def _result_or_error(outcome: ToolOutcome | None) -> tuple[str, str]:
    """("result" | "error", one-line text)."""
    if outcome is None:
        return "error", NO_OUTCOME_ERROR
    if outcome.error is not None:
        return "error", one_line(outcome.error)
    if outcome.result is not None:
        return "result", one_line(outcome.result)
    if outcome.decision == "rejected":
        return "error", REJECTED_ERROR
    return "result", ""


def tool_reply(batch: ToolBatch, outcomes: list[ToolOutcome]) -> Response:
    """Render decided tool calls in the batch's dialect; always a valid 200."""
    matched = _match_outcomes(batch, outcomes)
    if batch.dialect == "vapi-function-call":
        key, text = _result_or_error(matched[0] if matched else None)
        # The legacy reply has only `result`; an error must still read as one.
        return Response.json(200, {"result": text if key == "result" else f"Error: {text}"})
    results = []
    for call, outcome in zip(batch.calls, matched, strict=True):
        key, text = _result_or_error(outcome)
        results.append({"toolCallId": call.tool_call_id, "name": call.name, key: text})
    return Response.json(200, {"results": results})


_ACK = Response.json(200, {})  # immutable, so one instance serves every acknowledgement


def ack() -> Response:
    return _ACK


def assistant_request_reply(settings: VapiSettings) -> Response:
    """Answered from config: it must arrive within 7.5 s, so never waits on a human."""
    config = settings.assistant_request
    if config.assistant_id:
        return Response.json(200, {"assistantId": config.assistant_id})
    if config.assistant:
        return Response.json(200, {"assistant": config.assistant})
    return Response.json(200, {"error": config.error})


def transfer_destination_reply(settings: VapiSettings) -> Response:
    if not settings.transfer_destination:
        return Response.json(200, {"error": NO_TRANSFER_ERROR})
    return Response.json(
        200,
        {
            "destination": {"type": "number", "number": settings.transfer_destination},
            # `content` is the schema field; EVT's example says `message` [conflict].
            "message": {"type": "request-start", "content": TRANSFER_MESSAGE},
        },
    )


def handoff_destination_reply(settings: VapiSettings) -> Response:
    """`destination` is required (ServerMessageResponseHandoffDestinationRequest): with none
    configured, an assistant destination naming no assistant plus `error`, which Vapi reads
    as "do not hand off"."""
    configured = settings.handoff_destination
    if configured is None:
        return Response.json(200, {"destination": {"type": "assistant"}, "error": NO_HANDOFF_ERROR})
    destination = {"type": "assistant"}
    if configured.assistant_id:
        destination["assistantId"] = configured.assistant_id
    else:
        destination["assistantName"] = str(configured.assistant_name)
    return Response.json(200, {"destination": destination})


def knowledge_base_reply() -> Response:
    return Response.json(200, {"documents": []})


def endpointing_reply() -> Response:
    return Response.json(200, {"timeoutSeconds": ENDPOINTING_TIMEOUT_SECONDS})


def campaign_predial_reply() -> Response:
    return Response.json(200, {"eligible": True})


def voice_request_reply(sample_rate: int | None) -> Response:
    """Vapi wants raw 16-bit mono PCM; the console has no voice, so: no audio."""
    rate = sample_rate if sample_rate and sample_rate > 0 else DEFAULT_SAMPLE_RATE
    return Response(status=200, body=b"", content_type=f"audio/l16; rate={rate}; channels=1")
