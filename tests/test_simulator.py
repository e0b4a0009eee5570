"""The simulated Vapi platform over real sockets: REST -> scenario -> signed webhooks
-> the real receiver -> history; control and listen URLs; scenario files; simulate."""

from __future__ import annotations

import argparse
import array
import asyncio
import math
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from console.commands.simulate import register as add_simulate_parser
from console.core.policy import Policy, ToolRule
from console.simulator import SimulatedPlatform, load_scenario
from console.simulator.cli import TargetNotFound, run_simulate, simulate, simulate_report
from console.simulator.scenarios import BargeInStep, ScenarioError, ToolsStep, bundled_scenarios, parse_scenario
from console.simulator.vapi import DEFAULTS_ID, PHONE_NUMBER_ID, RECEPTIONIST_ID
from console.store import queries
from tests.helpers.receiver import start_service
from tests.helpers.secrets import SIMULATOR_KEY, VAPI_SECRET

OVERRIDE = Policy(tools={"default": ToolRule(action="override", result='{"ok": true}')})
DIAL = {"assistantId": RECEPTIONIST_ID, "phoneNumberId": PHONE_NUMBER_ID, "customer": {"number": "+14155550142"}}


async def _stack(tmp_path: Path, *, policy: Policy = OVERRIDE, speed: float = 40, scenario=None):
    service, _ = await start_service(tmp_path, policy=policy)
    platform = SimulatedPlatform(
        service.server.url + "/webhook/vapi", webhook_secret=VAPI_SECRET, speed=speed, scenario=scenario
    )
    await platform.start()
    client = httpx.AsyncClient(base_url=platform.url, headers={"authorization": f"Bearer {SIMULATOR_KEY}"}, timeout=10)
    return service, platform, client


@pytest.fixture
async def stack(tmp_path):
    service, platform, client = await _stack(tmp_path)
    yield service, platform, client
    await client.aclose()
    await platform.close()
    await service.close()


async def _wait_ended(client: httpx.AsyncClient, call_id: str, timeout: float = 8.0) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            call = (await client.get(f"/call/{call_id}")).json()
            if call["status"] == "ended":
                return call
            await asyncio.sleep(0.02)


async def _wait_status(client: httpx.AsyncClient, call_id: str, status: str) -> None:
    async with asyncio.timeout(5):
        while (await client.get(f"/call/{call_id}")).json()["status"] != status:
            await asyncio.sleep(0.01)


async def _history(service, call_id: str) -> dict:
    await asyncio.sleep(0.05)  # the receiver's group commit
    detail = await queries.get_call(service.store, call_id)
    assert detail is not None
    return detail


async def _assistant_finals(service, call_id: str) -> list[str]:
    detail = await queries.get_call(service.store, call_id)
    events = detail["events"] if detail else []
    return [e["text"] for e in events if e["kind"] == "transcript.final" and e["role"] == "assistant"]


async def test_dialed_call_whole_timeline_lands_in_history(stack):
    service, platform, client = stack
    created = await client.post("/call", json=DIAL)
    assert created.status_code == 201
    call = created.json()
    assert call["status"] == "queued" and call["type"] == "outboundPhoneCall"
    assert call["assistantId"] == RECEPTIONIST_ID and call["phoneNumberId"] == PHONE_NUMBER_ID
    assert call["monitor"]["listenUrl"] == f"ws://{platform.url[7:]}/{call['id']}/listen"
    assert call["monitor"]["controlUrl"] == f"{platform.url}/{call['id']}/control"

    ended = await _wait_ended(client, call["id"])
    assert ended["endedReason"] == "customer-ended-call" and ended["analysis"]["summary"]
    assert "AI: Thanks for calling" in ended["artifact"]["transcript"]

    detail = await _history(service, call["id"])
    events = detail["events"]
    kinds = [e["kind"] for e in events]
    statuses = [e["status"] for e in events if e["kind"] == "call.status"]
    assert statuses[:3] == ["queued", "ringing", "in-progress"] and statuses[-1] == "ended"
    for role in ("user", "assistant"):
        assert any(e["kind"] == "transcript.partial" and e["role"] == role for e in events)
        assert any(e["kind"] == "transcript.final" and e["role"] == role for e in events)
    barge_ins = [e for e in events if e["kind"] == "barge_in"]
    assert len(barge_ins) == 1
    assert barge_ins[0]["cut_text"] == "Before I look, could you tell me your full name and date of birth?"
    # Parallel calls in one message, each decided by the receiver's rule.
    assert {t["name"] for t in detail["tool_calls"]} == {"check_availability", "lookup_patient", "book_appointment"}
    assert all(t["decision"] == "overridden" and t["by"] == "rule" for t in detail["tool_calls"])
    assert kinds.count("tool.requested") == 3 and kinds.count("tool.decided") == 3
    # The receiver's actual answer is what the assistant says next.
    finals = [e["text"] for e in events if e["kind"] == "transcript.final" and e["role"] == "assistant"]
    assert 'You\'re booked: {"ok": true}.' in finals
    ended_event = next(e for e in events if e["kind"] == "call.ended")
    assert ended_event["reason"] == "customer-ended-call" and ended_event["summary"]
    assert ended_event["duration_s"] is not None and ended_event["cost"] is not None
    assert all(record.status == 200 for record in platform.deliveries)
    assert not any(record.bad_reply for record in platform.deliveries)


async def test_rest_api_errors_and_lists(stack):
    _, platform, client = stack
    async with httpx.AsyncClient(base_url=platform.url) as anonymous:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": SIMULATOR_KEY}):
            response = await anonymous.get("/assistant", headers=headers)
            assert response.status_code == 401
            body = response.json()
            assert body["statusCode"] == 401 and body["error"] == "Unauthorized" and body["message"]

    unknown = await client.post("/call", json={**DIAL, "metadata": {"x": 1}})
    assert unknown.status_code == 400
    assert unknown.json() == {
        "message": ["property metadata should not exist"],
        "error": "Bad Request",
        "statusCode": 400,
    }
    not_e164 = await client.post("/call", json={**DIAL, "customer": {"number": "415-555-0142"}})
    assert not_e164.status_code == 400 and "E.164" in not_e164.json()["message"][0]
    no_number = await client.post("/call", json={**DIAL, "phoneNumberId": "nope"})
    assert no_number.status_code == 400 and "Phone Number" in no_number.json()["message"]
    no_assistant = await client.post("/call", json={**DIAL, "assistantId": "nope"})
    assert no_assistant.status_code == 400
    missing = await client.get("/call/does-not-exist")
    assert missing.status_code == 404 and missing.json()["statusCode"] == 404
    assert (await client.get("/nowhere")).status_code == 404

    assistants = (await client.get("/assistant")).json()
    assert isinstance(assistants, list) and {a["id"] for a in assistants} == {RECEPTIONIST_ID, DEFAULTS_ID}
    by_id = {a["id"]: a for a in assistants}
    assert "transcript" in by_id[RECEPTIONIST_ID]["serverMessages"]
    assert "transcript" not in by_id[DEFAULTS_ID]["serverMessages"]
    assert all(a["server"]["url"] == platform.webhook_url for a in assistants)
    numbers = (await client.get("/phone-number")).json()
    assert numbers[0]["id"] == PHONE_NUMBER_ID and numbers[0]["server"]["url"] == platform.webhook_url
    assert {t["function"]["name"] for t in (await client.get("/tool")).json()} >= {"check_availability"}
    assert (await client.get("/call")).json() == []

    patched = await client.patch(
        f"/assistant/{DEFAULTS_ID}", json={"serverMessages": [*by_id[DEFAULTS_ID]["serverMessages"], "transcript"]}
    )
    assert patched.status_code == 200 and "transcript" in patched.json()["serverMessages"]
    created = await client.post("/assistant", json={"name": "mine"})
    assert created.status_code == 201 and (await client.get(f"/assistant/{created.json()['id']}")).status_code == 200


async def test_control_say_and_end_call_change_the_running_call(tmp_path):
    service, platform, client = await _stack(tmp_path, speed=20, scenario=load_scenario("silent-caller"))
    try:
        call = (await client.post("/call", json=DIAL)).json()
        control = call["monitor"]["controlUrl"]
        await _wait_status(client, call["id"], "in-progress")
        async with httpx.AsyncClient() as plain:  # the control URL needs no API key
            said = await plain.post(control, json={"type": "say", "content": "This is the operator speaking."})
            assert said.status_code == 200
            async with asyncio.timeout(3):  # spoken once the greeting's turn is over
                while "This is the operator speaking." not in await _assistant_finals(service, call["id"]):
                    await asyncio.sleep(0.02)
            assert (await plain.post(control, json={"type": "dance"})).status_code == 400
            assert (await plain.post(control, json={"message": {"type": "end-call"}})).status_code == 200
            ended = await _wait_ended(client, call["id"], timeout=3)
            assert (await plain.post(control, json={"type": "end-call"})).status_code == 400
            assert (await plain.post(f"{platform.url}/unknown/control", json={"type": "end-call"})).status_code == 404
        assert ended["endedReason"] == "assistant-ended-call"
        detail = await _history(service, call["id"])
        finals = await _assistant_finals(service, call["id"])
        assert "This is the operator speaking." in finals
        # Ended by control long before the scenario's own goodbye.
        assert not any("end the call now" in text for text in finals)
        assert detail["call"]["ended_reason"] == "assistant-ended-call"
    finally:
        await client.aclose()
        await platform.close()
        await service.close()


def _levels(frame: bytes) -> tuple[float, float]:
    samples = array.array("h", frame)
    left, right = samples[0::2], samples[1::2]
    return (math.sqrt(sum(v * v for v in left) / len(left)), math.sqrt(sum(v * v for v in right) / len(right)))


async def test_listen_stream_levels_follow_the_speaker(tmp_path):
    scenario = parse_scenario(
        {
            "name": "levels",
            "steps": [
                {
                    "kind": "say",
                    "role": "user",
                    "text": "one two three four five six seven eight nine ten eleven twelve",
                },
                {"kind": "silence", "seconds": 2},
                {"kind": "say", "role": "assistant", "text": "one two three four five six seven eight nine ten eleven"},
            ],
        },
        "test",
    )
    service, platform, client = await _stack(tmp_path, speed=10, scenario=scenario)
    try:
        call = (await client.post("/call", json=DIAL)).json()
        levels: list[tuple[float, float]] = []
        async with connect(call["monitor"]["listenUrl"]) as ws:
            async for frame in ws:
                assert isinstance(frame, bytes) and len(frame) == 320 * 4  # 20 ms of s16le stereo at 16 kHz
                levels.append(_levels(frame))
        customer = [i for i, (c, a) in enumerate(levels) if c > 1000 and a < 200]
        assistant = [i for i, (c, a) in enumerate(levels) if a > 1000 and c < 200]
        quiet = [i for i, (c, a) in enumerate(levels) if c < 200 and a < 200]
        assert len(customer) >= 5 and len(assistant) >= 5 and quiet
        assert max(customer) < min(assistant)  # the caller spoke first, then the assistant
        assert any(max(customer) < i < min(assistant) for i in quiet)  # the silence between
    finally:
        await client.aclose()
        await platform.close()
        await service.close()


async def test_slow_tool_sends_hang_and_the_timeout_answer_is_spoken(tmp_path):
    scenario = parse_scenario(
        {
            "name": "slow",
            "steps": [
                {"kind": "say", "role": "user", "text": "Where is my invoice?"},
                {
                    "kind": "tools",
                    "calls": [{"name": "fetch_invoice"}],
                    "filler": None,
                    "say": "Found {fetch_invoice}.",
                    "on_error": "Sorry: {error}",
                    "timeout_seconds": 3,
                    "hang_after": 2,
                },
            ],
        },
        "test",
    )
    hold = Policy(
        tools={
            "default": ToolRule(action="hold", timeout_seconds=0.6, on_timeout="reject", reason="Nobody approved it.")
        }
    )
    service, platform, client = await _stack(tmp_path, policy=hold, speed=20, scenario=scenario)
    try:
        call = (await client.post("/call", json=DIAL)).json()
        await _wait_ended(client, call["id"])
        detail = await _history(service, call["id"])
        kinds = [e["kind"] for e in detail["events"]]
        assert kinds.index("tool.requested") < kinds.index("call.hang") < kinds.index("tool.decided")
        assert detail["tool_calls"][0]["by"] == "timeout" and detail["tool_calls"][0]["decision"] == "rejected"
        finals = [e["text"] for e in detail["events"] if e["kind"] == "transcript.final" and e["role"] == "assistant"]
        assert finals[-1] == "Sorry: Nobody approved it."
    finally:
        await client.aclose()
        await platform.close()
        await service.close()


def test_bundled_scenarios_load_and_the_default_has_a_barge_in_and_a_tool_call():
    assert {"booking", "barge-in-storm", "slow-tool", "silent-caller", "transfer"} <= set(bundled_scenarios())
    for name in bundled_scenarios():
        load_scenario(name)
    default = load_scenario(None)
    assert default.name == "booking"
    assert any(isinstance(step, BargeInStep) for step in default.steps)
    assert any(isinstance(step, ToolsStep) and len(step.calls) > 1 for step in default.steps)


def test_bad_scenario_files_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "mine.toml"
    bad.write_text(
        '[[steps]]\nkind = "tools"\ncalls = [{ name = "a" }]\nsay = "{b}"\n'
        '[[steps]]\nkind = "say"\nrole = "robot"\ntext = "hi"\n'
    )
    with pytest.raises(ScenarioError) as err:
        load_scenario(bad)
    message = str(err.value)
    assert str(bad) in message and "steps[0]" in message and "{b}" in message and "steps[1].role" in message
    (tmp_path / "broken.toml").write_text("steps = [")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(tmp_path / "broken.toml")
    with pytest.raises(ScenarioError, match="bundled"):
        load_scenario("no-such-scenario")


async def test_transfer_scenario_forwards_then_ends(tmp_path):
    service, platform, client = await _stack(tmp_path, speed=50, scenario=load_scenario("transfer"))
    try:
        call = (await client.post("/call", json=DIAL)).json()
        ended = await _wait_ended(client, call["id"])
        assert ended["endedReason"] == "assistant-forwarded-call"
        detail = await _history(service, call["id"])
        statuses = [e["status"] for e in detail["events"] if e["kind"] == "call.status"]
        assert statuses[-3:] == ["forwarding", "ended", "ended"]
    finally:
        await client.aclose()
        await platform.close()
        await service.close()


@pytest.mark.e2e
async def test_simulate_drives_a_receiver_and_reports(tmp_path):
    service, _ = await start_service(tmp_path, policy=OVERRIDE)
    try:
        records, elapsed = await simulate(
            service.server.url + "/webhook/vapi",
            load_scenario("booking"),
            calls=50,
            concurrency=10,
            speed=50,
            settings=service.settings,
            secret=VAPI_SECRET,
        )
        report, ok = simulate_report(records, 50, elapsed)
        assert ok, report
        assert "tool-call replies of the wrong shape: 0" in report and "p99" in report
        await asyncio.sleep(0.05)
        calls = await queries.list_calls(service.store)
        calls = await queries.list_calls(service.store, limit=100)
        assert len(calls) == 50 and all(c["status"] == "ended" for c in calls)
        assert (await queries.counts(service.store))["deliveries"] == len(records)
    finally:
        await service.close()


async def _simulate_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers(dest="command"))
    return await run_simulate(parser.parse_args(["simulate", *argv]))


async def test_simulate_appends_the_vapi_path_to_a_bare_base_url(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VOICE_CONSOLE_VAPI_WEBHOOK_SECRET", VAPI_SECRET)
    service, _ = await start_service(tmp_path, policy=OVERRIDE)
    try:
        base = service.server.url
        assert await _simulate_command(["--target", base, "--scenario", "silent-caller", "--speed", "80"]) == 0
        captured = capsys.readouterr()
        assert f"posting to {base}/webhook/vapi" in captured.err
        assert "failed deliveries: 0" in captured.out
        [call] = await queries.list_calls(service.store)
        assert call["provider"] == "vapi" and call["status"] == "ended"
    finally:
        await service.close()


async def test_simulate_stops_early_when_the_first_deliveries_all_get_404(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VOICE_CONSOLE_VAPI_WEBHOOK_SECRET", VAPI_SECRET)
    service, _ = await start_service(tmp_path, policy=OVERRIDE)
    try:
        wrong = service.server.url + "/hooks/vapi"
        code = await _simulate_command(["--target", wrong, "--calls", "300", "--concurrency", "2", "--speed", "80"])
        captured = capsys.readouterr()
        assert code == 1
        assert f"deliveries to {wrong} all got 404" in captured.err
        assert f"--target {service.server.url}/webhook/vapi" in captured.err
        # Stopped after the first few deliveries, not 300 calls' worth (about 40 each).
        assert service.server.stats.requests < 40, service.server.stats.requests
        assert service.server.stats.by_class[4] == service.server.stats.requests
    finally:
        await service.close()


@pytest.mark.parametrize("provider", ["retell", "twilio"])
async def test_dialect_simulations_stop_early_on_a_wrong_base_url(tmp_path, provider):
    service, _ = await start_service(tmp_path, policy=OVERRIDE)
    try:
        with pytest.raises(TargetNotFound) as caught:
            await simulate(
                service.server.url + "/not-the-receiver",
                load_scenario("booking"),
                calls=100,
                concurrency=2,
                speed=80,
                provider=provider,
            )
        assert f"--target {service.server.url}" in str(caught.value)
        assert service.server.stats.requests < 40
    finally:
        await service.close()
