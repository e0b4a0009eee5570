"""Vapi: server-URL webhooks (wire models, auth, normalization, replies)."""

from console.providers.vapi.auth import sign_vapi_request, verify_vapi_request
from console.providers.vapi.provider import VapiProvider

__all__ = ["VapiProvider", "sign_vapi_request", "verify_vapi_request"]
