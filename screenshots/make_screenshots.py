"""Regenerate the screenshots in this folder from the real app running `--demo`.

    python screenshots/make_screenshots.py

Runs the console headless at 160×48 with the in-process simulated platform, a
throw-away history and no keyring, waits until a call has been barged in on and
a tool call is waiting for the operator, and saves:
- main.svg      the main screen (live call, barge-in in the transcript and the timeline, pending approvals)
- compact.svg   the same at 80×24: live calls, the held calls with their countdowns, the keys
- approval.svg  the reject dialog on the pending tool call, countdown running
- edit.svg      the JSON editor for a held call's arguments, checked against the tool's schema
- events.svg    the main screen with the Events pane (every webhook, verdict, reply, timing) in front
- dial.svg      the dial dialog with assistants and numbers from the platform, the number checked
- retell-tap.svg a Retell custom-LLM call through the tap: live transcript, the barge-in on a superseded
                response with its cut text, the LLM server's tool call
- twilio.svg    a Twilio call whose stream runs through the tap: the barge-in and the agent's time-to-stop,
                the operator cutting the agent off (x, ✂)
                measured from the audio
- retell.svg    a Retell demo call selected: its transcript with the barge-in derived from word times
- history.svg   the history screen on the first demo call once it has ended (timeline of the call)
- help.svg      the help screen (every key, by screen)
- attached.svg  a console attached to a running `serve` beside another operator's: the call's tool
                calls decided from both consoles, each with who decided it
- team.svg      a console on the team's Redis: two receivers' calls (which has each), held tool calls
                decided once team-wide by two operators, who is present

`python screenshots/make_screenshots.py team` makes only that one (main, attached, team).
"""

from __future__ import annotations

import asyncio
import os
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
from console.tui.screens.approve import EditArgumentsScreen  # noqa: E402
from console.tui.screens.dial import DialScreen  # noqa: E402
from console.tui.screens.help import HelpScreen  # noqa: E402
from console.tui.screens.history import HistoryScreen  # noqa: E402
from console.tui.widgets.panes import LiveCallsTable  # noqa: E402
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
        started = time.monotonic()
        async with app.run_test(size=SIZE) as pilot:

            def ready() -> bool:
                service = app.service
                return bool(
                    service
                    and service.gate
                    and service.gate.pending()
                    and any(call.barge_ins for call in service.pipeline.tracker.calls())
                )

            await wait_for(pilot, ready, "a barge-in and a pending tool call")
            await pilot.pause(2.0)  # let the countdown run and the stalling mark appear
            print(app.save_screenshot("main.svg", path=str(HERE)))
            await pilot.resize_terminal(80, 24)
            await pilot.pause(1.0)
            print(app.save_screenshot("compact.svg", path=str(HERE)))
            await pilot.resize_terminal(*SIZE)
            await pilot.pause(1.0)
            await pilot.press("r")
            await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), "the reject dialog")
            await pilot.pause(0.3)
            print(app.save_screenshot("approval.svg", path=str(HERE)))
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is app.main, "the main screen")
            await pilot.press("e")
            await wait_for(pilot, lambda: isinstance(app.screen, EditArgumentsScreen), "the edit dialog")
            await pilot.pause(0.3)
            print(app.save_screenshot("edit.svg", path=str(HERE)))
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is app.main, "the main screen")
            await pilot.press("a")  # approve it, as the operator would
            await pilot.press("right_square_bracket")  # Events pane in front (side by side from 160 columns)
            await pilot.pause(0.5)
            print(app.save_screenshot("events.svg", path=str(HERE)))

            await pilot.press("d")
            await wait_for(pilot, lambda: isinstance(app.screen, DialScreen), "the dial dialog")
            await pilot.pause(1.0)  # assistants and numbers load from the simulated platform
            await pilot.press(*"4155550142")  # a national number, checked and formatted as it is typed
            await pilot.pause(0.3)
            print(app.save_screenshot("dial.svg", path=str(HERE)))
            await pilot.press("escape")
            await wait_for(pilot, lambda: app.screen is app.main, "the main screen")

            # The next demo call is a Retell one (the demo alternates), its custom-LLM agent's: the
            # conversation runs through the tap, its barge-in seen live on a superseded response.
            app.dial_demo_call()

            def retell_barge_in(seen: set[str]) -> str | None:
                calls = app.service.pipeline.tracker.calls() if app.service else []
                found = (c.call_id for c in calls if c.provider == "retell" and c.barge_ins and c.call_id not in seen)
                return next(found, None)

            await wait_for(pilot, lambda: retell_barge_in(set()) is not None, "a Retell call through the tap")
            tapped = retell_barge_in(set())
            app.main.query_one(LiveCallsTable).follow(tapped)
            await pilot.pause(1.5)
            print(app.save_screenshot("retell-tap.svg", path=str(HERE)))

            # Then a Twilio call: its stream runs through the tap to the demo's agent, and the barge-in
            # and the agent's time-to-stop come from the audio itself.
            app.dial_demo_call()

            def twilio_barge_in() -> str | None:
                calls = app.service.pipeline.tracker.calls() if app.service else []
                return next((c.call_id for c in calls if c.provider == "twilio" and c.barge_ins), None)

            await wait_for(pilot, lambda: twilio_barge_in() is not None, "a Twilio call with a barge-in")
            twilio_call = twilio_barge_in()
            app.main.query_one(LiveCallsTable).follow(twilio_call)
            # and the operator's own barge-in: x while the agent's next answer plays (✂ in the timeline)
            timeline = app.main.timelines.get(twilio_call)
            barge_ins = len(timeline.barge_ins) if timeline else 0
            await wait_for(
                pilot,
                lambda: (
                    timeline is not None
                    and len(timeline.barge_ins) == barge_ins
                    and timeline.speaking("assistant")
                    and timeline.lanes["assistant"][-1].start > timeline.barge_ins[-1].at
                ),
                "the Twilio agent speaking again",
            )
            await pilot.pause(0.15)
            await pilot.press("x")
            await pilot.pause(1.5)
            print(app.save_screenshot("twilio.svg", path=str(HERE)))

            # Then a Vapi call, then Retell's own-LLM agent: its barge-in comes from the word
            # times of Retell's transcript.
            app.dial_demo_call()
            await pilot.pause(0.5)
            app.dial_demo_call()
            await wait_for(pilot, lambda: retell_barge_in({tapped}) is not None, "a Retell call with a barge-in")
            app.main.query_one(LiveCallsTable).follow(retell_barge_in({tapped}))
            await pilot.pause(1.5)
            print(app.save_screenshot("retell.svg", path=str(HERE)))

            # The first demo call ends after its scenario; its whole timeline is then in the history.
            def ended() -> bool:
                return bool(app.service and any(c.status == "ended" for c in app.service.pipeline.tracker.calls()))

            while not ended():
                if app.service and app.service.gate:
                    for _ in app.service.gate.pending():  # keep approving so the calls can finish
                        await pilot.press("a")
                await wait_for(pilot, lambda: True, "")
                await pilot.pause(0.5)
                if time.monotonic() - started > 240:
                    raise SystemExit("make_screenshots: no demo call ended in time")
            await pilot.press("h")
            await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "the history screen")
            await pilot.pause(1.0)
            await pilot.press("down")  # the older call: the one that ended
            await pilot.pause(1.0)
            print(app.save_screenshot("history.svg", path=str(HERE)))
            await pilot.press("escape")
            await pilot.press("f1")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), "the help screen")
            await pilot.pause(0.3)
            print(app.save_screenshot("help.svg", path=str(HERE)))


def attached() -> None:
    """Two consoles attached to one `serve` (a process of its own, in a throw-away state dir):
    alice's screen once bob decided one of the call's tool calls and she decided the other."""
    import secrets
    import subprocess

    from console.services.serve_state import running_serves

    with tempfile.TemporaryDirectory() as tmp:
        secret = secrets.token_urlsafe(16)
        env = {**os.environ, "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": secret, "VOICE_CONSOLE_DB": f"{tmp}/history.db"}
        env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"
        serve = subprocess.Popen(
            [sys.executable, "-m", "console", "serve", "--port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while not (state := next((s for s in running_serves().live if s.pid == serve.pid), None)):
                if time.monotonic() > deadline:
                    raise SystemExit("make_screenshots: the serve did not start")
                time.sleep(0.1)
            asyncio.run(_two_consoles(state, Path(tmp) / "history.db", secret))
        finally:
            serve.terminate()
            serve.wait(15)


async def _two_consoles(state, db: Path, secret: str) -> None:
    from console.providers.vapi.client import VapiClient
    from console.simulator.vapi import SimulatedPlatform
    from console.tui.demo import demo_scenario
    from console.tui.widgets.panes import FunctionCallsTable

    platform = SimulatedPlatform(
        state.url + "/webhook/vapi", webhook_secret=secret, speed=3.0, scenario=demo_scenario(60)
    )
    await platform.start()
    settings = Settings(storage=StorageSettings(db=db))
    alice = VoiceConsoleApp(Services(settings, attach_to=state, operator="alice@laptop"))
    bob = VoiceConsoleApp(Services(settings, attach_to=state, operator="bob@desk"))
    async with alice.run_test(size=SIZE) as a, bob.run_test(size=SIZE) as b:
        await wait_for(a, lambda: alice.context.attached and bob.context.attached, "both consoles attached")
        async with VapiClient(platform.api_key, base_url=platform.url, max_retries=0) as client:
            number = (await client.list_phone_numbers())[0]["id"]
            assistant = (await client.list_assistants(limit=1))[0]["id"]
            await client.create_phone_call(
                phone_number_id=number, customer_number="+14155550142", assistant_id=assistant
            )
        gate = bob.context.gate
        await wait_for(b, lambda: gate is not None and len(gate.pending()) == 2, "two held tool calls")
        await b.press("a")  # bob approves one
        await wait_for(a, lambda: len(alice.context.gate.pending()) == 1, "alice sees bob's decision")
        await a.press("a")  # alice approves the other
        tools = alice.main.query_one(FunctionCallsTable)
        await wait_for(a, lambda: tools.row_count >= 2, "both decisions on alice's screen")
        await a.pause(2.0)
        print(alice.save_screenshot("attached.svg", path=str(HERE)))
    await platform.close()


def team() -> None:
    """Two receivers (`serve --team`, named rx-east and rx-west) on a `redis-server` of its own, a
    call on each, and two consoles on the team: alice's screen once bob and she each decided one
    of rx-east's held tool calls."""
    import shutil
    import socket
    import subprocess

    if shutil.which("redis-server") is None:
        raise SystemExit("make_screenshots: team.svg needs redis-server (apt-get install redis-server)")
    with tempfile.TemporaryDirectory() as tmp:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            redis_port = probe.getsockname()[1]
        redis = subprocess.Popen(
            ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{redis_port}/0"
        secret = "screenshot-secret"
        receivers = []
        try:
            for name in ("rx-east", "rx-west"):
                config = Path(tmp) / f"{name}.toml"
                config.write_text(f'[team]\ninstance = "{name}"\n')
                env = {
                    **os.environ,
                    "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": secret,
                    "VOICE_CONSOLE_DB": f"{tmp}/{name}.db",
                    "VOICE_CONSOLE_CONFIG": str(config),
                    "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
                }
                proc = subprocess.Popen(
                    [sys.executable, "-m", "console", "serve", "--port", "0", "--team", url],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                assert proc.stderr is not None
                line = proc.stderr.readline()
                receivers.append((proc, line.split("listening on ", 1)[1].split(" ", 1)[0]))
            asyncio.run(_team_consoles(url, [receiver_url for _, receiver_url in receivers], Path(tmp), secret))
        finally:
            for proc, _ in receivers:
                proc.terminate()
                proc.wait(15)
            redis.terminate()
            redis.wait(10)


async def _team_consoles(url: str, receivers: list[str], tmp: Path, secret: str) -> None:
    from console.config import TeamSettings
    from console.providers.vapi.client import VapiClient
    from console.simulator.vapi import SimulatedPlatform
    from console.tui.demo import demo_scenario
    from console.tui.widgets.panes import FunctionCallsTable

    platforms = [
        SimulatedPlatform(receiver + "/webhook/vapi", webhook_secret=secret, speed=3.0, scenario=demo_scenario(60))
        for receiver in receivers
    ]
    for platform in platforms:
        await platform.start()

    def console(operator: str) -> VoiceConsoleApp:
        settings = Settings(storage=StorageSettings(db=tmp / f"{operator}.db"), team=TeamSettings(redis_url=url))
        return VoiceConsoleApp(Services(settings, team=True, operator=operator))

    alice, bob = console("alice@laptop"), console("bob@desk")
    async with alice.run_test(size=SIZE) as a, bob.run_test(size=SIZE) as b:
        await wait_for(a, lambda: alice.context.team and bob.context.team, "both consoles on the team")
        for platform in platforms:
            async with VapiClient(platform.api_key, base_url=platform.url, max_retries=0) as client:
                number = (await client.list_phone_numbers())[0]["id"]
                assistant = (await client.list_assistants(limit=1))[0]["id"]
                await client.create_phone_call(
                    phone_number_id=number, customer_number="+14155550142", assistant_id=assistant
                )
            await asyncio.sleep(1.5)  # the second call starts a little later
        gate = bob.context.gate
        await wait_for(b, lambda: gate is not None and len(gate.pending()) >= 2, "held tool calls")
        await b.press("a")  # bob approves one
        await a.pause(1.0)
        await a.press("a")  # alice approves another
        tools = alice.main.query_one(FunctionCallsTable)
        await wait_for(a, lambda: tools.row_count >= 2, "decisions on alice's screen")
        await wait_for(a, lambda: "with bob@desk" in alice.sub_title, "bob present")
        await a.pause(2.0)
        print(alice.save_screenshot("team.svg", path=str(HERE)))
    for platform in platforms:
        await platform.close()


def own_user_dirs(root: Path) -> None:
    """Every user dir under `root`: never the developer's theme, config or state (the serve's state
    file, and where the console looks for it, included), so every machine makes the same pictures."""
    for name in ("CONFIG", "DATA", "STATE", "CACHE"):
        os.environ[f"XDG_{name}_HOME"] = str(root / name.lower())


if __name__ == "__main__":
    # Names select what to make (main, attached, team); none: everything.
    wanted = set(sys.argv[1:]) or {"main", "attached", "team"}
    with tempfile.TemporaryDirectory() as user_dirs:
        own_user_dirs(Path(user_dirs))
        if "main" in wanted:
            asyncio.run(main())
        if "attached" in wanted:
            attached()
        if "team" in wanted:
            team()
