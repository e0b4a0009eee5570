"""Operator checks on a Vapi assistant: will the console actually see and steer its calls?

Each problem is a `Check` with a one-line message and a fix the operator can
apply; `patch_server_messages` builds the PATCH body for the commonest one.
"""

from __future__ import annotations

from typing import Any

from console.providers.checks import Check, same_url

# OAS CreateAssistantDTO.serverMessages default (reference §2); what Vapi sends
# when the assistant has no serverMessages key at all.
VAPI_DEFAULT_SERVER_MESSAGES: tuple[str, ...] = (
    "conversation-update",
    "end-of-call-report",
    "function-call",
    "hang",
    "speech-update",
    "status-update",
    "tool-calls",
    "transfer-destination-request",
    "handoff-destination-request",
    "user-interrupted",
    "assistant.started",
)

# What the console's live view, barge-in timeline and gate are built on.
REQUIRED_SERVER_MESSAGES: tuple[str, ...] = (
    "transcript",
    "speech-update",
    "user-interrupted",
    "tool-calls",
    "status-update",
    "end-of-call-report",
)

WEBHOOK_PATH = "/webhook/vapi"


def effective_server_messages(assistant: dict[str, Any]) -> list[str]:
    """The list Vapi uses: the assistant's own, or the default when it has none."""
    value = assistant.get("serverMessages")
    if value is None:
        return list(VAPI_DEFAULT_SERVER_MESSAGES)
    return [str(item) for item in value]


def missing_server_messages(assistant: dict[str, Any]) -> list[str]:
    present = set(effective_server_messages(assistant))
    # `transcript[transcriptType="final"]` gives finals only; live partials need plain `transcript`.
    return [name for name in REQUIRED_SERVER_MESSAGES if name not in present]


def patch_server_messages(assistant: dict[str, Any]) -> dict[str, Any]:
    """PATCH /assistant/{id} body adding what is missing; `{}` when nothing is.

    It keeps everything the assistant already gets (Vapi replaces the list, so
    sending only the missing names would drop the defaults).
    """
    missing = missing_server_messages(assistant)
    if not missing:
        return {}
    return {"serverMessages": effective_server_messages(assistant) + missing}


def assistant_server_url(assistant: dict[str, Any]) -> str | None:
    server = assistant.get("server")
    if isinstance(server, dict) and server.get("url"):
        return str(server["url"])
    legacy = assistant.get("serverUrl")  # before 2024-12-30 it was a top-level field
    return str(legacy) if legacy else None


def check_assistant(assistant: dict[str, Any], *, public_url: str | None = None) -> list[Check]:
    """Everything that would make the console blind or leave the call open to others."""
    checks: list[Check] = []
    name = assistant.get("name") or assistant.get("id") or "this assistant"

    missing = missing_server_messages(assistant)
    if missing:
        default_note = (
            " (it has no serverMessages, so it gets Vapi's defaults)" if assistant.get("serverMessages") is None else ""
        )
        checks.append(
            Check(
                "warning",
                "server-messages-missing",
                f"{name} does not send {', '.join(missing)}{default_note}; the console will miss "
                + ("live transcripts" if "transcript" in missing else "live events")
                + ".",
                "PATCH the assistant with serverMessages = its current list plus "
                f"{', '.join(missing)} (the console can apply this patch for you).",
            )
        )

    expected = f"{public_url.rstrip('/')}{WEBHOOK_PATH}" if public_url else None
    url = assistant_server_url(assistant)
    if expected is None:
        checks.append(
            Check(
                "info",
                "public-url-unknown",
                "No public URL is configured, so the assistant's server URL cannot be checked.",
                "Set receiver.public_url (or --public-url) to the tunnel that reaches this console.",
            )
        )
    elif url is None:
        checks.append(
            Check(
                "warning",
                "server-url-missing",
                f"{name} has no server URL; its messages go to the phone number's or the organization's "
                "server URL, if any.",
                f"Set the assistant's server.url to {expected}.",
            )
        )
    elif not same_url(url, expected):
        checks.append(
            Check(
                "warning",
                "server-url-elsewhere",
                f"{name} sends its server messages to {url}, not to this console ({expected}).",
                f"Set the assistant's server.url to {expected}, or use --forward-to to keep your server in the loop.",
            )
        )

    plan = assistant.get("monitorPlan") or {}
    open_urls = []
    # Both enabled flags default to true and both auth flags to false (reference §8).
    if plan.get("listenEnabled", True) and not plan.get("listenAuthenticationEnabled", False):
        open_urls.append("listen")
    if plan.get("controlEnabled", True) and not plan.get("controlAuthenticationEnabled", False):
        open_urls.append("control")
    if open_urls:
        which = " and ".join(open_urls)
        checks.append(
            Check(
                "warning",
                "monitor-unauthenticated",
                f"{name}'s {which} URL{'s are' if len(open_urls) > 1 else ' is'} unauthenticated: anyone who "
                f"sees {'them' if len(open_urls) > 1 else 'it'} can "
                + (
                    "listen to and steer"
                    if len(open_urls) > 1
                    else ("listen to" if open_urls == ["listen"] else "steer")
                )
                + " the call.",
                "Set monitorPlan.listenAuthenticationEnabled and controlAuthenticationEnabled to true "
                "(the console then needs your Vapi public key), and keep these URLs out of logs.",
            )
        )
    return checks
