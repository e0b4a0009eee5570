"""What screens hand back up to the main screen, as their `dismiss` results: the main
screen, which pushed them, acts on it (selects the call, keeps its control URL)."""

from __future__ import annotations

from dataclasses import dataclass

from console.providers.base import PlacedCall


@dataclass(frozen=True)
class CallDialed:
    """The dial dialog placed a call: the created call as the platform returned it."""

    call: PlacedCall  # carries live URLs: never printed whole
    to: str
    where: str

    @property
    def call_id(self) -> str:
        return self.call.id

    @property
    def control_url(self) -> str | None:
        url = self.call.control_url
        return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


@dataclass(frozen=True)
class ReplayStarted:
    """The History screen started a replay: the main screen follows the replayed call."""

    replay_id: str  # the call id as the replay marks it (REPLAY_MARK + the stored call's id)
