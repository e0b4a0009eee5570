"""The headless receiver behind `voice-console serve`: the receiver and the history without the TUI.

Prints one JSON line per normalized event on stdout (secrets masked) and
human-facing notes on stderr. SIGINT/SIGTERM stop it cleanly with exit 0 once
every in-flight request is answered and every acknowledged event is committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from datetime import UTC, datetime
from typing import TextIO

from console.config import Settings
from console.core.events import Event, event_json
from console.core.gate import CallDecided, CallHeld, CallSettled, CallStalling, GateEvent
from console.core.policy import Policy
from console.redact import Redactor
from console.secrets import SecretStore
from console.services.receiver import ReceiverService, listen_failure
from console.services.serve_state import ServeState, remove_state, write_state


class NdjsonPrinter:
    """Writes events as NDJSON; a closed or broken stdout never stops ingestion.

    Lines are gathered and written once per event-loop turn, so a burst of
    deliveries costs one write, not one per event.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self.broken = False
        self._buffer: list[str] = []
        self._scheduled = False

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
        lines, self._buffer = "".join(self._buffer), []
        if not lines or self.broken:
            return
        try:
            self._out.write(lines)
            self._out.flush()
        except (BrokenPipeError, ValueError, OSError):
            self.broken = True


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
    printer = NdjsonPrinter(out)
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
        printer.flush()
        stats = service.pipeline.stats
        print(
            f"voice-console serve: stopped · {stats.accepted} accepted "
            f"({stats.duplicates} duplicates), {stats.rejected} rejected",
            file=err,
        )
    return 0
