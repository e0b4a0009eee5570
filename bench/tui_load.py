"""Responsiveness of the operator console under 100 concurrent calls.

The real `VoiceConsoleApp` runs headless at 160x48 in this process (real
receiver on loopback, a tmp SQLite history, the real compositor; every frame is
also encoded to the terminal byte stream a real driver would write, so its cost
is counted). A child process plays the real simulator (`CallEngine`, signed
Vapi server messages) at the app's receiver, keeping `--calls` calls in flight
for `--duration` seconds, a new call as soon as one ends: bookings (a barge-in,
two tool calls in parallel, then a booking held for the operator until it times
out), barge-in storms, and billing calls whose invoice lookup is held too.
Measured, only by wrapping methods from here (nothing in the app knows about the
benchmark):

- event-to-screen: from the receiver handing an event to the app
  (`Feed.events_in`) -- and from the webhook request reaching the pipeline --
  to the end of the first frame rendered after the screen drained it;
- key-press-to-frame: a thread (like a terminal driver's input thread) sends
  up/down to the live-calls table; from the send to the end of the first frame
  in which the selected call (and its transcript) changed;
- memory: RSS over the run and the size of the app's bounded structures;
- the event loop: CPU share, timer lag, time spent in flush / table refresh /
  screen updates.

    python bench/tui_load.py [--calls 100] [--duration 60] [--speed 1] [--json]
    python bench/tui_load.py --duration 600          # memory over a long run

Targets (DESIGN.md): event-to-screen p99 < 250 ms, key-press-to-frame p99 <
100 ms, memory bounded over a long run; the exit status is 1 when a latency
target is missed. Experiments measure changes without making them:
--young-collection-after, --full-collection-every and
--same-titles-no-repaint (the app already freezes its start-up objects); diagnoses:
--explain-slow-keys (what the loop did while slow presses waited) and --trace-memory (see --help). Wall-clock figures
depend on the machine being otherwise idle: the report prints the load average
and the CPU time of each part, which does not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import json
import math
import os
import random
import secrets as token_source
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Never touch the user's real keyring: secrets come from the environment only.
os.environ.setdefault("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")

SECRET_ENV = "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET"
TARGET_EVENT_P99_MS = 250.0
TARGET_KEY_P99_MS = 100.0
SIZE = (160, 48)


class Samples:
    """Timings kept as counts in log-spaced buckets 1 % wide: a long run's own
    measurements must not grow the RSS it reports (a float per event was 1 MB/min)."""

    FLOOR_MS = 0.001
    _LOG_RATIO = math.log(1.01)

    def __init__(self, values: Iterable[float] = ()) -> None:
        self.counts: Counter[int] = Counter()
        self.n, self.total, self.max = 0, 0.0, float("nan")
        for value in values:
            self.add(value)

    def add(self, value: float) -> None:
        bucket = 0 if value <= self.FLOOR_MS else int(math.log(value / self.FLOOR_MS) / self._LOG_RATIO) + 1
        self.counts[bucket] += 1
        self.n += 1
        self.total += value
        self.max = value if not value <= self.max else self.max  # nan-safe

    def pct(self, q: float) -> float:
        """The upper edge of the bucket holding the q-th value (at most 1 % high)."""
        if not self.n:
            return float("nan")
        rank, seen = min(self.n - 1, int(q * self.n)), 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen > rank:
                return min(self.max, self.FLOOR_MS * math.exp(bucket * self._LOG_RATIO))
        return self.max


def summary(values: Samples | Iterable[float]) -> dict[str, Any]:
    samples = values if isinstance(values, Samples) else Samples(values)
    return {
        "n": samples.n,
        "p50": samples.pct(0.5),
        "p90": samples.pct(0.9),
        "p99": samples.pct(0.99),
        "max": samples.max,
    }


def loop_time(wall_ms: Samples, cpu_ms: Samples) -> dict[str, Any]:
    return {
        **summary(wall_ms),
        "cpu_p99": cpu_ms.pct(0.99),
        "cpu_max": cpu_ms.max,
        "total_s": wall_ms.total / 1000,
        "cpu_total_s": cpu_ms.total / 1000,
    }


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_below_the_heap() -> str:
    """Where the RSS is, below Python's count of its objects: anonymous vs file-backed pages
    (a mapped SQLite file is file-backed), C malloc's bytes in use and freed-but-kept (glibc:
    fragmentation shows here) and pymalloc's arenas (Python's small objects)."""
    import re
    import tempfile

    from console.heap import mallinfo2

    parts = []
    try:
        with open("/proc/self/smaps_rollup") as rollup:
            kb = {line.split(":")[0]: int(line.split()[1]) for line in rollup if line.rstrip().endswith(" kB")}
        anon = kb.get("Anonymous", 0)
        parts.append(f"anon {anon / 1024:.1f} MB, file {(kb.get('Rss', 0) - anon) / 1024:.1f} MB")
    except OSError:
        pass

    info = mallinfo2()
    if info is not None:
        in_use, kept = (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20
        parts.append(f"malloc in use {in_use:.1f} MB, freed but kept {kept:.1f} MB")
    # sys._debugmallocstats writes to the C-level stderr: caught through a temporary file.
    with tempfile.TemporaryFile() as caught:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        caught.seek(0)
        stats = caught.read().decode(errors="replace")
    arenas = re.search(r"(\d+) arenas \* (\d+) bytes/arena", stats)
    used = re.search(r"# bytes in allocated blocks\s*=\s*([\d,]+)", stats)
    if arenas and used:
        count, size = int(arenas.group(1)), int(arenas.group(2))
        in_blocks = int(used.group(1).replace(",", "")) / 2**20
        parts.append(f"pymalloc {count} arenas ({count * size / 2**20:.0f} MB), {in_blocks:.1f} MB in blocks")
    return "; ".join(parts)


# --- the load: a child process playing the simulator -------------------------------------------


def policy_toml(policy) -> str:
    """The policy as a policy file, for a `serve` of its own (--attached)."""
    lines = []
    for name, rule in policy.tools.items():
        lines.append(f"[tools.{name}]")
        for key, value in rule.model_dump(exclude_none=True).items():
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def load_policy():
    """Most tools answered by rule at once; the booking and the invoice lookup held for
    the operator (nobody answers: they time out after 4 and 3 s), so the function-calls
    pane always has some waiting, with live countdowns."""
    from console.core.policy import Policy, ToolRule

    return Policy(
        tools={
            "default": ToolRule(action="override", result='{"ok": true}'),
            "check_availability": ToolRule(action="override", result='{"slots": ["09:30", "11:00", "14:15"]}'),
            "lookup_patient": ToolRule(action="override", result='{"name": "Dana Whitfield", "patient_id": "P-1042"}'),
            "book_appointment": ToolRule(
                action="hold",
                timeout_seconds=4,
                on_timeout="override",
                result='{"booked": true, "confirmation": "SD-5521"}',
            ),
            "fetch_invoice": ToolRule(
                action="hold",
                timeout_seconds=3,
                on_timeout="override",
                result='{"invoice": "INV-2291", "total": "$184.00"}',
            ),
        }
    )


async def drive(url: str, *, calls: int, duration: float, speed: float, ramp: float, scenarios: list[str]) -> dict:
    """Keep `calls` simulated calls in flight until `duration` is over; a delivery report."""
    from bench.loopback_client import LoopbackClient
    from console.config import VapiSettings
    from console.simulator.scenarios import load_scenario
    from console.simulator.vapi import (
        PHONE_NUMBER_ID,
        RECEPTIONIST_ID,
        CallEngine,
        SimulatedPlatform,
        Webhook,
        new_call,
    )

    plays = [load_scenario(name) for name in scenarios]
    seed = SimulatedPlatform(url, scenario=plays[0])  # not started: its demo assistant and number only
    assistant, number = seed.assistants[RECEPTIONIST_ID], seed.phone_numbers[PHONE_NUMBER_ID]
    records = []
    started_calls = finished_calls = 0
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + duration
    async with LoopbackClient() as client:  # httpx alone held the driver near 600 events/s
        webhook = Webhook(client, VapiSettings(), os.environ.get(SECRET_ENV), on_record=records.append)  # type: ignore[arg-type]

        async def line(index: int) -> None:
            nonlocal started_calls, finished_calls
            await asyncio.sleep(ramp * index / calls)  # stagger the first calls
            n = index
            while loop.time() < stop_at:
                scenario = plays[n % len(plays)]
                n += calls
                started_calls += 1
                call = new_call(assistant=assistant, scenario=scenario, phone_number=number, webhook_url=url)
                await CallEngine(call, webhook, speed=speed).run()
                finished_calls += 1

        tasks = [asyncio.create_task(line(i)) for i in range(calls)]
        await asyncio.wait(tasks, timeout=max(0.0, stop_at - loop.time()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    ok = [r for r in records if r.status is not None]
    return {
        "calls_started": started_calls,
        "calls_finished": finished_calls,
        "messages": len(records),
        "errors": Counter(r.error for r in records if r.error).most_common(5),
        "by_type": Counter(r.type for r in records).most_common(),
        "latency_ms": summary([r.latency_ms for r in ok if r.type != "tool-calls"]),
    }


# --- instrumentation of the running app -----------------------------------------------------------

ARRIVED: contextvars.ContextVar[float | None] = contextvars.ContextVar("arrived", default=None)


@dataclass
class Press:
    key: str
    expected: str
    sent: float = 0.0
    shown: float | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Probe:
    """Wraps the app's hand-off points and its frame output to time what the operator sees."""

    def __init__(self, app, encode_frames: bool = True, explain_keys_over_ms: float | None = None) -> None:
        self.app = app
        self.encode_frames = encode_frames
        # --explain-slow-keys: what the loop did while a slow press waited for its frame.
        self.explain_keys_over_ms = explain_keys_over_ms
        self.recent: deque[tuple[float, float, str]] = deque(maxlen=2000)  # (start, end, what) on the loop
        self.slow_presses: list[tuple[float, list[tuple[float, float, str]]]] = []
        self.slow_time_ms: Counter[str] = Counter()  # what, summed over the slow presses
        self.slow_count = 0
        # per event handed in: (request arrival, hand-off, the message's own timestamp as epoch seconds)
        self.inbox: list[tuple[float | None, float, float | None]] = []
        self.gate_inbox: list[float] = []
        self.drained: list[tuple[float | None, float, float | None]] = []
        self.gate_drained: list[float] = []
        self.event_ms, self.arrival_ms, self.gate_ms = Samples(), Samples(), Samples()
        self.sent_ms = Samples()  # from the platform's message timestamp (wall clock, 1 ms): any process
        self.events_in = 0
        self.frames = 0
        self.encode_s = 0.0
        self.timings: dict[str, tuple[Samples, Samples]] = {}  # name -> (wall ms, CPU ms) per call
        self.gc_ms, self.gc_cpu_ms = Samples(), Samples()
        self._gc_started = self._gc_cpu = 0.0
        self.press: Press | None = None
        self.keys_pressed = 0
        self.key_ms = Samples()
        self.measuring = False
        self.widget_renders: WidgetRenders | None = None  # --widget-renders
        self._lock = threading.Lock()
        self._install()

    # wrappers are instance attributes: the app resolves them when it binds its callbacks
    def _install(self) -> None:
        app, feed = self.app, self.app.feed
        for name in ("events_in", "gate_in", "drain"):
            if not callable(getattr(feed, name, None)):
                raise SystemExit(f"bench: Feed.{name} is gone; update bench/tui_load.py")
        events_in, gate_in, drain, display = feed.events_in, feed.gate_in, feed.drain, app._display

        def timed_events_in(events):
            from console.core.events import ToolDecided

            now = time.perf_counter()
            arrived = ARRIVED.get()
            if self.measuring:
                self.events_in += len(events)
                # A decision is emitted when the tool call is settled, long after its request arrived.
                self.inbox.extend(
                    (None, now, None) if isinstance(e, ToolDecided) else (arrived, now, e.at.timestamp())
                    for e in events
                )
            return events_in(events)

        def timed_gate_in(item):
            if self.measuring:
                self.gate_inbox.append(time.perf_counter())
            return gate_in(item)

        def timed_drain():
            result = drain()
            self.drained.extend(self.inbox)
            self.gate_drained.extend(self.gate_inbox)
            self.inbox, self.gate_inbox = [], []
            return result

        def timed_display(screen, renderable):
            display(screen, renderable)
            if renderable is None:
                return
            if self.encode_frames and app.is_headless and hasattr(renderable, "render_segments"):
                started = time.perf_counter()
                renderable.render_segments(app.console)  # what a real driver writes to the terminal
                self.encode_s += time.perf_counter() - started
            self.frame(screen)

        feed.events_in, feed.gate_in, feed.drain = timed_events_in, timed_gate_in, timed_drain
        app._display = timed_display
        main = app.main
        for name in ("flush", "refresh_tables"):
            if callable(getattr(main, name, None)):
                setattr(main, name, self._timed(name, getattr(main, name)))
        # The screen's paint timer: a layout pass (reflow, then paint) or only a repaint.
        update = getattr(main, "_on_timer_update", None)
        if callable(update):
            with_layout = self._timed("screen update, layout", update)
            repaint = self._timed("screen update, paint", update)
            main._on_timer_update = lambda: (with_layout if main._layout_required else repaint)()
        gc.callbacks.append(self._gc)
        if self.explain_keys_over_ms is not None:
            self._time_loop_callbacks()

    def _time_loop_callbacks(self, over_ms: float = 2.0) -> None:
        """Record every event-loop callback longer than `over_ms` (the task or function it ran)."""
        handle_run = asyncio.events.Handle._run
        recent = self.recent

        def run(handle):
            started = time.perf_counter()
            handle_run(handle)
            ended = time.perf_counter()
            if ended - started > over_ms / 1000:
                callback = handle._callback
                task = getattr(callback, "__self__", None)
                if isinstance(task, asyncio.Task):
                    coro = task.get_coro()
                    what = getattr(coro, "__qualname__", None) or repr(coro)
                else:
                    what = getattr(callback, "__qualname__", None) or repr(callback)
                recent.append((started, ended, f"loop callback {what}"))

        asyncio.events.Handle._run = run
        self._undo_loop_timing = lambda: setattr(asyncio.events.Handle, "_run", handle_run)

    def explain(self, sent: float, shown: float) -> None:
        """On the loop, once the frame is out: keep what overlapped a slow press."""
        self.slow_count += 1
        overlapping = [
            (max(start, sent), min(end, shown), what)
            for start, end, what in self.recent
            if end > sent and start < shown
        ]
        for start, end, what in overlapping:
            self.slow_time_ms[what] += (end - start) * 1000
        if len(self.slow_presses) < 20:
            self.slow_presses.append(
                (
                    (shown - sent) * 1000,
                    [((start - sent) * 1000, (end - start) * 1000, what) for start, end, what in overlapping],
                )
            )

    def stop_explaining(self) -> None:
        undo = getattr(self, "_undo_loop_timing", None)
        if undo is not None:
            undo()

    def time_methods(self, targets: list[tuple[type, str]]) -> Callable[[], None]:
        """Time methods of widget classes (this process only); returns the undo."""
        undo = []
        for cls, name in targets:
            original = cls.__dict__[name]
            setattr(cls, name, self._timed(f"{cls.__name__}.{name}", original))
            undo.append((cls, name, original))
        return lambda: [setattr(cls, name, original) for cls, name, original in undo]

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started, self._gc_cpu = time.perf_counter(), time.thread_time()
            return
        if self.widget_renders is not None and threading.current_thread() is threading.main_thread():
            self.widget_renders.gc_in_frame += time.perf_counter() - self._gc_started
        if self.explain_keys_over_ms is not None and threading.current_thread() is threading.main_thread():
            what = f"garbage collection, generation {info.get('generation')}"
            self.recent.append((self._gc_started, time.perf_counter(), what))
        if self.measuring and info.get("generation") == 2:
            self.gc_ms.add((time.perf_counter() - self._gc_started) * 1000)
            self.gc_cpu_ms.add((time.thread_time() - self._gc_cpu) * 1000)

    def _timed(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        wall_ms, cpu_ms = self.timings.setdefault(name, (Samples(), Samples()))

        def wrapper(*args, **kwargs):
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                if self.measuring and threading.current_thread() is threading.main_thread():
                    ended = time.perf_counter()
                    wall_ms.add((ended - started) * 1000)
                    cpu_ms.add((time.thread_time() - cpu) * 1000)
                    if self.explain_keys_over_ms is not None:
                        self.recent.append((started, ended, name))

        return wrapper

    def frame(self, screen) -> None:
        now = time.perf_counter()
        self.frames += 1
        if self.widget_renders is not None:
            self.widget_renders.frame_out()
        if screen is not self.app.main:
            return
        if self.drained:
            wall = time.time()
            for arrived, handed, sent in self.drained:
                self.event_ms.add((now - handed) * 1000)
                if arrived is not None:
                    self.arrival_ms.add((now - arrived) * 1000)
                if sent is not None:
                    self.sent_ms.add((wall - sent) * 1000)
            self.drained = []
        if self.gate_drained:
            for at in self.gate_drained:
                self.gate_ms.add((now - at) * 1000)
            self.gate_drained = []
        with self._lock:
            press = self.press
            if press is not None and press.sent and self.app.main.selected_call == press.expected:
                press.shown = now
                if self.explain_keys_over_ms is not None and (now - press.sent) * 1000 > self.explain_keys_over_ms:
                    # after this frame's own paint is recorded
                    asyncio.get_running_loop().call_soon(self.explain, press.sent, now)
                self.press = None
                press.done.set()

    # --- key presses, from a thread as a terminal driver's input thread would send them -----

    def prepare_press(self) -> Press | None:
        """On the loop: which key moves the selection, and to which call."""
        from textual.coordinate import Coordinate

        from console.tui.widgets.panes import LiveCallsTable

        table = self.app.main.query_one(LiveCallsTable)
        if table.row_count < 2:
            return None
        if not table.has_focus:
            table.focus()
        row = table.cursor_row
        step = 1 if row < table.row_count - 1 and (row == 0 or random.random() < 0.5) else -1
        expected = table.coordinate_to_cell_key(Coordinate(row + step, 0)).row_key.value
        if expected == self.app.main.selected_call:
            return None
        return Press("down" if step > 0 else "up", expected)

    def press_keys(self, loop: asyncio.AbstractEventLoop, stop: threading.Event, interval: float) -> None:
        from textual import events
        from textual.css.query import NoMatches

        while not stop.wait(interval * random.uniform(0.5, 1.5)):
            try:
                press = asyncio.run_coroutine_threadsafe(self._prepare(), loop).result(timeout=10)
            except (NoMatches, TimeoutError, RuntimeError):  # the screen is changing, or the app stopping
                continue
            if press is None:
                continue
            with self._lock:
                press.sent = time.perf_counter()
                self.press = press
            self.app._driver.send_message(events.Key(press.key, None))
            press.done.wait(3.0)
            with self._lock:
                self.press = None
            self.keys_pressed += 1
            if press.shown is not None:
                self.key_ms.add((press.shown - press.sent) * 1000)

    async def _prepare(self) -> Press | None:
        return self.prepare_press()


class WidgetRenders:
    """--widget-renders: what each widget's `render_lines` took, in all and in the costliest frames."""

    KEPT_FRAMES = 10

    def __init__(self) -> None:
        from textual.widget import Widget

        self.by_widget: dict[str, list[float]] = {}  # "Class#id" -> [renders, seconds, lines]
        self.in_frame: Counter[str] = Counter()  # seconds, this frame so far
        self.lines_in_frame: Counter[str] = Counter()
        self.gc_in_frame = 0.0  # seconds of collections (any generation) since the last frame
        self.frames: list[tuple[float, float, list[tuple[str, float, int]]]] = []  # the costliest
        self.measuring = False
        render_lines = self._render_lines = Widget.render_lines

        def timed(widget, crop):
            started = time.perf_counter()
            try:
                return render_lines(widget, crop)
            finally:
                if self.measuring:
                    took = time.perf_counter() - started
                    name = f"{type(widget).__name__}#{widget.id or '-'}"
                    totals = self.by_widget.setdefault(name, [0, 0.0, 0])
                    totals[0] += 1
                    totals[1] += took
                    totals[2] += crop.height
                    self.in_frame[name] += took
                    self.lines_in_frame[name] += crop.height

        Widget.render_lines = timed  # type: ignore[method-assign]

    def undo(self) -> None:
        from textual.widget import Widget

        Widget.render_lines = self._render_lines  # type: ignore[method-assign]

    def frame_out(self) -> None:
        """A frame was displayed: keep it if it is among the costliest so far."""
        if self.in_frame:
            # The compositor calls each widget's render_lines on its own (none nests another's):
            # the sum is the frame's widget rendering.
            total = sum(self.in_frame.values())
            top = [(name, took, self.lines_in_frame[name]) for name, took in self.in_frame.most_common(6)]
            self.frames.append((total, self.gc_in_frame, top))
            self.frames.sort(key=lambda frame: -frame[0])
            del self.frames[self.KEPT_FRAMES :]
        self.in_frame.clear()
        self.lines_in_frame.clear()
        self.gc_in_frame = 0.0

    def result(self) -> dict[str, Any]:
        ranked = sorted(self.by_widget.items(), key=lambda item: -item[1][1])
        return {
            "by_widget": [
                {"widget": name, "renders": int(n), "s": round(s, 3), "lines": int(lines)}
                for name, (n, s, lines) in ranked[:15]
            ],
            "costliest_frames": [
                {"widgets_ms": round(total * 1000, 1), "gc_ms": round(gc_s * 1000, 1), "top": top_ms(top)}
                for total, gc_s, top in self.frames
            ],
        }


def top_ms(top: list[tuple[str, float, int]]) -> list[tuple[str, float, int]]:
    return [(name, round(took * 1000, 1), lines) for name, took, lines in top]


def skip_unchanged_titles() -> Callable[[], None]:
    """The experiment behind --same-titles-no-repaint (what the screen could do itself)."""
    from textual.widget import Widget

    descriptor = type(Widget.__dict__["border_title"])  # border_subtitle's too
    original = descriptor.__set__

    def setter(self, obj, title):
        if isinstance(title, str) and self.__get__(obj, type(obj)) == title:
            return
        original(self, obj, title)

    descriptor.__set__ = setter
    return lambda: setattr(descriptor, "__set__", original)


async def loop_lag(samples: Samples, stop: asyncio.Event, period: float = 0.05) -> None:
    """How late a 50 ms timer fires: the loop's responsiveness to anything."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        expected = loop.time() + period
        await asyncio.sleep(period)
        samples.add(max(0.0, (loop.time() - expected) * 1000))


async def sample_memory(series: list[tuple[float, float]], stop: asyncio.Event, start: float) -> None:
    while not stop.is_set():
        series.append((time.perf_counter() - start, rss_mb()))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass


async def trace_memory(every: float, stop: asyncio.Event, start: float, db: Path, by_line: bool) -> None:
    """--trace-memory: what grew since the last look -- RSS, Python's allocated blocks, the
    WAL file, objects by type and, with --by-line, the heap by source line (tracemalloc: slow)
    -- printed to stderr as the run goes."""
    import tracemalloc

    def look():
        return (
            tracemalloc.take_snapshot() if by_line else None,
            Counter(type(o).__name__ for o in gc.get_objects()),
            sys.getallocatedblocks(),
        )

    if by_line:
        tracemalloc.start(1)
    lines_before, types_before, blocks_before = look()
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
        lines_now, types_now, blocks_now = look()
        wal = db.with_name(db.name + "-wal")
        print(
            f"\n--- {time.perf_counter() - start:.0f} s: RSS {rss_mb():.1f} MB, allocated blocks {blocks_now} "
            f"({blocks_now - blocks_before:+d}), WAL {wal.stat().st_size / 2**20 if wal.exists() else 0:.1f} MB",
            file=sys.stderr,
        )
        print(f"  below the heap: {memory_below_the_heap()}", file=sys.stderr)
        if by_line:
            for stat in lines_now.compare_to(lines_before, "lineno")[:12]:
                print(
                    f"  {stat.size_diff / 1024:+9.0f} KiB {stat.count_diff:+8d}  {stat.traceback[0]}", file=sys.stderr
                )
        grew = sorted(
            ((name, types_now[name] - types_before[name]) for name in types_now | types_before),
            key=lambda item: -abs(item[1]),
        )[:10]
        print("  objects: " + ", ".join(f"{name} {delta:+d}" for name, delta in grew), file=sys.stderr, flush=True)
        lines_before, types_before, blocks_before = lines_now, types_now, blocks_now
    if by_line:
        tracemalloc.stop()


async def discard(stream: asyncio.StreamReader) -> None:
    """Read to the end, keeping nothing: `read()` keeps every block until the end, and a long
    run's `serve` notes were the console's RSS growing 0.3 MB a minute."""
    while await stream.read(1 << 16):
        pass


async def start_serve(workdir: Path, secret: str):
    """`voice-console serve` on a free port with the bench's policy, its state in `workdir`."""
    from console.services.serve_state import read_state, state_file

    os.environ["XDG_STATE_HOME"] = str(workdir / "state")  # its state file, and where the console looks
    policy = workdir / "policy.toml"
    policy.write_text(policy_toml(load_policy()))
    serve = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "console",
        "serve",
        "--port",
        "0",
        "--db",
        str(workdir / "history.db"),
        "--policy",
        str(policy),
        env={**os.environ, SECRET_ENV: secret},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(ROOT),
    )
    assert serve.stderr is not None
    line = (await serve.stderr.readline()).decode()
    port = int(line.split("listening on http://127.0.0.1:", 1)[1].split()[0])
    state = read_state(state_file(port))
    if state is None:
        raise SystemExit(f"bench: the serve did not start: {line}")
    asyncio.create_task(discard(serve.stderr))  # drained, so its notes never block it
    return serve, state


def structure_sizes(app) -> dict[str, Any]:
    main, sizes = app.main, {}
    transcripts = getattr(main, "transcripts", None)
    if transcripts is not None:
        sizes["transcripts"] = len(transcripts)
        sizes["transcript_entries_max"] = max((len(t.entries) for t in transcripts.values()), default=0)
    for name in ("decided", "_requested"):
        if hasattr(main, name):
            sizes[name.lstrip("_")] = len(getattr(main, name))
    timelines = getattr(main, "timelines", None)
    if timelines is not None and hasattr(timelines, "__len__"):
        sizes["timelines"] = len(timelines)
    # Widgets looked up by what they have, not by class: the screen is still changing.
    for name, selector, measure in (
        ("event_rows", "#events-box", lambda w: len(w.model.rows)),
        ("event_log_lines", "#events", lambda w: w.line_count),
        ("live_call_rows", "#calls", lambda w: w.row_count),
        ("function_call_rows", "#tools", lambda w: w.row_count),
    ):
        widget = next(iter(main.query(selector)), None)
        try:
            sizes[name] = measure(widget)
        except AttributeError:  # absent, or not that kind of widget any more
            pass
    receiver = app.context.receiver
    if receiver is not None:
        sizes["tracked_calls"] = len(receiver.tracker.calls())
        if receiver.gate is not None:
            sizes["tool_calls_waiting"] = len(receiver.gate.pending())
    sizes["feed_backlog"] = len(app.feed.events)
    sizes["gc_tracked_objects"] = len(gc.get_objects())
    return sizes


async def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from console.config import ReceiverSettings, Settings, StorageSettings
    from console.secrets import SecretStore
    from console.services.pipeline import WebhookPipeline
    from console.tui.app import Services, VoiceConsoleApp
    from console.tui.strips import keep_strips_acyclic, strips_as_textual
    from console.tui.widgets.table import WindowTable
    from console.tui.widgets.transcript import TranscriptPane

    handle = WebhookPipeline.handle
    undo_titles = skip_unchanged_titles() if args.same_titles_no_repaint else (lambda: None)
    if args.strips_as_textual:  # the app's import made them acyclic
        strips_as_textual()

    async def timed_handle(self, route, request):  # when the request reached the pipeline
        ARRIVED.set(time.perf_counter())
        return await handle(self, route, request)

    WebhookPipeline.handle = timed_handle  # this process only

    secret = token_source.token_urlsafe(24)
    workdir = Path(tempfile.mkdtemp(prefix="tui-load-"))
    settings = Settings(receiver=ReceiverSettings(port=0), storage=StorageSettings(db=workdir / "history.db"))
    serve = None
    # The platform's side starts before the console: an attached console lowers its own priority,
    # and the processes it starts afterwards would inherit it (the simulator would run slower).
    child = await start_driver(args, secret)
    if args.attached:  # the receiver in a `serve` of its own; the console attaches to it
        serve, state = await start_serve(workdir, secret)
        services = Services(
            settings, attach_to=state, operator="bench", yield_cpu_when_attached=not args.console_keeps_priority
        )
    else:
        services = Services(settings, secret_store=SecretStore(env={SECRET_ENV: secret}), policy=load_policy())
    app = VoiceConsoleApp(services)
    probe = Probe(app, encode_frames=not args.no_encode, explain_keys_over_ms=args.explain_slow_keys)
    untime = probe.time_methods([(WindowTable, "sync"), (TranscriptPane, "show")])
    if args.widget_renders:
        probe.widget_renders = WidgetRenders()
    loop = asyncio.get_running_loop()
    app_task = asyncio.create_task(app.run_async(headless=True, size=SIZE))
    deadline = time.monotonic() + 20
    while app.context.receiver is None or not app.main.is_mounted:
        if app_task.done() or time.monotonic() > deadline:
            raise SystemExit(f"bench: the app did not start ({app_task.exception() if app_task.done() else 'timeout'})")
        await asyncio.sleep(0.05)
    url = app.context.receiver.url + "/webhook/vapi"
    await asyncio.sleep(0.5)
    gc.collect()
    if args.full_collection_every or args.young_collection_after:  # the experiments: other GC thresholds
        young, middle, full = gc.get_threshold()
        gc.set_threshold(args.young_collection_after or young, middle, args.full_collection_every or full)

    stop = asyncio.Event()
    lag = Samples()
    memory: list[tuple[float, float]] = []
    rss_start = rss_mb()
    load_before = os.getloadavg()
    started = time.perf_counter()
    cpu_started = time.process_time()
    probe.measuring = True
    if probe.widget_renders is not None:
        probe.widget_renders.measuring = True
    background = [asyncio.create_task(loop_lag(lag, stop)), asyncio.create_task(sample_memory(memory, stop, started))]
    if args.trace_memory:
        background.append(
            asyncio.create_task(trace_memory(args.trace_memory, stop, started, settings.storage.db, args.by_line))
        )
    await tell_driver(child, url)
    key_stop = threading.Event()
    keys = threading.Thread(target=probe.press_keys, args=(loop, key_stop, args.key_interval), daemon=True)
    keys.start()
    out, _ = await child.communicate()
    key_stop.set()
    await asyncio.to_thread(keys.join, 10)
    await asyncio.sleep(0.3)  # the last batch reaches the screen
    probe.measuring = False
    if probe.widget_renders is not None:
        probe.widget_renders.measuring = False
        probe.widget_renders.undo()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    stop.set()
    await asyncio.gather(*background)
    sizes = structure_sizes(app)
    rss_end = rss_mb()
    if serve is not None:
        acknowledged = await receiver_acknowledged(state.url)
    else:
        acknowledged = app.context.receiver.pipeline.stats.acknowledged.snapshot()
    app.exit()
    await asyncio.wait_for(app_task, 30)
    if serve is not None:
        serve.terminate()
        await serve.wait()
    shutil.rmtree(workdir, ignore_errors=True)
    WebhookPipeline.handle = handle
    undo_titles()
    if args.strips_as_textual:
        keep_strips_acyclic()
    untime()
    gc.callbacks.remove(probe._gc)
    probe.stop_explaining()
    load = json.loads(out.decode() or "{}")

    second_half = [mb for at, mb in memory if at >= elapsed / 2]
    return {
        "calls": args.calls,
        "duration_s": round(elapsed, 1),
        "speed": args.speed,
        "scenarios": args.scenarios,
        "size": f"{SIZE[0]}x{SIZE[1]}",
        "frames_encoded": not args.no_encode,
        "full_collection_every": args.full_collection_every,
        "young_collection_after": args.young_collection_after,
        "gc_threshold": gc.get_threshold(),
        "same_titles_no_repaint": args.same_titles_no_repaint,
        "strips_as_textual": args.strips_as_textual,
        "adaptive_mmap_threshold": args.adaptive_mmap_threshold,
        "load": load,
        "acknowledged": acknowledged,
        "events": probe.events_in,
        "events_per_s": probe.events_in / elapsed,
        "attached": args.attached,
        "event_to_screen_ms": summary(probe.event_ms),
        "message_to_screen_ms": summary(probe.sent_ms),
        "request_to_screen_ms": summary(probe.arrival_ms),
        "gate_to_screen_ms": summary(probe.gate_ms),
        "key_to_frame_ms": summary(probe.key_ms),
        "keys_pressed": probe.keys_pressed,
        "keys_not_shown_in_3s": probe.keys_pressed - probe.key_ms.n,
        "frames": probe.frames,
        "frames_per_s": probe.frames / elapsed,
        "cpu_share": cpu / elapsed,
        "cpu_s": cpu,
        "frame_encode_s": probe.encode_s,
        "loop_lag_ms": summary(lag),
        "gc_gen2_ms": loop_time(probe.gc_ms, probe.gc_cpu_ms),
        "handler_ms": {name: loop_time(wall, cpu) for name, (wall, cpu) in probe.timings.items()},
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "rss_mb": {
            "start": rss_start,
            "peak": max(mb for _, mb in memory) if memory else rss_end,
            "end": rss_end,
            "second_half_min": min(second_half, default=rss_end),
            "second_half_max": max(second_half, default=rss_end),
            # The last sample of each minute: what "flat after warm-up" is read from.
            "by_minute": [
                round(max(mb for at, mb in memory if int(at // 60) == minute), 1)
                for minute in sorted({int(at // 60) for at, _ in memory})
            ],
        },
        "rss_series": [(round(at, 1), round(mb, 1)) for at, mb in memory],
        "structures": sizes,
        **(
            {
                "slow_keys": {
                    "over_ms": args.explain_slow_keys,
                    "presses": probe.slow_count,
                    "time_ms_by_what": dict(probe.slow_time_ms.most_common(15)),
                    "examples": probe.slow_presses,
                }
            }
            if args.explain_slow_keys is not None
            else {}
        ),
        **({"widget_renders": probe.widget_renders.result()} if probe.widget_renders is not None else {}),
    }


async def start_driver(args: argparse.Namespace, secret: str) -> asyncio.subprocess.Process:
    """The child process playing the calls (this script with --drive -): it waits for the webhook
    URL on its stdin (`tell_driver`), then plays; its report on stdout."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).resolve()),
        "--drive",
        "-",
        "--calls",
        str(args.calls),
        "--duration",
        str(args.duration),
        "--speed",
        str(args.speed),
        "--ramp",
        str(args.ramp),
        "--scenarios",
        args.scenarios,
        env={**os.environ, SECRET_ENV: secret},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def tell_driver(child: asyncio.subprocess.Process, url: str) -> None:
    assert child.stdin is not None
    child.stdin.write(f"{url}\n".encode())
    await child.stdin.drain()
    child.stdin.close()


async def serve_alone(args: argparse.Namespace) -> dict[str, Any]:
    """The load of a run, on a `serve` with no console: what acknowledging costs without one."""
    secret = token_source.token_urlsafe(24)
    workdir = Path(tempfile.mkdtemp(prefix="tui-load-"))
    serve, state = await start_serve(workdir, secret)
    try:
        child = await start_driver(args, secret)
        await tell_driver(child, state.url + "/webhook/vapi")
        out, _ = await child.communicate()
        acknowledged = await receiver_acknowledged(state.url)
    finally:
        serve.terminate()
        await serve.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "calls": args.calls,
        "duration_s": args.duration,
        "speed": args.speed,
        "load": json.loads(out or b"{}"),
        "acknowledged": acknowledged,
    }


async def receiver_acknowledged(url: str) -> dict[str, Any]:
    """What `serve` counted itself (/healthz): from having a whole request to its answer, tool
    calls aside -- the receiver's own time, without the driver's (a busy Python process too)."""
    import httpx

    async with httpx.AsyncClient() as client:
        acknowledged: dict[str, Any] = (await client.get(url + "/healthz")).json()["acknowledged"]
    return acknowledged


def acknowledged_text(acknowledged: dict[str, Any]) -> str:
    return (
        f"the receiver's own count (request in to answer out, tool calls aside): {acknowledged['n']} in "
        f"p50 {acknowledged['p50_ms'] or float('nan'):.2f} ms, p99 {acknowledged['p99_ms'] or float('nan'):.2f} ms, "
        f"max {acknowledged['max_ms'] or float('nan'):.1f} ms"
    )


def report_alone(result: dict[str, Any]) -> str:
    load = result["load"]
    latency = load.get("latency_ms", {})
    p50, p99, worst = (latency.get(key, float("nan")) for key in ("p50", "p99", "max"))
    return (
        f"{result['calls']} concurrent calls for {result['duration_s']:g} s at speed {result['speed']:g} on "
        f"`serve` with no console: {load.get('messages', 0)} webhook messages, errors: {load.get('errors') or 'none'}; "
        f"acknowledged (as the driver saw it) in p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms; "
        + acknowledged_text(result["acknowledged"])
    )


def report(result: dict[str, Any]) -> str:
    def row(name: str, stats: dict[str, Any], target: float | None = None) -> str:
        verdict = "" if target is None else f"{target:>8.0f}  {'ok' if stats['p99'] < target else 'MISSED'}"
        return (
            f"{name:28}{stats['n']:>8}{stats['p50']:>9.1f}{stats['p99']:>9.1f}{stats['max']:>9.1f}"
            f"{verdict and '   p99 < ' + verdict}"
        )

    load, rss = result["load"], result["rss_mb"]
    driver_seen = load.get("latency_ms", {})
    setup = (
        f"{result['calls']} concurrent calls for {result['duration_s']} s at speed {result['speed']:g} "
        f"({result['scenarios']}), {result['size']} headless"
        + (", frames encoded as for a terminal" if result["frames_encoded"] else "")
        + (
            f", a full collection every {result['full_collection_every']} middle ones"
            if result.get("full_collection_every")
            else ""
        )
        + (
            f", a young collection after {result['young_collection_after']} allocations"
            if result.get("young_collection_after")
            else ""
        )
        + (", unchanged border titles not repainted" if result.get("same_titles_no_repaint") else "")
        + (", Textual's strips as Textual has them (cyclic)" if result.get("strips_as_textual") else "")
        + (", glibc's mmap threshold adapting" if result.get("adaptive_mmap_threshold") else "")
        + (", attached to a `serve` of its own" if result.get("attached") else ", receiving in its own process")
    )
    lines = [
        setup,
        f"load: {load.get('calls_started', 0)} calls dialed, {load.get('calls_finished', 0)} finished, "
        f"{load.get('messages', 0)} webhook messages, errors: {load.get('errors') or 'none'}; "
        f"receiver answered (as the driver saw it) in p50 {driver_seen.get('p50', float('nan')):.1f} ms, "
        f"p99 {driver_seen.get('p99', float('nan')):.1f} ms; " + acknowledged_text(result["acknowledged"]),
        f"events handed to the UI: {result['events']} ({result['events_per_s']:.0f}/s); "
        f"frames: {result['frames']} ({result['frames_per_s']:.1f}/s); CPU {result['cpu_share'] * 100:.0f}% of a core",
        "",
        f"{'latency (ms)':28}{'n':>8}{'p50':>9}{'p99':>9}{'max':>9}   target",
        row("event to screen", result["event_to_screen_ms"], TARGET_EVENT_P99_MS),
        row("  webhook request to screen", result["request_to_screen_ms"]),
        row("  platform's message to screen", result["message_to_screen_ms"]),
        row("  gate event to screen", result["gate_to_screen_ms"]),
        row("key press to frame", result["key_to_frame_ms"], TARGET_KEY_P99_MS),
        row("event-loop timer lag", result["loop_lag_ms"]),
    ]
    if result["keys_not_shown_in_3s"]:
        lines.append(f"  ({result['keys_not_shown_in_3s']} of {result['keys_pressed']} presses not shown within 3 s)")
    lines.append(
        f"{'time on the loop (ms)':28}{'calls':>8}{'p50':>9}{'p99':>9}{'max':>9}   CPU ms p99/max; wall/CPU s in all"
    )
    for name, stats in [*result["handler_ms"].items(), ("full garbage collections", result["gc_gen2_ms"])]:
        lines.append(
            row(f"  {name}", stats) + f"   {stats['cpu_p99']:.1f}/{stats['cpu_max']:.1f}; "
            f"{stats['total_s']:.1f}/{stats.get('cpu_total_s', float('nan')):.1f}"
        )
    if result["events"]:
        per_event = result.get("cpu_s", float("nan")) * 1000 / result["events"]
        lines.append(
            f"  process CPU per event handed to the UI: {per_event:.2f} ms "
            "(receiver, SQLite, screen; the simulator is not counted)"
        )
    slow = result.get("slow_keys")
    if slow is not None:
        lines += [
            "",
            f"{slow['presses']} presses slower than {slow['over_ms']:g} ms; what the loop did meanwhile "
            "(ms summed over them; timed sections also count inside their loop callback):",
        ]
        lines += [f"  {ms:9.1f}  {what}" for what, ms in slow["time_ms_by_what"].items()]
        for total, parts in slow["examples"][:5]:
            lines.append(
                f"  a press shown after {total:.0f} ms: "
                + "; ".join(f"+{at:.0f} {what} {ms:.0f}" for at, ms, what in parts)
            )
    renders = result.get("widget_renders")
    if renders is not None:
        lines += ["", "widgets' render_lines (s in all, renders, lines, ms a line):"]
        lines += [
            f"  {w['s']:7.2f} {w['renders']:7} {w['lines']:8} {w['s'] * 1000 / max(w['lines'], 1):7.3f}  {w['widget']}"
            for w in renders["by_widget"]
        ]
        lines.append("the costliest frames (widgets' rendering; collections since the frame before; ms/lines):")
        lines += [
            f"  {f['widgets_ms']:6.1f} ms, gc {f['gc_ms']:5.1f} ms: "
            + ", ".join(f"{name} {ms:.1f}/{n}" for name, ms, n in f["top"])
            for f in renders["costliest_frames"]
        ]
    lines += [
        "",
        f"RSS MB: start {rss['start']:.0f}, peak {rss['peak']:.0f}, end {rss['end']:.0f}; "
        f"second half of the run {rss['second_half_min']:.0f}..{rss['second_half_max']:.0f}"
        + (
            f"; by minute (the most in each): {' '.join(f'{mb:.0f}' for mb in rss['by_minute'])}"
            if len(rss.get("by_minute", [])) > 2
            else ""
        ),
        "bounded structures at the end: " + ", ".join(f"{k} {v}" for k, v in result["structures"].items()),
        (
            "machine load average (1, 5, 15 min) before: "
            + ", ".join(f"{x:.2f}" for x in result["load_average"]["before"])
            + "; after: "
            + ", ".join(f"{x:.2f}" for x in result["load_average"]["after"])
            + f" ({os.cpu_count()} CPUs; the simulator runs in a second process)"
        ),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100, help="calls in flight at once (default 100)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="scenario speed: 1 is real time, 2 twice as many events per second (default 1)",
    )
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which the first calls start (default 5)")
    parser.add_argument(
        "--scenarios",
        default="booking,barge-in-storm,slow-tool",
        help="bundled scenarios (or TOML files) the calls cycle through",
    )
    parser.add_argument(
        "--key-interval", type=float, default=0.3, help="mean seconds between key presses (default 0.3)"
    )
    parser.add_argument("--no-encode", action="store_true", help="do not encode frames as a terminal driver would")
    parser.add_argument(
        "--full-collection-every",
        type=int,
        metavar="N",
        help="experiment: a full garbage collection every N middle-generation ones instead of the app's setting",
    )
    parser.add_argument(
        "--young-collection-after",
        type=int,
        metavar="N",
        help="experiment: a young-generation garbage collection after N allocations instead of "
        "the app's setting (objects that live longer reach the older generations)",
    )
    parser.add_argument(
        "--same-titles-no-repaint",
        action="store_true",
        help="experiment: setting a border title or subtitle to the text it already has does not "
        "repaint the pane (Textual repaints the whole pane on every set)",
    )
    parser.add_argument(
        "--adaptive-mmap-threshold",
        action="store_true",
        help="experiment: leave glibc's mmap threshold adapting, as `voice-console` does not (console/heap.py)",
    )
    parser.add_argument(
        "--strips-as-textual",
        action="store_true",
        help="experiment: Textual's strips as Textual has them, each caching itself (a reference cycle "
        "per strip: console/tui/strips.py), to measure what the console's fix buys",
    )
    parser.add_argument(
        "--trace-memory",
        type=float,
        metavar="SECONDS",
        help="diagnosis: every SECONDS print what grew (RSS, Python's allocated blocks, the WAL "
        "file, objects by type) and where the RSS is below the heap (anonymous/file pages, C "
        "malloc's freed-but-kept bytes, pymalloc's arenas) to stderr",
    )
    parser.add_argument(
        "--by-line",
        action="store_true",
        help="with --trace-memory: also the heap's growth by source line (tracemalloc; slows the "
        "app, so its latencies are not comparable)",
    )
    parser.add_argument(
        "--explain-slow-keys",
        type=float,
        metavar="MS",
        help="diagnosis: for key presses slower than MS, what the event loop did meanwhile "
        "(timed sections, garbage collections, loop callbacks over 2 ms)",
    )
    parser.add_argument(
        "--widget-renders",
        action="store_true",
        help="diagnosis: each widget's render_lines time and lines, and the costliest frames' make-up",
    )
    parser.add_argument(
        "--attached",
        action="store_true",
        help="the receiver runs as a `serve` of its own and the console attaches to it (as `voice-console` does); "
        "without it the console receives in its own process (--no-attach)",
    )
    parser.add_argument(
        "--console-keeps-priority",
        action="store_true",
        help="experiment, with --attached: the console keeps its CPU priority (`voice-console` lowers it)",
    )
    parser.add_argument(
        "--no-console",
        action="store_true",
        help="the baseline for --attached: the same load on a `serve` with no console attached; "
        "prints how fast it acknowledged",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--drive", metavar="URL", help=argparse.SUPPRESS)  # the child process playing the calls
    args = parser.parse_args()
    if args.calls < 1 or args.duration <= 0 or args.speed <= 0:
        parser.error("--calls, --duration and --speed must be positive")
    if args.drive:
        url = sys.stdin.readline().strip() if args.drive == "-" else args.drive
        if not url:  # the bench ended before the console was up
            return 1
        result = asyncio.run(
            drive(
                url,
                calls=args.calls,
                duration=args.duration,
                speed=args.speed,
                ramp=args.ramp,
                scenarios=args.scenarios.split(","),
            )
        )
        print(json.dumps(result))
        return 0
    if args.no_console:
        alone = asyncio.run(serve_alone(args))
        print(json.dumps(alone, indent=2) if args.json else report_alone(alone))
        return 0
    if not args.adaptive_mmap_threshold:
        from console.heap import pin_mmap_threshold

        pin_mmap_threshold()  # as `voice-console` does, first thing
    result = asyncio.run(run_bench(args))
    print(json.dumps(result, indent=2) if args.json else report(result))
    met = (
        result["event_to_screen_ms"]["p99"] < TARGET_EVENT_P99_MS
        and result["key_to_frame_ms"]["p99"] < TARGET_KEY_P99_MS
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
