"""Both ends of a Retell custom-LLM socket, for the demo and the tests (real WebSockets).

- `LlmServer`: a small custom-LLM server, as a Retell user would write one from
  Retell's demos: `config` then a begin message on connect, each
  `response_required` answered by streaming its reply a few words at a time,
  streaming stopped as soon as a newer `response_id` arrives (Retell drops the
  rest anyway), `ping_pong` echoed, a tool call recorded with
  `tool_call_invocation`/`tool_call_result`.
- `RetellCaller`: Retell's side of one call: opens `<llm_websocket_url>/<call_id>`,
  answers `config` with `call_details`, sends `ping_pong` keepalives, and drives
  a conversation in which the caller cuts the agent off mid-response (a newer
  `response_id` while the previous one streams), as Retell does.

Both keep every frame they sent and received, exactly as text, so a test can
prove a relay in between changed nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

GREETING = "Hi, this is Ava from Bella Napoli. How can I help you today?"
# (what the caller says, what the agent answers, a tool the agent runs first or None)
CONVERSATION: tuple[tuple[str, str, tuple[str, dict[str, Any], str] | None], ...] = (
    (
        "I'd like to book a table for four tonight.",
        "Of course. We have tables at seven and at half past eight tonight, both by the window, "
        "and I can hold either one for you for fifteen minutes.",
        None,
    ),
    (
        "Actually, make it six people at seven.",
        "Six people at seven o'clock: you're booked. See you tonight!",
        ("book_table", {"party_size": 6, "time": "19:00"}, '{"confirmation":"BN-6107"}'),
    ),
)
# The caller cuts the agent off once this many chunks of the first answer have arrived.
BARGE_IN_AFTER_CHUNKS = 3


def _dumps(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class LlmServer:
    """A custom-LLM server on loopback: `async with LlmServer() as llm: llm.url` (ws://…/llm)."""

    def __init__(self, *, chunk_words: int = 3, chunk_delay_s: float = 0.05, port: int = 0) -> None:
        self.chunk_words = chunk_words
        self.chunk_delay_s = chunk_delay_s
        self._port = port
        self._server: Server | None = None
        self.received: dict[str, list[str]] = {}  # call id -> frames, as text
        self.sent: dict[str, list[str]] = {}
        self.paths: list[str] = []
        self.closes: dict[str, tuple[int, str]] = {}  # call id -> (code, reason) it saw

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"ws://{host}:{port}/llm"

    async def __aenter__(self) -> LlmServer:
        self._server = await serve(self._handle, "127.0.0.1", self._port, compression=None)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        self.paths.append(path)
        call_id = path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        received = self.received.setdefault(call_id, [])
        sent = self.sent.setdefault(call_id, [])
        streaming: asyncio.Task[None] | None = None
        turns = 0

        async def send(data: dict[str, Any]) -> None:
            text = _dumps(data)
            sent.append(text)
            await ws.send(text)

        async def answer(response_id: int, reply: str, tool: tuple[str, dict[str, Any], str] | None) -> None:
            if tool is not None:
                name, arguments, result = tool
                tool_call_id = f"tc-{response_id}"
                await send(
                    {
                        "response_type": "tool_call_invocation",
                        "tool_call_id": tool_call_id,
                        "name": name,
                        "arguments": _dumps(arguments),
                    }
                )
                await send({"response_type": "tool_call_result", "tool_call_id": tool_call_id, "content": result})
            words = reply.split()
            for start in range(0, len(words), self.chunk_words):
                chunk = " ".join(words[start : start + self.chunk_words])
                last = start + self.chunk_words >= len(words)
                await send(
                    {
                        "response_type": "response",
                        "response_id": response_id,
                        "content": chunk if start == 0 else " " + chunk,
                        "content_complete": last,
                    }
                )
                if not last:
                    await asyncio.sleep(self.chunk_delay_s)

        try:
            await send({"response_type": "config", "config": {"auto_reconnect": True, "call_details": True}})
            await send({"response_type": "response", "response_id": 0, "content": GREETING, "content_complete": True})
            async for frame in ws:
                text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
                received.append(text)
                try:
                    data = json.loads(text)
                except ValueError:
                    continue  # a real server would log it; the relay is what is under test
                kind = data.get("interaction_type") if isinstance(data, dict) else None
                if kind == "ping_pong":
                    await send({"response_type": "ping_pong", "timestamp": data.get("timestamp")})
                elif kind in ("response_required", "reminder_required"):
                    if streaming is not None:
                        streaming.cancel()  # a newer request: the older answer will never be spoken
                    _, reply, tool = CONVERSATION[min(turns, len(CONVERSATION) - 1)]
                    turns += 1
                    streaming = asyncio.create_task(answer(int(data["response_id"]), reply, tool))
        except ConnectionClosed:
            pass
        finally:
            if streaming is not None:
                streaming.cancel()
            received_close = ws.protocol.close_rcvd
            self.closes[call_id] = (
                (received_close.code, received_close.reason) if received_close is not None else (1006, "")
            )


@dataclass
class CallerResult:
    sent: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    spoken: str = ""  # what the agent said of the answer the caller cut off
    keepalive_lost: bool = False  # closed because the server stopped echoing ping_pong


class RetellCaller:
    """Retell's side of a custom-LLM call, over a real socket to `url` (the agent's llm_websocket_url)."""

    def __init__(
        self,
        url: str,
        call_id: str,
        *,
        agent_id: str = "agent_sim",
        timeout_s: float = 10.0,
        pace_s: float = 0.0,
        ping_interval_s: float = 2.0,
        echo_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.call_id = call_id
        self.agent_id = agent_id
        self.timeout_s = timeout_s  # for the whole conversation
        self.pace_s = pace_s  # seconds per spoken word, either side (0: at once)
        # With `auto_reconnect` in the server's config, Retell pings every 2 s and gives up on a
        # socket whose server has not echoed for 5 s.
        self.ping_interval_s = ping_interval_s
        self.echo_timeout_s = echo_timeout_s
        self._last_echo = time.monotonic()
        self._keepalive: asyncio.Task[None] | None = None
        self.result = CallerResult()
        self._ws: ClientConnection | None = None
        self._inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._transcript: list[dict[str, Any]] = []
        self._spans: list[list[float]] = []  # per utterance: [start, end] (time.time())
        self._answer_started = 0.0

    def socket_url(self) -> str:
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + self.call_id))

    async def run(self) -> CallerResult:
        """The whole conversation; the socket is closed with 1000 at its end (or by the other side)."""
        try:
            async with connect(self.socket_url(), compression=None, open_timeout=self.timeout_s) as ws:
                self._ws = ws
                reader = asyncio.create_task(self._read(ws))
                try:
                    await asyncio.wait_for(self._converse(), self.timeout_s)
                    await ws.close(1000, "call ended")
                except ConnectionClosed:
                    pass
                finally:
                    for task in (reader, self._keepalive):
                        if task is not None:
                            task.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await task
                received_close = ws.protocol.close_rcvd
                if received_close is not None:
                    self.result.close_code, self.result.close_reason = received_close.code, received_close.reason
                elif ws.protocol.close_sent is not None:
                    self.result.close_code = ws.protocol.close_sent.code
        except ConnectionClosed as exc:
            if exc.rcvd is not None:
                self.result.close_code, self.result.close_reason = exc.rcvd.code, exc.rcvd.reason
        return self.result

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
                self.result.received.append(text)
                try:
                    data = json.loads(text)
                except ValueError:
                    continue
                if isinstance(data, dict):
                    if data.get("response_type") == "ping_pong":
                        self._last_echo = time.monotonic()
                    await self._inbox.put(data)
        except ConnectionClosed:
            pass
        finally:
            await self._inbox.put(None)

    async def _send(self, data: dict[str, Any]) -> None:
        assert self._ws is not None
        text = _dumps(data)
        self.result.sent.append(text)
        await self._ws.send(text)

    async def _next(self, *kinds: str) -> dict[str, Any]:
        """The next frame of one of `kinds` (others are handled or set aside); ConnectionClosed at the end."""
        while True:
            data = await self._inbox.get()
            if data is None:
                raise ConnectionClosed(None, None)
            kind = data.get("response_type")
            config: dict[str, Any] = data["config"] if kind == "config" and isinstance(data.get("config"), dict) else {}
            if config.get("call_details"):
                await self._send({"interaction_type": "call_details", "call": self._call()})
            if config.get("auto_reconnect") and self._keepalive is None:
                self._last_echo = time.monotonic()
                self._keepalive = asyncio.create_task(self._ping())
            if kind in kinds:
                return data

    async def _answer(self, response_id: int, *, stop_after_chunks: int | None = None) -> tuple[list[str], bool]:
        """The streamed answer to `response_id`: (its chunks so far, complete)."""
        chunks: list[str] = []
        while True:
            data = await self._next("response")
            if data.get("response_id") != response_id:
                continue  # an answer to an older request: Retell drops it
            if not chunks:
                self._answer_started = time.time()
            chunks.append(str(data.get("content") or ""))
            if data.get("content_complete"):
                return chunks, True
            if stop_after_chunks is not None and len(chunks) >= stop_after_chunks:
                return chunks, False

    async def _ping(self) -> None:
        """Retell's keepalive: a ping_pong every interval; no echo for echo_timeout_s closes the socket."""
        assert self._ws is not None
        while True:
            await asyncio.sleep(self.ping_interval_s)
            if time.monotonic() - self._last_echo > self.echo_timeout_s:
                self.result.keepalive_lost = True
                await self._ws.close(1011, "no ping_pong echo from the LLM server")
                return
            await self._send({"interaction_type": "ping_pong", "timestamp": int(time.time() * 1000)})

    @property
    def transcript(self) -> list[dict[str, Any]]:
        """The conversation as Retell's transcript shows it (the agent's cut-off turn as spoken)."""
        return [dict(utterance) for utterance in self._transcript]

    def timed_transcript(self, started_at: float) -> list[dict[str, Any]]:
        """The transcript with word times (seconds since `started_at`, time.time()), spread over
        when each utterance was said here: the cut-off agent turn overlaps the caller's next one."""
        out = []
        for utterance, (start, end) in zip(self._transcript, self._spans, strict=True):
            words = utterance["content"].split()
            step = max(end - start, 0.05 * len(words)) / max(len(words), 1)
            base = max(start - started_at, 0.0)
            timed = [
                {"word": word, "start": round(base + i * step, 3), "end": round(base + (i + 1) * step, 3)}
                for i, word in enumerate(words)
            ]
            out.append({**utterance, "words": timed})
        return out

    def _utter(self, role: str, content: str, start: float | None = None, end: float | None = None) -> None:
        now = time.time()
        self._transcript.append({"role": role, "content": content})
        self._spans.append([start if start is not None else now, end if end is not None else now])

    async def _speak(self, words: int) -> None:
        """As long as saying `words` takes at this pace (nothing in tests)."""
        if self.pace_s:
            await asyncio.sleep(self.pace_s * words)

    async def _agent_turn(self, chunks: list[str]) -> None:
        """The agent says a whole answer: from its first chunk until it is spoken."""
        answer = "".join(chunks)
        self._utter("agent", answer, self._answer_started)
        await self._send(
            {"interaction_type": "update_only", "transcript": self._transcript, "turntaking": "agent_turn"}
        )
        await self._speak(len(answer.split()))
        self._spans[-1][1] = time.time()

    async def _converse(self) -> None:
        await self._send({"interaction_type": "ping_pong", "timestamp": int(time.time() * 1000)})
        greeting, _ = await self._answer(0)
        await self._agent_turn(greeting)
        response_id = 0
        for turn, (said, _, _) in enumerate(CONVERSATION):
            words = said.split()
            self._utter("user", " ".join(words[: len(words) // 2]))
            await self._send(
                {"interaction_type": "update_only", "transcript": self._transcript, "turntaking": "user_turn"}
            )
            await self._speak(len(words))
            self._transcript[-1]["content"] = said
            self._spans[-1][1] = time.time()
            await self._send({"interaction_type": "update_only", "transcript": self._transcript})
            response_id += 1
            await self._send(
                {"interaction_type": "response_required", "response_id": response_id, "transcript": self._transcript}
            )
            barge_in = turn == 0
            chunks, complete = await self._answer(
                response_id, stop_after_chunks=BARGE_IN_AFTER_CHUNKS if barge_in else None
            )
            if barge_in and not complete:
                # The agent spoke all but the last chunk that reached Retell when the caller cut in, and
                # went on a quarter second over the caller: the transcript stops at what it said.
                spoken = "".join(chunks[:-1]).strip()
                self.result.spoken = spoken
                await self._speak(len(spoken.split()))
                self._utter("agent", spoken, self._answer_started, time.time() + 0.25)
                await self._send({"interaction_type": "update_only", "transcript": self._transcript})
                continue
            await self._agent_turn(chunks)
        await self._send({"interaction_type": "ping_pong", "timestamp": int(time.time() * 1000)})
        await self._next("ping_pong")

    def _call(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "agent_id": self.agent_id,
            "call_type": "phone_call",
            "call_status": "registered",
        }
