"""`ReplayController`: one replay at a time, from a stored call into the live feed.

It plays a stored call's events into the same `Feed` the receiver fills, with the
call id marked (`↻` + id), at 1x to 10x, pausable. An app-level service: the app
owns it and the History screen gets it through the console context.
"""

from __future__ import annotations

import logging
from typing import Any

from textual.app import App

from console.core.calls import CallState, CallTracker
from console.core.events import Event, utc_now
from console.services.replay import REPLAY_MARK, ReplayClock, as_replay, next_speed, paced, stored_events
from console.store.db import Store
from console.tui.feed import Feed

log = logging.getLogger(__name__)


class ReplayController:
    """One replay at a time, from a stored call into the live feed.

    The replayed events are re-dated to the moment they are shown, so the main
    screen's clocks (durations, the barge-in timeline) treat the replay like a
    live call; at 2x and faster its times and latencies run that much faster too.
    The History screen's timeline keeps the original times.
    """

    def __init__(self, app: App[Any], feed: Feed) -> None:
        self.app = app
        self.feed = feed
        self.speed = 1.0
        self.clock: ReplayClock | None = None
        self.call_id: str | None = None
        self.shown = 0
        self.tracker = CallTracker(max_calls=20)

    @property
    def running(self) -> bool:
        return self.clock is not None and not self.clock.stopped

    def calls(self) -> list[CallState]:
        """The replayed calls' live state, for the live-calls table."""
        return self.tracker.calls()

    def start(self, store: Store, call_id: str) -> str:
        """Replay `call_id` from `store` (stopping any replay in progress); the replay's call id."""
        self.stop(quiet=True)
        self.call_id = call_id
        self.shown = 0
        # A fresh state per replay: replaying a call again starts it from ringing, not "ended".
        self.tracker = CallTracker(max_calls=20)
        self.clock = ReplayClock(self.speed)
        self.app.run_worker(self._play(store, call_id, self.clock), group="replay", exclusive=True, exit_on_error=False)
        self.app.refresh_bindings()  # the replay keys show while it plays
        return REPLAY_MARK + call_id

    async def _play(self, store: Store, call_id: str, clock: ReplayClock) -> None:
        self.feed.note(f"replay: {call_id} at {clock.speed:g}x (space pause · +/- speed · x stop)")
        completed = False
        try:
            async for event in paced(stored_events(store, call_id), _epoch, clock):
                self.feed_in(as_replay(event, utc_now()))
                self.shown += 1
            completed = not clock.stopped
        except Exception as exc:  # the store closed under it (quitting), or a bug: say so, never hang
            log.warning("replay of %s failed", call_id, exc_info=True)
            self.app.notify(f"The replay stopped: {exc}", severity="error")
        finally:
            clock.stop()  # also when cancelled: `running` must not outlive the worker
            self.app.refresh_bindings()
        if completed:
            self.feed.note(f"replay: {call_id} finished ({self.shown} events)")
            self.app.notify(f"Replay of {call_id} finished ({self.shown} events).")

    def feed_in(self, event: Event) -> None:
        self.tracker.process([event])  # only for the call's state; the stored events are already derived
        self.feed.events_in([event])

    def toggle_pause(self) -> None:
        if self.clock is None or not self.running:
            return
        paused = self.clock.toggle_pause()
        self.app.notify(f"Replay {'paused' if paused else 'resumed'} ({self.describe()}).")

    def change_speed(self, step: int) -> float:
        self.speed = next_speed(self.speed, step)
        if self.clock is not None and self.running:
            self.clock.set_speed(self.speed)
            self.feed.note(f"replay: speed {self.speed:g}x")
        self.app.notify(f"Replay speed {self.speed:g}x.", timeout=2)
        return self.speed

    def stop(self, *, quiet: bool = False) -> None:
        if self.clock is None or not self.running:
            return
        self.clock.stop()
        self.app.refresh_bindings()
        self.feed.note(f"replay: {self.call_id} stopped after {self.shown} events")
        if not quiet:
            self.app.notify(f"Replay of {self.call_id} stopped.")

    def describe(self) -> str:
        if self.clock is None or self.call_id is None:
            return f"replay speed {self.speed:g}x"
        state = "paused" if self.clock.paused else "playing" if self.running else "done"
        return f"replay {REPLAY_MARK}{self.call_id[:12]} · {state} · {self.speed:g}x · {self.shown} events"


def _epoch(event: Event) -> float:
    return event.at.timestamp()
