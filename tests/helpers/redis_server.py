"""A real `redis-server` for team-mode tests: its own port, its own dir, stopped after the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None, reason="redis-server is not installed (apt-get install redis-server)"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """`redis-server` on 127.0.0.1:<port>. Without `persistent`, `kill()` loses everything; with it,
    every write is in an append-only file (fsynced) first, as a team's Redis would keep it."""

    def __init__(
        self, workdir: Path, port: int | None = None, *, persistent: bool = False, password: str | None = None
    ) -> None:
        self.persistent = persistent
        self.password = password
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", ""),
                *(("--appendonly", "yes", "--appendfsync", "always") if self.persistent else ("--appendonly", "no")),
                *("--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")),
                *(("--requirepass", self.password) if self.password else ()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return
            except redis.exceptions.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log = (self.dir / "redis.log").read_text() if (self.dir / "redis.log").exists() else ""
                raise RuntimeError(f"redis-server did not start on port {self.port}: {log[-500:]}")
            time.sleep(0.02)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, password=self.password)

    def kill(self) -> None:
        """SIGKILL: what a crashed or rebooted Redis looks like to its clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()

    def everything(self) -> bytes:
        """Every key and every value in it, as bytes: for scanning what reached Redis."""
        client = self.client()
        dump = []
        for key in client.scan_iter(count=1000):
            dump.append(key)
            kind = client.type(key)
            if kind == b"string":
                dump.append(client.get(key) or b"")
            elif kind == b"stream":
                for stream_id, fields in client.xrange(key):
                    dump.append(stream_id)
                    for name, value in fields.items():
                        dump += [name, value]
            elif kind == b"hash":
                for name, value in client.hgetall(key).items():
                    dump += [name, value]
            else:
                dump.append(repr(client.dump(key)).encode())
        return b"\n".join(dump)
