"""Retell end to end on loopback: the Retell REST client against the simulated Retell platform,
`voice-console dial --provider retell` placing a call the platform then plays into the real
receiver (its barge-in derived from the word times), and the official `retell-sdk` parsing
every answer the simulated platform gives."""

from __future__ import annotations

import asyncio
import io

import pytest
import retell
from textual.widgets import Input, Label, Select

import console.providers.retell.client as retell_client
from console.cli import build_parser
from console.commands.dial import run_dial
from console.core.policy import Policy, ToolRule
from console.providers.retell.client import RetellAuthError, RetellClient, RetellError, page_of
from console.secrets import SecretStore
from console.simulator.retell import AGENT_ID, LLM_AGENT_ID, SimulatedRetell
from console.store import queries
from console.tui.app import Services, VoiceConsoleApp
from console.tui.screens.dial import DialScreen
from console.tui.widgets.panes import short_id
from console.tui.widgets.prompt import ConfirmScreen, PromptScreen
from tests.helpers.secrets import RETELL_KEY
from tests.helpers.tui import (
    ONE_HELD,
    SIZE,
    demo_app,
    record_notifications,
    type_text,
    wait_for,
    wait_for_pending,
)

OVERRIDE = Policy(tools={"default": ToolRule(action="override", result='{"ok": true}')})
FROM = "+14155550199"  # the simulated account's number


async def dial(settings, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    args = build_parser().parse_args(["dial", "--provider", "retell", *argv])
    out, err = io.StringIO(), io.StringIO()
    store = SecretStore({"VOICE_CONSOLE_RETELL_API_KEY": RETELL_KEY} if env is None else env)
    code = await run_dial(args, settings, secret_store=store, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_a_dialed_retell_call_lands_in_the_history_with_its_barge_in(start_receiver):
    receiver, _ = await start_receiver(policy=OVERRIDE)
    async with SimulatedRetell(receiver.server.url, api_key=RETELL_KEY, speed=40, scenario="booking") as platform:
        receiver.settings.retell.base_url = platform.url
        code, out, err = await dial(receiver.settings, "--to", "(415) 555-0142", "--agent", AGENT_ID)
        assert code == 0, err
        call_id = out.split()[0]
        assert out == f"{call_id}  registered  to +1 415-555-0142 · United States from {FROM} with agent {AGENT_ID}\n"
        assert call_id in platform.calls and platform.calls[call_id].call_object()["to_number"] == "+14155550142"
        async with asyncio.timeout(20):
            while (detail := await queries.get_call(receiver.store, call_id)) is None or detail["call"][
                "status"
            ] != "ended":
                await asyncio.sleep(0.1)
    assert {record.status for record in platform.deliveries} <= {200, 204}, platform.deliveries
    barge_ins = [e for e in detail["events"] if e["kind"] == "barge_in"]
    assert [(b["cut_text"], b["source"]) for b in barge_ins] == [("Before I", "word-timings")]
    assert detail["call"]["provider"] == "retell" and detail["call"]["barge_ins"] == 1
    assert {t["name"] for t in detail["tool_calls"]} == {"check_availability", "lookup_patient", "book_appointment"}


async def test_dial_errors_are_one_line_with_the_right_exit_code(settings):
    async with SimulatedRetell(None, api_key=RETELL_KEY) as platform:
        settings.retell.base_url = platform.url
        code, _, err = await dial(settings, "--to", "+14155550142", "--from", "+14155550100")
        assert code == 1 and err.count("\n") == 1
        assert "no phone number +1 415-555-0100 · United States to call from; its numbers are +14155550199" in err
        code, _, err = await dial(settings, "--to", "+14155550142", "--agent", "agent_nope")
        assert (code, err) == (1, "voice-console dial: Retell API 400 Bad Request: Agent agent_nope not found\n")
        code, _, err = await dial(settings, "--to", "+14155550142", env={"VOICE_CONSOLE_RETELL_API_KEY": "wrong"})
        assert code == 1 and "Retell API 401" in err and "keys set retell" in err and "wrong" not in err
        code, _, err = await dial(settings, "--to", "+14155550142", env={})
        assert (code, err.splitlines()[0].split(":")[1].strip()) == (1, "no Retell API key")
        code, _, err = await dial(settings, "--to", "12")
        assert code == 2 and "--to number" in err
    assert not platform.calls


async def test_the_client_reads_both_list_shapes_and_follows_pages(monkeypatch):
    assert page_of([{"a": 1}], what="x") == ([{"a": 1}], None)
    assert page_of({"items": [{"a": 1}], "has_more": True, "pagination_key": "k"}, what="x") == ([{"a": 1}], "k")
    assert page_of({"items": [], "has_more": False, "pagination_key": "k"}, what="x") == ([], None)
    with pytest.raises(RetellError, match="unexpected shape for agents"):
        page_of({"agents": []}, what="agents")
    async with SimulatedRetell(None, api_key=RETELL_KEY) as platform:
        async with RetellClient(RETELL_KEY, base_url=platform.url) as client:
            for n in range(5):
                await client.create_phone_call(from_number=FROM, to_number=f"+1415555010{n}")
            calls = await client.list_calls()
            assert len(calls) == 5 and len({c["call_id"] for c in calls}) == 5
            assert len(await client.list_calls(limit=2)) == 2
            monkeypatch.setattr(retell_client, "_PAGE", 2)  # three pages of two: each key followed
            assert [c["call_id"] for c in await client.list_calls()] == [c["call_id"] for c in calls]
            stopped = calls[0]["call_id"]
            with pytest.raises(RetellError, match="already ended"):
                await client.stop_call(stopped)  # no webhook URL: the call never ran
        async with RetellClient("nope", base_url=platform.url, max_retries=0) as client:
            with pytest.raises(RetellAuthError):
                await client.list_agents()


async def test_the_official_retell_sdk_parses_every_answer(start_receiver):
    receiver, _ = await start_receiver(policy=OVERRIDE)
    async with SimulatedRetell(receiver.server.url, api_key=RETELL_KEY, speed=5, scenario="booking") as platform:
        sdk = retell.AsyncRetell(api_key=RETELL_KEY, base_url=platform.url, max_retries=0)
        agents = await sdk.agent.list()
        assert [a.agent_id for a in agents.items] == [AGENT_ID] and agents.has_more is False
        agent = await sdk.agent.retrieve(AGENT_ID)
        assert agent.response_engine.type == "retell-llm" and agent.webhook_url == receiver.server.url
        numbers = await sdk.phone_number.list()
        assert [n.phone_number for n in numbers.items] == [FROM]
        call = await sdk.call.create_phone_call(from_number=FROM, to_number="+14155550142")
        assert call.call_status == "registered" and call.direction == "outbound"
        again = await sdk.call.retrieve(call.call_id)
        assert again.call_id == call.call_id
        listed = await sdk.call.list()
        assert [c.call_id for c in listed.items] == [call.call_id]
        updated = await sdk.call.update_live(call.call_id, call_control={"additional_context": "VIP caller"})
        assert updated.success is True
        await sdk.call.stop(call.call_id)
        async with asyncio.timeout(10):
            while (await sdk.call.retrieve(call.call_id)).call_status != "ended":
                await asyncio.sleep(0.05)
        ended = await sdk.call.retrieve(call.call_id)
        assert ended.disconnection_reason == "manual_stopped"
        injected = [
            item for item in ended.transcript_with_tool_calls or [] if getattr(item, "role", None) == "injected"
        ]
        assert [item.content for item in injected] == ["VIP caller"]
        with pytest.raises(retell.NotFoundError):
            await sdk.call.retrieve("call_nope")
        await sdk.close()


async def test_the_official_retell_sdk_parses_the_custom_llm_agent_and_its_call(start_receiver):
    receiver, _ = await start_receiver(policy=OVERRIDE)
    tap = f"ws://127.0.0.1:{receiver.server.port}/llm/retell/t0ken"
    async with SimulatedRetell(None, api_key=RETELL_KEY, llm_websocket_url=tap) as platform:
        sdk = retell.AsyncRetell(api_key=RETELL_KEY, base_url=platform.url, max_retries=0)
        agent = await sdk.agent.retrieve(LLM_AGENT_ID)
        assert agent.response_engine.type == "custom-llm" and agent.response_engine.llm_websocket_url == tap
        agents = await sdk.agent.list()
        assert {a.agent_id for a in agents.items} == {AGENT_ID, LLM_AGENT_ID}
        call = await sdk.call.create_phone_call(
            from_number=FROM, to_number="+14155550142", override_agent_id=LLM_AGENT_ID
        )
        assert (await sdk.call.retrieve(call.call_id)).agent_id == LLM_AGENT_ID
        await sdk.close()


async def test_the_operator_steers_a_live_retell_call_from_the_console(settings):
    """s and n go in as context the agent answers, ctrl+e stops the call; m and t say why a Retell
    call cannot do them. The call is placed on the simulated Retell platform and plays into the
    console's own receiver, held on a tool call so that it stays live."""
    async with SimulatedRetell(None, api_key=RETELL_KEY, speed=15, scenario="booking") as platform:
        settings.retell.base_url = platform.url
        keys = SecretStore({"VOICE_CONSOLE_RETELL_API_KEY": RETELL_KEY})
        app = VoiceConsoleApp(Services(settings, secret_store=keys, policy=ONE_HELD))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.service is not None, what="the receiver")
            platform.agents[AGENT_ID]["webhook_url"] = app.service.server.url
            async with RetellClient(RETELL_KEY, base_url=platform.url) as client:
                call_id = (await client.create_phone_call(from_number=FROM, to_number="+14155550142"))["call_id"]
            pending = await wait_for_pending(pilot, app)
            assert pending.call_id == call_id and app.main.selected_call == call_id
            player = platform.calls[call_id]
            notes = record_notifications(app)

            def injected() -> list[str]:
                items = player.call_object().get("transcript_with_tool_calls", [])
                return [item["content"] for item in items if item.get("role") == "injected"]

            await pilot.press("s")
            await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen), what="the say prompt")
            await type_text(pilot, "The caller is a VIP.")
            await pilot.press("enter")
            await wait_for(pilot, lambda: injected() == ["The caller is a VIP."], what="the context on the call")
            for key, what in (("m", "Muting the assistant"), ("t", "Transfer"), ("x", "Cutting the agent off")):
                notes.clear()
                await pilot.press(key)
                await pilot.pause(0.1)
                assert app.screen is app.main
                [(severity, message)] = notes
                assert severity == "error" and message.startswith(f"{what} is not available for a Retell call: ")
            await pilot.press("ctrl+e")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the end-call question")
            await pilot.press("y")
            await wait_for(
                pilot,
                lambda: player.call_object().get("disconnection_reason") == "manual_stopped",
                what="the call stopped",
            )
            assert ("information", f"End call: sent to call {short_id(call_id)}.") in notes


async def test_the_demo_shows_retell_calls_beside_vapi_ones(settings):
    """--demo runs a simulated Retell beside the simulated Vapi: every other demo call is Retell's,
    signed with a key the receiver was given for the demo, and the dial dialog offers its agent."""
    app = demo_app(settings, interval=1.0, demo_speed=10.0)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(
            pilot,
            lambda: {"vapi", "retell"} <= {state.provider for state in app.main.context.live_calls()},
            what="a Vapi and a Retell demo call",
            timeout=20,
        )
        counts = await queries.counts(app.service.store)
        assert counts["rejected_requests"] == 0  # the simulated Retell's signatures verify
        await pilot.press("d")
        dialog = await wait_for(pilot, lambda: isinstance(app.screen, DialScreen) and app.screen, what="the dialog")
        dialog.query_one("#dial-provider", Select).value = "retell"
        agent = dialog.query_one("#dial-assistant", Select)
        await wait_for(pilot, lambda: agent.value == AGENT_ID, what="the simulated Retell agent")
        dialog.query_one("#dial-to", Input).value = "+14155550123"
        await pilot.pause(0.05)
        status = str(dialog.query_one("#dial-status", Label).content)
        assert status == "Ready to dial +14155550123 through the simulated Retell platform (demo)."


async def test_s_on_a_call_through_the_tap_speaks_the_exact_words_as_an_agent_interrupt(settings):
    """A Retell custom-LLM socket through the console's tap (Retell's side played here, a real LLM
    server behind): `s` asks for exact words and they reach Retell as an agent_interrupt."""
    import json

    from websockets.asyncio.client import connect

    from console.services.live import TAPPED_SAY_PROMPT
    from console.simulator.retell_llm import LlmServer

    async with LlmServer() as llm:
        settings.retell.llm_forward_to = llm.url
        keys = SecretStore({"VOICE_CONSOLE_RETELL_API_KEY": RETELL_KEY, "VOICE_CONSOLE_RETELL_LLM_TOKEN": "tok3n"})
        app = VoiceConsoleApp(Services(settings, secret_store=keys, policy=ONE_HELD))
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.service is not None, what="the receiver")
            url = f"ws://127.0.0.1:{app.service.server.port}/llm/retell/tok3n/call_tui_tapped"
            async with connect(url) as retell_side:
                await retell_side.recv()  # the server's config
                transcript = [{"role": "agent", "content": "Hi there."}, {"role": "user", "content": "Hello"}]
                await retell_side.send(json.dumps({"interaction_type": "update_only", "transcript": transcript}))
                await wait_for(pilot, lambda: app.main.selected_call == "call_tui_tapped", what="the tapped call")
                await pilot.press("s")
                prompt = await wait_for(
                    pilot, lambda: isinstance(app.screen, PromptScreen) and app.screen, what="the say prompt"
                )
                assert str(prompt.query_one("#prompt-text", Label).content) == TAPPED_SAY_PROMPT
                await type_text(pilot, "Let me check that for you.")
                await pilot.press("enter")
                while (frame := json.loads(await retell_side.recv()))["response_type"] != "agent_interrupt":
                    pass
                assert frame["content"] == "Let me check that for you."
