"""The keys screen (`k`): where each provider secret comes from, and set / test / delete.

The same logic as `voice-console keys` (console/keys.py): the same sources, the
same probes, the same refusal to store anything outside the OS keyring. Values
are typed into a password field and never shown; keyring calls run off the UI
loop with a timeout (`SecretStore`'s async API). With no usable keyring the
screen says so and what to do instead, and set shows that explanation.
"""

from __future__ import annotations

from collections.abc import Mapping

import keyring
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static

from console.secrets import SERVICE, KeyringUnavailable, SecretStore, SecretStoreError, env_name
from console.services.keys import check_keyring, env_override_note, probe_keys, provider_keys, source_label
from console.tui.widgets.prompt import ConfirmScreen, PromptScreen

SOURCE_STYLE = {"keyring": "green", "none": "dim"}


def _backend_name() -> str:
    """The keyring backend's name (detection may touch D-Bus: call off the loop)."""
    backend = keyring.get_keyring()
    return str(getattr(backend, "name", type(backend).__name__))


class KeysScreen(Screen[None]):
    """One row per secret; the selected row is what s/t/x act on."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "set_key", "Set", tooltip="store the selected key in the OS keyring (typed hidden)"),
        Binding("t", "test_key", "Test", tooltip="one read-only request with the provider's keys"),
        Binding("x,delete", "delete_key", "Delete", tooltip="remove the selected key from the OS keyring (asks first)"),
        Binding("f5", "reload", "Reload", tooltip="read the sources again"),
    ]

    def __init__(
        self,
        store: SecretStore,
        *,
        base_urls: Mapping[str, str | None] | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self._base_urls = dict(base_urls or {})  # provider -> its API's base URL (default: the settings')
        self.keyring_problem: str | None = None
        self.sources: dict[str, str] = {}  # name -> where it comes from (never the value)

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="keys-pane", classes="pane") as pane:
            pane.border_title = "Keys"
            pane.border_subtitle = "values are never shown"
            yield Label("Checking the OS keyring…", id="keys-keyring", markup=False)
            yield DataTable(id="keys-table", cursor_type="row", zebra_stripes=True)
            yield Label(
                "s: set (typed hidden) · t: test against the provider · x: delete from the keyring · escape: back",
                id="keys-help",
            )
        with Vertical(id="keys-result-pane", classes="pane") as pane:
            pane.border_title = "Result"
            yield Static(
                "Select a key and press t to check it against the provider's API (one read-only request).",
                id="keys-result",
            )
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#keys-table", DataTable)
        table.add_column("provider", key="provider")
        table.add_column("key", key="key")
        table.add_column("comes from", key="source")
        table.add_column("environment variable (overrides the keyring)", key="env")
        for provider, names in provider_keys().items():
            for name in names:
                table.add_row(provider, name, Text("…", style="dim"), env_name(name), key=name)
        table.focus()
        self.reload()

    # --- reading ---------------------------------------------------------------------------

    def action_reload(self) -> None:
        self.reload()

    @work(exclusive=True, group="keys-load", exit_on_error=False)
    async def reload(self) -> None:
        self.keyring_problem = await check_keyring(self.store)
        try:
            backend = await self.store.run_off_loop(_backend_name)
        except SecretStoreError as exc:
            backend = f"unknown ({exc})"
        banner = self.query_one("#keys-keyring", Label)
        if self.keyring_problem:
            banner.update(f"⚠ {self.keyring_problem}")
        else:
            banner.update(
                f"OS keyring: {backend} (service {SERVICE!r}). Keys set here are stored there, never in a file."
            )
        banner.set_class(bool(self.keyring_problem), "warning")
        table = self.query_one("#keys-table", DataTable)
        for names in provider_keys().values():
            for name in names:
                lookup = await self.store.aget(name)
                self.sources[name] = source_label(self.store, lookup)
                table.update_cell(
                    name, "source", Text(lookup.source, style=SOURCE_STYLE.get(lookup.source, "bold cyan"))
                )
                table.update_cell(
                    name, "env", Text(env_name(name), style="bold cyan" if lookup.source == "env" else "")
                )

    def selected(self) -> tuple[str, str] | None:
        """(provider, key name) of the selected row."""
        table = self.query_one("#keys-table", DataTable)
        if table.row_count == 0:
            return None
        name = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        for provider, names in provider_keys().items():
            if name in names:
                return provider, name
        return None

    def _show(self, text: str, *, ok: bool | None = None) -> None:
        style = {True: "green", False: "red", None: ""}[ok]
        self.query_one("#keys-result", Static).update(Text(text, style=style))

    # --- set / delete ----------------------------------------------------------------------

    def action_set_key(self) -> None:
        if chosen := self.selected():
            self.set_key(chosen[1])

    @work(exclusive=True, group="keys-write", exit_on_error=False)
    async def set_key(self, name: str) -> None:
        # Checked before asking: nobody should type a secret only to be told it cannot be kept.
        problem = await check_keyring(self.store)
        if problem:
            self._no_keyring(problem, f"{name} cannot be stored")
            return

        def typed(value: str | None) -> None:
            if value:
                self.store_key(name, value.strip())

        self.app.push_screen(
            PromptScreen(
                f"Set {name}",
                f"{name} (hidden; stored in the OS keyring only):",
                check=lambda text: None if text.strip() else "Type or paste the key.",
                password=True,
            ),
            typed,
        )

    @work(exclusive=True, group="keys-write", exit_on_error=False)
    async def store_key(self, name: str, value: str) -> None:
        try:
            await self.store.aset(name, value)
        except KeyringUnavailable as exc:
            self._no_keyring(str(exc), f"{name} was not stored")
            return
        except SecretStoreError as exc:
            self._failed(f"{name} was not stored: {exc}")
            return
        message = f"Stored {name} in the OS keyring (service {SERVICE})."
        if note := env_override_note(self.store, name):
            message += " " + note
        self._show(message, ok=True)
        self.notify(message, markup=False, title="Keys")
        self.reload()

    def action_delete_key(self) -> None:
        if (chosen := self.selected()) is None:
            return
        name = chosen[1]

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete_key(name)

        self.app.push_screen(
            ConfirmScreen(f"Delete {name}", f"Remove {name} from the OS keyring?", yes="Delete"), answered
        )

    @work(exclusive=True, group="keys-write", exit_on_error=False)
    async def delete_key(self, name: str) -> None:
        try:
            deleted = await self.store.adelete(name)
        except KeyringUnavailable as exc:
            self._no_keyring(str(exc), f"{name} was not deleted")
            return
        except SecretStoreError as exc:
            self._failed(f"{name} was not deleted: {exc}")
            return
        message = f"Deleted {name} from the OS keyring." if deleted else f"{name} was not in the keyring."
        if note := env_override_note(self.store, name, deleted=True):
            message += " " + note
        self._show(message, ok=True)
        self.notify(message, markup=False, title="Keys")
        self.reload()

    def _no_keyring(self, problem: str, what: str) -> None:
        self._show(
            f"{what}: {problem}\nNothing was written to a file: voice-console never stores keys in plaintext.", ok=False
        )
        self.notify(problem, markup=False, title=what, severity="error", timeout=10)

    def _failed(self, message: str) -> None:
        self._show(message, ok=False)
        self.notify(message, markup=False, title="Keys", severity="error")

    # --- test ------------------------------------------------------------------------------

    def action_test_key(self) -> None:
        if chosen := self.selected():
            self._show(f"Testing {chosen[0]}…")
            self.test_provider(chosen[0])

    @work(exclusive=True, group="keys-test", exit_on_error=False)
    async def test_provider(self, provider: str) -> None:
        probe = await probe_keys(provider, self.store, self._base_urls)  # the CLI's own probe and wording
        code = probe.code
        lines = [line.removeprefix("voice-console keys: ") for line in probe.text().strip().splitlines()]
        self._show("\n".join([f"{'✓' if code == 0 else '✗'} {provider}", *lines]), ok=code == 0)
        self.notify(
            f"{provider}: {'keys accepted' if code == 0 else 'test failed (details on the keys screen)'}",
            markup=False,
            title="Keys",
            severity="information" if code == 0 else "error",
        )
