"""What every provider (Vapi, Retell, Twilio) offers the receiver.

A provider is sans-I/O: it verifies a request, parses and normalizes it, and
renders replies. It never touches the network, the store or the UI.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol

from console.core.events import Event
from console.core.http_types import Request, Response
from console.core.tools import ToolBatch, ToolOutcome


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking a request's authentication.

    `reason` explains a failure for humans and the rejected-requests table; it
    never contains a secret or the expected signature.
    """

    ok: bool
    scheme: str  # "secret", "bearer", "hmac", "none", "retell-signature", "twilio-signature", "twilio-shared-key"
    reason: str = ""

    @classmethod
    def passed(cls, scheme: str) -> Verdict:
        return cls(True, scheme)

    @classmethod
    def failed(cls, scheme: str, reason: str) -> Verdict:
        return cls(False, scheme, reason)


class BadPayload(ValueError):
    """The body cannot be understood at all (not JSON, not the envelope) -> 400."""


@dataclass
class Inbound:
    """What a provider made of one authenticated delivery."""

    provider: str
    message_type: str  # the provider's own type, e.g. "tool-calls", "call_ended", "voice"
    call_id: str | None
    at: datetime  # the message's own timestamp (receipt time if it has none), UTC
    events: list[Event] = field(default_factory=list)
    # Set when the platform waits for tool results: the handler decides, then
    # `tool_reply` renders the answer.
    tool_batch: ToolBatch | None = None
    # Set when the answer comes from config (assistant-request, call_inbound,
    # TwiML, ...) or is a plain acknowledgement. None with no tool_batch means
    # the provider's default acknowledgement.
    reply: Response | None = None
    # Stable identity of this delivery for de-duplicating repeats (None: use the body hash).
    dedupe_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class WebhookProvider(Protocol):
    name: str

    def verify(self, route: str, request: Request) -> Verdict:
        """Check the request's authentication over the raw body bytes, constant-time."""
        ...

    def parse(self, route: str, request: Request, received_at: datetime) -> Inbound:
        """Parse and normalize; raise BadPayload when the body cannot be understood."""
        ...

    def tool_reply(self, batch: ToolBatch, outcomes: list[ToolOutcome]) -> Response:
        """Render the platform's reply for decided tool calls (always a valid shape)."""
        ...

    def ack(self, inbound: Inbound) -> Response:
        """The acknowledgement for a delivery that needs no answer."""
        ...


class StreamSession(Protocol):
    """One live WebSocket the platform streams a call on (Twilio Media Streams): frames in, events out."""

    def feed(self, text_frame: str | bytes, received_at: datetime) -> list[Event]: ...


# Which side of a tapped socket a frame came from: the platform's, or the user's own agent server's.
TapSide = Literal["platform", "agent"]


class TapSession(Protocol):
    """One live socket the console relays between the platform and the user's agent server (Retell's
    custom-LLM socket): every frame passes unchanged; the session only watches (sans-I/O)."""

    call_id: str
    side_names: ClassVar[dict[TapSide, str]]  # who sends on each side, for people ("Twilio", "the agent")

    def seen(self, side: TapSide, frame: str | bytes, received_at: datetime) -> list[Event]:
        """What `frame`, already relayed, shows (malformed frames are counted, never raised)."""
        ...

    def closed(self, side: TapSide | None, code: int, reason: str, at: datetime) -> list[Event]:
        """The socket is over: `side` closed it (None: the tap, e.g. the agent server was unreachable)."""
        ...

    def stalled(self, side: TapSide, waited_s: float, at: datetime) -> list[Event]:
        """`side` is not reading: a frame for it has waited `waited_s` to be passed on (the other side
        is held back meanwhile)."""
        ...

    def operator_says(self, content: str, at: datetime) -> tuple[str, list[Event]]:
        """The frame that makes the platform speak `content` now, and the events recording it;
        ValueError when the platform's socket cannot."""
        ...

    def operator_clears(self, at: datetime) -> tuple[str, list[Event]]:
        """The frame that cuts the agent off now (Twilio's `clear`); ValueError when there is none."""
        ...


# -- placing calls (`voice-console dial`, the dial dialog) -----------------------------------


class PlatformError(Exception):
    """A platform's REST API failed; the text is one readable line without secrets."""


@dataclass(frozen=True)
class Agent:
    """An assistant (Vapi) or agent (Retell) a call can be placed with."""

    id: str
    name: str


@dataclass(frozen=True)
class PhoneLine:
    """One of the account's phone numbers a call can be placed from."""

    id: str
    number: str  # E.164 (or a SIP URI), as the platform keeps it
    name: str = ""


@dataclass(frozen=True)
class PlacedCall:
    """A call the platform created. `raw` is its answer: it may carry live URLs, never print it whole."""

    id: str
    status: str
    control_url: str | None = None
    listen_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


class PlatformClient(Protocol):
    """What dialing needs of a platform's REST API (an async context manager)."""

    async def __aenter__(self) -> PlatformClient: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def agents(self, limit: int = 100) -> list[Agent]: ...

    async def phone_lines(self, limit: int = 100) -> list[PhoneLine]: ...

    async def place_call(self, *, to: str, line_id: str, agent_id: str) -> PlacedCall: ...


# -- steering a live call (the console's s / n / m / t / ctrl+e) ------------------------------

# What a live call can be asked to do; a platform that cannot do one says why (`Control.unavailable`).
LiveAction = Literal["say", "add_message", "mute", "transfer", "end", "cut_off"]


@dataclass(frozen=True)
class ControlTarget:
    """Everything a platform's live control may need for one call (its capability URL for Vapi,
    the REST key and base URL for Retell)."""

    call_id: str
    control_url: str | None = field(default=None, repr=False)
    keys: Mapping[str, str] = field(default_factory=dict, repr=False)
    base_url: str = ""
    http_client: Any = None  # an httpx.AsyncClient to share, when the platform's control is plain HTTP
    tap: LiveTap | None = None  # the call's tapped socket, when it runs through this receiver
    public_url: str | None = None  # where the platform reaches this console (Twilio's TwiML points back here)


class LiveTap(Protocol):
    """A call's socket relayed by this receiver, as live control sees it."""

    async def say(self, content: str) -> None:
        """Make the platform speak `content` now (sent on the platform's side of the relay)."""
        ...

    async def cut_off(self) -> None:
        """Cut the agent off now: drop what the platform still has to play of it."""
        ...


class LiveControl(Protocol):
    """One live call's controls (an async context manager); failures raise `PlatformError`."""

    async def __aenter__(self) -> LiveControl: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    async def say(self, content: str) -> Any: ...

    async def add_message(self, role: Any, content: str, *, trigger_response: bool = True) -> Any: ...

    async def mute_assistant(self) -> Any: ...

    async def unmute_assistant(self) -> Any: ...

    async def transfer(self, *, number: str) -> Any: ...

    async def end_call(self) -> Any: ...

    async def cut_off(self) -> Any:
        """The operator's own barge-in: drop what the agent still has queued to say."""
        ...
