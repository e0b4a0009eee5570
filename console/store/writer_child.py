"""The history's writer process (started by `console.store.writer_process.WriterProcess`).

Run as `python -m console.store.writer_child FD PATH SYNCHRONOUS BUSY_TIMEOUT_MS`: it
opens the database, says so, then runs what it is sent, in order, and answers each
message with its results. Messages that arrived while a transaction ran are committed
together in the next one: group commit where it pays, for the parent sends without
waiting. It ends when the socket closes and ignores Ctrl-C (the terminal sends it to
the whole process group; the parent decides when writing stops). Nothing imports
this module: running it with -m must not find it imported already.
"""

from __future__ import annotations

import pickle
import signal
import socket
import sqlite3
import sys
from typing import Any

from console.store.errors import StoreError
from console.store.writer import WIRE_LENGTH, Payload, from_wire, results_to_wire, write_transaction


class _Wire:
    """Frames on the socket: a 4-byte length, then a pickle."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def _frames(self) -> list[Any]:
        frames = []
        buf = self._buf
        at = 0
        while len(buf) - at >= WIRE_LENGTH.size:
            (size,) = WIRE_LENGTH.unpack_from(buf, at)
            if len(buf) - at - WIRE_LENGTH.size < size:
                break
            start = at + WIRE_LENGTH.size
            frames.append(pickle.loads(buf[start : start + size]))
            at = start + size
        del buf[:at]
        return frames

    def receive(self) -> list[Any] | None:
        """Every complete message that has arrived, waiting for at least one (None: closed)."""
        sock = self._sock
        while True:
            sock.setblocking(False)
            try:
                while True:  # take all that is already there: it joins this transaction
                    chunk = sock.recv(1 << 20)
                    if not chunk:
                        return self._frames() or None
                    self._buf += chunk
            except BlockingIOError:
                pass
            finally:
                sock.setblocking(True)
            frames = self._frames()
            if frames:
                return frames
            chunk = sock.recv(1 << 20)
            if not chunk:
                return None
            self._buf += chunk

    def send(self, values: list[Any]) -> None:
        out = bytearray()
        for value in values:
            data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
            out += WIRE_LENGTH.pack(len(data))
            out += data
        self._sock.sendall(out)


def serve(fd: int, path: str, synchronous: str, busy_timeout_ms: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wire = _Wire(socket.socket(fileno=fd))
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        # Checkpoints stay inside the COMMIT that crosses the WAL's threshold (SQLite's default).
        # Tried: PASSIVE checkpoints on a thread of their own. Under continuous writes they never
        # catch up with the last frame, so the WAL is never restarted and grows without bound
        # (135 MB in 150 s at 580 events/s); the commits they spared were worth a few per cent.
    except sqlite3.Error as exc:
        wire.send([f"{type(exc).__name__}: {exc}"])
        return 1
    wire.send([True])
    try:
        while (messages := wire.receive()) is not None:
            wire.send(_run(conn, messages))
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        conn.close()
    return 0


def _run(conn: sqlite3.Connection, received: list[tuple[list[tuple[Any, ...]], int | None]]) -> list[tuple[bool, Any]]:
    """Group commit: the messages that queued up while the last transaction ran become one
    transaction (each one's answer is its share of the results). If it fails, each message
    runs on its own, so one bad message does not fail the others."""
    messages: list[tuple[list[Payload], int | None]] = [([from_wire(t) for t in batch], sid) for batch, sid in received]
    if len(messages) > 1 and len({session_id for _, session_id in messages}) == 1:
        payloads = [p for batch, _ in messages for p in batch]
        try:
            results = write_transaction(conn, payloads, messages[0][1])
        except Exception:
            pass
        else:
            answers: list[tuple[bool, Any]] = []
            at = 0
            for batch, _ in messages:
                answers.append((True, results_to_wire(results[at : at + len(batch)])))
                at += len(batch)
            return answers
    answers = []
    for batch, session_id in messages:
        try:
            answers.append((True, results_to_wire(write_transaction(conn, batch, session_id))))
        except Exception as exc:
            answers.append((False, _picklable(exc)))
    return answers


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return StoreError(f"{type(exc).__name__}: {exc}")
    return exc


if __name__ == "__main__":
    fd_arg, path_arg, sync_arg, busy_arg = sys.argv[1:5]
    sys.exit(serve(int(fd_arg), path_arg, sync_arg, int(busy_arg)))
