"""The calls table's upkeep: what one transaction's events say about each call, merged
into its row by one upsert (out-of-order deliveries, terminal `ended`, `unknown` calls
that a late report revives), and the tool-call count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class CallAggregate:
    """What one transaction's events say about one call (merged by SQL upsert)."""

    provider: str
    first: float
    last: float
    status: str | None = None
    status_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    ended_reason: str | None = None
    summary: str | None = None
    cost: float | None = None
    duration_s: float | None = None
    barge_ins: int = 0

    def touch(self, at: float) -> None:
        self.first = min(self.first, at)
        self.last = max(self.last, at)

    def set_status(self, status: str, at: float) -> None:
        # Ties go to the later arrival; older events never overwrite newer ones,
        # and "ended" is terminal (platform clocks differ: Twilio dates to the second).
        if self.status == "ended" and status != "ended":
            return
        if self.status_at is None or at >= self.status_at or status == "ended":
            self.status, self.status_at = status, at

    def mark_ended(self, at: float, reason: str | None) -> None:
        self.ended_at = at if self.ended_at is None else min(self.ended_at, at)
        if reason is not None:
            self.ended_reason = reason

    def absorb(self, kind: str, at: float, d: dict[str, Any]) -> None:
        self.touch(at)
        if kind == "call.status":
            status = d["status"]
            self.set_status(status, at)
            if status == "in-progress":
                self.started_at = at if self.started_at is None else min(self.started_at, at)
            elif status == "ended":
                self.mark_ended(at, d.get("ended_reason"))
        elif kind == "call.ended":
            # An end-of-call report means the call is over even if no status said so.
            self.set_status("ended", at)
            self.mark_ended(at, d.get("reason"))
            for name in ("summary", "cost", "duration_s"):
                if d.get(name) is not None:
                    setattr(self, name, d[name])
        elif kind == "barge_in":
            self.barge_ins += 1

    def row(self, call_id: str) -> tuple[Any, ...]:
        return (
            call_id,
            self.provider,
            self.status,
            self.status_at,
            self.started_at,
            self.ended_at,
            self.ended_reason,
            self.summary,
            self.cost,
            self.duration_s,
            self.barge_ins,
            self.first,
            self.last,
        )


# Deliveries can arrive out of order: status only moves to a newer `at`; the
# two-argument min/max are wrapped in coalesce because they return NULL on NULL.
# A call closed as `unknown` (its session stopped with no end seen) takes the platform's
# late end report as the truth; any other event a receiving session records for it
# means it is live after all. Interruption markers (no session) leave it unknown.
UPSERT_CALL = """
INSERT INTO calls (call_id, provider, status, status_at, started_at, ended_at, ended_reason,
                   summary, cost, duration_s, barge_ins, first_seen_at, last_event_at, session_id)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_id) DO UPDATE SET
    status = CASE WHEN calls.status = 'ended' THEN 'ended'
                  WHEN excluded.status = 'ended' THEN 'ended'
                  WHEN calls.status = 'unknown' THEN
                       CASE WHEN excluded.session_id IS NULL THEN 'unknown'
                            ELSE coalesce(excluded.status, 'in-progress') END
                  WHEN excluded.status_at >= coalesce(calls.status_at, excluded.status_at)
                  THEN excluded.status ELSE calls.status END,
    status_at = max(coalesce(calls.status_at, excluded.status_at), coalesce(excluded.status_at, calls.status_at)),
    started_at = min(coalesce(calls.started_at, excluded.started_at), coalesce(excluded.started_at, calls.started_at)),
    ended_at = min(coalesce(calls.ended_at, excluded.ended_at), coalesce(excluded.ended_at, calls.ended_at)),
    ended_reason = CASE WHEN calls.status = 'unknown' AND (excluded.status = 'ended' OR excluded.session_id IS NOT NULL)
                        THEN excluded.ended_reason
                        ELSE coalesce(excluded.ended_reason, calls.ended_reason) END,
    summary = coalesce(excluded.summary, calls.summary),
    cost = coalesce(excluded.cost, calls.cost),
    duration_s = coalesce(excluded.duration_s, calls.duration_s),
    barge_ins = calls.barge_ins + excluded.barge_ins,
    first_seen_at = min(calls.first_seen_at, excluded.first_seen_at),
    last_event_at = max(calls.last_event_at, excluded.last_event_at),
    session_id = coalesce(excluded.session_id, calls.session_id)
"""
# Distinct requested ids: the tool_calls primary key already de-duplicates redeliveries.
COUNT_TOOL_CALLS = """
UPDATE calls SET tool_calls = (
    SELECT count(*) FROM tool_calls WHERE tool_calls.call_id = ?1 AND requested_at IS NOT NULL
) WHERE call_id = ?1
"""
