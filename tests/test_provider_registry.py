"""A provider goes in one place: Acme, a fourth platform written only in the test suite
(tests/helpers/acme.py), is registered at run time and gets webhook routes on the real
receiver, its keys in `keys list/set/test` and the keys screen, signing for replays, and a
dial choice in `voice-console dial` and the dial dialog, with no edit anywhere else."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from textual.widgets import Input, Select

from console.cli import build_parser
from console.commands import settings_from_args
from console.commands.dial import run_dial
from console.commands.keys import run_keys_async
from console.commands.replay import run_replay
from console.core.http_types import Request, Response
from console.providers import registry
from console.receiver.http import HttpServer
from console.secrets import SERVICE, SecretStore
from console.services.replay import REPLAY_MARK
from console.store import queries
from console.tui.app import Services, VoiceConsoleApp
from console.tui.messages import CallDialed
from console.tui.screens.dial import DialScreen
from console.tui.screens.keys import KeysScreen
from tests.helpers import acme
from tests.helpers.receiver import start_service
from tests.helpers.secrets import PUBLIC_URL
from tests.helpers.tui import SIZE, wait_for

SIGNING_SECRET = "acme-signing-secret-7Hq2"
API_KEY = "acme-key-good-51c0"
CALL_ID = "acme-call-1"
CALL = (
    {"event": "started", "call_id": CALL_ID},
    {"event": "said", "call_id": CALL_ID, "role": "assistant", "text": "Acme, how can I help?"},
    {"event": "said", "call_id": CALL_ID, "role": "user", "text": "Book me a table."},
    {"event": "ended", "call_id": CALL_ID, "reason": "customer-ended-call"},
)


class AcmeApi:
    """Acme's REST API on loopback: what the dialing and key-check requests find."""

    def __init__(self) -> None:
        self.seen: list[Request] = []
        self.server = HttpServer(self.handle, port=0)

    async def handle(self, request: Request) -> Response:
        self.seen.append(request)
        if request.header("authorization") != f"Bearer {API_KEY}":
            return Response.json(401, {"error": "bad key"})
        if (request.method, request.path) == ("GET", "/v1/me"):
            return Response.json(200, {"account": "acc_1"})
        if (request.method, request.path) == ("GET", "/v1/agents"):
            return Response.json(200, [{"id": "agt_1", "name": "Front desk"}])
        if (request.method, request.path) == ("GET", "/v1/lines"):
            return Response.json(200, [{"id": "line_1", "e164": "+14155550100"}])
        if (request.method, request.path) == ("POST", "/v1/calls"):
            return Response.json(201, {"id": "acme-call-9", "state": "queued", **json.loads(request.body)})
        return Response.json(404, {"error": "no such route"})

    def calls_placed(self) -> list[dict]:
        return [json.loads(r.body) for r in self.seen if (r.method, r.path) == ("POST", "/v1/calls")]


@pytest.fixture
async def acme_api() -> AsyncIterator[AcmeApi]:
    api = AcmeApi()
    await api.server.start()
    yield api
    await api.server.close()


@pytest.fixture
def registered(acme_api: AcmeApi) -> Iterator[registry.ProviderSpec]:
    spec = acme.spec(acme_api.server.url)
    registry.register(spec)
    yield spec
    registry.unregister(acme.NAME)


def signed(event: dict, secret: str = SIGNING_SECRET) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"content-type": "application/json", acme.HEADER: acme.sign_body(body, secret)}


async def record_call(tmp_path) -> tuple:
    """Receiver A with Acme's secret; the whole call posted to it, signed."""
    service, _ = await start_service(tmp_path / "a", secrets={"acme_signing_secret": SIGNING_SECRET})
    async with httpx.AsyncClient(base_url=service.server.url) as client:
        for event in CALL:
            body, headers = signed(event)
            response = await client.post("/webhook/acme", content=body, headers=headers)
            assert response.status_code == 200, response.text
    return service


def test_the_registry_lists_acme_after_the_built_ins(registered):
    assert registry.names() == ("vapi", "retell", "twilio", "acme")
    assert registry.secret_names()["acme_api_key"].env == "VOICE_CONSOLE_ACME_API_KEY"
    assert registry.auth_failure_status("acme") == 403


def test_unregistered_it_is_gone():
    assert registry.names() == ("vapi", "retell", "twilio")
    with pytest.raises(registry.UnknownProvider, match="choose one of vapi, retell, twilio"):
        registry.spec(acme.NAME)


async def test_acme_webhooks_are_routed_verified_and_stored(registered, tmp_path):
    service = await record_call(tmp_path)
    try:
        assert not any("Acme" in warning for warning in service.warnings)
        async with httpx.AsyncClient(base_url=service.server.url) as client:
            health = (await client.get("/healthz")).json()
            assert "acme" in health["providers"]
            body, headers = signed(CALL[1])
            unsigned = await client.post("/webhook/acme", content=body, headers={"content-type": "application/json"})
            wrong = await client.post("/webhook/acme", content=body, headers=signed(CALL[1], "not-the-secret")[1])
            bad = await client.post("/webhook/acme", content=b"{}", headers=signed({}, SIGNING_SECRET)[1])
        # The status Acme's spec names for a failed signature; a bad body is still a 400.
        assert (unsigned.status_code, wrong.status_code) == (403, 403)
        assert "x-acme-signature does not match" in wrong.json()["error"]["message"]
        assert bad.status_code == 400
        await asyncio.sleep(0.1)  # the group commit
        call = await queries.get_call(service.store, CALL_ID)
        assert call is not None and call["call"]["provider"] == "acme" and call["call"]["status"] == "ended"
        said = [e["text"] for e in call["events"] if e["kind"] == "transcript.final"]
        assert said == ["Acme, how can I help?", "Book me a table."]
        counts = await queries.counts(service.store)
        assert counts["deliveries"] == len(CALL) and counts["rejected_requests"] == 3
        rejected = await service.store.fetchall("SELECT provider, reason, headers FROM rejected_requests ORDER BY id")
        assert [(row["provider"], row["reason"].split(":")[0]) for row in rejected] == [
            ("acme", "authentication failed (acme-signature)"),
            ("acme", "authentication failed (acme-signature)"),
            ("acme", "bad payload"),
        ]
        assert not any(SIGNING_SECRET in row["reason"] + row["headers"] for row in rejected)
    finally:
        await service.close()


async def test_without_its_secret_the_receiver_warns_and_refuses(registered, start_receiver):
    service, _ = await start_receiver()
    assert "no Acme signing secret. Set VOICE_CONSOLE_ACME_SIGNING_SECRET." in " ".join(service.warnings)
    body, headers = signed(CALL[0])
    async with httpx.AsyncClient() as client:
        response = await client.post(service.server.url + "/webhook/acme", content=body, headers=headers)
    assert response.status_code == 403


async def test_acme_keys_are_listed_set_and_tested(registered, acme_api, isolated_environment):
    async def keys(*argv: str, env: dict[str, str], stdin: str = "") -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        args = build_parser().parse_args(["keys", *argv])
        code = await run_keys_async(args, secret_store=SecretStore(env), stdin=io.StringIO(stdin), out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    code, out, _ = await keys("list", "acme", env={"VOICE_CONSOLE_ACME_API_KEY": API_KEY})
    assert code == 0
    assert out.splitlines() == [
        "acme_api_key         env (VOICE_CONSOLE_ACME_API_KEY)",
        "acme_signing_secret  none",
    ]
    code, out, _ = await keys("set", "acme", "--name", "signing_secret", env={}, stdin=SIGNING_SECRET + "\n")
    assert code == 0 and isolated_environment.store[(SERVICE, "acme_signing_secret")] == SIGNING_SECRET
    assert SIGNING_SECRET not in out

    code, out, err = await keys("test", "acme", env={"VOICE_CONSOLE_ACME_API_KEY": API_KEY})
    assert (code, out, err) == (0, f"acme_api_key (env): ok, accepted by {acme_api.server.url}.\n", "")
    code, out, err = await keys("test", "acme", env={"VOICE_CONSOLE_ACME_API_KEY": "acme-wrong"})
    assert code == 1 and f"refused by {acme_api.server.url} (401)" in err and "acme-wrong" not in out + err
    code, _, err = await keys("test", "acme", env={})
    assert code == 1 and "acme_api_key is not set" in err


async def test_the_keys_screen_shows_acme(registered, settings):
    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env={"VOICE_CONSOLE_ACME_API_KEY": API_KEY})))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("k")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, KeysScreen) and app.screen, what="keys screen")
        await wait_for(pilot, lambda: "acme_signing_secret" in screen.sources, what="Acme's keys read")
        assert screen.sources["acme_api_key"] == "env (VOICE_CONSOLE_ACME_API_KEY)"
        assert screen.sources["acme_signing_secret"] == "none"


async def test_a_replay_is_signed_by_acme_and_accepted(registered, tmp_path, monkeypatch):
    source = await record_call(tmp_path)
    db = str(source.settings.db_path)
    await source.close()
    target, _ = await start_service(tmp_path / "b", secrets={"acme_signing_secret": SIGNING_SECRET})
    try:

        async def replay(env: dict[str, str]) -> tuple[int, str, str]:
            args = build_parser().parse_args(
                ["replay", CALL_ID, "--to", target.server.url, "--speed", "50", "--public-url", PUBLIC_URL, "--db", db]
            )
            out, err = io.StringIO(), io.StringIO()
            secrets = SecretStore(env)
            code = await run_replay(args, settings_from_args(args), out=out, err=err, secret_store=secrets)
            return code, out.getvalue(), err.getvalue()

        code, out, err = await replay({"VOICE_CONSOLE_ACME_SIGNING_SECRET": SIGNING_SECRET})
        assert code == 0, out + err
        assert f"{len(CALL)} accepted (2xx), 0 not" in out.splitlines()[-1]
        assert SIGNING_SECRET not in out + err
        await asyncio.sleep(0.1)
        replayed = await queries.get_call(target.store, REPLAY_MARK + CALL_ID)
        assert replayed is not None and replayed["call"]["status"] == "ended"
        assert (await queries.counts(target.store))["rejected_requests"] == 0

        # Without the secret: the warning names Acme's secret and its variable, and the receiver refuses.
        code, out, err = await replay({})
        assert code == 1
        assert "no Acme signing secret (set VOICE_CONSOLE_ACME_SIGNING_SECRET or `voice-console keys set acme`)" in err
        assert "-> 403" in out
    finally:
        await target.close()


async def test_dial_offers_acme_and_dials_through_its_client(registered, acme_api, settings):
    args = build_parser().parse_args(["dial", "--provider", "acme", "--to", "(415) 555-0142"])
    out, err = io.StringIO(), io.StringIO()
    env = {"VOICE_CONSOLE_ACME_API_KEY": API_KEY}
    code = await run_dial(args, settings, secret_store=SecretStore(env), out=out, err=err)
    assert code == 0, err.getvalue()
    assert out.getvalue().startswith("acme-call-9  queued  to +1 415-555-0142")
    assert "with agent agt_1" in out.getvalue()
    assert acme_api.calls_placed() == [{"to": "+14155550142", "line": "line_1", "agent": "agt_1"}]

    code = await run_dial(args, settings, secret_store=SecretStore({}), out=out, err=(err := io.StringIO()))
    assert code == 1 and err.getvalue() == (
        "voice-console dial: no Acme API key: not set: use `VOICE_CONSOLE_ACME_API_KEY` or the OS keyring.\n"
    )


async def test_the_dial_dialog_offers_acme_and_places_the_call(registered, acme_api, settings):
    env = {"VOICE_CONSOLE_ACME_API_KEY": API_KEY}
    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env)))
    dialed: list[CallDialed | None] = []
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.service is not None, what="the receiver")
        dialog = DialScreen(app.main.context)
        await app.push_screen(dialog, dialed.append)
        provider = dialog.query_one("#dial-provider", Select)
        assert "acme" in [value for _, value in provider._options]
        provider.value = "acme"
        await wait_for(pilot, lambda: dialog.query_one("#dial-from", Select).value == "line_1", what="Acme's lines")
        assert dialog.query_one("#dial-assistant", Select).value == "agt_1"
        dialog.query_one("#dial-to", Input).value = "+14155550142"
        await pilot.pause(0.05)
        assert dialog.problem() is None
        await pilot.click("#dial-go")
        await wait_for(pilot, lambda: dialed, what="the dialog's answer")
    assert dialed[0] is not None and dialed[0].call_id == "acme-call-9"
    assert acme_api.calls_placed() == [{"to": "+14155550142", "line": "line_1", "agent": "agt_1"}]
