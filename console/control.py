"""The local control API of a running `serve`, and how `decide` finds it.

`serve` listens for `/control/...` on its receiver, answers only loopback
clients that present its bearer token, and writes its URL and token to a 0600
state file named after its port (`serve-8765.json` in the state dir), so
`voice-console decide` on the same machine needs no flags when one runs and
takes `--port`/`--url` when several do.

    GET  /control/pending                      -> {"pending": [PendingCall...]}
    POST /control/decide {"tool_call_id", "decision": approve|edit|override|reject,
                          "arguments"?, "result"?, "reason"?}
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import platformdirs

from console.config import APP_NAME
from console.core.gate import OperatorDecision, ToolGate
from console.receiver.http import Router
from console.receiver.types import Request, Response

DECISIONS = {"approve": "approved", "edit": "edited", "override": "overridden", "reject": "rejected"}


def state_dir() -> Path:
    return platformdirs.user_state_path(APP_NAME)


def state_file(port: int) -> Path:
    """One file per running receiver, keyed by its port: two `serve`s never share one."""
    return state_dir() / f"serve-{port}.json"


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ServeState:
    url: str
    token: str
    pid: int
    started: str = ""  # ISO 8601, UTC: tells two running `serve`s apart

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 0

    def __repr__(self) -> str:  # keep the token out of tracebacks and logs
        return f"ServeState(url={self.url!r}, pid={self.pid}, started={self.started!r})"


def write_state(state: ServeState, path: Path | None = None) -> Path:
    """Write atomically with mode 0600: the token is a credential."""
    path = path or state_file(state.port)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": state.url, "token": state.token, "pid": state.pid, "started": state.started}, handle)
    os.replace(tmp, path)
    return path


def remove_state(state: ServeState, path: Path | None = None) -> None:
    """Remove the file only if it is still ours: a process never removes another's."""
    path = path or state_file(state.port)
    current = read_state(path)
    if current is not None and current.pid == state.pid and current.token == state.token:
        path.unlink(missing_ok=True)


def read_state(path: Path) -> ServeState | None:
    try:
        data = json.loads(path.read_text())
        state = ServeState(url=str(data["url"]), token=str(data["token"]), pid=int(data["pid"]),
                           started=str(data.get("started") or ""))
        state.port  # noqa: B018  (a URL with an impossible port raises here, not later)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return state


def pid_alive(pid: int) -> bool:
    if pid <= 0:  # kill(0 or -n) would signal a whole process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    except (OverflowError, ValueError):
        return False
    return True


@dataclass(frozen=True)
class RunningServes:
    live: list[ServeState]
    stale: list[ServeState]  # files left by a `serve` that is gone (killed, crashed)


def running_serves() -> RunningServes:
    """Every `serve` on this machine according to its state file, live ones by port."""
    live: list[ServeState] = []
    stale: list[ServeState] = []
    for path in sorted(state_dir().glob("serve-*.json")):
        state = read_state(path)
        if state is not None:
            (live if pid_alive(state.pid) else stale).append(state)
    return RunningServes(sorted(live, key=lambda s: s.port), stale)


def _is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost") or host.startswith("127.")


def parse_decision(body: dict[str, Any]) -> tuple[str, OperatorDecision]:
    """Validate a decision request; ValueError carries a message for the operator."""
    tool_call_id = body.get("tool_call_id")
    if not isinstance(tool_call_id, str) or not tool_call_id:
        raise ValueError('"tool_call_id" is required')
    decision = DECISIONS.get(str(body.get("decision")))
    if decision is None:
        raise ValueError('"decision" must be one of approve, edit, override, reject')
    arguments = body.get("arguments")
    if decision == "edited" and not isinstance(arguments, dict):
        raise ValueError('"edit" needs "arguments": a JSON object')
    result = body.get("result")
    if decision == "overridden":
        if result is None:
            raise ValueError('"override" needs a "result"')
        if not isinstance(result, str):
            result = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise ValueError('"reason" must be text')
    return tool_call_id, OperatorDecision(
        decision=decision,  # type: ignore[arg-type]
        arguments=arguments if decision == "edited" else None,
        result=result if decision == "overridden" else None,
        reason=reason if decision == "rejected" else None,
    )


def add_control_routes(router: Router, gate: ToolGate, token: str) -> None:
    def refused(request: Request) -> Response | None:
        if not _is_loopback(request.client[0]):
            return Response.error(403, "the control API answers loopback clients only")
        supplied = (request.header("authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(supplied.encode(), token.encode()):
            return Response.error(401, "a valid control token is required (see `voice-console decide`)")
        return None

    async def pending(request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        return Response.json(200, {"pending": [call.to_dict() for call in gate.pending()]})

    async def decide(request: Request) -> Response:
        if (error := refused(request)) is not None:
            return error
        try:
            body = json.loads(request.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            tool_call_id, decision = parse_decision(body)
        except ValueError as exc:
            return Response.error(400, str(exc))
        try:
            accepted = gate.resolve(tool_call_id, decision)
        except ValueError as exc:
            return Response.error(400, str(exc))
        if not accepted:
            return Response.error(404, f"no pending tool call {tool_call_id} (unknown, already decided or timed out)")
        return Response.json(200, {"ok": True, "tool_call_id": tool_call_id, "decision": decision.decision})

    router.add("GET", "/control/pending", pending)
    router.add("POST", "/control/decide", decide)
