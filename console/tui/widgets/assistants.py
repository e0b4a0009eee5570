"""The Assistants pane: the platforms' assistants (Vapi) and agents (Retell), the selected
one's config (secrets masked) and the operator checks, with `F` applying the fix (server
messages, webhook events) through the same code as `voice-console assistants --fix`.

The lists are read in a worker from the APIs (the in-process simulators under --demo);
with no Vapi key the pane says so in one line; Retell agents are listed when there is a key.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.events import Resize
from textual.widgets import DataTable, Static

from console.providers.retell.checks import check_agent, effective_webhook_events, missing_webhook_events, shown
from console.providers.retell.client import RetellClient, RetellError
from console.providers.twilio.checks import check_number, patch_number
from console.providers.twilio.client import TwilioClient, TwilioError
from console.providers.vapi.checks import (
    Check,
    assistant_server_url,
    check_assistant,
    effective_server_messages,
    missing_server_messages,
)
from console.providers.vapi.client import VapiClient, VapiError
from console.services.assistants import fix_agent, fix_number, fix_server_messages
from console.tui.context import AssistantAccess, NumberAccess
from console.tui.widgets.table import WindowTable

LEVEL_STYLE = {"error": "bold red", "warning": "bold yellow", "info": "cyan"}
LEVEL_MARK = {"error": "✗", "warning": "⚠", "info": "ℹ"}
MASK = "•••• (set)"
STACK_BELOW = 80  # columns
SECRET_WORDS = ("secret", "token", "password", "apikey", "api_key", "authorization", "credential", "privatekey")


AccessSource = Callable[[], Awaitable[AssistantAccess]]


def is_secret_key(name: str) -> bool:
    flat = name.lower().replace("-", "").replace("_", "")
    return any(word.replace("_", "") in flat for word in SECRET_WORDS)


def mask_secrets(value: Any) -> Any:
    """A copy with every value under a secret-looking key replaced by a mask, and every URL shown
    without its query or a tap token (an agent's llm_websocket_url carries one)."""
    if isinstance(value, dict):
        return {key: (MASK if is_secret_key(str(key)) and item else mask_secrets(item)) for key, item in value.items()}
    if isinstance(value, list):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return shown(value)
    return value


def agent_view(agent: dict[str, Any], checks: list[Check]) -> Table:
    """A Retell agent as `config_view` shows an assistant: name, checks, then what the console relies on."""
    shown = mask_secrets(agent)
    grid = _checks_grid(
        str(shown.get("agent_name") or "(unnamed)"), str(shown.get("agent_id") or ""), checks, "webhook-events-missing"
    )
    engine = shown.get("response_engine") or {}
    grid.add_row("engine", " ".join(str(part) for part in (engine.get("type"), engine.get("llm_id")) if part) or "—")
    url = shown.get("webhook_url")
    grid.add_row("webhook", Text(str(url or "none (the account's)"), style="" if url else "yellow"))
    missing = missing_webhook_events(agent)
    events = Text(", ".join(effective_webhook_events(agent)))
    if agent.get("webhook_events") is None:
        events.append(" (Retell's defaults)", style="dim")
    if missing:
        events.append(f"  missing: {', '.join(missing)}", style="bold yellow")
    grid.add_row("events", events)
    grid.add_row("interrupt", str(shown.get("interruption_sensitivity", "1 (default)")))
    return grid


def _checks_grid(name: str, key: str, checks: list[Check], fixable: str | tuple[str, ...]) -> Table:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(ratio=1)
    grid.add_row("name", Text.assemble((name, "bold"), (f"  {key}", "dim")))
    for check in checks:
        line = Text(f"{LEVEL_MARK[check.level]} {check.message}", style=LEVEL_STYLE[check.level])
        fix = Text(f"fix: {check.fix}", style="dim")
        if check.code in ((fixable,) if isinstance(fixable, str) else fixable):
            fix.append("  press F to apply", style="bold")
        grid.add_row(Text(check.level, style=LEVEL_STYLE[check.level]), Text.assemble(line, "\n", fix))
    if not checks:
        grid.add_row(Text("ok", style="bold green"), "Nothing to fix: the console sees this assistant's calls.")
    return grid


def config_view(assistant: dict[str, Any], checks: list[Check]) -> Table:
    """Name, then the checks with their fixes (what the operator must see first in a short
    pane), then the config that matters to the console."""
    shown = mask_secrets(assistant)
    grid = _checks_grid(
        str(shown.get("name") or "(unnamed)"), str(shown.get("id") or ""), checks, "server-messages-missing"
    )
    model = shown.get("model") or {}
    tools = len(model.get("toolIds") or model.get("tools") or [])
    grid.add_row(
        "model",
        " ".join(str(part) for part in (model.get("provider"), model.get("model")) if part)
        + (f" · {tools} tools" if tools else "")
        or "—",
    )
    voice = shown.get("voice") or {}
    grid.add_row("voice", " ".join(str(part) for part in (voice.get("provider"), voice.get("voiceId")) if part) or "—")
    server = shown.get("server") if isinstance(shown.get("server"), dict) else {}
    url = assistant_server_url(assistant)
    server_text = Text(url or "none (the phone number's or org's)", style="" if url else "yellow")
    for key, value in server.items():
        if key not in ("url", "timeoutSeconds"):
            server_text.append(f" · {key}: {value if value == MASK else '…'}", style="dim")
    if server.get("timeoutSeconds"):
        server_text.append(f" · timeout {server['timeoutSeconds']} s", style="dim")
    grid.add_row("server", server_text)
    missing = missing_server_messages(assistant)
    messages = Text(", ".join(effective_server_messages(assistant)))
    if assistant.get("serverMessages") is None:
        messages.append(" (Vapi's defaults)", style="dim")
    if missing:
        messages.append(f"  missing: {', '.join(missing)}", style="bold yellow")
    grid.add_row("messages", messages)
    return grid


class AssistantsPane(Horizontal):
    """Left: the list; right: the selected assistant's config and checks."""

    BINDINGS = [
        Binding(
            "F", "fix", "Fix msgs", tooltip="add the server messages the console needs (PATCH, as assistants --fix)"
        ),
        Binding("R", "reload", "Reload", show=False, tooltip="list the assistants again"),
    ]

    def __init__(
        self,
        access: AccessSource,
        agent_access: AccessSource | None = None,
        number_access: Callable[[], Awaitable[NumberAccess]] | None = None,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._access = access
        self._agent_access = agent_access
        self._number_access = number_access
        self.assistants: dict[str, dict[str, Any]] = {}
        self.agents: dict[str, dict[str, Any]] = {}  # Retell's, by agent_id
        self.numbers: dict[str, dict[str, Any]] = {}  # Twilio's, by sid
        self.checks: dict[str, list[Check]] = {}
        self.status = "Not loaded yet."
        self._public_url: str | None = None
        self.loads = 0  # finished loads, for tests

    def on_resize(self, event: Resize) -> None:
        # A narrow pane (the wide layout's third column) stacks the list over the config.
        self.set_class(event.size.width < STACK_BELOW, "-stacked")

    def compose(self) -> ComposeResult:
        yield WindowTable([("name", "assistant"), ("checks", "checks")], id="assistants")
        with VerticalScroll(id="assistant-config-scroll"):
            yield Static(self.status, id="assistant-config")

    @property
    def table(self) -> WindowTable:
        return self.query_one("#assistants", WindowTable)

    def _say(self, text: str) -> None:
        self.status = text
        self.query_one("#assistant-config", Static).update(Text(text, style="dim"))

    def action_reload(self) -> None:
        self.load()

    @work(exclusive=True, group="assistants", exit_on_error=False)
    async def load(self, select: str | None = None) -> None:
        self._say("Loading the assistants…")
        access = await self._access()
        self.agents, agent_checks = await self._load_agents()
        self.numbers, number_checks = await self._load_numbers()
        if not access.api_key and not self.agents and not self.numbers:
            self.assistants, self.checks = {}, {}
            self.table.sync([])
            self.table.display = False  # nothing to list: the explanation gets the room
            self._say(access.note or "No Vapi API key: run `voice-console keys set vapi` to list assistants here.")
            self.loads += 1
            return
        found: list[dict[str, Any]] = []
        if access.api_key:
            try:
                async with VapiClient(access.api_key, base_url=access.base_url, max_retries=1) as client:
                    found = await client.list_assistants()
            except VapiError as exc:
                self._say(f"Could not list the assistants: {exc}")
                self.loads += 1
                return
        self._public_url = access.public_url
        self.table.display = True
        self.assistants = {str(item.get("id")): item for item in found}
        self.checks = (
            {key: check_assistant(item, public_url=access.public_url) for key, item in self.assistants.items()}
            | agent_checks
            | number_checks
        )
        keys = [*self.assistants, *self.agents, *self.numbers]
        self.table.sync([(key, self._row(key)) for key in keys])
        if select in keys:
            self.table.move_cursor(row=keys.index(select), animate=False)
        self._show(self.table.selected_key)
        self.loads += 1

    async def _load_agents(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[Check]]]:
        """The Retell agents and their checks; none without a Retell key or when the API fails."""
        if self._agent_access is None:
            return {}, {}
        access = await self._agent_access()
        if not access.api_key:
            return {}, {}
        try:
            async with RetellClient(access.api_key, base_url=access.base_url, max_retries=1) as client:
                found = await client.list_agents()
        except RetellError as exc:
            self.notify(f"Could not list the Retell agents: {exc}", severity="warning", markup=False)
            return {}, {}
        agents = {str(agent.get("agent_id")): agent for agent in found if agent.get("agent_id")}
        checks = {
            key: check_agent(agent, public_url=access.public_url, tap=access.llm_tap) for key, agent in agents.items()
        }
        return agents, checks

    async def _load_numbers(self) -> tuple[dict[str, dict[str, Any]], dict[str, list[Check]]]:
        """The Twilio numbers and their checks; none without Twilio keys or when the API fails."""
        if self._number_access is None:
            return {}, {}
        access = await self._number_access()
        if not access.keys:
            return {}, {}
        try:
            async with twilio_client(access) as client:
                found = await client.list_numbers()
        except TwilioError as exc:
            self.notify(f"Could not list the Twilio numbers: {exc}", severity="warning", markup=False)
            return {}, {}
        numbers = {str(number.get("sid")): number for number in found if number.get("sid")}
        checks = {
            key: check_number(number, public_url=access.public_url, voice_twiml=access.voice_twiml)
            for key, number in numbers.items()
        }
        return numbers, checks

    def _row(self, key: str) -> tuple[object, ...]:
        if key in self.numbers:
            number = self.numbers[key]
            name: str | Text = Text.assemble(
                ("Twilio ", "dim"), str(number.get("friendly_name") or number.get("phone_number") or key)
            )
        elif key in self.agents:
            name = Text.assemble(("Retell ", "dim"), str(self.agents[key].get("agent_name") or key))
        else:
            name = str(self.assistants[key].get("name") or key)
        problems = [check for check in self.checks[key] if check.level != "info"]
        if problems:
            summary = Text(f"⚠ {len(problems)}", style="bold yellow")
        else:
            summary = Text("✓", style="green")
        return (name, summary)

    def _show(self, key: str | None) -> None:
        body = self.query_one("#assistant-config", Static)
        if key is not None and key in self.numbers:
            body.update(number_view(self.numbers[key], self.checks.get(key, [])))
            return
        if key is not None and key in self.agents:
            body.update(agent_view(self.agents[key], self.checks.get(key, [])))
            return
        if key is None or key not in self.assistants:
            body.update(
                Text("No assistants on this account." if not self.assistants else "Select an assistant.", style="dim")
            )
            return
        body.update(config_view(self.assistants[key], self.checks.get(key, [])))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "assistants":
            event.stop()
            self._show(event.row_key.value)

    def action_fix(self) -> None:
        key = self.table.selected_key
        if key is not None and key in self.numbers:
            self.fix_twilio_number(key)
            return
        if key is not None and key in self.agents:
            self.fix_agent(key)  # the webhook events, and a custom-LLM socket through the tap: it says if neither
            return
        if key is None or key not in self.assistants:
            self.notify("Select an assistant first.", severity="warning")
            return
        if not missing_server_messages(self.assistants[key]):
            self.notify("This assistant already sends every message the console needs.")
            return
        self.fix(key)

    @work(exclusive=True, group="assistants-fix", exit_on_error=False)
    async def fix(self, key: str) -> None:
        access = await self._access()
        if not access.api_key:
            self.notify(access.note or "No Vapi API key.", severity="error")
            return
        assistant = self.assistants[key]
        try:
            async with VapiClient(access.api_key, base_url=access.base_url, max_retries=1) as client:
                now = await fix_server_messages(client, assistant)
        except VapiError as exc:
            self.notify(f"Could not update {assistant.get('name') or key}: {exc}", severity="error")
            return
        self.notify(f"{assistant.get('name') or key}: serverMessages now include {', '.join(now)}.")
        self.load(select=key)

    @work(exclusive=True, group="assistants-fix", exit_on_error=False)
    async def fix_agent(self, key: str) -> None:
        assert self._agent_access is not None
        access = await self._agent_access()
        if not access.api_key:
            self.notify("No Retell API key.", severity="error")
            return
        agent = self.agents[key]
        name = agent.get("agent_name") or key
        try:
            async with RetellClient(access.api_key, base_url=access.base_url, max_retries=1) as client:
                _, changes = await fix_agent(client, agent, access.llm_tap)
        except RetellError as exc:
            self.notify(f"Could not update {name}: {exc}", severity="error", markup=False)
            return
        if not changes:
            self.notify(f"{name} already sends what the console needs; nothing to change.", markup=False)
            return
        self.notify(f"{name}: {'; '.join(changes)}.", markup=False)
        self.load(select=key)

    @work(exclusive=True, group="assistants-fix", exit_on_error=False)
    async def fix_twilio_number(self, key: str) -> None:
        assert self._number_access is not None
        access = await self._number_access()
        number = self.numbers[key]
        name = number.get("friendly_name") or number.get("phone_number") or key
        if not access.keys:
            self.notify("No Twilio account SID and auth token.", severity="error")
            return
        if not patch_number(number, public_url=access.public_url):
            why = "no public URL is configured" if not access.public_url else "it already points here"
            self.notify(f"{name}: nothing to change ({why}).", markup=False)
            return
        try:
            async with twilio_client(access) as client:
                _, changes = await fix_number(client, number, public_url=access.public_url)
        except TwilioError as exc:
            self.notify(f"Could not update {name}: {exc}", severity="error", markup=False)
            return
        self.notify(f"{name}: {'; '.join(changes)}.", markup=False)
        self.load(select=key)


def twilio_client(access: NumberAccess) -> TwilioClient:
    keys = access.keys or {}
    return TwilioClient(keys["twilio_account_sid"], keys["twilio_auth_token"], base_url=access.base_url, max_retries=1)


def number_view(number: dict[str, Any], checks: list[Check]) -> Table:
    """A Twilio number as `config_view` shows an assistant: name, checks, where its calls go."""
    shown = mask_secrets(number)
    grid = _checks_grid(
        str(shown.get("friendly_name") or shown.get("phone_number") or "(unnamed)"),
        str(shown.get("phone_number") or ""),
        checks,
        ("voice-url-missing", "voice-url-elsewhere", "status-callback-missing"),
    )
    voice, status = shown.get("voice_url"), shown.get("status_callback")
    grid.add_row("voice", Text(str(voice or "none (Twilio's default)"), style="" if voice else "yellow"))
    grid.add_row("status", Text(str(status or "none"), style="" if status else "yellow"))
    return grid
