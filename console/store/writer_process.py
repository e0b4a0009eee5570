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
from console.store.writer import WIRE_LENGTH as _LENGTH
from console.store.writer import DeliveryOp, EventsOp, Payload

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 20.0


class WriterProcess:
    """The parent's handle on the writer process: `await start()`, `await transaction()`, `await close()`.

    Several transactions may be in flight: each is written to the pipe at once and the
    child runs them in order, so it never waits for the parent's loop to read an answer
    before it can start the next commit. Answers come back in the same order.

    If the process dies, every transaction in flight fails with StoreError (their
    callers get no 2xx) and the next one starts a new process.
    """

    def __init__(self, path: Path, *, synchronous: str, busy_timeout_ms: int) -> None:
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()  # answers owed, in order
        self._answers: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
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
        self._reader, self._writer = await asyncio.open_connection(sock=parent)
        try:  # the child says it has opened the database before anything is sent
            ready = await asyncio.wait_for(self._receive(self._reader), _START_TIMEOUT_S)
        except (TimeoutError, StoreError) as exc:
            await self.close()
            raise StoreError(f"{self.path}: the history writer process did not start ({exc})") from exc
        if ready is not True:
            await self.close()
            raise StoreError(f"{self.path}: the history writer process could not open the database: {ready}")
        self._answers = asyncio.create_task(
            self._read_answers(self._reader), name=f"store-writer-answers:{self.path.name}"
        )

    async def transaction(self, payloads: list[Payload], session_id: int | None) -> list[Any]:
        if self._writer is None or self._writer.is_closing():
            await self._restart()
        writer = self._writer
        assert writer is not None
        data = pickle.dumps((_for_the_wire(payloads), session_id), pickle.HIGHEST_PROTOCOL)
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        writer.write(_LENGTH.pack(len(data)) + data)
        ok, value = await answer
        if ok:
            return value
        raise value

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                value = await self._receive(reader)
                answer = self._waiting.popleft()
                if not answer.done():
                    answer.set_result(value)
        except (StoreError, OSError) as exc:
            self._fail_waiting(exc)

    def _fail_waiting(self, exc: BaseException) -> None:
        if self._writer is not None:
            self._writer.close()
        code = self._proc.returncode if self._proc is not None else None
        if self._waiting:
            log.error("%s: the history writer process stopped (%s): %s", self.path, _exit_text(code), exc)
        gone = StoreError(f"{self.path}: the history writer process stopped ({_exit_text(code)})")
        while self._waiting:
            answer = self._waiting.popleft()
            if not answer.done():
                answer.set_exception(gone)

    @staticmethod
    async def _receive(reader: asyncio.StreamReader) -> Any:
        try:
            head = await reader.readexactly(_LENGTH.size)
            return pickle.loads(await reader.readexactly(_LENGTH.unpack(head)[0]))
        except asyncio.IncompleteReadError as exc:
            raise StoreError("its pipe closed") from exc

    async def _restart(self) -> None:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._writer is not None and not self._writer.is_closing():
                return  # another caller restarted it
            code = self._proc.returncode if self._proc is not None else None
            log.warning("%s: restarting the history writer process (%s)", self.path, _exit_text(code))
            await self.close()
            await self.start()

    async def close(self) -> None:
        """Close the pipe: the child finishes what it was sent and exits. Safe to call twice."""
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        answers, self._answers = self._answers, None
        if answers is not None:
            answers.cancel()
        self._fail_waiting(StoreError("the history was closed"))
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _exit_text(code: int | None) -> str:
    if code is None:
        return "no exit status yet"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit code {code}"


def _for_the_wire(payloads: list[Payload]) -> list[Payload]:
    """Events travel without their field dicts (the child reads what it needs from the JSON)."""
    for p in payloads:
        if isinstance(p, DeliveryOp | EventsOp):
            for row in p.events:
                row.fields = None
    return payloads
