"""`voice-console history calls | show CALL_ID | search TEXT | export`.

Plain aligned tables for people, the DESIGN.md JSON shapes with --json for
scripts. Reading never creates a database: a missing file is an error.

A CALL_ID is a full id or any unique prefix of one, such as the 8-character
ids the console shows. Exit codes: 0 ok; 1 when something is not there at run
time (no database, no such call); 2 for bad usage, including a prefix that
matches several calls (they are listed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from console.commands import add_config_flags, load_settings_or_report

if TYPE_CHECKING:
    from console.store.db import Store
    from console.store.export import ExportFormat

COMMANDS = ("calls", "show", "search", "export")


def register(subparsers: Any) -> None:
    """Register `history` and its sub-commands on the top-level subparsers."""
    history = subparsers.add_parser(
        "history",
        help="read, search and export the call history",
        description="Read, search and export the call history (the SQLite file from --db).",
    )
    commands = history.add_subparsers(dest="history_command", metavar="COMMAND", required=True)
    # Also accepted after the sub-command (`history calls --db F`); SUPPRESS keeps
    # a value given before it from being overwritten with None.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="F", default=argparse.SUPPRESS, help="settings file (TOML)")
    common.add_argument("--db", metavar="F", default=argparse.SUPPRESS, help="history database (SQLite)")

    calls = commands.add_parser("calls", parents=[common], help="list calls, most recent first")
    calls.add_argument("--limit", type=_positive_int, default=50, metavar="N", help="how many calls (default 50)")
    calls.add_argument("--json", action="store_true", help="a JSON array instead of a table")

    show = commands.add_parser(
        "show",
        parents=[common],
        help="one call: its details, event timeline and tool calls",
        description="One call: its details, event timeline and tool calls. CALL_ID is a full id or any unique "
        "prefix of one (the console's short ids work). Exit 1 when no call matches, 2 when several "
        "do (they are listed).",
    )
    show.add_argument("call_id", metavar="CALL_ID")
    show.add_argument("--json", action="store_true", help="the {call, events, tool_calls} JSON object")
    show.add_argument(
        "--include-replays",
        action="store_true",
        help="also the events that `voice-console replay` of this call left here (marked ↻)",
    )

    search = commands.add_parser("search", parents=[common], help="search final transcripts (every word must match)")
    search.add_argument("text", metavar="TEXT")
    search.add_argument("--limit", type=_positive_int, default=50, metavar="N", help="how many lines (default 50)")
    search.add_argument("--json", action="store_true", help="a JSON array instead of a table")

    exp = commands.add_parser("export", parents=[common], help="write every normalized event as JSON lines or CSV")
    exp.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="jsonl (default) or csv")
    exp.add_argument("--out", type=Path, metavar="F", help="write to this file (default: stdout)")
    exp.add_argument(
        "--call", dest="call_id", metavar="CALL_ID", help="only this call's events (a full id or a unique prefix)"
    )
    exp.add_argument("--json", action="store_true", help="with --out: the summary on stderr as JSON")
    exp.add_argument(
        "--include-replays",
        action="store_true",
        help="also the events of replays recorded here (call ids marked ↻); left out by default",
    )
    add_config_flags(history, suppress=True)


def run(args: argparse.Namespace) -> int:
    settings = load_settings_or_report(args)
    if settings is None:
        return 2
    import asyncio

    return asyncio.run(run_history(args, settings.db_path))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


async def run_history(
    args: argparse.Namespace, db_path: Path, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    # The streams are looked up per call, not bound when the module is imported.
    out = out or sys.stdout
    err = err or sys.stderr
    command = getattr(args, "history_command", None)
    if command not in COMMANDS:
        print(f"voice-console history: choose one of {', '.join(COMMANDS)}", file=err)
        return 2
    db_path = Path(db_path).expanduser()
    if not db_path.is_file():
        print(
            f"voice-console history: no history database at {db_path} "
            "(nothing recorded yet, or pass --db / set VOICE_CONSOLE_DB)",
            file=err,
        )
        return 1
    from console.store.db import Store, StoreError

    try:
        store = await Store.open(db_path)
    except (StoreError, OSError) as exc:
        print(f"voice-console history: {exc}", file=err)
        return 1
    try:
        if command == "calls":
            return await _calls(store, args, out)
        if command == "show":
            return await _show(store, args, db_path, out, err)
        if command == "search":
            return await _search(store, args, out)
        return await _export(store, args, db_path, out, err)
    except BrokenPipeError:
        # `history export | head`: the reader left; that is not a failure.
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        await store.close()


async def _calls(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    from console.store import queries

    calls = await queries.list_calls(store, limit=getattr(args, "limit", None) or 50)
    if getattr(args, "json", False):
        _print_json(calls, out)
        return 0
    if not calls:
        print("No calls recorded yet.", file=out)
        return 0
    rows = [
        [
            c["call_id"],
            c["provider"],
            c["status"] or "",
            _clock(c["started_at"], date=True),
            _clock(c["ended_at"], date=True),
            c["ended_reason"] or "",
            str(c["barge_ins"]),
            str(c["tool_calls"]),
        ]
        for c in calls
    ]
    _table(
        ["CALL ID", "PROVIDER", "STATUS", "STARTED (UTC)", "ENDED (UTC)", "REASON", "BARGE-INS", "TOOLS"],
        rows,
        out,
        right={6, 7},
    )
    return 0


async def resolve_call(store: Store, text: str, db_path: Path, err: TextIO, command: str) -> tuple[str | None, int]:
    """The call id `text` names, or None and the exit code after saying why on `err`:
    1 when no call matches, 2 when several do (listed, so the next try can be exact)."""
    from console.store import queries

    call_id, candidates = await queries.find_call(store, text)
    if call_id is not None:
        return call_id, 0
    if not candidates:
        print(
            f"voice-console {command}: no call with id {text} in {db_path} (see `voice-console history calls`)",
            file=err,
        )
        return None, 1
    shown = candidates[:10]
    more = " (and more)" if len(candidates) > len(shown) else ""
    print(f"voice-console {command}: {text!r} matches {len(shown)} calls{more}; give more of the id:", file=err)
    for candidate in shown:
        print(f"  {candidate}", file=err)
    return None, 2


async def _show(store: Store, args: argparse.Namespace, db_path: Path, out: TextIO, err: TextIO) -> int:
    from console.store import queries

    call_id, code = await resolve_call(store, args.call_id, db_path, err, "history show")
    if call_id is None:
        return code
    include_replays = getattr(args, "include_replays", False)
    detail = await queries.get_call(store, call_id, include_replays=include_replays)
    if detail is None:  # known from its deliveries only: nothing was normalized for it
        print(
            f"voice-console history show: call {call_id} has deliveries but no recorded events in {db_path}", file=err
        )
        return 1
    if getattr(args, "json", False):
        _print_json(detail, out)
        return 0
    call = detail["call"]
    facts = [
        ("call", f"{call['call_id']} ({call['provider']})"),
        ("status", call["status"] or "-"),
        ("started", _clock(call["started_at"], date=True) or "-"),
        ("ended", _clock(call["ended_at"], date=True) or "-"),
        ("reason", call["ended_reason"] or "-"),
        ("duration", "-" if call["duration_s"] is None else f"{call['duration_s']:.1f} s"),
        ("cost", "-" if call["cost"] is None else f"{call['cost']:.4f}"),
        ("barge-ins", str(call["barge_ins"])),
        ("tool calls", str(call["tool_calls"])),
    ]
    if call["summary"]:
        facts.append(("summary", call["summary"]))
    width = max(len(name) for name, _ in facts)
    for name, value in facts:
        print(f"{name:<{width}}  {value}", file=out)

    # Partial transcripts repeat what the final lines say; the JSON form keeps them.
    shown = [e for e in detail["events"] if e["kind"] != "transcript.partial"]
    hidden = len(detail["events"]) - len(shown)
    print(file=out)
    _table(
        ["TIME (UTC)", "EVENT", "DETAIL"],
        [[_clock(e["at"]), ("↻ " if e.get("replay") else "") + e["kind"], _describe(e)] for e in shown],
        out,
    )
    if hidden:
        print(f"({hidden} partial transcript events not shown; use --json)", file=out)
    if not include_replays and (replayed := await queries.count_replayed_events(store, call_id)):
        print(f"({replayed} events from replays of this call not shown; use --include-replays)", file=out)

    if detail["tool_calls"]:
        print(file=out)
        rows = [
            [
                ("↻ " if t.get("replay") else "") + t["tool_call_id"],
                t["name"],
                t["decision"] or "pending",
                t["by"] or "",
                "" if t["latency_ms"] is None else f"{t['latency_ms']:.0f} ms",
                _compact(t["arguments"]),
                t["error"] if t["error"] is not None else (t["result"] or ""),
            ]
            for t in detail["tool_calls"]
        ]
        _table(["TOOL CALL", "NAME", "DECISION", "BY", "LATENCY", "ARGUMENTS", "RESULT / ERROR"], rows, out, right={4})
    return 0


async def _search(store: Store, args: argparse.Namespace, out: TextIO) -> int:
    from console.store import queries

    hits = await queries.search(store, args.text, limit=getattr(args, "limit", None) or 50)
    if getattr(args, "json", False):
        _print_json(hits, out)
        return 0
    if not hits:
        print(f"No transcript lines match {args.text!r}.", file=out)
        return 0
    _table(
        ["AT (UTC)", "CALL ID", "ROLE", "TEXT"],
        [[_clock(h["at"], date=True), h["call_id"] or "", h["role"], _one_line(h["text"])] for h in hits],
        out,
    )
    return 0


async def _export(store: Store, args: argparse.Namespace, db_path: Path, out: TextIO, err: TextIO) -> int:
    from console.store.export import export

    fmt: ExportFormat = "csv" if getattr(args, "format", None) == "csv" else "jsonl"
    target: Path | None = getattr(args, "out", None)
    call_id = getattr(args, "call_id", None)
    include_replays = getattr(args, "include_replays", False)
    if call_id is not None:
        call_id, code = await resolve_call(store, call_id, db_path, err, "history export")
        if call_id is None:
            return code
    if target is None:
        # stdout carries the data alone, so it can be piped.
        await export(store, out, fmt, call_id=call_id, include_replays=include_replays)
        out.flush()
        return 0
    try:
        # A local file the operator named, written row by row as the history streams out.
        with open(target, "w", encoding="utf-8", newline="") as handle:  # noqa: ASYNC230
            rows = await export(store, handle, fmt, call_id=call_id, include_replays=include_replays)
    except OSError as exc:
        print(f"voice-console history: cannot write {target}: {exc.strerror or exc}", file=err)
        return 1
    if getattr(args, "json", False):
        print(json.dumps({"rows": rows, "format": fmt, "path": str(target)}), file=err)
    else:
        print(f"exported {rows} events as {fmt} to {target}", file=err)
    return 0


# --- formatting ---------------------------------------------------------------


def _print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, ensure_ascii=False, indent=2)
    out.write("\n")


def _clock(iso: str | None, *, date: bool = False) -> str:
    """'2024-05-01T12:00:01.250000Z' -> '12:00:01.250' (or with the date)."""
    if not iso:
        return ""
    day, _, time = iso.rstrip("Z").partition("T")
    whole, _, fraction = time.partition(".")
    if date:
        return f"{day} {whole}"
    return f"{whole}.{(fraction + '000')[:3]}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _compact(value: Any) -> str:
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _describe(event: dict[str, Any]) -> str:
    """One readable line for an event in the `show` timeline."""
    kind = event["kind"]
    if kind == "call.status":
        reason = event.get("ended_reason")
        return event["status"] + (f" ({reason})" if reason else "")
    if kind in ("transcript.final", "transcript.partial"):
        return f"{event['role']}: {_one_line(event['text'])}"
    if kind in ("speech.started", "speech.stopped"):
        return event["role"]
    if kind == "barge_in":
        cut = event.get("cut_text")
        return f"agent cut off: {_one_line(cut)!r}" if cut else "agent cut off"
    if kind == "tool.requested":
        return f"{event['name']} {_compact(event.get('arguments', {}))} [{event['tool_call_id']}]"
    if kind == "tool.decided":
        outcome = event.get("error") or event.get("result") or ""
        latency = event.get("latency_ms")
        parts = [f"{event['name']} {event['decision']} by {event['by']}"]
        if latency is not None:
            parts.append(f"in {latency:.0f} ms")
        if outcome:
            parts.append(f"-> {_one_line(outcome)}")
        return " ".join(parts) + f" [{event['tool_call_id']}]"
    if kind == "call.ended":
        bits = [event.get("reason") or ""]
        if event.get("duration_s") is not None:
            bits.append(f"{event['duration_s']:.1f} s")
        return " ".join(b for b in bits if b)
    if kind == "raw":
        return event.get("type", "")
    return ""


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO, right: Collection[int] = ()) -> None:
    """Aligned columns; the last column is not padded so long text just runs on."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    last = len(headers) - 1

    def line(cells: Sequence[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            if i == last:
                parts.append(cell.rjust(widths[i]) if i in right else cell)
            else:
                parts.append(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    print(line(headers), file=out)
    for row in rows:
        print(line(row), file=out)
