"""A real tool server on loopback (the user's `--forward-to`): records every request it gets and
which tools it was asked to run, with which arguments.

By default a Vapi tool-calls request is answered with `result(tool_call_id, name, arguments)` for
each call and anything else with {"result": "ran"}; `answer` replaces the whole reply and
`delay_s` holds every reply back (until the server closes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from console.core.http_types import Request, Response
from console.receiver.http import HttpServer, Router

Answer = Callable[[Request], Awaitable[Response]]
Result = Callable[[str, str, Any], Any]


def ran_with(tool_call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"ran": name, "with": arguments}


class ToolServer:
    def __init__(self, *, answer: Answer | None = None, result: Result = ran_with) -> None:
        self.received: list[Request] = []
        self.answer = answer or self.answer_tool_calls
        self.result = result
        self.delay_s = 0.0
        self.release = asyncio.Event()  # ends any delay when the server closes
        self.server: HttpServer | None = None

    async def handle(self, request: Request) -> Response:
        self.received.append(request)
        if self.delay_s:
            try:
                await asyncio.wait_for(self.release.wait(), self.delay_s)
            except TimeoutError:
                pass
        return await self.answer(request)

    async def answer_tool_calls(self, request: Request) -> Response:
        calls = tool_calls(request)
        if calls is None:
            return Response.json(200, {"result": "ran"})
        return Response.json(
            200,
            {
                "results": [
                    {"toolCallId": tool_call_id, "result": self.result(tool_call_id, name, arguments)}
                    for tool_call_id, name, arguments in calls
                ]
            },
        )

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url + "/tools"

    @property
    def requests(self) -> list[list[tuple[str, str, Any]]]:
        """Per Vapi tool-calls request: (tool call id, name, arguments as sent)."""
        return [calls for calls in map(tool_calls, self.received) if calls is not None]

    @property
    def ran(self) -> list[str]:
        return [tool_call_id for calls in self.requests for tool_call_id, _, _ in calls]

    def arguments_of(self, tool_call_id: str) -> dict[str, Any] | None:
        for calls in self.requests:
            for ran_id, _, arguments in calls:
                if ran_id == tool_call_id:
                    return json.loads(arguments) if isinstance(arguments, str) else arguments
        return None


def tool_calls(request: Request) -> list[tuple[str, str, Any]] | None:
    """The calls of a Vapi tool-calls request; None for any other request."""
    data = json.loads(request.body) if request.body else {}
    message = data.get("message") if isinstance(data, dict) else None
    if not (isinstance(message, dict) and message.get("type") == "tool-calls"):
        return None
    return [(item["id"], item["function"]["name"], item["function"]["arguments"]) for item in message["toolCallList"]]


@asynccontextmanager
async def recording_tool_server(**options: Any) -> AsyncIterator[ToolServer]:
    tools = ToolServer(**options)
    router = Router()
    router.add("POST", "/tools", tools.handle)
    tools.server = HttpServer(router, port=0)
    await tools.server.start()
    try:
        yield tools
    finally:
        tools.release.set()
        await tools.server.close(grace_s=1.0)
