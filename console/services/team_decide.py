"""`voice-console decide --team`: held tool calls of every receiver in the team, decided once."""

from __future__ import annotations

import json
from typing import Any, TextIO

from console.config import TeamSettings
from console.core.gate import PendingCall
from console.services.control import parse_decision
from console.services.team import LINK_ERRORS, TeamKeys, close_quietly, connect, link_problem, values_matching
from console.services.team_gate import record_decision


async def decide_in_team(
    settings: TeamSettings, tool_call_id: str, body: dict[str, Any], out: TextIO, err: TextIO
) -> int:
    try:
        _, decision = parse_decision({"tool_call_id": tool_call_id, **body})
    except ValueError as exc:
        print(f"voice-console decide: {exc}", file=err)
        return 2
    client = connect(settings)
    try:
        verdict = await record_decision(client, settings, tool_call_id, decision, via="decide")
    except LINK_ERRORS as exc:
        print(f"voice-console decide: {link_problem(settings, exc)}", file=err)
        return 1
    finally:
        await close_quietly(client)
    if verdict.outcome == "won":
        print(f"{tool_call_id}: {decision.decision} (held by {verdict.owner}, which answers the platform)", file=out)
        return 0
    if verdict.outcome == "lost":
        print(f"voice-console decide: {verdict.told(tool_call_id)}", file=err)
        return 1
    print(f"voice-console decide: no held tool call {tool_call_id} in team {settings.name!r}", file=err)
    return 1


async def list_held(settings: TeamSettings, out: TextIO, err: TextIO) -> int:
    client = connect(settings)
    try:
        held = [json.loads(value) for value in await values_matching(client, TeamKeys(settings.name).held("*"))]
    except LINK_ERRORS as exc:
        print(f"voice-console decide: {link_problem(settings, exc)}", file=err)
        return 1
    finally:
        await close_quietly(client)
    for item in sorted(held, key=lambda item: item["call"]["deadline_at"]):
        call = PendingCall.from_dict(item["call"])
        print(
            f"{call.tool_call_id}  {call.name}({json.dumps(call.arguments)})  "
            f"{call.remaining_s():.0f}s left  held by {item['instance']}",
            file=out,
        )
    return 0
