"""Operator checks on a Retell agent: will the console see its calls and their barge-ins?

Each problem is a `Check` (console.providers.checks); `patch_webhook_events` builds the one
`update-agent` body that repairs the commonest (reference/retell-twilio.md §1–2).
"""

from __future__ import annotations

from typing import Any

from console.providers.checks import Check, same_url

# What Retell sends when an agent has no `webhook_events` of its own.
RETELL_DEFAULT_WEBHOOK_EVENTS: tuple[str, ...] = ("call_started", "call_ended", "call_analyzed")
# What the console is built on: call state, the transcript and its word times (barge-ins), the summary.
REQUIRED_WEBHOOK_EVENTS: tuple[str, ...] = ("call_started", "call_ended", "call_analyzed", "transcript_updated")
WEBHOOK_PATH = "/webhook/retell"


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


def check_agent(agent: dict[str, Any], *, public_url: str | None = None) -> list[Check]:
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
