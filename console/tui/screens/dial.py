"""The dial dialog (`d`): place a test call without leaving the console.

It talks to the provider's API with the operator's key (or, with --demo, to the
in-process simulated platform) through the provider's dialing client, the same as
`voice-console dial`; every provider in the registry is offered. The
number is checked while it is typed against libphonenumber's data (console/phone.py):
national input is read in `[dial] default_region`, the number is shown formatted
with its country, an invalid one is refused with the reason, and E.164 is sent.
The network work (listing assistants and numbers, placing the call) runs in
workers, and the platform's answer comes back in one line.
"""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from console.phone import PhoneNumber, PhoneNumberError, parse_phone
from console.providers import registry
from console.providers.base import PlatformError
from console.tui.context import ConsoleContext, DialAccess
from console.tui.messages import CallDialed

# Say which providers cannot dial before anyone fills the form.
NOT_DIALABLE = (
    "{provider} calls cannot be placed from here (nor with `voice-console dial`): this build dials "
    "through {dialable} only. Their webhooks are still received and shown."
)
NUMBER_HINT = "Type the number: national, read as a {region} number, or '+' and the country code."
# Fewer rows than this: inputs, selects and buttons without their borders, so the dialog fits.
COMPACT_BELOW_ROWS = 30


def read_number(text: str, region: str) -> PhoneNumber | str:
    """The number `text` dials (national input read in `region`), or why it cannot be dialed."""
    if not text.strip():
        return NUMBER_HINT.format(region=region)
    try:
        return parse_phone(text, default_region=region)
    except PhoneNumberError as exc:
        reason = str(exc)
        return reason[:1].upper() + reason[1:] + "."


class DialScreen(ModalScreen[CallDialed | None]):
    """Provider, assistant, from-number and the number to call; dismisses with `CallDialed`."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, context: ConsoleContext) -> None:
        super().__init__()
        self.console_context = context
        self._access: DialAccess | None = None
        self._blocked: str | None = "Loading assistants and phone numbers…"  # why dialing is impossible now
        self._dialing = False

    def compose(self) -> ComposeResult:
        with Vertical(id="dial-box") as box:
            box.border_title = "Dial a test call"
            yield Label("Provider", classes="dial-label")
            yield Select(
                [(name, name) for name in registry.names()], value=self._first, allow_blank=False, id="dial-provider"
            )
            yield Label("Assistant", classes="dial-label")
            yield Select([], prompt="loading…", id="dial-assistant")
            yield Label("Call from (phone number)", classes="dial-label")
            yield Select([], prompt="loading…", id="dial-from")
            yield Label(f"Number to call (national in {self._region}, or + and the country code)", classes="dial-label")
            yield Input(placeholder="(415) 555-0142 or +14155550142", id="dial-to")
            yield Label(NUMBER_HINT.format(region=self._region), id="dial-to-error", markup=False)
            yield Label("", id="dial-status", markup=False)
            with Horizontal(id="dial-buttons"):
                yield Button("Dial", id="dial-go", variant="success", disabled=True)
                yield Button("Cancel", id="dial-cancel")
            yield Label("enter: dial · escape: cancel", id="dial-help")

    @property
    def _first(self) -> str:
        return next((spec.name for spec in registry.specs() if spec.can_dial), registry.names()[0])

    @property
    def _provider(self) -> str:
        return str(self.query_one("#dial-provider", Select).value)

    @property
    def _region(self) -> str:
        return self.console_context.settings.dial.default_region

    def on_mount(self) -> None:
        self._fit(self.app.size.height)
        self.query_one("#dial-to", Input).focus()
        self._refresh()
        self.load()

    def on_resize(self) -> None:
        self._fit(self.app.size.height)

    def _fit(self, rows: int) -> None:
        """In a short terminal (80x24) the fields lose their borders, so the whole form fits."""
        for widget in self.query("#dial-box Select, #dial-box Input, #dial-box Button"):
            if isinstance(widget, Select | Input | Button):
                widget.compact = rows < COMPACT_BELOW_ROWS

    # --- loading ---------------------------------------------------------------------------

    @work(exclusive=True, group="dial-load", exit_on_error=False)
    async def load(self) -> None:
        self._access = None
        if not registry.spec(self._provider).can_dial:
            self._unavailable(None)
            return
        access = await self.console_context.dial_access(self._provider)
        if isinstance(access, str):
            self._unavailable(access)
            return
        try:
            async with access.client(max_retries=1, timeout_s=10) as client:
                assistants = await client.agents(limit=100)
                numbers = await client.phone_lines(limit=100)
        except PlatformError as exc:
            self._unavailable(f"Could not list assistants and phone numbers from {access.where}: {exc}")
            return
        self._access = access
        self._fill("#dial-assistant", [(agent.name, agent.id) for agent in assistants])
        self._fill("#dial-from", [(f"{line.number}  {line.name}".rstrip(), line.id) for line in numbers])
        if not assistants:
            self._set_blocked(f"{access.where} has no assistant to dial with; create one first.")
        elif not numbers:
            self._set_blocked(f"{access.where} has no phone number to call from; buy or import one first.")
        else:
            self._set_blocked(None)

    def _fill(self, selector: str, options: list[tuple[str, str]]) -> None:
        select: Select[str] = self.query_one(selector, Select)
        select.set_options([(Text(label), value) for label, value in options])  # names are data, not markup
        select.prompt = "choose…" if options else "none available"
        if options:
            select.value = options[0][1]

    def _unavailable(self, reason: str | None) -> None:
        for selector in ("#dial-assistant", "#dial-from"):
            select: Select[str] = self.query_one(selector, Select)
            select.set_options([])
            select.prompt = "unavailable"
        self._set_blocked(reason)

    def _set_blocked(self, reason: str | None) -> None:
        self._blocked = reason
        self._refresh()

    # --- validation ------------------------------------------------------------------------

    def form_problem(self) -> str | None:
        """Why nothing can be dialed whatever the number (shown under the form), or None."""
        if not registry.spec(self._provider).can_dial:
            dialable = " and ".join(spec.title for spec in registry.specs() if spec.can_dial) or "no provider"
            return NOT_DIALABLE.format(provider=self._provider, dialable=dialable)
        if self._blocked:
            return self._blocked
        if self.query_one("#dial-assistant", Select).is_blank():
            return "Choose an assistant."
        if self.query_one("#dial-from", Select).is_blank():
            return "Choose the phone number to call from."
        return None

    def number(self) -> PhoneNumber | str:
        """The number typed, read (see `read_number`)."""
        return read_number(self.query_one("#dial-to", Input).value, self._region)

    def problem(self) -> str | None:
        """Why the Dial button is disabled, or None."""
        number = self.number()
        return self.form_problem() or (number if isinstance(number, str) else None)

    def _refresh(self) -> None:
        typed = self.query_one("#dial-to", Input).value
        number = self.number()
        number_issue = number if isinstance(number, str) else None
        error = self.query_one("#dial-to-error", Label)
        error.update(f"✓ {number.describe()}" if not isinstance(number, str) else number)
        error.set_class(bool(number_issue and typed.strip()), "invalid")
        error.set_class(not number_issue, "valid")
        if self._dialing:
            return
        blocker = self.form_problem()
        ready = "" if isinstance(number, str) else f"Ready to dial {number.e164} through {self._where()}."
        self.query_one("#dial-status", Label).update(blocker or ready)
        self.query_one("#dial-status", Label).set_class(bool(blocker), "blocked")
        self.query_one("#dial-go", Button).disabled = bool(blocker or number_issue)

    def _where(self) -> str:
        return self._access.where if self._access else registry.spec(self._provider).title

    def on_input_changed(self, event: Input.Changed) -> None:
        self._refresh()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "dial-provider" and self.is_mounted:
            self._set_blocked("Loading assistants and phone numbers…")
            self.load()
        self._refresh()

    # --- dialing ---------------------------------------------------------------------------

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_dial()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "dial-go":
            self.action_dial()
        else:
            self.action_cancel()

    def action_dial(self) -> None:
        number = self.number()
        if self._dialing or self.problem() is not None or self._access is None or isinstance(number, str):
            self._refresh()
            return
        self._dialing = True
        self.query_one("#dial-go", Button).disabled = True
        to = number.e164  # what platforms take, whatever was typed
        self.query_one("#dial-status", Label).update(f"Dialing {number.describe()} through {self._access.where}…")
        self.place_call(
            self._access,
            str(self.query_one("#dial-assistant", Select).value),
            str(self.query_one("#dial-from", Select).value),
            to,
        )

    @work(exclusive=True, group="dial", exit_on_error=False)
    async def place_call(self, access: DialAccess, assistant_id: str, number_id: str, to: str) -> None:
        try:
            async with access.client() as client:
                call = await client.place_call(to=to, line_id=number_id, agent_id=assistant_id)
        except (PlatformError, ValueError) as exc:
            self._dialing = False
            self.notify(f"Dial failed: {exc}", markup=False, title="Dial", severity="error")
            self._refresh()
            status = self.query_one("#dial-status", Label)
            status.update(f"Not dialed: {exc}")
            status.set_class(True, "blocked")
            return
        self.dismiss(CallDialed(call, to, access.where))

    def action_cancel(self) -> None:
        if self._dialing:  # the request may already have reached the platform: wait for its answer
            self.notify("A call is being placed; wait for the platform's answer.", severity="warning", markup=False)
            return
        self.dismiss(None)
