"""`voice-console watch`: the team stream as NDJSON on stdout, link changes on stderr."""

from __future__ import annotations

import json
from typing import TextIO

from console.config import TeamSettings, url_for_display
from console.services.team import TeamReader


async def watch_team(settings: TeamSettings, out: TextIO, err: TextIO, *, from_start: bool = False) -> int:
    """Print every event of the team's stream (from now on, or all it keeps) until stopped;
    each line is the event as `serve` prints it, with the `instance` that recorded it. A held
    tool call's news is a line with `gate` (held, stalling, decided, settled) and its call,
    decision or outcome."""

    def note(line: str) -> None:
        print(f"voice-console watch: {line}", file=err, flush=True)

    note(f"watching team {settings.name!r} on {url_for_display(settings.redis_url or '')}")
    reader = TeamReader(settings, since="0-0" if from_start else "$", note=note)
    async for entry in reader.entries():
        shown = {"instance": entry.instance, **({"gate": entry.gate} if entry.gate else {}), **entry.event}
        line = json.dumps(shown, ensure_ascii=False, separators=(",", ":"))
        try:
            out.write(line + "\n")
            out.flush()
        except (BrokenPipeError, ValueError, OSError):  # the reading end went away (`| head`)
            return 0
    return 0
