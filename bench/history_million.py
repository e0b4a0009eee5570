"""History at scale: fill a database with ~1,000,000 events (~10,000 calls)
through the Store API, then time the reads the console does: the calls list,
one call, and full-text search (FTS5 and the LIKE fallback).

    python bench/history_million.py [--events 1000000] [--calls 10000] [--db F] [--keep]

Not a test: it prints figures to compare across changes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from console.core.events import (
    BargeIn,
    CallEnded,
    CallStatus,
    Event,
    SpeechStarted,
    ToolDecided,
    ToolRequested,
    TranscriptFinal,
    TranscriptPartial,
)
from console.store import queries
from console.store.db import Store

WORDS = (
    "hello hi thanks please yes no okay sure book booking table appointment tomorrow today friday saturday "
    "morning evening seven eight o'clock people party reservation cancel change refund order delivery address "
    "number phone email account balance payment card transfer agent human help question price menu vegan "
    "window seat parking birthday anniversary confirm confirmed sorry moment check available unavailable "
    "could would like want need the a an to for at on in of and or but with my your our is are was it this that"
).split()
RARE = ["zanzibar", "quixotic", "xylophone", "marzipan", "kumquat"]
PROVIDERS = ("vapi", "retell", "twilio")
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(4, 16))
    if rng.random() < 0.001:
        words.insert(rng.randrange(len(words)), rng.choice(RARE))
    return " ".join(words).capitalize() + rng.choice((".", "?", "!"))


def make_call(n: int, per_call: int, rng: random.Random) -> list[Event]:
    call_id = f"call-{n:06d}"
    provider: Any = PROVIDERS[n % 3]
    start = T0 + timedelta(seconds=n * 37)
    t = 0.0

    def at() -> datetime:
        return start + timedelta(seconds=t)

    events: list[Event] = [
        CallStatus(at=at(), provider=provider, call_id=call_id, status="ringing"),
        CallStatus(at=at() + timedelta(seconds=1), provider=provider, call_id=call_id, status="in-progress"),
    ]
    tool = 0
    while len(events) < per_call - 1:
        t += rng.uniform(0.5, 4.0)
        role: Any = "user" if rng.random() < 0.5 else "assistant"
        text = sentence(rng)
        roll = rng.random()
        if roll < 0.03:
            events.append(BargeIn(at=at(), provider=provider, call_id=call_id, cut_text=text))
        elif roll < 0.05:
            tool += 1
            tool_call_id = f"{call_id}-t{tool}"
            events.append(
                ToolRequested(
                    at=at(),
                    provider=provider,
                    call_id=call_id,
                    tool_call_id=tool_call_id,
                    name="book_table",
                    arguments={"party": rng.randint(1, 8)},
                )
            )
            events.append(
                ToolDecided(
                    at=at() + timedelta(milliseconds=800),
                    provider=provider,
                    call_id=call_id,
                    tool_call_id=tool_call_id,
                    name="book_table",
                    decision="approved",
                    by="rule",
                    result='{"ok":true}',
                    latency_ms=800.0,
                )
            )
        elif roll < 0.15:
            events.append(SpeechStarted(at=at(), provider=provider, call_id=call_id, role=role))
        elif roll < 0.55:
            events.append(
                TranscriptPartial(at=at(), provider=provider, call_id=call_id, role=role, text=text[: len(text) // 2])
            )
        else:
            events.append(TranscriptFinal(at=at(), provider=provider, call_id=call_id, role=role, text=text))
    events.append(
        CallEnded(
            at=at() + timedelta(seconds=1),
            provider=provider,
            call_id=call_id,
            reason="customer-ended-call",
            summary=sentence(rng),
            cost=0.05,
            duration_s=t,
        )
    )
    return events[:per_call]


async def fill(store: Store, calls: int, per_call: int, concurrency: int = 32) -> int:
    rng = random.Random(42)
    next_call = iter(range(calls))
    written = 0

    async def worker() -> None:
        nonlocal written
        for n in next_call:
            events = make_call(n, per_call, rng)
            await store.record_events(events)
            written += len(events)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return written


async def timed(label: str, fn: Callable[[], Awaitable[Any]], repeat: int = 5) -> None:
    times = []
    result: Any = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await fn()
        times.append((time.perf_counter() - started) * 1000)
    size = len(result) if isinstance(result, list) else ("found" if result else "none")
    print(f"  {label:<44} first {times[0]:8.2f} ms   median {statistics.median(times):8.2f} ms   ({size})")


async def reads(store: Store, calls: int) -> None:
    middle = f"call-{calls // 2:06d}"
    await timed("list_calls(limit=50)", lambda: queries.list_calls(store, limit=50))
    half = calls // 2
    await timed(f"list_calls(limit=50, offset={half})", lambda: queries.list_calls(store, limit=50, offset=half))
    await timed("list_calls(provider='retell')", lambda: queries.list_calls(store, provider="retell"))
    await timed(f"get_call({middle!r})", lambda: queries.get_call(store, middle))
    for text in ("book", "table seven o'clock", "refund card", "zanzibar", "nonexistentword", "help?"):
        await timed(f"search({text!r})", lambda text=text: queries.search(store, text))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--db", type=Path, help="reuse or create this file (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    args = parser.parse_args()

    tmp = None if args.db else Path(tempfile.mkdtemp(prefix="vc-history-"))
    path: Path = args.db or tmp / "history.db"  # type: ignore[operator]
    per_call = max(4, args.events // args.calls)
    try:
        async with await Store.open(path) as store:
            if (await queries.counts(store))["events"] == 0:
                started = time.perf_counter()
                written = await fill(store, args.calls, per_call)
                elapsed = time.perf_counter() - started
                print(
                    f"filled {written:,} events in {args.calls:,} calls in {elapsed:.1f} s "
                    f"({written / elapsed:,.0f} events/s through Store.record_events)"
                )
        print(f"database {path}: {path.stat().st_size / 1e6:.0f} MB")

        async with await Store.open(path) as store:
            counts = await queries.counts(store)
            print("counts:", ", ".join(f"{k} {v:,}" for k, v in counts.items()))
            print(f"reads (FTS5 {'on' if store.fts_enabled else 'unavailable'}):")
            await reads(store, args.calls)
            await timed("counts()", lambda: queries.counts(store), repeat=3)
        async with await Store.open(path, fts=False) as store:
            print("search with the LIKE fallback:")
            for text in ("book", "table seven o'clock", "zanzibar", "nonexistentword"):
                await timed(f"search({text!r})", lambda text=text: queries.search(store, text), repeat=3)
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp)
        elif tmp is not None:
            print(f"kept {path}")


if __name__ == "__main__":
    asyncio.run(main())
