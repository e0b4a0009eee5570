"""The providers, one spec each: everything the rest of the console knows about a platform.

Routes, secret names and their environment variables, the status a failed
signature gets, how to build the webhook provider, how to sign a body as the
platform would (the inverse of `verify`: the forwarder, replay and the simulator
all sign through it), how `keys test` proves the keys, start-up warnings, and
what the console can do with the platform (dial, live control). A new provider
is a package with a `provider.py` that exports `SPEC`, and one name below.

Importing this module is cheap (`voice-console --help` lists provider names):
the built-in specs load on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

    from console.config import Settings
    from console.providers.base import (
        ControlTarget,
        LiveAction,
        LiveControl,
        PlatformClient,
        StreamSession,
        TapSession,
        WebhookProvider,
    )

# The built-in providers, in the order the console offers them; each is
# `console.providers.<name>.provider.SPEC`.
BUILTIN = ("vapi", "retell", "twilio")

Secrets = Mapping[str, "str | None"]  # secret name -> value (None: not set)


@dataclass(frozen=True)
class Route:
    """A webhook route: `name` is "<provider>" or "<provider>.<what>" (the provider's own `parse` sees it)."""

    name: str
    path: str
    methods: tuple[str, ...] = ("POST",)


@dataclass(frozen=True)
class Stream:
    """A WebSocket route the platform streams a live call on: each connection gets a new `session`."""

    path: str
    session: Callable[[], StreamSession]


@dataclass(frozen=True)
class Tap:
    """A live socket the platform opens to the console, relayed both ways to the user's own server:
    Retell's custom-LLM socket (`{prefix}/{token}/{call_id}` or `{prefix}/{call_id}?token=`), Twilio's
    Media Stream (`{prefix}/{token}`: the call is named in its `start` frame).

    The platforms send no credentials, so each connection must carry the per-install secret
    `token_secret`, as a path segment (before the call id) or as `?token=`.
    """

    prefix: str
    token_secret: str  # a secret name; its value is made on first use when none is set
    session: Callable[[str], TapSession]  # call id ("" when the path names none) -> the session watching it
    forward_to: Callable[[Settings], str | None]  # the user's server (the call id appended when in the path)
    option: str  # the command-line option and config key that set `forward_to`, for messages
    call_id_in_path: bool = True  # the platform appends the call id to the URL (Retell); else the stream says it
    # Without a server to relay to: watch the socket alone (True), or close it saying what to set.
    terminate_without_forward: bool = False


@dataclass(frozen=True)
class Secret:
    name: str  # as the keyring and `keys set --name` know it, e.g. "retell_api_key"
    label: str  # for people, e.g. "Retell API key"

    @property
    def env(self) -> str:
        """The environment variable that overrides the keyring (DESIGN.md contract)."""
        return "VOICE_CONSOLE_" + self.name.upper()


@dataclass(frozen=True)
class SignRequest:
    """A request the platform would send, to be signed: `url` is where it is posted (with its query)."""

    settings: Settings
    secret: str
    method: str
    url: str
    body: bytes
    content_type: str | None = None


@dataclass(frozen=True)
class KeyCheck:
    """How `keys test` proves a provider's keys: one read-only request made from them."""

    needs: tuple[str, ...]  # secret names that must be set, in the order they are reported
    proves: str  # the secret the verdict line names
    request: Callable[[Mapping[str, str], str], httpx.Request]  # (key values, base URL) -> the request
    # A usage problem in the values (a malformed account id), said before anything is sent.
    problem: Callable[[Mapping[str, str]], str | None] = lambda values: None
    refused_hint: str = ""  # appended to "refused by … (401)."
    # Lines said before the verdict about secrets the request cannot prove, from where
    # each secret comes from (None: not set), e.g. a webhook secret only the platform uses.
    notes: Callable[[Mapping[str, str | None]], list[str]] = lambda sources: []


@dataclass(frozen=True)
class Dialing:
    """How the console places calls through the platform's REST API (`dial`, the dial dialog)."""

    needs: tuple[str, ...]  # the secrets the client is opened with
    # (secret values, base URL, **client options such as max_retries, timeout_s) -> a client
    client: Callable[..., PlatformClient]
    agent_word: str = "assistant"  # what the platform calls who answers: "assistant", "agent"
    optional: tuple[str, ...] = ()  # secrets passed too when set (Twilio's API key instead of the token)
    # The platform fetches what the call does from this console (Twilio's voice URL): the client is
    # given `public_url=` (the receiver's public base URL, or None when unknown).
    needs_public_url: bool = False


@dataclass(frozen=True)
class Control:
    """How the console steers a platform's live call (the TUI's s / n / m / t / ctrl+e)."""

    open: Callable[[ControlTarget], LiveControl]
    needs_control_url: bool = False  # the call's capability URL, learnt from its webhooks (Vapi)
    needs: tuple[str, ...] = ()  # the secrets it is opened with
    # What this platform cannot do to a live call, and why (shown instead of silently doing nothing).
    unavailable: Mapping[LiveAction, str] = field(default_factory=dict)
    # What the operator is asked for by "say" (`s`), when the platform does not speak exact words.
    say_prompt: str = "What the assistant says now, word for word:"
    # What only works while the call's socket runs through this console's tap (Twilio's `x`: clear).
    tap_actions: frozenset[LiveAction] = frozenset()


def _no_warnings(settings: Settings, secrets: Secrets) -> list[str]:
    return []


def _always(settings: Settings) -> bool:
    return True


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    title: str  # "Retell"
    routes: tuple[Route, ...]
    secrets: tuple[Secret, ...]
    build: Callable[[Settings, Secrets], WebhookProvider]
    streams: tuple[Stream, ...] = ()
    taps: tuple[Tap, ...] = ()
    # Request headers whose values are secrets (masked wherever a delivery is shown or kept).
    secret_headers: Callable[[Settings], list[str]] = lambda settings: []
    # The secret deliveries are signed with, and how; None: the platform signs nothing.
    signing_secret: str | None = None
    sign: Callable[[SignRequest], dict[str, str]] | None = None
    needs_signature: Callable[[Settings], bool] = _always
    # A stored request target made true again for a new body (Twilio's bodySHA256 query parameter).
    retarget: Callable[[str, bytes], str] | None = None
    auth_failure_status: int = 401
    base_url: Callable[[Settings], str] | None = None  # the platform's REST API
    key_check: KeyCheck | None = None
    warnings: Callable[[Settings, Secrets], list[str]] = _no_warnings
    # What the console can do with the platform's calls: place them, steer them live.
    dialing: Dialing | None = None
    control: Control | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def can_dial(self) -> bool:
        return self.dialing is not None

    @property
    def can_control(self) -> bool:
        return self.control is not None

    def secret(self, name: str) -> Secret:
        return next(secret for secret in self.secrets if secret.name == name)


class UnknownProvider(KeyError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"unknown provider {self.name!r}; choose one of {', '.join(names())}"


_loaded: dict[str, ProviderSpec] = {}
_registered: dict[str, ProviderSpec] = {}


def names() -> tuple[str, ...]:
    """Every provider's name, built-ins first; imports nothing."""
    return (*BUILTIN, *(name for name in _registered if name not in BUILTIN))


def spec(name: str) -> ProviderSpec:
    if name in _registered:
        return _registered[name]
    if name not in BUILTIN:
        raise UnknownProvider(name)
    if name not in _loaded:
        _loaded[name] = importlib.import_module(f"console.providers.{name}.provider").SPEC
    return _loaded[name]


def specs() -> list[ProviderSpec]:
    return [spec(name) for name in names()]


def register(provider: ProviderSpec) -> None:
    """Add (or replace) a provider at run time: everything derived from the registry offers it."""
    _registered[provider.name] = provider


def unregister(name: str) -> None:
    _registered.pop(name, None)


def provider_of_route(route: str) -> str:
    return route.split(".", 1)[0]


# Secrets that belong to no platform: the team's Redis password (team mode), when its URL has none.
OTHER_SECRETS: dict[str, tuple[Secret, ...]] = {"team": (Secret("team_redis_password", "team Redis password"),)}


def secret_names() -> dict[str, Secret]:
    """Every provider's secrets by name, and the others (OTHER_SECRETS)."""
    names = {secret.name: secret for provider in specs() for secret in provider.secrets}
    names.update((secret.name, secret) for secrets in OTHER_SECRETS.values() for secret in secrets)
    return names


def made_secret_names() -> list[str]:
    """The secrets the console makes itself when none is set (the taps' tokens)."""
    return [tap.token_secret for provider in specs() for tap in provider.taps]


def auth_failure_status(provider: str) -> int:
    try:
        return spec(provider).auth_failure_status
    except UnknownProvider:
        return 401
