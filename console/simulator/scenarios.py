"""Call scenarios for the simulated platform: TOML files, validated with pydantic.

A scenario is a list of steps played in order. Times are scenario seconds
(divided by the platform's `--speed`). Every step may start with `pause`, the
silence before it.

```toml
name = "booking"
description = "What the call is about"
summary = "The end-of-call-report summary"
customer_number = "+14155550142"
words_per_second = 2.6                  # speaking rate of both sides

[[steps]]
kind = "say"                            # one turn, spoken whole
role = "assistant"                      # assistant | user
text = "Thanks for calling Sunrise Dental."

[[steps]]
kind = "barge-in"                       # the user talks over the assistant
text = "What the assistant meant to say, in full."
cut_after_words = 4                     # how far it got before the user cut in
user = "What the user says over it."

[[steps]]
kind = "tools"                          # one tool-calls message; several calls run in parallel
calls = [{ name = "check_availability", arguments = { date = "2026-02-17" } }]
filler = "Let me check."                # request-start, spoken before the request
say = "I have {check_availability}."    # spoken with the webhook's actual answers
on_error = "Sorry, {error}."            # when any call returned an error
on_timeout = "Sorry, the system is slow."   # when the webhook missed the deadline
timeout_seconds = 20                    # the tool server's deadline (real seconds)
hang_after = 5                          # `hang` when the request is still pending by then

[[steps]]
kind = "silence"
seconds = 8

[[steps]]
kind = "transfer"                       # status forwarding, then ended
destination = "+16505550100"
say = "Transferring you now."

[[steps]]
kind = "end"                            # optional; a call without it ends after its last step
reason = "customer-ended-call"
```

Placeholders in `say`/`on_error`: `{<tool name>}` is that call's result (or
error) text, `{result}` all results joined, `{error}` all errors joined.
Problems raise `ScenarioError` naming the file and the key.
"""

from __future__ import annotations

import json
import re
import string
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from console.config import TOML_READ_ERRORS, ConfigError, toml_problem

BUNDLED_DIR = Path(__file__).parent / "scenarios"
DEFAULT_SCENARIO = "booking"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ScenarioError(ConfigError):
    """A scenario file that cannot be played (exit code 2)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Step(_Model):
    pause: float = Field(0.5, ge=0, le=600)


class SayStep(_Step):
    kind: Literal["say"]
    role: Literal["assistant", "user"]
    text: str = Field(min_length=1)


class BargeInStep(_Step):
    kind: Literal["barge-in"]
    text: str = Field(min_length=1)
    cut_after_words: int = Field(4, ge=1)
    user: str = Field(min_length=1)

    @model_validator(mode="after")
    def _cut_inside_text(self) -> BargeInStep:
        words = len(self.text.split())
        if self.cut_after_words >= words:
            raise ValueError(f"cut_after_words ({self.cut_after_words}) must be less than the {words} words of text")
        return self


class ToolCallSpec(_Model):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _vapi_tool_name(cls, value: str) -> str:
        if not _TOOL_NAME.fullmatch(value):
            raise ValueError("must be 1-64 characters of A-Z, a-z, 0-9, _ and -")
        return value


class ToolsStep(_Step):
    kind: Literal["tools"]
    calls: list[ToolCallSpec] = Field(min_length=1)
    filler: str | None = "One moment."
    say: str = Field(min_length=1)
    on_error: str = "Sorry, I couldn't do that: {error}"
    on_timeout: str = "Sorry, our system isn't answering right now."
    timeout_seconds: float = Field(20.0, ge=1, le=300)
    hang_after: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _placeholders_are_known(self) -> ToolsStep:
        names = [call.name for call in self.calls]
        if len(set(names)) != len(names):
            raise ValueError("each tool may appear once per step (placeholders name them)")
        allowed = {"result", "error", *names}
        for key in ("say", "on_error", "on_timeout"):
            for field_name in _placeholders(getattr(self, key)):
                if field_name not in allowed:
                    raise ValueError(
                        f"{key} uses {{{field_name}}}; known placeholders: "
                        + ", ".join("{" + name + "}" for name in sorted(allowed))
                    )
        return self


class SilenceStep(_Step):
    kind: Literal["silence"]
    seconds: float = Field(gt=0, le=3600)


class TransferStep(_Step):
    kind: Literal["transfer"]
    destination: str
    say: str | None = "Transferring you now."

    @field_validator("destination")
    @classmethod
    def _e164(cls, value: str) -> str:
        if not E164.fullmatch(value):
            raise ValueError("must be an E.164 number such as +16505550100")
        return value


class EndStep(_Step):
    kind: Literal["end"]
    reason: str = "customer-ended-call"


Step = Annotated[SayStep | BargeInStep | ToolsStep | SilenceStep | TransferStep | EndStep, Field(discriminator="kind")]


class Scenario(_Model):
    name: str
    description: str = ""
    summary: str = ""
    customer_number: str = "+14155550142"
    words_per_second: float = Field(2.6, gt=0.2, le=20)
    steps: list[Step] = Field(min_length=1)

    @field_validator("customer_number")
    @classmethod
    def _customer_e164(cls, value: str) -> str:
        if not E164.fullmatch(value):
            raise ValueError("must be an E.164 number such as +14155550142")
        return value

    @model_validator(mode="after")
    def _ending_is_last(self) -> Scenario:
        for index, step in enumerate(self.steps[:-1]):
            if isinstance(step, (EndStep, TransferStep)):
                raise ValueError(f"steps[{index}] ({step.kind}) ends the call, so it must be the last step")
        return self


def _placeholders(template: str) -> list[str]:
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:  # an unmatched brace
        raise ValueError(f"bad template {template!r}: {exc}") from None


class _Lenient(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


def render(template: str, values: dict[str, str]) -> str:
    """Fill a validated template; a value that is missing (e.g. no error) is empty."""
    return template.format_map(_Lenient(values)).strip()


def spoken(result: Any) -> str:
    """A tool result as the assistant would say it: a JSON string unquoted, else one line."""
    if isinstance(result, str):
        try:
            decoded = json.loads(result)
        except ValueError:
            return " ".join(result.split())
        if isinstance(decoded, str):
            return " ".join(decoded.split())
        return " ".join(result.split())
    return json.dumps(result, separators=(", ", ": "), ensure_ascii=False)


def bundled_scenarios() -> list[str]:
    return sorted(path.stem for path in BUNDLED_DIR.glob("*.toml"))


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("say", "barge-in", "tools", "silence", "transfer", "end") and out.endswith("]"):
            continue  # the union's tag pydantic puts in the path
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def parse_scenario(data: dict[str, Any], source: str) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        problems = []
        for item in err.errors()[:5]:
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "is not a known key"
            elif item["type"] == "union_tag_invalid":
                message = "kind must be one of say, barge-in, tools, silence, transfer, end"
            problems.append(f"key '{_key(item['loc'])}' {message}")
        raise ScenarioError(f"scenario {source}: " + "; ".join(problems) + ".") from None


def load_scenario(name_or_path: str | Path | None = None) -> Scenario:
    """A bundled scenario by name, or a TOML file by path."""
    ref = str(name_or_path or DEFAULT_SCENARIO)
    path = Path(ref).expanduser()
    if not (ref.endswith(".toml") or path.exists()):
        path = BUNDLED_DIR / f"{ref}.toml"
        if not path.is_file():
            raise ScenarioError(
                f"scenario {ref!r} is neither a file nor a bundled scenario "
                f"(bundled: {', '.join(bundled_scenarios())})."
            )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except TOML_READ_ERRORS as exc:  # issue 12: also not UTF-8, nested too deeply, huge integers
        verb = "" if isinstance(exc, OSError) else "is "
        raise ScenarioError(f"scenario {path}: {verb}{toml_problem(exc)}.") from None
    data.setdefault("name", path.stem)
    return parse_scenario(data, str(path))
