"""`voice-console keys`: in-memory keyring (conftest), no keyring, null keyring, and `keys test vapi`."""

from __future__ import annotations

import argparse
import base64
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import keyring
import keyring.backend
import keyring.backends.fail
import keyring.backends.null
import pytest

import console.commands.keys
from console.commands.keys import register as add_keys_parser
from console.commands.keys import run_keys, run_keys_async
from console.core.http_types import Request, Response
from console.receiver.http import HttpServer
from console.secrets import SERVICE, SecretStore
from console.services.keys import provider_keys

SECRET = "sk-live-super-secret-value-42"
GOOD_KEY = "sk-good-key-1234"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="voice-console")
    add_keys_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["keys", *argv])


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(
    *argv: str, stdin: io.StringIO | None = None, env: dict[str, str] | None = None, store: SecretStore | None = None
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_keys(
        parse(*argv), secret_store=store or SecretStore(env or {}), stdin=stdin or io.StringIO(""), out=out, err=err
    )
    return code, out.getvalue(), err.getvalue()


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file()]


def test_set_from_piped_stdin_stores_in_the_keyring_and_never_echoes(isolated_environment: Any) -> None:
    code, out, err = run("set", "vapi", "--name", "api_key", stdin=io.StringIO(SECRET + "\n"))
    assert code == 0, err
    assert isolated_environment.store[(SERVICE, "vapi_api_key")] == SECRET
    assert "Stored vapi_api_key in the OS keyring" in out
    assert SECRET not in out + err


def test_set_single_key_provider_and_full_name(isolated_environment: Any) -> None:
    assert run("set", "retell", stdin=io.StringIO("key_abc\n"))[0] == 0
    assert run("set", "twilio", "--name", "twilio_auth_token", stdin=io.StringIO("tok\n"))[0] == 0
    assert isolated_environment.store == {(SERVICE, "retell_api_key"): "key_abc", (SERVICE, "twilio_auth_token"): "tok"}


def test_set_asks_which_key_on_a_tty_and_reads_it_hidden(
    isolated_environment: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []

    def fake_getpass(prompt: str, stream: Any = None) -> str:
        prompts.append(prompt)
        return SECRET

    monkeypatch.setattr(console.commands.keys.getpass, "getpass", fake_getpass)
    code, out, err = run("set", "vapi", stdin=Tty("2\n"))
    assert code == 0, err
    assert "1. vapi_api_key" in err and "2. vapi_webhook_secret" in err
    assert prompts == ["vapi_webhook_secret (input hidden): "]
    assert isolated_environment.store == {(SERVICE, "vapi_webhook_secret"): SECRET}
    assert SECRET not in out + err


def test_set_usage_errors_exit_2_and_store_nothing(isolated_environment: Any) -> None:
    code, _, err = run("set", "vapi", stdin=io.StringIO(SECRET + "\n"))
    assert code == 2 and "--name" in err and SECRET not in err
    code, _, err = run("set", "vapi", "--name", "password", stdin=io.StringIO(SECRET + "\n"))
    assert code == 2 and "vapi_api_key, vapi_webhook_secret" in err
    code, _, err = run("set", "retell", stdin=io.StringIO("\n"))
    assert code == 2 and "no value" in err
    code, _, err = run("set", "twilio", stdin=Tty("9\n"))
    assert code == 2
    assert isolated_environment.store == {}


def test_secret_values_are_not_accepted_as_arguments() -> None:
    with pytest.raises(SystemExit):
        parse("set", "vapi", "--name", "api_key", SECRET)


def test_set_notes_an_env_override(isolated_environment: Any) -> None:
    code, out, _ = run("set", "retell", stdin=io.StringIO("k\n"), env={"VOICE_CONSOLE_RETELL_API_KEY": "from-env"})
    assert code == 0 and "VOICE_CONSOLE_RETELL_API_KEY is set" in out and "from-env" not in out


def test_list_shows_sources_never_values(isolated_environment: Any) -> None:
    isolated_environment.store[(SERVICE, "twilio_account_sid")] = "AC123"
    isolated_environment.store[(SERVICE, "vapi_api_key")] = SECRET
    env = {"VOICE_CONSOLE_VAPI_API_KEY": "env-secret-value"}
    code, out, err = run("list", env=env)
    assert code == 0, err
    lines = dict(line.split(None, 1) for line in out.strip().splitlines())
    every_key = [name for names in provider_keys().values() for name in names]
    assert lines == {
        **dict.fromkeys(every_key, "none"),
        "vapi_api_key": "env (VOICE_CONSOLE_VAPI_API_KEY)",
        "twilio_account_sid": "keyring",
    }
    assert SECRET not in out + err and "env-secret-value" not in out + err and "AC123" not in out
    code, out, _ = run("list", "twilio")
    listed = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert code == 0 and list(listed) == list(provider_keys()["twilio"])
    assert listed["twilio_account_sid"] == "keyring" and listed["twilio_auth_token"] == "none"


def test_delete_one_or_all_of_a_provider(isolated_environment: Any) -> None:
    isolated_environment.store[(SERVICE, "vapi_api_key")] = "a"
    isolated_environment.store[(SERVICE, "vapi_webhook_secret")] = "b"
    code, out, _ = run("delete", "vapi", "--name", "webhook_secret")
    assert code == 0 and "Deleted vapi_webhook_secret" in out
    assert isolated_environment.store == {(SERVICE, "vapi_api_key"): "a"}
    code, out, _ = run("delete", "vapi")
    assert code == 0 and "Deleted vapi_api_key" in out and "vapi_webhook_secret was not in the keyring" in out
    assert isolated_environment.store == {}


@pytest.mark.parametrize(
    "argv",
    [("set", "vapi", "--name", "api_key"), ("delete", "twilio"), ("list",), ("test", "vapi"), ("test", "twilio")],
)
def test_no_keyring_every_command_explains_and_writes_no_file(argv: tuple[str, ...], tmp_path: Path) -> None:
    keyring.set_keyring(keyring.backends.fail.Keyring())  # conftest restores the previous backend
    stdin = io.StringIO(SECRET + "\n")
    code, out, err = run(*argv, stdin=stdin)
    assert code == (0 if argv == ("list",) else 1)  # listing works from the environment alone
    assert "No usable OS keyring" in err and "VOICE_CONSOLE_VAPI_API_KEY" in err and "keyring backend" in err
    assert "Traceback" not in err and SECRET not in out + err
    assert stdin.tell() == 0  # it did not even ask for the value
    assert not any(SECRET in p.read_text(errors="ignore") for p in files_under(tmp_path))


def test_null_keyring_is_not_mistaken_for_a_store() -> None:
    keyring.set_keyring(keyring.backends.null.Keyring())
    code, _, err = run("set", "retell", stdin=io.StringIO(SECRET + "\n"))
    assert code == 1 and "stores nothing" in err


def test_list_without_keyring_still_shows_env_keys_and_succeeds() -> None:
    keyring.set_keyring(keyring.backends.fail.Keyring())
    code, out, err = run("list", "vapi", env={"VOICE_CONSOLE_VAPI_API_KEY": "x"})
    assert code == 0, err
    assert "the OS keyring is absent, so only the environment was read" in err and "No usable OS keyring" in err
    assert "Nothing was written" not in err  # listing writes nothing anyway
    assert out.split() == ["vapi_api_key", "env", "(VOICE_CONSOLE_VAPI_API_KEY)", "vapi_webhook_secret", "none"]


class SlowKeyring(keyring.backend.KeyringBackend):
    """Blocks like a keyring waiting on an unlock prompt."""

    @keyring.backend.properties.classproperty
    def priority(cls) -> float:  # type: ignore[override]
        raise RuntimeError("test-only backend")

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def get_password(self, service: str, username: str) -> str | None:
        self.release.wait(5)
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self.release.wait(5)

    def delete_password(self, service: str, username: str) -> None:
        self.release.wait(5)


def test_a_hanging_keyring_times_out_instead_of_hanging_the_command() -> None:
    slow = SlowKeyring()
    keyring.set_keyring(slow)
    started = time.monotonic()
    try:
        code, _, err = run("set", "retell", stdin=io.StringIO("k\n"), store=SecretStore({}, timeout_s=0.2))
    finally:
        slow.release.set()
    assert code == 1 and "did not answer within 0.2 s" in err
    assert time.monotonic() - started < 2


def test_no_keyring_in_a_subprocess_has_no_traceback() -> None:
    script = (
        "import argparse, sys\n"
        "from console.commands.keys import register as add_keys_parser, run_keys\n"
        "p = argparse.ArgumentParser(); add_keys_parser(p.add_subparsers(dest='command'))\n"
        "sys.exit(run_keys(p.parse_args(['keys', 'set', 'retell'])))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICE_CONSOLE_")}
    env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=SECRET + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=Path(__file__).parent.parent,
    )
    assert result.returncode == 1, result.stderr
    assert "No usable OS keyring" in result.stderr and "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr


# keys test vapi, against a local stand-in for api.vapi.ai


@pytest.fixture
async def vapi_api() -> AsyncIterator[tuple[HttpServer, list[Request]]]:
    seen: list[Request] = []

    async def handler(request: Request) -> Response:
        seen.append(request)
        if request.header("authorization") != f"Bearer {GOOD_KEY}":
            return Response.json(401, {"statusCode": 401, "error": "Unauthorized", "message": "Invalid Key."})
        return Response.json(200, [{"id": "a1", "name": "Front desk"}])

    server = HttpServer(handler, port=0)
    await server.start()
    yield server, seen
    await server.close()


async def run_test(server_url: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_keys_async(
        parse("test", "vapi"),
        secret_store=SecretStore(env or {}),
        stdin=io.StringIO(""),
        out=out,
        err=err,
        base_urls={"vapi": server_url},
    )
    return code, out.getvalue(), err.getvalue()


async def test_keys_test_vapi_ok(vapi_api: Any, isolated_environment: Any) -> None:
    server, seen = vapi_api
    isolated_environment.store[(SERVICE, "vapi_api_key")] = GOOD_KEY
    code, out, err = await run_test(server.url)
    assert code == 0, err
    assert f"vapi_api_key (keyring): ok, accepted by {server.url}" in out
    assert seen[0].method == "GET" and seen[0].target == "/assistant?limit=1"
    assert GOOD_KEY not in out + err


async def test_keys_test_vapi_refused_from_env(vapi_api: Any) -> None:
    server, _ = vapi_api
    code, out, err = await run_test(server.url, env={"VOICE_CONSOLE_VAPI_API_KEY": "sk-bad"})
    assert code == 1 and "vapi_api_key (env): refused" in err and "401" in err
    assert "sk-bad" not in out + err


async def test_keys_test_vapi_unreachable(isolated_environment: Any) -> None:
    server = HttpServer(lambda request: None, port=0)  # type: ignore[arg-type, return-value]
    await server.start()
    url = server.url
    await server.close()
    isolated_environment.store[(SERVICE, "vapi_api_key")] = GOOD_KEY
    code, _, err = await run_test(url)
    assert code == 1 and "unreachable" in err and GOOD_KEY not in err


async def test_keys_test_vapi_without_a_key(vapi_api: Any) -> None:
    server, seen = vapi_api
    code, out, err = await run_test(server.url)
    assert code == 1 and "vapi_api_key is not set" in err and seen == []
    assert "vapi_webhook_secret: not set" in out


@pytest.fixture
async def retell_twilio_api() -> AsyncIterator[tuple[HttpServer, list[Request]]]:
    seen: list[Request] = []
    sid, token = "AC" + "0" * 32, "twilio-token-1"
    basic = "Basic " + base64.b64encode(f"{sid}:{token}".encode()).decode()

    async def handler(request: Request) -> Response:
        seen.append(request)
        if request.path == "/v2/list-agents" and request.method == "POST":
            if request.header("authorization") != "Bearer key_retell_good":
                return Response.json(401, {"status": "error", "message": "Invalid API key"})
            return Response.json(200, {"items": [], "has_more": False})
        if request.path == f"/2010-04-01/Accounts/{sid}.json":
            if request.header("authorization") != basic:
                return Response.json(401, {"code": 20003, "message": "Authenticate", "status": 401})
            return Response.json(200, {"sid": sid, "status": "active"})
        return Response.json(404, {"message": "not found"})

    server = HttpServer(handler, port=0)
    await server.start()
    yield server, seen
    await server.close()


async def run_other(provider: str, url: str, env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_keys_async(
        parse("test", provider),
        secret_store=SecretStore(env),
        stdin=io.StringIO(""),
        out=out,
        err=err,
        base_urls={"retell": url, "twilio": url},
    )
    return code, out.getvalue(), err.getvalue()


async def test_keys_test_retell_and_twilio(retell_twilio_api: Any, isolated_environment: Any) -> None:
    server, seen = retell_twilio_api
    code, out, err = await run_other("retell", server.url, {"VOICE_CONSOLE_RETELL_API_KEY": "key_retell_good"})
    assert code == 0 and "retell_api_key (env): ok" in out, err
    code, out, err = await run_other("retell", server.url, {"VOICE_CONSOLE_RETELL_API_KEY": "key_retell_bad"})
    assert code == 1 and "refused" in err and "key_retell_bad" not in out + err

    isolated_environment.store[(SERVICE, "twilio_account_sid")] = "AC" + "0" * 32
    isolated_environment.store[(SERVICE, "twilio_auth_token")] = "twilio-token-1"
    code, out, err = await run_other("twilio", server.url, {})
    assert code == 0 and "twilio_auth_token (keyring/keyring): ok" in out, err
    isolated_environment.store[(SERVICE, "twilio_auth_token")] = "wrong"
    code, out, err = await run_other("twilio", server.url, {})
    assert code == 1 and "refused" in err and "wrong" not in out + err
    del isolated_environment.store[(SERVICE, "twilio_auth_token")]
    code, _, err = await run_other("twilio", server.url, {})
    assert code == 1 and "twilio_auth_token is not set" in err
