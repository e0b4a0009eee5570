"""The history's writer process (started by `console.store.writer_process.WriterProcess`).

Run as `python -m console.store.writer_child FD PATH SYNCHRONOUS BUSY_TIMEOUT_MS`: it
opens the database, says so, then runs each transaction it is sent, in order, and
answers with its results. It ends when the socket closes and ignores Ctrl-C (the
terminal sends it to the whole process group; the parent decides when writing stops).
Nothing imports this module: running it with -m must not find it imported already.
"""

from __future__ import annotations

import pickle
import signal
import socket
import sqlite3
import sys
from typing import Any

from console.store.errors import StoreError
from console.store.writer import WIRE_LENGTH, write_transaction


def _send(sock: socket.socket, value: Any) -> None:
    data = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    sock.sendall(WIRE_LENGTH.pack(len(data)) + data)


def _receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def serve(fd: int, path: str, synchronous: str, busy_timeout_ms: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
    except sqlite3.Error as exc:
        _send(sock, f"{type(exc).__name__}: {exc}")
        return 1
    _send(sock, True)
    try:
        while True:
            head = _receive_exactly(sock, WIRE_LENGTH.size)
            if head is None:
                return 0  # the parent closed the store (or is gone)
            data = _receive_exactly(sock, WIRE_LENGTH.unpack(head)[0])
            if data is None:
                return 0
            payloads, session_id = pickle.loads(data)
            try:
                answer: tuple[bool, Any] = (True, write_transaction(conn, payloads, session_id))
            except Exception as exc:
                answer = (False, _picklable(exc))
            _send(sock, answer)
    except (BrokenPipeError, ConnectionResetError):
        return 0
    finally:
        conn.close()


def _picklable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return StoreError(f"{type(exc).__name__}: {exc}")
    return exc


if __name__ == "__main__":
    fd_arg, path_arg, sync_arg, busy_arg = sys.argv[1:5]
    sys.exit(serve(int(fd_arg), path_arg, sync_arg, int(busy_arg)))
