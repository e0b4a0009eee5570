"""`X-Twilio-Signature`: base64 HMAC-SHA1(auth token, URL + sorted POST parameters).

Mirrors twilio-python's RequestValidator: every parameter name sorted by code
point, a repeated name contributes its de-duplicated values in sorted order;
the JSON variant checks `bodySHA256` in the URL and signs the URL alone; the
URL is tried with and without its port because Twilio is inconsistent there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlencode, urlsplit

SCHEME = "twilio-signature"
HEADER = "x-twilio-signature"

Params = Mapping[str, "str | Sequence[str]"] | Iterable[tuple[str, str]]

NO_TOKEN_REASON = (
    "No Twilio auth token is configured, so X-Twilio-Signature cannot be checked. Set the "
    "primary Auth Token with `voice-console keys set twilio` or the VOICE_CONSOLE_TWILIO_AUTH_TOKEN "
    "environment variable (or set twilio.validate_signature = false for local testing only)."
)


def _grouped(params: Params | None) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    if params is None:
        return groups
    items: Iterable[tuple[str, object]] = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        values = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
        groups.setdefault(name, set()).update(str(v) for v in values)
    return groups


def compute_signature(url: str, params: Params | None, token: str) -> str:
    groups = _grouped(params)
    signed = url + "".join(name + value for name in sorted(groups) for value in sorted(groups[name]))
    mac = hmac.new(token.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def url_with_body_hash(url: str, body: bytes) -> str:
    """The URL Twilio requests for a JSON body: `bodySHA256` appended to the query."""
    return url + ("&" if urlsplit(url).query else "?") + urlencode({"bodySHA256": body_sha256(body)})


def sign_twilio(url: str, params: Params | bytes | str | None, token: str) -> str:
    """The header Twilio would send. For a JSON body pass the body: only the URL is signed
    (build the URL with `url_with_body_hash` first)."""
    if isinstance(params, (bytes, str)):
        return compute_signature(url, None, token)
    return compute_signature(url, params, token)


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


def signature_matches(url: str, params: Params | None, header: str, token: str) -> bool:
    given = header.encode("utf-8", "replace")
    # Evaluate every variant so timing does not reveal which one matched.
    results = [hmac.compare_digest(compute_signature(u, params, token).encode(), given) for u in url_variants(url)]
    return any(results)


def body_hash_matches(url: str, body: bytes) -> bool:
    claimed = body_hash_param(url) or ""
    return hmac.compare_digest(body_sha256(body).encode(), claimed.lower().encode("utf-8", "replace"))
