"""Quitting a console attached to a `serve` while calls are live or tool calls held: the receiver
keeps receiving unless the operator asks for it to stop too."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label


class StopReceiverScreen(ModalScreen[bool | None]):
    """Dismissed with False (quit, the receiver keeps receiving), True (quit and stop the receiver)
    or None (stay)."""

    HELP_TITLE = "Quitting with calls live (attached)"
    BINDINGS = [
        Binding("k", "keep", "Quit, keep receiving", tooltip="close this console; the receiver goes on"),
        Binding("s", "stop", "Quit and stop it", tooltip="close this console and stop the receiver"),
        Binding("escape", "stay", "Stay"),
    ]

    def __init__(self, busy: str) -> None:
        super().__init__()
        self._busy = busy

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box") as box:
            box.border_title = "Quit"
            yield Label(
                f"The receiver has {self._busy}. Closing this console leaves it receiving (the platforms "
                "keep getting answers, held tool calls keep their policy's deadline); stopping it ends "
                "that for every console.",
                id="confirm-text",
            )
            with Horizontal(id="confirm-buttons"):
                yield Button("Quit, keep receiving (k)", id="keep", variant="primary")
                yield Button("Quit and stop it (s)", id="stop", variant="error")
            yield Label("k: keep it receiving · s: stop it too · escape: stay", id="confirm-help")

    def on_mount(self) -> None:
        for button in self.query(Button):
            button.can_focus = False  # the answer is a letter
        self.set_focus(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "stop")

    def action_keep(self) -> None:
        self.dismiss(False)

    def action_stop(self) -> None:
        self.dismiss(True)

    def action_stay(self) -> None:
        self.dismiss(None)
