"""A one-line prompt dialog for reject reasons, override results and edited arguments."""

from __future__ import annotations

from collections.abc import Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from console.core.gate import PendingCall


class PromptScreen(ModalScreen[str | None]):
    """Dismisses with the entered text, or None when cancelled. `check` returns an
    error message for a value that cannot be used (the dialog then stays open)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(
        self,
        title: str,
        prompt: str,
        default: str = "",
        *,
        check: Callable[[str], str | None] | None = None,
        pending: PendingCall | None = None,
    ) -> None:
        super().__init__()
        self._title = title
        self._prompt = prompt
        self._default = default
        self._check = check
        self._pending = pending

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box") as box:
            box.border_title = self._title
            yield Label(self._prompt, id="prompt-text")
            yield Input(self._default, id="prompt-input", select_on_focus=True)
            yield Label("", id="prompt-error")
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

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        problem = self._check(event.value) if self._check else None
        if problem:
            self.query_one("#prompt-error", Label).update(problem)
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
