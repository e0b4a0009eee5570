"""The tool-call policy file: per-tool rules plus a default; bad files name file and key."""

import pytest

from console.config import ConfigError
from console.core.policy import Policy, load_policy


def write(tmp_path, text):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_rules_and_default(tmp_path):
    policy = load_policy(write(tmp_path, """
[tools.default]
action = "hold"
timeout_seconds = 12
on_timeout = "reject"
reason = "No one answered."

[tools.check_availability]
action = "approve"

[tools.book_appointment]
action = "override"
result = '{"booked": true}'
"""))
    assert policy.rule_for("check_availability").action == "approve"
    assert policy.rule_for("book_appointment").result == '{"booked": true}'
    fallback = policy.rule_for("refund")
    assert (fallback.action, fallback.timeout_seconds, fallback.reason) == ("hold", 12, "No one answered.")


def test_no_file_at_the_default_location_uses_the_default_action():
    assert load_policy(default_action="approve").rule_for("anything").action == "approve"
    assert Policy.default().rule_for("x").action == "hold"


@pytest.mark.parametrize("text, key", [
    ('[tools.book]\nacton = "approve"\n', "tools.book.acton"),
    ('[tools.book]\naction = "maybe"\n', "tools.book.action"),
    ('[tools.book]\ntimeout_seconds = 0\n', "tools.book.timeout_seconds"),
    ('[tools.book]\naction = "override"\n', "tools.book"),
    ('[tools.book]\non_timeout = "hold"\n', "tools.book.on_timeout"),
    ("[tools.book\n", "not valid TOML"),
])
def test_bad_policy_names_file_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert str(path) in str(info.value) and key in str(info.value)


def test_missing_explicit_policy_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nope.toml")
