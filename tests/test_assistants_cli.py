"""`voice-console assistants [--fix]` against the simulated platform's REST API."""

import argparse
import io

import httpx

from console.commands.assistants import run_assistants
from console.config import load_settings
from console.secrets import SecretStore
from console.simulator.vapi import SimulatedPlatform


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
