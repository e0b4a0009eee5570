"""`voice-console call say|context|end|cut|list`: steer a live call of the running `serve`.

The same controls as the console's keys (s, n, ctrl+e), sent to the `serve` found on this
machine (as `decide` finds it) over its local control API. On a Retell call whose
custom-LLM socket runs through the tap, `say` speaks the exact words (an
`agent_interrupt`); otherwise it goes in through the platform's API.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from console.commands.decide import NoServe, pick_serve, refused


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("call", help="steer a live call of the running `serve` (say, context, end)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    say = actions.add_parser("say", help="have the agent say this now (word for word through the Retell tap)")
    say.add_argument("call_id", help="the call's id, or the start of it")
    say.add_argument("text")
    context = actions.add_parser("context", help="add an instruction the agent takes into account")
    context.add_argument("call_id", help="the call's id, or the start of it")
    context.add_argument("text")
    context.add_argument("--no-respond", action="store_true", help="do not have the agent answer it right away")
    end = actions.add_parser("end", help="hang up the call")
    end.add_argument("call_id", help="the call's id, or the start of it")
    cut = actions.add_parser("cut", help="cut the agent off: Twilio drops the audio it has queued (through the tap)")
    cut.add_argument("call_id", help="the call's id, or the start of it")
    actions.add_parser("list", help="the live calls `serve` tracks")
    for sub in (say, context, end, cut, actions.choices["list"]):
        which = sub.add_mutually_exclusive_group()
        which.add_argument("--port", type=int, metavar="P", default=argparse.SUPPRESS, help="the `serve` on this port")
        which.add_argument("--url", metavar="URL", help="the `serve` at this URL, as it printed it")


def run(args: argparse.Namespace) -> int:
    return run_call(args)


def run_call(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        state = pick_serve(getattr(args, "port", None), getattr(args, "url", None))
    except NoServe as exc:
        print(f"voice-console call: {exc}", file=err)
        return exc.code
    import httpx

    headers = {"authorization": f"Bearer {state.token}"}
    try:
        # Ending or speaking goes to the platform and back: give it the platform's time.
        with httpx.Client(base_url=state.url, timeout=20) as client:
            if args.action == "list":
                response = client.get("/control/calls", headers=headers)
            else:
                body: dict[str, Any] = {"call_id": args.call_id, "action": args.action}
                if args.action in ("say", "context"):
                    body["text"] = args.text
                if args.action == "context":
                    body["respond"] = not args.no_respond
                response = client.post("/control/call", json=body, headers=headers)
    except httpx.HTTPError as exc:
        print(f"voice-console call: cannot reach serve at {state.url} ({type(exc).__name__}).", file=err)
        return 1
    if response.status_code == 200:
        answer = response.json()
        if args.action == "list":
            for call in answer.get("calls", []):
                tapped = "  (through the tap)" if call.get("tapped") else ""
                print(f"{call['call_id']}  {call['provider']}  {call.get('status') or '?'}{tapped}", file=out)
        else:
            via = " through the tap" if answer.get("via") == "tap" else ""
            print(f"{answer['call_id']}: {answer['action']} sent{via}", file=out)
        return 0
    return refused("call", response, err)
