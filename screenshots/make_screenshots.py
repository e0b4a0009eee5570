"""Regenerate the screenshots in this folder from the real app running `--demo`.

    python screenshots/make_screenshots.py

Runs the console headless at 160×48 with the in-process simulated platform, a
throw-away history and no keyring, waits until a call has been barged in on and
a tool call is waiting for the operator, and saves:
- main.svg      the main screen (live call, barge-in in the transcript, pending approvals)
- approval.svg  the reject dialog on the pending tool call, countdown running
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import keyring
import keyring.backends.null

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from console.config import ReceiverSettings, Settings, StorageSettings  # noqa: E402
from console.secrets import SecretStore  # noqa: E402
from console.tui.app import Services, VoiceConsoleApp  # noqa: E402
from console.tui.demo import DEMO_POLICY  # noqa: E402
from console.tui.widgets.prompt import PromptScreen  # noqa: E402

SIZE = (160, 48)


async def wait_for(pilot, condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"make_screenshots: timed out waiting for {what}")
        await pilot.pause(0.1)


async def main() -> None:
    keyring.set_keyring(keyring.backends.null.Keyring())  # never the developer's keyring
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(receiver=ReceiverSettings(port=0), storage=StorageSettings(db=Path(tmp) / "history.db"))
        app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={}), demo=True, policy=DEMO_POLICY))
        async with app.run_test(size=SIZE) as pilot:
            def ready() -> bool:
                service = app.service
                return bool(service and service.gate and service.gate.pending()
                            and any(call.barge_ins for call in service.pipeline.tracker.calls()))

            await wait_for(pilot, ready, "a barge-in and a pending tool call")
            await pilot.pause(2.0)  # let the countdown run and the stalling mark appear
            print(app.save_screenshot("main.svg", path=str(HERE)))
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), "the reject dialog")
            await pilot.pause(0.3)
            print(app.save_screenshot("approval.svg", path=str(HERE)))
            await pilot.press("escape")


if __name__ == "__main__":
    asyncio.run(main())
