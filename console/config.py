"""Settings: a TOML file, then environment variables, then command-line flags.

Secrets are never here: they come from the keyring or environment
(`console.secrets`). A bad file or value raises `ConfigError`, whose message is
one readable paragraph naming the file, the key and what was expected.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

APP_NAME = "voice-console"


class ConfigError(Exception):
    """A configuration problem the user must fix (exit code 2)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    # NORMAL survives a crash of the process (kill -9) in WAL mode; FULL also a power cut.
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    commit_interval_ms: float = Field(2.0, ge=0, le=1000)


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


class VapiSettings(_Section):
    base_url: str = "https://api.vapi.ai"
    webhook: VapiWebhookSettings = Field(default_factory=VapiWebhookSettings)
    assistant_request: VapiAssistantRequestSettings = Field(default_factory=VapiAssistantRequestSettings)
    transfer_destination: str | None = None  # E.164 number for transfer-destination-request
    default_tool_timeout_seconds: float = Field(20.0, gt=0, le=300)


class RetellCallInboundSettings(_Section):
    override_agent_id: str | None = None
    override_agent_version: int | None = None
    dynamic_variables: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class RetellSettings(_Section):
    base_url: str = "https://api.retellai.com"
    call_inbound: RetellCallInboundSettings = Field(default_factory=RetellCallInboundSettings)
    skew_seconds: float = Field(300.0, gt=0)
    function_timeout_seconds: float = Field(120.0, gt=0)


class TwilioSettings(_Section):
    base_url: str = "https://api.twilio.com"
    # TwiML answered to the voice webhook.
    voice_twiml: str = (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        "<Say>This number is connected to voice-console.</Say></Response>"
    )
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


class Settings(_Section):
    receiver: ReceiverSettings = Field(default_factory=ReceiverSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    vapi: VapiSettings = Field(default_factory=VapiSettings)
    retell: RetellSettings = Field(default_factory=RetellSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    forward: ForwardSettings = Field(default_factory=ForwardSettings)
    gate: GateSettings = Field(default_factory=GateSettings)
    dial: DialSettings = Field(default_factory=DialSettings)
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


def read_toml(file: Path, *, hint: str = "") -> dict[str, Any]:
    """Parse a TOML file; any problem is a ConfigError naming the file."""
    try:
        with file.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: this is not valid TOML ({exc}).{hint}") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot be read ({exc.strerror}).") from None


def _describe_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _validation_paragraph(source: str, err: ValidationError) -> str:
    problems = []
    for item in err.errors():
        key = _describe_location(item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "is not a known setting (check the spelling; see the README for every key)"
        elif "input" in item and item["type"] != "missing":
            message = f"{message} (got {item['input']!r})"
        problems.append(f"key '{key}' {message}")
    return f"{source}: " + "; ".join(problems) + "."


def load_settings(
    path: Path | str | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    """Read the TOML file, apply env and flag overrides, validate everything.

    `path` None means `VOICE_CONSOLE_CONFIG` or the default location (which may
    be absent). An explicitly named file that does not exist is an error.
    """
    env = os.environ if env is None else env
    explicit = path is not None or bool(env.get("VOICE_CONSOLE_CONFIG"))
    file = Path(path or env.get("VOICE_CONSOLE_CONFIG") or default_config_path()).expanduser()

    data: dict[str, Any] = {}
    if file.exists():
        data = read_toml(file, hint=" Fix the file or point --config elsewhere.")
    elif explicit:
        raise ConfigError(
            f"{file}: the configuration file does not exist. Create it, or leave out "
            "--config / VOICE_CONSOLE_CONFIG to use the defaults."
        )

    if env.get("VOICE_CONSOLE_DB"):
        data.setdefault("storage", {})["db"] = env["VOICE_CONSOLE_DB"]
    if env.get("VOICE_CONSOLE_VAPI_BASE_URL"):
        data.setdefault("vapi", {})["base_url"] = env["VOICE_CONSOLE_VAPI_BASE_URL"]
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            if value is not None:
                data.setdefault(section, {})[key] = value

    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        where = str(file) if file.exists() else "settings from the environment and flags"
        raise ConfigError(_validation_paragraph(where, exc)) from None
    settings._source = file if file.exists() else None
    return settings
