"""The tool-call policy file: what happens to each tool call before a human sees it.

```toml
[tools.default]            # applies to every tool without its own table
action = "hold"            # hold | approve | reject | override
timeout_seconds = 15       # how long a human has; capped below the platform's deadline
on_timeout = "reject"      # approve | reject | override
reason = "The operator did not answer in time."

[tools.book_appointment]
action = "override"
result = '{"booked": true}'
```
A bad file raises `ConfigError` naming the file and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from console.config import ConfigError, config_dir, file_present, read_toml, validation_problems

Action = Literal["hold", "approve", "reject", "override"]
TimeoutAction = Literal["approve", "reject", "override"]

TIMEOUT_REASON = "The operator did not answer in time."
POLICY_REASON = "This action is not allowed right now."


class ToolRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    action: Action = "hold"
    timeout_seconds: float = Field(15.0, gt=0, le=300)
    on_timeout: TimeoutAction = "reject"
    reason: str | None = None  # spoken-safe text for a refusal; a default fits the cause when unset
    # The result sent for `override` (and for `approve` with no forward target).
    result: str | None = None

    def refusal(self, *, timed_out: bool) -> str:
        if self.reason:
            return self.reason
        return TIMEOUT_REASON if timed_out else POLICY_REASON

    @model_validator(mode="after")
    def _override_needs_a_result(self) -> ToolRule:
        if self.action == "override" and self.result is None:
            raise ValueError('action "override" needs a `result`')
        if self.on_timeout == "override" and self.result is None:
            raise ValueError('on_timeout "override" needs a `result`')
        return self


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tools: dict[str, ToolRule] = Field(default_factory=dict)

    def rule_for(self, tool_name: str) -> ToolRule:
        return self.tools.get(tool_name) or self.tools.get("default") or ToolRule()

    @classmethod
    def default(cls, action: Action = "hold") -> Policy:
        return cls(tools={"default": ToolRule(action=action)})


def default_policy_path() -> Path:
    return config_dir() / "policy.toml"


def load_policy(path: Path | str | None = None, *, default_action: Action = "hold") -> Policy:
    """Read the policy; no file at the default location means the default action for all."""
    explicit = path is not None
    file = Path(path).expanduser() if path is not None else default_policy_path()
    if not file_present(file):
        if explicit:
            raise ConfigError(f"{file}: the policy file does not exist.")
        return Policy.default(default_action)
    data = read_toml(file)
    tools = data.setdefault("tools", {})
    if isinstance(tools, dict):  # anything else is refused below, naming the key
        tools.setdefault("default", {"action": default_action})
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, unknown_key=_unknown_policy_key)
        raise ConfigError(f"{file}: " + "; ".join(problems) + ".") from None


def _unknown_policy_key(loc: tuple[object, ...]) -> str:
    known = "action, timeout_seconds, on_timeout, reason, result" if len(loc) > 1 else "only [tools.NAME] tables"
    return f"is not a known policy key ({known})"
