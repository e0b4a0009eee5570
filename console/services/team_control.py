"""Live control of a team's calls from any console on the team.

A console asks the receiver that has the call: a request on that receiver's list in Redis, which
it carries out as its own control API would (`console.services.control.steer`: the control URL,
tap and platform keys stay with it, never in Redis) and answers on the request's own list.

    vc:{team}:control:<instance>   requests for that receiver: JSON {"id", "call_id", "action",
                                   "text"?, "respond"?, "number"?, "operator", "expires_at"}
    vc:{team}:reply:<request id>   its answer: {"ok": true, "call_id", "action", "via"} or
                                   {"ok": false, "status", "error"}; expires REPLY_KEPT_S after

A request not carried out before `expires_at` (the receiver was busy or away) is refused rather
than done late: an operator who was told "no answer" does not want the call ended a minute later.
Whoever can write to the team's Redis can steer its calls, as they can decide its tool calls:
give consoles an ACL user of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from console.config import TeamSettings
from console.providers.base import PlatformError
from console.redact import Redactor, mask_url
from console.services.attach import RequestedControl
from console.services.control import SteerRefused, steer
from console.services.live import LiveCalls, Target
from console.services.team import (
    LINK_ERRORS,
    Backoff,
    TeamKeys,
    close_quietly,
    connect,
    link_problem,
)

log = logging.getLogger(__name__)

# How long a console waits for the receiver's answer (a platform's own call takes a few seconds).
ANSWER_WAIT_S = 20.0
# Each wait on Redis is shorter than the client's socket timeout (a blocked read is not a dead link).
BLOCK_S = 1
REPLY_KEPT_S = 60
REQUESTS_KEPT_S = 60  # a receiver that is gone does not leave its requests behind for long


class TeamControl(RequestedControl):
    """A call steered by the team's receiver that has it (a console's side)."""

    def __init__(self, settings: TeamSettings, instance: str, call_id: str, operator: str) -> None:
        self._settings = settings
        self._instance = instance
        self._call_id = call_id
        self._operator = operator
        self._keys = TeamKeys(settings.name)

    async def _call(self, action: str, **extra: Any) -> Any:
        request_id = uuid.uuid4().hex
        deadline = time.time() + ANSWER_WAIT_S
        request = {
            "id": request_id,
            "call_id": self._call_id,
            "action": action,
            **extra,
            "operator": self._operator,
            "expires_at": deadline,
        }
        keys, instance = self._keys, self._instance
        client = connect(self._settings)
        try:
            if not await client.exists(keys.instance(instance)):
                raise PlatformError(f"{instance}, the receiver that has this call, is not on the team now")
            async with client.pipeline(transaction=True) as pipe:
                pipe.rpush(keys.control(instance), json.dumps(request, ensure_ascii=False))
                pipe.expire(keys.control(instance), REQUESTS_KEPT_S)
                await pipe.execute()
            answer = None
            while answer is None and time.time() < deadline:
                answer = await client.blpop([keys.reply(request_id)], timeout=BLOCK_S)
        except LINK_ERRORS as exc:
            raise PlatformError(link_problem(self._settings, exc)) from None
        finally:
            await close_quietly(client)
        if answer is None:
            raise PlatformError(f"{instance} did not answer within {ANSWER_WAIT_S:.0f} s (it will not do it later)")
        reply = json.loads(answer[1])
        if not reply.get("ok"):
            raise PlatformError(str(reply.get("error") or f"{instance} could not do it"))
        return reply


class TeamSteering(LiveCalls):
    """Live control of a team's calls: this console's checks on what it knows of the call (from the
    stream and the receivers' summaries), then the receiver that has it does it."""

    taps_elsewhere = True  # the receiver checks its own taps

    def __init__(
        self,
        *args: Any,
        team: TeamSettings,
        operator: str,
        instances: dict[str, str],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.team = team
        self.operator = operator
        self.instances = instances  # call id -> the receiver that has it (kept up to date by the console)

    async def open(self, target: Target) -> TeamControl:
        instance = self.instances.get(target.call_id)
        if instance is None:
            raise PlatformError("no receiver of the team has said it has this call")
        return TeamControl(self.team, instance, target.call_id, self.operator)


class TeamControlServer:
    """A receiver's side: carries out the team's live-control requests for its calls, as its
    control API would, and answers each; its errors masked (the redactor, the call's control URL)."""

    def __init__(
        self,
        settings: TeamSettings,
        instance: str,
        steering: LiveCalls,
        redactor: Redactor,
        *,
        note: Callable[[str], None] = lambda _: None,
        client_factory: Callable[[TeamSettings], aioredis.Redis] = connect,
    ) -> None:
        self.settings = settings
        self.instance = instance
        self.keys = TeamKeys(settings.name)
        self._steering = steering
        self._redactor = redactor
        self._note = note
        self._connect = client_factory
        self._running: set[asyncio.Task[None]] = set()
        self.carried_out = 0

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            requests, replies = self._connect(self.settings), self._connect(self.settings)
            try:
                await requests.ping()
                backoff.reset()
                key = self.keys.control(self.instance)
                while True:
                    item = await requests.blpop([key], timeout=BLOCK_S)
                    if item is not None:
                        # Each on its own: a slow platform does not hold the next request.
                        task = asyncio.create_task(self._carry_out(replies, item[1]))
                        self._running.add(task)
                        task.add_done_callback(self._running.discard)
            except LINK_ERRORS:
                pass  # the publisher's link says so; requests wait in Redis meanwhile
            finally:
                await close_quietly(requests)
                await close_quietly(replies)
            await backoff.sleep()

    async def _carry_out(self, client: aioredis.Redis, raw: bytes | str) -> None:
        try:
            request = json.loads(raw)
            request_id = str(request["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("a live-control request from the team could not be read; skipped")
            return
        who = str(request.get("operator") or "an operator of the team")
        try:
            if float(request.get("expires_at") or 0) < time.time():
                raise SteerRefused(408, "the request came too late: its console stopped waiting for it")
            answer = await steer(self._steering, request)
        except SteerRefused as exc:
            answer = {"ok": False, "status": exc.status, "error": self._masked(str(exc), request.get("call_id"))}
        except Exception:  # the console must hear back whatever happened
            log.exception("a live-control request from the team failed")
            answer = {"ok": False, "status": 500, "error": f"{self.instance} failed to carry it out"}
        else:
            self.carried_out += 1
            self._note(f"{who}: {request.get('action')} on call {answer['call_id']} (through the team)")
        try:
            async with client.pipeline(transaction=True) as pipe:
                pipe.rpush(self.keys.reply(request_id), json.dumps(answer, ensure_ascii=False))
                pipe.expire(self.keys.reply(request_id), REPLY_KEPT_S)
                await pipe.execute()
        except LINK_ERRORS:
            log.warning("the answer to a live-control request could not reach the team's Redis")

    def _masked(self, text: str, call_id: Any) -> str:
        text = self._redactor.text(text)
        state = self._steering.tracker.get(call_id) if isinstance(call_id, str) else None
        url = state.control_url if state is not None else None
        return text.replace(url, mask_url(url)) if url and url in text else text
