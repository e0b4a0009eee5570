"""Vapi webhook authentication over the raw body bytes (reference/vapi.md §5).

Modes (config `vapi.webhook.auth`):
- `secret`: a shared secret in a header (`x-vapi-secret`), Vapi's legacy
  `serverUrlSecret`, today a bearer credential with the prefix turned off;
- `bearer`: a bearer credential (`Authorization: Bearer <token>`, header and
  prefix configurable);
- `hmac`: mirrors Vapi's HMACAuthenticationPlan; Vapi signs nothing unless such
  a credential is configured, and there is no standard `x-vapi-signature`;
- `none`: accepted only on a loopback receiver.

Every comparison is constant-time. Failure reasons name the header and the
problem, never the secret, the expected signature or the value received (a
near-miss value could be an old secret).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import time
from datetime import datetime
from typing import Literal

from console.config import VapiHmacSettings, VapiSettings, VapiWebhookSettings
from console.core.http_types import Request
from console.providers.base import Verdict
from console.providers.vapi.wire import epoch_seconds

NO_SECRET_REASON = (
    "no Vapi webhook secret is configured (set VOICE_CONSOLE_VAPI_WEBHOOK_SECRET or `voice-console keys set vapi`)"
)
NONE_OFF_LOOPBACK_REASON = (
    'vapi.webhook.auth is "none", which is accepted only while the receiver listens '
    "on loopback; use secret, bearer or hmac on any other address"
)
# Svix-style message id header, for the `{svix-id}` placeholder.
SVIX_ID_HEADER = "svix-id"

_PLACEHOLDER = re.compile(r"\{(timestamp|body|method|url|svix-id)\}")
# With include_timestamp off, the placeholder goes together with one separator
# next to it, so the default "{timestamp}.{body}" signs the body alone.
_TIMESTAMP_PLACEHOLDER = re.compile(r"\{timestamp\}\.|\.\{timestamp\}|\{timestamp\}")


def verify_vapi_request(
    settings: VapiWebhookSettings,
    secret: str | None,
    request: Request,
    *,
    loopback: bool,
    url: str = "",
    now: float | None = None,
) -> Verdict:
    """Check one delivery. `url` is the URL Vapi posted to (for `{url}`), `now` Unix seconds."""
    mode = settings.auth
    if mode == "none":
        return Verdict.passed("none") if loopback else Verdict.failed("none", NONE_OFF_LOOPBACK_REASON)
    if not secret:
        return Verdict.failed(mode, NO_SECRET_REASON)
    if mode == "secret":
        return _verify_header_token(
            "secret", request, settings.secret_header, _header_token_secret(secret), prefix=False
        )
    if mode == "bearer":
        return _verify_header_token(
            "bearer", request, settings.bearer_header, _header_token_secret(secret), prefix=settings.bearer_prefix
        )
    return _verify_hmac(settings.hmac, secret, request, url=url, now=time.time() if now is None else now)


# Verdicts are immutable: the header-token schemes share one passed verdict each.
_PASSED = {"secret": Verdict.passed("secret"), "bearer": Verdict.passed("bearer")}


def _header_token_secret(secret: str) -> str:
    # A header value can never carry surrounding whitespace (h11 strips it), so a
    # secret pasted with a trailing newline would otherwise never match.
    return secret.strip()


def _verify_header_token(scheme: str, request: Request, header: str, secret: str, *, prefix: bool) -> Verdict:
    header = header.lower()
    value = request.header(header)
    if value is None or not value.strip():
        return Verdict.failed(scheme, f"missing {header} header")
    token = value.strip()
    if prefix:
        kind, _, rest = token.partition(" ")
        if kind.lower() != "bearer" or not rest.strip():
            return Verdict.failed(scheme, f"{header} header is not 'Bearer <token>' (vapi.webhook.bearer_prefix is on)")
        token = rest.strip()
    if hmac.compare_digest(token.encode(), secret.encode()):
        return _PASSED[scheme]
    what = "bearer token" if scheme == "bearer" else "value"
    return Verdict.failed(scheme, f"{header} {what} does not match the configured secret")


def _verify_hmac(plan: VapiHmacSettings, secret: str, request: Request, *, url: str, now: float) -> Verdict:
    sig_header = plan.signature_header.lower()
    received = request.header(sig_header)
    if received is None or not received.strip():
        return Verdict.failed("hmac", f"missing {sig_header} header")

    timestamp = ""
    if plan.include_timestamp:
        ts_header = plan.timestamp_header.lower()
        ts_value = request.header(ts_header)
        if ts_value is None or not ts_value.strip():
            return Verdict.failed("hmac", f"missing {ts_header} header")
        sent_at = parse_signature_timestamp(ts_value)
        if sent_at is None:
            return Verdict.failed("hmac", f"{ts_header} is not a Unix time in seconds or milliseconds")
        age = now - sent_at
        window = f"{plan.skew_seconds:g}"
        if age > plan.skew_seconds:
            return Verdict.failed("hmac", f"{ts_header} is {age:.0f} s old, outside the {window} s window")
        if -age > plan.skew_seconds:
            return Verdict.failed("hmac", f"{ts_header} is {-age:.0f} s in the future, outside the {window} s window")
        timestamp = ts_value.strip()

    key = _hmac_key(plan, secret)
    if key is None:
        return Verdict.failed(
            "hmac", "the configured secret is not valid base64 (vapi.webhook.hmac.secret_is_base64 is on)"
        )
    svix_id = request.header(SVIX_ID_HEADER)
    if "{svix-id}" in plan.payload_format and not svix_id:
        return Verdict.failed("hmac", f"missing {SVIX_ID_HEADER} header (payload_format uses {{svix-id}})")
    payload = signed_payload(
        plan, body=request.body, timestamp=timestamp, method=request.method, url=url, svix_id=svix_id or ""
    )
    expected = hmac.new(key, payload, plan.algorithm).digest()

    # Several space-separated signatures are allowed (Svix style, during key rotation).
    problem = f"{sig_header} does not match"
    for candidate in received.split():
        outcome = _check_candidate(plan, sig_header, candidate, expected)
        if outcome is None:
            return Verdict.passed("hmac")
        problem = outcome
    return Verdict.failed("hmac", problem)


def _check_candidate(plan: VapiHmacSettings, header: str, candidate: str, expected: bytes) -> str | None:
    """None when `candidate` is the right signature, else why it is not."""
    prefix = plan.signature_prefix
    if prefix:
        if candidate[: len(prefix)].lower() != prefix.lower():
            return f"{header} lacks the '{prefix}' prefix"
        candidate = candidate[len(prefix) :]
    raw = _decode_signature(candidate, plan.signature_encoding)
    if raw is None:
        return f"{header} is not {plan.signature_encoding}-encoded"
    if len(raw) != len(expected):
        return (
            f"{header} is a {len(raw)}-byte signature but {plan.algorithm} gives {len(expected)} bytes "
            "(truncated, or a different algorithm?)"
        )
    if hmac.compare_digest(raw, expected):
        return None
    return f"{header} does not match"


def _decode_signature(text: str, encoding: Literal["hex", "base64"]) -> bytes | None:
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        padded = text + "=" * (-len(text) % 4)
        if "-" in text or "_" in text:
            return base64.urlsafe_b64decode(padded)
        return base64.b64decode(padded, validate=True)
    except (ValueError, binascii.Error):
        return None


def _hmac_key(plan: VapiHmacSettings, secret: str) -> bytes | None:
    if not plan.secret_is_base64:
        return secret.encode()
    text = secret.strip()
    if text.startswith("whsec_"):  # Svix's secret format
        text = text[len("whsec_") :]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (ValueError, binascii.Error):
        return None


def parse_signature_timestamp(value: str) -> float | None:
    """A signature timestamp header -> Unix seconds; the unit (s/ms) is guessed by magnitude."""
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if not math.isfinite(number) or number <= 0:
        return None
    return epoch_seconds(number)


def signed_payload(
    plan: VapiHmacSettings, *, body: bytes, timestamp: str, method: str, url: str, svix_id: str = ""
) -> bytes:
    """The exact bytes that are signed: `payload_format` with its placeholders filled.

    Substituted in one pass, so a body that happens to contain "{timestamp}" is
    never expanded; `{body}` is the raw bytes as received, never re-serialized.
    """
    template = plan.payload_format
    if not plan.include_timestamp:
        template = _TIMESTAMP_PLACEHOLDER.sub("", template)
    values = {
        "timestamp": timestamp.encode(),
        "body": body,
        "method": method.upper().encode(),
        "url": url.encode(),
        "svix-id": svix_id.encode(),
    }
    out = bytearray()
    position = 0
    for match in _PLACEHOLDER.finditer(template):
        out += template[position : match.start()].encode()
        out += values[match.group(1)]
        position = match.end()
    out += template[position:].encode()
    return bytes(out)


def sign_vapi_request(
    settings: VapiSettings | VapiWebhookSettings,
    secret: str,
    body: bytes,
    *,
    method: str = "POST",
    url: str = "",
    now: float | datetime | None = None,
    timestamp_unit: Literal["s", "ms"] = "ms",
    message_id: str | None = None,
) -> dict[str, str]:
    """The auth headers a Vapi configured like `settings` would send with `body`.

    For the tests, the simulator and forwarding. The HMAC timestamp unit Vapi
    uses is undocumented; the verifier accepts either, and this sends ms.
    """
    webhook = settings.webhook if isinstance(settings, VapiSettings) else settings
    if webhook.auth == "none":
        return {}
    if webhook.auth == "secret":
        return {webhook.secret_header.lower(): secret}
    if webhook.auth == "bearer":
        token = f"Bearer {secret}" if webhook.bearer_prefix else secret
        return {webhook.bearer_header.lower(): token}

    plan = webhook.hmac
    if now is None:
        now = time.time()
    seconds = now.timestamp() if isinstance(now, datetime) else float(now)
    timestamp = str(int(seconds * 1000)) if timestamp_unit == "ms" else str(int(seconds))
    headers: dict[str, str] = {}
    svix_id = ""
    if "{svix-id}" in plan.payload_format:
        svix_id = message_id or "msg_" + hashlib.sha256(body).hexdigest()[:24]
        headers[SVIX_ID_HEADER] = svix_id
    key = _hmac_key(plan, secret)
    if key is None:
        raise ValueError("the secret is not valid base64 (vapi.webhook.hmac.secret_is_base64 is on)")
    payload = signed_payload(plan, body=body, timestamp=timestamp, method=method, url=url, svix_id=svix_id)
    digest = hmac.new(key, payload, plan.algorithm).digest()
    encoded = digest.hex() if plan.signature_encoding == "hex" else base64.b64encode(digest).decode()
    headers[plan.signature_header.lower()] = plan.signature_prefix + encoded
    if plan.include_timestamp:
        headers[plan.timestamp_header.lower()] = timestamp
    return headers
