"""Operator checks on Vapi assistants."""

from __future__ import annotations

from typing import Any

from console.providers.vapi.checks import (
    REQUIRED_SERVER_MESSAGES,
    VAPI_DEFAULT_SERVER_MESSAGES,
    check_assistant,
    missing_server_messages,
    patch_server_messages,
)

PUBLIC = "https://abc123.ngrok.app"


def codes(assistant: dict[str, Any], public_url: str | None = PUBLIC) -> dict[str, str]:
    return {check.code: check.level for check in check_assistant(assistant, public_url=public_url)}


def good_assistant() -> dict[str, Any]:
    return {
        "id": "a1",
        "name": "Front desk",
        "serverMessages": [*VAPI_DEFAULT_SERVER_MESSAGES, "transcript"],
        "server": {"url": f"{PUBLIC}/webhook/vapi"},
        "monitorPlan": {"listenAuthenticationEnabled": True, "controlAuthenticationEnabled": True},
    }


def test_a_well_configured_assistant_passes() -> None:
    assert check_assistant(good_assistant(), public_url=PUBLIC) == []


def test_no_server_messages_key_means_vapi_defaults_which_lack_transcript() -> None:
    assistant = {"id": "a1", "name": "Bare"}
    assert missing_server_messages(assistant) == ["transcript"]
    [check] = [c for c in check_assistant(assistant, public_url=PUBLIC) if c.code == "server-messages-missing"]
    assert check.level == "warning" and "transcript" in check.message and "Vapi's defaults" in check.message
    assert patch_server_messages(assistant) == {"serverMessages": [*VAPI_DEFAULT_SERVER_MESSAGES, "transcript"]}


def test_patch_keeps_the_assistants_own_list_and_adds_only_what_is_missing() -> None:
    assistant = {"serverMessages": ["end-of-call-report", "hang", 'transcript[transcriptType="final"]']}
    patch = patch_server_messages(assistant)
    assert patch["serverMessages"][:3] == assistant["serverMessages"]
    assert set(patch["serverMessages"][3:]) == set(REQUIRED_SERVER_MESSAGES) - {"end-of-call-report"}
    assert patch_server_messages(patch) == {}  # idempotent
    assert patch_server_messages(good_assistant()) == {}


def test_an_empty_list_is_not_the_default() -> None:
    assert missing_server_messages({"serverMessages": []}) == list(REQUIRED_SERVER_MESSAGES)


def test_server_url_checks() -> None:
    assistant = good_assistant()
    assistant["server"] = {"url": "https://my-company.example/vapi"}
    found = [c for c in check_assistant(assistant, public_url=PUBLIC) if c.code == "server-url-elsewhere"]
    assert found and f"{PUBLIC}/webhook/vapi" in found[0].fix

    # Case, default port and a trailing slash do not matter.
    assistant["server"] = {"url": "HTTPS://ABC123.ngrok.app:443/webhook/vapi/"}
    assert "server-url-elsewhere" not in codes(assistant)

    # The legacy top-level serverUrl still counts.
    del assistant["server"]
    assistant["serverUrl"] = f"{PUBLIC}/webhook/vapi"
    assert codes(assistant) == {}

    del assistant["serverUrl"]
    assert codes(assistant) == {"server-url-missing": "warning"}
    assert codes(good_assistant(), public_url=None) == {"public-url-unknown": "info"}
    assert codes(good_assistant(), public_url=PUBLIC + "/") == {}


def test_monitor_urls_are_unauthenticated_by_default() -> None:
    assistant = good_assistant()
    del assistant["monitorPlan"]
    [check] = [c for c in check_assistant(assistant, public_url=PUBLIC) if c.code == "monitor-unauthenticated"]
    assert "listen and control URLs are unauthenticated" in check.message
    assert "listenAuthenticationEnabled" in check.fix

    assistant["monitorPlan"] = {"listenAuthenticationEnabled": True, "controlAuthenticationEnabled": False}
    [check] = [c for c in check_assistant(assistant, public_url=PUBLIC) if c.code == "monitor-unauthenticated"]
    assert "control URL is unauthenticated" in check.message and "steer" in check.message

    assistant["monitorPlan"] = {"listenEnabled": False, "controlEnabled": False}
    assert "monitor-unauthenticated" not in codes(assistant)
