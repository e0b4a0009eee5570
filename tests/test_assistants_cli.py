"""`voice-console assistants [--fix]` against the simulated platform's REST API."""

import argparse
import io

import httpx

from console.commands.assistants import run_assistants
from console.config import load_settings
from console.providers.retell.checks import LlmTap, check_agent, patch_llm_websocket_url, patch_webhook_events, tap_url
from console.secrets import SecretStore
from console.simulator.retell import AGENT_ID, LLM_AGENT_ID, SimulatedRetell
from console.simulator.vapi import SimulatedPlatform
from tests.helpers.secrets import RETELL_KEY


async def test_checks_and_fixes_missing_server_messages(tmp_path):
    platform = SimulatedPlatform("https://elsewhere.example/webhook/vapi")
    await platform.start()
    try:
        settings = load_settings(env={}, overrides={"vapi": {"base_url": platform.url}})
        secrets = SecretStore(env={"VOICE_CONSOLE_VAPI_API_KEY": platform.api_key})
        out = io.StringIO()
        args = argparse.Namespace(fix=False, public_url="https://console.example")
        assert await run_assistants(args, settings, secret_store=secrets, out=out) == 0
        report = out.getvalue()
        assert "transcript" in report and "elsewhere.example" in report
        assert platform.api_key not in report

        fixed, err = io.StringIO(), io.StringIO()
        args.fix = True
        assert await run_assistants(args, settings, secret_store=secrets, out=fixed, err=err) == 0, err.getvalue()
        assert "fixed   serverMessages now include" in fixed.getvalue()
        # What is reported is the assistant after the fix: no warning about what was just added.
        assert "does not send" not in fixed.getvalue() and err.getvalue() == ""
        async with httpx.AsyncClient(
            base_url=platform.url, headers={"authorization": f"Bearer {platform.api_key}"}
        ) as client:
            assistants = (await client.get("/assistant")).json()
        assert all("transcript" in a.get("serverMessages", []) for a in assistants)
    finally:
        await platform.close()


async def test_without_a_key_it_says_so():
    err = io.StringIO()
    args = argparse.Namespace(fix=False, public_url=None)
    assert await run_assistants(args, load_settings(env={}), secret_store=SecretStore(env={}), err=err) == 1
    assert "no Vapi API key" in err.getvalue()


async def test_fix_goes_on_past_a_refused_patch_and_fails_only_for_what_is_still_missing():
    platform = SimulatedPlatform("https://elsewhere.example/webhook/vapi")
    await platform.start()
    try:
        # Listed under an id the platform no longer knows, as when it is deleted between the list and
        # the PATCH: its PATCH gets a real 404, and it comes first, before one that can be fixed.
        gone = {"id": "deleted-meanwhile", "name": "Deleted meanwhile", "serverMessages": ["status-update"]}
        platform.assistants = {"listed-key": gone, **platform.assistants}
        settings = load_settings(env={}, overrides={"vapi": {"base_url": platform.url}})
        secrets = SecretStore(env={"VOICE_CONSOLE_VAPI_API_KEY": platform.api_key})
        out, err = io.StringIO(), io.StringIO()
        args = argparse.Namespace(fix=True, public_url=None)
        assert await run_assistants(args, settings, secret_store=secrets, out=out, err=err) == 1
        assert "failed  could not add the missing server messages" in out.getvalue()
        assert (
            err.getvalue().strip()
            == "voice-console assistants: still missing server messages after --fix: Deleted meanwhile."
        )
        async with httpx.AsyncClient(
            base_url=platform.url, headers={"authorization": f"Bearer {platform.api_key}"}
        ) as client:
            assistants = (await client.get("/assistant")).json()
        assert all("transcript" in a.get("serverMessages", []) for a in assistants if a["id"] != gone["id"])
    finally:
        await platform.close()


async def test_retell_agents_are_checked_and_their_webhook_events_fixed(tmp_path):
    """With a Retell key the agents are listed beside (here: instead of) Vapi's assistants; --fix
    adds transcript_updated (the word times barge-ins come from) with one update."""
    async with SimulatedRetell("https://elsewhere.example/webhook/retell", api_key=RETELL_KEY) as platform:
        agent = platform.agents[AGENT_ID]
        agent["webhook_events"] = None  # Retell's defaults: no transcript_updated
        agent["interruption_sensitivity"] = 0
        settings = load_settings(env={"VOICE_CONSOLE_RETELL_BASE_URL": platform.url})
        store = SecretStore({"VOICE_CONSOLE_RETELL_API_KEY": RETELL_KEY})

        async def assistants(fix: bool) -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            args = argparse.Namespace(fix=fix, public_url="https://voice.example.test")
            code = await run_assistants(args, settings, secret_store=store, out=out, err=err)
            return code, out.getvalue(), err.getvalue()

        code, out, err = await assistants(fix=False)
        assert (code, err) == (0, "")
        assert out.startswith(f"{AGENT_ID}  {agent['agent_name']}  (Retell agent)\n")
        assert "does not send transcript_updated; the console will miss live transcripts and barge-ins" in out
        assert "sends its webhooks to https://elsewhere.example/webhook/retell, not to this console" in out
        assert "interruption_sensitivity 0" in out

        code, out, err = await assistants(fix=True)
        assert (code, err) == (0, "")
        assert "fixed   webhook_events now include call_started, call_ended, call_analyzed, transcript_updated" in out
        assert agent["webhook_events"] == ["call_started", "call_ended", "call_analyzed", "transcript_updated"]
        assert "does not send" not in out and "webhook-url" not in out  # what --fix cannot do stays a warning
        assert "not to this console" in out


def test_retell_agent_checks():
    good = {
        "agent_id": "agent_1",
        "agent_name": "Front desk",
        "webhook_url": "HTTPS://voice.example.test:443/webhook/retell/",
        "webhook_events": ["call_started", "call_ended", "call_analyzed", "transcript_updated"],
        "interruption_sensitivity": 0.8,
    }
    assert check_agent(good, public_url="https://voice.example.test") == []
    assert [c.code for c in check_agent(good)] == ["public-url-unknown"]
    assert patch_webhook_events(good) == {}
    bare = {"agent_id": "agent_2", "webhook_events": ["call_ended"]}
    assert [c.code for c in check_agent(bare, public_url="https://voice.example.test")] == [
        "webhook-events-missing",
        "webhook-url-missing",
    ]
    assert patch_webhook_events(bare) == {
        "webhook_events": ["call_ended", "call_started", "call_analyzed", "transcript_updated"]
    }


def test_custom_llm_agents_are_checked_for_the_tap():
    tap = LlmTap("wss://voice.example.test/llm/retell/tok3n", "wss://llm.example/ws")
    agent = {
        "agent_id": "agent_3",
        "agent_name": "Bookings",
        "webhook_url": "https://voice.example.test/webhook/retell",
        "webhook_events": ["call_started", "call_ended", "call_analyzed", "transcript_updated"],
        "response_engine": {"type": "custom-llm", "llm_websocket_url": "wss://llm.example/ws?key=s3cret"},
    }

    def codes(engine_url: str, tap: LlmTap | None = tap) -> list[str]:
        changed = {**agent, "response_engine": {"type": "custom-llm", "llm_websocket_url": engine_url}}
        return [c.code for c in check_agent(changed, public_url="https://voice.example.test", tap=tap)]

    checks = check_agent(agent, public_url="https://voice.example.test", tap=tap)
    assert [c.code for c in checks] == ["custom-llm-not-tapped"]
    text = checks[0].message + checks[0].fix
    assert "s3cret" not in text and "tok3n" not in text  # neither the user's secret nor the tap's token
    assert "wss://llm.example/ws" in text and "/llm/retell/<token>" in text and "can apply this for you" in text
    assert codes(tap.url) == []
    assert codes(tap.url + "/") == []
    assert codes("wss://voice.example.test/llm/retell/old-token") == ["tap-token-wrong"]
    assert codes(tap.url, LlmTap(tap.url, None)) == ["tap-has-nowhere-to-relay"]
    assert codes("wss://llm.example/ws", LlmTap(None, None)) == ["custom-llm-unchecked"]
    # --fix: one update pointing the socket at the tap, only when the tap can relay it.
    assert patch_llm_websocket_url(agent, tap) == {
        "response_engine": {"type": "custom-llm", "llm_websocket_url": tap.url}
    }
    assert patch_llm_websocket_url(agent, LlmTap(tap.url, None)) == {}
    assert patch_llm_websocket_url({**agent, "response_engine": {"type": "retell-llm"}}, tap) == {}
    assert tap_url("https://voice.example.test/", "t") == "wss://voice.example.test/llm/retell/t"
    assert tap_url("http://127.0.0.1:8765", "t") == "ws://127.0.0.1:8765/llm/retell/t"
    assert tap_url(None, "t") is None and tap_url("https://x.test", None) is None


async def test_fix_points_a_custom_llm_agent_at_the_tap(tmp_path):
    async with SimulatedRetell(
        "https://voice.example.test/webhook/retell", api_key=RETELL_KEY, llm_websocket_url="wss://llm.example/ws"
    ) as platform:
        settings = load_settings(
            env={"VOICE_CONSOLE_RETELL_BASE_URL": platform.url},
            overrides={"retell": {"llm_forward_to": "wss://llm.example/ws"}},
        )
        store = SecretStore({"VOICE_CONSOLE_RETELL_API_KEY": RETELL_KEY, "VOICE_CONSOLE_RETELL_LLM_TOKEN": "tok3n"})
        out, err = io.StringIO(), io.StringIO()
        args = argparse.Namespace(fix=True, public_url="https://voice.example.test")
        code = await run_assistants(args, settings, secret_store=store, out=out, err=err)
        assert (code, err.getvalue()) == (0, "")
        engine = platform.agents[LLM_AGENT_ID]["response_engine"]
        assert engine == {"type": "custom-llm", "llm_websocket_url": "wss://voice.example.test/llm/retell/tok3n"}
        assert "fixed   llm_websocket_url now goes through the tap, wss://voice.example.test/llm/retell/<token>" in (
            out.getvalue()
        )
        assert "tok3n" not in out.getvalue() and "custom-llm-not-tapped" not in out.getvalue()


async def test_twilio_numbers_are_checked_and_pointed_here():
    from console.simulator.twilio import NUMBER_SID, SimulatedTwilio

    async with SimulatedTwilio() as platform:
        settings = load_settings(env={"VOICE_CONSOLE_TWILIO_BASE_URL": platform.url})
        store = SecretStore(
            {
                "VOICE_CONSOLE_TWILIO_ACCOUNT_SID": platform.account_sid,
                "VOICE_CONSOLE_TWILIO_AUTH_TOKEN": platform.auth_token,
            }
        )

        async def assistants(fix: bool) -> tuple[int, str, str]:
            out, err = io.StringIO(), io.StringIO()
            args = argparse.Namespace(fix=fix, public_url="https://voice.example.test")
            code = await run_assistants(args, settings, secret_store=store, out=out, err=err)
            return code, out.getvalue(), err.getvalue()

        code, out, err = await assistants(fix=False)
        assert (code, err) == (0, "")
        assert "+14155550188" in out and "(Twilio number)" in out
        assert "has no voice URL" in out and "has no status callback" in out

        code, out, err = await assistants(fix=True)
        assert (code, err) == (0, "")
        number = platform.numbers[NUMBER_SID]
        assert number["voice_url"] == "https://voice.example.test/webhook/twilio/voice"
        assert number["status_callback"] == "https://voice.example.test/webhook/twilio/status"
        assert "fixed   voice URL now https://voice.example.test/webhook/twilio/voice" in out
        code, out, _ = await assistants(fix=False)
        assert code == 0 and "warning" not in out


def test_twilio_number_checks():
    from console.providers.twilio.checks import check_number, patch_number

    here = {
        "phone_number": "+14155550188",
        "voice_url": "https://voice.example.test/webhook/twilio/voice",
        "status_callback": "https://voice.example.test/webhook/twilio/status",
    }
    assert check_number(here, public_url="https://voice.example.test") == []
    assert patch_number(here, public_url="https://voice.example.test") == {}
    assert [c.code for c in check_number(here, public_url=None)] == ["public-url-unknown"]
    elsewhere = {**here, "voice_url": "https://mine.example/twiml?key=s3cret"}
    checks = check_number(elsewhere, public_url="https://voice.example.test")
    assert [c.code for c in checks] == ["voice-url-elsewhere"] and "s3cret" not in checks[0].message
    own_stream = '<Response><Connect><Stream url="wss://agent.example/media"/></Connect></Response>'
    codes = [c.code for c in check_number(here, public_url="https://voice.example.test", voice_twiml=own_stream)]
    assert codes == ["stream-not-tapped"]
    tapped = '<Response><Connect><Stream url="{stream_url}"/></Connect></Response>'
    assert check_number(here, public_url="https://voice.example.test", voice_twiml=tapped) == []
