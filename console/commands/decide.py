"""`voice-console decide TOOL_CALL_ID (--approve | --edit JSON | --override JSON | --reject REASON)`.

Finds the `serve` running on this machine through its 0600 state file (one per
port) and posts the decision to its control API. With several running it asks
which (`--port P` or `--url URL`) rather than guess.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit

from console.services.receiver_process import default_operator
from console.services.serve_state import ServeState, running_serves, state_dir


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("decide", help="decide a pending tool call of the running `serve`")
    parser.add_argument("tool_call_id", nargs="?", help="the id `serve` printed (omit with --list)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--approve", action="store_true", help="pass the call through as it is")
    group.add_argument("--edit", metavar="JSON", help="pass it through with these arguments (a JSON object)")
    group.add_argument("--override", metavar="JSON", help="answer with this result instead of running the tool")
    group.add_argument("--reject", metavar="REASON", help="refuse, with a reason the assistant can say")
    group.add_argument("--list", action="store_true", help="list the pending tool calls")
    which = parser.add_mutually_exclusive_group()
    # SUPPRESS: `voice-console --port P decide` names the same receiver port.
    which.add_argument(
        "--port",
        type=int,
        metavar="P",
        default=argparse.SUPPRESS,
        help="the `serve` listening on this port (when several run)",
    )
    which.add_argument("--url", metavar="URL", help="the `serve` at this URL, as it printed it (when several run)")
    parser.add_argument("--operator", metavar="NAME", help="who decides, as the consoles show it (default user@host)")
    parser.add_argument(
        "--team",
        metavar="REDIS_URL",
        help="decide through the team's Redis (also VOICE_CONSOLE_TEAM): whichever receiver holds the call answers",
    )


def run(args: argparse.Namespace) -> int:
    if args.team or os.environ.get("VOICE_CONSOLE_TEAM"):
        return run_team_decide(args)
    # No settings: decide reads only the state file the running `serve` wrote.
    return run_decide(args)


def run_team_decide(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """`decide --team`: the decision recorded in the team's Redis, first writer wins; the receiver
    holding the platform's request applies it."""
    from console.config import ConfigError, load_settings

    try:
        settings = load_settings(overrides={"team": {"redis_url": args.team}} if args.team else None).team
    except ConfigError as exc:
        print(f"voice-console decide: {exc}", file=err)
        return 2
    body = _decision_body(args, err, "decide --team URL --list")
    if body is None:
        return 2
    import asyncio

    from console.secrets import SecretStore
    from console.services.team_decide import decide_in_team, list_held

    settings = settings.with_password(SecretStore().get("team_redis_password").value)

    if args.list:
        return asyncio.run(list_held(settings, out, err))
    operator = args.operator or default_operator()
    return asyncio.run(decide_in_team(settings, args.tool_call_id, {**body, "operator": operator}, out, err))


class NoServe(Exception):
    """No `serve` to talk to; the message says why. `code` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _same_url(a: str, b: str) -> bool:
    first, second = urlsplit(a.strip().rstrip("/")), urlsplit(b.strip().rstrip("/"))
    return (first.scheme, first.hostname, first.port) == (second.scheme, second.hostname, second.port)


def _describe(state: ServeState) -> str:
    return f"  {state.url}  pid {state.pid}  started {state.started or 'at an unknown time'}"


def pick_serve(port: int | None = None, url: str | None = None) -> ServeState:
    """The running `serve` to talk to: the only one, or the one `port`/`url` names."""
    found = running_serves()
    wanted = found.live
    if port is not None:
        wanted = [state for state in wanted if state.port == port]
    elif url is not None:
        wanted = [state for state in wanted if _same_url(state.url, url)]
    if len(wanted) == 1:
        return wanted[0]
    if len(wanted) > 1:
        listing = "\n".join(_describe(state) for state in wanted)
        raise NoServe(
            f"{len(wanted)} `voice-console serve`s are running on this machine:\n{listing}\n"
            "Say which with --port P or --url URL.",
            2,
        )
    if found.live:  # --port/--url named none of the running ones
        listing = "\n".join(_describe(state) for state in found.live)
        named = f"port {port}" if port is not None else url
        raise NoServe(f"no running `voice-console serve` on {named}; these run:\n{listing}", 1)
    message = f"no running `voice-console serve` found on this machine (state files in {state_dir()})."
    if found.stale:
        pids = ", ".join(str(state.pid) for state in found.stale)
        message += (
            f" {len(found.stale)} state file(s) left by a serve that is no longer running (pid {pids}) were ignored."
        )
    raise NoServe(message, 1)


def _body(args: argparse.Namespace) -> dict[str, Any]:
    if args.approve:
        return {"decision": "approve"}
    if args.reject is not None:
        return {"decision": "reject", "reason": args.reject}
    if args.edit is not None:
        try:
            arguments = json.loads(args.edit)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"voice-console decide: --edit needs a JSON object ({exc.msg})") from None
        if not isinstance(arguments, dict):
            raise SystemExit('voice-console decide: --edit needs a JSON object, e.g. \'{"date": "2026-12-01"}\'')
        return {"decision": "edit", "arguments": arguments}
    try:
        result: Any = json.loads(args.override)
    except ValueError:
        result = args.override  # plain text is a fine result too
    return {"decision": "override", "result": result}


def _decision_body(args: argparse.Namespace, err: TextIO, listing: str) -> dict[str, Any] | None:
    """The decision asked for ({} with --list); None once bad usage is told (exit 2)."""
    if args.list:
        return {}
    if not args.tool_call_id:
        print(f"voice-console decide: give the TOOL_CALL_ID (see `voice-console {listing}`).", file=err)
        return None
    try:
        return _body(args)
    except SystemExit as exc:
        print(exc, file=err)
        return None


def run_decide(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    body = _decision_body(args, err, "decide --list")  # bad usage is told before looking for a serve
    if body is None:
        return 2
    try:
        state = pick_serve(getattr(args, "port", None), getattr(args, "url", None))
    except NoServe as exc:
        print(f"voice-console decide: {exc}", file=err)
        return exc.code
    import httpx  # only once there is a serve to talk to: `decide --list` with none starts fast

    headers = {"authorization": f"Bearer {state.token}"}
    try:
        with httpx.Client(base_url=state.url, timeout=5) as client:
            if args.list:
                response = client.get("/control/pending", headers=headers)
                if response.status_code == 200:
                    for call in response.json().get("pending", []):
                        print(
                            f"{call['tool_call_id']}  {call['name']}({json.dumps(call['arguments'])})  "
                            f"{call['remaining_s']:.0f}s left",
                            file=out,
                        )
                    return 0
            else:
                response = client.post(
                    "/control/decide",
                    json={"tool_call_id": args.tool_call_id, **body, "operator": args.operator or default_operator()},
                    headers=headers,
                )
    except httpx.HTTPError as exc:
        print(f"voice-console decide: cannot reach serve at {state.url} ({type(exc).__name__}).", file=err)
        return 1
    if response.status_code == 200:
        print(f"{args.tool_call_id}: {response.json()['decision']}", file=out)
        return 0
    return refused("decide", response, err)


def refused(command: str, response: Any, err: TextIO) -> int:
    """Say what the `serve` control API refused (its one-line error) and give the exit code:
    2 for bad usage (400), 1 otherwise."""
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code}"
    print(f"voice-console {command}: {message}", file=err)
    return 2 if response.status_code == 400 else 1
