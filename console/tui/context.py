"""`ConsoleContext`: what the screens and widgets may use of the running console,
handed to them in their constructors (messages up, calls down).

It holds the running receiver (its history store, the call tracker, the tool-call
gate, its HTTP client), the settings, the secret store, the in-process simulated
platform under --demo, the replay controller, and the platform access the dial dialog
and the Assistants pane use. The app fills it as it starts things; screens call down
into it and hand their results back up (`dismiss`, see console/tui/messages.py).
None of them reaches into the app. The receiver's internals are touched here only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from console.config import Settings
from console.core.calls import CallState
from console.core.gate import OperatorDecision, PendingCall
from console.providers import registry
from console.providers.base import PlatformClient
from console.providers.registry import ProviderSpec
from console.providers.retell.checks import LlmTap, tap_url
from console.secrets import SecretStore
from console.services.attach import AttachedReceiver
from console.services.live import LiveCalls
from console.services.receiver import ReceiverService
from console.store.db import Store

if TYPE_CHECKING:
    from console.services.team_console import TeamReceiver
    from console.simulator.vapi import SimulatedPlatform
    from console.tui.replay import ReplayController


@dataclass(frozen=True)
class DialAccess:
    """Where to dial, through which provider, and with which keys (never shown)."""

    provider: ProviderSpec
    keys: Mapping[str, str] = field(repr=False)
    base_url: str
    where: str  # for the operator: "the simulated platform" or the API's URL
    public_url: str | None = None  # where the platform reaches this console (for Twilio's TwiML)

    def client(self, **options: Any) -> PlatformClient:
        dialing = self.provider.dialing
        assert dialing is not None
        if dialing.needs_public_url:
            options["public_url"] = self.public_url
        return dialing.client(self.keys, self.base_url, **options)


@dataclass(frozen=True)
class AssistantAccess:
    """How to reach the assistants: a key and base URL, or why not (`note`)."""

    api_key: str | None
    base_url: str
    public_url: str | None = None
    note: str = ""
    llm_tap: LlmTap | None = None  # where a Retell custom-LLM agent's socket should go


@dataclass(frozen=True)
class NumberAccess:
    """How to reach the Twilio numbers: the account's keys (none: no numbers are listed) and base URL."""

    keys: Mapping[str, str] | None = field(default=None, repr=False)
    base_url: str = ""
    public_url: str | None = None
    voice_twiml: str | None = None  # [twilio] voice_twiml, for the stream check


class GateView(Protocol):
    """The held tool calls as the screens use them: the receiver's own gate, or an attached
    console's view of the `serve`'s (decided through its control API)."""

    def pending(self) -> list[PendingCall]: ...

    def get(self, tool_call_id: str) -> PendingCall | None: ...

    def resolve(self, tool_call_id: str, decision: OperatorDecision) -> bool: ...


def watching_elsewhere(receiver: Any) -> bool:
    """A `serve` attached to or a team's Redis: the receiving happens in other processes."""
    return isinstance(receiver, AttachedReceiver) or getattr(receiver, "team_console", False)


class ConsoleContext:
    """The console's running parts, as the screens see them."""

    def __init__(self, settings: Settings, secrets: SecretStore, replay: ReplayController, *, demo: bool) -> None:
        self.settings = settings
        self.secrets = secrets
        self.replay = replay
        self.demo = demo
        # The receiver in this process, or the `serve` this console is attached to; None until it
        # listens (or the console attached), and after it closed.
        self.receiver: ReceiverService | AttachedReceiver | TeamReceiver | None = None
        self.platform: SimulatedPlatform | None = None  # the simulated Vapi under --demo, once started
        # --demo: provider -> (API key, URL, how the operator is told of it), once started
        # provider -> (its API key, or its keys by name; its URL; what to call it), under --demo
        self.simulated: dict[str, tuple[str | Mapping[str, str], str, str]] = {}

    def attach(self, receiver: ReceiverService | AttachedReceiver | TeamReceiver, settings: Settings) -> None:
        """The receiver listens; `settings` as it started it (the demo may have moved to a free port)."""
        self.receiver = receiver
        self.settings = settings

    # --- the receiver ----------------------------------------------------------------------

    def store(self) -> Store | None:
        """The receiver's history store, None while it starts."""
        return self.receiver.store if self.receiver is not None else None

    @property
    def attached(self) -> bool:
        """Whether this console watches a receiver elsewhere: a `serve` (attached) or a team's (rather
        than receiving in its own process)."""
        return watching_elsewhere(self.receiver)

    @property
    def team(self) -> bool:
        """Whether this console is on a team's Redis (`voice-console --team`)."""
        return getattr(self.receiver, "team_console", False)

    @property
    def operator(self) -> str | None:
        """Who decides from this console, when it is attached (consoles name themselves to each other)."""
        return getattr(self.receiver, "operator", None) if watching_elsewhere(self.receiver) else None

    @property
    def gate(self) -> GateView | None:
        return self.receiver.gate if self.receiver is not None else None

    @property
    def http_client(self) -> httpx.AsyncClient | None:
        return self.receiver.http_client if self.receiver is not None else None

    def live_calls(self) -> list[CallState]:
        """The receiver's tracked calls, then the replayed ones: the rows of Live calls."""
        tracked = self.receiver.tracker.calls() if self.receiver is not None else []
        return [*tracked, *self.replay.calls()]

    def tap_levels(self, call_id: str | None) -> Mapping[str, Sequence[tuple[datetime, float]]] | None:
        """Each side's audio level while the call's stream runs through a tap (None: no audio here)."""
        if self.receiver is None or call_id is None or (relay := self.receiver.taps.get(call_id)) is None:
            return None
        levels = getattr(getattr(relay, "session", None), "levels", None)  # a tap that carries audio keeps them
        return levels if isinstance(levels, Mapping) else None

    def steering(self) -> LiveCalls | None:
        """The receiver's live calls, to steer (None while it starts)."""
        receiver = self.receiver
        if receiver is None:
            return None
        if not isinstance(receiver, ReceiverService):  # attached, or a team's: where the calls are steers
            return receiver.steering(self.settings, self.secrets)  # the `serve` steers: it holds keys and taps
        known = {name: token for name, token in receiver.tap_tokens.items() if token}
        base_urls = {}
        for provider, (key, url, _) in self.simulated.items():  # the demo's platforms, with their made-up keys
            base_urls[provider] = url
            control = registry.spec(provider).control
            if isinstance(key, str):
                known |= dict.fromkeys(control.needs if control else (), key)
            else:
                known |= dict(key)
        return LiveCalls(
            receiver.tracker,
            receiver.taps,
            self.settings,
            self.secrets,
            receiver.http_client,
            known=known,
            base_urls=base_urls,
        )

    def call_state(self, call_id: str) -> CallState | None:
        return self.receiver.tracker.get(call_id) if self.receiver is not None else None

    def learn_control_url(self, call_id: str, url: str) -> None:
        """Keep a call's control URL learnt outside its webhooks (the dial answer)."""
        if self.receiver is not None:
            self.receiver.tracker.note_control_url(call_id, url)

    # --- the platform's API ------------------------------------------------------------------

    async def dial_access(self, provider: str) -> DialAccess | str:
        """The platform API this console may dial `provider`'s calls through, or why there is none (one paragraph)."""
        spec = registry.spec(provider)
        if spec.dialing is None or spec.base_url is None:
            return f"{spec.title} calls cannot be dialed from this console."
        receiver_url = self.receiver.url if self.receiver is not None else None
        if self.demo and provider in self.simulated:
            api_key, url, described = self.simulated[provider]
            keys = dict(api_key) if isinstance(api_key, Mapping) else dict.fromkeys(spec.dialing.needs, api_key)
            return DialAccess(spec, keys, url, f"{described} (demo)", receiver_url)
        if self.demo and self.receiver is None:
            return "The simulated platform is still starting; try again in a moment."
        keys = {}
        for name in spec.dialing.needs:
            lookup = await self.secrets.aget(name)  # the keyring may block: off the loop, with a timeout
            if not lookup.value:  # the note already says where a key may come from: say it once
                secret = spec.secret(name)
                why = (lookup.note or f"not set: use {secret.env} or the OS keyring").rstrip(".")
                return f"No {secret.label}, so nothing can be dialed ({why}). Press k to store one on the keys screen."
            keys[name] = lookup.value
        for name in spec.dialing.optional:
            if value := (await self.secrets.aget(name)).value:
                keys[name] = value
        base_url = spec.base_url(self.settings)
        return DialAccess(spec, keys, base_url, base_url, self.settings.receiver.public_url)

    async def assistant_access(self) -> AssistantAccess:
        """Where the Assistants pane lists from: the simulator under --demo, else Vapi with the stored key."""
        public_url = self.settings.receiver.public_url
        if self.platform is not None:
            receiver = self.receiver.url if self.receiver is not None else None
            return AssistantAccess(self.platform.api_key, self.platform.url, public_url or receiver)
        if self.demo:
            return AssistantAccess(None, "", note="The simulated platform is starting…")
        key = await self.secrets.aget("vapi_api_key")
        note = "No Vapi API key: store one with `voice-console keys set vapi` or set VOICE_CONSOLE_VAPI_API_KEY."
        if key.note and not key.note.startswith("not set"):  # the keyring itself failed: say how
            note += f" ({key.note.rstrip('.')})"
        return AssistantAccess(key.value, self.settings.vapi.base_url, public_url, note=note)

    async def number_access(self) -> NumberAccess:
        """Where the Assistants pane lists Twilio numbers from: the simulated Twilio under --demo, else
        Twilio with the stored account SID and auth token (without both: none are listed)."""
        public_url = self.settings.receiver.public_url
        receiver = self.receiver.url if self.receiver is not None else None
        twiml = self.settings.twilio.voice_twiml
        if self.demo:
            simulated = self.simulated.get("twilio")
            if simulated is None or isinstance(simulated[0], str):
                return NumberAccess()
            return NumberAccess(dict(simulated[0]), simulated[1], public_url or receiver, twiml)
        sid, token = await self.secrets.aget("twilio_account_sid"), await self.secrets.aget("twilio_auth_token")
        if not sid.value or not token.value:
            return NumberAccess()
        keys = {"twilio_account_sid": sid.value, "twilio_auth_token": token.value}
        return NumberAccess(keys, self.settings.twilio.base_url, public_url, twiml)

    async def agent_access(self) -> AssistantAccess:
        """Where the Assistants pane lists Retell agents from: the simulated Retell under --demo,
        else Retell with the stored key (no key: none are listed, and nothing is said)."""
        public_url = self.settings.receiver.public_url
        receiver = self.receiver.url if self.receiver is not None else None
        token = self.receiver.tap_tokens.get("retell_llm_token") if self.receiver is not None else None
        if self.demo:
            if "retell" not in self.simulated:
                return AssistantAccess(None, "")
            api_key, url, _ = self.simulated["retell"]
            tap = LlmTap(tap_url(public_url or receiver, token), self.settings.retell.llm_forward_to)
            simulated_key = api_key if isinstance(api_key, str) else api_key.get("retell_api_key")
            return AssistantAccess(simulated_key, url, public_url or receiver, llm_tap=tap)
        key = await self.secrets.aget("retell_api_key")
        tap = LlmTap(tap_url(public_url, token), self.settings.retell.llm_forward_to)
        return AssistantAccess(key.value, self.settings.retell.base_url, public_url, llm_tap=tap)
