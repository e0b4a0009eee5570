"""Operator checks on a Retell agent: will the console see its calls and their barge-ins?

Each problem is a `Check` (console.providers.checks); `patch_webhook_events` builds the one
`update-agent` body that repairs the commonest (reference/retell-twilio.md §1–2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from console.providers.checks import Check, same_url, tap_address

# What Retell sends when an agent has no `webhook_events` of its own.
RETELL_DEFAULT_WEBHOOK_EVENTS: tuple[str, ...] = ("call_started", "call_ended", "call_analyzed")
# What the console is built on: call state, the transcript and its word times (barge-ins), the summary.
REQUIRED_WEBHOOK_EVENTS: tuple[str, ...] = ("call_started", "call_ended", "call_analyzed", "transcript_updated")
WEBHOOK_PATH = "/webhook/retell"
TAP_PATH = "/llm/retell"  # the console's custom-LLM tap (its Tap in the provider spec)


@dataclass(frozen=True)
class LlmTap:
    """This console's custom-LLM tap, as an agent's llm_websocket_url should name it."""

    url: str | None  # wss://<public host>/llm/retell/<token> (Retell appends /<call id>); None: unknown
    forward_to: str | None  # where the tap relays each socket ([retell] llm_forward_to)


def tap_url(public_url: str | None, token: str | None) -> str | None:
    """The tap's address on the public URL (https → wss), with its token; None without either."""
    return tap_address(public_url, TAP_PATH, token)


def custom_llm_url(agent: dict[str, Any]) -> str | None:
    """A custom-LLM agent's llm_websocket_url (None for Retell's own LLMs and conversation flows)."""
    engine = agent.get("response_engine")
    if isinstance(engine, dict) and engine.get("type") == "custom-llm" and engine.get("llm_websocket_url"):
        return str(engine["llm_websocket_url"])
    return None


def shown(url: str) -> str:
    """A URL without its query (it may carry a secret: `?…` says there was one) and, for the tap,
    without its token."""
    parts = urlsplit(url)
    path = parts.path
    if path.startswith(TAP_PATH + "/"):
        path = TAP_PATH + "/<token>"
    return urlunsplit((parts.scheme, parts.netloc, path, "…" if parts.query else "", ""))


def _is_tap(url: str, tap: str) -> bool:
    """`url` reaches the same tap as `tap` (host and path), whatever token it carries."""
    a, b = urlsplit(url), urlsplit(tap)
    return (a.hostname, a.port) == (b.hostname, b.port) and a.path.startswith(TAP_PATH + "/")


def patch_llm_websocket_url(agent: dict[str, Any], tap: LlmTap | None) -> dict[str, Any]:
    """`update-agent` fields pointing a custom-LLM agent's socket at the tap; `{}` when it already goes
    there, or when the tap has nowhere to relay it (that would break the agent's calls)."""
    url = custom_llm_url(agent)
    if url is None or tap is None or tap.url is None or not tap.forward_to or url.rstrip("/") == tap.url:
        return {}
    return {"response_engine": {**agent["response_engine"], "llm_websocket_url": tap.url}}


def effective_webhook_events(agent: dict[str, Any]) -> list[str]:
    value = agent.get("webhook_events")
    if value is None:
        return list(RETELL_DEFAULT_WEBHOOK_EVENTS)
    return [str(item) for item in value]


def missing_webhook_events(agent: dict[str, Any]) -> list[str]:
    present = set(effective_webhook_events(agent))
    return [name for name in REQUIRED_WEBHOOK_EVENTS if name not in present]


def patch_webhook_events(agent: dict[str, Any]) -> dict[str, Any]:
    """`PATCH /update-agent/{id}` body adding what is missing (Retell replaces the list); `{}` when nothing is."""
    missing = missing_webhook_events(agent)
    return {"webhook_events": effective_webhook_events(agent) + missing} if missing else {}


def check_agent(agent: dict[str, Any], *, public_url: str | None = None, tap: LlmTap | None = None) -> list[Check]:
    """Everything that would leave the console blind to the agent's calls or their barge-ins."""
    checks: list[Check] = []
    name = agent.get("agent_name") or agent.get("agent_id") or "this agent"
    missing = missing_webhook_events(agent)
    if missing:
        blind = "transcripts and barge-ins" if "transcript_updated" in missing else "call events"
        checks.append(
            Check(
                "warning",
                "webhook-events-missing",
                f"{name} does not send {', '.join(missing)}; the console will miss live {blind}.",
                f"Update the agent with webhook_events = its current list plus {', '.join(missing)} "
                "(the console can apply this update for you).",
            )
        )
    expected = f"{public_url.rstrip('/')}{WEBHOOK_PATH}" if public_url else None
    url = agent.get("webhook_url")
    if expected is None:
        checks.append(
            Check(
                "info",
                "public-url-unknown",
                "No public URL is configured, so the agent's webhook URL cannot be checked.",
                "Set receiver.public_url (or --public-url) to the tunnel that reaches this console.",
            )
        )
    elif not url:
        checks.append(
            Check(
                "warning",
                "webhook-url-missing",
                f"{name} has no webhook URL of its own; its webhooks go to the account-level URL, if any.",
                f"Set the agent's webhook_url to {expected}.",
            )
        )
    elif not same_url(str(url), expected):
        checks.append(
            Check(
                "warning",
                "webhook-url-elsewhere",
                f"{name} sends its webhooks to {url}, not to this console ({expected}).",
                f"Set the agent's webhook_url to {expected}, or use --forward-to to keep your server in the loop.",
            )
        )
    llm_url = custom_llm_url(agent)
    if llm_url is not None:
        checks += _custom_llm_checks(str(name), llm_url, tap)
    if agent.get("interruption_sensitivity") == 0:
        checks.append(
            Check(
                "warning",
                "interruptions-off",
                f"{name} has interruption_sensitivity 0: the caller can never interrupt it, so there are no barge-ins.",
                "Raise interruption_sensitivity (Retell's default is 1) unless the agent must never be cut off.",
            )
        )
    return checks


def _custom_llm_checks(name: str, url: str, tap: LlmTap | None) -> list[Check]:
    if tap is None or tap.url is None:
        return [
            Check(
                "info",
                "custom-llm-unchecked",
                f"{name} uses a custom LLM at {shown(url)}; whether its socket goes through this console's tap "
                "cannot be checked without a public URL.",
                "Set receiver.public_url (or --public-url) to the tunnel that reaches this console.",
            )
        ]
    if url.rstrip("/") == tap.url:
        if tap.forward_to:
            return []
        return [
            Check(
                "error",
                "tap-has-nowhere-to-relay",
                f"{name}'s custom-LLM socket comes to this console's tap, which has no LLM server to relay it to: "
                "its calls fail.",
                "Set [retell] llm_forward_to (or --retell-llm-forward-to) to your LLM server's wss:// URL.",
            )
        ]
    applies = "the console can apply this for you" if tap.forward_to else "after setting [retell] llm_forward_to"
    if _is_tap(url, tap.url):
        return [
            Check(
                "error",
                "tap-token-wrong",
                f"{name}'s custom-LLM socket goes to this console's tap with another token: the tap refuses its calls.",
                f"Point llm_websocket_url at {shown(tap.url)} with this console's token ({applies}).",
            )
        ]
    relay = (
        f"the tap relays to {shown(tap.forward_to)}"
        + ("" if same_url(url, tap.forward_to) else f", not to {shown(url)}: check that is your server")
        if tap.forward_to
        else f"first set [retell] llm_forward_to = {shown(url)} so the tap relays to your server"
    )
    return [
        Check(
            "warning",
            "custom-llm-not-tapped",
            f"{name}'s custom-LLM socket goes straight to {shown(url)}: the console sees none of its live "
            "transcript, responses or barge-ins.",
            f"Point llm_websocket_url at this console's tap, {shown(tap.url)} ({applies}; {relay}).",
        )
    ]
