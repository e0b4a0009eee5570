"""Retell's REST API, as far as the console uses it today: the request that proves a key."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

DEFAULT_BASE_URL = "https://api.retellai.com"


def agents_probe(keys: Mapping[str, str], base_url: str) -> httpx.Request:
    """`keys test retell`: `POST /v2/list-agents` (2026 API) for one agent, the cheapest authenticated read."""
    return httpx.Request(
        "POST",
        f"{base_url.rstrip('/')}/v2/list-agents",
        json={"limit": 1},
        headers={"Authorization": f"Bearer {keys['retell_api_key']}"},
    )
