"""The local control API of a running `serve`.

`serve` listens for `/control/...` on its receiver and answers only loopback
clients that present its bearer token; `console.services.serve_state` tells
`voice-console decide` where that is.

    GET  /control/pending                      -> {"pending": [PendingCall...]}
    POST /control/decide {"tool_call_id", "decision": approve|edit|override|reject,
                          "arguments"?, "result"?, "reason"?, "operator"?}
                                               -> 200; 409 (error: message, decision, by, operator) when
                                                  another decided first; 404 for an unknown call
    GET  /control/calls                        -> {"calls": [{"call_id", "provider", "status", "tapped"}]}
    POST /control/call {"call_id" (or a unique prefix), "action": say|context|end|cut|mute|unmute|transfer,
                        "text"?, "respond"?, "number"?}
                                               -> {"ok", "call_id", "action", "via"}
"""

from __future__ import annotations

import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from console.core.gate import OperatorChoice, OperatorDecision, ToolGate
from console.core.http_types import Request, Response, is_loopback
from console.core.tools import ToolOutcome
from console.providers.base import LiveAction, PlatformError
from console.receiver.http import Router
from console.services.live import CannotSteer, LiveCalls

# `voice-console call ACTION` -> what the platform's live control is asked (as the TUI's keys).
CALL_ACTIONS: dict[str, LiveAction] = {
    "say": "say",
    "context": "add_message",
    "end": "end",
    "cut": "cut_off",
    "mute": "mute",
    "unmute": "mute",
    "transfer": "transfer",
}

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
    operator = body.get("operator")
    if operator is not None and (not isinstance(operator, str) or len(operator) > 80):
        raise ValueError('"operator" must be a name of at most 80 characters')
    return tool_call_id, OperatorDecision(
        decision=decision,
        arguments=arguments if decision == "edited" else None,
        result=result if decision == "overridden" else None,
        reason=reason if decision == "rejected" else None,
        operator=operator.strip() or None if operator else None,
    )


def already_decided(outcome: ToolOutcome) -> str:
    """What a decision that came too late is told: who decided first, and what."""
    who = outcome.operator or {"operator": "an operator", "rule": "the policy", "timeout": "its timeout"}.get(
        outcome.by, outcome.by
    )
    return f"{outcome.name} was already {outcome.decision} by {who}"


def _json_object(request: Request) -> dict[str, Any]:
    """The request's JSON object body; ValueError (a 400) for anything else."""
    body = json.loads(request.body or b"{}")
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


class TeamDecider(Protocol):
    """Team mode's side of a decision (`console.services.team_gate.TeamGateLink`)."""

    async def decide(self, tool_call_id: str, decision: OperatorDecision) -> Any: ...


@dataclass
class DecisionRouting:
    """Where this receiver's own decisions go (its control API's, a --no-attach console's keys):
    the team first while a team link is up (set once it starts), else this receiver's own gate."""

    team: TeamDecider | None = None

    async def ask_team(self, tool_call_id: str, decision: OperatorDecision) -> Any:
        """The team's verdict (won: the holder applies it; lost: who won), or None: no team, the team
        cannot be asked now, or Redis does not hold the call (yet) — the local gate decides then.
        Raises ValueError for an invalid decision."""
        if self.team is None:
            return None
        try:
            verdict = await self.team.decide(tool_call_id, decision)
        except ValueError:
            raise
        except Exception:  # the team cannot be asked: this receiver's own operators decide alone
            return None
        return None if verdict.outcome == "unknown" else verdict


class SteerRefused(Exception):
    """A live-control request that was not carried out: its HTTP status and one sentence why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def steer(live: LiveCalls, body: dict[str, Any]) -> dict[str, Any]:
    """Carry out one live-control request ({"call_id" or a unique prefix, "action", "text"?,
    "respond"?, "number"?}) on a call this receiver has: the control API's and the team's.
    Raises SteerRefused (400 a bad request, 409 the call cannot be steered so, 502 the platform refused)."""
    action = CALL_ACTIONS.get(str(body.get("action")))
    if action is None:
        raise SteerRefused(400, '"action" must be one of ' + ", ".join(CALL_ACTIONS))
    text = body.get("text")
    if not isinstance(text, str):
        text = ""
    if action in ("say", "add_message") and not text.strip():
        raise SteerRefused(400, f'"{body["action"]}" needs "text"')
    number = body.get("number")
    if action == "transfer" and (not isinstance(number, str) or not number.strip()):
        raise SteerRefused(400, '"transfer" needs "number"')
    if not isinstance(body.get("call_id"), str) or not body["call_id"]:
        raise SteerRefused(400, '"call_id" is required')
    try:
        target = live.target(live.find(body["call_id"]), action)
    except CannotSteer as exc:
        raise SteerRefused(409, str(exc)) from None
    via = "tap" if action == "say" and live.tapped(target.call_id) else "api"
    try:
        async with await live.open(target) as control:
            if action == "say":
                await control.say(text)
            elif action == "add_message":
                await control.add_message("system", text, trigger_response=bool(body.get("respond", True)))
            elif action == "cut_off":
                await control.cut_off()
            elif action == "mute":
                await (control.unmute_assistant() if body["action"] == "unmute" else control.mute_assistant())
            elif action == "transfer":
                await control.transfer(number=str(number).strip())
            else:
                await control.end_call()
    except (PlatformError, ValueError) as exc:
        raise SteerRefused(502, f"{target.spec.title} refused: {exc}") from None
    return {"ok": True, "call_id": target.call_id, "action": body["action"], "via": via}


def add_control_routes(
    router: Router, token: str, *, gate: ToolGate | None, live: LiveCalls, routing: DecisionRouting | None = None
) -> None:
    routing = routing or DecisionRouting()

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
        return Response.json(200, {"pending": [call.to_dict() for call in gate.pending()] if gate else []})

    async def decide(request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        try:
            body = _json_object(request)
            tool_call_id, decision = parse_decision(body)
        except ValueError as exc:
            return Response.error(400, str(exc))
        if gate is None:
            return Response.error(409, "tool calls go to another handler here: there is nothing to decide")
        try:
            verdict = await routing.ask_team(tool_call_id, decision)
        except ValueError as exc:
            return Response.error(400, str(exc))
        if verdict is not None and verdict.outcome == "won":
            answer = {"ok": True, "tool_call_id": tool_call_id, "decision": decision.decision}
            return Response.json(200, {**answer, "instance": verdict.owner})
        if verdict is not None and verdict.outcome == "lost":
            decided = verdict.decided or {}
            return Response.error(
                409,
                verdict.told(tool_call_id),
                decision=decided.get("decision"),
                by="operator",
                operator=decided.get("operator"),
            )
        try:
            accepted = gate.resolve(tool_call_id, decision)
        except ValueError as exc:
            return Response.error(400, str(exc))
        if not accepted:
            if (outcome := gate.settled(tool_call_id)) is not None:
                return Response.error(
                    409,
                    already_decided(outcome),
                    decision=outcome.decision,
                    by=outcome.by,
                    operator=outcome.operator,
                )
            return Response.error(404, f"no pending tool call {tool_call_id} (unknown, already decided or timed out)")
        return Response.json(200, {"ok": True, "tool_call_id": tool_call_id, "decision": decision.decision})

    async def calls(request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        found = [
            {
                "call_id": state.call_id,
                "provider": state.provider,
                "status": state.status,
                "tapped": live.tapped(state.call_id),
            }
            for state in live.tracker.calls()
            if state.status != "ended"
        ]
        return Response.json(200, {"calls": found})

    async def call(request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        try:
            body = _json_object(request)
        except ValueError as exc:
            return Response.error(400, str(exc))
        try:
            return Response.json(200, await steer(live, body))
        except SteerRefused as exc:
            return Response.error(exc.status, str(exc))

    router.add("GET", "/control/pending", pending)
    router.add("POST", "/control/decide", decide)
    router.add("GET", "/control/calls", calls)
    router.add("POST", "/control/call", call)
    # GET /control/stream (the attached consoles' WebSocket) is console.services.hub's.
