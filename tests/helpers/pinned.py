"""A deterministic main screen for snapshot tests (and screens built on it).

`pinned_app(tmp_path)` is the real app with the real receiver on loopback, but
no demo platform, no API key, a pinned clock, and a fixed script: one call
with speech, a barge-in, transcripts and a decided tool call, pushed through the
real call tracker and the Feed, plus fixed webhook deliveries (one refused).
`settle(pilot)` waits until all of it is on screen and pins the subtitle (the
receiver's port and the tmp path vary per run). Times show in UTC: `pinned_tz`
sets TZ for the process while the test runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from textual.pilot import Pilot

from console.config import ReceiverSettings, Settings, StorageSettings
from console.core.events import (
    BargeIn,
    CallStatus,
    Event,
    SpeechStarted,
    SpeechStopped,
    ToolDecided,
    ToolRequested,
    TranscriptFinal,
    TranscriptPartial,
)
from console.secrets import SecretStore
from console.services.pipeline import DeliverySeen
from console.tui.app import Services, VoiceConsoleApp
from console.tui.widgets.assistants import AssistantsPane

PINNED_NOW = datetime(2026, 2, 17, 9, 31, 0, tzinfo=UTC)
CALL_ID = "call_5f3c9a1e-77b2-4c1d-9a0e-2b6f4d8c1a90"
PINNED_SUBTITLE = "receiver http://127.0.0.1:8765 · history ~/.local/share/voice-console/history.db"


def ago(seconds: float) -> datetime:
    return PINNED_NOW - timedelta(seconds=seconds)


def script() -> list[Event]:
    """A booking call's last 45 seconds: two turns, a barge-in, a tool call approved by a rule."""
    c = {"provider": "vapi", "call_id": CALL_ID}
    return [
        CallStatus(at=ago(46), status="ringing", **c),
        CallStatus(at=ago(45), status="in-progress", **c),
        SpeechStarted(at=ago(44), role="assistant", **c),
        TranscriptFinal(
            at=ago(40.2), role="assistant", text="Thanks for calling Sunrise Dental, this is Ava. How can I help?", **c
        ),
        SpeechStopped(at=ago(40), role="assistant", **c),
        SpeechStarted(at=ago(38.5), role="user", **c),
        SpeechStopped(at=ago(35), role="user", **c),
        TranscriptFinal(at=ago(34.8), role="user", text="Hi, I'd like to book a cleaning for next Tuesday.", **c),
        SpeechStarted(at=ago(34.18), role="assistant", **c),
        TranscriptPartial(at=ago(31), role="assistant", text="Sure, I can help with that. Before I look,", **c),
        SpeechStarted(at=ago(30.5), role="user", **c),  # the caller talks over the agent
        BargeIn(at=ago(30.3), source="user-interrupted", **c),  # the same interruption: merged by the tracker
        TranscriptFinal(at=ago(30.3), role="assistant", text="Sure, I can help with that. Before I look,", **c),
        SpeechStopped(at=ago(30.26), role="assistant", **c),
        SpeechStopped(at=ago(27), role="user", **c),
        TranscriptFinal(at=ago(26.8), role="user", text="It's Dana Whitfield, you should have my number.", **c),
        SpeechStarted(at=ago(26.36), role="assistant", **c),
        TranscriptFinal(at=ago(24.1), role="assistant", text="Let me check the calendar.", **c),
        SpeechStopped(at=ago(24), role="assistant", **c),
        ToolRequested(
            at=ago(23.9),
            tool_call_id="call_tool_0001",
            name="check_availability",
            arguments={"date": "2026-02-24", "reason": "cleaning"},
            **c,
        ),
        ToolDecided(
            at=ago(23.7),
            tool_call_id="call_tool_0001",
            name="check_availability",
            decision="approved",
            by="rule",
            result='{"slots": ["09:30", "14:15"]}',
            latency_ms=182.0,
            **c,
        ),
        SpeechStarted(at=ago(22.9), role="assistant", **c),
        TranscriptFinal(at=ago(18.2), role="assistant", text="I have 9:30 or 2:15 on Tuesday. Which works?", **c),
        SpeechStopped(at=ago(18), role="assistant", **c),
        SpeechStarted(at=ago(16.4), role="user", **c),
        TranscriptPartial(at=ago(15.5), role="user", text="Nine thirty", **c),
    ]


def deliveries() -> list[DeliverySeen]:
    kinds = [
        "status-update",
        "status-update",
        "speech-update",
        "transcript",
        "speech-update",
        "speech-update",
        "transcript",
        "user-interrupted",
        "speech-update",
        "tool-calls",
        "conversation-update",
        "speech-update",
    ]
    out = [
        DeliverySeen(
            ago(46 - 2 * i),
            "vapi",
            "vapi",
            "POST",
            "/webhook/vapi",
            kind,
            CALL_ID,
            "ok",
            None,
            "secret",
            200,
            1.2 + (182.4 if kind == "tool-calls" else 0.1 * i),
            delivery_id=i + 1,
        )
        for i, kind in enumerate(kinds)
    ]
    out.insert(
        5,
        DeliverySeen(
            ago(37),
            "retell",
            "retell",
            "POST",
            "/webhook/retell",
            None,
            None,
            "rejected",
            "authentication failed (x-retell-signature): signature mismatch",
            "hmac",
            401,
            0.4,
        ),
    )
    return out


def pinned_settings(tmp_path: Path) -> Settings:
    return Settings(receiver=ReceiverSettings(port=0), storage=StorageSettings(db=tmp_path / "history.db"))


def pinned_app(tmp_path: Path) -> VoiceConsoleApp:
    app = VoiceConsoleApp(Services(pinned_settings(tmp_path), secret_store=SecretStore(env={})))
    app.main.clock = lambda: PINNED_NOW
    return app


async def settle(pilot: Pilot, *, bottom: str | None = None) -> None:
    """Wait for the receiver, push the script, wait for it on screen; optionally pick a bottom tab."""
    app = pilot.app
    assert isinstance(app, VoiceConsoleApp)
    deadline = time.monotonic() + 15
    pane = app.main.query_one(AssistantsPane)
    while (app.service is None or pane.loads < 1) and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert app.service is not None, "the receiver did not start"
    app.sub_title = PINNED_SUBTITLE
    app.feed.events_in(app.service.pipeline.tracker.process(script()))
    for delivery in deliveries():
        app.feed.deliveries_in(delivery)
    await pilot.pause(0.3)  # one flush and one table refresh
    app.main.flush()
    app.main.refresh_tables()
    if bottom:
        app.main.show_bottom(bottom)
    await pilot.pause(0.2)
    await pilot.wait_for_scheduled_animations()


@contextmanager
def pinned_tz(zone: str = "UTC") -> Iterator[None]:
    """Show times in `zone` (the panes print local time)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()
