"""Where the receiver and the gate drop what happened, for the main screen to drain.

The receiver calls `Feed.events_in` and `Feed.deliveries_in`, the gate `Feed.gate_in`,
and the replay controller `Feed.events_in` too: cheap appends in the loop. The main
screen drains the feed every 50 ms and applies it in one batch.
"""

from __future__ import annotations

from collections import deque

from console.core.events import Event
from console.core.gate import GateEvent
from console.services.pipeline import DeliverySeen
from console.tui.widgets.events import DELIVERY_CAP

EVENT_LOG_LINES = DELIVERY_CAP


class Feed:
    """Where the receiver and the gate drop what happened; drained in batches by the screen."""

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.gate: deque[GateEvent] = deque()
        self.notes: deque[str] = deque(maxlen=500)
        # Bounded: a burst beyond what the Events pane keeps drops the oldest here already.
        self.deliveries: deque[DeliverySeen] = deque(maxlen=EVENT_LOG_LINES)

    def deliveries_in(self, delivery: DeliverySeen) -> None:
        self.deliveries.append(delivery)

    def drain_deliveries(self) -> list[DeliverySeen]:
        out = list(self.deliveries)
        self.deliveries.clear()
        return out

    def events_in(self, events: list[Event]) -> None:
        self.events.extend(events)

    def gate_in(self, item: GateEvent) -> None:
        self.gate.append(item)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def drain(self) -> tuple[list[Event], list[GateEvent], list[str]]:
        events, gate, notes = list(self.events), list(self.gate), list(self.notes)
        self.events.clear()
        self.gate.clear()
        self.notes.clear()
        return events, gate, notes
