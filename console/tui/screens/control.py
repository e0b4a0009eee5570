"""Live control of the selected call through Vapi's `call.monitor.controlUrl`:
say (`s`), add a message (`n`), mute/unmute the assistant (`m`), transfer (`t`)
and end the call (ctrl+e, after a confirmation).

The control URL is learnt by the call tracker (status updates, the dial answer)
and read through the console context. It is a capability, so it is only ever shown
masked; `CallControl` already masks it in its errors. Requests run in workers on
the screen that hosts the controls (the main screen), never retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Checkbox, Input, Label, Select

from console.core.calls import short_id
from console.phone import PhoneNumber, PhoneNumberError, parse_phone
from console.providers.base import LiveAction, LiveControl, PlatformError
from console.providers.vapi.live import MessageRole
from console.redact import mask_url
from console.services.live import ACTION_NAMES, NO_CONTROL_URL, CannotSteer, Target
from console.tui.context import ConsoleContext
from console.tui.widgets.prompt import ConfirmScreen, PromptScreen

__all__ = ["ACTION_NAMES", "NO_CONTROL_URL", "CallControls", "Target"]


def _not_empty(text: str) -> str | None:
    return None if text.strip() else "Type something."


class AddMessageScreen(ModalScreen[tuple[MessageRole, str, bool] | None]):
    """A system or user message to insert into the conversation; dismisses with (role, text, respond)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, call_label: str) -> None:
        super().__init__()
        self._call_label = call_label

    def compose(self) -> ComposeResult:
        with Vertical(id="message-box") as box:
            box.border_title = f"Add a message · call {self._call_label}"
            yield Label("Role", classes="dial-label")
            yield Select(
                [("system (an instruction to the assistant)", "system"), ("user (as if the caller said it)", "user")],
                value="system",
                allow_blank=False,
                id="message-role",
            )
            yield Label("Message", classes="dial-label")
            yield Input(placeholder="e.g. The caller is a VIP: offer the earliest slot.", id="message-text")
            yield Checkbox("The assistant answers it now", value=True, id="message-respond")
            yield Label("", id="message-error", markup=False)
            yield Label("enter: send · escape: cancel", id="prompt-help")

    def on_mount(self) -> None:
        self.query_one("#message-text", Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if problem := _not_empty(event.value):
            self.query_one("#message-error", Label).update(problem)
            return
        role = cast(MessageRole, self.query_one("#message-role", Select).value)  # its options are roles
        self.dismiss((role, event.value, self.query_one("#message-respond", Checkbox).value))

    def action_cancel(self) -> None:
        self.dismiss(None)


class CallControls:
    """The main screen's call-control actions: find the selected call's control URL,
    ask what to send, send it in a worker, and tell the operator what happened.

    `screen` hosts the dialogs, workers and notifications; `selected_call` says which
    call the operator picked."""

    def __init__(self, screen: Screen[Any], context: ConsoleContext, selected_call: Callable[[], str | None]) -> None:
        self.screen = screen
        self.context = context
        self.selected_call = selected_call
        self._muted: set[str] = set()  # calls whose assistant this console muted

    def target(self, action: LiveAction) -> Target | None:
        """The selected call and how to steer it, or None after telling the operator why not."""
        call_id = self.selected_call()
        live = self.context.steering()
        try:
            if live is None:
                raise CannotSteer("The receiver is still starting.")
            if call_id is None:
                raise CannotSteer("No call is selected: pick one in Live calls.")
            return live.target(call_id, action)
        except CannotSteer as exc:
            self.screen.notify(str(exc), markup=False, title="Call control", severity="error")
            return None

    async def _opened(self, target: Target) -> LiveControl:
        live = self.context.steering()
        if live is None:
            raise PlatformError("the receiver has stopped")
        return await live.open(target)

    def send(
        self,
        target: Target,
        what: str,
        operation: Callable[[LiveControl], Awaitable[Any]],
        then: Callable[[], None] | None = None,
    ) -> None:
        """Send one control operation in a worker; the outcome is notified in one line."""
        label = short_id(target.call_id)

        async def run() -> None:
            try:
                async with await self._opened(target) as control:
                    await operation(control)
            except PlatformError as exc:  # one line, URLs and keys already masked
                self.screen.notify(
                    f"{what} on call {label} failed: {exc}", markup=False, title="Call control", severity="error"
                )
                return
            except ValueError as exc:
                self.screen.notify(
                    f"{what} on call {label} refused: {exc}", markup=False, title="Call control", severity="error"
                )
                return
            except Exception as exc:
                via = f" via {mask_url(target.control_url)}" if target.control_url else ""
                self.screen.notify(
                    f"{what} on call {label} failed ({type(exc).__name__}){via}",
                    markup=False,
                    title="Call control",
                    severity="error",
                )
                return
            if then is not None:
                then()
            self.screen.notify(f"{what}: sent to call {label}.", markup=False, title="Call control")

        self.screen.run_worker(run(), group="call-control", exit_on_error=False)

    def _ask(self, dialog: ModalScreen[Any], answered: Callable[[Any], None]) -> None:
        def done(value: Any) -> None:
            if value is not None and value is not False:
                answered(value)

        self.screen.app.push_screen(dialog, done)

    # --- the actions -----------------------------------------------------------------------

    def say(self) -> None:
        if (target := self.target("say")) is None:
            return
        self._ask(
            PromptScreen(
                f"Say · call {short_id(target.call_id)}",
                live.say_prompt(target) if (live := self.context.steering()) else target.control.say_prompt,
                check=_not_empty,
            ),
            lambda text: self.send(target, "Say", lambda control: control.say(text)),
        )

    def add_message(self) -> None:
        if (target := self.target("add_message")) is None:
            return

        def send(answer: tuple[MessageRole, str, bool]) -> None:
            role, text, respond = answer
            self.send(
                target, f"Add {role} message", lambda control: control.add_message(role, text, trigger_response=respond)
            )

        self._ask(AddMessageScreen(short_id(target.call_id)), send)

    def toggle_mute(self) -> None:
        if (target := self.target("mute")) is None:
            return
        call_id = target.call_id
        if call_id in self._muted:
            self.send(
                target,
                "Unmute the assistant",
                lambda control: control.unmute_assistant(),
                then=lambda: self._muted.discard(call_id),
            )
        else:
            self.send(
                target,
                "Mute the assistant (m again to unmute)",
                lambda control: control.mute_assistant(),
                then=lambda: self._muted.add(call_id),
            )

    def is_muted(self, call_id: str) -> bool:
        return call_id in self._muted

    def default_region(self) -> str | None:
        """Where a number typed without + and a country code is read (config `[dial] default_region`)."""
        return self.context.settings.dial.default_region

    def phone(self, text: str) -> PhoneNumber:
        """The number the operator typed, national or international; PhoneNumberError says why not."""
        return parse_phone(text, default_region=self.default_region(), what="number to transfer to")

    def phone_problem(self, text: str) -> str | None:
        try:
            self.phone(text)
        except PhoneNumberError as exc:
            return f"{str(exc)[:1].upper()}{str(exc)[1:]}."
        return None

    def transfer(self) -> None:
        if (target := self.target("transfer")) is None:
            return
        call_id = target.call_id
        region = self.default_region() or "US"

        def send(text: str) -> None:
            number = self.phone(text)  # checked by the dialog already
            self.send(target, f"Transfer to {number.describe()}", lambda control: control.transfer(number=number.e164))

        self._ask(
            PromptScreen(
                f"Transfer · call {short_id(call_id)}",
                f"Transfer the caller to (a {region} number, or + and the country code):",
                check=self.phone_problem,
                live_check=True,
                preview=lambda text: f"→ {self.phone(text).describe()}",
                placeholder="(415) 555-0199 or +44 20 7946 0958",
            ),
            send,
        )

    def cut_off(self) -> None:
        """The operator's own barge-in: at once, no question (it only drops what the agent queued)."""
        if (target := self.target("cut_off")) is None:
            return
        self.send(target, "Cut the agent off", lambda control: control.cut_off())

    def end(self) -> None:
        if (target := self.target("end")) is None:
            return
        self._ask(
            ConfirmScreen(
                f"End call {short_id(target.call_id)}",
                "Hang up this call for everyone on it? This cannot be undone.\n"
                "Press y to end it, n or escape to keep it.",
                yes="End call",
            ),
            lambda _: self.send(target, "End call", lambda control: control.end_call()),
        )
