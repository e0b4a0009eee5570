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
