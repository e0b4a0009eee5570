"""Assistant and agent checks that change something: shared by `voice-console assistants --fix`
and the TUI's `F`."""

from __future__ import annotations

from typing import Any

from console.providers.retell.checks import (
    LlmTap,
    effective_webhook_events,
    patch_llm_websocket_url,
    patch_webhook_events,
    shown,
)
from console.providers.retell.client import RetellClient
from console.providers.twilio.checks import patch_number
from console.providers.twilio.client import TwilioClient
from console.providers.vapi.checks import effective_server_messages, patch_server_messages
from console.providers.vapi.client import VapiClient


async def fix_server_messages(client: VapiClient, assistant: dict[str, Any]) -> list[str]:
    """Add the server messages the console needs with one PATCH (the CLI's --fix and the
    TUI's `F`); the assistant's list afterwards as the platform answered it, or [] when
    nothing was missing."""
    patch = patch_server_messages(assistant)
    if not patch:
        return []
    updated = await client.update_assistant(assistant["id"], patch)
    if isinstance(updated, dict) and isinstance(updated.get("serverMessages"), list):
        return effective_server_messages(updated)
    return list(patch["serverMessages"])


async def fix_agent(
    client: RetellClient, agent: dict[str, Any], tap: LlmTap | None = None
) -> tuple[dict[str, Any], list[str]]:
    """With one update: add the webhook events the console needs to a Retell agent, and point a
    custom-LLM agent's socket at the tap (when the tap has a server to relay to). The agent
    afterwards (as Retell answered, else as patched) and what changed, one line each."""
    patch = patch_webhook_events(agent) | patch_llm_websocket_url(agent, tap)
    if not patch:
        return agent, []
    answered = await client.update_agent(str(agent["agent_id"]), patch)
    updated = {**agent, **patch, **(answered if isinstance(answered, dict) else {})}
    changes = []
    if "webhook_events" in patch:
        changes.append(f"webhook_events now include {', '.join(effective_webhook_events(updated))}")
    if "response_engine" in patch and tap is not None and tap.url is not None:
        changes.append(f"llm_websocket_url now goes through the tap, {shown(tap.url)}")
    return updated, changes


async def fix_number(
    client: TwilioClient, number: dict[str, Any], *, public_url: str | None
) -> tuple[dict[str, Any], list[str]]:
    """Point a Twilio number's calls and status callbacks at this console with one update; the number
    afterwards (as Twilio answered) and what changed, one line each."""
    patch = patch_number(number, public_url=public_url)
    if not patch:
        return number, []
    answered = await client.update_number(str(number["sid"]), patch)
    updated = {**number, **(answered if isinstance(answered, dict) else {})}
    changes = []
    if "VoiceUrl" in patch:
        changes.append(f"voice URL now {patch['VoiceUrl']}")
    if "StatusCallback" in patch:
        changes.append(f"status callback now {patch['StatusCallback']}")
    return updated, changes
