"""No configured secret ever leaves the process: one distinctive value per provider
key and webhook secret, real traffic through the real `serve` (the simulator for
all three providers, tool calls decided over the control API, a wrongly-signed
request carrying the secrets), then every output is scanned: the SQLite files
(WAL included, while serve runs and after), serve's NDJSON and log, `history`
exports (jsonl, csv), `history show/calls/search --json`, `replay` (output and
the receiver it replays to), and screenshots of the TUI that received the same traffic. Vapi's
listen/control URLs (live-call capabilities) appear masked in exports and on screen.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from bench.soak import ServeProcess, serve_env
from console.config import ReceiverSettings, Settings, StorageSettings, VapiSettings
from console.core.policy import Policy, ToolRule
from console.providers.vapi import sign_vapi_request

SECRETS = {
    "VOICE_CONSOLE_VAPI_API_KEY": "vapikey-LEAKCHECK-7Qz1f0",
    "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": "vapihook-LEAKCHECK-9Kd3a2",
    "VOICE_CONSOLE_RETELL_API_KEY": "retellkey-LEAKCHECK-4Wm8c6",
    "VOICE_CONSOLE_TWILIO_ACCOUNT_SID": "AC0LEAKCHECK5Hn2b7e1d4c8f9a0b3c6d9",
    "VOICE_CONSOLE_TWILIO_AUTH_TOKEN": "twiliotok-LEAKCHECK-2Xp6e5",
}
PUBLIC_URL = "https://console.example.test"
# The capability part of a live call's URLs: must never be shown or exported.
LISTEN_URL = "wss://phone.example.test/LISTENCAP-3f9a1c/listen"
CONTROL_URL = "https://phone.example.test/CONTROLCAP-8b2e7d/control"
URL_CAPABILITIES = ("LISTENCAP-3f9a1c", "CONTROLCAP-8b2e7d")
LEAKY_TOOL = "leaky_lookup"
POLICY = (
    '[tools.default]\naction = "override"\nresult = \'{"ok": true}\'\n\n'
    f'[tools.{LEAKY_TOOL}]\naction = "hold"\ntimeout_seconds = 60\n'
)
VAPI_SECRET = SECRETS["VOICE_CONSOLE_VAPI_WEBHOOK_SECRET"]


def every_secret() -> str:
    return " ".join(SECRETS.values())


def signed(body: bytes) -> dict[str, str]:
    return {"content-type": "application/json", **sign_vapi_request(VapiSettings(), VAPI_SECRET, body)}


def vapi(message: dict) -> bytes:
    message.setdefault("timestamp", int(time.time() * 1000))
    return json.dumps({"message": message}).encode()


def leaky_messages(call_id: str, tool_call_id: str) -> list[bytes]:
    """Correctly signed messages whose content carries every secret and the monitor URLs."""
    monitor = {"listenUrl": LISTEN_URL, "controlUrl": CONTROL_URL}
    call = {"id": call_id, "monitor": monitor}
    tool = {
        "id": tool_call_id,
        "type": "function",
        "function": {
            "name": LEAKY_TOOL,
            "arguments": json.dumps({"token": SECRETS["VOICE_CONSOLE_TWILIO_AUTH_TOKEN"], "note": every_secret()}),
        },
    }
    return [
        vapi(
            {
                "type": "status-update",
                "status": "in-progress",
                "call": call,
                "assistant": {
                    "server": {
                        "url": "https://tools.example.test",
                        "headers": {
                            "x-vapi-secret": VAPI_SECRET,
                            "authorization": f"Bearer {SECRETS['VOICE_CONSOLE_VAPI_API_KEY']}",
                        },
                    }
                },
            }
        ),
        vapi(
            {
                "type": "transcript",
                "transcriptType": "final",
                "role": "user",
                "call": call,
                "transcript": f"my keys are {every_secret()}",
            }
        ),
        # An unmodelled type: kept verbatim as a raw event, monitor URLs and secrets included.
        vapi({"type": "monitor-debug", "call": call, "monitor": monitor, "echo": every_secret()}),
        vapi(
            {
                "type": "tool-calls",
                "call": call,
                "toolCallList": [tool],
                "toolWithToolCallList": [
                    {
                        "type": "function",
                        "function": {"name": LEAKY_TOOL},
                        "server": {"url": "https://tools.example.test", "timeoutSeconds": 60},
                        "toolCall": tool,
                    }
                ],
            }
        ),
    ]


def assert_clean(name: str, data: bytes | str, secrets: list[str], *, urls: bool = True) -> None:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    for secret in secrets:
        assert secret not in text, f"{name} contains the secret {secret[:12]}…"
    if urls:
        for capability in URL_CAPABILITIES:
            assert capability not in text, f"{name} shows a live-call URL unmasked ({capability})"


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "console", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_no_secret_in_database_logs_ndjson_exports_or_history(tmp_path: Path):
    db = tmp_path / "history.db"
    home = tmp_path / "home"
    env = serve_env(db, home, SECRETS)
    serve = ServeProcess(db, POLICY, env=env, args=("--public-url", PUBLIC_URL))
    call_id, tool_call_id = f"leak-call-{uuid.uuid4().hex[:6]}", f"call_leak_{uuid.uuid4().hex[:10]}"
    secrets = list(SECRETS.values())
    try:
        # Real simulated traffic for every provider, signed with the configured secrets.
        for provider in ("vapi", "retell", "twilio"):
            target = serve.url + "/webhook/vapi" if provider == "vapi" else serve.url
            extra = ("--public-url", PUBLIC_URL) if provider == "twilio" else ()
            run = cli(
                env,
                "simulate",
                "--target",
                target,
                "--provider",
                provider,
                "--scenario",
                "booking",
                "--calls",
                "2",
                "--concurrency",
                "2",
                "--speed",
                "40",
                *extra,
            )
            assert run.returncode == 0, (provider, run.stdout, run.stderr)

        state_file = home / "state" / "voice-console" / f"serve-{serve.url.rsplit(':', 1)[1]}.json"  # one per port
        control_token = json.loads(state_file.read_text())["token"]
        secrets.append(control_token)

        async def leaky_traffic() -> None:
            async with httpx.AsyncClient(base_url=serve.url, timeout=60) as client:
                *plain, tool_calls = leaky_messages(call_id, tool_call_id)
                for body in plain:
                    assert (await client.post("/webhook/vapi", content=body, headers=signed(body))).status_code == 200
                held = asyncio.create_task(client.post("/webhook/vapi", content=tool_calls, headers=signed(tool_calls)))
                # Wrongly signed, with the secrets in the body, the path and the headers.
                wrong = vapi(
                    {"type": "status-update", "status": "ringing", "call": {"id": call_id}, "note": every_secret()}
                )
                refused = await client.post(
                    f"/webhook/vapi?key={SECRETS['VOICE_CONSOLE_VAPI_API_KEY']}",
                    content=wrong,
                    headers={
                        "content-type": "application/json",
                        "x-vapi-secret": VAPI_SECRET + "-wrong",
                        "authorization": f"Bearer {SECRETS['VOICE_CONSOLE_RETELL_API_KEY']}",
                        "x-note": SECRETS["VOICE_CONSOLE_TWILIO_AUTH_TOKEN"],
                    },
                )
                assert refused.status_code == 401
                assert_clean("the 401 answer", refused.content, secrets)
                # The operator decides the held call over the control API, with a secret in the result.
                loop = asyncio.get_running_loop()
                deadline = time.monotonic() + 20
                while True:
                    decided = await loop.run_in_executor(
                        None,
                        lambda: cli(env, "decide", tool_call_id, "--override", json.dumps({"echo": every_secret()})),
                    )
                    if decided.returncode == 0 or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)
                assert decided.returncode == 0, decided.stderr
                assert_clean("decide's output", decided.stdout + decided.stderr, secrets)
                answer = await held
                assert answer.status_code == 200
                # What goes back to the platform is the operator's result: it is theirs to send.

        asyncio.run(leaky_traffic())
        # While serve runs the WAL holds the recent writes.
        wal = Path(str(db) + "-wal")
        assert wal.exists()
        for path in sorted(tmp_path.glob("history.db*")):
            assert_clean(f"{path.name} (serve running)", path.read_bytes(), secrets)
    finally:
        code = serve.stop()
    assert code == 0
    for path in sorted(tmp_path.glob("history.db*")):
        assert_clean(f"{path.name} (after stop)", path.read_bytes(), secrets)

    ndjson = serve.stdout_path.read_text()
    log = serve.stderr_path.read_text()
    assert '"kind":"tool.decided"' in ndjson and call_id in ndjson
    assert_clean("serve's NDJSON stdout", ndjson, secrets)
    assert_clean("serve's stderr log", log, secrets)

    exported = cli(env, "history", "export")
    assert exported.returncode == 0 and call_id in exported.stdout
    assert_clean("history export (jsonl)", exported.stdout, secrets)
    csv_out = tmp_path / "export.csv"
    assert cli(env, "history", "export", "--format", "csv", "--out", str(csv_out)).returncode == 0
    assert_clean("history export --format csv", csv_out.read_text(), secrets)
    # The masked form is there: scheme and host, nothing of the path.
    assert "wss://phone.example.test/…" in exported.stdout

    calls = cli(env, "history", "calls", "--json", "--limit", "100")
    assert calls.returncode == 0
    listed = json.loads(calls.stdout)
    assert {c["provider"] for c in listed} == {"vapi", "retell", "twilio"}
    assert_clean("history calls --json", calls.stdout, secrets)
    for call in listed:
        shown = cli(env, "history", "show", call["call_id"], "--json")
        assert shown.returncode == 0
        assert_clean(f"history show {call['call_id']} --json", shown.stdout, secrets)
    found = cli(env, "history", "search", "keys", "--json")
    assert found.returncode == 0 and json.loads(found.stdout)
    assert_clean("history search --json", found.stdout, secrets)

    # `replay` re-posts the stored deliveries, re-signed, to another receiver with the same secrets.
    replayed_db = tmp_path / "replayed" / "history.db"
    answer_at_once = '[tools.default]\naction = "override"\nresult = \'{"ok": true}\'\n'
    target = ServeProcess(
        replayed_db, answer_at_once, env=serve_env(replayed_db, tmp_path / "replayed" / "home", SECRETS)
    )
    try:
        replayed = cli(env, "replay", call_id, "--to", target.url, "--speed", "100")
    finally:
        assert target.stop() == 0
    assert replayed.returncode == 0, replayed.stderr
    assert_clean("voice-console replay output", replayed.stdout + replayed.stderr, secrets)
    for path in sorted(replayed_db.parent.glob("history.db*")):
        assert_clean(f"the replayed {path.name}", path.read_bytes(), secrets)
    with sqlite3.connect(replayed_db) as conn:
        # Recorded as replays: under the call id marked ↻.
        assert conn.execute("SELECT count(*) FROM deliveries WHERE call_id = ?", ("↻" + call_id,)).fetchone()[0] >= 3


async def test_no_secret_or_live_call_url_on_the_tui_screen(tmp_path: Path):
    from console.secrets import SecretStore
    from console.simulator.cli import simulate
    from console.simulator.scenarios import load_scenario
    from console.tui.app import Services, VoiceConsoleApp
    from console.tui.widgets.events import DeliveryView, RawDeliveryScreen
    from console.tui.widgets.panes import LiveCallsTable

    settings = Settings(receiver=ReceiverSettings(port=0), storage=StorageSettings(db=tmp_path / "history.db"))
    policy = Policy(tools={"default": ToolRule(action="override", result='{"ok": true}')})
    app = VoiceConsoleApp(Services(settings, secret_store=SecretStore(env=SECRETS), policy=policy))
    shots: dict[str, str] = {}
    async with app.run_test(size=(120, 36)) as pilot:
        deadline = time.monotonic() + 20
        while app.service is None and time.monotonic() < deadline:
            await pilot.pause(0.05)
        url = app.service.server.url
        records, _ = await simulate(
            url + "/webhook/vapi", load_scenario("booking"), calls=1, concurrency=1, speed=40, secret=VAPI_SECRET
        )
        assert records and all(r.status == 200 for r in records)
        call_id = f"leak-tui-{uuid.uuid4().hex[:6]}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            wrong = vapi(
                {"type": "status-update", "status": "ringing", "call": {"id": call_id}, "note": every_secret()}
            )
            refused = await client.post(
                f"/webhook/vapi?key={SECRETS['VOICE_CONSOLE_VAPI_API_KEY']}",
                content=wrong,
                headers={"x-vapi-secret": VAPI_SECRET + "-x"},
            )
            assert refused.status_code == 401
            # The last delivery is the raw event carrying the monitor URLs: it is opened below.
            for body in leaky_messages(call_id, f"call_leak_{uuid.uuid4().hex[:10]}")[:3]:
                assert (await client.post("/webhook/vapi", content=body, headers=signed(body))).status_code == 200
        table = app.main.query_one(LiveCallsTable)
        deadline = time.monotonic() + 10
        while table.row_count < 2 and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert table.row_count >= 2
        # The leaky call is the live one, listed first: select it, its transcript shows (masked).
        table.focus()
        table.move_cursor(row=0)
        await pilot.pause(0.6)
        shots["main"] = app.export_screenshot()
        assert "redacted" in shots["main"], "the leaky call's transcript should be on screen (masked)"
        for tab in ("events", "timeline", "assistants"):
            app.main.show_bottom(tab)
            await pilot.pause(0.3)
            shots[tab] = app.export_screenshot()
        app.main.show_bottom("events")
        await pilot.pause(0.2)
        app.main.query_one(DeliveryView).focus()
        await pilot.press("end", "v")
        deadline = time.monotonic() + 10
        while not (isinstance(app.screen, RawDeliveryScreen) and app.screen.text) and time.monotonic() < deadline:
            await pilot.pause(0.05)
        raw = app.screen
        assert isinstance(raw, RawDeliveryScreen) and "monitor-debug" in raw.text
        assert "wss://phone.example.test/…" in raw.text  # shown, masked
        shots["raw delivery view"] = app.export_screenshot() + raw.text
        app.save_screenshot(str(tmp_path / "tui.svg"))
    for name, svg in shots.items():
        assert_clean(f"TUI screenshot ({name})", svg, list(SECRETS.values()))
