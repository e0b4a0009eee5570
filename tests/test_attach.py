"""Consoles attached to a running receiver (console/services/hub.py and attach.py), over real sockets:
what each console is sent, decisions from either with who made them, the loser told who won, refusals,
and the history read alongside."""

from __future__ import annotations

import asyncio
import json
import os

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from console.core.events import TranscriptFinal
from console.core.gate import CallHeld, CallSettled, OperatorDecision
from console.core.policy import Policy
from console.services.attach import AttachedReceiver, Consumers
from console.services.hub import STREAM_PATH
from console.services.serve_state import ServeState
from tests.helpers.receiver import vapi_headers
from tests.helpers.secrets import PAYLOADS

PARALLEL = json.loads((PAYLOADS / "vapi" / "tool-calls.parallel.json").read_text())
IDS = [c["id"] for c in PARALLEL["message"]["toolCallList"]]
CALL_ID = PARALLEL["message"]["call"]["id"]


class Console:
    """What one attached console was told."""

    def __init__(self) -> None:
        self.events: list = []
        self.gate: list = []
        self.deliveries: list = []
        self.notes: list[str] = []

    def consumers(self) -> Consumers:
        return Consumers(self.events.extend, self.gate.append, self.deliveries.append, self.notes.append)


def state_of(service) -> ServeState:
    return ServeState(url=service.server.url, token=service.control_token, pid=os.getpid())


async def until(condition, what: str, timeout: float = 10.0):
    async with asyncio.timeout(timeout):
        while not (found := condition()):
            await asyncio.sleep(0.02)
    return found


def transcript(text: str) -> bytes:
    body = {
        "message": {
            "type": "transcript",
            "role": "user",
            "transcriptType": "final",
            "transcript": text,
            "call": {"id": CALL_ID},
        }
    }
    return json.dumps(body).encode()


async def test_two_consoles_see_the_same_and_a_decision_from_one_shows_in_both(start_receiver):
    service, _ = await start_receiver(policy=Policy.default("hold"))
    alice, bob = Console(), Console()
    a = await AttachedReceiver.attach(state_of(service), "alice@laptop", alice.consumers())
    b = await AttachedReceiver.attach(state_of(service), "bob@desk", bob.consumers())
    try:
        await until(lambda: sorted(a.consoles) == ["alice@laptop", "bob@desk"], "both consoles listed")
        async with httpx.AsyncClient(base_url=service.server.url, timeout=30) as client:
            body = json.dumps(PARALLEL).encode()
            platform = asyncio.create_task(
                client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))
            )
            for console in (alice, bob):
                await until(lambda c=console: sum(isinstance(g, CallHeld) for g in c.gate) == 2, "both held")
            assert [call.tool_call_id for call in b.gate.pending()] == IDS
            # alice approves the first and rejects the second; bob tries the first a moment later
            assert a.gate.resolve(IDS[0], OperatorDecision("approved"))
            assert a.gate.resolve(IDS[1], OperatorDecision("rejected", reason="Not today."))
            await until(lambda: sum(isinstance(g, CallSettled) for g in bob.gate) == 2, "bob sees both settled")
            settled = {g.outcome.tool_call_id: g.outcome for g in bob.gate if isinstance(g, CallSettled)}
            assert settled[IDS[1]].decision == "rejected" and settled[IDS[1]].operator == "alice@laptop"
            late = await client.post(
                "/control/decide",
                json={"tool_call_id": IDS[1], "decision": "approve", "operator": "bob@desk"},
                headers={"authorization": f"Bearer {service.control_token}"},
            )
            assert late.status_code == 409
            assert late.json()["error"]["message"] == f"{settled[IDS[1]].name} was already rejected by alice@laptop"
            response = await platform
            assert response.status_code == 200
            # the events each console got are the history's, with the operator named
            await until(lambda: any(e.kind == "tool.decided" for e in bob.events), "the decisions as events")
            decided = [e for e in bob.events if e.kind == "tool.decided"]
            assert {e.operator for e in decided} == {"alice@laptop"}
            rows = await service.store.fetchall("SELECT data FROM events ORDER BY id", ())
            history = [json.loads(row["data"]) for row in rows]
            assert [e.model_dump(mode="json", exclude_none=True) for e in alice.events] == [
                {k: v for k, v in h.items() if v is not None} for h in history
            ]
            assert [d.status for d in bob.deliveries] == [200]
    finally:
        await a.close()
        await b.close()
    assert a.store.read_only and b.store.read_only


async def test_a_console_attaching_mid_call_gets_the_call_so_far_from_the_history(start_receiver):
    service, _ = await start_receiver(policy=Policy.default("hold"))
    async with httpx.AsyncClient(base_url=service.server.url, timeout=30) as client:
        for text in ("Hello there.", "I need to move my appointment."):
            body = transcript(text)
            assert (await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))).is_success
        late = Console()
        attached = await AttachedReceiver.attach(state_of(service), "carol", late.consumers())
        try:
            finals = [e.text for e in late.events if isinstance(e, TranscriptFinal)]
            assert finals == ["Hello there.", "I need to move my appointment."]
            assert [state.call_id for state in attached.tracker.calls()] == [CALL_ID]
            body = transcript("Thursday works.")
            assert (await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))).is_success
            await until(lambda: len([e for e in late.events if isinstance(e, TranscriptFinal)]) == 3, "live after")
        finally:
            await attached.close()


async def test_the_stream_refuses_without_the_token(start_receiver):
    service, _ = await start_receiver()
    url = service.server.url.replace("http://", "ws://") + STREAM_PATH
    for headers, status in (({}, 401), ({"Authorization": "Bearer nope"}, 401)):
        try:
            async with connect(url, additional_headers=headers):
                raise AssertionError("admitted")
        except InvalidStatus as exc:
            assert exc.response.status_code == status


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_the_receiver_killed_and_restarted_under_load_loses_nothing_and_the_gap_is_filled(tmp_path):
    """kill -9 of `serve` while webhooks flow, a new `serve` on the same port and history: the attached
    console reconnects by itself (new token from the new state file) and ends with every acknowledged
    event exactly once — those it missed while the link was down read from the history."""
    import signal

    from console.services.serve_state import read_state, state_file
    from tests.helpers.cli import Serve
    from tests.helpers.secrets import VAPI_SECRET

    db = tmp_path / "history.db"
    port = free_port()
    first = Serve(db, "--port", str(port))
    state = read_state(state_file(port))
    assert state is not None and state.pid == first.proc.pid
    console = Console()
    attached = await AttachedReceiver.attach(state, "alice", console.consumers())
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def platform() -> None:
        from console.config import VapiSettings
        from console.providers.vapi import sign_vapi_request

        vapi = VapiSettings()
        n = 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while not stop.is_set():
                n += 1
                body = transcript(f"utterance {n}")
                headers = {"content-type": "application/json", **sign_vapi_request(vapi, VAPI_SECRET, body)}
                try:
                    response = await client.post("/webhook/vapi", content=body, headers=headers)
                except httpx.HTTPError:
                    await asyncio.sleep(0.05)  # down: the platform retries later
                    continue
                if response.is_success:
                    acknowledged.append(f"utterance {n}")

    poster = asyncio.create_task(platform())
    second = None
    try:
        await until(lambda: len(acknowledged) >= 150, "deliveries before the kill")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        await until(lambda: any("receiver link down" in note for note in console.notes), "the link seen down")
        before_restart = len(acknowledged)
        second = Serve(db, "--port", str(port))
        await until(lambda: len(acknowledged) >= before_restart + 150, "deliveries after the restart", 30)
        stop.set()
        await poster
        await until(lambda: any("receiver link back" in note for note in console.notes), "the link back")
        finals = lambda: [e.text for e in console.events if isinstance(e, TranscriptFinal)]  # noqa: E731
        await until(lambda: set(acknowledged) <= set(finals()), "every acknowledged utterance on the console", 20)
        async with asyncio.timeout(5):
            while True:
                rows = await attached.store.fetchall("SELECT count(*) AS n FROM events", ())
                if rows[0]["n"] == len(console.events):
                    break
                await asyncio.sleep(0.05)
        assert len(finals()) == len(set(finals()))  # none twice
        assert attached.state.pid == second.proc.pid  # it found the new receiver by itself
    finally:
        stop.set()
        await attached.close()
        if second is not None:
            second.stop()
        if first.proc.poll() is None:
            first.stop()


async def test_a_console_that_falls_behind_is_closed_and_catches_up_from_the_history(start_receiver, monkeypatch):
    """The receiver never waits for a console: past its queue's bound the console is closed (4000),
    reconnects by itself and reads what it missed from the history."""
    from console.services import hub
    from console.services.serve_state import write_state

    service, _ = await start_receiver(policy=Policy.default("hold"))
    state = state_of(service)
    write_state(state)  # as `serve` does: where a reconnecting console finds it
    console = Console()
    attached = await AttachedReceiver.attach(state, "alice", console.consumers())
    try:
        monkeypatch.setattr(hub, "CONSOLE_QUEUE", 0)  # every frame from now on is one too many
        async with httpx.AsyncClient(base_url=service.server.url, timeout=30) as client:
            body = transcript("Are you still there?")
            assert (await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))).is_success
            await until(lambda: any("fell behind" in note for note in console.notes), "closed for falling behind")
            monkeypatch.setattr(hub, "CONSOLE_QUEUE", 20_000)
            await until(lambda: any("receiver link back" in note for note in console.notes), "back")
            finals = [e.text for e in console.events if isinstance(e, TranscriptFinal)]
            assert finals == ["Are you still there?"]  # read from the history, once
            body = transcript("Yes, I'm here.")
            assert (await client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body))).is_success
            await until(lambda: len([e for e in console.events if isinstance(e, TranscriptFinal)]) == 2, "live again")
    finally:
        await attached.close()


async def test_an_attached_console_gets_a_tapped_calls_audio_levels(start_receiver):
    """The timeline's level lanes of a Twilio call through the tap, on a console attached to the receiver."""
    from websockets.asyncio.server import serve

    from console.providers.twilio.client import TwilioClient
    from console.services.serve_state import write_state
    from console.simulator.twilio import DIALED_NUMBER, SimulatedTwilio
    from tests.helpers.secrets import PUBLIC_URL, TWILIO_TOKEN
    from tests.helpers.twilio_agent import CUT_IN, TOKEN, Agent

    async with serve(Agent(clears=True), "127.0.0.1", 0) as server:
        agent_url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/agent"
        service, _ = await start_receiver(
            secrets={"twilio_stream_token": TOKEN}, twilio={"stream_forward_to": agent_url}
        )
        state = state_of(service)
        write_state(state)
        console = Console()
        attached = await AttachedReceiver.attach(state, "alice", console.consumers())
        try:
            async with SimulatedTwilio(
                auth_token=TWILIO_TOKEN, scenario=CUT_IN, tunnels={PUBLIC_URL: service.server.url}
            ) as platform:
                async with TwilioClient(platform.account_sid, TWILIO_TOKEN, base_url=platform.url) as api:
                    sid = (
                        await api.create_call(
                            to="+14155550142", from_=DIALED_NUMBER, url=PUBLIC_URL + "/webhook/twilio/voice"
                        )
                    )["sid"]

                def levels():
                    tapped = attached.taps.get(sid)
                    lanes = tapped.session.levels if tapped is not None else {}
                    return sid in attached.taps and len(lanes.get("user", ())) >= 5 and lanes.get("assistant")

                await until(levels, "both sides' levels on the attached console", 20)
                receiver_side = dict(service.taps.get(sid).session.levels["user"])
                mine = list(attached.taps.get(sid).session.levels["user"])
                same = [at for at, level in mine if receiver_side.get(at) == level]
                assert len(same) >= len(mine) - 2 and len(same) >= 3  # the newest may have grown since sent
                await platform.players[sid].ended.wait()
        finally:
            await attached.close()


async def test_no_secret_reaches_an_attached_console(start_receiver):
    """A tool call whose arguments carry the webhook secret: held, decided, on the stream and in a
    hello, the secret is masked in every frame a console gets."""
    from tests.helpers.secrets import VAPI_SECRET

    service, _ = await start_receiver(policy=Policy.default("hold"))
    data = json.loads(json.dumps(PARALLEL))
    data["message"]["toolCallList"][0]["function"]["arguments"] = {"note": f"token {VAPI_SECRET}"}
    body = json.dumps(data).encode()
    url = service.server.url.replace("http://", "ws://") + STREAM_PATH
    auth = {"Authorization": f"Bearer {service.control_token}"}
    frames: list[str] = []
    async with (
        connect(url, additional_headers=auth) as early,
        httpx.AsyncClient(base_url=service.server.url, timeout=30) as client,
    ):
        platform = asyncio.create_task(client.post("/webhook/vapi", content=body, headers=vapi_headers(service, body)))
        await until(lambda: len(service.gate.pending()) == 2, "held")
        async with connect(url, additional_headers=auth) as late:  # its hello lists the held calls
            frames.append(str(await late.recv()))
        for call in service.gate.pending():
            await client.post(
                "/control/decide",
                json={"tool_call_id": call.tool_call_id, "decision": "reject", "reason": f"no {VAPI_SECRET}"},
                headers=auth,
            )
        assert (await platform).status_code == 200
        async with asyncio.timeout(5):
            while not any('"settled"' in frame for frame in frames[1:]) or len(frames) < 6:
                frames.append(str(await early.recv()))
    assert any("token " in frame for frame in frames)  # the arguments came, masked
    assert not [frame for frame in frames if VAPI_SECRET in frame]


def test_the_mirrored_calls_are_bounded():
    from console.services.attach import MirrorTracker

    mirror = MirrorTracker(max_calls=3)
    for n in range(10):
        mirror.update([{"call_id": f"c{n}", "provider": "vapi", "status": "ended"}])
    mirror.update([{"call_id": "c7", "provider": "vapi", "status": "ended"}])  # changed again: kept
    assert [state.call_id for state in mirror.calls()] == ["c8", "c9", "c7"]
