"""A real tool server on loopback (the user's `--forward-to`): answers Vapi tool-calls
deliveries and records which tools it was asked to run, with which arguments."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from console.receiver.http import HttpServer, Router
from console.receiver.types import Request, Response


class RecordingToolServer:
    def __init__(self) -> None:
        self.ran: list[tuple[str, str, dict[str, Any]]] = []  # (tool call id, name, arguments)
        self.server: HttpServer | None = None

    async def handle(self, request: Request) -> Response:
        items = json.loads(request.body)["message"]["toolCallList"]
        for item in items:
            arguments = item["function"]["arguments"]
            self.ran.append((item["id"], item["function"]["name"],
                             json.loads(arguments) if isinstance(arguments, str) else arguments))
        return Response.json(200, {"results": [{"toolCallId": item["id"], "result": "done"} for item in items]})

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url + "/tools"

    def arguments_of(self, tool_call_id: str) -> dict[str, Any] | None:
        return next((arguments for ran_id, _, arguments in self.ran if ran_id == tool_call_id), None)


@asynccontextmanager
async def recording_tool_server() -> AsyncIterator[RecordingToolServer]:
    tools = RecordingToolServer()
    router = Router()
    router.add("POST", "/tools", tools.handle)
    tools.server = HttpServer(router, port=0)
    await tools.server.start()
    try:
        yield tools
    finally:
        await tools.server.close()
