"""`voice-console decide TOOL_CALL_ID (--approve | --edit JSON | --override JSON | --reject REASON)`.

Finds the `serve` running on this machine through its 0600 state file and
posts the decision to its control API.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO

import httpx

from console.control import read_state, state_file


def add_decide_parser(commands: Any) -> argparse.ArgumentParser:
    parser = commands.add_parser("decide", help="decide a pending tool call of the running `serve`")
    parser.add_argument("tool_call_id", nargs="?", help="the id `serve` printed (omit with --list)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--approve", action="store_true", help="pass the call through as it is")
    group.add_argument("--edit", metavar="JSON", help="pass it through with these arguments (a JSON object)")
    group.add_argument("--override", metavar="JSON", help="answer with this result instead of running the tool")
    group.add_argument("--reject", metavar="REASON", help="refuse, with a reason the assistant can say")
    group.add_argument("--list", action="store_true", help="list the pending tool calls")
    return parser


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _body(args: argparse.Namespace) -> dict[str, Any]:
    if args.approve:
        return {"decision": "approve"}
    if args.reject is not None:
        return {"decision": "reject", "reason": args.reject}
    if args.edit is not None:
        try:
            arguments = json.loads(args.edit)
        except ValueError as exc:
            raise SystemExit(f"voice-console decide: --edit needs a JSON object ({exc.msg})") from None
        if not isinstance(arguments, dict):
            raise SystemExit("voice-console decide: --edit needs a JSON object, e.g. '{\"date\": \"2026-12-01\"}'")
        return {"decision": "edit", "arguments": arguments}
    try:
        result: Any = json.loads(args.override)
    except ValueError:
        result = args.override  # plain text is a fine result too
    return {"decision": "override", "result": result}


def run_decide(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    state = read_state()
    if state is None or not _pid_alive(state.pid):
        print(f"voice-console decide: no running `voice-console serve` found on this machine ({state_file()}).", file=err)
        return 1
    headers = {"authorization": f"Bearer {state.token}"}
    try:
        with httpx.Client(base_url=state.url, timeout=5) as client:
            if args.list:
                response = client.get("/control/pending", headers=headers)
                for call in response.json().get("pending", []):
                    print(f"{call['tool_call_id']}  {call['name']}({json.dumps(call['arguments'])})  "
                          f"{call['remaining_s']:.0f}s left", file=out)
                return 0 if response.status_code == 200 else 1
            if not args.tool_call_id:
                print("voice-console decide: give the TOOL_CALL_ID (see `voice-console decide --list`).", file=err)
                return 2
            try:
                body = _body(args)
            except SystemExit as exc:
                print(exc, file=err)
                return 2
            response = client.post("/control/decide", json={"tool_call_id": args.tool_call_id, **body}, headers=headers)
    except httpx.HTTPError as exc:
        print(f"voice-console decide: cannot reach serve at {state.url} ({type(exc).__name__}).", file=err)
        return 1
    if response.status_code == 200:
        print(f"{args.tool_call_id}: {response.json()['decision']}", file=out)
        return 0
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code}"
    print(f"voice-console decide: {message}", file=err)
    return 2 if response.status_code == 400 else 1
