"""What a Retell custom-LLM socket shows while the console relays it (sans-I/O).

Retell opens `<llm_websocket_url>/<call_id>` when a call starts and talks to the
user's LLM server in JSON text frames: Retell sends `interaction_type` frames
(`update_only`, `response_required`, `reminder_required`, `call_details`,
`ping_pong`), the server answers with `response_type` frames (`response` chunks
per `response_id`, `agent_interrupt`, `tool_call_invocation`/`tool_call_result`,
`config`, `update_agent`, `metadata`, `ping_pong`). See
`shared/reference/retell-twilio.md` §3.

The session is shown every frame after it was relayed and turns it into
normalized events:

- transcripts: the last utterance as `transcript.partial` while it changes, each
  earlier one `transcript.final` once a newer one follows (or the socket closes);
- `turntaking` changes, as records (who speaks when, and so time-to-stop, comes from the
  word times of Retell's transcript webhooks: the socket carries no audio);
- each `response_required`/`reminder_required`, and each response the server
  streamed (its whole content, once complete or superseded);
- a `barge_in` when Retell asks for a newer `response_id` while the previous
  response was still being streamed or was cut short, with the cut text: what was
  sent for it after the words the transcript says the agent spoke;
- tool-call records (`tool_call_invocation` → `tool.requested`, `tool_call_result`
  → `tool.decided` "ran by agent": the server ran it, the console did not gate it).

Nothing here raises on bad input: a frame that is not a JSON object with its
side's type field is counted and reported (the first few individually).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from console.core.events import (
    BargeIn,
    Event,
    Raw,
    Role,
    ToolDecided,
    ToolRequested,
    TranscriptFinal,
    TranscriptPartial,
)
from console.providers.base import TapSide
from console.providers.taps import WatchedSocket

PROVIDER = "retell"
SOURCE = "llm-tap"  # the transcript as this socket showed it (the webhooks tell it again later)
# Operator interrupts get ids well clear of the small integers a server's own interrupts use.
_OPERATOR_INTERRUPT_IDS = 1_000_000
_TYPE_FIELD: dict[TapSide, str] = {"platform": "interaction_type", "agent": "response_type"}
_ROLES: dict[str, Role] = {"agent": "assistant", "user": "user"}
_TURNS: dict[str, Role] = {"agent_turn": "assistant", "user_turn": "user"}


@dataclass
class _Response:
    """One response the server streamed for a `response_id`."""

    response_id: int
    chunks: list[str] = field(default_factory=list)
    complete: bool = False
    reported: bool = False
    utterances_before: int = 0  # the transcript's length when Retell asked for it
    end_call: bool = False

    @property
    def content(self) -> str:
        return "".join(self.chunks)


def _words(text: str) -> list[str]:
    return text.split()


def _normal(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum())


def cut_text(sent: str, spoken: str) -> str | None:
    """The words of `sent` after the ones the transcript says were spoken (`spoken`, a prefix of
    it word for word, punctuation and case aside); None when `spoken` is not such a prefix."""
    sent_words = _words(sent)
    spoken_words = [_normal(word) for word in _words(spoken)]
    spoken_words = [word for word in spoken_words if word]
    position = 0
    for word in spoken_words:
        while position < len(sent_words) and not _normal(sent_words[position]):
            position += 1
        if position >= len(sent_words) or _normal(sent_words[position]) != word:
            return None
        position += 1
    rest = " ".join(sent_words[position:]).strip()
    return rest or None


class RetellLlmTap(WatchedSocket):
    """One call's custom-LLM socket, watched (`console.providers.base.TapSession`)."""

    provider = PROVIDER
    what = "custom-LLM socket"
    prefix = "llm"
    side_names: ClassVar[dict[TapSide, str]] = {"platform": "Retell", "agent": "the LLM server"}
    side_keys: ClassVar[dict[TapSide, str]] = {"platform": "retell", "agent": "server"}
    large_frame = 512 * 1024  # Retell's requests carry the whole transcript so far, which grows with the call

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id)
        self.barge_ins = 0
        self._finals = 0  # utterances already reported final
        self._partial: tuple[int, str] | None = None  # (index, text) of the last partial reported
        self._transcript: list[dict[str, Any]] = []
        self._turn: Role | None = None
        self._latest_request: int | None = None
        self._utterances_at_request: dict[int, int] = {}
        self._responses: dict[int, _Response] = {}
        self._interrupts: dict[Any, list[str]] = {}
        self._stale_reported: set[int] = set()
        self._tool_names: dict[str, str] = {}  # tool_call_id -> name (results do not repeat it)
        self._operator_ids = itertools.count(_OPERATOR_INTERRUPT_IDS)

    # -- frames ---------------------------------------------------------------------------

    def seen(self, side: TapSide, frame: str | bytes, received_at: datetime) -> list[Event]:
        return self._counted(side, frame, received_at) + self._seen(side, frame, received_at)

    def _seen(self, side: TapSide, frame: str | bytes, received_at: datetime) -> list[Event]:
        if isinstance(frame, (bytes, bytearray)):
            return self._malformed(side, "a binary frame (Retell takes JSON text frames only)", received_at)
        try:
            data = json.loads(frame)
        except json.JSONDecodeError as exc:
            return self._malformed(side, f"not JSON ({exc.msg} at {exc.pos})", received_at)
        except ValueError:  # not UTF-8
            return self._malformed(side, "not UTF-8 text", received_at)
        kind = data.get(_TYPE_FIELD[side]) if isinstance(data, dict) else None
        if not isinstance(kind, str):
            return self._malformed(side, f'no "{_TYPE_FIELD[side]}" field', received_at)
        try:
            if side == "platform":
                return self._from_retell(kind, data, received_at)
            return self._from_server(kind, data, received_at)
        except (TypeError, ValueError, AttributeError) as exc:  # a field of the wrong shape
            return self._malformed(side, f"{kind}: {type(exc).__name__}: {exc}", received_at)

    def closed(self, side: TapSide | None, code: int, reason: str, at: datetime) -> list[Event]:
        events: list[Event] = []
        if self._partial is not None:  # nothing more will come: the last utterance is final
            index, text = self._partial
            role = _ROLES.get(str(self._transcript[index].get("role")), "assistant")
            events.append(self._final(role, text, at))
            self._partial = None
            self._finals = index + 1
        for response in self._responses.values():
            if not response.reported and response.chunks:
                events.append(self._response_event(response, at, state="unfinished"))
        events.append(self._closed_record(side, code, reason, at, barge_ins=self.barge_ins))
        return events

    def operator_says(self, content: str, at: datetime) -> tuple[str, list[Event]]:
        interrupt_id = next(self._operator_ids)
        frame = {
            "response_type": "agent_interrupt",
            "interrupt_id": interrupt_id,
            "content": content,
            "content_complete": True,
            # Retell's advice for interrupts: the caller cannot talk it down half-way.
            "no_interruption_allowed": True,
        }
        event = self._raw("llm.agent_interrupt", at, interrupt_id=interrupt_id, content=content, by="operator")
        return json.dumps(frame, ensure_ascii=False), [event]

    def operator_clears(self, at: datetime) -> tuple[str, list[Event]]:
        raise ValueError("Retell's socket has no clear: say something instead (an agent_interrupt cuts in)")

    # -- Retell -> server -----------------------------------------------------------------------

    def _from_retell(self, kind: str, data: dict[str, Any], at: datetime) -> list[Event]:
        if kind == "ping_pong":
            return []
        events: list[Event] = []
        if kind in ("update_only", "response_required", "reminder_required"):
            transcript = data.get("transcript")
            if isinstance(transcript, list):
                events += self._transcript_events(transcript, at)
            turn = _TURNS.get(str(data.get("turntaking")))
            if turn is not None and turn != self._turn:
                self._turn = turn
                events.append(self._raw("llm.turntaking", at, turn=str(data["turntaking"])))
            if kind != "update_only":
                response_id = int(data["response_id"])
                events += self._requested(response_id, at)
                events.append(
                    self._raw(
                        "llm.response_required", at, response_id=response_id, reminder=kind == "reminder_required"
                    )
                )
            return events
        if kind == "call_details":
            call = data.get("call")
            call = call if isinstance(call, dict) else {}
            details = {key: call[key] for key in ("agent_id", "call_status", "call_type") if key in call}
            return [self._raw("llm.call_details", at, **details)]
        return [self._raw("llm.frame", at, interaction_type=kind)]

    def _transcript_events(self, transcript: list[Any], at: datetime) -> list[Event]:
        utterances = [item for item in transcript if isinstance(item, dict)]
        self._transcript = utterances
        events: list[Event] = []
        last = len(utterances) - 1
        for index in range(self._finals, last):  # every utterance before the last is settled
            role = _ROLES.get(str(utterances[index].get("role")), "assistant")
            text = str(utterances[index].get("content") or "")
            events.append(self._final(role, text, at))
        if last >= self._finals:
            self._finals = max(self._finals, last)
            text = str(utterances[last].get("content") or "")
            if text and self._partial != (last, text):
                role = _ROLES.get(str(utterances[last].get("role")), "assistant")
                events.append(TranscriptPartial(at=at, provider=PROVIDER, call_id=self.call_id, role=role, text=text))
                self._partial = (last, text)
            elif self._partial is not None and self._partial[0] < last:
                self._partial = None
        return events

    def _requested(self, response_id: int, at: datetime) -> list[Event]:
        """Retell asks for `response_id`: an older response still streaming (or cut short) was barged in on."""
        events: list[Event] = []
        # Before Retell's first request the server may be streaming its begin message (id 0).
        previous = self._latest_request if self._latest_request is not None else 0
        self._latest_request = response_id
        self._utterances_at_request[response_id] = len(self._transcript)
        superseded = self._responses.get(previous) if previous is not None and previous != response_id else None
        if superseded is not None and superseded.chunks:
            spoken = self._spoken_for(superseded)
            sent = superseded.content
            cut = cut_text(sent, spoken) if spoken is not None else None
            if not superseded.complete or cut is not None:
                self.barge_ins += 1
                events.append(
                    BargeIn(
                        at=at,
                        provider=PROVIDER,
                        call_id=self.call_id,
                        cut_text=cut,
                        source="llm-response-superseded",
                        turn_id=str(superseded.response_id),
                    )
                )
            if not superseded.reported:
                events.append(self._response_event(superseded, at, state="superseded"))
        for old in [rid for rid in self._responses if rid != response_id and self._responses[rid].reported]:
            del self._responses[old]  # keep only what a later frame can still refer to
        return events

    def _spoken_for(self, response: _Response) -> str | None:
        """What the transcript says the agent spoke of `response`: its agent utterances since Retell
        asked for it ("" when none yet); None when the transcript cannot tell."""
        start = response.utterances_before
        if start > len(self._transcript):
            return None
        said = [str(u.get("content") or "") for u in self._transcript[start:] if u.get("role") == "agent"]
        return " ".join(said)

    # -- server -> Retell -----------------------------------------------------------------------

    def _from_server(self, kind: str, data: dict[str, Any], at: datetime) -> list[Event]:
        if kind == "ping_pong":
            return []
        if kind == "response":
            return self._response_chunk(data, at)
        if kind == "agent_interrupt":
            interrupt_id = data.get("interrupt_id")
            if not isinstance(interrupt_id, (int, str)):
                raise ValueError("agent_interrupt without an interrupt_id")
            chunks = self._interrupts.setdefault(interrupt_id, [])
            chunks.append(str(data.get("content") or ""))
            if not data.get("content_complete"):
                return []
            del self._interrupts[interrupt_id]
            return [
                self._raw("llm.agent_interrupt", at, interrupt_id=interrupt_id, content="".join(chunks), by="agent")
            ]
        if kind == "tool_call_invocation":
            arguments = data.get("arguments")
            parsed = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else arguments
            tool_call_id, name = str(data["tool_call_id"]), str(data.get("name") or "unknown")
            self._tool_names[tool_call_id] = name
            return [
                ToolRequested(
                    at=at,
                    provider=PROVIDER,
                    call_id=self.call_id,
                    tool_call_id=tool_call_id,
                    name=name,
                    arguments=parsed if isinstance(parsed, dict) else {"arguments": parsed},
                )
            ]
        if kind == "tool_call_result":
            content = data.get("content")
            text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
            failed = data.get("successful") is False
            return [
                ToolDecided(
                    at=at,
                    provider=PROVIDER,
                    call_id=self.call_id,
                    tool_call_id=str(data["tool_call_id"]),
                    name=self._tool_names.pop(str(data["tool_call_id"]), str(data.get("name") or "unknown")),
                    decision="ran",
                    by="agent",
                    result=None if failed else text,
                    error=text if failed else None,
                )
            ]
        if kind == "config":
            keys = ("auto_reconnect", "call_details", "transcript_with_tool_calls")
            return [self._raw("llm.config", at, **{key: data[key] for key in keys if key in data})]
        if kind == "update_agent":
            config = data.get("agent_config")
            return [self._raw("llm.update_agent", at, agent_config=config if isinstance(config, dict) else {})]
        return [self._raw("llm.frame", at, response_type=kind)]

    def _response_chunk(self, data: dict[str, Any], at: datetime) -> list[Event]:
        response_id = int(data["response_id"])
        content = data.get("content")
        if content is not None and not isinstance(content, str):
            raise ValueError("response content is not text")
        events: list[Event] = []
        if response_id != 0 and self._latest_request is not None and response_id < self._latest_request:
            # Retell drops answers to a superseded request silently; say so once per id.
            if response_id not in self._stale_reported:
                self._stale_reported.add(response_id)
                events.append(
                    self._raw("llm.response_dropped", at, response_id=response_id, latest=self._latest_request)
                )
            if response_id not in self._responses:
                return events
        response = self._responses.get(response_id)
        if response is None:
            response = self._responses[response_id] = _Response(
                response_id, utterances_before=self._utterances_at_request.get(response_id, len(self._transcript))
            )
        if content:
            response.chunks.append(content)
        response.end_call = response.end_call or bool(data.get("end_call"))
        if data.get("content_complete") and not response.complete:
            response.complete = True
            if not response.reported:
                events.append(self._response_event(response, at, state="complete"))
        return events

    def _response_event(self, response: _Response, at: datetime, *, state: str) -> Raw:
        response.reported = True
        extra = {"end_call": True} if response.end_call else {}
        return self._raw(
            "llm.response", at, response_id=response.response_id, content=response.content, state=state, **extra
        )

    # -- helpers ---------------------------------------------------------------------------

    def _final(self, role: Role, text: str, at: datetime) -> TranscriptFinal:
        return TranscriptFinal(at=at, provider=PROVIDER, call_id=self.call_id, role=role, text=text, source=SOURCE)
