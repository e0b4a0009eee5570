"""A history file written the way the receiver writes one: booking calls with their
events, a tool call and the operator's decision (for the History screen's tests)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from console.core.events import (
    BargeIn,
    CallEnded,
    CallStatus,
    Event,
    SpeechStarted,
    ToolRequested,
    TranscriptFinal,
    TranscriptPartial,
)
from console.core.tools import ToolCall, ToolOutcome
from console.store.db import DeliveryRecord, Store

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
CALLS = 45


def call_id(n: int) -> str:
    return f"call-{n:03d}"


def call_events(n: int, length_s: float = 60.0) -> list[Event]:
    """A booking call as the providers normalize one: statuses, partial and final lines,
    a barge-in with the cut text, a tool call, the end-of-call report."""
    cid, start = call_id(n), T0 + timedelta(seconds=n * 100)

    def at(s: float) -> datetime:
        return start + timedelta(seconds=s * length_s / 60)

    common: dict[str, Any] = {"provider": "vapi", "call_id": cid}
    return [
        CallStatus(at=at(0), status="ringing", **common),
        CallStatus(at=at(1), status="in-progress", **common),
        SpeechStarted(at=at(1.5), role="assistant", **common),
        TranscriptFinal(at=at(2), role="assistant", text="Sunrise Dental, this is Ava. How can I help?", **common),
        TranscriptPartial(at=at(3), role="user", text="I'd like to", **common),
        TranscriptFinal(at=at(4), role="user", text=f"I'd like to book a cleaning, reference ref{n:03d}x.", **common),
        BargeIn(at=at(5), cut_text="Before I look, could you tell me", **common),
        ToolRequested(
            at=at(6),
            tool_call_id=f"{cid}-t1",
            name="book_appointment",
            arguments={"date": "2026-03-10", "time": "09:30"},
            **common,
        ),
        TranscriptFinal(at=at(8), role="assistant", text="You're booked for Tuesday at 9:30.", **common),
        CallStatus(at=at(59.5), status="ended", ended_reason="customer-ended-call", **common),
        CallEnded(
            at=at(60),
            reason="customer-ended-call",
            summary=f"Booked a cleaning ({cid}).",
            cost=0.0425,
            duration_s=length_s,
            **common,
        ),
    ]


async def write_history(path: Path, calls: int = CALLS, length_s: float = 60.0) -> None:
    """Calls recorded the way the receiver records them: a delivery with its events, then
    the tool call's request and the operator's decision."""
    async with await Store.open(path) as store:
        for n in range(calls):
            events = call_events(n, length_s)
            body = json.dumps({"message": {"type": "end-of-call-report", "call": {"id": call_id(n)}}}).encode()
            await store.record_delivery(
                DeliveryRecord(
                    "vapi",
                    "vapi",
                    "POST",
                    "/webhook/vapi",
                    "end-of-call-report",
                    call_id(n),
                    events[0].at,
                    body,
                    [("content-type", "application/json")],
                    "secret",
                ),
                events,
            )
            tool_id = f"{call_id(n)}-t1"
            await store.record_tool_requests(
                "vapi", call_id(n), [ToolCall(tool_id, "book_appointment", {})], events[7].at
            )
            await store.record_tool_outcomes(
                "vapi",
                call_id(n),
                [
                    ToolOutcome(
                        tool_id,
                        "book_appointment",
                        "approved",
                        "operator",
                        result='{"booked": true}',
                        latency_ms=1840.0,
                    )
                ],
                events[7].at + timedelta(seconds=2),
            )
