"""Settings: a TOML file, then environment variables, then command-line flags.

Secrets are never here: they come from the keyring or environment
(`console.secrets`). A bad file or value raises `ConfigError`, whose message is
one readable paragraph naming the file, the key and what was expected.
"""

from __future__ import annotations

import datetime
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from console import APP_NAME


class ConfigError(Exception):
    """A configuration problem the user must fix (exit code 2)."""


class _Section(BaseModel):
    # inf/nan parse in TOML but no timeout or size means anything with them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def json_value(value: Any) -> Any:
    """Refuse what TOML parses but a JSON reply to the platform cannot carry (dates, inf/nan)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, (datetime.date, datetime.time)):  # datetime is a date
            raise ValueError(
                f"holds the TOML date/time {item.isoformat()}, which JSON cannot carry; quote it as a string"
            )
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"holds {item}, which JSON cannot carry")
    return value


class ReceiverSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    # The public base URL the platforms call (a tunnel), e.g. https://abc.ngrok.app.
    # Twilio signs the full URL it requested, so this must be right for Twilio.
    public_url: str | None = None
    max_head_bytes: int = Field(16 * 1024, ge=1024)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    request_deadline_seconds: float = Field(10.0, gt=0)
    keepalive_idle_seconds: float = Field(5.0, gt=0)
    handler_timeout_seconds: float = Field(330.0, gt=0)
    max_connections: int = Field(1024, ge=1)

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class StorageSettings(_Section):
    db: Path | None = None
    # NORMAL survives a crash of the process (kill -9) in WAL mode; FULL also a power cut: a 2xx
    # means "fsynced". FULL is the default since the writer process groups commits: one fsync per
    # group cost nothing measurable (bench/ingest.py, bench/README.md).
    synchronous: Literal["NORMAL", "FULL"] = "FULL"
    commit_interval_ms: float = Field(2.0, ge=0, le=1000)
    # "process": a receiver's transactions run in a child process, off the event loop's
    # interpreter lock; "thread": in a thread of the receiver's own process.
    writer: Literal["process", "thread"] = "process"


class VapiHmacSettings(_Section):
    """Mirrors Vapi's HMAC credential (HMACAuthenticationPlan)."""

    algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    signature_header: str = "x-signature"
    timestamp_header: str = "x-timestamp"
    include_timestamp: bool = True
    payload_format: str = "{timestamp}.{body}"
    signature_prefix: str = ""
    signature_encoding: Literal["hex", "base64"] = "hex"
    secret_is_base64: bool = False
    skew_seconds: float = Field(300.0, gt=0)


class VapiWebhookSettings(_Section):
    auth: Literal["secret", "bearer", "hmac", "none"] = "secret"
    secret_header: str = "x-vapi-secret"
    bearer_header: str = "authorization"
    bearer_prefix: bool = True
    hmac: VapiHmacSettings = Field(default_factory=VapiHmacSettings)


class VapiAssistantRequestSettings(_Section):
    """How `assistant-request` is answered (it must be within 7.5 s, so never by a human)."""

    assistant_id: str | None = None
    assistant: dict[str, Any] | None = None  # a transient assistant
    error: str = "Sorry, no assistant is configured for this number."

    _json_only = field_validator("assistant")(json_value)


class VapiHandoffDestination(_Section):
    """The assistant `handoff-destination-request` hands the call to (Vapi's HandoffDestinationAssistant).

    In the file: `handoff_destination = "Billing"` (an assistant name, as in a squad) or
    `handoff_destination = { assistant_id = "..." }` / `{ assistant_name = "..." }`.
    """

    assistant_name: str | None = None
    assistant_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _name_or_table(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"assistant_name": value}
        if not isinstance(value, dict):
            raise ValueError("must be an assistant name (a string) or a table with assistant_name or assistant_id")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> VapiHandoffDestination:
        given = [value for value in (self.assistant_name, self.assistant_id) if value and value.strip()]
        if len(given) != 1:
            raise ValueError("must name one assistant: a non-empty assistant_name or assistant_id, not both")
        return self


class VapiSettings(_Section):
    base_url: str = "https://api.vapi.ai"
    webhook: VapiWebhookSettings = Field(default_factory=VapiWebhookSettings)
    assistant_request: VapiAssistantRequestSettings = Field(default_factory=VapiAssistantRequestSettings)
    transfer_destination: str | None = None  # E.164 number for transfer-destination-request
    handoff_destination: VapiHandoffDestination | None = None  # for handoff-destination-request
    default_tool_timeout_seconds: float = Field(20.0, gt=0, le=300)


class RetellCallInboundSettings(_Section):
    override_agent_id: str | None = None
    override_agent_version: int | None = None
    dynamic_variables: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)

    _json_only = field_validator("metadata")(json_value)


def _websocket_url(value: str | None, what: str) -> str | None:
    if value is None or not value.strip():
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise ValueError(f"must be a ws:// or wss:// URL of {what}")
    return value.strip()


class RetellSettings(_Section):
    base_url: str = "https://api.retellai.com"
    call_inbound: RetellCallInboundSettings = Field(default_factory=RetellCallInboundSettings)
    skew_seconds: float = Field(300.0, gt=0)
    function_timeout_seconds: float = Field(120.0, gt=0)
    # The user's own custom-LLM server: the tap at /llm/retell relays each call's socket to
    # `<llm_forward_to>/<call_id>`, as Retell itself would open it.
    llm_forward_to: str | None = None

    @field_validator("llm_forward_to")
    @classmethod
    def _llm_forward_to(cls, value: str | None) -> str | None:
        return _websocket_url(value, "your LLM server (Retell appends /<call_id>)")


class TwilioSettings(_Section):
    base_url: str = "https://api.twilio.com"
    # The user's own agent behind `<Connect><Stream>`: the tap at /stream/twilio/<token> relays each
    # call's Media Stream to it. Without one the tap watches the stream alone.
    stream_forward_to: str | None = None

    @field_validator("stream_forward_to")
    @classmethod
    def _stream_forward_to(cls, value: str | None) -> str | None:
        return _websocket_url(value, "your agent's WebSocket server")

    # TwiML answered to the voice webhook; `{stream_url}` in it is the media-stream tap's URL.
    # Unset: a `<Connect><Stream>` to the tap when the public URL is known, else a short <Say>.
    voice_twiml: str | None = None
    validate_signature: bool = True


class ForwardSettings(_Section):
    # The user's own webhook/tool server; tool calls are passed on to it.
    to: str | None = None
    timeout_seconds: float = Field(10.0, gt=0)


class GateSettings(_Section):
    # Seconds a tool call may wait before the assistant says `filler_text` through
    # Vapi's control URL (0 = never; off by default because it speaks on the call).
    filler_after_seconds: float = Field(0.0, ge=0)
    filler_text: str = "One moment, please."
    # Answer the platform this long before its own deadline, whatever happens.
    safety_margin_seconds: float = Field(1.5, ge=0.2, le=10)


class DialSettings(_Section):
    # Region for numbers typed without + and a country code, e.g. "(415) 555-0142" (ISO 3166 code).
    default_region: str = "US"

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        from console.phone import is_region

        if not is_region(value):
            raise ValueError("must be a two-letter region code libphonenumber knows, such as US, GB or DE")
        return value.upper()


TEAM_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class TeamSettings(_Section):
    # Team mode (issue 17): receivers publish to, and consoles read from, one Redis. Unset: this
    # machine alone, no Redis. redis:// or rediss:// (TLS); an ACL user and password may be in it.
    redis_url: str | None = None
    # The teams' key prefix (`vc:{name}:`, a Redis Cluster hash tag): several teams can share a Redis.
    name: str = "default"
    # This receiver's name in the team (default host:port): which instance has each call.
    instance: str | None = None
    # The team stream keeps about this many events (XADD MAXLEN ~); a console away longer is told what it missed.
    stream_max_len: int = Field(100_000, ge=1_000)
    # Events a receiver keeps while Redis is unreachable, published in order once it is back.
    backlog_max: int = Field(200_000, ge=1_000)
    # The password when the URL has none: from the keyring or VOICE_CONSOLE_TEAM_REDIS_PASSWORD
    # (`with_password`), never from this file.
    _password: str | None = PrivateAttr(default=None)

    @property
    def password(self) -> str | None:
        """The URL's own password, else the one from the keyring or the environment."""
        if self.redis_url:
            try:
                inline = urlsplit(self.redis_url).password
            except ValueError:
                inline = None
            if inline is not None:
                return None  # redis-py reads it from the URL
        return self._password

    def with_password(self, password: str | None) -> TeamSettings:
        copy = self.model_copy()
        copy._password = password or None
        return copy

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a Redis URL: redis://host:6379/0, rediss://… for TLS, or unix:///path.sock")
        if parts.scheme != "unix" and not parts.hostname:
            raise ValueError("must name the Redis host, e.g. redis://127.0.0.1:6379/0")
        return value

    @field_validator("name")
    @classmethod
    def _team_name(cls, value: str) -> str:
        if not value or len(value) > 64 or not set(value) <= TEAM_NAME_CHARS:
            raise ValueError("must be 1-64 letters, digits, '_', '.' or '-' (it is part of every Redis key)")
        return value


class Settings(_Section):
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    vapi: VapiSettings = Field(default_factory=VapiSettings)
    retell: RetellSettings = Field(default_factory=RetellSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    forward: ForwardSettings = Field(default_factory=ForwardSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    dial: DialSettings = Field(default_factory=DialSettings)
    team: TeamSettings = Field(default_factory=TeamSettings)
    # Where this settings object was read from (for messages), not a user key.
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source

    @property
    def db_path(self) -> Path:
        return self.storage.db or default_db_path()


def config_dir() -> Path:
    return platformdirs.user_config_path(APP_NAME)


def data_dir() -> Path:
    return platformdirs.user_data_path(APP_NAME)


def default_config_path() -> Path:
    return config_dir() / "config.toml"


def default_db_path() -> Path:
    return data_dir() / "history.db"


def themes_dir() -> Path:
    return config_dir() / "themes"


# Everything reading a TOML file can raise for a bad or unreadable file.
TOML_READ_ERRORS = (OSError, ValueError, RecursionError)  # ValueError covers TOMLDecodeError and UnicodeDecodeError


def toml_problem(exc: BaseException) -> str:
    """Why a TOML file could not be read (one of TOML_READ_ERRORS), as a clause without the file name."""
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"not valid TOML ({exc})"
    if isinstance(exc, UnicodeDecodeError):
        before = exc.object[: exc.start]
        line, column = before.count(b"\n") + 1, exc.start - before.rfind(b"\n")
        return (
            f"not UTF-8 text (byte {exc.object[exc.start]:#04x} at line {line}, column {column}); "
            "TOML files must be UTF-8, so save it as UTF-8"
        )
    if isinstance(exc, RecursionError):
        return "not usable TOML (arrays or inline tables nested too deeply)"
    if isinstance(exc, OSError):
        return f"cannot be read ({exc.strerror or exc})"
    return f"not usable TOML ({exc})"  # e.g. an integer of more than 4300 digits


def read_toml(file: Path, *, hint: str = "") -> dict[str, Any]:
    """Parse a TOML file; any problem is a ConfigError naming the file."""
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except TOML_READ_ERRORS as exc:
        where = "" if isinstance(exc, OSError) else "this is "
        raise ConfigError(f"{file}: {where}{toml_problem(exc)}.{hint}") from None


def file_present(file: Path) -> bool:
    """Whether `file` is there to be read; a path that cannot even be checked counts as there,
    so reading it reports the reason."""
    try:
        return file.exists()
    except (OSError, ValueError):
        return True


def _describe_location(loc: tuple[Any, ...]) -> str:
    # Skip the labels pydantic gives validators (`function-after[...]`); escape keys that would
    # break the line (a key may hold any character in TOML).
    parts = [str(part) for part in loc if not str(part).startswith("function-")]
    return ".".join(part if part.isprintable() else repr(part)[1:-1] for part in parts) or "(top level)"


def url_for_display(url: str) -> str:
    """`url` with its password, if it has one, as *** (a Redis URL may carry one): what may be printed."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        has_password = "@" in url
    if not has_password:
        return url
    userinfo, _, hostport = url.partition("://")[2].rpartition("@")
    user = userinfo.split(":", 1)[0]
    scheme = url.partition("://")[0]
    return f"{scheme}://{user}:***@{hostport}"


def _shown(value: Any, limit: int = 60) -> str:
    if isinstance(value, str) and "@" in value:
        value = url_for_display(value)
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def validation_problems(
    err: ValidationError,
    *,
    unknown_key: Callable[[tuple[Any, ...]], str],
    label: Callable[[tuple[Any, ...]], str] | None = None,
) -> list[str]:
    """One short clause per problem: the key, what was expected and what was found.

    `unknown_key(loc)` says what a misspelt key should have been; `label(loc)` may
    prefix a clause with who set the value (a flag, an environment variable).
    """
    problems = []
    for item in err.errors():
        key = _describe_location(item["loc"])
        message = item["msg"].removeprefix("Value error, ").replace("Input should", "should", 1)
        if item["type"] == "extra_forbidden":
            message = unknown_key(tuple(item["loc"]))
        elif item["type"] in ("model_type", "model_attributes_type", "dict_type"):
            message = f"should be a table (a [{key}] section or {{ … }}), not {_shown(item.get('input'))}"
        elif "input" in item and item["type"] != "missing" and not isinstance(item["input"], dict):
            message = f"{message} (got {_shown(item['input'])})"
        prefix = label(tuple(item["loc"])) if label else ""
        problems.append(f"{prefix}key '{key}' {message}")
    return problems


def _unknown_setting(loc: tuple[Any, ...]) -> str:
    return "is not a known setting (check the spelling; see the README for every key)"


# Environment variables that set one key each.
ENV_KEYS: dict[str, tuple[str, ...]] = {
    "VOICE_CONSOLE_DB": ("storage", "db"),
    "VOICE_CONSOLE_VAPI_BASE_URL": ("vapi", "base_url"),
    "VOICE_CONSOLE_RETELL_BASE_URL": ("retell", "base_url"),
    "VOICE_CONSOLE_TWILIO_BASE_URL": ("twilio", "base_url"),
    "VOICE_CONSOLE_TEAM": ("team", "redis_url"),
}


def _leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            found.extend(_leaves(value, (*prefix, key)))
        elif value is not None:
            found.append(((*prefix, key), value))
    return found


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        if not isinstance(data.get(part), dict):
            data[part] = {}
        data = data[part]
    data[path[-1]] = value


def load_settings(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
    flags: dict[str, str] | None = None,
) -> Settings:
    """Read the TOML file, validate it as a whole, then apply env and flag overrides.

    The file is checked even where a flag overrides one of its keys, so a mistake
    in it never waits for the day the flag is left out. `overrides` is nested like
    the file; `flags` names the flag behind a dotted key ("receiver.port": "--port")
    for messages. `path` None means `VOICE_CONSOLE_CONFIG` or the default location
    (which may be absent). An explicitly named file that does not exist is an error.
    """
    if env is None:
        env = os.environ
    explicit = path is not None or bool(env.get("VOICE_CONSOLE_CONFIG"))
    file = Path(path or env.get("VOICE_CONSOLE_CONFIG") or default_config_path()).expanduser()

    data: dict[str, Any] = {}
    present = file_present(file)
    if present:
        data = read_toml(file, hint=" Fix the file or point --config elsewhere.")
    elif explicit:
        raise ConfigError(
            f"{file}: the configuration file does not exist. Create it, or leave out "
            "--config / VOICE_CONSOLE_CONFIG to use the defaults."
        )
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{file}: " + "; ".join(validation_problems(exc, unknown_key=_unknown_setting)) + "."
        ) from None

    # Who set each overridden key, so an error names the flag or variable, not the file.
    origins: dict[tuple[str, ...], str] = {}
    for name, key in ENV_KEYS.items():
        if env.get(name):
            _put(data, key, env[name])
            origins[key] = f"{name}: "
    for key, value in _leaves(overrides or {}):
        _put(data, key, value)
        flag = (flags or {}).get(".".join(key))
        origins[key] = f"{flag}: " if flag else "override: "

    def origin(loc: tuple[Any, ...]) -> str:
        for key, label in origins.items():
            if loc[: len(key)] == key or key[: len(loc)] == loc:
                return label
        return f"{file} with the flags and environment: " if present else ""

    if origins:
        try:
            settings = Settings.model_validate(data)
        except ValidationError as exc:
            problems = validation_problems(exc, unknown_key=_unknown_setting, label=origin)
            raise ConfigError("; ".join(problems) + ".") from None
    settings._source = file if present else None
    return settings
