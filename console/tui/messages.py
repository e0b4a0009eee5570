"""What screens hand back up to the main screen, as their `dismiss` results: the main
screen, which pushed them, acts on it (selects the call, keeps its control URL)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CallDialed:
    """The dial dialog placed a call: the created call as the platform returned it."""

    call: dict[str, Any] = field(repr=False)  # carries monitor URLs: never printed whole
    to: str
    where: str

    @property
    def call_id(self) -> str:
        return str(self.call.get("id", "?"))

    @property
    def control_url(self) -> str | None:
        url = (self.call.get("monitor") or {}).get("controlUrl")
        return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


@dataclass(frozen=True)
class ReplayStarted:
    """The History screen started a replay: the main screen follows the replayed call."""

    replay_id: str  # the call id as the replay marks it (REPLAY_MARK + the stored call's id)
