"""How a replayed call is told apart from the platform's own calls.

`voice-console replay` re-posts a stored call's deliveries with the header
`X-Voice-Console-Replay: <run id>`. The receiver records them under the call id
marked `↻` (the same mark the TUI's History replay uses), so a replay never adds
to the original call's record and is never replayed again. The header is no
credential: a delivery carrying it is verified like any other, and the mark only
ever makes a delivery count for less.
"""

from __future__ import annotations

import re
import secrets

from console.core.events import Event

REPLAY_HEADER = "x-voice-console-replay"
REPLAY_MARK = "↻"
_RUN_CHARS = re.compile(r"[^A-Za-z0-9._:-]")
_RUN_MAX = 64


def new_run_id() -> str:
    return "r-" + secrets.token_hex(6)


def replay_run(header_value: str | None) -> str | None:
    """The run id a request's replay header names (cleaned, bounded); None when it has none."""
    if header_value is None:
        return None
    cleaned = _RUN_CHARS.sub("", header_value)[:_RUN_MAX]
    return cleaned or "unnamed"


def replay_call_id(call_id: str | None) -> str | None:
    """`call_id` marked as a replay (once: a replay of a replay keeps one mark)."""
    if not call_id or call_id.startswith(REPLAY_MARK):
        return call_id
    return REPLAY_MARK + call_id


def is_replay_call(call_id: str | None) -> bool:
    return call_id is not None and call_id.startswith(REPLAY_MARK)


def original_call_id(call_id: str) -> str:
    return call_id.removeprefix(REPLAY_MARK)


def mark_replayed(event: Event) -> Event:
    """The event with its call id marked. Tool-call ids stay as sent: the platform's reply
    must carry them, and a tool call decided before is answered the same way again."""
    marked = replay_call_id(event.call_id)
    return event if marked == event.call_id else event.model_copy(update={"call_id": marked})
