"""`X-Retell-Signature`: `v=<unix_ms>,d=<hex HMAC-SHA256(api key, raw body + str(unix_ms))>`.

Mirrors the Retell SDKs (strict header match since 2026-07, 5-minute window in
both directions, exactly 5 minutes passes). Failure reasons never contain the
key or the expected digest.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from console.providers.base import Verdict

SCHEME = "retell-signature"
HEADER = "x-retell-signature"
_HEADER_RE = re.compile(r"v=(\d+),d=([0-9a-f]{64})")
_MAX_TS_DIGITS = 16  # far beyond any real ms timestamp; keeps int() cheap

NO_KEY_REASON = (
    "No Retell API key is configured, so X-Retell-Signature cannot be checked. "
    "Set the API key that has the webhook badge in the Retell dashboard with "
    "`voice-console keys set retell` or the VOICE_CONSOLE_RETELL_API_KEY environment variable."
)


def _digest(body: bytes, api_key: str, ts_ms: int) -> str:
    return hmac.new(api_key.encode("utf-8"), body + str(ts_ms).encode("ascii"), hashlib.sha256).hexdigest()


def sign_retell(body: bytes, api_key: str, now_ms: int) -> str:
    """The header value Retell would send for `body` at `now_ms` (for tests and the simulator)."""
    return f"v={now_ms},d={_digest(body, api_key, now_ms)}"


def verify_retell_signature(
    body: bytes,
    header: str | None,
    api_key: str | None,
    *,
    now_ms: int,
    skew_ms: float,
) -> Verdict:
    if not api_key:
        return Verdict.failed(SCHEME, NO_KEY_REASON)
    if header is None:
        return Verdict.failed(SCHEME, "The X-Retell-Signature header is missing.")
    match = _HEADER_RE.fullmatch(header)
    if match is None or len(match.group(1)) > _MAX_TS_DIGITS:
        return Verdict.failed(
            SCHEME,
            f"The X-Retell-Signature header is malformed ({len(header)} characters): "
            "expected exactly v=<unix ms>,d=<64 lowercase hex digits>.",
        )
    ts_ms = int(match.group(1))
    if not hmac.compare_digest(_digest(body, api_key, ts_ms), match.group(2)):
        return Verdict.failed(
            SCHEME,
            "X-Retell-Signature does not match the body: the configured API key is not the one "
            "with the webhook badge, or the body was changed on the way (a proxy re-encoding JSON).",
        )
    drift_s = (now_ms - ts_ms) / 1000
    if abs(now_ms - ts_ms) > skew_ms:
        when = f"{drift_s:.0f} s old" if drift_s > 0 else f"{-drift_s:.0f} s in the future"
        return Verdict.failed(
            SCHEME,
            f"X-Retell-Signature is valid but its timestamp is {when} (limit {skew_ms / 1000:.0f} s): "
            "a replayed or long-delayed delivery, or this machine's clock is wrong.",
        )
    return Verdict.passed(SCHEME)
