"""The local control API of a running `serve`.

`serve` listens for `/control/...` on its receiver and answers only loopback
clients that present its bearer token; `console.services.serve_state` tells
`voice-console decide` where that is.

    GET  /control/pending                      -> {"pending": [PendingCall...]}
    POST /control/decide {"tool_call_id", "decision": approve|edit|override|reject,
                          "arguments"?, "result"?, "reason"?}
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any

from console.core.gate import OperatorChoice, OperatorDecision, ToolGate
from console.core.http_types import Request, Response, is_loopback
from console.receiver.http import Router

DECISIONS: dict[str, OperatorChoice] = {
    "approve": "approved",
    "edit": "edited",
    "override": "overridden",
    "reject": "rejected",
}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def parse_decision(body: dict[str, Any]) -> tuple[str, OperatorDecision]:
    """Validate a decision request; ValueError carries a message for the operator."""
    tool_call_id = body.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise ValueError('"tool_call_id" is required')
    decision = DECISIONS.get(str(body.get("decision")))
    if decision is None:
        raise ValueError('"decision" must be one of approve, edit, override, reject')
    arguments = body.get("arguments")
    if decision == "edited" and not isinstance(arguments, dict):
        raise ValueError('"edit" needs "arguments": a JSON object')
    result = body.get("result")
    if decision == "overridden":
        if result is None:
            raise ValueError('"override" needs a "result"')
        if not isinstance(result, str):
            result = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError('"reason" must be text')
    return tool_call_id, OperatorDecision(
        decision=decision,
        arguments=arguments if decision == "edited" else None,
        result=result if decision == "overridden" else None,
        reason=reason if decision == "rejected" else None,
    )


def add_control_routes(router: Router, gate: ToolGate, token: str) -> None:
    def refused(request: Request) -> Response | None:
        if not is_loopback(request.client[0]):
            return Response.error(403, "the control API answers loopback clients only")
        supplied = (request.header("authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), token.encode()):
            return Response.error(401, "a valid control token is required (see `voice-console decide`)")
        return None

    async def pending(request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        return Response.json(200, {"pending": [call.to_dict() for call in gate.pending()]})

    async def decide(request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        try:
            body = json.loads(request.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            tool_call_id, decision = parse_decision(body)
        except ValueError as exc:
            return Response.error(400, str(exc))
        try:
            accepted = gate.resolve(tool_call_id, decision)
        except ValueError as exc:
            return Response.error(400, str(exc))
        if not accepted:
            return Response.error(404, f"no pending tool call {tool_call_id} (unknown, already decided or timed out)")
        return Response.json(200, {"ok": True, "tool_call_id": tool_call_id, "decision": decision.decision})

    router.add("GET", "/control/pending", pending)
    router.add("POST", "/control/decide", decide)
