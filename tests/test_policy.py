"""The tool-call policy file: per-tool rules plus a default; bad files name file and key."""

import pytest

from console.config import ConfigError
from console.core.policy import Policy, load_policy


def write(tmp_path, text):
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_rules_and_default(tmp_path):
    policy = load_policy(
        write(
            tmp_path,
            """
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
""",
        )
    )
    assert policy.rule_for("check_availability").action == "approve"
    assert policy.rule_for("book_appointment").result == '{"booked": true}'
    fallback = policy.rule_for("refund")
    assert (fallback.action, fallback.timeout_seconds, fallback.reason) == ("hold", 12, "No one answered.")


def test_no_file_at_the_default_location_uses_the_default_action():
    assert load_policy(default_action="approve").rule_for("anything").action == "approve"
    assert Policy.default().rule_for("x").action == "hold"


@pytest.mark.parametrize(
    "text, key",
    [
        ('[tools.book]\nacton = "approve"\n', "tools.book.acton"),
        ('[tools.book]\naction = "maybe"\n', "tools.book.action"),
        ("[tools.book]\ntimeout_seconds = 0\n", "tools.book.timeout_seconds"),
        ('[tools.book]\naction = "override"\n', "tools.book"),
        ('[tools.book]\non_timeout = "hold"\n', "tools.book.on_timeout"),
        ("[tools.book\n", "not valid TOML"),
    ],
)
def test_bad_policy_names_file_and_key(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert str(path) in str(info.value) and key in str(info.value)


def test_missing_explicit_policy_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_policy(tmp_path / "nope.toml")


# --- issue 12: policy files of any shape are one paragraph naming file and key, exit 2


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"tools = 3\n", "key 'tools' should be a table"),
        (b'[[tools]]\naction = "hold"\n', "key 'tools' should be a table"),
        (b'tools = "approve"\n', "key 'tools' should be a table"),
        (b"[tools]\ndefault = 3\n", "key 'tools.default' should be a table"),
        (b"[tools.book]\nresult = 3\n", "key 'tools.book.result' should be a valid string (got 3)"),
        (b"[tools.book]\ntimeout_seconds = inf\n", "key 'tools.book.timeout_seconds' should be a finite number"),
        (b'action = "hold"\n', "key 'action' is not a known policy key (only [tools.NAME] tables)"),
        (b'[tools.book]\nreason = "\xff"\n', "not UTF-8 text (byte 0xff at line 2, column 11)"),
    ],
)
def test_any_bad_policy_is_one_line_naming_file_and_key(tmp_path, content, expected):
    path = tmp_path / "policy.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def test_serve_with_an_array_of_tools_exits_2(tmp_path, capsys):
    from console.cli import main

    path = write(tmp_path, '[[tools]]\nname = "book"\naction = "approve"\n')
    assert main(["serve", "--port", "0", "--policy", str(path), "--db", str(tmp_path / "h.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"voice-console: bad tool-call policy: {path}: key 'tools' should be a table")


def test_console_with_a_bad_policy_in_the_config_dir_exits_2_before_the_ui(capsys):
    from console.cli import main
    from console.core.policy import default_policy_path

    default_policy_path().parent.mkdir(parents=True)
    default_policy_path().write_text("tools = 3\n")
    assert main([]) == 2
    assert f"{default_policy_path()}: key 'tools'" in capsys.readouterr().err


def test_a_file_without_tools_uses_the_default_action(tmp_path):
    assert load_policy(write(tmp_path, "# nothing yet\n"), default_action="approve").rule_for("x").action == "approve"
