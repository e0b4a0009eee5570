"""Vapi REST client (httpx): assistants, calls, phone numbers, tools.

Errors become `VapiError`, whose text is one readable line built from Vapi's
NestJS error body. The API key is sent only in the Authorization header and is
scrubbed from any text we show. 429/5xx and connection failures are retried
with exponential backoff and jitter, honouring `Retry-After`, a bounded number
of times; POSTs are retried only where the request cannot have taken effect,
because a repeated `POST /call` dials the customer twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx

from console.providers.base import Agent, PhoneLine, PlacedCall
from console.providers.rest import (
    ApiAuthError,
    ApiConnectionError,
    ApiError,
    JsonApi,
)

DEFAULT_BASE_URL = "https://api.vapi.ai"

# E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
E164 = re.compile(r"^\+[1-9]\d{1,14}$")

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Statuses that mean the server did not act on the request, so even a POST may be repeated.
_SAFE_FOR_POST = frozenset({429, 503})


class VapiError(ApiError):
    """A failed Vapi API request. `str()` is one line, fit for a status bar."""


class VapiAuthError(VapiError, ApiAuthError):
    """401: the API key was refused."""


class VapiConnectionError(VapiError, ApiConnectionError):
    """The API could not be reached (DNS, refused, timeout); status is 0."""


def validate_e164(number: str, *, what: str = "phone number") -> str:
    """Return `number` if it is E.164, else raise ValueError saying what is wrong."""
    if not isinstance(number, str) or not E164.match(number):
        raise ValueError(
            f"{what} {number!r} is not in E.164 format: write '+', the country code and the "
            "number, digits only, at most 15 digits (e.g. +14155550142)."
        )
    return number


def as_list(data: Any, *, what: str) -> list[dict[str, Any]]:
    """Vapi v1 lists are bare arrays; v2 ones are `{results: [...]}` envelopes."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        return data["results"]
    raise VapiError(200, f"Vapi API returned an unexpected shape for {what}: expected a list")


class VapiClient(JsonApi):
    """Async client for the part of Vapi's REST API the console uses."""

    api = "Vapi API"
    key_hint = "check `voice-console keys set vapi` or VOICE_CONSOLE_VAPI_API_KEY"
    error = VapiError
    auth_error = VapiAuthError
    connection_error = VapiConnectionError

    def __init__(self, api_key: str, *, base_url: str = DEFAULT_BASE_URL, **options: Any) -> None:
        super().__init__(api_key, base_url=base_url, **options)

    # assistants

    async def list_assistants(self, *, limit: int | None = None, **filters: Any) -> list[dict[str, Any]]:
        data = await self.request("GET", "/assistant", params={"limit": limit, **filters})
        return as_list(data, what="GET /assistant")

    async def get_assistant(self, assistant_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/assistant/{_seg(assistant_id)}")

    async def create_assistant(self, assistant: dict[str, Any]) -> dict[str, Any]:
        return await self.request("POST", "/assistant", json_body=assistant)

    async def update_assistant(self, assistant_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", f"/assistant/{_seg(assistant_id)}", json_body=patch)

    # calls

    async def create_phone_call(
        self,
        *,
        phone_number_id: str,
        customer_number: str,
        assistant_id: str | None = None,
        assistant: dict[str, Any] | None = None,
        assistant_overrides: dict[str, Any] | None = None,
        customer_name: str | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Outbound phone call. The number is checked before anything is sent."""
        validate_e164(customer_number, what="customer number")
        if not phone_number_id:
            raise ValueError("phone_number_id is required for a phone call (see `GET /phone-number`)")
        customer: dict[str, Any] = {"number": customer_number}
        if customer_name:
            customer["name"] = customer_name
        body = _call_body(assistant_id, assistant, assistant_overrides, name)
        body.update(phoneNumberId=phone_number_id, customer=customer)
        return await self.request("POST", "/call", json_body=body)

    async def create_web_call(
        self,
        *,
        assistant_id: str | None = None,
        assistant: dict[str, Any] | None = None,
        assistant_overrides: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """Browser (Daily) call: the answer carries `webCallUrl`."""
        body = _call_body(assistant_id, assistant, assistant_overrides, name)
        return await self.request("POST", "/call/web", json_body=body)

    async def create_websocket_call(
        self,
        *,
        assistant_id: str | None = None,
        assistant: dict[str, Any] | None = None,
        assistant_overrides: dict[str, Any] | None = None,
        name: str | None = None,
        audio_format: str = "pcm_s16le",
        sample_rate: int = 16000,
    ) -> dict[str, Any]:
        """A call whose caller is a WebSocket (`transport.websocketCallUrl`); no phone needed."""
        if audio_format not in ("pcm_s16le", "mulaw"):
            raise ValueError("audio_format must be 'pcm_s16le' or 'mulaw'")
        body = _call_body(assistant_id, assistant, assistant_overrides, name)
        body["transport"] = {
            "provider": "vapi.websocket",
            "audioFormat": {"format": audio_format, "container": "raw", "sampleRate": sample_rate},
        }
        return await self.request("POST", "/call", json_body=body)

    async def list_calls(
        self,
        *,
        limit: int | None = None,
        assistant_id: str | None = None,
        phone_number_id: str | None = None,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        params = {"limit": limit, "assistantId": assistant_id, "phoneNumberId": phone_number_id, **filters}
        return as_list(await self.request("GET", "/call", params=params), what="GET /call")

    async def get_call(self, call_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/call/{_seg(call_id)}")

    # phone numbers, tools

    async def list_phone_numbers(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        return as_list(await self.request("GET", "/phone-number", params={"limit": limit}), what="GET /phone-number")

    async def list_tools(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        return as_list(await self.request("GET", "/tool", params={"limit": limit}), what="GET /tool")


def _seg(value: str) -> str:
    """An id as one path segment (ids are UUIDs; refuse anything that would change the path)."""
    if not value or "/" in value or "?" in value or "#" in value:
        raise ValueError(f"not a valid Vapi id: {value!r}")
    return value


def _call_body(
    assistant_id: str | None,
    assistant: dict[str, Any] | None,
    assistant_overrides: dict[str, Any] | None,
    name: str | None,
) -> dict[str, Any]:
    if (assistant_id is None) == (assistant is None):
        raise ValueError("give exactly one of assistant_id or assistant (a transient assistant)")
    body: dict[str, Any] = {"assistantId": assistant_id} if assistant_id else {"assistant": assistant}
    if assistant_overrides:
        body["assistantOverrides"] = assistant_overrides
    if name:
        body["name"] = name
    return body


def assistants_probe(keys: Mapping[str, str], base_url: str) -> httpx.Request:
    """`keys test vapi`: list one assistant, the cheapest read the private key allows."""
    return httpx.Request(
        "GET",
        f"{base_url.rstrip('/')}/assistant",
        params={"limit": 1},
        headers={"Authorization": f"Bearer {keys['vapi_api_key']}", "Accept": "application/json"},
    )


class VapiDialer:
    """The `PlatformClient` dialing uses (console.providers.base): assistants, phone numbers, `POST /call`."""

    def __init__(self, client: VapiClient) -> None:
        self._client = client

    async def __aenter__(self) -> VapiDialer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def agents(self, limit: int = 100) -> list[Agent]:
        found = await self._client.list_assistants(limit=limit)
        return [Agent(str(a["id"]), str(a.get("name") or a["id"])) for a in found if a.get("id")]

    async def phone_lines(self, limit: int = 100) -> list[PhoneLine]:
        found = await self._client.list_phone_numbers(limit=limit)
        return [
            PhoneLine(str(n["id"]), str(n.get("number") or n.get("sipUri") or n["id"]), str(n.get("name") or ""))
            for n in found
            if n.get("id")
        ]

    async def place_call(self, *, to: str, line_id: str, agent_id: str) -> PlacedCall:
        call = await self._client.create_phone_call(phone_number_id=line_id, customer_number=to, assistant_id=agent_id)
        monitor = call.get("monitor") or {}
        return PlacedCall(
            str(call.get("id", "?")),
            str(call.get("status", "?")),
            control_url=monitor.get("controlUrl"),
            listen_url=monitor.get("listenUrl"),
            raw=call,
        )


def dialer(keys: Mapping[str, str], base_url: str, **options: Any) -> VapiDialer:
    return VapiDialer(VapiClient(keys["vapi_api_key"], base_url=base_url, **options))
