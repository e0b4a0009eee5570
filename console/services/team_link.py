"""A receiver in the team (`serve --team`, and the console's own receiver with a team set): what it
records is published to the team's Redis, its held tool calls are kept there and decided once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from console.config import Settings

if TYPE_CHECKING:
    from console.services.receiver import ReceiverService
    from console.services.team import TeamPublisher

# On a clean stop, how long the team link may take to publish what still waits.
TEAM_DRAIN_S = 3.0


class TeamLink:
    def __init__(self, publisher: TeamPublisher, tasks: list[asyncio.Task[None]]) -> None:
        self.publisher = publisher
        self._tasks = tasks

    @property
    def instance(self) -> str:
        return self.publisher.instance

    @classmethod
    def start(cls, settings: Settings, service: ReceiverService, note: Callable[[str], None]) -> TeamLink | None:
        """None without a team: single-machine use never touches Redis (nor imports redis-py)."""
        if not settings.team.redis_url:
            return None
        from console.services.team import TeamPublisher, default_instance
        from console.services.team_gate import TeamGateLink

        instance = settings.team.instance or default_instance(service.server.port)
        publisher = TeamPublisher(
            settings.team, instance, {"url": service.server.url}, note=note, call_state=service.tracker.get
        )
        service.pipeline.to_team = publisher.recorded
        service.pipeline.to_team_delivery = publisher.delivered
        tasks = [asyncio.create_task(publisher.run(), name="team-publisher")]
        if service.steering is not None:  # live control of its calls from the team's consoles
            from console.services.team_control import TeamControlServer

            control = TeamControlServer(settings.team, instance, service.steering, service.redactor, note=note)
            tasks.append(asyncio.create_task(control.run(), name="team-control"))
        if service.gate is not None:
            gate_link = TeamGateLink(settings.team, instance, service.gate, note=note)
            service.decisions.team = gate_link
            tasks.append(asyncio.create_task(gate_link.run(), name="team-gate"))
        return cls(publisher, tasks)

    async def stop(self, note: Callable[[str], None]) -> None:
        """Give what waits a moment to reach Redis; what cannot is still in the receiver's history."""
        publisher = self.publisher
        if publisher.link.up:
            try:
                await asyncio.wait_for(publisher.empty.wait(), TEAM_DRAIN_S)
            except TimeoutError:
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if publisher.backlog or publisher.dropped:
            note(
                f"{publisher.backlog + publisher.dropped} events did not reach the team's Redis "
                "(they are in this receiver's history)"
            )
