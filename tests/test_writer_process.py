"""The history's writer process: a real child process writing a real SQLite file.

What a receiver relies on: a write returns only once its COMMIT is done; if the child dies,
the writes in flight fail (their callers send no 2xx) and the next write starts a new
child; the child never outlives its parent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from console.core.events import CallStatus
from console.store import DeliveryRecord, Store, StoreError


def delivery(n: int) -> DeliveryRecord:
    return DeliveryRecord(
        provider="vapi",
        route="/webhook/vapi",
        method="POST",
        path="/webhook/vapi",
        message_type="status-update",
        call_id=f"call-{n % 10}",
        received_at=datetime.now(UTC),
        body=b'{"n": %d}' % n,
        headers=(("content-type", "application/json"),),
        auth_scheme=None,
    )


def ringing(n: int) -> CallStatus:
    return CallStatus(at=datetime.now(UTC), provider="vapi", call_id=f"call-{n % 10}", status="ringing")


def stored_bodies(path: Path) -> set[bytes]:
    with sqlite3.connect(path) as conn:
        return {bytes(row[0]) for row in conn.execute("SELECT body FROM deliveries")}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


async def test_writes_under_load_are_all_committed_through_the_child(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = await Store.open(path, writer_process=True, session=True)
    assert store._process is not None and store._process.pid != os.getpid()
    receipts = await asyncio.gather(*(store.record_delivery(delivery(n), [ringing(n)]) for n in range(2000)))
    child = store._process.pid
    await store.close()

    assert sorted(r.delivery_id for r in receipts) == list(range(1, 2001))
    assert len({r.first_event_id for r in receipts}) == 2000
    assert len(stored_bodies(path)) == 2000
    assert child is not None and not alive(child)  # closing the store ended it


async def test_a_killed_child_fails_the_writes_in_flight_and_the_next_write_restarts_it(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    store = await Store.open(path, writer_process=True)
    try:
        assert store._process is not None
        first = store._process.pid
        assert first is not None

        async def write(n: int) -> bool:
            try:
                await store.record_delivery(delivery(n), [ringing(n)])
            except StoreError:
                return False
            return True

        writers = [asyncio.create_task(write(n)) for n in range(3000)]
        await asyncio.sleep(0.05)
        os.kill(first, signal.SIGKILL)
        outcomes = await asyncio.gather(*writers)
        # Whatever was reported written is on disk; what was in flight failed, not lost silently.
        acknowledged = {b'{"n": %d}' % n for n, ok in enumerate(outcomes) if ok}
        assert acknowledged <= stored_bodies(path)

        await store.record_delivery(delivery(99_999), [ringing(1)])  # a new child takes over
        assert store._process.pid not in (None, first)
        assert b'{"n": 99999}' in stored_bodies(path)
    finally:
        await store.close()


CHILD_OF_A_KILLED_PARENT = """
import asyncio, sys
from pathlib import Path
from console.store import Store

async def main():
    store = await Store.open(Path(sys.argv[1]), writer_process=True)
    print(store._process.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_the_child_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD_OF_A_KILLED_PARENT, str(tmp_path / "history.db")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(child), "the writer process outlived its receiver"
    finally:
        parent.kill()
        parent.wait(10)


async def test_the_wal_stays_bounded_under_continuous_writes_and_reads(tmp_path: Path) -> None:
    """Checkpoints must catch up with the writes: a WAL that is never restarted grows without end
    (as it did with checkpoints on a thread of their own, racing the commits)."""
    path = tmp_path / "history.db"
    store = await Store.open(path, writer_process=True)
    stop = asyncio.Event()

    async def reader() -> None:  # an attached console's history reads, all along
        while not stop.is_set():
            await store.fetchall("SELECT count(*) FROM events")
            await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    try:
        for start in range(0, 30_000, 500):  # ~30 MB of WAL traffic, in waves of concurrent writes
            await asyncio.gather(*(store.record_delivery(delivery(n), [ringing(n)]) for n in range(start, start + 500)))
    finally:
        stop.set()
        await reading
    wal = path.with_name(path.name + "-wal").stat().st_size
    await store.close()
    assert wal < 12 * 2**20, f"the WAL grew to {wal / 2**20:.1f} MB"
