"""Assistant and agent checks that change something: shared by `voice-console assistants --fix`
and the TUI's `F`."""

from __future__ import annotations

from typing import Any

from console.providers.retell.checks import effective_webhook_events, patch_webhook_events
from console.providers.retell.client import RetellClient
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


async def fix_webhook_events(client: RetellClient, agent: dict[str, Any]) -> list[str]:
    """Add the webhook events the console needs to a Retell agent with one update; its list
    afterwards as Retell answered it, or [] when nothing was missing."""
    patch = patch_webhook_events(agent)
    if not patch:
        return []
    updated = await client.update_agent(str(agent["agent_id"]), patch)
    if isinstance(updated, dict) and isinstance(updated.get("webhook_events"), list):
        return effective_webhook_events(updated)
    return list(patch["webhook_events"])
