"""Twilio provider (sans-I/O): verify, parse and answer Twilio voice webhooks.

Routes (POST, or GET when the number's URL is set to GET: the parameters are in the query):
- "twilio.voice" (/webhook/twilio/voice): a call needs TwiML -> settings.voice_twiml.
- "twilio.status" (/webhook/twilio/status): status callbacks.
Media Streams (GET /stream/twilio, WebSocket) are handled by `MediaStreamSession`.

Acknowledgement: 200 with an empty `<Response/>` (text/xml) rather than 204, so
even a URL that was wired as a voice URL by mistake gets valid TwiML (the call
ends cleanly instead of Twilio's "application error").
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit
from xml.sax.saxutils import escape as xml_escape

from pydantic import ValidationError

from console.config import Settings, TwilioSettings
from console.core.events import to_utc
from console.core.http_types import Request, Response
from console.core.tools import ToolBatch, ToolOutcome
from console.providers.base import BadPayload, Inbound, Verdict
from console.providers.registry import (
    Control,
    Dialing,
    KeyCheck,
    ProviderSpec,
    Route,
    Secret,
    Secrets,
    SignRequest,
    Stream,
    Tap,
)
from console.providers.twilio.auth import (
    HEADER,
    HMAC_SHA1,
    NO_TOKEN_REASON,
    SCHEME,
    SETTINGS_HEADER,
    SHARED_KEY_SCHEME,
    SignatureSettings,
    body_hash_matches,
    body_hash_param,
    refresh_body_hash,
    sign_request,
    signature_matches,
    signature_settings,
    url_variants,
)
from console.providers.twilio.client import (
    UNAVAILABLE,
    account_probe,
    account_sid_problem,
    connect_stream_verb,
    dialer,
    open_control,
    tap_stream_url,
)
from console.providers.twilio.normalize import PROVIDER, call_extra, callback_time, sequence_number, status_events
from console.providers.twilio.stream import MediaStreamSession
from console.providers.twilio.tap import TwilioStreamTap
from console.providers.twilio.wire import CallParams, FormPairs, first_values, parse_form, parse_json_params

ROUTE_VOICE = "twilio.voice"
ROUTE_STATUS = "twilio.status"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_XML = "text/xml; charset=utf-8"
_FORM = "application/x-www-form-urlencoded"


def _is_form(request: Request) -> bool:
    return request.content_type == _FORM or (request.content_type == "" and bool(request.body))


class TwilioProvider:
    name = PROVIDER
    routes = (ROUTE_VOICE, ROUTE_STATUS)

    def __init__(
        self,
        settings: TwilioSettings,
        auth_token: str | None,
        public_url: str | None,
        shared_key: str | None = None,
        stream_token: str | None = None,
    ) -> None:
        self._settings = settings
        self._token = auth_token or None
        self._shared_key = shared_key or None  # the SharedKey secret, for X-Twilio-Webhooks-Signature-Settings
        self._public_url = public_url.rstrip("/") if public_url else None
        self._stream_token = stream_token  # the media-stream tap's

    # -- authentication -------------------------------------------------------

    def request_url(self, request: Request) -> tuple[str | None, str]:
        """The URL Twilio requested, and a note on how it was obtained (for failure reasons)."""
        if self._public_url:
            return self._public_url + request.target, ""
        proto = (request.header("x-forwarded-proto") or "http").split(",")[0].strip().lower() or "http"
        host = (request.header("x-forwarded-host") or request.header("host") or "").split(",")[0].strip()
        note = (
            " No public URL is configured (--public-url or receiver.public_url), so the URL was rebuilt "
            "from X-Forwarded-Proto and Host; set the public URL Twilio actually calls."
        )
        if not host:
            return None, note
        return f"{proto}://{host}{request.target}", note

    def verify(self, route: str, request: Request) -> Verdict:
        if not self._settings.validate_signature:
            return Verdict.passed("none")
        shared = signature_settings(request.header(SETTINGS_HEADER))
        scheme = SCHEME if shared is None else SHARED_KEY_SCHEME
        secret_problem = self._secret_problem(shared)
        if secret_problem:
            return Verdict.failed(scheme, secret_problem)
        secret = self._token if shared is None else self._shared_key
        assert secret is not None
        header = request.header(HEADER)
        if header is None:
            signed_with = f" ({shared.describe()} says a SharedKey signed it)" if shared is not None else ""
            return Verdict.failed(scheme, f"The X-Twilio-Signature header is missing{signed_with}.")
        url, note = self.request_url(request)
        if url is None:
            return Verdict.failed(scheme, "The request has no Host header, so the signed URL cannot be rebuilt." + note)
        try:
            urlsplit(url)
        except ValueError:  # e.g. "Host: [" (an unclosed IPv6 literal)
            return Verdict.failed(
                scheme, "The Host header is not a valid host, so the signed URL cannot be rebuilt." + note
            )
        params: FormPairs = []
        if body_hash_param(url) is not None:
            # JSON body: the URL carries the body's hash and only the URL is signed.
            if not body_hash_matches(url, request.body):
                return Verdict.failed(scheme, "The bodySHA256 query parameter does not match the SHA-256 of the body.")
        elif request.method == "POST" and _is_form(request):
            try:
                params = parse_form(request.body)
            except BadPayload as exc:
                return Verdict.failed(scheme, f"Cannot check the signature: {exc}")
        algorithm = shared.algorithm if shared is not None else HMAC_SHA1
        if signature_matches(url, params, header, secret, algorithm):
            return Verdict.passed(scheme)
        tried = " and ".join(url_variants(url))
        if shared is not None:
            # The settings header decides the secret and algorithm: name it first, the URL second.
            return Verdict.failed(
                scheme,
                f"X-Twilio-Signature does not match under {shared.describe()}: the request was signed with "
                "that SharedKey, and the configured SharedKey secret (twilio_shared_key) is not its secret, "
                f"or the signed URL differs (tried {tried})." + note,
            )
        return Verdict.failed(
            scheme,
            f"X-Twilio-Signature does not match the request URL (tried {tried}) and its parameters: "
            "the public URL differs from the one configured in Twilio, or the auth token is not the "
            "account's primary Auth Token." + note,
        )

    def _secret_problem(self, shared: SignatureSettings | None) -> str | None:
        """Why the request cannot be checked with the secrets we have, or None."""
        if shared is None:
            return None if self._token else NO_TOKEN_REASON
        if not shared.supported:
            return (
                f"{shared.describe()} names an algorithm voice-console does not know; "
                "Twilio documents HMAC_SHA1 and HMAC_SHA256."
            )
        if not self._shared_key:
            return (
                f"The request carries {shared.describe()}: Twilio signed it with a SharedKey, and no "
                "SharedKey secret is configured. Set it with `voice-console keys set twilio --name shared_key` "
                "or the VOICE_CONSOLE_TWILIO_SHARED_KEY environment variable."
            )
        return None

    # -- parsing --------------------------------------------------------------

    def _params(self, request: Request) -> FormPairs:
        if request.method == "GET":
            return parse_form(request.query.encode())  # Twilio may be set to GET: all in the query
        if request.content_type == "application/json":
            return parse_json_params(request.body)
        return parse_form(request.body)

    def parse(self, route: str, request: Request, received_at: datetime) -> Inbound:
        received_at = to_utc(received_at)
        if route not in (ROUTE_VOICE, ROUTE_STATUS):
            raise BadPayload(f"The Twilio provider has no route {route!r}.")
        pairs = self._params(request)
        try:
            params = CallParams.model_validate(first_values(pairs))
        except ValidationError:
            raise BadPayload("No CallSid parameter, so this is not a Twilio voice webhook.") from None
        at = callback_time(params, received_at)
        if route == ROUTE_VOICE:
            if not params.call_status:
                params = params.model_copy(update={"call_status": "ringing"})
            reply = Response(status=200, body=self.voice_twiml(request).encode(), content_type=_XML)
            events = status_events("voice", params, pairs, at)
            return Inbound(PROVIDER, "voice", params.call_sid, at, events, reply=reply, extra=call_extra(params))
        seq = sequence_number(params)
        return Inbound(
            PROVIDER,
            "status",
            params.call_sid,
            at,
            status_events("status", params, pairs, at),
            dedupe_key=f"twilio:{params.call_sid}:status:{seq}" if seq is not None else None,
            extra=call_extra(params),
        )

    # -- replies --------------------------------------------------------------

    def stream_url(self, request: Request) -> str | None:
        """The media-stream tap's URL, with its token: on the public URL, else on the host the request
        came to (wss://, which Twilio requires, unless that is this machine)."""
        if self._public_url:
            return tap_stream_url(self._public_url, self._stream_token)
        host = request.header("host")
        if not host or not self._stream_token:
            return None
        local = host.split(":")[0] in ("127.0.0.1", "localhost", "[::1]")
        return tap_stream_url(("http://" if local else "https://") + host, self._stream_token)

    def voice_twiml(self, request: Request) -> str:
        """What a call does when it reaches this console: `[twilio] voice_twiml` (its `{stream_url}` the
        tap's), else a `<Connect><Stream>` to the tap, else (no tap token) a short <Say>."""
        configured = self._settings.voice_twiml
        stream_url = self.stream_url(request)
        if configured is not None:
            if "{stream_url}" in configured:
                return configured.replace("{stream_url}", xml_escape(stream_url or "", {'"': "&quot;"}))
            return configured
        return stream_twiml(stream_url) if stream_url else SAY_TWIML

    def tool_reply(self, batch: ToolBatch, outcomes: list[ToolOutcome]) -> Response:
        # Twilio has no tool calls; answer something Twilio accepts all the same.
        return Response(status=200, body=EMPTY_TWIML.encode(), content_type=_XML)

    def ack(self, inbound: Inbound) -> Response:
        return Response(status=200, body=EMPTY_TWIML.encode(), content_type=_XML)


SAY_TWIML = (
    '<?xml version="1.0" encoding="UTF-8"?><Response><Say>This number is connected to voice-console.</Say></Response>'
)


def stream_twiml(stream_url: str) -> str:
    """A two-way `<Connect><Stream>` to `stream_url` (the call waits there until the stream ends)."""
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{connect_stream_verb(stream_url)}</Response>'


# -- the spec (console.providers.registry) ----------------------------------------------------


def _build(settings: Settings, secrets: Secrets) -> TwilioProvider:
    return TwilioProvider(
        settings.twilio,
        secrets.get("twilio_auth_token"),
        settings.receiver.public_url,
        shared_key=secrets.get("twilio_shared_key"),
        stream_token=secrets.get("twilio_stream_token"),
    )


def _sign(request: SignRequest) -> dict[str, str]:
    return {HEADER: sign_request(request.url, request.method, request.content_type, request.body, request.secret)}


def _warnings(settings: Settings, secrets: Secrets) -> list[str]:
    if not settings.twilio.validate_signature:
        return []
    warnings = []
    if not secrets.get("twilio_auth_token"):
        warnings.append("Twilio webhooks will be refused: no Twilio auth token. Set VOICE_CONSOLE_TWILIO_AUTH_TOKEN.")
    if not settings.receiver.public_url:
        warnings.append(
            "No --public-url: Twilio signatures are checked against the Host header, which fails behind a tunnel."
        )
    return warnings


SPEC = ProviderSpec(
    name="twilio",
    title="Twilio",
    # A Twilio number's voice and status URLs may be set to GET (parameters in the query).
    routes=(
        Route(ROUTE_VOICE, "/webhook/twilio/voice", ("POST", "GET")),
        Route(ROUTE_STATUS, "/webhook/twilio/status", ("POST", "GET")),
    ),
    streams=(Stream("/stream/twilio", MediaStreamSession),),
    # The tap: `wss://<public>/stream/twilio/<token>` in the `<Connect><Stream>` TwiML (a stream URL
    # may not carry a query), relayed to the user's agent or watched alone.
    taps=(
        Tap(
            "/stream/twilio",
            token_secret="twilio_stream_token",
            session=TwilioStreamTap,
            forward_to=lambda settings: settings.twilio.stream_forward_to,
            option="--twilio-stream-forward-to (or [twilio] stream_forward_to)",
            call_id_in_path=False,
            terminate_without_forward=True,
        ),
    ),
    secrets=(
        Secret("twilio_account_sid", "Twilio account SID"),
        Secret("twilio_auth_token", "Twilio auth token"),
        # The secret of a webhook SharedKey (X-Twilio-Webhooks-Signature-Settings).
        Secret("twilio_shared_key", "Twilio SharedKey secret"),
        # An API key for the REST API instead of the auth token (Twilio's recommendation).
        Secret("twilio_api_key_sid", "Twilio API key SID"),
        Secret("twilio_api_key_secret", "Twilio API key secret"),
        # Made on first use when not set: Twilio sends no credentials to a Media Stream.
        Secret("twilio_stream_token", "Twilio media-stream tap token"),
    ),
    build=_build,
    signing_secret="twilio_auth_token",
    sign=_sign,
    needs_signature=lambda settings: settings.twilio.validate_signature,
    retarget=refresh_body_hash,
    # Twilio's own SDK middleware answers a bad signature with 403.
    auth_failure_status=403,
    base_url=lambda settings: settings.twilio.base_url,
    key_check=KeyCheck(
        needs=("twilio_account_sid", "twilio_auth_token"),
        proves="twilio_auth_token",
        request=account_probe,
        problem=account_sid_problem,
    ),
    warnings=_warnings,
    control=Control(
        open=open_control,
        needs=("twilio_account_sid", "twilio_auth_token", "twilio_stream_token"),
        unavailable=UNAVAILABLE,
        say_prompt="What is said to the caller now (<Say>, then a new stream to your agent):",
        tap_actions=frozenset({"cut_off"}),
    ),
    dialing=Dialing(
        needs=("twilio_account_sid", "twilio_auth_token"),
        client=dialer,
        agent_word="TwiML",
        optional=("twilio_api_key_sid", "twilio_api_key_secret"),
        needs_public_url=True,
    ),
)
