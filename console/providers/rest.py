"""What the platforms' REST clients share: a bearer-key JSON client with bounded retries,
and errors as one readable line (status, what the platform said, what to do)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

import httpx

from console.providers.base import PlatformError

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Statuses that mean the server did not act on the request, so even a POST may be repeated.
_SAFE_FOR_POST = frozenset({429, 503})


class ApiError(PlatformError):
    """A failed API request. `str()` is one line, fit for a status bar."""

    def __init__(self, status: int, message: str, *, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body  # the parsed error body, when there was one

    def __str__(self) -> str:
        return self.message


class ApiAuthError(ApiError):
    """401: the API key was refused."""


class ApiConnectionError(ApiError):
    """The API could not be reached (DNS, refused, timeout); status is 0."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_line(
    status: int, reason: str, body: bytes, *, secret: str | None = None, api: str = "API", key_hint: str = ""
) -> tuple[str, Any]:
    """Turn an error response into ("Vapi API 400 Bad Request: ...", parsed body); `api` names the
    platform's API, `key_hint` says how to fix a refused key."""
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
        if parsed.get("code") and parsed.get("more_info"):  # Twilio's errors: a code and where it is explained
            detail = f"{detail} (error {parsed['code']}, {parsed['more_info']})"
    elif parsed is not None:
        detail = json.dumps(parsed)
    if secret:
        detail = detail.replace(secret, "***")
    head = f"{api} {status} {reason}".rstrip()
    if status == 401:
        hint = f"the API key was refused{f' ({key_hint})' if key_hint else ''}"
        said = api.removesuffix(" API")
        detail = f"{hint}; {said} said: {detail}" if detail else hint
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


class JsonApi:
    """Async JSON-over-HTTPS client with a bearer key, bounded retries and one-line errors.

    A platform's client subclasses it and sets `api` (as messages name it), `key_hint`
    and its error classes. 429/5xx and connection failures are retried with exponential
    backoff and jitter, honouring `Retry-After`, a bounded number of times; POSTs only
    where the request cannot have taken effect (a repeated create call dials twice).
    """

    api = "API"
    key_hint = ""  # how to fix a refused key, e.g. "check `voice-console keys set vapi`"
    error: type[ApiError] = ApiError
    auth_error: type[ApiError] = ApiAuthError
    connection_error: type[ApiError] = ApiConnectionError

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str,
        client: httpx.AsyncClient | None = None,
        max_retries: int = 3,
        timeout_s: float = 15,
        backoff_base_s: float = 0.5,
        max_delay_s: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not api_key:
            raise ValueError(f"{self.api} key is required")
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
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> Self:
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

    def _authorization(self) -> str:
        """The Authorization header's value (a bearer key; Twilio's client uses Basic)."""
        return f"Bearer {self._api_key}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, Any] | None = None,
        form: dict[str, Any] | None = None,
    ) -> Any:
        """`form`: a form-encoded body instead of JSON (a list value is a repeated field)."""
        method = method.upper()
        url = f"{self.base_url}{path}"
        headers = {"Authorization": self._authorization(), "Accept": "application/json"}
        clean_params = {k: v for k, v in (params or {}).items() if v is not None} or None
        clean_form = {k: v for k, v in form.items() if v is not None} if form is not None else None
        attempt = 0
        while True:
            try:
                response = await self._client.request(
                    method,
                    url,
                    json=json_body,
                    data=clean_form,
                    params=clean_params,
                    headers=headers,
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                # A failed connect never reached Vapi; anything later might have, so a POST stops there.
                reached = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout))
                if attempt < self.max_retries and (method in _IDEMPOTENT or not reached):
                    await self._sleep(self._delay(attempt, None))
                    attempt += 1
                    continue
                kind = type(exc).__name__
                raise self.connection_error(0, f"{self.api} unreachable at {self.base_url} ({kind})") from None
            status = response.status_code
            if status < 400:
                if status == 204 or not response.content:
                    return None
                try:
                    return response.json()
                except ValueError:
                    raise self.error(status, f"{self.api} {status}: the response was not JSON") from None
            retryable = status == 429 or status >= 500
            if retryable and attempt < self.max_retries and (method in _IDEMPOTENT or status in _SAFE_FOR_POST):
                await self._sleep(self._delay(attempt, retry_after_seconds(response.headers.get("retry-after"))))
                attempt += 1
                continue
            line, parsed = error_line(
                status,
                response.reason_phrase,
                response.content,
                secret=self._api_key,
                api=self.api,
                key_hint=self.key_hint,
            )
            raise (self.auth_error if status == 401 else self.error)(status, line, body=parsed)
