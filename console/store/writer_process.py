"""The history's writer in a process of its own.

In the receiving process the writer thread and the event loop share one interpreter
lock: every row the thread binds, every plan it builds and every hand-off after SQLite
releases the lock is time the loop cannot parse, verify or acknowledge. Measured under
load (bench/ingest.py) the loop was idle a third of the time, waiting for that lock.
Here the transaction runs in a child process on its own core: the receiving process
only pickles the prepared rows (serialised and redacted already) and waits for the
commit's answer, which is still what a 2xx waits for.

The wire between them is a socket pair: each message is a 4-byte length and a pickle.
Parent -> child: (payloads, session_id); child -> parent: (True, results) or (False,
exception). Several transactions may be on the wire; the child runs them in order and
answers in order (`console.store.writer_child`).

The child ends when its socket closes (the parent closed the store, or died: it never
outlives its receiver) and ignores Ctrl-C, which the terminal sends to the whole
process group: the parent decides when writing stops.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

from console.store.errors import StoreError
from console.store.writer import WIRE_LENGTH, Op, results_from_wire, settle, to_wire

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 20.0


class WriterProcess:
    """The parent's handle on the writer process.

    `send(ops)` writes one message at once (no task, no wait) and the answer, read by a
    protocol on the socket, settles each op's future right where it arrives: a webhook's
    handler resumes one loop iteration after its commit is known, which under load is
    most of what a request waits for. The child runs messages in order (several on the
    wire at once, merged into one transaction when they queue up) and answers in order.

    If the process dies, every op in flight fails with StoreError (its caller sends no
    2xx); `ensure_running()` starts a new one.
    """

    def __init__(self, path: Path, *, synchronous: str, busy_timeout_ms: int) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._proc: asyncio.subprocess.Process | None = None
        self._transport: asyncio.Transport | None = None
        self._sock: socket.socket | None = None  # the transport's socket, for poll()
        self._answers: _Answers | None = None
        self._waiting: deque[tuple[list[Op], int | None]] = deque()  # messages sent, answers owed, in order
        self._ready: asyncio.Future[Any] | None = None
        self._drained: asyncio.Event = asyncio.Event()
        self._drained.set()
        self._restarting: asyncio.Lock | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def busy(self) -> bool:
        """Answers are owed: the child has work."""
        return bool(self._waiting)

    @property
    def running(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        parent, child = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "console.store.writer_child",
                str(child.fileno()),
                str(self.path),
                self._synchronous,
                str(self._busy_timeout_ms),
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                # Its own errors (a traceback if it crashed) go where the parent's go.
                stderr=None,
            )
        except OSError as exc:
            parent.close()
            raise StoreError(f"{self.path}: cannot start the history writer process ({exc})") from exc
        finally:
            child.close()
        self._ready = loop.create_future()
        transport, self._answers = await loop.create_connection(lambda: _Answers(self), sock=parent)
        self._transport = transport  # a socket's transport is a stream
        self._sock = parent
        try:  # the child says it has opened the database before anything is sent
            ready = await asyncio.wait_for(asyncio.shield(self._ready), _START_TIMEOUT_S)
        except (TimeoutError, StoreError) as exc:
            await self.close()
            raise StoreError(f"{self.path}: the history writer process did not start ({exc})") from exc
        if ready is not True:
            await self.close()
            raise StoreError(f"{self.path}: the history writer process could not open the database: {ready}")

    def send(self, ops: list[Op], session_id: int | None) -> None:
        """Write one message with these ops; each op's future is settled by the answer."""
        transport = self._transport
        assert transport is not None, "send() before start()"
        data = pickle.dumps(([to_wire(op.payload) for op in ops], session_id), pickle.HIGHEST_PROTOCOL)
        self._waiting.append((ops, session_id))
        self._drained.clear()
        transport.write(WIRE_LENGTH.pack(len(data)) + data)
        self.poll()

    def poll(self) -> None:
        """Take the answers that have arrived, without waiting for the loop's next turn.

        Under load the loop's turns are long (dozens of requests each): an answer read
        here, as the next request is sent, lets its handlers answer one turn sooner.
        (The transport reads the same socket when the selector says so; whoever reads
        first gets the bytes, both in the loop's thread.)"""
        sock, answers = self._sock, self._answers
        if sock is None or answers is None or self._transport is None:
            return
        try:
            data = sock.recv(1 << 18)
        except OSError:  # BlockingIOError: nothing yet; anything else: the transport will see it
            return
        if data:
            answers.data_received(data)

    def answered(self, value: Any) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(value)
            return
        ops, session_id = self._waiting.popleft()
        ok, results = value
        if ok:
            for op, result in zip(ops, results_from_wire(results), strict=True):
                settle(op, result)
        elif len(ops) > 1:
            # One bad op must not lose the others: each goes again on its own.
            log.warning("history batch of %d failed (%s); retrying one by one", len(ops), results)
            for op in ops:
                self.send([op], session_id)
        else:
            settle(ops[0], exc=results)
        if not self._waiting:
            self._drained.set()

    def lost(self, exc: BaseException | None) -> None:
        self._transport = None
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(StoreError(f"its pipe closed ({exc or 'end of file'})"))
        code = self._proc.returncode if self._proc is not None else None
        if self._waiting:
            log.error("%s: the history writer process stopped (%s)", self.path, _exit_text(code))
        gone = StoreError(f"{self.path}: the history writer process stopped ({_exit_text(code)})")
        while self._waiting:
            ops, _ = self._waiting.popleft()
            for op in ops:
                settle(op, exc=gone)
        self._drained.set()

    async def ensure_running(self) -> None:
        """Start a new process if the last one died."""
        if self._restarting is None:
            self._restarting = asyncio.Lock()
        async with self._restarting:
            if self.running:
                return
            code = self._proc.returncode if self._proc is not None else None
            log.warning("%s: restarting the history writer process (%s)", self.path, _exit_text(code))
            await self.close()
            await self.start()

    async def drain(self) -> None:
        """Wait for the answers to everything sent."""
        await self._drained.wait()

    async def close(self) -> None:
        """Close the pipe: the child finishes what it was sent and exits. Safe to call twice."""
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        self.lost(StoreError("the history was closed"))
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class _Answers(asyncio.Protocol):
    """The parent's end of the socket: frames in, each handed to the WriterProcess as it completes."""

    def __init__(self, owner: WriterProcess) -> None:
        self._owner = owner
        self._buf = bytearray()
        self._reading = False

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if self._reading:
            return  # re-entered (an answer made the owner send, which polls): the loop below takes it
        self._reading = True
        at = 0
        try:
            while len(buf) - at >= WIRE_LENGTH.size:
                (size,) = WIRE_LENGTH.unpack_from(buf, at)
                start = at + WIRE_LENGTH.size
                if len(buf) - start < size:
                    break
                value = pickle.loads(buf[start : start + size])
                at = start + size
                self._owner.answered(value)
        finally:
            del buf[:at]
            self._reading = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.lost(exc)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status yet"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"
