"""Small modal dialogs: a one-line prompt (reject reasons, override results, edited
arguments, text to say, a key typed hidden) and a yes/no confirmation."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from console.core.gate import PendingCall


class PromptScreen(ModalScreen[str | None]):
    """Dismisses with the entered text, or None when cancelled. `check` returns an
    error message for a value that cannot be used (the dialog then stays open);
    with `live_check` it also runs while typing. `password` hides what is typed."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        prompt: str,
        default: str = "",
        *,
        check: Callable[[str], str | None] | None = None,
        pending: PendingCall | None = None,
        live_check: bool = False,
        password: bool = False,
        placeholder: str = "",
    ) -> None:
        super().__init__()
        self._title = title
        self._prompt = prompt
        self._default = default
        self._check = check
        self._pending = pending
        self._live_check = live_check
        self._password = password
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box") as box:
            box.border_title = self._title
            yield Label(self._prompt, id="prompt-text")
            yield Input(self._default, id="prompt-input", select_on_focus=True, password=self._password,
                        placeholder=self._placeholder)
            yield Label("", id="prompt-error", markup=False)  # echoes what was typed
            yield Label("", id="prompt-countdown")
            yield Label("enter: send · escape: cancel", id="prompt-help")

    def on_mount(self) -> None:
        if self._pending is not None:
            self._tick()
            self.set_interval(0.5, self._tick)

    def _tick(self) -> None:
        assert self._pending is not None
        left = self._pending.remaining_s()
        text = f"{left:.0f} s left, then {self._pending.on_timeout} (recorded as a timeout)" if left > 0 else \
            "time is up: the platform's default was applied"
        self.query_one("#prompt-countdown", Label).update(text)

    def on_input_changed(self, event: Input.Changed) -> None:
        if self._live_check and self._check is not None:
            problem = self._check(event.value) if event.value else None  # nothing typed yet: no scolding
            self.query_one("#prompt-error", Label).update(problem or "")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        problem = self._check(event.value) if self._check else None
        if problem:
            self.query_one("#prompt-error", Label).update(problem)
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no for actions that cannot be undone. Dismisses with True only on an explicit yes."""

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("y", "confirm", "Yes"), Binding("n", "cancel", "No")]

    def __init__(self, title: str, question: str, *, yes: str = "Yes") -> None:
        super().__init__()
        self._title = title
        self._question = question
        self._yes = yes

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box") as box:
            box.border_title = self._title
            yield Label(self._question, id="confirm-text")
            with Horizontal(id="confirm-buttons"):
                yield Button(self._yes, id="confirm-yes", variant="error")
                yield Button("Cancel", id="confirm-no")
            yield Label("y: yes · n / escape: cancel", id="confirm-help")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()  # a stray enter cancels

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)
