"""`voice-console watch`: the team stream as NDJSON on stdout, link changes on stderr."""

from __future__ import annotations

import json
from typing import Any, TextIO

from console.config import TeamSettings, url_for_display
from console.heap import settle_after_start
from console.services.pipeline import TEAM_ROW_FIELDS, DeliverySeen
from console.services.team import LINK_ERRORS, TeamReader, live_calls


async def watch_team(settings: TeamSettings, out: TextIO, err: TextIO, *, from_start: bool = False) -> int:
    """Print every event of the team's stream (from now on, or all it keeps) until stopped;
    each line is the event as `serve` prints it, with the `instance` that recorded it. A held
    tool call's news is a line with `gate` (held, stalling, decided, settled) and its call,
    decision or outcome; a webhook request a receiver answered, a line with `delivery`."""

    def note(line: str) -> None:
        print(f"voice-console watch: {line}", file=err, flush=True)

    reader = TeamReader(settings, since="0-0" if from_start else "$", note=note)
    try:
        await reader.pin()  # first the stream's position, then the calls: what follows is not missed
        calls = await live_calls(settings)
    except LINK_ERRORS:
        calls = []  # the reader says the link is down, and catches up once it is back
    settle_after_start()
    # Said once the position is pinned: a script may start sending when it reads this line.
    note(f"watching team {settings.name!r} on {url_for_display(settings.redis_url or '')}")
    for call in calls:  # what is going on now, first: {"instance", "call": {summary}}
        instance = call.pop("instance", None)
        if not _print(out, {"instance": instance, "call": call}):
            return 0
    async for entry in reader.entries():
        if entry.deliveries is not None:  # {"instance", "delivery": {...}}: a request it answered
            for seen in entry.deliveries:
                if not _print(out, {"instance": entry.instance, "delivery": delivery_dict(seen)}):
                    return 0
            continue
        shown = {"instance": entry.instance, **({"gate": entry.gate} if entry.gate else {}), **entry.event}
        if not _print(out, shown):
            return 0
    return 0


def _print(out: TextIO, line: dict[str, Any]) -> bool:
    try:
        out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
        out.flush()
    except (BrokenPipeError, ValueError, OSError):  # the reading end went away (`| head`)
        return False
    return True


def delivery_dict(seen: DeliverySeen) -> dict[str, Any]:
    shown: dict[str, Any] = {name: getattr(seen, name) for name in TEAM_ROW_FIELDS}
    shown["at"] = seen.at.isoformat(timespec="milliseconds")
    return shown
