"""What every provider (Vapi, Retell, Twilio) offers the receiver.

A provider is sans-I/O: it verifies a request, parses and normalizes it, and
renders replies. It never touches the network, the store or the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from console.core.events import Event
from console.core.tools import ToolBatch, ToolOutcome
from console.receiver.types import Request, Response


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
