"""The console attached to a running `serve` (a real subprocess), driven with Pilot: what it shows
comes over the receiver's stream, its decisions go through the control API with the operator's
name, and another console sees them; quitting leaves the receiver receiving unless asked."""

from __future__ import annotations

import asyncio
import json

import httpx

from console.config import load_settings
from console.services.serve_state import read_state, state_file
from console.tui.app import Services, VoiceConsoleApp
from console.tui.widgets.panes import FunctionCallsTable
from tests.helpers.cli import Serve
from tests.helpers.receiver import vapi_headers  # noqa: F401  (signing below uses the same secret)
from tests.helpers.secrets import PAYLOADS, VAPI_SECRET
from tests.helpers.tui import SIZE, wait_for

PARALLEL = json.loads((PAYLOADS / "vapi" / "tool-calls.parallel.json").read_text())
IDS = [c["id"] for c in PARALLEL["message"]["toolCallList"]]


def attached_app(tmp_path, state, operator: str) -> VoiceConsoleApp:
    settings = load_settings(env={}, overrides={"storage": {"db": str(tmp_path / "history.db")}})
    return VoiceConsoleApp(Services(settings, attach_to=state, operator=operator))


def by_column(app: VoiceConsoleApp) -> dict[str, str]:
    table = app.main.query_one(FunctionCallsTable)
    return {str(key.value): str(table.get_row(key)[3]) for key in table.rows}


async def post_tool_calls(url: str) -> httpx.Response:
    from console.config import VapiSettings
    from console.providers.vapi import sign_vapi_request

    body = json.dumps(PARALLEL).encode()
    headers = {"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)}
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.post(url + "/webhook/vapi", content=body, headers=headers)


async def test_two_attached_consoles_decide_and_each_sees_who(tmp_path):
    serve = Serve(tmp_path / "history.db", hold=True)
    state = read_state(state_file(serve.port))
    try:
        alice, bob = attached_app(tmp_path, state, "alice@laptop"), attached_app(tmp_path, state, "bob@desk")
        async with alice.run_test(size=SIZE) as a, bob.run_test(size=SIZE) as b:
            await wait_for(a, lambda: alice.context.attached and alice.context.receiver.link_up, "alice attached")
            await wait_for(b, lambda: bob.context.attached and bob.context.receiver.link_up, "bob attached")
            await wait_for(a, lambda: "with bob@desk" in alice.sub_title, "alice told bob is here")
            platform = asyncio.create_task(post_tool_calls(serve.url))
            for pilot, app in ((a, alice), (b, bob)):
                await wait_for(pilot, lambda app=app: len(app.context.gate.pending()) == 2, "both calls held")
            await a.press("a")  # approve the one the cursor is on
            await a.pause(0.3)
            await b.press("r")  # bob rejects the other
            await b.pause(0.3)
            await b.press("enter")  # with the default reason
            response = await asyncio.wait_for(platform, 30)
            assert response.status_code == 200
            for pilot, app in ((a, alice), (b, bob)):
                await wait_for(
                    pilot,
                    lambda app=app: sorted(by_column(app).values()) == ["alice@laptop", "bob@desk"],
                    f"both decisions with their operators on {app.context.receiver.operator}'s console",
                )
            assert alice.service is None  # nothing receives in the console's process
        assert read_state(state_file(serve.port)) is not None  # the receiver still runs after both closed
    finally:
        serve.stop()


async def test_quitting_with_a_live_call_asks_and_s_stops_the_receiver(tmp_path):
    from console.tui.screens.stop_receiver import StopReceiverScreen

    serve = Serve(tmp_path / "history.db")  # tool calls rejected by rule: the call stays live
    state = read_state(state_file(serve.port))
    try:
        response = await post_tool_calls(serve.url)
        assert response.status_code == 200
        app = attached_app(tmp_path, state, "alice")
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.context.attached and app.context.live_calls(), "the live call")
            await pilot.press("ctrl+q")
            await wait_for(pilot, lambda: isinstance(app.screen, StopReceiverScreen), "the question")
            await pilot.press("escape")  # stay
            await wait_for(pilot, lambda: app.screen is app.main, "back on the main screen")
            assert app.is_running
            await pilot.press("ctrl+q")
            await wait_for(pilot, lambda: isinstance(app.screen, StopReceiverScreen), "the question again")
            await pilot.press("s")
        assert serve.proc.wait(15) == 0  # stopped cleanly, as on SIGTERM
    finally:
        if serve.proc.poll() is None:
            serve.stop()


async def test_stop_receiver_on_exit_stops_it_without_asking(tmp_path):
    serve = Serve(tmp_path / "history.db")
    state = read_state(state_file(serve.port))
    try:
        settings = load_settings(env={}, overrides={"storage": {"db": str(tmp_path / "history.db")}})
        app = VoiceConsoleApp(Services(settings, attach_to=state, operator="alice", stop_receiver_on_exit=True))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.context.attached, "attached")
            await pilot.press("ctrl+q")
        assert serve.proc.wait(15) == 0
    finally:
        if serve.proc.poll() is None:
            serve.stop()


def test_serve_stop_and_the_console_refusing_to_guess_between_receivers(tmp_path):
    from tests.helpers.cli import cli

    db = tmp_path / "history.db"
    first, second = Serve(db), Serve(tmp_path / "other.db")
    try:
        # two run, none on the console's port: it says which there are and how to pick (exit 2)
        picked = cli(db, "--port", "1", "--operator", "x")
        assert picked.returncode == 2, picked.stderr
        assert "2 `voice-console serve`s are running" in picked.stderr and "--port P" in picked.stderr
        stopped = cli(db, "serve", "--stop", "--port", str(first.port))
        assert stopped.returncode == 0, stopped.stderr
        assert f"stopped the receiver at {first.url} (pid {first.proc.pid})" in stopped.stderr
        assert first.proc.wait(15) == 0 and second.proc.poll() is None
        again = cli(db, "serve", "--stop", "--port", str(first.port))
        assert again.returncode == 1 and "no running `voice-console serve` on port" in again.stderr
    finally:
        for serve in (first, second):
            if serve.proc.poll() is None:
                serve.stop()


async def test_the_history_of_an_attached_console_is_the_receivers(tmp_path):
    """The console's own config names another history file: attached, it reads the receiver's (read-only)."""
    from console.tui.screens.history import HistoryScreen
    from console.tui.widgets.table import WindowTable

    serve = Serve(tmp_path / "receiver.db")
    state = read_state(state_file(serve.port))
    try:
        assert (await post_tool_calls(serve.url)).status_code == 200
        app = attached_app(tmp_path, state, "alice")  # its settings say tmp_path / "history.db"
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.context.attached, "attached")
            assert app.context.settings.db_path == tmp_path / "receiver.db"
            await pilot.press("h")
            await wait_for(pilot, lambda: isinstance(app.screen, HistoryScreen), "the history screen")
            calls = app.screen.query_one("#history-calls", WindowTable)
            await wait_for(pilot, lambda: calls.row_count == 1, "the receiver's call listed")
        assert not (tmp_path / "history.db").exists()  # nothing written where the console's config points
    finally:
        serve.stop()
