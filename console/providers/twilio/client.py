"""Twilio's REST API, as far as the console uses it today: the request that proves the keys."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import httpx

DEFAULT_BASE_URL = "https://api.twilio.com"


def account_sid_problem(keys: Mapping[str, str]) -> str | None:
    sid = keys["twilio_account_sid"]
    if not sid.startswith("AC") or "/" in sid:
        return "twilio_account_sid should look like AC followed by 32 hex digits."
    return None


def account_probe(keys: Mapping[str, str], base_url: str) -> httpx.Request:
    """`keys test twilio`: fetch the account itself, which needs both halves and changes nothing."""
    sid, token = keys["twilio_account_sid"], keys["twilio_auth_token"]
    return httpx.Request(
        "GET",
        f"{base_url.rstrip('/')}/2010-04-01/Accounts/{sid}.json",
        headers={"Authorization": "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()},
    )
