"""Twilio: voice and status webhooks, Media Streams (wire models, auth, normalization, the provider)."""

from console.providers.twilio.auth import compute_signature, sign_twilio, url_variants, url_with_body_hash
from console.providers.twilio.provider import EMPTY_TWIML, TwilioProvider
from console.providers.twilio.stream import MediaStreamSession, VadSettings, ulaw_decode, ulaw_encode

__all__ = [
    "EMPTY_TWIML",
    "MediaStreamSession",
    "TwilioProvider",
    "VadSettings",
    "compute_signature",
    "sign_twilio",
    "ulaw_decode",
    "ulaw_encode",
    "url_variants",
    "url_with_body_hash",
]
