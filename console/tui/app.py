"""The operator console: `VoiceConsoleApp` runs the receiver (and, with --demo, the
simulated platform) in its own event loop and wires the parts together; the main
screen (console/tui/main_screen.py) shows them.

Data flow: the receiver calls `Feed.events_in` and `Feed.deliveries_in` / the gate
calls `Feed.gate_in` (cheap appends, in the loop); `MainScreen` drains the feed every
50 ms and updates its models and widgets in one batch. Screens get the running parts
through `ConsoleContext` (console/tui/context.py), which the app fills as it starts them.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets as token_source
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding

from console.config import Settings
from console.core.events import Event
from console.core.policy import Policy
from console.heap import settle_after_start
from console.providers.retell.client import RetellClient, RetellError
from console.providers.twilio.client import TwilioClient, TwilioError
from console.providers.twilio.provider import stream_twiml
from console.providers.vapi.client import VapiClient, VapiError
from console.secrets import SecretLookup, SecretStore
from console.services.attach import AttachedReceiver, AttachFailed, Consumers
from console.services.pipeline import DeliverySeen
from console.services.receiver import ReceiverService, listen_failure
from console.services.receiver_process import default_operator, stop_serve, yield_cpu_to_the_receiver
from console.services.serve_state import ServeState
from console.services.team_link import TeamLink
from console.simulator.retell import LLM_AGENT_ID as RETELL_LLM_AGENT_ID
from console.simulator.retell import SimulatedRetell
from console.simulator.retell_llm import LlmServer
from console.simulator.twilio import ACCOUNT_SID as TWILIO_ACCOUNT_SID
from console.simulator.twilio import SimulatedAgent, SimulatedTwilio
from console.simulator.vapi import SimulatedPlatform
from console.tui.commands import ConsoleCommands
from console.tui.context import ConsoleContext
from console.tui.demo import DEMO_INTERVAL_S, DEMO_TOOL_TIMEOUT_S, demo_scenario, lengthen_server_timeouts
from console.tui.feed import Feed
from console.tui.main_screen import MainScreen
from console.tui.replay import ReplayController
from console.tui.screens.help import HelpScreen
from console.tui.screens.stop_receiver import StopReceiverScreen
from console.tui.strips import keep_strips_acyclic
from console.tui.themes import AppThemes
from console.tui.widgets.panes import short_id

log = logging.getLogger(__name__)

DEMO_CUSTOMER = "+14155550142"

keep_strips_acyclic()  # most of a busy console's cyclic garbage was Textual's strips (console/tui/strips.py)


# --- services ---------------------------------------------------------------------------------


@dataclass
class Services:
    """Everything the app starts, passed in so tests run the real thing on loopback."""

    settings: Settings
    secret_store: SecretStore | None = None  # None: the default store (env, then keyring)
    demo: bool = False
    demo_interval_s: float = DEMO_INTERVAL_S  # a new demo call this often (the first one at once)
    demo_speed: float = 3.0  # scenario time compression: a tool call waits ~8 s after the dial
    demo_tool_timeout_s: float = DEMO_TOOL_TIMEOUT_S  # the demo assistant's tools' server.timeoutSeconds
    policy: Policy = field(default_factory=lambda: Policy.default("hold"))
    theme: str | None = None  # --theme: this run only; else the one chosen last time
    busy_port: int | None = None  # set when the demo found its configured port taken
    llm_server: LlmServer | None = None  # the demo's custom-LLM server, behind the tap
    stream_agent: SimulatedAgent | None = None  # the demo's agent behind Twilio's streams, behind the tap
    # Attached to a running `serve` (its state file) instead of receiving in this process.
    attach_to: ServeState | None = None
    # On the team's Redis (`--team`): every receiver's calls, decided once team-wide.
    team: bool = False
    operator: str = ""  # who decides from this console, as other consoles see it
    receiver_started_here: bool = False  # the console started that `serve` (stop_receiver_on_exit applies)
    stop_receiver_on_exit: bool = False
    # Attached, lower this process's CPU priority (`voice-console` does; a test's process, where
    # many apps come and go, does not).
    yield_cpu_when_attached: bool = False

    async def secrets(self) -> dict[str, SecretLookup]:
        # The demo keeps nothing: its tap token, like its other secrets, lasts one run.
        found = await (self.secret_store or SecretStore()).aget_all(make_missing=not self.demo)
        if self.demo:  # the in-process platforms and the receiver share fresh secrets
            found["vapi_webhook_secret"] = SecretLookup("vapi_webhook_secret", token_source.token_urlsafe(24), "env")
            # Retell signs its webhooks with its API key: the simulated Retell's key, made up here.
            found["retell_api_key"] = SecretLookup("retell_api_key", token_source.token_urlsafe(24), "env")
            # The simulated custom-LLM agent reaches the tap with it.
            found["retell_llm_token"] = SecretLookup("retell_llm_token", token_source.token_urlsafe(24), "env")
            # The simulated Twilio signs with its auth token; its calls' streams reach the tap with this.
            for name in ("twilio_auth_token", "twilio_stream_token"):
                found[name] = SecretLookup(name, token_source.token_urlsafe(24), "env")
            found["twilio_account_sid"] = SecretLookup("twilio_account_sid", TWILIO_ACCOUNT_SID, "env")
        return found

    async def start_receiver(
        self,
        secrets: dict[str, SecretLookup],
        on_events: Callable[[list[Event]], None],
        on_delivery: Callable[[DeliverySeen], None] | None = None,
    ) -> ReceiverService:
        """The receiver on the configured port; the demo, which needs no particular port,
        takes a free one when that is busy (a `serve` running) and sets `busy_port`. The demo's
        tap relays to a small custom-LLM server of its own unless one is configured."""
        if self.demo and not self.settings.retell.llm_forward_to:
            self.llm_server = await LlmServer(chunk_delay_s=0.6 / self.demo_speed).__aenter__()
            retell = self.settings.retell.model_copy(update={"llm_forward_to": self.llm_server.url})
            self.settings = self.settings.model_copy(update={"retell": retell})
        if self.demo and not self.settings.twilio.stream_forward_to:
            # Its Twilio calls' streams go to an agent that stops when cut in on, then one that does not.
            self.stream_agent = await SimulatedAgent(stops_on_barge_in=None).__aenter__()
            twilio = self.settings.twilio.model_copy(update={"stream_forward_to": self.stream_agent.url})
            self.settings = self.settings.model_copy(update={"twilio": twilio})
        try:
            return await ReceiverService.start(
                self.settings,
                secrets,
                on_events=on_events,
                on_delivery=on_delivery,
                policy=self.policy,
                secret_store=self.secret_store,
            )
        except OSError as exc:
            if not self.demo or exc.errno != errno.EADDRINUSE or self.settings.receiver.port == 0:
                raise
        self.busy_port = self.settings.receiver.port
        receiver = self.settings.receiver.model_copy(update={"port": 0})
        self.settings = self.settings.model_copy(update={"receiver": receiver})
        return await ReceiverService.start(
            self.settings,
            secrets,
            on_events=on_events,
            on_delivery=on_delivery,
            policy=self.policy,
            secret_store=self.secret_store,
        )

    async def start_platform(self, receiver: ReceiverService, secrets: dict[str, SecretLookup]) -> SimulatedPlatform:
        platform = SimulatedPlatform(
            receiver.server.url + "/webhook/vapi",
            webhook_settings=self.settings.vapi,
            webhook_secret=secrets["vapi_webhook_secret"].value,
            speed=self.demo_speed,
            scenario=demo_scenario(self.demo_tool_timeout_s),
            port=0,
        )
        # As the operator of a real assistant may: its tools get more time than Vapi's default 20 s.
        lengthen_server_timeouts(
            [platform.assistants, platform.tools, platform.phone_numbers], self.demo_tool_timeout_s
        )
        await platform.start()
        return platform

    async def start_twilio_platform(
        self, receiver: ReceiverService, secrets: dict[str, SecretLookup]
    ) -> SimulatedTwilio:
        """The simulated Twilio under --demo: its calls' status callbacks and streams come to the receiver."""
        token = secrets["twilio_auth_token"].value
        assert token is not None
        platform = SimulatedTwilio(
            auth_token=token, speed=self.demo_speed, scenario=demo_scenario(self.demo_tool_timeout_s)
        )
        await platform.start()
        return platform

    async def start_retell_platform(
        self, receiver: ReceiverService, secrets: dict[str, SecretLookup]
    ) -> SimulatedRetell:
        """The simulated Retell under --demo: its calls play into the receiver, signed with its key."""
        key = secrets["retell_api_key"].value
        token = secrets["retell_llm_token"].value
        assert key is not None
        platform = SimulatedRetell(
            receiver.server.url + "/webhook/retell",  # as an agent's webhook_url is set for this console
            api_key=key,
            speed=self.demo_speed,
            scenario=demo_scenario(self.demo_tool_timeout_s),
            # as a custom-LLM agent's llm_websocket_url is set for this console's tap
            llm_websocket_url=f"ws://127.0.0.1:{receiver.server.port}/llm/retell/{token}",
        )
        await platform.start()
        return platform


# --- the app ----------------------------------------------------------------------------------


class VoiceConsoleApp(App[None]):
    CSS_PATH = Path(__file__).with_name("app.tcss")
    TITLE = "voice-console"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("f1", "help", "Help"),
        Binding("question_mark", "help", "Help", show=False),
        # While a replay plays (hidden otherwise, see check_action):
        Binding("space", "replay_pause", "Pause replay"),
        Binding("plus,equals_sign", "replay_speed(1)", "Faster"),
        Binding("minus", "replay_speed(-1)", "Slower"),
        Binding("x", "replay_stop", "Stop replay"),
    ]
    COMMANDS = {ConsoleCommands}

    def __init__(self, services: Services) -> None:
        super().__init__()
        self._services = services  # what to start, and how
        self.themes = AppThemes(services.theme)
        self.themes.install(self)
        self.feed = Feed()
        self.replay = ReplayController(self, self.feed)
        self.context = ConsoleContext(
            services.settings, services.secret_store or SecretStore(), self.replay, demo=services.demo
        )
        self.main = MainScreen(self.feed, self.context)
        self._phone_number_id: str | None = None
        self._assistant_id: str | None = None
        self._retell: SimulatedRetell | None = None  # the simulated Retell under --demo
        self._twilio: SimulatedTwilio | None = None  # the simulated Twilio under --demo
        self._stream_token: str | None = None
        self._demo_dials = 0
        self._team_link: TeamLink | None = None  # this console's own receiver in a team (--no-attach)

    @property
    def service(self) -> ReceiverService | None:
        """The receiver running in this process (None while it starts, once closed, and when attached)."""
        receiver = self.context.receiver
        return receiver if isinstance(receiver, ReceiverService) else None

    @property
    def platform(self) -> SimulatedPlatform | None:
        """The simulated Vapi platform under --demo, once started."""
        return self.context.platform

    def on_mount(self) -> None:
        self.sub_title = "starting…"
        self.themes.start(self)
        self.push_screen(self.main)
        self.start_services()

    @work(exclusive=True, group="services", exit_on_error=False)
    async def start_services(self) -> None:
        services = self._services
        settings = services.settings
        if services.attach_to is not None:
            await self._attach_to_serve(services.attach_to)
            return
        if services.team:
            await self._attach_to_team()
            return
        secrets = await services.secrets()
        try:
            receiver = await services.start_receiver(secrets, self.feed.events_in, self.feed.deliveries_in)
        except OSError as exc:
            self.exit(
                return_code=1,
                message=f"voice-console: {listen_failure(settings.receiver.host, settings.receiver.port, exc)}",
            )
            return
        settings = services.settings  # the demo may have moved to a free port
        if receiver.gate is not None:
            receiver.gate.subscribe(self.feed.gate_in)
        self.context.attach(receiver, settings)
        if not services.demo:  # a team set and --no-attach: this console's receiver publishes to it
            team = settings.team.with_password(secrets["team_redis_password"].value)
            self._team_link = TeamLink.start(settings.model_copy(update={"team": team}), receiver, self.feed.note)
            if self._team_link is not None:
                self.feed.note(f"team {settings.team.name!r}: this receiver publishes as {self._team_link.instance}")
        for warning in receiver.warnings:
            self.feed.note(f"warning: {warning}")
        self.sub_title = f"receiver {receiver.server.url} · history {settings.db_path}"
        if services.demo:
            platform = self.context.platform = await services.start_platform(receiver, secrets)
            self.context.simulated["vapi"] = (platform.api_key, platform.url, "the simulated platform")
            self._retell = await services.start_retell_platform(receiver, secrets)
            self.context.simulated["retell"] = (self._retell.api_key, self._retell.url, "the simulated Retell platform")
            self._twilio = await services.start_twilio_platform(receiver, secrets)
            twilio_keys = {"twilio_account_sid": self._twilio.account_sid, "twilio_auth_token": self._twilio.auth_token}
            self.context.simulated["twilio"] = (twilio_keys, self._twilio.url, "the simulated Twilio platform")
            self._stream_token = secrets["twilio_stream_token"].value
            self.sub_title = f"DEMO · simulated platform {platform.url} · receiver {receiver.server.url}"
            self.feed.note(
                f"demo: simulated Vapi platform on {platform.url}; a call every {services.demo_interval_s:g} s"
            )
            if services.busy_port is not None:
                moved = (
                    f"Port {services.busy_port} is in use (by `voice-console serve`?), so the demo's "
                    f"receiver listens on {receiver.server.url} instead."
                )
                self.feed.note(f"demo: {moved}")
                self.notify(moved, title="Demo", markup=False, timeout=10)
            self.dial_demo_call()
            self.set_interval(services.demo_interval_s, self.dial_demo_call)
        self.main.services_started()
        # Over 120 s at 100 calls: no full collection instead of 10, key-press p99 98 -> 80 ms
        # (bench/tui_load.py --young-collection-after).
        settle_after_start()

    async def _attach_to_serve(self, state: ServeState) -> None:
        """Watch and decide through the `serve` running on this machine: it keeps receiving when this closes."""
        services = self._services
        feed = self.feed
        try:
            receiver = await AttachedReceiver.attach(
                state,
                services.operator or default_operator(),
                Consumers(feed.events_in, feed.gate_in, feed.deliveries_in, feed.note),
            )
        except AttachFailed as exc:
            self.exit(return_code=1, message=f"voice-console: {exc}")
            return
        settings = services.settings
        if db := receiver.receiver.get("db"):  # the history is the receiver's, wherever it keeps it
            settings = settings.model_copy(update={"storage": settings.storage.model_copy(update={"db": Path(db)})})
        self.context.attach(receiver, settings)
        if services.yield_cpu_when_attached:
            yield_cpu_to_the_receiver()  # the UI must never delay a platform's answer
        how = "receiver started by this console" if services.receiver_started_here else "receiver already running"
        feed.note(f"{how}: attached as {receiver.operator} (pid {state.pid}, {receiver.url})")
        self._show_attachment()
        self.set_interval(1.0, self._show_attachment)
        self.main.services_started()
        settle_after_start()

    async def _attach_to_team(self) -> None:
        """Watch and decide on the team's Redis: every receiver's calls; this console receives nothing."""
        from console.services.team_console import TeamReceiver  # redis-py: only in team mode

        services = self._services
        settings = services.settings
        feed = self.feed
        password = (await services.secrets()).get("team_redis_password")
        team = settings.team.with_password(password.value if password else None)
        # The team's events in a history of their own (the history browser reads it), beside this machine's.
        replica = settings.db_path.with_name(f"team-{team.name}.db")
        try:
            receiver = await TeamReceiver.attach(
                team,
                services.operator or default_operator(),
                Consumers(feed.events_in, feed.gate_in, feed.deliveries_in, feed.note),
                replica,
            )
        except AttachFailed as exc:
            self.exit(return_code=1, message=f"voice-console: {exc}")
            return
        storage = settings.storage.model_copy(update={"db": replica})
        self.context.attach(receiver, settings.model_copy(update={"storage": storage}))
        feed.note(f"on {receiver.url} as {receiver.operator}; the team's history is kept in {replica}")
        self._show_attachment()
        self.set_interval(1.0, self._show_attachment)
        self.main.services_started()
        settle_after_start()

    def _show_attachment(self) -> None:
        receiver = self.context.receiver
        if not isinstance(receiver, AttachedReceiver) and not self.context.team:
            return
        assert receiver is not None and not isinstance(receiver, ReceiverService)
        what = "team link" if self.context.team else "receiver link"
        if not receiver.link_up:
            since = receiver.down_since.astimezone() if receiver.down_since else None
            self.sub_title = f"{what} down{f' since {since:%H:%M:%S}' if since else ''} · reconnecting…"
            return
        others = [name for name in receiver.consoles if name != receiver.operator]
        with_whom = f" · with {', '.join(sorted(set(others)))}" if others else ""
        where = (
            f"attached to {receiver.url} (pid {receiver.state.pid})"
            if isinstance(receiver, AttachedReceiver)
            else receiver.url
        )
        self.sub_title = f"{where} as {receiver.operator}{with_whom}"

    async def action_quit(self) -> None:
        """Attached: the receiver keeps receiving unless the operator asks (or --stop-receiver-on-exit);
        with calls live or held it asks which."""
        receiver = self.context.receiver
        services = self._services
        if not isinstance(receiver, AttachedReceiver) or services.stop_receiver_on_exit:
            self.exit()
            return
        live = [call for call in receiver.tracker.calls() if call.status != "ended"]
        held = receiver.gate.pending() if receiver.gate is not None else []
        if not live and not held:
            self.exit(message=_keeps_running(receiver))
            return

        def chosen(stop: bool | None) -> None:
            if stop is None:
                return
            services.stop_receiver_on_exit = stop
            self.exit(message=None if stop else _keeps_running(receiver))

        busy = " and ".join(
            part
            for part in (f"{len(live)} live call(s)" if live else "", f"{len(held)} held tool call(s)" if held else "")
            if part
        )
        self.push_screen(StopReceiverScreen(busy), chosen)

    @work(group="demo-dial", exit_on_error=False)
    async def dial_demo_call(self) -> None:
        """Demo calls take turns: Vapi's (the first), Retell's, Twilio's, so the demo shows all three."""
        self._demo_dials += 1
        turn = (self._demo_dials - 1) % 3
        if turn == 1 and self._retell is not None:
            await self._dial_retell_demo_call(self._retell)
            return
        if turn == 2 and self._twilio is not None:
            await self._dial_twilio_demo_call(self._twilio)
            return
        platform = self.platform
        if platform is None:
            return
        try:
            async with VapiClient(platform.api_key, base_url=platform.url, max_retries=0) as client:
                if self._phone_number_id is None or self._assistant_id is None:
                    self._phone_number_id = (await client.list_phone_numbers())[0]["id"]
                    self._assistant_id = (await client.list_assistants(limit=1))[0]["id"]
                call = await client.create_phone_call(
                    phone_number_id=self._phone_number_id,
                    customer_number=DEMO_CUSTOMER,
                    assistant_id=self._assistant_id,
                )
        except (VapiError, IndexError, KeyError) as exc:
            self.feed.note(f"demo: could not dial: {exc}")
            return
        self.feed.note(f"demo: dialed {DEMO_CUSTOMER} → call {short_id(call.get('id'))}")

    async def _dial_retell_demo_call(self, platform: SimulatedRetell) -> None:
        """Retell's demo calls take turns: its own LLM's agent, then the custom-LLM one through the tap."""
        custom = (self._demo_dials - 2) // 3 % 2 == 0  # the first Retell call is the custom-LLM agent's
        agent = RETELL_LLM_AGENT_ID if custom and RETELL_LLM_AGENT_ID in platform.agents else None
        try:
            async with RetellClient(platform.api_key, base_url=platform.url, max_retries=0) as client:
                number = (await client.list_phone_numbers(limit=1))[0]["phone_number"]
                call = await client.create_phone_call(
                    from_number=number, to_number=DEMO_CUSTOMER, override_agent_id=agent
                )
        except (RetellError, IndexError, KeyError) as exc:
            self.feed.note(f"demo: could not dial on the simulated Retell: {exc}")
            return
        how = " (custom LLM, through the tap)" if agent else ""
        self.feed.note(f"demo: dialed {DEMO_CUSTOMER} on Retell{how} → call {short_id(call.get('call_id'))}")

    async def _dial_twilio_demo_call(self, platform: SimulatedTwilio) -> None:
        """A call whose TwiML connects its stream to the tap, which relays it to the demo's agent."""
        service = self.service
        if service is None or not self._stream_token:
            return
        stream = f"ws://127.0.0.1:{service.server.port}/stream/twilio/{self._stream_token}"
        try:
            async with TwilioClient(
                platform.account_sid, platform.auth_token, base_url=platform.url, max_retries=0
            ) as api:
                number = (await api.list_numbers(limit=1))[0]["phone_number"]
                call = await api.create_call(
                    to=DEMO_CUSTOMER,
                    from_=number,
                    twiml=stream_twiml(stream),
                    status_callback=service.server.url + "/webhook/twilio/status",
                )
        except (TwilioError, IndexError, KeyError) as exc:
            self.feed.note(f"demo: could not dial on the simulated Twilio: {exc}")
            return
        self.feed.note(
            f"demo: dialed {DEMO_CUSTOMER} on Twilio (its stream through the tap) → call {short_id(call.get('sid'))}"
        )

    def action_help(self) -> None:
        HelpScreen.toggle(self)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action.startswith("replay_"):
            return self.replay.running  # the keys stay free (and hidden) when nothing replays
        return super().check_action(action, parameters)

    def action_replay_pause(self) -> None:
        self.replay.toggle_pause()

    def action_replay_speed(self, step: int) -> None:
        self.replay.change_speed(step)

    def action_replay_stop(self) -> None:
        self.replay.stop()

    async def on_unmount(self) -> None:
        for worker in list(self.workers):
            if worker.group == "services":  # still starting: let it stop before closing what it made
                worker.cancel()
                try:
                    await worker.wait()
                except Exception:
                    pass
        platform, self.context.platform = self.context.platform, None
        retell, self._retell = self._retell, None
        service, self.context.receiver = self.context.receiver, None
        if platform is not None:
            await platform.close()
        if retell is not None:
            await retell.close()
        twilio, self._twilio = self._twilio, None
        if twilio is not None:
            await twilio.close()
        agent, self._services.stream_agent = self._services.stream_agent, None
        if agent is not None:
            await agent.__aexit__(None, None, None)
        llm, self._services.llm_server = self._services.llm_server, None
        if llm is not None:
            await llm.__aexit__(None, None, None)
        team_link, self._team_link = self._team_link, None
        if team_link is not None:
            await team_link.stop(self.feed.note)
        if service is not None:
            await service.close()
        if self._services.stop_receiver_on_exit and isinstance(service, AttachedReceiver):
            await asyncio.to_thread(stop_serve, service.state)


def _keeps_running(receiver: AttachedReceiver) -> str:
    return (
        f"voice-console: the receiver keeps receiving at {receiver.url} (pid {receiver.state.pid}); "
        "`voice-console serve --stop` stops it."
    )
