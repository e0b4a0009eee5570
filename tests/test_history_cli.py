"""`voice-console history ...` against a real, populated history file."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from console.cli import main
from console.commands.history import register as add_history_parser
from console.commands.history import run_history
from console.core.events import (
    BargeIn,
    CallEnded,
    CallStatus,
    Event,
    Raw,
    ToolRequested,
    TranscriptFinal,
    TranscriptPartial,
    event_from_dict,
    event_to_dict,
)
from console.core.tools import ToolCall, ToolOutcome
from console.store.db import DeliveryRecord, Store
from console.store.export import CSV_COLUMNS
from console.store.queries import CALL_LIST_FIELDS

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def call_events(call_id: str, start: float, provider: str = "vapi") -> list[Event]:
    p: Any = provider
    return [
        CallStatus(at=at(start), provider=p, call_id=call_id, status="ringing"),
        CallStatus(at=at(start + 1), provider=p, call_id=call_id, status="in-progress"),
        TranscriptFinal(
            at=at(start + 2), provider=p, call_id=call_id, role="assistant", text="Hello, how can I help you today?"
        ),
        TranscriptPartial(at=at(start + 3), provider=p, call_id=call_id, role="user", text="I want to"),
        TranscriptFinal(
            at=at(start + 3.5),
            provider=p,
            call_id=call_id,
            role="user",
            text=f"I want to book a table, {call_id}, for 7 o'clock.",
        ),
        BargeIn(at=at(start + 4), provider=p, call_id=call_id, cut_text="Let me check"),
        ToolRequested(
            at=at(start + 5),
            provider=p,
            call_id=call_id,
            tool_call_id=f"{call_id}-t1",
            name="book_table",
            arguments={"time": "19:00", "party": 2},
        ),
        Raw(at=at(start + 6), provider=p, call_id=call_id, type="speech-update", data={"x": 'ü,"quoted"'}),
        CallEnded(
            at=at(start + 60),
            provider=p,
            call_id=call_id,
            reason="customer-ended-call",
            summary="Booked a table.",
            cost=0.12,
            duration_s=59.0,
        ),
    ]


@pytest.fixture
async def history_db(tmp_path: Path) -> tuple[Path, list[Event]]:
    path = tmp_path / "history.db"
    everything: list[Event] = []
    async with await Store.open(path) as store:
        for n, (call_id, provider) in enumerate([("call-a", "vapi"), ("call-b", "retell"), ("call-c", "vapi")]):
            events = call_events(call_id, n * 100, provider)
            await store.record_delivery(
                DeliveryRecord(
                    provider,
                    provider,
                    "POST",
                    f"/webhook/{provider}",
                    "end-of-call-report",
                    call_id,
                    at(n * 100),
                    f"body {call_id}".encode(),
                    [],
                    "secret",
                ),
                events,
            )
            everything.extend(events)
            tool_call_id = f"{call_id}-t1"
            await store.record_tool_requests(
                provider, call_id, [ToolCall(tool_call_id, "book_table", {})], at(n * 100 + 5)
            )
            outcome = ToolOutcome(
                tool_call_id, "book_table", "approved", "operator", result='{"ok":true}', latency_ms=812.0
            )
            await store.record_tool_outcomes(provider, call_id, [outcome], at(n * 100 + 7))
            everything.append(
                event_from_dict(
                    {
                        "kind": "tool.decided",
                        "at": at(n * 100 + 7).isoformat(),
                        "provider": provider,
                        "call_id": call_id,
                        "tool_call_id": f"{call_id}-t1",
                        "name": "book_table",
                        "decision": "approved",
                        "by": "operator",
                        "result": '{"ok":true}',
                        "latency_ms": 812.0,
                    }
                )
            )
    return path, everything


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="voice-console")
    add_history_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["history", *argv])


async def run(db: Path, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_history(parse(*argv), db, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# --- calls ---------------------------------------------------------------------------


async def test_calls_table(history_db) -> None:  # type: ignore[no-untyped-def]
    code, out, err = await run(history_db[0], "calls")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "CALL",
        "ID",
        "PROVIDER",
        "STATUS",
        "STARTED",
        "(UTC)",
        "ENDED",
        "(UTC)",
        "REASON",
        "BARGE-INS",
        "TOOLS",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["call-c", "call-b", "call-a"]
    assert lines[1].split() == [
        "call-c",
        "vapi",
        "ended",
        "2024-05-01",
        "12:03:21",
        "2024-05-01",
        "12:04:20",
        "customer-ended-call",
        "1",
        "1",
    ]
    # Aligned: every column starts at the same offset on every line.
    assert len({line.index("PROVIDER") if i == 0 else line.index(line.split()[1]) for i, line in enumerate(lines)}) == 1


async def test_calls_json_and_limit(history_db) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = await run(history_db[0], "calls", "--json", "--limit", "2")
    assert code == 0
    calls = json.loads(out)
    assert [c["call_id"] for c in calls] == ["call-c", "call-b"]
    assert all(tuple(c) == CALL_LIST_FIELDS for c in calls)
    assert calls[1] == {
        "call_id": "call-b",
        "provider": "retell",
        "status": "ended",
        "started_at": "2024-05-01T12:01:41Z",
        "ended_at": "2024-05-01T12:02:40Z",
        "ended_reason": "customer-ended-call",
        "barge_ins": 1,
        "tool_calls": 1,
    }


async def test_calls_on_an_empty_history(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    async with await Store.open(path):
        pass
    assert await run(path, "calls") == (0, "No calls recorded yet.\n", "")
    assert await run(path, "calls", "--json") == (0, "[]\n", "")


# --- show ----------------------------------------------------------------------------


async def test_show_table(history_db) -> None:  # type: ignore[no-untyped-def]
    code, out, err = await run(history_db[0], "show", "call-b")
    assert (code, err) == (0, "")
    assert "call        call-b (retell)" in out
    assert "summary     Booked a table." in out
    assert "user: I want to book a table, call-b, for 7 o'clock." in out
    assert "agent cut off: 'Let me check'" in out
    assert 'book_table {"time":"19:00","party":2} [call-b-t1]' in out
    assert "book_table approved by operator in 812 ms" in out
    assert "(1 partial transcript events not shown; use --json)" in out
    assert "I want to\n" not in out
    tool_header = next(line for line in out.splitlines() if line.startswith("TOOL CALL"))
    assert tool_header.split()[:4] == ["TOOL", "CALL", "NAME", "DECISION"]


async def test_show_json(history_db) -> None:  # type: ignore[no-untyped-def]
    path, everything = history_db
    code, out, _ = await run(path, "show", "call-a", "--json")
    assert code == 0
    detail = json.loads(out)
    assert set(detail) == {"call", "events", "tool_calls"}
    assert detail["call"]["summary"] == "Booked a table." and detail["call"]["cost"] == 0.12
    expected = sorted((e for e in everything if e.call_id == "call-a"), key=lambda e: e.at)
    assert [event_from_dict(e) for e in detail["events"]] == expected
    assert detail["tool_calls"] == [
        {
            "tool_call_id": "call-a-t1",
            "name": "book_table",
            "arguments": {"time": "19:00", "party": 2},
            "decision": "approved",
            "by": "operator",
            "result": '{"ok":true}',
            "error": None,
            "latency_ms": 812.0,
        }
    ]


async def test_show_unknown_call_exits_1(history_db) -> None:  # type: ignore[no-untyped-def]
    path = history_db[0]
    code, out, err = await run(path, "show", "nope")
    assert (code, out) == (1, "")
    assert f"no call with id nope in {path}" in err and err.count("\n") == 1


# --- search --------------------------------------------------------------------------


async def test_search_table_and_json(history_db) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = await run(history_db[0], "search", "book table")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["AT", "(UTC)", "CALL", "ID", "ROLE", "TEXT"]
    assert [line.split()[2] for line in lines[1:]] == ["call-c", "call-b", "call-a"]

    code, out, _ = await run(history_db[0], "search", "o'clock", "--json", "--limit", "1")
    assert code == 0
    assert json.loads(out) == [
        {
            "call_id": "call-c",
            "at": "2024-05-01T12:03:23.500000Z",
            "role": "user",
            "text": "I want to book a table, call-c, for 7 o'clock.",
        }
    ]

    assert await run(history_db[0], "search", "zebra") == (0, "No transcript lines match 'zebra'.\n", "")
    assert await run(history_db[0], "search", "zebra", "--json") == (0, "[]\n", "")


# --- export --------------------------------------------------------------------------


async def test_export_jsonl_to_a_file_round_trips(history_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, everything = history_db
    target = tmp_path / "out" / "events.jsonl"
    target.parent.mkdir()
    code, out, err = await run(path, "export", "--out", str(target))
    assert (code, out) == (0, "")
    assert err == f"exported {len(everything)} events as jsonl to {target}\n"
    lines = target.read_text(encoding="utf-8").splitlines()
    assert [event_from_dict(json.loads(line)) for line in lines] == everything  # recorded order
    assert json.loads(lines[0]) == event_to_dict(everything[0])


async def test_export_csv_to_stdout_round_trips(history_db) -> None:  # type: ignore[no-untyped-def]
    path, everything = history_db
    code, out, err = await run(path, "export", "--format", "csv")
    assert (code, err) == (0, "")  # stdout carries the data alone
    rows = list(csv.DictReader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_COLUMNS

    def rebuild(row: dict[str, str]) -> Event:
        data: dict[str, Any] = {k: row[k] for k in ("kind", "at", "provider")}
        data["call_id"] = row["call_id"] or None
        for k in ("role", "text"):
            if row[k]:
                data[k] = row[k]
        data.update(json.loads(row["detail"]) if row["detail"] else {})
        return event_from_dict(data)

    assert [rebuild(r) for r in rows] == everything


async def test_export_one_call_in_time_order(history_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, everything = history_db
    target = tmp_path / "b.jsonl"
    code, out, err = await run(path, "export", "--call", "call-b", "--out", str(target), "--json")
    assert (code, out) == (0, "")
    events = [event_from_dict(json.loads(line)) for line in target.read_text().splitlines()]
    assert events == sorted((e for e in everything if e.call_id == "call-b"), key=lambda e: e.at)
    assert json.loads(err) == {"rows": len(events), "format": "jsonl", "path": str(target)}


async def test_export_pages_through_more_rows_than_one_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import console.store.export as export_module

    monkeypatch.setattr(export_module, "_PAGE", 7)
    path = tmp_path / "h.db"
    events = [CallStatus(at=at(i), provider="vapi", call_id=f"c{i % 3}", status="ringing") for i in range(50)]
    async with await Store.open(path) as store:
        await store.record_events(events)
    code, out, _ = await run(path, "export")
    assert code == 0 and [event_from_dict(json.loads(line)) for line in out.splitlines()] == events
    code, out, _ = await run(path, "export", "--call", "c1")
    assert [event_from_dict(json.loads(line)) for line in out.splitlines()] == [e for e in events if e.call_id == "c1"]


# --- failures ------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [("calls",), ("show", "x"), ("search", "x"), ("export",)])
async def test_missing_database_exits_1_and_creates_nothing(tmp_path: Path, argv: tuple[str, ...]) -> None:
    path = tmp_path / "nowhere" / "history.db"
    code, out, err = await run(path, *argv)
    assert (code, out) == (1, "")
    assert f"no history database at {path}" in err
    assert not path.parent.exists()


async def test_a_file_that_is_not_a_database_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database " * 100)
    code, _, err = await run(path, "calls")
    assert code == 1 and "cannot open the history database" in err


async def test_export_to_an_unwritable_path_exits_1(history_db, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, _, err = await run(history_db[0], "export", "--out", str(tmp_path / "no" / "such" / "dir" / "x.jsonl"))
    assert code == 1 and "cannot write" in err


def test_parser_accepts_db_after_the_subcommand_and_rejects_bad_limits() -> None:
    args = parse("calls", "--db", "x.db", "--limit", "5", "--json")
    assert (args.history_command, args.db, args.limit, args.json) == ("calls", "x.db", 5, True)
    args = parse("export", "--format", "csv", "--call", "c1", "--out", "f.csv")
    assert (args.format, args.call_id, str(args.out)) == ("csv", "c1", "f.csv")
    with pytest.raises(SystemExit):
        parse("calls", "--limit", "0")
    with pytest.raises(SystemExit):
        parse()


# --- short ids: any unique prefix, as the console shows them ------------------------------------

SHORT_ID_CALLS = ("call_3f9a1c2e55aa41d0", "call_3f9a77001122aa9b", "7b2c9d00-e1f2-4c3d")


@pytest.fixture
def short_id_db(tmp_path: Path) -> Path:
    path = tmp_path / "short.db"

    async def write() -> None:
        async with await Store.open(path) as store:
            for n, call_id in enumerate(SHORT_ID_CALLS):
                await store.record_delivery(
                    DeliveryRecord(
                        "vapi",
                        "vapi",
                        "POST",
                        "/webhook/vapi",
                        "end-of-call-report",
                        call_id,
                        at(n),
                        f"body {call_id}".encode(),
                        [],
                        "secret",
                    ),
                    call_events(call_id, n * 100),
                )

    asyncio.run(write())
    return path


@pytest.mark.parametrize("full", SHORT_ID_CALLS)
def test_show_and_export_accept_the_short_id_the_console_shows(short_id_db, capsys, full):
    from console.tui.widgets.panes import short_id

    shown = short_id(full)
    assert len(shown) == 8 and shown != full
    assert main(["history", "show", shown, "--json", "--db", str(short_id_db)]) == 0
    assert json.loads(capsys.readouterr().out)["call"]["call_id"] == full
    assert main(["history", "export", "--call", shown, "--db", str(short_id_db)]) == 0
    assert {json.loads(line)["call_id"] for line in capsys.readouterr().out.splitlines()} == {full}


@pytest.mark.parametrize("command", [["history", "show"], ["replay"]])
def test_an_ambiguous_prefix_exits_2_and_lists_the_candidates(short_id_db, capsys, command):
    extra = ["--to", "http://127.0.0.1:9"] if command == ["replay"] else []
    assert main([*command, "3f9a", *extra, "--db", str(short_id_db)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "'3f9a' matches 2 calls" in captured.err
    assert [line.strip() for line in captured.err.splitlines()[1:]] == list(SHORT_ID_CALLS[:2])


@pytest.mark.parametrize("command", [["history", "show"], ["replay"], ["history", "export", "--call"]])
def test_an_unknown_call_exits_1_in_every_command(short_id_db, capsys, command):
    extra = ["--to", "http://127.0.0.1:9"] if command == ["replay"] else []
    assert main([*command, "3f9b", *extra, "--db", str(short_id_db)]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and f"no call with id 3f9b in {short_id_db}" in captured.err


def test_replay_takes_a_short_id(short_id_db, capsys, unused_tcp_port):
    code = main(["replay", "3f9a1c2e", "--to", f"http://127.0.0.1:{unused_tcp_port}", "--db", str(short_id_db)])
    captured = capsys.readouterr()
    assert code == 1 and "cannot reach" in captured.err  # found, and tried: nothing listens there
    assert f"replaying 1 deliveries of call {SHORT_ID_CALLS[0]}" in captured.out
