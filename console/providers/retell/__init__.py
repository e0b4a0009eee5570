"""Retell AI: webhooks and custom functions (wire models, auth, normalization, the provider)."""

from console.providers.retell.auth import sign_retell, verify_retell_signature
from console.providers.retell.provider import FUNCTION_REPLY_LIMIT, RetellProvider

__all__ = ["FUNCTION_REPLY_LIMIT", "RetellProvider", "sign_retell", "verify_retell_signature"]
