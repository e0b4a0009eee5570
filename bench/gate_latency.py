"""What the tool-call gate adds to an auto-approved, forwarded call.

Side by side in one run, against the same tool server (a separate process):
1. the gate alone: `ToolGate(approve).decide(batch)` vs `ForwardingToolHandler.decide(batch)`
   (the same forward without the gate), interleaved;
2. the whole path: the platform's request through `voice-console serve --forward-to`
   (verify, parse, commit the request, gate, forward, commit the decision, reply)
   vs the same request sent straight to the tool server.

    python bench/gate_latency.py [--calls 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from console.config import VapiSettings  # noqa: E402
from console.core.forward import ForwardingToolHandler  # noqa: E402
from console.core.gate import ToolGate  # noqa: E402
from console.core.policy import Policy  # noqa: E402
from console.core.tools import ToolBatch, ToolCall  # noqa: E402
from console.providers.vapi import sign_vapi_request  # noqa: E402

SECRET = "bench-gate-secret-1234"
PAYLOAD = json.loads((ROOT / "tests" / "payloads" / "vapi" / "tool-calls.oas.json").read_text())

TOOL_SERVER = """
import asyncio, json, sys
sys.path.insert(0, sys.argv[1])
from console.receiver.http import HttpServer, Router
from console.core.http_types import Response
async def tools(request):
    calls = json.loads(request.body)["message"]["toolCallList"]
    return Response.json(200, {"results": [{"toolCallId": c["id"], "result": "ok"} for c in calls]})
async def main():
    router = Router(); router.add("POST", "/tools", tools)
    server = HttpServer(router, port=0); await server.start()
    print(server.url, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def body_for(n: int) -> bytes:
    data = json.loads(json.dumps(PAYLOAD))
    for item in data["message"]["toolCallList"]:
        item["id"] = f"call_bench_{n}"
    for tool in data["message"].get("toolWithToolCallList", []):
        tool["toolCall"]["id"] = f"call_bench_{n}"
    data["message"].pop("toolCalls", None)
    return json.dumps(data).encode()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def gate_alone(url: str, calls: int) -> tuple[list[float], list[float]]:
    async with httpx.AsyncClient() as client:
        forward = ForwardingToolHandler(url, client)
        gate = ToolGate(Policy.default("approve"), forward=forward)
        direct, gated = [], []
        for n in range(calls):
            body = body_for(n)
            call = ToolCall(f"call_bench_{n}", "check_availability", {"date": "2026-12-01"})
            batch = ToolBatch(
                provider="vapi",
                dialect="vapi-tool-calls",
                call_id="call-bench",
                calls=(call,),
                platform_timeout_s=20,
                raw_body=body,
                headers=(("content-type", "application/json"),),
            )
            for handler, sink in ((forward, direct), (gate, gated)) if n % 2 else ((gate, gated), (forward, direct)):
                started = time.perf_counter()
                await handler.decide(batch)
                sink.append((time.perf_counter() - started) * 1000)
        return direct, gated


def whole_path(tool_url: str, calls: int, workdir: Path) -> tuple[list[float], list[float]]:
    env = {
        **os.environ,
        "VOICE_CONSOLE_VAPI_WEBHOOK_SECRET": SECRET,
        "PYTHON_KEYRING_BACKEND": "keyring.backends.null.Keyring",
    }
    policy = workdir / "policy.toml"
    policy.write_text('[tools.default]\naction = "approve"\n')
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "console",
            "serve",
            "--port",
            "0",
            "--db",
            str(workdir / "h.db"),
            "--forward-to",
            tool_url,
            "--policy",
            str(policy),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = re.search(r"listening on (\S+)", proc.stderr.readline()).group(1)
    direct, through = [], []
    try:
        with httpx.Client(timeout=30) as client:
            for n in range(calls):
                body = body_for(100_000 + n)
                headers = {"content-type": "application/json", **sign_vapi_request(VapiSettings(), SECRET, body)}
                started = time.perf_counter()
                assert client.post(f"{url}/webhook/vapi", content=body, headers=headers).status_code == 200
                through.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                client.post(tool_url, content=body, headers=headers)
                direct.append((time.perf_counter() - started) * 1000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    return direct, through


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()
    server = subprocess.Popen([sys.executable, "-c", TOOL_SERVER, str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        tool_url = server.stdout.readline().strip() + "/tools"
        direct, gated = asyncio.run(gate_alone(tool_url, args.calls))
        with tempfile.TemporaryDirectory() as tmp:
            plain, through = whole_path(tool_url, args.calls, Path(tmp))
    finally:
        server.terminate()
        server.wait(10)
    rows = [
        ("forward only (no gate)", direct),
        ("gate + forward", gated),
        ("tool server directly", plain),
        ("through voice-console serve", through),
    ]
    print(f"{'':32}{'p50 ms':>10}{'p99 ms':>10}")
    for name, values in rows:
        print(f"{name:32}{statistics.median(values):>10.3f}{pct(values, 0.99):>10.3f}")
    added = statistics.median(gated) - statistics.median(direct)
    whole = statistics.median(through) - statistics.median(plain)
    print(f"the gate adds {added:.3f} ms at p50 (target < 2 ms); the whole durable path adds {whole:.3f} ms at p50")
    return 0 if added < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
