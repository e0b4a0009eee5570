"""Vapi REST client (httpx): assistants, calls, phone numbers, tools.

Errors become `VapiError`, whose text is one readable line built from Vapi's
NestJS error body. The API key is sent only in the Authorization header and is
scrubbed from any text we show. 429/5xx and connection failures are retried
with exponential backoff and jitter, honouring `Retry-After`, a bounded number
of times; POSTs are retried only where the request cannot have taken effect,
because a repeated `POST /call` dials the customer twice.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from console.providers.base import Agent, PhoneLine, PlacedCall, PlatformError

DEFAULT_BASE_URL = "https://api.vapi.ai"

# E.164: a plus, a country code that does not start with 0, at most 15 digits in all.
E164 = re.compile(r"^\+[1-9]\d{1,14}$")

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Statuses that mean the server did not act on the request, so even a POST may be repeated.
_SAFE_FOR_POST = frozenset({429, 503})


class VapiError(PlatformError):
    """A failed Vapi API request. `str()` is one line, fit for a status bar."""

    def __init__(self, status: int, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body  # the parsed error body, when there was one

    def __str__(self) -> str:
        return self.message


class VapiAuthError(VapiError):
    """401: the API key was refused."""


class VapiConnectionError(VapiError):
    """The API could not be reached (DNS, refused, timeout); status is 0."""


def validate_e164(number: str, *, what: str = "phone number") -> str:
    """Return `number` if it is E.164, else raise ValueError saying what is wrong."""
    if not isinstance(number, str) or not E164.match(number):
        raise ValueError(
            f"{what} {number!r} is not in E.164 format: write '+', the country code and the "
            "number, digits only, at most 15 digits (e.g. +14155550142)."
        )
    return number


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_line(status: int, reason: str, body: bytes, *, secret: str | None = None) -> tuple[str, Any]:
    """Turn an error response into ("Vapi API 400 Bad Request: ...", parsed body)."""
    parsed: Any = None
    detail = ""
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        detail = body.decode("utf-8", "replace")
    if isinstance(parsed, dict):
        reason = str(parsed.get("error") or reason)
        message = parsed.get("message")
        if isinstance(message, list):
            detail = "; ".join(str(item) for item in message)
        elif isinstance(message, (str, int, float)):
            detail = str(message)
        elif isinstance(message, dict):
            detail = json.dumps(message, separators=(",", ":"))
    elif parsed is not None:
        detail = json.dumps(parsed)
    if secret:
        detail = detail.replace(secret, "***")
    head = f"Vapi API {status} {reason}".rstrip()
    if status == 401:
        hint = "the API key was refused (check `voice-console keys set vapi` or VOICE_CONSOLE_VAPI_API_KEY)"
        detail = f"{hint}; Vapi said: {detail}" if detail else hint
    return (f"{head}: {_one_line(detail)}" if detail else head), parsed


def retry_after_seconds(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def as_list(data: Any, *, what: str) -> list[dict[str, Any]]:
    """Vapi v1 lists are bare arrays; v2 ones are `{results: [...]}` envelopes."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and isinstance(data.get("results"), list):
        return data["results"]
    raise VapiError(200, f"Vapi API returned an unexpected shape for {what}: expected a list")


class VapiClient:
    """Async client for the part of Vapi's REST API the console uses."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        client: httpx.AsyncClient | None = None,
        max_retries: int = 3,
        timeout_s: float = 15,
        backoff_base_s: float = 0.5,
        max_delay_s: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not api_key:
            raise ValueError("a Vapi API key is required")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._timeout = httpx.Timeout(timeout_s)
        self.max_retries = max(0, max_retries)
        self.backoff_base_s = backoff_base_s
        self.max_delay_s = max_delay_s
        self._sleep = sleep

    def __repr__(self) -> str:  # never show the key
        return f"VapiClient(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> VapiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # transport

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay_s)
        # "Full jitter": spread retries of many clients instead of synchronising them.
        ceiling = min(self.max_delay_s, self.backoff_base_s * (2**attempt))
        return random.uniform(ceiling / 2, ceiling)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> Any:
        method = method.upper()
        url = f"{self.base_url}{path}"
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        clean_params = {k: v for k, v in (params or {}).items() if v is not None} or None
        attempt = 0
        while True:
            try:
                response = await self._client.request(
                    method, url, json=json_body, params=clean_params, headers=headers, timeout=self._timeout
                )
            except httpx.TransportError as exc:
                # A failed connect never reached Vapi; anything later might have, so a POST stops there.
                reached = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if attempt < self.max_retries and (method in _IDEMPOTENT or not reached):
                    await self._sleep(self._delay(attempt, None))
                    attempt += 1
                    continue
                kind = type(exc).__name__
                raise VapiConnectionError(0, f"Vapi API unreachable at {self.base_url} ({kind})") from None
            status = response.status_code
            if status < 400:
                if status == 204 or not response.content:
                    return None
                try:
                    return response.json()
                except ValueError:
                    raise VapiError(status, f"Vapi API {status}: the response was not JSON") from None
            retryable = status == 429 or status >= 500
            if retryable and attempt < self.max_retries and (method in _IDEMPOTENT or status in _SAFE_FOR_POST):
                await self._sleep(self._delay(attempt, retry_after_seconds(response.headers.get("retry-after"))))
                attempt += 1
                continue
            line, parsed = error_line(status, response.reason_phrase, response.content, secret=self._api_key)
            error_type = VapiAuthError if status == 401 else VapiError
            raise error_type(status, line, body=parsed)

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
