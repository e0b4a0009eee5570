"""A small real agent behind Twilio's `<Connect><Stream>`, and the call that cuts it off: shared by
the stream-tap tests and the attached console's tests."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from console.providers.twilio.stream import ulaw_rms
from console.simulator.scenarios import EndStep, SayStep, Scenario, SilenceStep
from console.simulator.twilio import _TRACKS

TOKEN = "stream-tap-token-0123456789"
VOICED = _TRACKS["outbound"][1]  # 20 ms of the agent's voice each
# The caller starts talking half a second after answering, while the agent's 2 s greeting plays.
CUT_IN = Scenario(
    name="cut-in",
    words_per_second=4,
    steps=[
        SilenceStep(kind="silence", seconds=0.5, pause=0),
        SayStep(kind="say", role="user", text="wait wait I have a question about my booking", pause=0),
        EndStep(kind="end", pause=0.3),
    ],
)


class Agent:
    """The user's agent behind `<Connect><Stream>`: 2 s of greeting queued at once with a mark per half
    second, then listening; `clears` agents send `clear` after 60 ms of the caller's voice."""

    def __init__(self, *, clears: bool) -> None:
        self.clears = clears
        self.received: list[str] = []
        self.sent: list[str] = []
        self.cleared_at: datetime | None = None

    async def __call__(self, ws) -> None:
        loud = 0
        async for message in ws:
            self.received.append(message)
            frame = json.loads(message)
            if frame.get("event") == "start":
                sid = frame["streamSid"]
                for index in range(100):
                    await self._send(ws, {"event": "media", "streamSid": sid, "media": {"payload": VOICED[index % 10]}})
                    if index % 25 == 24:
                        await self._send(
                            ws, {"event": "mark", "streamSid": sid, "mark": {"name": f"part-{index // 25 + 1}"}}
                        )
            elif frame.get("event") == "media" and self.clears and self.cleared_at is None:
                loud = loud + 1 if ulaw_rms(base64.b64decode(frame["media"]["payload"])) > 700 else 0
                if loud >= 3:
                    self.cleared_at = datetime.now(UTC)
                    await self._send(ws, {"event": "clear", "streamSid": frame["streamSid"]})

    async def _send(self, ws, frame: dict) -> None:
        text = json.dumps(frame, separators=(",", ":"))
        self.sent.append(text)
        await ws.send(text)
