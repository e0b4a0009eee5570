"""Twilio's REST API as the console uses it, against the simulated Twilio over real HTTP: the client,
dialing into the console's own receiver (TwiML fetched with a signed request, status callbacks in
order), errors as one line, and the official `twilio` SDK as the oracle."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from twilio.request_validator import RequestValidator

from console.cli import build_parser
from console.commands.dial import run_dial
from console.providers.twilio.client import TwilioAuthError, TwilioClient, TwilioError, dialer
from console.secrets import SecretStore
from console.simulator.twilio import ACCOUNT_SID, DIALED_NUMBER, SimulatedTwilio
from tests.helpers.secrets import PUBLIC_URL, TWILIO_TOKEN

TO = "+14155550142"


def client(platform: SimulatedTwilio, **options) -> TwilioClient:
    return TwilioClient(platform.account_sid, platform.auth_token, base_url=platform.url, max_retries=0, **options)


async def test_the_client_places_fetches_lists_and_ends_calls():
    async with SimulatedTwilio(speed=20) as platform:
        async with client(platform) as api:
            numbers = await api.list_numbers()
            assert [(n["sid"].startswith("PN"), n["phone_number"]) for n in numbers] == [(True, DIALED_NUMBER)]
            created = [
                await api.create_call(to=TO, from_=DIALED_NUMBER, twiml="<Response><Pause/></Response>")
                for _ in range(3)
            ]
            assert all(call["status"] == "queued" and call["direction"] == "outbound-api" for call in created)
            assert (await api.get_call(created[0]["sid"]))["to"] == TO
            listed = await api.list_calls()
            assert [call["sid"] for call in listed] == [call["sid"] for call in reversed(created)]
            assert len(await api.list_calls(limit=2)) == 2
            platform_page = await api.request("GET", api._path("Calls.json"), params={"PageSize": 2})
            assert platform_page["next_page_uri"]  # so list_calls() above followed a page
            updated = await api.update_number(numbers[0]["sid"], {"VoiceUrl": PUBLIC_URL + "/webhook/twilio/voice"})
            assert updated["voice_url"] == PUBLIC_URL + "/webhook/twilio/voice"


async def test_twilio_errors_are_one_line_with_the_code():
    async with SimulatedTwilio() as platform:
        async with client(platform) as api:
            with pytest.raises(TwilioError) as bad_to:
                await api.create_call(to="12345", from_=DIALED_NUMBER, twiml="<Response/>")
            line = str(bad_to.value)
            assert line.startswith("Twilio API 400") and "not a valid phone number" in line
            assert "error 21211, https://www.twilio.com/docs/errors/21211" in line and "\n" not in line
            with pytest.raises(TwilioError, match="21210"):
                await api.create_call(to=TO, from_="+14155550100", twiml="<Response/>")
            with pytest.raises(TwilioError, match="20404"):
                await api.get_call("CA" + "0" * 32)
        async with TwilioClient(ACCOUNT_SID, "wrong", base_url=platform.url, max_retries=0) as wrong:
            with pytest.raises(TwilioAuthError) as refused:
                await wrong.list_numbers()
        assert "wrong" not in str(refused.value) and "keys set twilio" in str(refused.value)
        # An API key (SID and secret) is accepted instead of the auth token.
        platform.api_keys["SK" + "1" * 32] = "key-secret"
        keyed = TwilioClient(
            ACCOUNT_SID, "", api_key_sid="SK" + "1" * 32, api_key_secret="key-secret", base_url=platform.url
        )
        async with keyed:
            assert await keyed.list_numbers()


async def test_a_dialed_call_fetches_signed_twiml_and_reports_every_status_in_order(start_receiver):
    """Dial through the simulated Twilio into the console's receiver: the voice URL is fetched once
    the call is answered, signed over the public URL as Twilio signs it (the receiver verifies it),
    and the status callbacks arrive with their SequenceNumber; hang-up ends the call."""
    service, seen = await start_receiver()
    tunnels = {PUBLIC_URL: service.server.url}
    async with SimulatedTwilio(auth_token=TWILIO_TOKEN, speed=20, tunnels=tunnels) as platform:
        keys = {"twilio_account_sid": platform.account_sid, "twilio_auth_token": TWILIO_TOKEN}
        async with dialer(keys, platform.url, public_url=PUBLIC_URL, max_retries=0) as dial:
            (line,) = await dial.phone_lines()
            placed = await dial.place_call(to=TO, line_id=line.id, agent_id="voice-url")
        player = platform.players[placed.id]
        async with asyncio.timeout(10):
            while player.status != "in-progress":
                await asyncio.sleep(0.02)
        async with client(platform) as api:
            # a redirect to a URL: fetched as the voice webhook is, signed over the public URL
            await api.update_call(placed.id, url=PUBLIC_URL + "/webhook/twilio/voice?leg=2")
            async with asyncio.timeout(10):
                while not any(d.type == "voice:redirect" for d in platform.deliveries):
                    await asyncio.sleep(0.02)
            await api.hang_up(placed.id)
            async with asyncio.timeout(10):
                await player.ended.wait()
            with pytest.raises(TwilioError, match="21220"):  # not in progress any more
                await api.update_call(placed.id, twiml="<Response><Say>late</Say></Response>")
    voice = [d for d in platform.deliveries if d.type in ("voice", "voice:redirect")]
    assert [(d.type, d.status) for d in voice] == [("voice", 200), ("voice:redirect", 200)]  # both verified
    statuses = [d for d in platform.deliveries if d.type.startswith("status:")]
    assert [d.type for d in statuses] == [
        "status:initiated",
        "status:ringing",
        "status:in-progress",
        "status:completed",
    ]
    assert all(d.status == 204 or d.status == 200 for d in statuses)
    rows = await service.store.fetchall("SELECT count(*) AS n FROM rejected_requests", ())
    assert rows[0]["n"] == 0
    assert any(e.call_id == placed.id and e.kind == "call.ended" for e in seen) or any(
        e.call_id == placed.id and e.kind == "call.status" and getattr(e, "status", "") == "ended" for e in seen
    )


async def test_dial_provider_twilio_from_the_command_line(start_receiver, settings):
    service, _ = await start_receiver()
    async with SimulatedTwilio(auth_token=TWILIO_TOKEN, speed=20, tunnels={PUBLIC_URL: service.server.url}) as platform:
        settings.twilio.base_url = platform.url
        settings.receiver.public_url = PUBLIC_URL
        store = SecretStore(
            {"VOICE_CONSOLE_TWILIO_ACCOUNT_SID": platform.account_sid, "VOICE_CONSOLE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN}
        )
        out, err = io.StringIO(), io.StringIO()
        args = build_parser().parse_args(["dial", "--provider", "twilio", "--to", "(415) 555-0142", "--json"])
        code = await run_dial(args, settings, secret_store=store, out=out, err=err)
        assert (code, err.getvalue()) == (0, "")
        call = json.loads(out.getvalue())
        assert call["to"] == TO and call["from"] == DIALED_NUMBER and call["sid"] in platform.calls

        settings.receiver.public_url = None
        out, err = io.StringIO(), io.StringIO()
        code = await run_dial(args, settings, secret_store=store, out=out, err=err)
        assert code == 1 and "set receiver.public_url" in err.getvalue() and "Traceback" not in err.getvalue()


async def test_the_official_twilio_sdk_validates_every_signature_and_drives_the_simulator():
    """The SDK's RequestValidator accepts every request the simulated Twilio signed (caught by a plain
    recording server behind the "tunnel"), and the SDK's REST client, its HTTP client pointed at the
    simulator, creates, fetches and ends a call."""
    from urllib.parse import parse_qsl

    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    from console.core.http_types import Response
    from console.receiver.http import HttpServer

    caught = []

    async def record(request):
        caught.append(request)
        if request.path.endswith("/voice"):
            return Response(200, body=b'<Response><Pause length="5"/></Response>', content_type="text/xml")
        return Response(204)

    server = HttpServer(record, port=0)
    await server.start()
    try:
        async with SimulatedTwilio(auth_token=TWILIO_TOKEN, speed=20, tunnels={PUBLIC_URL: server.url}) as platform:

            class ToSimulator(TwilioHttpClient):
                def request(self, method, url, *args, **kwargs):
                    simulated = url.replace("https://api.twilio.com", platform.url)
                    return super().request(method, simulated, *args, **kwargs)

            sdk = Client(platform.account_sid, TWILIO_TOKEN, http_client=ToSimulator())
            call = await asyncio.to_thread(
                sdk.calls.create,
                to=TO,
                from_=DIALED_NUMBER,
                url=PUBLIC_URL + "/webhook/twilio/voice?tenant=a b",
                status_callback=PUBLIC_URL + "/webhook/twilio/status",
                status_callback_event=["initiated", "ringing", "answered", "completed"],
            )
            assert call.status == "queued" and call.sid in platform.calls
            fetched = await asyncio.to_thread(sdk.calls(call.sid).fetch)
            assert fetched.to == TO and fetched.direction == "outbound-api"
            player = platform.players[call.sid]
            async with asyncio.timeout(10):
                while player.status != "in-progress":
                    await asyncio.sleep(0.02)
            await asyncio.to_thread(sdk.calls(call.sid).update, status="completed")
            async with asyncio.timeout(10):
                await player.ended.wait()
            assert (await asyncio.to_thread(sdk.calls(call.sid).fetch)).status == "completed"
    finally:
        await server.close()
    validator = RequestValidator(TWILIO_TOKEN)
    assert [request.path for request in caught].count("/webhook/twilio/status") == 4
    assert [request.path for request in caught].count("/webhook/twilio/voice") == 1
    for request in caught:
        params = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
        assert validator.validate(PUBLIC_URL + request.target, params, request.header("x-twilio-signature"))


async def test_status_callbacks_out_of_order_are_put_in_order_by_sequence_number(start_receiver):
    service, seen = await start_receiver()
    tunnels = {PUBLIC_URL: service.server.url}
    async with SimulatedTwilio(auth_token=TWILIO_TOKEN, speed=20, tunnels=tunnels, out_of_order=True) as platform:
        async with client(platform) as api:
            sid = (
                await api.create_call(
                    to=TO,
                    from_=DIALED_NUMBER,
                    url=PUBLIC_URL + "/webhook/twilio/voice",
                    status_callback=PUBLIC_URL + "/webhook/twilio/status",
                )
            )["sid"]
        player = platform.players[sid]
        async with asyncio.timeout(10):
            while player.status != "in-progress":
                await asyncio.sleep(0.02)
        async with client(platform) as api:
            await api.hang_up(sid)
        async with asyncio.timeout(10):
            await player.ended.wait()
    sent = [d.type for d in platform.deliveries if d.type.startswith("status:")]
    assert sent == ["status:ringing", "status:initiated", "status:in-progress", "status:completed"]
    statuses = [e for e in seen if e.call_id == sid and e.kind == "call.status"]
    arrived = [e.status for e in statuses]
    in_time = [e.status for e in sorted(statuses, key=lambda e: e.at)]
    assert arrived.index("queued") > arrived.index("ringing")  # `initiated` came late ...
    assert in_time.index("queued") < in_time.index("ringing")  # ... and is dated before `ringing`
    assert service.pipeline.tracker.get(sid).status == "ended"  # the late `initiated` did not reopen it
