"""Twilio's REST API, as far as the console uses it: calls (create, fetch, list, update: hang up
or redirect), incoming phone numbers (list, update), and the request that proves the keys.

Twilio takes form-encoded bodies and HTTP Basic auth — the Account SID and Auth Token, or an
API key SID and its secret (reference/retell-twilio.md §6). Its errors carry a code and a
`more_info` link; each becomes one readable line (`TwilioError`), never a traceback.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import httpx

from console.providers.base import Agent, ControlTarget, LiveAction, LiveTap, PhoneLine, PlacedCall
from console.providers.checks import tap_address
from console.providers.rest import ApiAuthError, ApiConnectionError, ApiError, JsonApi

DEFAULT_BASE_URL = "https://api.twilio.com"
# Every call-progress event, so the console sees each step (Twilio sends only `completed` otherwise).
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
_PAGE = 50
# Where the console's own receiver answers Twilio (its routes in the spec).
VOICE_PATH = "/webhook/twilio/voice"
STATUS_PATH = "/webhook/twilio/status"


class TwilioError(ApiError):
    """A failed Twilio API request. `str()` is one line, fit for a status bar."""


class TwilioAuthError(TwilioError, ApiAuthError):
    """401: the credentials were refused."""


class TwilioConnectionError(TwilioError, ApiConnectionError):
    """The API could not be reached (DNS, refused, timeout); status is 0."""


def account_sid_problem(keys: Mapping[str, str]) -> str | None:
    sid = keys["twilio_account_sid"]
    if not sid.startswith("AC") or "/" in sid:
        return "twilio_account_sid should look like AC followed by 32 hex digits."
    return None


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def account_probe(keys: Mapping[str, str], base_url: str) -> httpx.Request:
    """`keys test twilio`: fetch the account itself, which needs both halves and changes nothing."""
    sid, token = keys["twilio_account_sid"], keys["twilio_auth_token"]
    return httpx.Request(
        "GET",
        f"{base_url.rstrip('/')}/2010-04-01/Accounts/{sid}.json",
        headers={"Authorization": _basic(sid, token)},
    )


class TwilioClient(JsonApi):
    """Async client for the part of Twilio's REST API the console uses."""

    api = "Twilio API"
    key_hint = "check `voice-console keys set twilio` (account SID and auth token) or VOICE_CONSOLE_TWILIO_*"
    error = TwilioError
    auth_error = TwilioAuthError
    connection_error = TwilioConnectionError

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        api_key_sid: str | None = None,
        api_key_secret: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        **options: Any,
    ) -> None:
        """With an API key (SID and secret) the requests authenticate with it; the account SID
        still names the account in every path."""
        if not account_sid:
            raise ValueError("a Twilio account SID is required")
        secret = api_key_secret if api_key_sid and api_key_secret else auth_token
        super().__init__(secret, base_url=base_url, **options)
        self.account_sid = account_sid
        self._user = api_key_sid if api_key_sid and api_key_secret else account_sid

    def _authorization(self) -> str:
        return _basic(self._user, self._api_key)

    def _path(self, tail: str) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/{tail}"

    async def _pages(self, tail: str, key: str, *, limit: int | None, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every item of a list (at most `limit`), following `next_page_uri`."""
        found: list[dict[str, Any]] = []
        path: str | None = self._path(tail)
        query: dict[str, Any] | None = {"PageSize": _PAGE if limit is None else min(_PAGE, limit), **params}
        while path:
            data = await self.request("GET", path, params=query)
            items = data.get(key) if isinstance(data, dict) else None
            if not isinstance(items, list):
                raise TwilioError(200, f"Twilio API returned an unexpected shape for {key}: expected a list")
            found.extend(item for item in items if isinstance(item, dict))
            if limit is not None and len(found) >= limit:
                return found[:limit]
            next_uri = data.get("next_page_uri")
            path, query = (str(next_uri), None) if next_uri and items else (None, None)
        return found

    # calls

    async def create_call(
        self,
        *,
        to: str,
        from_: str,
        url: str | None = None,
        twiml: str | None = None,
        status_callback: str | None = None,
        timeout_s: int | None = None,
    ) -> dict[str, Any]:
        """Place a call: Twilio fetches `url` (or plays `twiml`) when it connects, and posts every
        call-progress event to `status_callback`."""
        if (url is None) == (twiml is None):
            raise ValueError("a Twilio call needs exactly one of url and twiml")
        form: dict[str, Any] = {"To": to, "From": from_, "Url": url, "Twiml": twiml, "Timeout": timeout_s}
        if status_callback:
            form |= {"StatusCallback": status_callback, "StatusCallbackEvent": list(STATUS_EVENTS)}
        return await self.request("POST", self._path("Calls.json"), form=form)

    async def get_call(self, call_sid: str) -> dict[str, Any]:
        return await self.request("GET", self._path(f"Calls/{call_sid}.json"))

    async def list_calls(self, *, limit: int | None = None, status: str | None = None) -> list[dict[str, Any]]:
        return await self._pages("Calls.json", "calls", limit=limit, params={"Status": status})

    async def update_call(
        self, call_sid: str, *, status: str | None = None, url: str | None = None, twiml: str | None = None
    ) -> dict[str, Any]:
        """Hang up (`status` completed, or canceled before it is answered) or redirect (`url`/`twiml`)."""
        form = {"Status": status, "Url": url, "Twiml": twiml}
        return await self.request("POST", self._path(f"Calls/{call_sid}.json"), form=form)

    async def hang_up(self, call_sid: str) -> dict[str, Any]:
        """End the call whatever its state: `canceled` while it is queued or ringing, else `completed`."""
        call = await self.get_call(call_sid)
        status = "canceled" if call.get("status") in ("queued", "ringing") else "completed"
        return await self.update_call(call_sid, status=status)

    # numbers

    async def list_numbers(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        """The account's incoming phone numbers, with their voice URL and status callback."""
        return await self._pages("IncomingPhoneNumbers.json", "incoming_phone_numbers", limit=limit, params={})

    async def update_number(self, number_sid: str, fields: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", self._path(f"IncomingPhoneNumbers/{number_sid}.json"), form=fields)


class TwilioDialer:
    """Twilio behind the dialing protocol (`console.providers.base.PlatformClient`). Twilio has no
    agents: the call does what this console's voice webhook answers (`[twilio] voice_twiml`), so the
    one "agent" offered is that, and the call is placed with `Url` = the receiver's voice URL."""

    def __init__(self, client: TwilioClient, public_url: str | None) -> None:
        self._client = client
        self._public_url = public_url.rstrip("/") if public_url else None

    async def __aenter__(self) -> TwilioDialer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def agents(self, limit: int = 100) -> list[Agent]:
        return [Agent("voice-url", "this console's voice webhook ([twilio] voice_twiml)")]

    async def phone_lines(self, limit: int = 100) -> list[PhoneLine]:
        found = await self._client.list_numbers(limit=limit)
        # Twilio dials from a number, not an id: the number is the line's id.
        return [
            PhoneLine(str(n["phone_number"]), str(n["phone_number"]), str(n.get("friendly_name") or ""))
            for n in found
            if n.get("phone_number")
        ]

    async def place_call(self, *, to: str, line_id: str, agent_id: str) -> PlacedCall:
        if self._public_url is None:
            raise TwilioError(
                0,
                "Twilio fetches the call's TwiML from this console: set receiver.public_url (or --public-url) "
                "to the tunnel that reaches it",
            )
        call = await self._client.create_call(
            to=to,
            from_=line_id,
            url=self._public_url + VOICE_PATH,
            status_callback=self._public_url + STATUS_PATH,
        )
        return PlacedCall(str(call.get("sid", "?")), str(call.get("status", "?")), raw=call)


def dialer(keys: Mapping[str, str], base_url: str, *, public_url: str | None = None, **options: Any) -> TwilioDialer:
    client = TwilioClient(
        keys["twilio_account_sid"],
        keys["twilio_auth_token"],
        api_key_sid=keys.get("twilio_api_key_sid"),
        api_key_secret=keys.get("twilio_api_key_secret"),
        base_url=base_url,
        **options,
    )
    return TwilioDialer(client, public_url)


class TwilioLiveControl:
    """A live Twilio call's controls (a `LiveControl`): ending is an update with `Status=completed`
    (or `canceled` before it is answered); "say" redirects the call to `<Say>` your words followed by
    a fresh `<Connect><Stream>` to the tap — a new stream, since a call's two-way stream can only be
    replaced, not spoken into; "cut off" is `clear` on the tapped stream (the operator's own
    barge-in). A Twilio call has no conversation to add to and no agent to mute here."""

    def __init__(self, client: TwilioClient, call_sid: str, tap: LiveTap | None, stream_url: str | None) -> None:
        self._client = client
        self._call_sid = call_sid
        self._tap = tap
        self._stream_url = stream_url

    async def __aenter__(self) -> TwilioLiveControl:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def say(self, content: str) -> Any:
        said = f"<Say>{xml_escape(content)}</Say>"
        then = (
            f'<Connect><Stream url="{xml_escape(self._stream_url, {chr(34): "&quot;"})}"/></Connect>'
            if self._stream_url
            else ""
        )
        return await self._client.update_call(self._call_sid, twiml=f"<Response>{said}{then}</Response>")

    async def add_message(self, role: Any, content: str, *, trigger_response: bool = True) -> Any:
        raise TwilioError(0, UNAVAILABLE["add_message"])

    async def mute_assistant(self) -> Any:
        raise TwilioError(0, UNAVAILABLE["mute"])

    async def unmute_assistant(self) -> Any:
        raise TwilioError(0, UNAVAILABLE["mute"])

    async def transfer(self, *, number: str) -> Any:
        raise TwilioError(0, UNAVAILABLE["transfer"])

    async def end_call(self) -> Any:
        return await self._client.hang_up(self._call_sid)

    async def cut_off(self) -> Any:
        if self._tap is None:
            raise TwilioError(0, "the call's media stream does not run through this console's tap")
        return await self._tap.cut_off()


UNAVAILABLE: dict[LiveAction, str] = {
    "add_message": "a Twilio call has no conversation to add to: the agent behind the stream is yours",
    "mute": "the agent behind a Twilio stream is yours to mute; x cuts off what it is saying",
    "transfer": "transfer a Twilio call from your agent's TwiML (<Dial>); not from here yet",
}


def open_control(target: ControlTarget) -> TwilioLiveControl:
    keys = target.keys
    client = TwilioClient(
        keys["twilio_account_sid"],
        keys["twilio_auth_token"],
        api_key_sid=keys.get("twilio_api_key_sid"),
        api_key_secret=keys.get("twilio_api_key_secret"),
        base_url=target.base_url or DEFAULT_BASE_URL,
        max_retries=1,
    )
    stream_url = tap_stream_url(target.public_url, keys.get("twilio_stream_token"))
    return TwilioLiveControl(client, target.call_id, target.tap, stream_url)


def connect_stream_verb(stream_url: str) -> str:
    """`<Connect><Stream url=…/>`: a two-way stream, where the call waits until the stream ends."""
    return f'<Connect><Stream url="{xml_escape(stream_url, {chr(34): "&quot;"})}"/></Connect>'


def tap_stream_url(public_url: str | None, token: str | None) -> str | None:
    """The media-stream tap on the public URL (https → wss; Twilio takes wss:// only), with its token."""
    return tap_address(public_url, "/stream/twilio", token)
