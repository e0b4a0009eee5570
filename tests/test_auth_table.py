"""Every provider and auth mode against forged, damaged and stale credentials, over real sockets.

One table, provider x mode x case. Each refused request must get 401 (Twilio:
403) with a JSON reason, leave exactly one row in the rejected-requests table
with a reason and no secret or credential, and store no delivery. Each mode
also has a valid control case, so a table of refusals cannot pass by refusing
everything. Then the code itself: every secret or signature comparison in the
auth modules is `hmac.compare_digest`, never `==`.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from console.providers.retell import sign_retell
from console.providers.twilio.auth import compute_signature, url_with_body_hash
from console.providers.vapi import sign_vapi_request
from console.providers.vapi.auth import signed_payload
from console.store import queries
from tests.helpers.receiver import ServiceThread, exchange, post_bytes, responses
from tests.helpers.secrets import PUBLIC_URL, RETELL_KEY, TWILIO_SHARED_KEY, TWILIO_TOKEN, VAPI_SECRET

ROOT = Path(__file__).resolve().parents[1]
SKEW_S = 300  # the default window of Vapi HMAC and Retell
OUTSIDE_S = SKEW_S + 100

SERVICE_CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},  # Vapi "secret", Retell, Twilio
    "vapi-bearer": {"vapi": {"webhook": {"auth": "bearer"}}},
    "vapi-hmac-sha256-hex": {"vapi": {"webhook": {"auth": "hmac"}}},
    "vapi-hmac-sha1-base64-prefix": {
        "vapi": {
            "webhook": {
                "auth": "hmac",
                "hmac": {
                    "algorithm": "sha1",
                    "signature_encoding": "base64",
                    "signature_prefix": "sha1=",
                    "signature_header": "x-hub-signature",
                },
            }
        }
    },
    "vapi-hmac-sha512-svix": {
        "vapi": {
            "webhook": {
                "auth": "hmac",
                "hmac": {
                    "algorithm": "sha512",
                    "signature_encoding": "base64",
                    "signature_prefix": "v1,",
                    "signature_header": "svix-signature",
                    "timestamp_header": "svix-timestamp",
                    "payload_format": "{svix-id}.{timestamp}.{body}",
                },
            }
        }
    },
}


@dataclass(frozen=True)
class Sent:
    path: str
    body: bytes
    headers: dict[str, str]


Builder = Callable[[ServiceThread], Sent]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], ServiceThread]]:
    started: dict[str, ServiceThread] = {}

    def get(config: str) -> ServiceThread:
        if config not in started:
            started[config] = ServiceThread(tmp_path_factory.mktemp(config), **SERVICE_CONFIGS[config])
        return started[config]

    yield get
    for svc in started.values():
        svc.close()


# ------------------------------------------------------------------ bodies and signers


def vapi_body(call_id: str = "call-auth-table") -> bytes:
    return json.dumps(
        {
            "message": {
                "type": "status-update",
                "status": "ringing",
                "timestamp": int(time.time() * 1000),
                "call": {"id": call_id},
            }
        }
    ).encode()


def vapi(headers_for: Callable[[ServiceThread, bytes], dict[str, str]]) -> Builder:
    def build(svc: ServiceThread) -> Sent:
        body = vapi_body()
        return Sent("/webhook/vapi", body, {"content-type": "application/json", **headers_for(svc, body)})

    return build


def signed(svc: ServiceThread, body: bytes, *, now: float | None = None, unit: str = "ms") -> dict[str, str]:
    return sign_vapi_request(svc.service.settings.vapi, VAPI_SECRET, body, now=now, timestamp_unit=unit)  # type: ignore[arg-type]


def hmac_with(algorithm: str) -> Callable[[ServiceThread, bytes], dict[str, str]]:
    """A correct signature in every respect but the hash function."""

    def headers(svc: ServiceThread, body: bytes) -> dict[str, str]:
        plan = svc.service.settings.vapi.webhook.hmac
        out = signed(svc, body)
        timestamp = out.get(plan.timestamp_header.lower(), "")
        payload = signed_payload(
            plan, body=body, timestamp=timestamp, method="POST", url="", svix_id=out.get("svix-id", "")
        )
        digest = hmac.new(VAPI_SECRET.encode(), payload, algorithm).digest()
        encoded = digest.hex() if plan.signature_encoding == "hex" else base64.b64encode(digest).decode()
        out[plan.signature_header.lower()] = plan.signature_prefix + encoded
        return out

    return headers


def change_signature(change: Callable[[str, str], str]) -> Callable[[ServiceThread, bytes], dict[str, str]]:
    """A valid HMAC signature header, then damaged: change(prefix, encoded signature) -> header value."""

    def headers(svc: ServiceThread, body: bytes) -> dict[str, str]:
        plan = svc.service.settings.vapi.webhook.hmac
        out = signed(svc, body)
        name = plan.signature_header.lower()
        out[name] = change(plan.signature_prefix, out[name][len(plan.signature_prefix) :])
        return out

    return headers


def without(*names: str) -> Callable[[ServiceThread, bytes], dict[str, str]]:
    def headers(svc: ServiceThread, body: bytes) -> dict[str, str]:
        plan = svc.service.settings.vapi.webhook.hmac
        real = {"signature": plan.signature_header.lower(), "timestamp": plan.timestamp_header.lower()}
        return {k: v for k, v in signed(svc, body).items() if k not in {real.get(n, n) for n in names}}

    return headers


def other_body_signature(svc: ServiceThread, body: bytes) -> dict[str, str]:
    return signed(svc, body.replace(b"ringing", b"in-progress"))


def hmac_cases(config: str, encoding: str) -> list[tuple[str, str, Builder, int]]:
    flip = (
        (lambda p, s: p + s[:-2] + ("00" if s[-2:] != "00" else "11"))
        if encoding == "hex"
        else (lambda p, s: p + base64.b64encode(bytes(b ^ 1 for b in base64.b64decode(s))).decode())
    )
    other_encoding = (
        (lambda p, s: p + base64.b64encode(bytes.fromhex(s)).decode())
        if encoding == "hex"
        else (lambda p, s: p + base64.b64decode(s).hex())
    )
    return [
        (config, "valid", vapi(lambda svc, body: signed(svc, body)), 200),
        (config, "valid-seconds-timestamp", vapi(lambda svc, body: signed(svc, body, unit="s")), 200),
        (config, "missing", vapi(without("signature", "timestamp")), 401),
        (config, "missing-signature", vapi(without("signature")), 401),
        (config, "missing-timestamp", vapi(without("timestamp")), 401),
        (config, "wrong", vapi(other_body_signature), 401),
        (config, "wrong-bit", vapi(change_signature(flip)), 401),
        (
            config,
            "wrong-secret",
            vapi(lambda svc, body: sign_vapi_request(svc.service.settings.vapi, VAPI_SECRET + "x", body)),
            401,
        ),
        (config, "truncated", vapi(change_signature(lambda p, s: p + s[: len(s) // 2])), 401),
        (config, "wrong-encoding", vapi(change_signature(other_encoding)), 401),
        (
            config,
            "wrong-algorithm-sha1" if "sha1" not in config else "wrong-algorithm-sha256",
            vapi(hmac_with("sha1" if "sha1" not in config else "sha256")),
            401,
        ),
        (config, "wrong-algorithm-md5", vapi(hmac_with("md5")), 401),
        (config, "replayed-stale", vapi(lambda svc, body: signed(svc, body, now=time.time() - OUTSIDE_S)), 401),
        (config, "replayed-a-day-later", vapi(lambda svc, body: signed(svc, body, now=time.time() - 86400)), 401),
        (config, "future-dated", vapi(lambda svc, body: signed(svc, body, now=time.time() + OUTSIDE_S)), 401),
    ]


# Retell: v=<ms>,d=<hex HMAC-SHA256(api key, body + ms)>
def retell(header: Callable[[bytes, int], str | None], path: str = "/webhook/retell") -> Builder:
    def build(svc: ServiceThread) -> Sent:
        body = json.dumps(
            {"event": "call_started", "call": {"call_id": "call-auth-retell", "call_status": "ongoing"}}
        ).encode()
        value = header(body, int(time.time() * 1000))
        return Sent(
            path,
            body,
            {"content-type": "application/json", **({"x-retell-signature": value} if value is not None else {})},
        )

    return build


def retell_with(algorithm: str) -> Callable[[bytes, int], str]:
    return lambda body, ms: f"v={ms},d=" + hmac.new(RETELL_KEY.encode(), body + str(ms).encode(), algorithm).hexdigest()


# Twilio: base64 HMAC-SHA1(auth token, URL + sorted params); the JSON variant signs the URL with bodySHA256.
TWILIO_PARAMS = {
    "CallSid": "CA" + "a" * 32,
    "AccountSid": "AC" + "b" * 32,
    "From": "+14155550142",
    "To": "+14155550100",
    "CallStatus": "in-progress",
    "ApiVersion": "2010-04-01",
}


def twilio_form(
    signature: Callable[[str, dict[str, str]], str | None],
    *,
    body_params: dict[str, str] | None = None,
    route: str = "/webhook/twilio/status",
    settings: str | None = None,
) -> Builder:
    """`settings`: an X-Twilio-Webhooks-Signature-Settings header (a SharedKey signature)."""

    def build(svc: ServiceThread) -> Sent:
        params = dict(TWILIO_PARAMS)
        value = signature(PUBLIC_URL + route, params)
        sent = body_params if body_params is not None else params
        headers = {"content-type": "application/x-www-form-urlencoded"}
        if value is not None:
            headers["x-twilio-signature"] = value
        if settings is not None:
            headers["x-twilio-webhooks-signature-settings"] = settings
        return Sent(route, urlencode(sent).encode(), headers)

    return build


# Twilio SharedKey: the same signed string, HMAC with the SharedKey's secret and the header's algorithm,
# signed here by the twilio SDK itself.
SHARED_KEY_SETTINGS = "key=webhooks_sharedkey_0a1b2c3d4e5f,algorithm=HMAC_SHA256"


def shared_key_signature(
    secret: str = TWILIO_SHARED_KEY, algorithm: str = "HMAC_SHA256"
) -> Callable[[str, dict[str, str]], str]:
    return lambda url, params: RequestValidator(secret).compute_signature(url, params, algorithm)


def twilio_shared(
    signature: Callable[[str, dict[str, str]], str | None], settings: str = SHARED_KEY_SETTINGS, **kwargs: Any
) -> Builder:
    return twilio_form(signature, settings=settings, **kwargs)


def twilio_json(tamper: bool = False, sign_body: bytes | None = None) -> Builder:
    def build(svc: ServiceThread) -> Sent:
        body = json.dumps(TWILIO_PARAMS).encode()
        url = url_with_body_hash(PUBLIC_URL + "/webhook/twilio/status", sign_body or body)
        sent = body.replace(b"in-progress", b"completed") if tamper else body
        return Sent(
            url[len(PUBLIC_URL) :],
            sent,
            {"content-type": "application/json", "x-twilio-signature": compute_signature(url, None, TWILIO_TOKEN)},
        )

    return build


def sha256_signature(url: str, params: dict[str, str]) -> str:
    signed_text = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(TWILIO_TOKEN.encode(), signed_text.encode(), hashlib.sha256).digest()).decode()


def with_port(url: str) -> str:
    return url.replace(PUBLIC_URL, PUBLIC_URL + ":443")


CASES: list[tuple[str, str, Builder, int]] = [
    # --- Vapi "secret": the shared secret in x-vapi-secret
    ("default", "valid", vapi(lambda svc, body: {"x-vapi-secret": VAPI_SECRET}), 200),
    ("default", "missing", vapi(lambda svc, body: {}), 401),
    ("default", "empty", vapi(lambda svc, body: {"x-vapi-secret": ""}), 401),
    ("default", "wrong", vapi(lambda svc, body: {"x-vapi-secret": "not-the-secret-at-all"}), 401),
    ("default", "truncated", vapi(lambda svc, body: {"x-vapi-secret": VAPI_SECRET[:-4]}), 401),
    ("default", "extended", vapi(lambda svc, body: {"x-vapi-secret": VAPI_SECRET + "0"}), 401),
    ("default", "wrong-case", vapi(lambda svc, body: {"x-vapi-secret": VAPI_SECRET.upper()}), 401),
    ("default", "wrong-scheme-bearer", vapi(lambda svc, body: {"authorization": f"Bearer {VAPI_SECRET}"}), 401),
    # --- Vapi "bearer": Authorization: Bearer <secret>
    ("vapi-bearer", "valid", vapi(lambda svc, body: {"authorization": f"Bearer {VAPI_SECRET}"}), 200),
    ("vapi-bearer", "missing", vapi(lambda svc, body: {}), 401),
    ("vapi-bearer", "wrong", vapi(lambda svc, body: {"authorization": "Bearer not-the-secret-at-all"}), 401),
    ("vapi-bearer", "truncated", vapi(lambda svc, body: {"authorization": f"Bearer {VAPI_SECRET[:-4]}"}), 401),
    ("vapi-bearer", "no-prefix", vapi(lambda svc, body: {"authorization": VAPI_SECRET}), 401),
    (
        "vapi-bearer",
        "wrong-scheme-basic",
        vapi(lambda svc, body: {"authorization": "Basic " + base64.b64encode(f"vapi:{VAPI_SECRET}".encode()).decode()}),
        401,
    ),
    ("vapi-bearer", "secret-header-instead", vapi(lambda svc, body: {"x-vapi-secret": VAPI_SECRET}), 401),
    # --- Vapi "hmac", three plans
    *hmac_cases("vapi-hmac-sha256-hex", "hex"),
    *hmac_cases("vapi-hmac-sha1-base64-prefix", "base64"),
    ("vapi-hmac-sha1-base64-prefix", "missing-prefix", vapi(change_signature(lambda p, s: s)), 401),
    *hmac_cases("vapi-hmac-sha512-svix", "base64"),
    ("vapi-hmac-sha512-svix", "missing-svix-id", vapi(without("svix-id")), 401),
    # --- Retell: X-Retell-Signature, 5-minute window both ways
    ("default", "retell-valid", retell(lambda body, ms: sign_retell(body, RETELL_KEY, ms)), 204),
    (
        "default",
        "retell-valid-function",
        retell(lambda body, ms: sign_retell(body, RETELL_KEY, ms), path="/webhook/retell/function"),
        200,
    ),
    ("default", "retell-missing", retell(lambda body, ms: None), 401),
    ("default", "retell-missing-function", retell(lambda body, ms: None, path="/webhook/retell/function"), 401),
    ("default", "retell-wrong", retell(lambda body, ms: sign_retell(body + b" ", RETELL_KEY, ms)), 401),
    ("default", "retell-wrong-key", retell(lambda body, ms: sign_retell(body, RETELL_KEY + "x", ms)), 401),
    ("default", "retell-truncated", retell(lambda body, ms: sign_retell(body, RETELL_KEY, ms)[:-8]), 401),
    ("default", "retell-uppercase-hex", retell(lambda body, ms: sign_retell(body, RETELL_KEY, ms).upper()), 401),
    ("default", "retell-wrong-algorithm-sha1", retell(retell_with("sha1")), 401),
    ("default", "retell-wrong-algorithm-sha512", retell(retell_with("sha512")), 401),
    (
        "default",
        "retell-malformed",
        retell(lambda body, ms: "d=" + sign_retell(body, RETELL_KEY, ms).split("d=")[1]),
        401,
    ),
    (
        "default",
        "retell-replayed-stale",
        retell(lambda body, ms: sign_retell(body, RETELL_KEY, ms - OUTSIDE_S * 1000)),
        401,
    ),
    (
        "default",
        "retell-replayed-a-day-later",
        retell(lambda body, ms: sign_retell(body, RETELL_KEY, ms - 86_400_000)),
        401,
    ),
    (
        "default",
        "retell-future-dated",
        retell(lambda body, ms: sign_retell(body, RETELL_KEY, ms + OUTSIDE_S * 1000)),
        401,
    ),
    ("default", "retell-timestamp-in-seconds", retell(lambda body, ms: sign_retell(body, RETELL_KEY, ms // 1000)), 401),
    # --- Twilio: X-Twilio-Signature; no timestamp in the scheme, so no stale/future cases
    ("default", "twilio-valid", twilio_form(lambda url, p: compute_signature(url, p, TWILIO_TOKEN)), 200),
    (
        "default",
        "twilio-valid-port-443",
        twilio_form(lambda url, p: compute_signature(with_port(url), p, TWILIO_TOKEN)),
        200,
    ),
    ("default", "twilio-valid-json-body-sha256", twilio_json(), 200),
    ("default", "twilio-missing", twilio_form(lambda url, p: None), 403),
    ("default", "twilio-empty", twilio_form(lambda url, p: ""), 403),
    ("default", "twilio-wrong-token", twilio_form(lambda url, p: compute_signature(url, p, TWILIO_TOKEN + "x")), 403),
    ("default", "twilio-truncated", twilio_form(lambda url, p: compute_signature(url, p, TWILIO_TOKEN)[:-6]), 403),
    ("default", "twilio-wrong-algorithm-sha256", twilio_form(sha256_signature), 403),
    (
        "default",
        "twilio-wrong-url-scheme",
        twilio_form(lambda url, p: compute_signature(url.replace("https://", "http://"), p, TWILIO_TOKEN)),
        403,
    ),
    (
        "default",
        "twilio-wrong-port",
        twilio_form(lambda url, p: compute_signature(url.replace(PUBLIC_URL, PUBLIC_URL + ":8443"), p, TWILIO_TOKEN)),
        403,
    ),
    (
        "default",
        "twilio-wrong-route",
        twilio_form(lambda url, p: compute_signature(url.replace("/status", "/voice"), p, TWILIO_TOKEN)),
        403,
    ),
    (
        "default",
        "twilio-tampered-params",
        twilio_form(
            lambda url, p: compute_signature(url, p, TWILIO_TOKEN),
            body_params={**TWILIO_PARAMS, "CallStatus": "completed"},
        ),
        403,
    ),
    ("default", "twilio-json-tampered-body", twilio_json(tamper=True), 403),
    ("default", "twilio-json-hash-of-other-body", twilio_json(sign_body=b"{}"), 403),
    # --- Twilio SharedKey: X-Twilio-Webhooks-Signature-Settings names the key and the algorithm
    ("default", "twilio-shared-key-valid", twilio_shared(shared_key_signature()), 200),
    (
        "default",
        "twilio-shared-key-valid-voice-route",
        twilio_shared(shared_key_signature(), route="/webhook/twilio/voice"),
        200,
    ),
    (
        "default",
        "twilio-shared-key-valid-sha1",
        twilio_shared(shared_key_signature(algorithm="HMAC_SHA1"), settings="key=webhooks_sharedkey_0a1b2c3d4e5f"),
        200,
    ),
    ("default", "twilio-shared-key-missing", twilio_shared(lambda url, p: None), 403),
    ("default", "twilio-shared-key-wrong-key", twilio_shared(shared_key_signature(TWILIO_SHARED_KEY + "x")), 403),
    ("default", "twilio-shared-key-wrong-auth-token-instead", twilio_shared(shared_key_signature(TWILIO_TOKEN)), 403),
    ("default", "twilio-shared-key-truncated", twilio_shared(lambda url, p: shared_key_signature()(url, p)[:-6]), 403),
    (
        "default",
        "twilio-shared-key-wrong-algorithm-sha1",
        twilio_shared(shared_key_signature(algorithm="HMAC_SHA1")),
        403,
    ),
    (
        "default",
        "twilio-shared-key-wrong-algorithm-unknown",
        twilio_shared(shared_key_signature(), settings="key=webhooks_sharedkey_0a1b2c3d4e5f,algorithm=HMAC_SHA512"),
        403,
    ),
    (
        "default",
        "twilio-shared-key-tampered-params",
        twilio_shared(shared_key_signature(), body_params={**TWILIO_PARAMS, "CallStatus": "completed"}),
        403,
    ),
    ("default", "twilio-shared-key-header-dropped", twilio_form(shared_key_signature()), 403),
]


def credential_values(sent: Sent) -> list[str]:
    """The credential-bearing header values that were sent (near-misses of a secret included)."""
    names = {
        "x-vapi-secret",
        "authorization",
        "x-signature",
        "x-hub-signature",
        "svix-signature",
        "x-retell-signature",
        "x-twilio-signature",
    }
    values = []
    for name, value in sent.headers.items():
        if name in names and len(value) >= 8:
            values.append(value.removeprefix("Bearer "))
    return values


@pytest.mark.parametrize("config, case, build, expected", [pytest.param(*c, id=f"{c[0]}:{c[1]}") for c in CASES])
def test_auth_table(
    services: Callable[[str], ServiceThread], config: str, case: str, build: Builder, expected: int
) -> None:
    svc = services(config)
    store = svc.service.store
    before = svc.run(queries.counts(store))
    sent = build(svc)
    raw, _ = exchange(svc.port, post_bytes(sent.path, sent.body, sent.headers), half_close=False)
    [(status, _, reply)] = responses(raw)
    after = svc.run(queries.counts(store))
    assert status == expected, (case, reply[:300])
    if expected < 300:
        assert after["rejected_requests"] == before["rejected_requests"]
        assert after["deliveries"] == before["deliveries"] + 1
        return
    message = json.loads(reply)["error"]["message"]
    assert message.startswith("authentication failed (")
    if "x-twilio-webhooks-signature-settings" in sent.headers:  # the reason names the header, not just the URL
        assert message.startswith("authentication failed (twilio-shared-key)")
        assert "X-Twilio-Webhooks-Signature-Settings" in message, message
    assert after["rejected_requests"] == before["rejected_requests"] + 1
    assert after["deliveries"] == before["deliveries"]
    [row] = svc.run(queries.rejected(store, limit=1))
    assert row["reason"] == message
    assert row["path"] == sent.path and row["body_size"] == len(sent.body)
    stored = json.dumps(row)
    for secret in (VAPI_SECRET, RETELL_KEY, TWILIO_TOKEN, TWILIO_SHARED_KEY, *credential_values(sent)):
        assert secret not in stored, f"{case}: a credential reached the rejected-requests table"
        assert secret not in message


def test_the_table_covers_every_provider_mode_and_case() -> None:
    """Every mode has a valid control and the refusals the issue names (time cases where the scheme has time)."""
    by_mode: dict[str, set[str]] = {}
    for config, case, _, _ in CASES:
        provider = "twilio-shared-key" if case.startswith("twilio-shared-key-") else case.split("-")[0]
        provider = provider if case.startswith(("retell", "twilio")) else "vapi"
        mode = provider if provider != "vapi" else {"default": "vapi-secret"}.get(config, config)
        by_mode.setdefault(mode, set()).add(case.removeprefix(provider + "-") if provider != "vapi" else case)
    required = {"valid", "missing", "wrong", "truncated"}
    timed = {"replayed-stale", "future-dated"}
    for mode, cases in by_mode.items():
        assert required <= {c if not c.startswith("wrong") else "wrong" for c in cases} | cases, mode
        if "hmac" in mode or mode == "retell":
            assert timed <= cases, mode
            assert any(c.startswith("wrong-algorithm") for c in cases), mode
    assert {"twilio", "twilio-shared-key", "retell", "vapi-secret", "vapi-bearer"} <= set(by_mode)
    assert sum("hmac" in mode for mode in by_mode) == 3
    for mode in ("twilio", "twilio-shared-key"):
        assert any(c.startswith("wrong-algorithm") for c in by_mode[mode]), mode


# ------------------------------------------------------------------ constant-time comparisons

AUTH_MODULES = [
    "console/providers/vapi/auth.py",
    "console/providers/retell/auth.py",
    "console/providers/twilio/auth.py",
    "console/providers/twilio/__init__.py",
    "console/services/control.py",
    "console/services/serve_state.py",
]
# Words that name a secret or a value derived from one (split on "_").
SECRET_WORDS = {
    "secret",
    "token",
    "key",
    "expected",
    "digest",
    "signature",
    "sig",
    "mac",
    "given",
    "claimed",
    "supplied",
    "hmac",
    "password",
}
# Comparisons that are not about a client's credential, with why.
ALLOWED = {
    # Is the state file still ours? Both tokens are our own, read from our own file.
    ("console/services/serve_state.py", "remove_state"),
}


def _words(node: ast.AST) -> set[str]:
    """Identifier words in an expression, skipping what is under len() (a length is public)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len":
        return set()
    words: set[str] = set()
    if isinstance(node, ast.Name):
        words.update(node.id.lower().split("_"))
    elif isinstance(node, ast.Attribute):
        words.update(node.attr.lower().split("_"))
    for child in ast.iter_child_nodes(node):
        words |= _words(child)
    return words


def equality_on_secrets(source: str, filename: str) -> list[str]:
    """`==`/`!=` (or `in`) comparisons with a secret-like operand, outside ALLOWED functions."""
    tree = ast.parse(source)
    enclosing: dict[ast.AST, str] = {}
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                enclosing[node] = func.name  # outer first, so the innermost function wins
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        name = enclosing.get(node, "<module>")
        if (filename, name) in ALLOWED:
            continue
        if not any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) for op in node.ops):
            continue
        operands = [node.left, *node.comparators]
        if any(isinstance(o, ast.Constant) for o in operands):
            continue  # against a literal: a mode name, a header name, None checks...
        if any(_words(o) & SECRET_WORDS for o in operands):
            found.append(f"{filename}:{node.lineno} in {name}(): {ast.unparse(node)}")
    return found


def test_secret_comparisons_are_constant_time() -> None:
    problems = []
    for relative in AUTH_MODULES:
        source = (ROOT / relative).read_text()
        if relative.endswith(("auth.py", "control.py")):  # where the comparisons live
            assert "hmac.compare_digest(" in source, f"{relative} compares no credential in constant time"
        problems += equality_on_secrets(source, relative)
    assert problems == []


def test_the_constant_time_check_catches_a_plain_equality() -> None:
    """The AST check is not vacuous: it flags the usual mistakes."""
    planted = """
def verify(header, secret):
    expected = make(secret)
    if header == expected:
        return True
    if given_sig != compute(body)[:len(x)]:
        return False
    return hmac.new(key, body, "sha256").hexdigest() in header.split()
"""
    found = equality_on_secrets(planted, "planted.py")
    assert len(found) == 3, found
    assert (
        equality_on_secrets("def f(mode, key):\n    return mode == 'hmac' and len(key) == len(other)\n", "ok.py") == []
    )
