"""The one set of made-up credentials the tests sign and verify with, and the console's public URL.

Tests that check secrets never leak use their own marked values (tests/test_secret_leaks.py)."""

from __future__ import annotations

from pathlib import Path

from console.secrets import SecretLookup

PAYLOADS = Path(__file__).parent.parent / "payloads"
PUBLIC_URL = "https://voice.example.test"
VAPI_SECRET = "vc-test-secret-Zq81xW"
RETELL_KEY = "key_4b1f9c2e7a6d8e0f3a5c7b9d1e2f"
TWILIO_TOKEN = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
TWILIO_SHARED_KEY = "shared-key-secret-2f6c0d9e"  # a webhook SharedKey's secret
SIMULATOR_KEY = "sim-private-key"  # the simulated platform's API key


def secret_lookups() -> dict[str, SecretLookup]:
    """Every webhook secret, as the receiver gets them from the environment."""
    values = {
        "vapi_webhook_secret": VAPI_SECRET,
        "retell_api_key": RETELL_KEY,
        "twilio_auth_token": TWILIO_TOKEN,
        "twilio_shared_key": TWILIO_SHARED_KEY,
    }
    return {name: SecretLookup(name, value, "env") for name, value in values.items()}
