"""Steering a live call: which call, whether its platform can do what is asked, and the platform's
live control opened with what it needs (keys, the call's control URL, its tap).

The TUI's keys (s / n / m / t / ctrl+e) and `voice-console call` (through the running
`serve`'s control API) both come here, so both refuse the same things with the same words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from console.core.calls import CallState, short_id
from console.providers import registry
from console.providers.base import ControlTarget, LiveAction, LiveControl, PlatformError
from console.providers.registry import Control, ProviderSpec

if TYPE_CHECKING:
    from console.config import Settings
    from console.providers.base import LiveTap
    from console.secrets import SecretStore


class CallLookup(Protocol):
    """The calls a receiver tracks (its `CallTracker`, or an attached console's mirror of it)."""

    def get(self, call_id: str) -> CallState | None: ...

    def calls(self) -> list[CallState]: ...


class TapLookup(Protocol):
    """The calls whose socket runs through a tap (the receiver's `LiveTaps`, or what a console knows of them)."""

    def __contains__(self, call_id: str) -> bool: ...

    def get(self, call_id: str) -> LiveTap | None: ...


NO_CONTROL_URL = (
    "No control URL is known for call {call}: Vapi sends it (call.monitor.controlUrl) with status "
    "updates and in the dial answer, when the assistant's monitorPlan.controlEnabled is on."
)
ACTION_NAMES: dict[LiveAction, str] = {
    "say": "Say",
    "add_message": "Adding a message",
    "mute": "Muting the assistant",
    "transfer": "Transfer",
    "end": "Ending the call",
    "cut_off": "Cutting the agent off",
}
TAPPED_SAY_PROMPT = "What the agent says now, word for word (sent through the tap, cutting in):"


class CannotSteer(Exception):
    """The call cannot be steered this way; the message is one sentence for the operator."""


@dataclass(frozen=True)
class Target:
    """A live call to steer: its platform's spec, and its control URL where that platform uses one."""

    call_id: str
    spec: ProviderSpec
    control_url: str | None = field(default=None, repr=False)

    @property
    def control(self) -> Control:
        assert self.spec.control is not None, "a target is made only for a platform with live control"
        return self.spec.control


def _spec(provider: str) -> ProviderSpec | None:
    try:
        return registry.spec(provider)
    except registry.UnknownProvider:
        return None


@dataclass
class LiveCalls:
    """The receiver's live calls, as something to steer."""

    tracker: CallLookup
    taps: TapLookup
    settings: Settings
    secrets: SecretStore
    http_client: Any = None  # an httpx.AsyncClient shared with plain-HTTP controls
    # Keys this run already holds, before the secret store (the demo's simulated platforms', the taps' tokens).
    known: Mapping[str, str] = field(default_factory=dict, repr=False)
    base_urls: Mapping[str, str] = field(default_factory=dict)  # provider -> its API (the demo's simulators)
    # The calls' taps are another process's, which checks them itself (a team's receivers).
    taps_elsewhere = False

    def find(self, call_id_or_prefix: str) -> str:
        """The tracked call an id or unique prefix names; CannotSteer says why not."""
        if self.tracker.get(call_id_or_prefix) is not None:
            return call_id_or_prefix
        # As the console shows ids: Retell's `call_` prefix may be left out.
        matches = [
            state.call_id
            for state in self.tracker.calls()
            if state.call_id.startswith(call_id_or_prefix)
            or state.call_id.removeprefix("call_").startswith(call_id_or_prefix)
        ]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise CannotSteer(f"{len(matches)} calls start with {call_id_or_prefix!r}: give more of the id.")
        raise CannotSteer(f"No call {call_id_or_prefix!r} is tracked by this receiver.")

    def target(self, call_id: str, action: LiveAction) -> Target:
        """How to steer `call_id` for `action`; CannotSteer says why it cannot be."""
        state = self.tracker.get(call_id)
        spec = _spec(state.provider) if state is not None else None
        if state is None:
            raise CannotSteer(f"Call {short_id(call_id)} is no longer tracked.")
        if state.status == "ended":
            raise CannotSteer(f"Call {short_id(call_id)} has ended: there is nothing left to control.")
        if spec is None or spec.control is None:
            able = " and ".join(each.title for each in registry.specs() if each.can_control)
            raise CannotSteer(
                f"Call {short_id(call_id)} came through {state.provider}: live control is a {able} feature."
            )
        if (why := spec.control.unavailable.get(action)) is not None:
            raise CannotSteer(f"{ACTION_NAMES[action]} is not available for a {spec.title} call: {why}.")
        if spec.control.needs_control_url and not state.control_url:
            raise CannotSteer(NO_CONTROL_URL.format(call=short_id(call_id)))
        if action in spec.control.tap_actions and not self.tapped(call_id) and not self.taps_elsewhere:
            raise CannotSteer(
                f"{ACTION_NAMES[action]} needs call {short_id(call_id)}'s stream to run through this console's tap."
            )
        return Target(call_id, spec, state.control_url)

    def tapped(self, call_id: str) -> bool:
        """Whether the call's socket runs through this receiver's tap (say then speaks exact words)."""
        return call_id in self.taps

    def say_prompt(self, target: Target) -> str:
        return TAPPED_SAY_PROMPT if self.tapped(target.call_id) else target.control.say_prompt

    async def open(self, target: Target) -> LiveControl:
        """The platform's live control for the call, opened with the keys it needs (off the loop)."""
        control = target.control
        keys = {}
        for name in control.needs:
            if name in self.known:
                keys[name] = self.known[name]
                continue
            lookup = await self.secrets.aget(name)
            if not lookup.value:
                secret = target.spec.secret(name)
                raise PlatformError(f"no {secret.label} ({(lookup.note or f'set {secret.env}').rstrip('.')})")
            keys[name] = lookup.value
        base_url = self.base_urls.get(target.spec.name) or (
            target.spec.base_url(self.settings) if target.spec.base_url else ""
        )
        return control.open(
            ControlTarget(
                target.call_id,
                target.control_url,
                keys,
                base_url,
                http_client=self.http_client,
                tap=self.taps.get(target.call_id),
                public_url=self.settings.receiver.public_url,
            )
        )
