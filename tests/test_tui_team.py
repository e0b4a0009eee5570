"""Consoles on the team's Redis (`voice-console --team`), driven with Pilot: two `serve --team`
receivers (real subprocesses) on a real `redis-server`; the consoles see both receivers' calls
with which instance has each, the operators present, and decide each held call once."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading

import httpx
from textual.widgets import Static

from console.config import load_settings
from console.services.pipeline import DeliverySeen
from console.tui.app import Services, VoiceConsoleApp
from console.tui.widgets.events import EventsPane, RawDeliveryScreen
from console.tui.widgets.panes import FunctionCallsTable, LiveCallsTable
from console.tui.widgets.prompt import PromptScreen
from tests.helpers.cli import Serve
from tests.helpers.redis_server import RedisServer, needs_redis
from tests.helpers.secrets import PAYLOADS, VAPI_SECRET
from tests.helpers.team import instance_of, read_watch_until, start_watch
from tests.helpers.tui import SIZE, record_notifications, type_text, wait_for

pytestmark = needs_redis
PARALLEL = json.loads((PAYLOADS / "vapi" / "tool-calls.parallel.json").read_text())
IDS = [c["id"] for c in PARALLEL["message"]["toolCallList"]]


def team_app(tmp_path, url: str, operator: str) -> VoiceConsoleApp:
    settings = load_settings(
        env={}, overrides={"storage": {"db": str(tmp_path / f"{operator}.db")}, "team": {"redis_url": url}}
    )
    return VoiceConsoleApp(Services(settings, team=True, operator=operator))


async def post(url: str, body: bytes) -> httpx.Response:
    from console.config import VapiSettings
    from console.providers.vapi import sign_vapi_request

    headers = {"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)}
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.post(url + "/webhook/vapi", content=body, headers=headers)


async def on_the_team(pilot, app: VoiceConsoleApp) -> None:
    await wait_for(pilot, lambda: app.context.team and app.context.receiver.link_up, "on the team")


def by_column(app: VoiceConsoleApp, column: int) -> dict[str, str]:
    table = app.main.query_one(FunctionCallsTable)
    return {str(key.value): str(table.get_row(key)[column]) for key in table.rows}


def via(app: VoiceConsoleApp) -> dict[str, str]:
    table = app.main.query_one(LiveCallsTable)
    return {str(key.value): str(table.get_row(key)[-1]) for key in table.rows}


async def test_two_team_consoles_see_both_receivers_and_decide_once(tmp_path):
    server = RedisServer(tmp_path / "redis")
    a = Serve(tmp_path / "a.db", "--team", server.url, hold=True)
    b = Serve(tmp_path / "b.db", "--team", server.url, hold=True)
    try:
        a_name, b_name = instance_of(a), instance_of(b)
        # A call already in progress on B before any console opens: a console sees it at once.
        ringing = (PAYLOADS / "vapi" / "status-update.in-progress.json").read_bytes()
        b_call = json.loads(ringing)["message"]["call"]["id"]
        assert (await post(b.url, ringing)).status_code == 200
        await asyncio.sleep(1.0)  # its summary reaches Redis
        alice, bob = team_app(tmp_path, server.url, "alice@laptop"), team_app(tmp_path, server.url, "bob@desk")
        async with alice.run_test(size=SIZE) as pa, bob.run_test(size=SIZE) as pb:
            for pilot, app in ((pa, alice), (pb, bob)):
                await on_the_team(pilot, app)
                await wait_for(pilot, lambda app=app: via(app).get(b_call) == f"vapi @ {b_name}", "B's call shown")
            await wait_for(pa, lambda: "with bob@desk" in alice.sub_title, "alice told bob is here")
            assert alice.sub_title.startswith("team 'default' on redis://127.0.0.1:")
            platform = asyncio.create_task(post(a.url, json.dumps(PARALLEL).encode()))
            for pilot, app in ((pa, alice), (pb, bob)):
                await wait_for(pilot, lambda app=app: len(app.context.gate.pending()) == 2, "A's calls held")
            a_call = PARALLEL["message"]["call"]["id"]
            await wait_for(pa, lambda: via(alice).get(a_call) == f"vapi @ {a_name}", "A's call shown with A")
            notes = alice.main.query_one(EventsPane).model.rows
            await wait_for(pa, lambda: any(f" @ {a_name} · " in (row.note or "") for row in notes), "holder in Events")
            await pa.press("a")  # alice approves the one her cursor is on
            await pa.pause(0.3)
            await pb.press("r")  # bob rejects the other
            await pb.pause(0.3)
            await pb.press("enter")
            response = await asyncio.wait_for(platform, 30)
            assert response.status_code == 200
            for pilot, app in ((pa, alice), (pb, bob)):
                await wait_for(
                    pilot,
                    lambda app=app: sorted(by_column(app, 3).values()) == ["alice@laptop", "bob@desk"],
                    f"both decisions with their operators on {app.context.receiver.operator}'s console",
                )
            # The team's history on this machine: the replica has A's and B's events.
            store = alice.context.store()
            await wait_for(pa, lambda: True, "")
            await asyncio.sleep(0.5)
            rows = await store.fetchall("SELECT DISTINCT call_id FROM events")
            assert {row[0] for row in rows} >= {a_call, b_call}
    finally:
        a.stop()
        b.stop()
        server.stop()


async def test_a_console_receiving_itself_with_a_team_set_publishes_and_is_decided_from_the_team(tmp_path):
    import subprocess
    import sys

    from console.core.policy import Policy, ToolRule
    from console.secrets import SecretStore
    from tests.helpers.cli import cli_env

    server = RedisServer(tmp_path / "redis")
    try:
        settings = load_settings(
            env={},
            overrides={
                "receiver": {"port": 0},
                "storage": {"db": str(tmp_path / "own.db")},
                "team": {"redis_url": server.url, "instance": "laptop"},
            },
        )
        app = VoiceConsoleApp(
            Services(
                settings,
                secret_store=SecretStore(env={"VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": VAPI_SECRET}),
                policy=Policy(tools={"default": ToolRule(action="hold", timeout_seconds=60)}),
            )
        )
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.service is not None, "its own receiver")
            platform = asyncio.create_task(post(app.service.url, json.dumps(PARALLEL).encode()))
            await wait_for(pilot, lambda: len(app.context.gate.pending()) == 2, "both calls held here")
            held = f"vc:{{default}}:held:{IDS[0]}"
            await wait_for(pilot, lambda: server.client().exists(held), "the held call in Redis")
            # One decided by someone on the team, not at this console ...
            decided = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "console", "decide", "--team", server.url, IDS[1], "--approve"],
                capture_output=True,
                text=True,
                env=cli_env(tmp_path / "x.db"),
            )
            assert decided.returncode == 0 and "held by laptop" in decided.stdout, decided.stderr
            # ... the other at this console's own keys: recorded in Redis first, as anyone's.
            await wait_for(pilot, lambda: [c.tool_call_id for c in app.context.gate.pending()] == [IDS[0]], "one left")
            await pilot.press("a")
            decision = f"vc:{{default}}:decision:{IDS[0]}"
            await wait_for(pilot, lambda: server.client().exists(decision), "this console's decision in Redis")
            late = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "console", "decide", "--team", server.url, IDS[0], "--reject", "no"],
                capture_output=True,
                text=True,
                env=cli_env(tmp_path / "x.db"),
            )
            assert late.returncode == 1 and f"{IDS[0]} was already approved" in late.stderr
            announced = [
                json.loads(fields[b"g"])
                for _, fields in server.client().xrange("vc:{default}:events")
                if fields.get(b"g")
            ]
            decided_here = [g for g in announced if g["what"] == "decided" and g["decision"]["tool_call_id"] == IDS[0]]
            assert len(decided_here) == 1  # through the team's script, announced to every console
            response = await asyncio.wait_for(platform, 30)
            assert response.status_code == 200
            await wait_for(pilot, lambda: not app.context.gate.pending(), "both answered")
        entries = server.client().xrange("vc:{default}:events")
        published = [json.loads(f[b"e"]) for _, f in entries if f.get(b"e") and f[b"i"] == b"laptop"]
        kinds = {event["kind"] for batch in published for event in batch}
        assert {"tool.requested", "tool.decided"} <= kinds
    finally:
        server.stop()


async def test_a_team_console_says_when_the_link_is_down_and_catches_up_after(tmp_path):
    server = RedisServer(tmp_path / "redis")
    a = Serve(tmp_path / "a.db", "--team", server.url)
    try:
        instance_of(a)
        alice = team_app(tmp_path, server.url, "alice@laptop")
        async with alice.run_test(size=SIZE) as pilot:
            await on_the_team(pilot, alice)
            server.kill()
            await wait_for(pilot, lambda: "team link down since" in alice.sub_title, "the link down", timeout=20)
            body = (PAYLOADS / "vapi" / "status-update.in-progress.json").read_bytes()
            assert (await post(a.url, body)).status_code == 200  # the receiver acknowledges all the same
            call_id = json.loads(body)["message"]["call"]["id"]
            server.start()
            await wait_for(pilot, lambda: alice.context.receiver.link_up, "the link back", timeout=20)
            await wait_for(pilot, lambda: call_id in via(alice), "the call posted meanwhile", timeout=20)
            await wait_for(pilot, lambda: alice.sub_title.startswith("team 'default' on "), "the title", timeout=5)
    finally:
        a.stop()
        server.stop()


async def test_a_team_console_opened_again_reads_on_from_its_replica_and_counts_what_was_trimmed(tmp_path):
    server = RedisServer(tmp_path / "redis")
    a = Serve(tmp_path / "a.db", "--team", server.url)
    try:
        name = instance_of(a)
        message = json.loads((PAYLOADS / "vapi" / "transcript.user-final.json").read_bytes())

        async def say(n: int) -> None:
            message["message"]["transcript"] = f"line {n}"
            message["message"]["timestamp"] = 1771148400000 + n
            assert (await post(a.url, json.dumps(message).encode())).status_code == 200

        async def texts(app: VoiceConsoleApp) -> set[str]:
            rows = await app.context.store().fetchall("SELECT data FROM events WHERE kind = 'transcript.final'")
            return {json.loads(row[0])["text"] for row in rows}

        alice = team_app(tmp_path, server.url, "alice@laptop")
        async with alice.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: alice.context.team, "on the team")
            await say(1)
            await pilot.pause(1.0)  # into the replica, and its position kept
        await say(2)  # while no console is open
        await say(3)
        await asyncio.sleep(0.5)
        alice = team_app(tmp_path, server.url, "alice@laptop")
        async with alice.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: alice.context.team, "on the team again")
            await pilot.pause(1.0)
            assert {"line 1", "line 2", "line 3"} <= await texts(alice)  # read on from where it was
        await say(4)
        await say(5)
        await asyncio.sleep(0.5)
        server.client().xtrim("vc:{default}:events", maxlen=0)  # the stream kept less than was missed
        await say(6)
        await asyncio.sleep(0.5)
        notes: list[str] = []
        alice = team_app(tmp_path, server.url, "alice@laptop")
        note = alice.feed.note

        def noted(line: str) -> None:  # what the console tells the operator (the Events pane's notes)
            notes.append(line)
            note(line)

        alice.feed.note = noted  # type: ignore[method-assign]
        async with alice.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: any(f"missed 2 events of {name}" in line for line in notes), "the gap said")
            await pilot.pause(1.0)
            assert "line 6" in await texts(alice) and not {"line 4", "line 5"} & await texts(alice)
    finally:
        a.stop()
        server.stop()


async def test_a_team_consoles_live_calls_follow_the_stream_not_only_the_summaries(tmp_path):
    """The receivers rewrite a call's summary in Redis at most every few seconds unless its status
    changed; a console follows the call from the stream's events meanwhile."""
    server = RedisServer(tmp_path / "redis")
    a = Serve(tmp_path / "a.db", "--team", server.url)
    try:
        instance_of(a)
        alice = team_app(tmp_path, server.url, "alice@laptop")
        async with alice.run_test(size=SIZE) as pilot:
            await on_the_team(pilot, alice)
            body = (PAYLOADS / "vapi" / "status-update.in-progress.json").read_bytes()
            call_id = json.loads(body)["message"]["call"]["id"]
            assert (await post(a.url, body)).status_code == 200
            await wait_for(pilot, lambda: call_id in via(alice), "the call shown")
            speech = (PAYLOADS / "vapi" / "speech-update.user-started.json").read_bytes()
            assert (await post(a.url, speech)).status_code == 200
            state = alice.context.receiver.tracker.get(call_id)
            await wait_for(pilot, lambda: "user" in state.speaking, "the caller speaking, from the stream", timeout=4)
            summary = json.loads(server.client().get(f"vc:{{default}}:call:{call_id}"))
            assert summary["status"] == "in-progress" and summary["speaking"] == []  # not from there
            table = alice.main.query_one(LiveCallsTable)
            await wait_for(pilot, lambda: "caller" in str(table.get_row(call_id)[2]), "the pane says so")
    finally:
        a.stop()
        server.stop()


async def test_a_team_consoles_events_pane_lists_every_receivers_requests_and_who_answered(tmp_path):
    server = RedisServer(tmp_path / "redis")
    a = Serve(tmp_path / "a.db", "--team", server.url)
    b = Serve(tmp_path / "b.db", "--team", server.url)
    watch = None
    try:
        a_name, b_name = instance_of(a), instance_of(b)
        watch = start_watch(tmp_path, server.url)
        assert "watching team" in watch.stderr.readline()  # from here on, nothing is missed
        alice = team_app(tmp_path, server.url, "alice@laptop")
        async with alice.run_test(size=SIZE) as pilot:
            await on_the_team(pilot, alice)
            body = (PAYLOADS / "vapi" / "status-update.in-progress.json").read_bytes()
            assert (await post(a.url, body)).status_code == 200
            async with httpx.AsyncClient(timeout=10) as client:  # a wrong secret, on the other receiver
                refused = await client.post(
                    b.url + "/webhook/vapi",
                    content=body,
                    headers={"content-type": "application/json", "x-vapi-secret": "not-the-secret"},
                )
            assert refused.status_code == 401
            pane = alice.main.query_one(EventsPane)

            def answered() -> dict[str, DeliverySeen]:
                return {row.seen.instance: row.seen for row in pane.model.rows if row.seen is not None}

            await wait_for(pilot, lambda: {a_name, b_name} <= set(answered()), "both receivers' requests")
            ok, bad = answered()[a_name], answered()[b_name]
            assert (ok.verdict, ok.status, ok.message_type) == ("ok", 200, "status-update")
            assert (bad.verdict, bad.status) == ("rejected", 401) and "authentication" in (bad.reason or "")
            assert "not-the-secret" not in repr(answered())
            header = str(alice.main.query_one("#events-header", Static).render())
            assert " at " in header
            # The raw request is in the receiver's history, not this console's: it says where.
            app_pane_row = next(i for i, row in enumerate(pane.model.visible) if row.seen is bad)
            alice.main.show_bottom("events")
            await pilot.pause(0.1)
            pane.view.focus()
            pane.view.cursor = app_pane_row
            await pilot.press("v")
            await wait_for(pilot, lambda: isinstance(alice.screen, RawDeliveryScreen) and alice.screen.text, "raw")
            assert f"answered by {b_name}" in alice.screen.text
            await pilot.press("escape")
        lines = read_watch_until(
            watch, lambda seen: {a_name, b_name} <= {line["instance"] for line in seen if "delivery" in line}
        )
        deliveries = {line["instance"]: line["delivery"] for line in lines if "delivery" in line}
        assert deliveries[a_name]["status"] == 200 and deliveries[b_name]["verdict"] == "rejected"
    finally:
        if watch is not None:
            watch.terminate()
            watch.wait(10)
        a.stop()
        b.stop()
        server.stop()


class ControlUrl:
    """A Vapi call's control URL, here: records what it is asked; `status` is what it answers."""

    def __init__(self) -> None:
        self.asked: list[dict] = []
        self.status = 200
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                recorder.asked.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
                body = b'{"message": "The call has ended."}' if recorder.status != 200 else b"{}"
                self.send_response(recorder.status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/5f2c9a8e-secret-call-path/control"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_a_team_console_steers_a_call_through_the_receiver_that_has_it(tmp_path):
    """Live control from a team console: the receiver that has the call does it with the control
    URL it keeps (the URL never reaches Redis or the console); its refusals come back masked."""
    server = RedisServer(tmp_path / "redis")
    control = ControlUrl()
    a = Serve(tmp_path / "a.db", "--team", server.url)
    try:
        instance_of(a)
        message = json.loads((PAYLOADS / "vapi" / "status-update.in-progress.json").read_bytes())
        message["message"]["call"]["monitor"]["controlUrl"] = control.url
        call_id = message["message"]["call"]["id"]
        alice = team_app(tmp_path, server.url, "alice@laptop")
        async with alice.run_test(size=SIZE) as pilot:
            await on_the_team(pilot, alice)
            assert (await post(a.url, json.dumps(message).encode())).status_code == 200
            await wait_for(pilot, lambda: alice.main.selected_call == call_id, "the call selected")
            tracker = alice.context.receiver.tracker
            await wait_for(pilot, lambda: tracker.get(call_id).control_url is not None, "the call controllable")
            assert tracker.get(call_id).control_url != control.url  # the console knows only that it can be
            notes = record_notifications(alice)
            await pilot.press("s")
            await wait_for(pilot, lambda: isinstance(alice.screen, PromptScreen), "the say prompt")
            await type_text(pilot, "Please hold")
            await pilot.press("enter")
            await wait_for(pilot, lambda: control.asked, "the receiver to ask the control URL", timeout=20)
            assert control.asked[0]["type"] == "say" and control.asked[0]["content"] == "Please hold"

            control.status = 400  # the platform refuses the next: the operator is told why, masked
            await pilot.press("m")
            await wait_for(pilot, lambda: any(severity == "error" for severity, _ in notes), "the refusal", timeout=20)
            refusal = next(text for severity, text in notes if severity == "error")
            assert "answered 400" in refusal and control.url not in refusal and "secret-call-path" not in refusal
        every_value = b"".join(
            json.dumps([key.decode(), repr(server.client().dump(key))]).encode() for key in server.client().keys("*")
        )
        assert b"secret-call-path" not in every_value
        _, _, err = a.stop()
        assert "alice@laptop: say on call" in err  # the receiver says who steered its call
    finally:
        a.stop()
        control.close()
        server.stop()
