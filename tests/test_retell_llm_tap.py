"""The Retell custom-LLM tap over real sockets: Retell's side (`RetellCaller`) → the receiver's
`/llm/retell/…` → a small real LLM server (`LlmServer`), every frame compared both ways."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from console.core.events import BargeIn, Raw, ToolDecided, ToolRequested, TranscriptFinal
from console.simulator.retell_llm import CONVERSATION, GREETING, LlmServer, RetellCaller

TOKEN = "tap-token-for-tests-0123456789"


def tap_url(service, token: str = TOKEN) -> str:
    return f"ws://127.0.0.1:{service.server.port}/llm/retell/{token}"


async def start(start_receiver, forward_to: str | None):
    overrides = {"retell": {"llm_forward_to": forward_to}} if forward_to else {}
    return await start_receiver(secrets={"retell_llm_token": TOKEN}, **overrides)


async def history_events(service, call_id: str) -> list[dict]:
    """The call's events in the history, once the tap's last one (`llm.closed`) is there."""
    for _ in range(200):
        rows = await service.store.fetchall("SELECT kind, data FROM events WHERE call_id = ? ORDER BY id", (call_id,))
        events = [json.loads(row["data"]) | {"kind": row["kind"]} for row in rows]
        if any(event.get("type") == "llm.closed" for event in events):
            return events
        await asyncio.sleep(0.025)
    raise AssertionError(f"the tap's events for {call_id} never reached the history")


async def test_frames_pass_unchanged_both_ways_and_the_barge_in_is_seen_live(start_receiver):
    async with LlmServer(chunk_delay_s=0.05) as llm:
        service, seen = await start(start_receiver, llm.url)
        caller = RetellCaller(tap_url(service), "call_tap_1")
        result = await caller.run()

        # Byte for byte, in order, each way (the server sent its config first, Retell its ping).
        assert llm.received["call_tap_1"] == result.sent
        assert result.received == llm.sent["call_tap_1"][: len(result.received)]
        assert llm.paths == ["/llm/call_tap_1"]  # the call id appended as Retell does
        assert result.close_code == 1000
        await asyncio.sleep(0.2)
        assert llm.closes["call_tap_1"] == (1000, "call ended")  # Retell's close passed on

        events = [event for event in seen if event.call_id == "call_tap_1"]
        barge_ins = [event for event in events if isinstance(event, BargeIn)]
        assert len(barge_ins) == 1
        first_answer = "".join(
            json.loads(frame)["content"]
            for frame in llm.sent["call_tap_1"]
            if json.loads(frame).get("response_type") == "response" and json.loads(frame)["response_id"] == 1
        )
        assert first_answer.startswith(result.spoken)
        assert barge_ins[0].cut_text == first_answer[len(result.spoken) :].strip()
        assert barge_ins[0].turn_id == "1" and barge_ins[0].source == "llm-response-superseded"

        finals = [event.text for event in events if isinstance(event, TranscriptFinal)]
        assert finals[0] == GREETING and CONVERSATION[0][0] in finals
        turns = [event.data["turn"] for event in events if isinstance(event, Raw) and event.type == "llm.turntaking"]
        assert turns == ["agent_turn", "user_turn", "agent_turn"]  # changes only: the cut-off turn sends none
        requested = [event for event in events if isinstance(event, ToolRequested)]
        assert [(event.name, event.arguments) for event in requested] == [("book_table", CONVERSATION[1][2][1])]
        ran = [event for event in events if isinstance(event, ToolDecided)]
        assert ran[0].decision == "ran" and ran[0].by == "agent" and "BN-6107" in (ran[0].result or "")
        responses = [event.data for event in events if isinstance(event, Raw) and event.type == "llm.response"]
        assert [(r["response_id"], r["state"]) for r in responses] == [
            (0, "complete"),
            (1, "superseded"),
            (2, "complete"),
        ]
        closed = next(event.data for event in events if isinstance(event, Raw) and event.type == "llm.closed")
        assert closed["closed_by"] == "Retell" and closed["code"] == 1000 and closed["barge_ins"] == 1

        # What was seen is in the history, the token nowhere in it.
        stored = await history_events(service, "call_tap_1")
        assert [event["kind"] for event in stored].count("barge_in") == 1
        assert TOKEN not in json.dumps(stored)


async def test_the_operator_says_through_the_tap_as_an_agent_interrupt(start_receiver):
    async with LlmServer(chunk_delay_s=0.05) as llm:
        service, seen = await start(start_receiver, llm.url)
        async with connect(tap_url(service) + "/call_tap_say") as retell:
            assert json.loads(await retell.recv())["response_type"] == "config"
            for _ in range(50):
                if "call_tap_say" in service.taps:
                    break
                await asyncio.sleep(0.01)
            await service.taps.get("call_tap_say").say("Sorry, one moment please.")
            frames = [json.loads(await retell.recv()) for _ in range(2)]
        interrupt = next(frame for frame in frames if frame["response_type"] == "agent_interrupt")
        assert interrupt["content"] == "Sorry, one moment please." and interrupt["content_complete"] is True
        assert all(json.loads(frame)["response_type"] != "agent_interrupt" for frame in llm.sent["call_tap_say"])
        await asyncio.sleep(0.1)
        said = [e for e in seen if isinstance(e, Raw) and e.type == "llm.agent_interrupt"]
        assert said[0].data["by"] == "operator" and said[0].data["content"] == "Sorry, one moment please."


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/llm/retell/wrong-token/call_x", 403),
        ("/llm/retell/call_x", 403),
        ("/llm/retell/call_x?token=no", 403),
        (f"/llm/retell/{TOKEN}/call_x/more", 404),
    ],
)
async def test_the_tap_refuses_a_socket_without_its_token(start_receiver, path, status):
    async with LlmServer() as llm:
        service, _ = await start(start_receiver, llm.url)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{service.server.port}{path}"):
                pass
        assert refused.value.response.status_code == status
        assert llm.paths == []  # nothing reached the user's server


async def test_the_token_may_come_as_a_query_parameter(start_receiver):
    async with LlmServer() as llm:
        service, _ = await start(start_receiver, llm.url)
        url = f"ws://127.0.0.1:{service.server.port}/llm/retell/call_q?token={TOKEN}"
        async with connect(url) as retell:
            assert json.loads(await retell.recv())["response_type"] == "config"
        assert llm.paths == ["/llm/call_q"]


async def test_a_plain_get_on_the_tap_says_it_wants_a_websocket(start_receiver):
    service, _ = await start(start_receiver, "ws://127.0.0.1:9/llm")
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{service.server.url}/llm/retell/{TOKEN}/call_x")
    assert answer.status_code == 426


async def test_the_users_server_down_closes_retells_side_with_the_reason(start_receiver):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{probe.getsockname()[1]}/llm"
    service, seen = await start(start_receiver, dead)
    result = await RetellCaller(tap_url(service), "call_tap_down", timeout_s=5).run()
    assert result.close_code == 1011
    assert "could not be reached" in result.close_reason and "connection refused" in result.close_reason
    stored = await history_events(service, "call_tap_down")
    closed = [event for event in stored if event.get("type") == "llm.closed"]
    assert closed and closed[0]["data"]["code"] == 1011 and closed[0]["data"]["closed_by"] == "the console"
    assert not any(isinstance(event, BargeIn) for event in seen)


async def test_without_a_server_to_relay_to_the_tap_says_what_to_set(start_receiver):
    service, _ = await start(start_receiver, None)
    result = await RetellCaller(tap_url(service), "call_tap_none", timeout_s=5).run()
    assert result.close_code == 1011 and "--retell-llm-forward-to" in result.close_reason


async def test_the_users_server_closing_closes_retells_side_with_the_same_code(start_receiver):
    from websockets.asyncio.server import serve

    async def hang_up(ws):
        await ws.close(4000, "llm quota exceeded")

    async with serve(hang_up, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        service, _ = await start(start_receiver, f"ws://127.0.0.1:{port}/llm")
        result = await RetellCaller(tap_url(service), "call_tap_quota", timeout_s=5).run()
    assert (result.close_code, result.close_reason) == (4000, "llm quota exceeded")
    stored = await history_events(service, "call_tap_quota")
    closed = next(event for event in stored if event.get("type") == "llm.closed")
    assert closed["data"]["closed_by"] == "the LLM server" and closed["data"]["code"] == 4000


async def test_malformed_frames_from_either_side_are_relayed_counted_and_shown(start_receiver):
    async with LlmServer() as llm:
        service, seen = await start(start_receiver, llm.url)
        async with connect(tap_url(service) + "/call_tap_bad") as retell:
            await retell.recv()  # config
            await retell.send("this is not json")
            await retell.send('{"no_type": 1}')
            await retell.send(json.dumps({"interaction_type": "ping_pong", "timestamp": 7}))
            # The relay is still up: the ping comes back through it.
            while json.loads(await retell.recv()).get("response_type") != "ping_pong":
                pass
        await asyncio.sleep(0.2)
    assert llm.received["call_tap_bad"][:2] == ["this is not json", '{"no_type": 1}']
    malformed = [e.data for e in seen if isinstance(e, Raw) and e.type == "llm.malformed"]
    assert [m["count"] for m in malformed] == [1, 2] and all(m["sent_by"] == "Retell" for m in malformed)
    closed = next(e.data for e in seen if isinstance(e, Raw) and e.type == "llm.closed")
    assert closed["malformed_from_retell"] == 2 and closed["malformed_from_server"] == 0


async def test_voice_console_call_say_reaches_a_tapped_call_as_an_agent_interrupt(tmp_path):
    """`serve` in a subprocess, Retell's side and the LLM server here, `voice-console call` in between."""
    from tests.helpers.cli import Serve, cli

    async with LlmServer(chunk_delay_s=0.05) as llm:
        env = {"VOICE_CONSOLE_RETELL_LLM_TOKEN": TOKEN}
        serve = await asyncio.to_thread(Serve, tmp_path / "history.db", "--retell-llm-forward-to", llm.url, env=env)
        try:
            async with connect(f"ws://127.0.0.1:{serve.port}/llm/retell/{TOKEN}/call_cli_say") as retell:
                assert json.loads(await retell.recv())["response_type"] == "config"
                await retell.send(json.dumps({"interaction_type": "update_only", "transcript": []}))
                listed = await asyncio.to_thread(cli, tmp_path / "history.db", "call", "list", env=env)
                assert listed.returncode == 0, listed.stderr
                assert "call_cli_say  retell" in listed.stdout and "(through the tap)" in listed.stdout
                said = await asyncio.to_thread(
                    cli, tmp_path / "history.db", "call", "say", "cli_s", "Please hold the line.", env=env
                )
                assert said.returncode == 0, said.stderr
                assert said.stdout.strip() == "call_cli_say: say sent through the tap"
                while (frame := json.loads(await retell.recv()))["response_type"] != "agent_interrupt":
                    pass
                assert frame["content"] == "Please hold the line." and frame["content_complete"] is True

                refused = await asyncio.to_thread(cli, tmp_path / "history.db", "call", "say", "nope", "hi", env=env)
                assert refused.returncode == 1 and "No call 'nope'" in refused.stderr
                empty = await asyncio.to_thread(cli, tmp_path / "history.db", "call", "say", "call_cli", " ", env=env)
                assert empty.returncode == 2 and "needs" in empty.stderr
        finally:
            code, out, err = await asyncio.to_thread(serve.stop)
        assert TOKEN not in out + err
        assert any('"llm.agent_interrupt"' in line and '"operator"' in line for line in out.splitlines())


async def test_a_server_that_stops_reading_back_pressures_retell_instead_of_filling_memory(start_receiver):
    from websockets.asyncio.server import serve

    stop = asyncio.Event()

    async def never_reads(ws):
        await stop.wait()
        ws.transport.abort()  # gone without a close frame: the tap closes Retell's side with 1011

    frame = json.dumps({"interaction_type": "update_only", "transcript": [{"role": "user", "content": "x" * 100_000}]})
    async with serve(never_reads, "127.0.0.1", 0, max_queue=1) as server:
        port = server.sockets[0].getsockname()[1]
        service, seen = await start(start_receiver, f"ws://127.0.0.1:{port}/llm")
        async with connect(tap_url(service) + "/call_tap_slow", max_queue=None) as retell:
            accepted = 0
            try:
                while accepted < 5_000:  # 500 MB, if anything buffered without bound
                    await asyncio.wait_for(retell.send(frame), 1.0)
                    accepted += 1
            except TimeoutError:
                pass
            # said while it lasts, not only once the socket closes
            stalled = [e for e in seen if e.kind == "raw" and e.type == "llm.stalled"]
            stop.set()
    # The sockets' bounded queues and the kernel's buffers, no more: a few hundred frames at most.
    assert 10 < accepted < 400, accepted
    assert len(stalled) == 1, stalled  # once per stall
    assert stalled[0].data["slow_side"] == "the LLM server" and stalled[0].data["waited_s"] >= 0.5
    note = stalled[0].data["note"]
    assert note.startswith("the LLM server is not reading the custom-LLM socket: a frame from Retell")


async def test_a_call_to_the_simulated_custom_llm_agent_runs_through_the_tap(start_receiver):
    """The simulated Retell's custom-LLM agent points at the tap: dialing it opens the socket, the
    conversation (with its barge-in) runs through to the LLM server, the webhooks bracket it."""
    from console.providers.retell.client import RetellClient
    from console.simulator.retell import LLM_AGENT_ID, SimulatedRetell
    from tests.helpers.secrets import RETELL_KEY

    async with LlmServer(chunk_delay_s=0.05) as llm:
        service, seen = await start(start_receiver, llm.url)
        platform = SimulatedRetell(
            service.server.url + "/webhook/retell", api_key=RETELL_KEY, speed=20, llm_websocket_url=tap_url(service)
        )
        async with platform:
            async with RetellClient(RETELL_KEY, base_url=platform.url, max_retries=0) as client:
                agents = {agent["agent_id"]: agent for agent in await client.list_agents()}
                assert agents[LLM_AGENT_ID]["response_engine"]["type"] == "custom-llm"
                number = (await client.list_phone_numbers())[0]["phone_number"]
                call = await client.create_phone_call(
                    from_number=number, to_number="+14155550142", override_agent_id=LLM_AGENT_ID
                )
            call_id = call["call_id"]
            stored = await history_events(service, call_id)
            for _ in range(200):
                if any(event["kind"] == "call.ended" for event in stored):
                    break
                await asyncio.sleep(0.05)
                stored = await history_events(service, call_id)
    assert llm.paths == [f"/llm/{call_id}"]
    kinds = [event["kind"] for event in stored]
    assert kinds.count("barge_in") == 1 and "call.ended" in kinds and "tool.requested" in kinds
    barge_in = next(event for event in stored if event["kind"] == "barge_in")
    assert barge_in["source"] == "llm-response-superseded" and barge_in["cut_text"]
    # The webhooks' word times told the same interruption (kept once) and who spoke when.
    speech = [(event["kind"], event["role"]) for event in stored if event["kind"].startswith("speech.")]
    assert ("speech.started", "user") in speech and ("speech.stopped", "assistant") in speech
    finals = [event["text"] for event in stored if event["kind"] == "transcript.final"]
    assert finals.count(GREETING) == 1  # told live by the tap, again by the webhooks: shown once
    assert any(e.call_id == call_id and isinstance(e, BargeIn) for e in seen)  # live, not only stored


async def test_retells_side_pings_and_gives_up_on_a_server_that_stops_echoing():
    """The simulated Retell honours ping_pong as Retell does: a ping every interval once the server
    asks for auto_reconnect, the socket closed after the echoes stop."""
    from websockets.asyncio.server import serve

    async def echoes_twice(ws):
        await ws.send(json.dumps({"response_type": "config", "config": {"auto_reconnect": True}}))
        echoed = 0
        async for frame in ws:
            data = json.loads(frame)
            if data.get("interaction_type") == "ping_pong" and echoed < 2:
                echoed += 1
                await ws.send(json.dumps({"response_type": "ping_pong", "timestamp": data["timestamp"]}))

    async with serve(echoes_twice, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        caller = RetellCaller(
            f"ws://127.0.0.1:{port}/llm", "call_ping", ping_interval_s=0.05, echo_timeout_s=0.3, timeout_s=5
        )
        result = await caller.run()
    pings = [frame for frame in result.sent if json.loads(frame)["interaction_type"] == "ping_pong"]
    assert result.keepalive_lost and len(pings) >= 4
    assert result.close_code == 1011


async def test_stopping_the_receiver_closes_both_sides_of_a_tapped_call(tmp_path):
    from tests.helpers.receiver import start_service

    async with LlmServer() as llm:
        service, _ = await start_service(
            tmp_path, secrets={"retell_llm_token": TOKEN}, retell={"llm_forward_to": llm.url}
        )
        async with connect(tap_url(service) + "/call_tap_stop") as retell:
            await retell.recv()  # config: the relay is up
            await service.close()
            with pytest.raises(ConnectionClosed):
                while True:
                    await retell.recv()
            assert retell.protocol.close_rcvd is not None and retell.protocol.close_rcvd.code == 1001
        for _ in range(100):
            if "call_tap_stop" in llm.closes:
                break
            await asyncio.sleep(0.02)
        assert llm.closes["call_tap_stop"][0] == 1001  # the going-away passed on
