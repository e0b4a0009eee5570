"""The operator console under Pilot: the real receiver and the real simulated
platform on loopback (`--demo`), a tmp history, the keyring isolated by conftest."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from textual.widgets import Input, Label

from console.core.events import BargeIn, ToolDecided, ToolRequested, TranscriptFinal, TranscriptPartial
from console.core.policy import Policy, ToolRule
from console.secrets import SecretStore
from console.store.db import StoreClosed
from console.store.queries import get_call
from console.tui.app import Services, VoiceConsoleApp
from console.tui.screens.approve import EditArgumentsScreen, JsonArea
from console.tui.widgets.panes import FunctionCallsTable, LiveCallsTable
from console.tui.widgets.prompt import PromptScreen
from console.tui.widgets.transcript import CallTranscript
from tests.helpers.tui import ONE_HELD, SIZE, decision_in_history, demo_app, wait_for, wait_for_pending

pytestmark = pytest.mark.e2e  # runs the whole simulated platform (--demo)


async def answer_prompt(pilot, app: VoiceConsoleApp, text: str) -> None:
    await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), what="the prompt dialog")
    app.screen.query_one(Input).value = text
    await pilot.press("enter")


async def test_demo_shows_a_live_call_and_approve_lands_in_history(settings):
    app = demo_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        first = await wait_for_pending(pilot, app)
        assert app.main.selected_call == first.call_id  # the first call is selected by itself
        await pilot.press("a")
        # The decision shows at once in the function-calls pane and inline in the transcript...
        await wait_for(pilot, lambda: first.tool_call_id in app.main.decided, what="the decided row")
        transcript = app.main.transcripts[first.call_id].plain()
        assert f"{first.name}(" in transcript and "approved by operator" in transcript
        # ...and the parallel call of the same batch is next in line.
        second = app.main.target()
        assert second is not None and second.call_id == first.call_id and second.tool_call_id != first.tool_call_id
        await pilot.press("a")
        for target in (first, second):
            tool = await decision_in_history(pilot, app, target.call_id, target.tool_call_id)
            assert (tool["decision"], tool["by"]) == ("approved", "operator")


async def test_reject_with_a_reason(settings):
    app = demo_app(settings, policy=ONE_HELD)
    async with app.run_test(size=SIZE) as pilot:
        target = await wait_for_pending(pilot, app)
        await pilot.press("r")
        await answer_prompt(pilot, app, "Bookings are closed today.")
        tool = await decision_in_history(pilot, app, target.call_id, target.tool_call_id)
        assert (tool["decision"], tool["by"], tool["error"]) == ("rejected", "operator", "Bookings are closed today.")


async def test_edit_checks_the_json_then_sends_it(settings):
    app = demo_app(settings, policy=ONE_HELD)
    async with app.run_test(size=SIZE) as pilot:
        target = await wait_for_pending(pilot, app)
        await pilot.press("e")
        editor = await wait_for(
            pilot, lambda: isinstance(app.screen, EditArgumentsScreen) and app.screen, what="the arguments editor"
        )
        editor.query_one(JsonArea).text = "[1, 2]"
        await pilot.press("ctrl+s")
        await pilot.pause(0.1)
        assert app.screen is editor  # refused: not an object
        assert "JSON object" in str(editor.query_one("#edit-problem", Label).content)
        editor.query_one(JsonArea).text = '{"date": "2026-02-18"}'
        await pilot.press("ctrl+s")
        tool = await decision_in_history(pilot, app, target.call_id, target.tool_call_id)
        assert (tool["decision"], tool["by"]) == ("edited", "operator")


async def test_override_sends_the_typed_result(settings):
    app = demo_app(settings, policy=ONE_HELD)
    async with app.run_test(size=SIZE) as pilot:
        target = await wait_for_pending(pilot, app)
        await pilot.press("o")
        await answer_prompt(pilot, app, '{"slots": ["09:30"]}')
        tool = await decision_in_history(pilot, app, target.call_id, target.tool_call_id)
        assert (tool["decision"], tool["by"]) == ("overridden", "operator")
        assert "09:30" in tool["result"]


async def test_a_call_nobody_decides_shows_as_a_timeout(settings):
    app = demo_app(settings, policy=Policy(tools={"default": ToolRule(action="hold", timeout_seconds=1)}))
    async with app.run_test(size=SIZE) as pilot:
        target = await wait_for_pending(pilot, app)
        table = app.main.query_one(FunctionCallsTable)
        await wait_for(pilot, lambda: target.tool_call_id in app.main.decided, what="the timeout")
        app.main.refresh_tables()
        row = table.get_row(target.tool_call_id)
        assert "rejected" in str(row[2]) and str(row[3]) == "timeout"
        assert "rejected by timeout" in app.main.transcripts[target.call_id].plain()
        tool = await decision_in_history(pilot, app, target.call_id, target.tool_call_id)
        assert tool["by"] == "timeout"
        # Too late for the operator: the gate refuses, nothing is recorded as theirs.
        assert app.main.target() is None or app.main.target().tool_call_id != target.tool_call_id


async def test_ctrl_q_quits_with_exit_code_0_and_closes_the_receiver(settings):
    app = demo_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.platform is not None, what="the demo platform")
        receiver = app.service
        await pilot.press("ctrl+q")
    assert app.return_code == 0
    assert app.service is None and app.platform is None
    with pytest.raises(StoreClosed):
        await get_call(receiver.store, "x")  # the history was closed


def test_transcript_replaces_partials_and_marks_barge_ins_inline():
    at = datetime(2026, 2, 17, 9, 30, tzinfo=UTC)
    model = CallTranscript("c1")
    common = {"at": at, "provider": "vapi", "call_id": "c1"}
    model.apply(TranscriptPartial(role="assistant", text="Sure, I can", **common))
    model.apply(TranscriptPartial(role="assistant", text="Sure, I can help", **common))
    model.apply(TranscriptFinal(role="assistant", text="Sure, I can help.", **common))
    model.apply(BargeIn(cut_text="Before I look", **common))
    model.apply(ToolRequested(tool_call_id="t1", name="book", arguments={"day": "Tue"}, **common))
    model.apply(ToolDecided(tool_call_id="t1", name="book", decision="rejected", by="operator", error="No.", **common))
    assert model.plain().splitlines() == [
        "speech:assistant:Sure, I can help.:",
        "barge::Before I look:",
        "tool::book(day=Tue):rejected by operator: No.",
    ]
    assert all(entry.final for entry in model.entries if entry.kind == "speech")


def test_the_tui_package_itself_does_not_import_textual():
    import subprocess
    import sys

    code = "import sys, console.tui; print(any(m.split('.')[0] == 'textual' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


# --- a busy port ------------------------------------------------------------------------------


@pytest.fixture
def busy_port():
    """A port on loopback that something really listens on (as `voice-console serve` would)."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        yield holder.getsockname()[1]
    finally:
        holder.close()


async def test_the_demo_takes_a_free_port_when_its_port_is_busy_and_says_so(settings, busy_port):
    settings.receiver.port = busy_port
    app = demo_app(settings)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_for(pilot, lambda: app.platform is not None and app.platform.calls, what="the demo's first call")
        url = app.service.server.url
        assert not url.endswith(f":{busy_port}")
        assert url in app.sub_title  # the port it took is on screen
        toast = [n.message for n in app._notifications if str(busy_port) in n.message]
        assert toast and url in toast[0]
        # ... and it works there: the first call's webhooks reach it.
        await wait_for(pilot, lambda: app.main.query_one(LiveCallsTable).row_count >= 1, what="the call on screen")
    assert app.return_code in (0, None)


async def test_a_busy_port_without_demo_exits_1_naming_the_fix(settings, busy_port):
    settings.receiver.port = busy_port
    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={})))
    async with app.run_test(size=SIZE) as pilot:
        said = await wait_for(pilot, lambda: list(app._exit_renderables), what="the app to give up")
    assert app.return_code == 1
    message = str(said[0])
    assert f"127.0.0.1:{busy_port}" in message and "already in use" in message and "--port" in message
