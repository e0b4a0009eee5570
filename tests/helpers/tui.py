"""The console under Pilot with the real receiver and the in-process simulated platform
(`--demo`): building it, waiting for a held tool call, reading decisions back from the
history, typing, and recording notifications."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from console.config import Settings
from console.core.gate import PendingCall
from console.core.policy import Policy, ToolRule
from console.secrets import SecretStore
from console.store.queries import get_call
from console.tui.app import Services, VoiceConsoleApp
from console.tui.widgets.panes import FunctionCallsTable, LiveCallsTable

SIZE = (120, 36)
# The booking scenario asks for two tools in parallel; the pipeline records a batch once
# every call in it is settled, so most tests hold only one of them (check_availability).
ONE_HELD = Policy(tools={"default": ToolRule(action="hold"), "lookup_patient": ToolRule(action="approve")})
# Pilot's names for the characters that are not their own key name.
KEYS = {
    " ": "space",
    "+": "plus",
    "-": "minus",
    "(": "left_parenthesis",
    ")": "right_parenthesis",
    "/": "slash",
    "{": "left_curly_bracket",
    "}": "right_curly_bracket",
    '"': "quotation_mark",
    ":": "colon",
    ",": "comma",
    ".": "full_stop",
}


def demo_app(settings: Settings, **overrides: Any) -> VoiceConsoleApp:
    services = Services(
        settings,
        secret_store=SecretStore(env={}),
        demo=True,
        demo_speed=overrides.pop("demo_speed", 6.0),
        demo_interval_s=overrides.pop("interval", 120.0),
        **overrides,
    )
    return VoiceConsoleApp(services)


async def wait_for(pilot, condition: Callable[[], object], what: str = "condition", timeout: float = 15.0):
    """Pause the pilot until `condition()` is truthy; its value. Fails naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def wait_for_pending(pilot, app: VoiceConsoleApp) -> PendingCall:
    """Until a live call is listed and a tool call waits on screen; the call the keys act on."""
    await wait_for(pilot, lambda: app.main.query_one(LiveCallsTable).row_count >= 1, what="a live call on screen")
    table = app.main.query_one(FunctionCallsTable)
    await wait_for(
        pilot,
        lambda: any("⏳" in str(table.get_row_at(i)[2]) for i in range(table.row_count)),
        what="a pending tool call on screen",
    )
    target = app.main.target()
    assert target is not None
    return target


async def decision_in_history(pilot, app: VoiceConsoleApp, call_id: str, tool_call_id: str) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        detail = await get_call(app.service.store, call_id)
        for tool in (detail or {}).get("tool_calls", []):
            if tool["tool_call_id"] == tool_call_id and tool["decision"]:
                return tool
        await pilot.pause(0.1)
    raise AssertionError("the decision never reached the history")


def record_notifications(app: VoiceConsoleApp) -> list[tuple[str, str]]:
    """(severity, message) of every notification from now on."""
    seen: list[tuple[str, str]] = []
    original = app.notify

    def notify(message: str, **kwargs: Any) -> None:
        seen.append((kwargs.get("severity", "information"), message))
        original(message, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return seen


async def type_text(pilot, text: str) -> None:
    await pilot.press(*(KEYS.get(char, char) for char in text))
