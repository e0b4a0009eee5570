"""The headless receiver behind `voice-console serve`: the receiver and the history without the TUI.

Prints one JSON line per normalized event on stdout (secrets masked) and
human-facing notes on stderr. SIGINT/SIGTERM stop it cleanly with exit 0 once
every in-flight request is answered and every acknowledged event is committed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import queue
import signal
import stat
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from console.config import Settings, url_for_display
from console.core.events import Event, event_json
from console.core.gate import CallDecided, CallHeld, CallSettled, CallStalling, GateEvent
from console.core.policy import Policy
from console.heap import settle_after_start
from console.redact import Redactor
from console.secrets import SecretStore
from console.services.receiver import ReceiverService, listen_failure
from console.services.serve_state import ServeState, remove_state, write_state
from console.services.team_link import TeamLink

# NDJSON waiting for a slow or unread stdout, at most (~40,000 lines).
STDOUT_BACKLOG_BYTES = 16 * 1024 * 1024


class NdjsonPrinter:
    """Writes events as NDJSON; a closed, broken or unread stdout never stops ingestion.

    Lines are gathered once per event-loop turn and handed to a thread that writes them:
    a pipe nobody reads fills up and blocks that thread, never the receiver. What waits
    for it is bounded (STDOUT_BACKLOG_BYTES); past that, lines are dropped and counted,
    and `note` says so once. A stdout that cannot block (a file, /dev/null) is written
    at once instead: handing each turn's lines to the thread cost the receiver ~5 % of
    its throughput under load (bench/ingest.py, whose `serve` writes to /dev/null).
    """

    def __init__(
        self, out: TextIO, note: Callable[[str], None] = lambda _: None, backlog_bytes: int = STDOUT_BACKLOG_BYTES
    ) -> None:
        self._out = out
        self._note = note
        self._backlog_bytes = backlog_bytes
        self.broken = False
        self.dropped = 0
        self._buffer: list[str] = []
        self._scheduled = False
        self._chunks: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._waiting = 0  # bytes handed to the thread and not yet written
        self._lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._direct = never_blocks(out)

    def __call__(self, events: list[Event]) -> None:
        if self.broken:
            return
        for event in events:
            # Masked once by the pipeline (secrets, live-call URLs), as the history keeps them.
            self._buffer.append(event_json(event) + "\n")
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        lines, self._buffer = self._buffer, []
        if not lines or self.broken:
            return
        chunk = "".join(lines)
        if self._direct:
            try:
                self._out.write(chunk)
            except (ValueError, OSError):
                self.broken = True
            return
        with self._lock:
            if self._waiting + len(chunk) > self._backlog_bytes:
                if not self.dropped:
                    self._note(
                        "stdout is not being read: NDJSON lines are dropped until it is "
                        "(every event is in the history; `voice-console history` has them)"
                    )
                self.dropped += len(lines)
                return
            self._waiting += len(chunk)
        if self._writer is None:
            self._writer = threading.Thread(target=self._write, name="ndjson-stdout", daemon=True)
            self._writer.start()
        self._chunks.put(chunk)

    def close(self, timeout_s: float = 2.0) -> None:
        """Let the thread write what waits (at most `timeout_s`: a stdout nobody reads may never take it)."""
        self.flush()
        if self._direct:
            try:
                self._out.flush()
            except (ValueError, OSError):
                pass
        if self._writer is not None:
            self._chunks.put(None)
            self._writer.join(timeout_s)

    def _write(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            try:
                self._out.write(chunk)
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.broken = True
            with self._lock:
                self._waiting -= len(chunk)


def never_blocks(out: TextIO) -> bool:
    """Whether writing to `out` cannot wait on a reader: a regular file or a character device
    that is not a terminal (/dev/null). Pipes, sockets and terminals can (a terminal paused,
    or slower than the events)."""
    try:
        mode = os.fstat(out.fileno()).st_mode
    except (OSError, ValueError, io.UnsupportedOperation):
        return False  # not a file at all (a test's StringIO): the thread, as for a pipe
    return stat.S_ISREG(mode) or (stat.S_ISCHR(mode) and not out.isatty())


def _announce(event: GateEvent, err: TextIO, redactor: Redactor) -> None:
    """Tell the operator which tool calls wait, and how to decide them (secrets masked)."""
    match event:
        case CallHeld(call):
            # Redact before cutting, so a secret straddling the cut cannot leave a prefix behind.
            arguments = redactor.text(json.dumps(call.arguments, ensure_ascii=False))[:200]
            line = (
                f"tool call pending: {call.tool_call_id} {call.name}({arguments}) · "
                f"{call.remaining_s():.0f}s to decide: voice-console decide {call.tool_call_id} "
                f"--approve | --edit JSON | --override JSON | --reject REASON"
            )
        case CallStalling(call):
            line = f"the platform reports the call stalling while {call.tool_call_id} waits"
        case CallDecided(call, decision):
            who = decision.operator or "an operator"
            line = f"tool call {call.tool_call_id} {call.name}: {decision.decision} by {who}"
        case CallSettled(outcome):
            line = f"tool call {outcome.tool_call_id}: {outcome.decision} by {outcome.by}"
    try:
        print(f"voice-console serve: {redactor.text(line)}", file=err)
        err.flush()
    except (ValueError, OSError):
        pass


async def run_serve(
    settings: Settings,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    secret_store: SecretStore | None = None,
    stop: asyncio.Event | None = None,
    policy: Policy | None = None,
) -> int:
    # The history writer thread needs the GIL briefly per transaction; with the
    # default 5 ms switch interval a busy event loop makes it wait that long each time.
    sys.setswitchinterval(0.0005)
    secret_store = secret_store or SecretStore()
    secrets = await secret_store.aget_all(make_missing=True)

    def note_err(line: str) -> None:
        print(f"voice-console serve: {line}", file=err)
        err.flush()

    printer = NdjsonPrinter(out, note_err)
    try:
        service = await ReceiverService.start(
            settings, secrets, on_events=printer, policy=policy, secret_store=secret_store
        )
    except OSError as exc:
        print(f"voice-console serve: {listen_failure(settings.receiver.host, settings.receiver.port, exc)}", file=err)
        return 1
    state = ServeState(
        url=service.server.url,
        token=service.control_token,
        pid=os.getpid(),
        started=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    state_path = write_state(state)
    if service.gate is not None:
        service.gate.subscribe(lambda event: _announce(event, err, service.redactor))
    team_settings = settings.team.with_password(secrets["team_redis_password"].value)
    team = TeamLink.start(settings.model_copy(update={"team": team_settings}), service, note_err)

    settle_after_start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass

    print(f"voice-console serve: listening on {service.server.url} · history in {settings.db_path}", file=err)
    if team is not None:
        print(
            f"voice-console serve: team {settings.team.name!r} on {url_for_display(settings.team.redis_url or '')} "
            f"as {team.instance}",
            file=err,
        )
    if settings.forward.to:
        print(f"voice-console serve: tool calls are forwarded to {settings.forward.to}", file=err)
    for warning in service.warnings:
        print(f"voice-console serve: warning: {warning}", file=err)
    err.flush()
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        print("voice-console serve: shutting down", file=err)
        remove_state(state, state_path)
        await service.close()
        printer.close()
        if team is not None:
            await team.stop(note_err)
        stats = service.pipeline.stats
        print(
            f"voice-console serve: stopped · {stats.accepted} accepted "
            f"({stats.duplicates} duplicates), {stats.rejected} rejected",
            file=err,
        )
        if printer.dropped:
            print(f"voice-console serve: {printer.dropped} NDJSON lines were dropped (stdout was not read)", file=err)
    return 0
