"""The whole loop with no account, through the real commands: `serve`, `platform`,
`dial`, then `history` — a dialed call's whole timeline lands in the history."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console.simulator.retell import AGENT_ID, SIM_RETELL_KEY
from tests.helpers.cli import cli_env, history
from tests.helpers.secrets import SIMULATOR_KEY

pytestmark = pytest.mark.e2e  # serve, platform and dial as subprocesses

POLICY = '[tools.default]\naction = "override"\nresult = \'{"available": true}\'\n'


class Loop:
    """`serve` and `platform` running, and `dial` pointed at the platform."""

    def __init__(self, db: Path, platform_url: str, env: dict[str, str]) -> None:
        self.db, self.platform_url = db, platform_url
        self.env = {**env, "VOICE_CONSOLE_VAPI_BASE_URL": platform_url, "VOICE_CONSOLE_VAPI_API_KEY": SIMULATOR_KEY}

    def dial(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess:
        env = {**self.env, "VOICE_CONSOLE_CONFIG": str(config)} if config else self.env
        return subprocess.run(
            [sys.executable, "-m", "console", "dial", *args], env=env, capture_output=True, text=True, timeout=60
        )

    def calls(self) -> list[dict]:
        """The calls the platform was asked to place, as it stored them."""
        return httpx.get(f"{self.platform_url}/call", headers={"authorization": f"Bearer {SIMULATOR_KEY}"}).json()


@pytest.fixture
def loop(tmp_path: Path) -> Iterator[Loop]:
    db = tmp_path / "history.db"
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = cli_env(db)
    serve = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "--port", "0", "--policy", str(policy)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    receiver = re.search(r"listening on (\S+)", serve.stderr.readline()).group(1)
    platform = subprocess.Popen(
        [sys.executable, "-m", "console", "platform", "--speed", "25", "--webhook", receiver + "/webhook/vapi"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield Loop(db, re.search(r"platform on (\S+)", platform.stdout.readline()).group(1), env)
    finally:
        platform.send_signal(signal.SIGINT)
        serve.send_signal(signal.SIGTERM)
        platform.communicate(timeout=30)
        serve.communicate(timeout=30)
    assert serve.returncode == 0


def test_dial_through_the_simulated_platform_into_history(loop: Loop):
    placed = loop.dial("--to", "+14155550142", "--json")
    assert placed.returncode == 0, placed.stderr
    call = json.loads(placed.stdout)
    assert call["status"] == "queued" and "/control" not in json.dumps(call["monitor"])  # masked

    for _ in range(300):
        listed = json.loads(history(loop.db, "calls", "--json").stdout or "[]")
        if any(c["call_id"] == call["id"] and c["status"] == "ended" for c in listed):
            detail = json.loads(history(loop.db, "show", call["id"], "--json").stdout)
            if any(e["kind"] == "call.ended" for e in detail["events"]):
                break
        time.sleep(0.1)
    kinds = {e["kind"] for e in detail["events"]}
    assert {
        "transcript.partial",
        "transcript.final",
        "barge_in",
        "tool.requested",
        "tool.decided",
        "call.ended",
    } <= kinds
    assert all(t["decision"] == "overridden" and t["by"] == "rule" for t in detail["tool_calls"])
    # The assistant spoke the tool's actual answer.
    assert any(
        "available" in e.get("text", "").lower() or "true" in e.get("text", "").lower()
        for e in detail["events"]
        if e["kind"] == "transcript.final" and e["role"] == "assistant"
    )


def test_dial_takes_numbers_as_people_type_them_and_sends_e164(loop: Loop):
    # A number no network can route is refused with the reason, and nothing is sent.
    for typed, reason in (
        ("+10000", "it is too short for its country"),
        ("0415 555 0142", "(read as a US number; start with + and the country code otherwise)"),
    ):
        refused = loop.dial("--to", typed)
        assert refused.returncode == 2, refused.stdout
        assert f"the --to number {typed!r} is not a valid phone number" in refused.stderr and reason in refused.stderr
        assert "Traceback" not in refused.stderr
    assert loop.calls() == []

    # National input, read in [dial] default_region (US unless configured), shown with its country.
    placed = loop.dial("--to", "(415) 555-0142", "--from", "650-555-0199")
    assert placed.returncode == 0, placed.stderr
    assert "to +1 415-555-0142 · United States from +1 650-555-0199 · United States" in placed.stdout
    (call,) = loop.calls()
    assert call["customer"]["number"] == "+14155550142"
    assert (
        call["phoneNumberId"]
        == httpx.get(f"{loop.platform_url}/phone-number", headers={"authorization": f"Bearer {SIMULATOR_KEY}"}).json()[
            0
        ]["id"]
    )

    # In another region, configured: a London number typed the British way.
    config = loop.db.parent / "config.toml"
    config.write_text('[dial]\ndefault_region = "GB"\n')
    london = loop.dial("--to", "020 7183 8750", config=config)
    assert london.returncode == 0, london.stderr
    assert "to +44 20 7183 8750 · United Kingdom" in london.stdout
    assert "+442071838750" in [c["customer"]["number"] for c in loop.calls()]

    unknown = loop.dial("--to", "+14155550142", "--from", "+14155550100")
    assert unknown.returncode == 1
    assert (
        "no phone number +1 415-555-0100 · United States to call from; its numbers are +16505550199" in unknown.stderr
    )


def test_dial_without_a_key_says_so_once(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "console", "dial", "--to", "+14155550142"],
        env=cli_env(tmp_path / "h.db"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "no Vapi API key" in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("VOICE_CONSOLE_VAPI_API_KEY") == 1, result.stderr  # the advice, once


def test_a_retell_call_through_the_real_commands(tmp_path: Path):
    """`serve` with the Retell key, `platform --provider retell` posting to it, `dial --provider
    retell`, then `history`: the call ends in the history with the barge-in from its word times."""
    db = tmp_path / "history.db"
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = {**cli_env(db), "VOICE_CONSOLE_RETELL_API_KEY": SIM_RETELL_KEY}
    serve = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "--port", "0", "--policy", str(policy)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    receiver = re.search(r"listening on (\S+)", serve.stderr.readline()).group(1)
    platform = subprocess.Popen(
        [sys.executable, "-m", "console", "platform", "--provider", "retell", "--speed", "25", "--webhook", receiver],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = re.search(r"platform on (\S+)", platform.stdout.readline()).group(1)
        placed = subprocess.run(
            [sys.executable, "-m", "console", "dial", "--provider", "retell", "--to", "+14155550142", "--json"],
            env={**env, "VOICE_CONSOLE_RETELL_BASE_URL": url},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert placed.returncode == 0, placed.stderr
        call = json.loads(placed.stdout)
        assert call["call_status"] == "registered" and call["to_number"] == "+14155550142"
        detail = None
        for _ in range(300):
            shown = history(db, "show", call["call_id"], "--json")
            if shown.returncode == 0:
                detail = json.loads(shown.stdout)
                if any(e["kind"] == "call.ended" for e in detail["events"]):
                    break
            time.sleep(0.1)
    finally:
        platform.send_signal(signal.SIGINT)
        serve.send_signal(signal.SIGTERM)
        platform.communicate(timeout=30)
        serve.communicate(timeout=30)
    assert detail is not None and detail["call"]["provider"] == "retell" and detail["call"]["status"] == "ended"
    assert [e["cut_text"] for e in detail["events"] if e["kind"] == "barge_in"] == ["Before I"]
    assert detail["tool_calls"] and all(t["decision"] == "overridden" for t in detail["tool_calls"])


def test_voice_console_call_steers_a_live_retell_call_through_its_api(tmp_path: Path):
    """`platform --provider retell`, `serve` pointed at it, `dial`, then `call context` and `call end`
    (the call is not tapped: context goes in with update-live-call, end is stop-call)."""
    db = tmp_path / "history.db"
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    env = {**cli_env(db), "VOICE_CONSOLE_RETELL_API_KEY": SIM_RETELL_KEY}
    platform = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "console",
            "platform",
            "--provider",
            "retell",
            "--speed",
            "0.5",
            "--webhook",
            "http://127.0.0.1:9/",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = re.search(r"platform on (\S+)", platform.stdout.readline()).group(1)
    env["VOICE_CONSOLE_RETELL_BASE_URL"] = url
    serve = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "--port", "0", "--policy", str(policy)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        receiver = re.search(r"listening on (\S+)", serve.stderr.readline()).group(1)
        # The agent's webhooks go to this serve (the platform started before it knew the port).
        pointed = httpx.patch(
            f"{url}/update-agent/{AGENT_ID}",
            json={"webhook_url": receiver + "/webhook/retell"},
            headers={"authorization": f"Bearer {SIM_RETELL_KEY}"},
            timeout=10,
        )
        assert pointed.status_code == 200, pointed.text
        placed = subprocess.run(
            [sys.executable, "-m", "console", "dial", "--provider", "retell", "--to", "+14155550142", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert placed.returncode == 0, placed.stderr
        call_id = json.loads(placed.stdout)["call_id"]
        listed = None
        for _ in range(300):
            listed = subprocess.run(
                [sys.executable, "-m", "console", "call", "list"], env=env, capture_output=True, text=True
            )
            if call_id in listed.stdout:
                break
            time.sleep(0.1)
        assert listed is not None and call_id in listed.stdout and "(through the tap)" not in listed.stdout
        context = subprocess.run(
            [sys.executable, "-m", "console", "call", "context", call_id, "The caller is a VIP."],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert context.returncode == 0, context.stderr
        assert context.stdout.strip() == f"{call_id}: context sent"
        ended = subprocess.run(
            [sys.executable, "-m", "console", "call", "end", call_id[:12]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ended.returncode == 0, ended.stderr
        detail = None
        for _ in range(300):
            shown = history(db, "show", call_id, "--json")
            if shown.returncode == 0:
                detail = json.loads(shown.stdout)
                if any(e["kind"] == "call.ended" for e in detail["events"]):
                    break
            time.sleep(0.1)
    finally:
        platform.send_signal(signal.SIGINT)
        serve.send_signal(signal.SIGTERM)
        platform.communicate(timeout=30)
        serve.communicate(timeout=30)
    assert detail is not None and detail["call"]["status"] == "ended"
    assert "The caller is a VIP." in json.dumps(detail)


def test_a_twilio_call_through_the_real_commands(tmp_path: Path):
    """`platform --provider twilio`, `serve` with its public URL and the simulated account's token,
    `dial --provider twilio`, then `history`: the call's TwiML was fetched signed, its stream ran
    through the tap, and its status callbacks took it to the end."""
    import socket

    from console.simulator.twilio import ACCOUNT_SID, SIM_TWILIO_TOKEN

    db = tmp_path / "history.db"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **cli_env(db),
        "VOICE_CONSOLE_TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "VOICE_CONSOLE_TWILIO_AUTH_TOKEN": SIM_TWILIO_TOKEN,
        "VOICE_CONSOLE_TWILIO_STREAM_TOKEN": "stream-token-for-the-loop",
    }
    platform = subprocess.Popen(
        [sys.executable, "-m", "console", "platform", "--provider", "twilio", "--speed", "25"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = re.search(r"platform on (\S+)", platform.stdout.readline()).group(1)
    env["VOICE_CONSOLE_TWILIO_BASE_URL"] = url
    public = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "console", "serve", "--port", str(port), "--public-url", public],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening on" in serve.stderr.readline()
        placed = subprocess.run(
            [
                sys.executable,
                "-m",
                "console",
                "dial",
                "--provider",
                "twilio",
                "--to",
                "+14155550142",
                "--public-url",
                public,
                "--json",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert placed.returncode == 0, placed.stderr
        sid = json.loads(placed.stdout)["sid"]
        detail = None
        for _ in range(300):
            shown = history(db, "show", sid, "--json")
            if shown.returncode == 0:
                detail = json.loads(shown.stdout)
                if detail["call"]["status"] == "ended":
                    break
            time.sleep(0.1)
    finally:
        platform.send_signal(signal.SIGINT)
        serve.send_signal(signal.SIGTERM)
        platform.communicate(timeout=30)
        serve.communicate(timeout=30)
    assert detail is not None and detail["call"]["provider"] == "twilio" and detail["call"]["status"] == "ended"
    kinds = [e.get("type") or e["kind"] for e in detail["events"]]
    assert "stream.start" in kinds and "stream.closed" in kinds  # the stream came through the tap
