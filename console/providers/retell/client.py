"""Retell's REST API, as far as the console uses it: agents, phone numbers, calls (create,
get, list, stop) and live control (`update-live-call`), plus the request that proves a key.

Retell moved its list endpoints twice in 2026 (reference/retell-twilio.md §2): lists come
back as a bare array or as `{items, has_more, pagination_key}`; both are read, and pages
are followed. Errors are one readable line (`RetellError`), never a traceback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from console.providers.base import Agent, ControlTarget, LiveAction, LiveTap, PhoneLine, PlacedCall
from console.providers.rest import ApiAuthError, ApiConnectionError, ApiError, JsonApi

DEFAULT_BASE_URL = "https://api.retellai.com"
_PAGE = 100  # the most Retell returns in one page


class RetellError(ApiError):
    """A failed Retell API request. `str()` is one line, fit for a status bar."""


class RetellAuthError(RetellError, ApiAuthError):
    """401: the API key was refused."""


class RetellConnectionError(RetellError, ApiConnectionError):
    """The API could not be reached (DNS, refused, timeout); status is 0."""


def page_of(data: Any, *, what: str) -> tuple[list[dict[str, Any]], str | None]:
    """(items, the next page's key or None), from a bare array or an `{items, has_more, ...}` envelope."""
    if isinstance(data, list):
        return [item for item in data if isinstance(item, dict)], None
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        more = data.get("has_more") and data.get("pagination_key")
        return [item for item in data["items"] if isinstance(item, dict)], str(more) if more else None
    raise RetellError(200, f"Retell API returned an unexpected shape for {what}: expected a list")


class RetellClient(JsonApi):
    """Async client for the part of Retell's REST API the console uses."""

    api = "Retell API"
    key_hint = "check `voice-console keys set retell` or VOICE_CONSOLE_RETELL_API_KEY"
    error = RetellError
    auth_error = RetellAuthError
    connection_error = RetellConnectionError

    def __init__(self, api_key: str, *, base_url: str = DEFAULT_BASE_URL, **options: Any) -> None:
        super().__init__(api_key, base_url=base_url, **options)

    async def _all(
        self,
        method: str,
        path: str,
        *,
        what: str,
        limit: int | None,
        body: dict[str, Any] | None = None,
        in_body: bool = False,
    ) -> list[dict[str, Any]]:
        """Every item of a paginated list (at most `limit`), whichever shape the API answers in."""
        found: list[dict[str, Any]] = []
        key: str | None = None
        while True:
            wanted = _PAGE if limit is None else min(_PAGE, limit - len(found))
            paging = {"limit": wanted, "pagination_key": key}
            if in_body:  # list-calls takes its paging in the body; the others in the query
                data = await self.request(method, path, json_body={**(body or {}), **paging})
            else:
                data = await self.request(method, path, json_body=body, params=paging)
            items, key = page_of(data, what=what)
            found.extend(items)
            if key is None or not items or (limit is not None and len(found) >= limit):
                return found if limit is None else found[:limit]

    # agents

    async def list_agents(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        return await self._all("POST", "/v2/list-agents", what="agents", limit=limit, body={})

    async def get_agent(self, agent_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/get-agent/{agent_id}")

    async def update_agent(self, agent_id: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self.request("PATCH", f"/update-agent/{agent_id}", json_body=patch)

    # phone numbers

    async def list_phone_numbers(self, *, limit: int | None = None) -> list[dict[str, Any]]:
        return await self._all("GET", "/v2/list-phone-numbers", what="phone numbers", limit=limit)

    # calls

    async def create_phone_call(
        self,
        *,
        from_number: str,
        to_number: str,
        override_agent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Place a call from one of the account's numbers (E.164 both)."""
        body: dict[str, Any] = {"from_number": from_number, "to_number": to_number}
        if override_agent_id:
            body["override_agent_id"] = override_agent_id
        if metadata is not None:
            body["metadata"] = metadata
        return await self.request("POST", "/v2/create-phone-call", json_body=body)

    async def get_call(self, call_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/v2/get-call/{call_id}")

    async def list_calls(
        self, *, limit: int | None = None, filter_criteria: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        body = {"filter_criteria": filter_criteria} if filter_criteria else {}
        return await self._all("POST", "/v3/list-calls", what="calls", limit=limit, body=body, in_body=True)

    async def stop_call(self, call_id: str) -> None:
        await self.request("POST", f"/v2/stop-call/{call_id}")

    async def update_live_call(
        self, call_id: str, *, additional_context: str | None = None, trigger_response: bool | None = None
    ) -> dict[str, Any]:
        """Steer a running call: context added to its transcript, and/or a nudge to respond."""
        control: dict[str, Any] = {}
        if additional_context is not None:
            control["additional_context"] = additional_context
        if trigger_response is not None:
            control["trigger_response"] = trigger_response
        return await self.request("PATCH", f"/v2/update-live-call/{call_id}", json_body={"call_control": control})


class RetellDialer:
    """The `PlatformClient` dialing uses (console.providers.base): agents, numbers, create-phone-call."""

    def __init__(self, client: RetellClient) -> None:
        self._client = client

    async def __aenter__(self) -> RetellDialer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def agents(self, limit: int = 100) -> list[Agent]:
        found = await self._client.list_agents(limit=limit)
        return [
            Agent(str(a["agent_id"]), str(a.get("agent_name") or a["agent_id"])) for a in found if a.get("agent_id")
        ]

    async def phone_lines(self, limit: int = 100) -> list[PhoneLine]:
        found = await self._client.list_phone_numbers(limit=limit)
        # Retell dials from a number, not an id: the number is the line's id.
        return [
            PhoneLine(str(n["phone_number"]), str(n["phone_number"]), str(n.get("nickname") or ""))
            for n in found
            if n.get("phone_number")
        ]

    async def place_call(self, *, to: str, line_id: str, agent_id: str) -> PlacedCall:
        call = await self._client.create_phone_call(from_number=line_id, to_number=to, override_agent_id=agent_id)
        return PlacedCall(str(call.get("call_id", "?")), str(call.get("call_status", "?")), raw=call)


class RetellLiveControl:
    """A live Retell call's controls (a `LiveControl`) over its REST API: what the operator says
    or adds goes in as `additional_context` (with `trigger_response` to have the agent answer
    now), ending is `stop-call`. When the call's custom-LLM socket runs through this console's
    tap, "say" speaks the exact words there instead (an `agent_interrupt`). Retell's API cannot
    mute the agent or transfer the call: those say so (`UNAVAILABLE`)."""

    def __init__(self, client: RetellClient, call_id: str, tap: LiveTap | None = None) -> None:
        self._client = client
        self._call_id = call_id
        self._tap = tap

    async def __aenter__(self) -> RetellLiveControl:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def say(self, content: str) -> Any:
        """Spoken word for word through the tap; otherwise added to the conversation, and the agent
        prompted to respond to it now."""
        if self._tap is not None:
            return await self._tap.say(content)
        return await self._client.update_live_call(self._call_id, additional_context=content, trigger_response=True)

    async def add_message(self, role: Any, content: str, *, trigger_response: bool = True) -> Any:
        return await self._client.update_live_call(
            self._call_id, additional_context=content, trigger_response=trigger_response
        )

    async def mute_assistant(self) -> Any:
        raise RetellError(0, UNAVAILABLE["mute"])

    async def unmute_assistant(self) -> Any:
        raise RetellError(0, UNAVAILABLE["mute"])

    async def transfer(self, *, number: str) -> Any:
        raise RetellError(0, UNAVAILABLE["transfer"])

    async def cut_off(self) -> Any:
        raise RetellError(0, UNAVAILABLE["cut_off"])

    async def end_call(self) -> Any:
        await self._client.stop_call(self._call_id)


UNAVAILABLE: dict[LiveAction, str] = {
    "mute": "Retell's API cannot mute a live call's agent",
    "transfer": "a Retell call is transferred by its agent's transfer function, not through the API",
    "cut_off": "Retell stops its agent itself when the caller speaks; s cuts in with your words through the tap",
}


def open_control(target: ControlTarget) -> RetellLiveControl:
    client = RetellClient(target.keys["retell_api_key"], base_url=target.base_url or DEFAULT_BASE_URL, max_retries=1)
    return RetellLiveControl(client, target.call_id, target.tap)


def dialer(keys: Mapping[str, str], base_url: str, **options: Any) -> RetellDialer:
    return RetellDialer(RetellClient(keys["retell_api_key"], base_url=base_url, **options))


def agents_probe(keys: Mapping[str, str], base_url: str) -> httpx.Request:
    """`keys test retell`: `POST /v2/list-agents` (2026 API) for one agent, the cheapest authenticated read."""
    return httpx.Request(
        "POST",
        f"{base_url.rstrip('/')}/v2/list-agents",
        json={"limit": 1},
        headers={"Authorization": f"Bearer {keys['retell_api_key']}"},
    )
