"""Settings: file, env and flags; bad input exits 2 with one readable paragraph."""

import subprocess
import sys
from pathlib import Path

import pytest

from console.config import ConfigError, load_settings


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "console", *args], capture_output=True, text=True, env=env, timeout=60)


def test_defaults_without_a_file(tmp_path):
    settings = load_settings(env={})
    assert settings.receiver.host == "127.0.0.1"
    assert settings.receiver.port == 8765
    assert settings.receiver.max_body_bytes == 1024 * 1024
    assert settings.vapi.webhook.auth == "secret"


def test_file_env_and_flags_in_order(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('[receiver]\nport = 9000\n[storage]\ndb = "/from/file.db"\n[vapi.webhook]\nauth = "hmac"\n')
    settings = load_settings(file, env={"VOICE_CONSOLE_DB": "/from/env.db"}, overrides={"receiver": {"port": 9100}})
    assert settings.receiver.port == 9100
    assert settings.db_path == Path("/from/env.db")
    assert settings.vapi.webhook.auth == "hmac"
    assert settings.source == file


def test_config_env_var_names_the_file(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text("[receiver]\nport = 9001\n")
    assert load_settings(env={"VOICE_CONSOLE_CONFIG": str(file)}).receiver.port == 9001


@pytest.mark.parametrize(
    "content, expected",
    [
        ("[receiver]\nport = 'eighty'\n", "receiver.port"),
        ("[receiver]\nprot = 80\n", "receiver.prot"),
        ("[vapi.webhook]\nauth = 'signature'\n", "vapi.webhook.auth"),
        ("[receiver\nport = 1", "not valid TOML"),
        ("[receiver]\npublic_url = 'ftp://x'\n", "receiver.public_url"),
    ],
)
def test_bad_files_name_file_and_key(tmp_path, content, expected):
    file = tmp_path / "bad.toml"
    file.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_settings(file, env={})
    assert str(file) in str(info.value) and expected in str(info.value)


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})


def test_cli_bad_config_exits_2_without_traceback(tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text("[receiver]\nport = 70000\n")
    result = run_cli("--config", str(file), "locate", "db")
    assert result.returncode == 2
    assert "receiver.port" in result.stderr and str(file) in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_locate(tmp_path):
    result = run_cli("locate", "db", env_extra={"VOICE_CONSOLE_DB": str(tmp_path / "h.db")})
    assert result.returncode == 0 and result.stdout.strip() == str(tmp_path / "h.db")
    result = run_cli("locate", "config")
    assert result.returncode == 0 and result.stdout.strip().endswith("config.toml")


# --- issue 12: bad files of any shape are one paragraph, exit 2; the file is checked even under a flag


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"receiver = 3\n", "key 'receiver' should be a table"),
        (b"[[receiver]]\nport = 1\n", "key 'receiver' should be a table"),
        (b"vapi = { webhook = [1, 2] }\n", "key 'vapi.webhook' should be a table"),
        (b'[receiver]\nhost = "caf\xe9"\n', "not UTF-8 text (byte 0xe9 at line 2, column 12)"),
        (b"a = " + b"[" * 2000 + b"]" * 2000 + b"\n", "nested too deeply"),
        (b"[receiver]\nport = " + b"9" * 5000 + b"\n", "4300"),
        (
            b"[receiver]\nrequest_deadline_seconds = inf\n",
            "key 'receiver.request_deadline_seconds' should be a finite number",
        ),
        (b"[gate]\nfiller_after_seconds = nan\n", "key 'gate.filler_after_seconds' should be a finite number"),
        (
            b'[vapi.assistant_request.assistant]\nname = "A"\ncreated = 2024-05-01\n',
            "key 'vapi.assistant_request.assistant' holds the TOML date/time 2024-05-01, which JSON cannot carry",
        ),
        (b"[retell.call_inbound.metadata]\nscore = [1.5, -inf]\n", "key 'retell.call_inbound.metadata' holds -inf"),
        (b'[receiver]\n"po\\nrt" = 1\n', "key 'receiver.po\\nrt' is not a known setting"),
    ],
    ids=[
        "receiver-is-3",
        "array-of-receivers",
        "webhook-is-array",
        "latin-1",
        "deep-nesting",
        "huge-int",
        "inf",
        "nan",
        "date-in-json",
        "inf-in-json",
        "newline-in-key",
    ],
)
def test_any_bad_file_is_one_line_naming_file_and_key(tmp_path, content, expected):
    file = tmp_path / "bad.toml"
    file.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_settings(file, env={}, overrides={"receiver": {"port": 9000}})
    message = str(info.value)
    assert message.startswith(f"{file}: ") and expected in message
    assert "\n" not in message


def _main(capsys, *argv: str) -> tuple[int, str]:
    from console.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().err


def test_cli_table_where_a_value_is_and_a_flag_exits_2(tmp_path, capsys):
    file = tmp_path / "c.toml"
    file.write_text("receiver = 3\n")
    code, err = _main(capsys, "--config", str(file), "--port", "9000", "locate", "db")
    assert code == 2
    assert err.startswith("voice-console: bad configuration: ") and str(file) in err and "key 'receiver'" in err


def test_cli_bad_value_in_the_file_is_refused_even_when_a_flag_overrides_it(tmp_path, capsys):
    file = tmp_path / "c.toml"
    file.write_text('[receiver]\nport = "abc"\n')
    code, err = _main(capsys, "--config", str(file), "--port", "9000", "locate", "db")
    assert code == 2
    assert str(file) in err and "receiver.port" in err and "'abc'" in err


def test_cli_bad_flag_value_names_the_flag_not_the_file(tmp_path, capsys):
    file = tmp_path / "c.toml"
    file.write_text("[receiver]\nport = 9000\n")
    code, err = _main(capsys, "--config", str(file), "--port", "70000", "locate", "db")
    assert code == 2
    assert "--port: key 'receiver.port' should be less than or equal to 65535 (got 70000)" in err
    assert str(file) not in err
    code, err = _main(capsys, "serve", "--public-url", "ftp://tunnel.example", "--port", "0")
    assert code == 2 and "--public-url: key 'receiver.public_url' must start with http:// or https://" in err


def test_flags_and_env_apply_over_a_valid_file(tmp_path):
    file = tmp_path / "c.toml"
    file.write_text('[receiver]\nport = 9000\nhost = "0.0.0.0"\n[storage]\ndb = "/from/file.db"\n')
    settings = load_settings(
        file,
        env={"VOICE_CONSOLE_DB": "/from/env.db"},
        overrides={"receiver": {"port": 9100, "host": None}},
        flags={"receiver.port": "--port"},
    )
    assert (settings.receiver.port, settings.receiver.host, str(settings.db_path)) == (9100, "0.0.0.0", "/from/env.db")


def test_voice_console_command_reports_a_file_that_is_not_utf8(tmp_path):
    file = tmp_path / "latin1.toml"
    file.write_bytes('[twilio]\nvoice_twiml = "<Say>Grüß Gott</Say>"\n'.encode("latin-1"))
    command = Path(sys.executable).with_name("voice-console")
    result = subprocess.run(
        [str(command), "--config", str(file), "locate", "db"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"voice-console: bad configuration: {file}: this is not UTF-8 text")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
