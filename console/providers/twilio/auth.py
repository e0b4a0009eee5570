"""`X-Twilio-Signature`: base64 HMAC-SHA1(auth token, URL + sorted POST parameters).

Mirrors twilio-python's RequestValidator: every parameter name sorted by code
point, a repeated name contributes its de-duplicated values in sorted order;
the JSON variant checks `bodySHA256` in the URL and signs the URL alone; the
URL is tried with and without its port because Twilio is inconsistent there.

SharedKey signatures: a request carrying `X-Twilio-Webhooks-Signature-Settings:
key=<shared key id>,algorithm=HMAC_SHA256` is signed over the same string with
that SharedKey's secret instead of the auth token, using the named algorithm
(HMAC_SHA1 when none is named), as the SDK's RequestValidator checks it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

SCHEME = "twilio-signature"
SHARED_KEY_SCHEME = "twilio-shared-key"
HEADER = "x-twilio-signature"
SETTINGS_HEADER = "x-twilio-webhooks-signature-settings"
HMAC_SHA1, HMAC_SHA256 = "HMAC_SHA1", "HMAC_SHA256"
_HASHES = {HMAC_SHA1: hashlib.sha1, HMAC_SHA256: hashlib.sha256}

Params = Mapping[str, "str | Sequence[str]"] | Iterable[tuple[str, str]]

NO_TOKEN_REASON = (
    "No Twilio auth token is configured, so X-Twilio-Signature cannot be checked. Set the "
    "primary Auth Token with `voice-console keys set twilio` or the VOICE_CONSOLE_TWILIO_AUTH_TOKEN "
    "environment variable (or set twilio.validate_signature = false for local testing only)."
)


@dataclass(frozen=True)
class SignatureSettings:
    """`X-Twilio-Webhooks-Signature-Settings`: which SharedKey signed the request, and how."""

    key_id: str
    algorithm: str

    @property
    def supported(self) -> bool:
        return self.algorithm in _HASHES

    def describe(self) -> str:
        """The header as a reason may quote it (the key id names a key; it is not a secret),
        clipped and printable: it is whatever the client sent."""
        key = f"key={_printable(self.key_id, 64)}," if self.key_id else ""
        return f"X-Twilio-Webhooks-Signature-Settings ({key}algorithm={_printable(self.algorithm, 32)})"


def _printable(text: str, limit: int) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])


def signature_settings(header: str | None) -> SignatureSettings | None:
    """The parsed settings header, or None for a classic auth-token signature (no header, or a blank one)."""
    if header is None or not header.strip():
        return None
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, separator, value = part.partition("=")
        if separator:
            fields.setdefault(name.strip().lower(), value.strip())
    return SignatureSettings(fields.get("key", ""), (fields.get("algorithm") or HMAC_SHA1).upper())


def _grouped(params: Params | None) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    if params is None:
        return groups
    items: Iterable[tuple[str, str | Sequence[str]]] = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        values = [value] if isinstance(value, str) else list(value)
        groups.setdefault(name, set()).update(str(v) for v in values)
    return groups


def compute_signature(url: str, params: Params | None, token: str, algorithm: str = HMAC_SHA1) -> str:
    """`token` is the auth token, or a SharedKey secret with `algorithm` from its settings header."""
    groups = _grouped(params)
    signed = url + "".join(name + value for name in sorted(groups) for value in sorted(groups[name]))
    mac = hmac.new(token.encode("utf-8"), signed.encode("utf-8"), _HASHES[algorithm])
    return base64.b64encode(mac.digest()).decode("ascii")


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def url_with_body_hash(url: str, body: bytes) -> str:
    """The URL Twilio requests for a JSON body: `bodySHA256` appended to the query."""
    return url + ("&" if urlsplit(url).query else "?") + urlencode({"bodySHA256": body_sha256(body)})


def sign_twilio(url: str, params: Params | bytes | str | None, token: str, algorithm: str = HMAC_SHA1) -> str:
    """The header Twilio would send. For a JSON body pass the body: only the URL is signed
    (build the URL with `url_with_body_hash` first)."""
    if isinstance(params, (bytes, str)):
        return compute_signature(url, None, token, algorithm)
    return compute_signature(url, params, token, algorithm)


def url_variants(url: str) -> list[str]:
    """The URL without and with its port, like the SDK (`:443`/`:80` added when absent)."""
    parts = urlsplit(url)
    prefix = f"{parts.scheme}://"
    if not parts.netloc or not url.startswith(prefix + parts.netloc):
        return [url]
    try:
        port = parts.port
    except ValueError:
        return [url]
    # Splice the authority by hand: urlunsplit would normalize the rest of the URL.
    rest = url[len(prefix) + len(parts.netloc) :]
    netloc = parts.netloc
    if port is not None:
        return [prefix + netloc[: netloc.rfind(":")] + rest, url]
    default = 443 if parts.scheme == "https" else 80
    return [url, f"{prefix}{netloc}:{default}{rest}"]


def body_hash_param(url: str) -> str | None:
    values = parse_qs(urlsplit(url).query, keep_blank_values=True).get("bodySHA256")
    return values[0] if values else None


def signature_matches(url: str, params: Params | None, header: str, token: str, algorithm: str = HMAC_SHA1) -> bool:
    given = header.encode("utf-8", "replace")
    # Evaluate every variant so timing does not reveal which one matched.
    results = [
        hmac.compare_digest(compute_signature(u, params, token, algorithm).encode(), given) for u in url_variants(url)
    ]
    return any(results)


def body_hash_matches(url: str, body: bytes) -> bool:
    claimed = body_hash_param(url) or ""
    return hmac.compare_digest(body_sha256(body).encode(), claimed.lower().encode("utf-8", "replace"))


def refresh_body_hash(target: str, body: bytes) -> str:
    """A request target whose `bodySHA256` query parameter is made true for `body` (the JSON variant)."""
    path, _, query = target.partition("?")
    if "bodySHA256" not in query:
        return target
    pairs = [(k, body_sha256(body) if k == "bodySHA256" else v) for k, v in parse_qsl(query, keep_blank_values=True)]
    return f"{path}?{urlencode(pairs)}"


def sign_request(url: str, method: str, content_type: str | None, body: bytes, token: str) -> str:
    """`X-Twilio-Signature` for a request Twilio would send to `url`: a form POST signs its
    parameters, GET and the JSON variant (`bodySHA256` in the URL) sign the URL alone."""
    form = (
        body_hash_param(url) is None
        and method == "POST"
        and (content_type or "").split(";")[0].strip() in ("", "application/x-www-form-urlencoded")
    )
    params = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True) if form else None
    return sign_twilio(url, params, token)
