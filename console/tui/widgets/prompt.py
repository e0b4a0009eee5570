"""Small modal dialogs: a one-line prompt (reject reasons, override results, text to
say, a number to transfer to, a key typed hidden), a yes/no confirmation, and the
countdown line of a dialog that decides a held tool call (`HeldCallStatus`)."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label

from console.core.gate import PendingCall

# What `settled` answers for a held call: None while it waits for this console's decision,
# SETTLING once it no longer waits but its outcome is not known yet, else what happened.
SETTLING = ""


class HeldCallStatus(Label):
    """The countdown of a held tool call under the dialog deciding it. When the call is
    settled without the dialog (the policy's on_timeout, or a decision made elsewhere),
    it says what happened in a notification and closes the dialog: its answer could no
    longer be used.

    `settled(call)` is None while the call waits, SETTLING while its outcome is on its
    way, else one sentence saying what happened."""

    def __init__(
        self, pending: PendingCall, settled: Callable[[PendingCall], str | None] | None = None, *, id: str | None = None
    ) -> None:
        super().__init__("", id=id, markup=False)
        self.pending = pending
        self._settled = settled
        self.outcome: str | None = None  # what happened, once known

    def on_mount(self) -> None:
        self.tick()
        self.set_interval(0.25, self.tick)

    def tick(self) -> None:
        pending = self.pending
        state = self._settled(pending) if self._settled is not None else None
        if state:  # settled without this dialog: say so, and close it
            if self.outcome is None and self.screen.is_current:  # (not from under help: that would close help)
                self.outcome = state
                self.app.notify(
                    f"{state} Nothing from this dialog was sent.",
                    title=f"{pending.name}: too late",
                    severity="warning",
                    timeout=12,
                    markup=False,
                )
                self.screen.dismiss(None)
            return
        left = pending.remaining_s()
        if left > 0 and state is None:
            self.update(f"{left:.0f} s left, then {pending.on_timeout} (recorded as a timeout)")
        elif left > 0:
            self.update("decided elsewhere: waiting for the outcome…")
        else:
            self.update(f"time is up: the policy's on_timeout ({pending.on_timeout}) is being applied…")


class PromptScreen(ModalScreen[str | None]):
    """Dismisses with the entered text, or None when cancelled. `check` returns an
    error message for a value that cannot be used (the dialog then stays open);
    with `live_check` it also runs while typing, and `preview` (if given) says what a
    usable value stands for (a phone number with its country). `password` hides what
    is typed. With `pending` (a held tool call) it shows the countdown and closes
    itself when the call is settled without it (see `HeldCallStatus`)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    #prompt-preview { color: $success; }
    """

    def __init__(
        self,
        title: str,
        prompt: str,
        default: str = "",
        *,
        check: Callable[[str], str | None] | None = None,
        pending: PendingCall | None = None,
        settled: Callable[[PendingCall], str | None] | None = None,
        live_check: bool = False,
        preview: Callable[[str], str] | None = None,
        password: bool = False,
        placeholder: str = "",
    ) -> None:
        super().__init__()
        self._title = title
        self._prompt = prompt
        self._default = default
        self._check = check
        self._pending = pending
        self._settled = settled
        self._live_check = live_check
        self._preview = preview
        self._password = password
        self._placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box") as box:
            box.border_title = self._title
            yield Label(self._prompt, id="prompt-text")
            yield Input(
                self._default,
                id="prompt-input",
                select_on_focus=True,
                password=self._password,
                placeholder=self._placeholder,
            )
            yield Label("", id="prompt-error", markup=False)  # echoes what was typed
            if self._preview is not None:
                yield Label("", id="prompt-preview", markup=False)
            if self._pending is not None:
                yield HeldCallStatus(self._pending, self._settled, id="prompt-countdown")
            yield Label("enter: send · escape: cancel", id="prompt-help")

    def on_input_changed(self, event: Input.Changed) -> None:
        if self._live_check and self._check is not None:
            problem = self._check(event.value) if event.value else None  # nothing typed yet: no scolding
            self.query_one("#prompt-error", Label).update(problem or "")
            if self._preview is not None:
                shown = self._preview(event.value) if event.value and not problem else ""
                self.query_one("#prompt-preview", Label).update(shown)

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
    """Yes/no for actions that cannot be undone. Dismisses with True only on an explicit
    yes: `y` (or a click on the yes button); `n` or escape cancels. No button takes the
    focus, so enter answers neither: it only repeats which key does what."""

    BINDINGS = [
        Binding("y", "confirm", "Yes", tooltip="do what the dialog asks (it names the action)"),
        Binding("n,escape", "cancel", "No", tooltip="leave things as they are"),
        Binding("enter", "explain", "Nothing", show=False, tooltip="enter answers neither yes nor no: press y or n"),
    ]
    DEFAULT_CSS = """
    #confirm-help.-asked { color: $warning; text-style: bold; }
    """

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
                yield Button(f"{self._yes} (y)", id="confirm-yes", variant="error")
                yield Button("Cancel (n)", id="confirm-no")
            yield Label(self._keys_text(), id="confirm-help")

    def _keys_text(self) -> str:
        return f"y: {self._yes.lower()} · n or escape: cancel"

    def on_mount(self) -> None:
        for button in self.query(Button):
            button.can_focus = False  # enter must not pick one: the answer is a letter
        self.set_focus(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    def action_explain(self) -> None:
        help_line = self.query_one("#confirm-help", Label)
        help_line.update(f"Enter does nothing here. {self._keys_text()}")
        help_line.add_class("-asked")
