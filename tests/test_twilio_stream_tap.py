"""The Twilio Media Streams tap over real sockets: the simulated Twilio places a call into the console,
whose TwiML connects the call's stream to the tap, which relays it to a small real agent server
here — one that clears its audio when the caller cuts in, one that never does."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from datetime import UTC, datetime, timedelta

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from console.core.events import BargeIn, Raw, SpeechStarted, SpeechStopped
from console.providers.twilio.client import TwilioClient
from console.providers.twilio.tap import TwilioStreamTap
from console.simulator.scenarios import EndStep, Scenario, SilenceStep
from console.simulator.twilio import DIALED_NUMBER, SimulatedTwilio
from tests.helpers.secrets import PUBLIC_URL, TWILIO_TOKEN
from tests.helpers.twilio_agent import CUT_IN, TOKEN, VOICED, Agent


async def call_through_the_tap(start_receiver, agent: Agent):
    async with serve(agent, "127.0.0.1", 0) as server:
        agent_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/agent"
        service, seen = await start_receiver(
            secrets={"twilio_stream_token": TOKEN}, twilio={"stream_forward_to": agent_url}
        )
        async with SimulatedTwilio(
            auth_token=TWILIO_TOKEN, scenario=CUT_IN, tunnels={PUBLIC_URL: service.server.url}
        ) as platform:
            async with TwilioClient(platform.account_sid, TWILIO_TOKEN, base_url=platform.url) as api:
                call = await api.create_call(
                    to="+14155550142",
                    from_=DIALED_NUMBER,
                    url=PUBLIC_URL + "/webhook/twilio/voice",
                    status_callback=PUBLIC_URL + "/webhook/twilio/status",
                )
            player = platform.players[call["sid"]]
            async with asyncio.timeout(20):
                await player.ended.wait()
            for _ in range(100):  # the tap's last events reach the history after the stream closes
                if any(isinstance(e, Raw) and e.type == "stream.closed" for e in seen):
                    break
                await asyncio.sleep(0.05)
    return service, seen, player, call["sid"]


async def test_an_agent_that_clears_is_measured_from_the_audio(start_receiver):
    agent = Agent(clears=True)
    service, seen, player, sid = await call_through_the_tap(start_receiver, agent)
    # Relayed unchanged, in order, both ways.
    from_agent = [json.dumps(f, separators=(",", ":")) for f in player.agent_frames]
    assert from_agent == agent.sent
    assert [json.loads(m)["event"] for m in agent.received[:2]] == ["connected", "start"]
    events = [e for e in seen if e.call_id == sid]
    barge_ins = [e for e in events if isinstance(e, BargeIn)]
    assert len(barge_ins) == 1 and barge_ins[0].source == "media-stream"
    assert barge_ins[0].cut_text and barge_ins[0].cut_text.startswith("part-")  # the marks the clear dropped
    stopped = [e for e in events if isinstance(e, SpeechStopped) and e.role == "assistant"]
    time_to_stop = (stopped[0].at - barge_ins[0].at).total_seconds() * 1000
    assert 0 < time_to_stop < 600, time_to_stop  # the agent's 60 ms of listening, the relay, the VAD's edge
    note = next(e.data for e in events if isinstance(e, Raw) and e.type == "stream.barge_in")
    assert note["cleared"] is True and note["time_to_stop_ms"] == round(time_to_stop)
    assert any(isinstance(e, SpeechStarted) and e.role == "user" for e in events)
    # Twilio echoed the marks the clear dropped, as it does.
    echoed = [f for f in (json.loads(m) for m in agent.received) if f.get("event") == "mark"]
    assert {f["mark"]["name"] for f in echoed} >= set(barge_ins[0].cut_text.split(", "))
    rows = await service.store.fetchall("SELECT kind, data FROM events WHERE call_id = ? ORDER BY id", (sid,))
    assert [r["kind"] for r in rows].count("barge_in") == 1
    assert not any("payload" in r["data"] for r in rows)  # media never reaches the history
    # The voice webhook's TwiML named the tap with its token: the history keeps it masked.
    replies = await service.store.fetchall("SELECT reply_body FROM deliveries WHERE reply_body IS NOT NULL", ())
    stored = b"".join(
        bytes(r["reply_body"]) if not isinstance(r["reply_body"], str) else r["reply_body"].encode() for r in replies
    )
    assert b"/stream/twilio/" in stored and TOKEN.encode() not in stored


async def test_an_agent_that_never_clears_talked_over_the_caller(start_receiver):
    agent = Agent(clears=False)
    _, seen, _, sid = await call_through_the_tap(start_receiver, agent)
    events = [e for e in seen if e.call_id == sid]
    (barge_in,) = [e for e in events if isinstance(e, BargeIn)]
    assert barge_in.source == "talked-over" and barge_in.cut_text is None
    note = next(e.data for e in events if isinstance(e, Raw) and e.type == "stream.barge_in")
    assert note["cleared"] is False and 800 < note["time_to_stop_ms"] < 2000, note
    assert "talked over the caller for" in note["note"]


async def test_the_stream_tap_refuses_a_socket_without_its_token(start_receiver):
    service, _ = await start_receiver(secrets={"twilio_stream_token": TOKEN})
    for path, status in (("/stream/twilio/wrong", 403), (f"/stream/twilio/{TOKEN}/extra", 404)):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{service.server.port}{path}"):
                pass
        assert refused.value.response.status_code == status


def test_the_playback_clock_follows_marks_clears_and_bad_frames():
    """Sans-I/O: Twilio plays queued audio in order; a mark echo puts the clock right; clear stops it."""
    tap = TwilioStreamTap()
    t0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)

    def at(ms: float) -> datetime:
        return t0 + timedelta(milliseconds=ms)

    start = {
        "event": "start",
        "sequenceNumber": "1",
        "streamSid": "MZ1",
        "start": {
            "streamSid": "MZ1",
            "callSid": "CA1",
            "accountSid": "AC1",
            "tracks": ["inbound"],
            "customParameters": {},
            "mediaFormat": {},
        },
    }
    tap.seen("platform", json.dumps(start), at(0))
    assert tap.call_id == "CA1"
    second = base64.b64encode(bytes(8000)).decode()  # 1 s of μ-law
    started = tap.seen("agent", json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": second}}), at(0))
    assert [(type(e).__name__, e.role) for e in started] == [("SpeechStarted", "assistant")]
    tap.seen("agent", json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}}), at(1))
    tap.seen("agent", json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": second}}), at(2))
    # Twilio confirms m1 at 1.3 s (it started late): the rest ends at 2.3 s, not 2.0 s.
    tap.seen(
        "platform",
        json.dumps({"event": "mark", "sequenceNumber": "2", "streamSid": "MZ1", "mark": {"name": "m1"}}),
        at(1300),
    )
    assert tap.seen("platform", "not json", at(2100))[0].data["sent_by"] == "Twilio"
    # Levels sit where Twilio plays the audio: the second second after the first.
    assert [when for when, _ in tap.levels["assistant"]] == [at(0), at(1000)]
    tap.seen("agent", json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": second}}), at(2150))
    assert tap.levels["assistant"][-1][0] == at(2300)  # queued behind what still plays
    stopped = tap.seen("agent", json.dumps({"event": "clear", "streamSid": "MZ1"}), at(2200))
    assert [when for when, _ in tap.levels["assistant"]] == [at(0), at(1000)]  # the clear dropped it unplayed
    assert [type(e).__name__ for e in stopped] == ["Raw", "SpeechStopped"] and stopped[1].at == at(2200)
    assert tap.seen("agent", b"\x00", at(2300))[0].data["problem"].startswith("a binary frame")
    assert tap.seen("agent", json.dumps({"event": "dance"}), at(2400))[0].data["count"] == 2
    closed = tap.closed("platform", 1000, "", at(3000))[-1].data
    assert closed["malformed_from_twilio"] == 1 and closed["malformed_from_agent"] == 2


def test_the_operators_clear_says_what_it_dropped():
    """x while the agent's audio plays: Twilio drops the rest; the record says how much and which marks."""
    tap = TwilioStreamTap("CA1")
    t0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    second = base64.b64encode(bytes(8000)).decode()
    tap.seen("agent", json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": second}}), t0)
    tap.seen("agent", json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {"name": "sentence-1"}}), t0)
    frame, events = tap.operator_clears(t0 + timedelta(milliseconds=400))
    assert json.loads(frame)["event"] == "clear"
    cut, stopped = events
    assert cut.type == "operator.cut_off" and cut.data["dropped_ms"] == 600 and cut.data["cut"] == "sentence-1"
    assert cut.data["note"] == "the operator cut the agent off (clear): 600 ms of its queued audio dropped (sentence-1)"
    assert isinstance(stopped, SpeechStopped) and stopped.role == "assistant"
    _, nothing = tap.operator_clears(t0 + timedelta(seconds=2))
    assert [e.data["note"] for e in nothing] == ["the operator sent clear: the agent was not playing anything"]


async def test_the_operator_cuts_the_agent_off_says_and_hangs_up(start_receiver):
    """x sends `clear` to Twilio on the tapped stream; s redirects the call to <Say> and a new stream to
    the tap; ctrl+e hangs up — through the same live control the console's keys and `call` use."""
    from console.secrets import SecretStore
    from console.services.live import CannotSteer, LiveCalls

    agent = Agent(clears=False)
    quiet = Scenario(
        name="quiet", steps=[SilenceStep(kind="silence", seconds=8, pause=0), EndStep(kind="end", pause=0)]
    )
    async with serve(agent, "127.0.0.1", 0) as server:
        agent_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/agent"
        service, seen = await start_receiver(
            secrets={"twilio_stream_token": TOKEN}, twilio={"stream_forward_to": agent_url}
        )
        async with SimulatedTwilio(
            auth_token=TWILIO_TOKEN, scenario=quiet, tunnels={PUBLIC_URL: service.server.url}
        ) as platform:
            service.settings.twilio.base_url = platform.url
            keys = SecretStore(
                {
                    "VOICE_CONSOLE_TWILIO_ACCOUNT_SID": platform.account_sid,
                    "VOICE_CONSOLE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
                    "VOICE_CONSOLE_TWILIO_STREAM_TOKEN": TOKEN,
                }
            )
            steering = LiveCalls(service.pipeline.tracker, service.taps, service.settings, keys)
            async with TwilioClient(platform.account_sid, TWILIO_TOKEN, base_url=platform.url) as api:
                sid = (
                    await api.create_call(
                        to="+14155550142", from_=DIALED_NUMBER, url=PUBLIC_URL + "/webhook/twilio/voice"
                    )
                )["sid"]
            player = platform.players[sid]
            async with asyncio.timeout(10):
                while sid not in service.taps or not agent.sent:
                    await asyncio.sleep(0.02)
            for action in ("mute", "transfer", "add_message"):
                with pytest.raises(CannotSteer, match="not available for a Twilio call"):
                    steering.target(sid, action)
            async with await steering.open(steering.target(sid, "cut_off")) as control:
                await control.cut_off()
            async with asyncio.timeout(5):
                while not any(frame.get("event") == "clear" for frame in player.agent_frames):
                    await asyncio.sleep(0.02)
            assert not any(
                json.loads(frame)["event"] == "clear" for frame in agent.sent
            )  # the operator's, not the agent's
            first_relay = service.taps.get(sid)
            async with await steering.open(steering.target(sid, "say")) as control:
                await control.say("Please hold & stay on the line.")
            redirected = platform.calls[sid]["redirected_to"]
            assert "<Say>Please hold &amp; stay on the line.</Say>" in redirected
            assert f'<Connect><Stream url="wss://voice.example.test/stream/twilio/{TOKEN}"/></Connect>' in redirected
            # Twilio stops the stream, speaks the words, then opens a new stream through the tap
            async with asyncio.timeout(10):
                while not (player.streams_opened == 2 and service.taps.get(sid) not in (None, first_relay)):
                    await asyncio.sleep(0.02)
            assert player.said == ["Please hold & stay on the line."]
            assert first_relay is not None and first_relay.platform.closed
            async with await steering.open(steering.target(sid, "end")) as control:
                await control.end_call()
            async with asyncio.timeout(5):
                await player.ended.wait()
            assert player.status == "completed"
    [cut] = [e for e in seen if isinstance(e, Raw) and e.type == "operator.cut_off"]
    assert cut.call_id == sid and cut.data["note"].startswith("the operator ")
    assert not [e for e in seen if isinstance(e, Raw) and e.type == "stream.clear"]  # the agent never cleared


async def test_the_demo_shows_a_twilio_call_with_a_barge_in_measured_from_audio(settings):
    """--demo: every third call is Twilio's; its stream comes through the tap to the demo's agent,
    and the caller cutting in on the agent's greeting is a barge-in with its time-to-stop."""
    from tests.helpers.tui import SIZE, demo_app, wait_for

    app = demo_app(settings, interval=0.7, demo_speed=10.0)
    async with app.run_test(size=SIZE) as pilot:

        def twilio_barge_in():
            calls = app.main.context.live_calls()
            return next((c for c in calls if c.provider == "twilio" and c.barge_ins), None)

        state = await wait_for(pilot, twilio_barge_in, what="a Twilio demo call with a barge-in", timeout=30)
        rows = await app.service.store.fetchall(
            "SELECT data FROM events WHERE call_id = ? AND kind = 'barge_in'", (state.call_id,)
        )
        sources = {json.loads(row["data"]).get("source") for row in rows}
        assert sources and sources <= {"media-stream", "talked-over"}, sources
        rejected = await app.service.store.fetchall("SELECT provider, reason FROM rejected_requests", ())
        assert not rejected, [tuple(row) for row in rejected]  # the simulated Twilio's signatures verify


async def test_x_cuts_the_agent_off_and_m_says_why_not_on_a_twilio_call(settings):
    """The console's keys on a live Twilio call of the demo: x sends clear through the tap, m and n
    are explained as unavailable."""
    from console.tui.widgets.panes import LiveCallsTable, short_id
    from tests.helpers.tui import SIZE, demo_app, record_notifications, wait_for

    app = demo_app(settings, interval=0.7, demo_speed=1.0)
    async with app.run_test(size=SIZE) as pilot:

        def tapped_twilio_call():
            service = app.service
            calls = service.pipeline.tracker.calls() if service else []
            return next((c.call_id for c in calls if c.provider == "twilio" and c.call_id in service.taps), None)

        call_id = await wait_for(pilot, tapped_twilio_call, what="a live Twilio call through the tap", timeout=30)
        app.main.query_one(LiveCallsTable).follow(call_id)
        await wait_for(pilot, lambda: app.main.selected_call == call_id, what="the call selected")
        notes = record_notifications(app)
        await pilot.press("x")
        await wait_for(
            pilot,
            lambda: ("information", f"Cut the agent off: sent to call {short_id(call_id)}.") in notes,
            what="the clear sent",
        )
        for _ in range(100):  # the tap records it in the history, as the operator's
            rows = await app.service.store.fetchall(
                "SELECT data FROM events WHERE call_id = ? AND kind = 'raw'", (call_id,)
            )
            if any('"operator.cut_off"' in row["data"] for row in rows):
                break
            await pilot.pause(0.05)
        else:
            raise AssertionError("no cut-off by the operator in the history")
        # and on the timeline, where it happened: its own mark, not a barge-in
        from console.tui.widgets.timeline import CUT, BargeTimeline

        timeline = app.main.query_one(BargeTimeline)
        await wait_for(pilot, lambda: "cut off by the operator" in str(timeline.render()), what="the cut-off shown")
        lanes = str(timeline.render()).splitlines()
        assert CUT in lanes[2]  # the marks row
        for key, what in (("m", "Muting the assistant"), ("n", "Adding a message")):
            notes.clear()
            await pilot.press(key)
            await pilot.pause(0.1)
            [(severity, message)] = notes
            assert severity == "error" and message.startswith(f"{what} is not available for a Twilio call: ")


async def test_a_stream_for_a_call_the_console_has_not_seen_is_called_out(start_receiver):
    """Relayed all the same, and recorded under its CallSid, with a note saying where to look."""
    agent = Agent(clears=False)
    async with serve(agent, "127.0.0.1", 0) as server:
        agent_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/agent"
        service, seen = await start_receiver(
            secrets={"twilio_stream_token": TOKEN}, twilio={"stream_forward_to": agent_url}
        )
        async with connect(f"ws://127.0.0.1:{service.server.port}/stream/twilio/{TOKEN}") as twilio:
            await twilio.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {
                "streamSid": "MZ9",
                "callSid": "CAunseen",
                "accountSid": "AC1",
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {},
            }
            await twilio.send(json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": "MZ9"}))
            await twilio.recv()  # the agent's first audio: relayed
        for _ in range(100):
            if any(isinstance(e, Raw) and e.type == "tap.unknown_call" for e in seen):
                break
            await asyncio.sleep(0.02)
    (note,) = [e for e in seen if isinstance(e, Raw) and e.type == "tap.unknown_call"]
    assert note.call_id == "CAunseen" and "has not seen" in note.data["note"]
    assert [json.loads(m)["event"] for m in agent.received[:2]] == ["connected", "start"]


def start_frame(call_sid: str) -> str:
    start = {
        "streamSid": "MZ9",
        "callSid": call_sid,
        "accountSid": "AC1",
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return json.dumps({"event": "start", "sequenceNumber": "1", "start": start, "streamSid": "MZ9"})


async def closed_record(seen, call_sid: str) -> dict:
    for _ in range(100):
        found = [e for e in seen if isinstance(e, Raw) and e.type == "stream.closed" and e.call_id == call_sid]
        if found:
            return found[0].data
        await asyncio.sleep(0.02)
    raise AssertionError("no stream.closed")


async def test_bad_frames_from_either_side_are_relayed_counted_and_shown(start_receiver):
    """Binary, not-JSON, unknown and oversize frames each way pass unchanged, are counted and shown;
    a frame over the tap's limit closes both sides with 1009 and says whose frame it was."""
    big_audio = json.dumps({"event": "media", "streamSid": "MZ9", "media": {"payload": "/" * 200_000}})
    from_agent = [b"\x01\x02", "not json", json.dumps({"event": "dance"}), big_audio]
    from_twilio = [b"\xff", "{", json.dumps({"event": "wave", "sequenceNumber": "3"}), "x" * 100_000]
    received: list[str | bytes] = []

    async def agent(ws):
        with contextlib.suppress(ConnectionClosed):  # the tap closes it with 1009 in the end
            async for message in ws:
                received.append(message)
                if len(received) == 2:  # connected, start: now the agent's bad frames
                    for frame in from_agent:
                        await ws.send(frame)
                if message == "too big":
                    await ws.send("y" * (2 * 1024 * 1024))

    async with serve(agent, "127.0.0.1", 0, max_size=None) as server:
        agent_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/agent"
        service, seen = await start_receiver(
            secrets={"twilio_stream_token": TOKEN}, twilio={"stream_forward_to": agent_url}
        )
        tap_url = f"ws://127.0.0.1:{service.server.port}/stream/twilio/{TOKEN}"
        async with connect(tap_url, max_size=None) as twilio:
            await twilio.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await twilio.send(start_frame("CAbad"))
            got = [await twilio.recv() for _ in from_agent]
            assert got == from_agent  # byte-identical, in order
            for frame in from_twilio:
                await twilio.send(frame)
            await twilio.send("too big")  # the agent answers with 2 MiB
            with pytest.raises(ConnectionClosed):
                await twilio.recv()
            assert twilio.close_code == 1009
            assert twilio.close_reason == "the agent sent a frame over the tap's limit of 1 MiB"
        record = await closed_record(seen, "CAbad")
        assert received[2:6] == from_twilio
        assert record["closed_by"] == "the console" and record["code"] == 1009
        # not JSON: the binary frame, "{", "wave", the 100 KB of x, "too big"
        assert (record["malformed_from_twilio"], record["malformed_from_agent"]) == (5, 3)
        assert (record["oversize_from_twilio"], record["oversize_from_agent"]) == (1, 1)
        oversize = [e.data for e in seen if isinstance(e, Raw) and e.type == "stream.oversize"]
        assert [(o["sent_by"], o["bytes"]) for o in oversize] == [("the agent", len(big_audio)), ("Twilio", 100_000)]
        assert oversize[0]["note"].startswith("oversize media stream frame from the agent: 195 KB (relayed;")
        shown = {e.data["problem"] for e in seen if isinstance(e, Raw) and e.type == "stream.malformed"}
        assert any(problem.startswith("a binary frame") for problem in shown)
        assert any("unknown event 'dance'" in problem for problem in shown)

        # Twilio's side sending more than the limit: closed with 1009, the agent told the same
        async with connect(tap_url, max_size=None) as twilio:
            await twilio.send(start_frame("CAhuge"))
            await twilio.send("z" * (2 * 1024 * 1024))
            with pytest.raises(ConnectionClosed):
                await twilio.recv()
            assert twilio.close_code == 1009
        record = await closed_record(seen, "CAhuge")
        assert record["closed_by"] == "the console" and record["reason"].startswith("Twilio sent a frame over")


async def test_the_agent_down_closes_twilios_side_with_the_reason_and_keeps_the_history(start_receiver):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"ws://127.0.0.1:{probe.getsockname()[1]}/agent"
    service, seen = await start_receiver(secrets={"twilio_stream_token": TOKEN}, twilio={"stream_forward_to": dead})
    async with connect(f"ws://127.0.0.1:{service.server.port}/stream/twilio/{TOKEN}") as twilio:
        with pytest.raises(ConnectionClosed):
            await twilio.recv()
        assert twilio.close_code == 1011
        assert "could not be reached (connection refused)" in twilio.close_reason
        assert "--twilio-stream-forward-to" in twilio.close_reason
    for _ in range(100):  # on disk, not only on screen
        rows = await service.store.fetchall("SELECT data FROM events WHERE kind = 'raw'", ())
        closed = [json.loads(row["data"]) for row in rows if '"stream.closed"' in row["data"]]
        if closed:
            break
        await asyncio.sleep(0.02)
    assert closed and closed[0]["data"]["closed_by"] == "the console" and closed[0]["data"]["code"] == 1011


def test_frames_out_of_order_or_missing_are_counted_and_kept_from_the_vad():
    tap = TwilioStreamTap()
    t0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    tap.seen("platform", start_frame("CA1"), t0)

    def media(sequence: int, chunk: int, loud: bool) -> str:
        payload = VOICED[0] if loud else base64.b64encode(b"\xff" * 160).decode()
        media = {"track": "inbound", "chunk": str(chunk), "timestamp": str((chunk - 1) * 20), "payload": payload}
        return json.dumps({"event": "media", "sequenceNumber": str(sequence), "media": media, "streamSid": "MZ9"})

    for n in range(2, 6):
        assert tap.seen("platform", media(n, n - 1, loud=False), t0 + timedelta(milliseconds=20 * n)) == []
    [late] = tap.seen("platform", media(3, 2, loud=True), t0 + timedelta(milliseconds=120))
    assert late.type == "stream.out_of_order" and late.data["problem"] == "out of order: sequenceNumber 3 after 5"
    [gap] = tap.seen("platform", media(9, 8, loud=False), t0 + timedelta(milliseconds=180))
    assert gap.data["problem"] == "3 frame(s) missing: sequenceNumber 9 after 5"
    assert max(rms for _, rms in tap.levels["user"]) < 100  # the late (loud) frame was kept from the VAD
    record = tap.closed("platform", 1000, "", t0 + timedelta(seconds=1))[-1].data
    assert (record["out_of_order_from_twilio"], record["skipped_by_twilio"]) == (1, 3)
