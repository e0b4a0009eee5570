"""`probe_keys` returns what it found (exit code and ordered lines, each marked out/err) instead of
printing: the CLI prints it, the TUI's keys screen shows it. Real HTTP on loopback, real SecretStore."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest

from console.commands.keys import run_keys_async
from console.core.http_types import Request, Response
from console.receiver.http import HttpServer
from console.secrets import SecretStore
from console.services.keys import EXIT_FAIL, EXIT_OK, EXIT_USAGE, KeyProbe, probe_keys

GOOD_KEY = "sk-retell-probe-good"


@pytest.fixture
async def retell_api() -> AsyncIterator[HttpServer]:
    async def handler(request: Request) -> Response:
        if request.header("authorization") != f"Bearer {GOOD_KEY}":
            return Response.json(401, {"message": "Invalid API key"})
        return Response.json(200, [])

    server = HttpServer(handler, port=0)
    await server.start()
    yield server
    await server.close()


async def probe(provider: str, env: dict[str, str], base_urls: dict[str, str] | None = None) -> KeyProbe:
    return await probe_keys(provider, SecretStore(env), base_urls)


async def test_accepted_key_is_one_ok_line_on_stdout(retell_api: HttpServer) -> None:
    result = await probe("retell", {"VOICE_CONSOLE_RETELL_API_KEY": GOOD_KEY}, base_urls={"retell": retell_api.url})
    assert result.ok and result.code == EXIT_OK
    assert [(line.text, line.error) for line in result.lines] == [
        (f"retell_api_key (env): ok, accepted by {retell_api.url}.\n", False)
    ]


async def test_refused_key_is_an_error_line_without_the_key(retell_api: HttpServer) -> None:
    result = await probe("retell", {"VOICE_CONSOLE_RETELL_API_KEY": "sk-wrong"}, base_urls={"retell": retell_api.url})
    assert result.code == EXIT_FAIL and not result.ok
    assert [line.error for line in result.lines] == [True]
    assert f"refused by {retell_api.url} (401)" in result.text() and "sk-wrong" not in result.text()


async def test_vapi_notes_the_webhook_secret_on_stdout_before_the_missing_key_on_stderr() -> None:
    result = await probe("vapi", {"VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": "whsec-probe"})
    assert result.code == EXIT_FAIL
    assert result.lines[0].error is False and result.lines[0].text.startswith("vapi_webhook_secret: set (env)")
    assert result.lines[-1].error is True and "vapi_api_key" in result.lines[-1].text
    assert "whsec-probe" not in result.text()


async def test_bad_usage_and_unknown_provider_are_exit_2() -> None:
    sid = await probe(
        "twilio", {"VOICE_CONSOLE_TWILIO_ACCOUNT_SID": "not-a-sid", "VOICE_CONSOLE_TWILIO_AUTH_TOKEN": "tok-probe"}
    )
    assert sid.code == EXIT_USAGE and sid.text().startswith("voice-console keys: twilio_account_sid should look like")
    unknown = await probe("nope", {})
    assert unknown.code == EXIT_USAGE and "unknown provider 'nope'" in unknown.text()


async def test_cli_prints_the_probe_lines_to_their_streams(retell_api: HttpServer) -> None:
    import argparse

    out, err = io.StringIO(), io.StringIO()
    args = argparse.Namespace(keys_command="test", provider="retell")
    env = {"VOICE_CONSOLE_RETELL_API_KEY": "sk-wrong"}
    code = await run_keys_async(
        args,
        secret_store=SecretStore(env),
        stdin=io.StringIO(""),
        out=out,
        err=err,
        base_urls={"retell": retell_api.url},
    )
    expected = await probe("retell", env, base_urls={"retell": retell_api.url})
    assert code == expected.code == EXIT_FAIL
    assert out.getvalue() == "" and err.getvalue() == expected.text()
