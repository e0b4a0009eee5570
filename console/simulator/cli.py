"""`voice-console platform` and `voice-console simulate` (their parsers: `console.commands`).

    voice-console platform [--port P] [--speed X] [--webhook URL] [--scenario NAME|FILE]
    voice-console simulate --target URL [--provider vapi|retell|twilio] [--scenario NAME|FILE]
                           [--calls N] [--concurrency C] [--speed X] [--public-url URL] [--media-stream]

`--target` is, for vapi, the Vapi webhook URL itself; a bare base URL
(`http://127.0.0.1:8765`, no path) gets the console's `/webhook/vapi` appended
(said on stderr). For retell and twilio it is the receiver's base URL, under
which the console's routes are used (`/webhook/retell`, `/webhook/retell/function`;
`/webhook/twilio/voice`, `/webhook/twilio/status`, `/stream/twilio`). One of
those route URLs is accepted too: the route is stripped to find the base.

When the first deliveries all get 404 the run stops early (exit 1) naming the
URL and the path the console's receiver listens on, instead of sending the
rest of the calls to a wrong URL.

Secrets never come from argv: the Vapi webhook secret from
VOICE_CONSOLE_VAPI_WEBHOOK_SECRET or the keyring (auth mode from the settings file,
`vapi.webhook.auth`), the Retell API key from VOICE_CONSOLE_RETELL_API_KEY, the
Twilio auth token from VOICE_CONSOLE_TWILIO_AUTH_TOKEN, or the keyring.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from console.config import ConfigError, Settings, load_settings
from console.providers import registry
from console.redact import mask_url
from console.secrets import SecretStore
from console.simulator.common import AGENT_NUMBER, DeliveryRecord, DialectWebhook
from console.simulator.retell import AGENT_ID as RETELL_AGENT_ID
from console.simulator.retell import (
    FUNCTION_TYPE,
    RETELL_ROUTES,
    RetellCallPlayer,
    SimulatedRetell,
    retell_endpoints,
)
from console.simulator.retell import LLM_AGENT_ID as RETELL_LLM_AGENT_ID
from console.simulator.scenarios import Scenario, load_scenario
from console.simulator.twilio import DIALED_NUMBER as TWILIO_NUMBER
from console.simulator.twilio import TWILIO_ROUTES, SimulatedTwilio, TwilioCallPlayer, twilio_endpoints
from console.simulator.vapi import (
    PHONE_NUMBER_ID,
    RECEPTIONIST_ID,
    CallEngine,
    SimulatedPlatform,
    Webhook,
    new_call,
)

# The platforms the simulator plays: a module each (console.simulator.vapi, .retell, .twilio).
PROVIDERS = ("vapi", "retell", "twilio")
TOOL_TYPES = frozenset({"tool-calls", FUNCTION_TYPE})  # deliveries whose answer the call waits on
VAPI_PATH = "/webhook/vapi"  # the console receiver's Vapi route (console/receiver/routes.py)
DEFAULT_RECEIVER = "http://127.0.0.1:8765"  # `voice-console serve` on its default port
DEFAULT_VAPI_WEBHOOK = DEFAULT_RECEIVER + VAPI_PATH
RETELL_NUMBER = AGENT_NUMBER  # the simulated Retell account's number
# This many first deliveries all answered 404: the target is the wrong URL, stop.
NOT_FOUND_LIMIT = 5


class TargetNotFound(Exception):
    """The first deliveries all got 404: the message says which URL and what path it should have."""


def vapi_target(target: str) -> tuple[str, bool]:
    """(the URL to post to, whether the console's Vapi path was appended to a bare base URL)."""
    parts = urlsplit(target)
    if parts.path in ("", "/") and not parts.query:
        return f"{parts.scheme}://{parts.netloc}{VAPI_PATH}", True
    return target, False


def not_found_hint(provider: str, target: str, posted: str, count: int) -> str:
    parts = urlsplit(target)
    origin = f"{parts.scheme}://{parts.netloc}"
    if provider == "vapi":
        where = f"the console's receiver takes Vapi messages on {VAPI_PATH}: try --target {origin}{VAPI_PATH}"
    else:
        routes = RETELL_ROUTES if provider == "retell" else TWILIO_ROUTES[:2]
        where = (
            f"the console's receiver takes {provider} webhooks on {' and '.join(reversed(routes))} under "
            f"its base URL: try --target {origin}"
        )
    return (
        f"the first {count} deliveries to {posted} all got 404 Not Found, so the run stopped early; "
        f"{where} (is the URL the receiver's, and is `voice-console serve` running there?)"
    )


async def _webhook_auth(args: argparse.Namespace) -> tuple[Settings, str | None]:
    settings = load_settings(getattr(args, "config", None))
    lookup = await SecretStore().aget("vapi_webhook_secret")
    if lookup.value is None and settings.vapi.webhook.auth != "none":
        print(
            f"voice-console: warning: no Vapi webhook secret ({lookup.note}); messages are sent unsigned "
            "and a receiver will refuse them.",
            file=sys.stderr,
        )
    return settings, lookup.value


async def _run_twilio_platform(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"voice-console: {exc}", file=sys.stderr)
        return 2
    platform = SimulatedTwilio(speed=args.speed, scenario=scenario, port=args.platform_port)
    return await _serve_platform(
        platform,
        args.platform_port,
        lambda: [
            f"Simulated Twilio platform on {platform.url}",
            f"  account SID:     {platform.account_sid}",
            f"  auth token:      {platform.auth_token} (it also signs the webhooks: give the receiver the same one)",
            f"  phone number:    {TWILIO_NUMBER}",
            f"  scenario:        {scenario.name} at speed {args.speed:g} (the caller's side of each call)",
            "Calls fetch their TwiML from the Url they are placed with (give the receiver --public-url).",
            f"Point the console at it: VOICE_CONSOLE_TWILIO_BASE_URL={platform.url} "
            f"VOICE_CONSOLE_TWILIO_ACCOUNT_SID={platform.account_sid} "
            f"VOICE_CONSOLE_TWILIO_AUTH_TOKEN={platform.auth_token}",
        ],
    )


async def run_platform(args: argparse.Namespace) -> int:
    if getattr(args, "provider", "vapi") == "retell":
        return await _run_retell_platform(args)
    if getattr(args, "provider", "vapi") == "twilio":
        return await _run_twilio_platform(args)
    try:
        settings, secret = await _webhook_auth(args)
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"voice-console: {exc}", file=sys.stderr)
        return 2
    platform = SimulatedPlatform(
        args.webhook,
        webhook_settings=settings.vapi,
        webhook_secret=secret,
        speed=args.speed,
        scenario=scenario,
        port=args.platform_port,
    )
    return await _serve_platform(
        platform,
        args.platform_port,
        lambda: [
            f"Simulated Vapi platform on {platform.url}",
            f"  API key (demo):  {platform.api_key}",
            f"  server URL:      {args.webhook} ({settings.vapi.webhook.auth} auth)",
            f"  scenario:        {scenario.name} at speed {args.speed:g}",
            f"  assistant:       {RECEPTIONIST_ID}\n  phone number:    {PHONE_NUMBER_ID}",
            f"Point the console at it: VOICE_CONSOLE_VAPI_BASE_URL={platform.url} "
            f"VOICE_CONSOLE_VAPI_API_KEY={platform.api_key}",
        ],
    )


async def _serve_platform(
    platform: SimulatedPlatform | SimulatedRetell | SimulatedTwilio, port: int, banner: Callable[[], list[str]]
) -> int:
    """Listen, say where and how to use it (`banner`, once listening), and run until Ctrl-C."""
    try:
        await platform.start()
    except OSError as exc:
        print(f"voice-console: cannot listen on port {port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print("\n".join(banner()), flush=True)
    try:
        await asyncio.Event().wait()  # until Ctrl-C
    finally:
        await platform.close()
    return 0


async def _run_retell_platform(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"voice-console: {exc}", file=sys.stderr)
        return 2
    webhook = args.webhook if args.webhook != DEFAULT_VAPI_WEBHOOK else DEFAULT_RECEIVER
    llm_url = getattr(args, "llm_websocket_url", None)
    platform = SimulatedRetell(
        webhook, speed=args.speed, scenario=scenario, port=args.platform_port, llm_websocket_url=llm_url
    )
    custom_llm = (
        [f"  custom-LLM agent: {RETELL_LLM_AGENT_ID} (its calls open {mask_url(llm_url)}/<call id>)"] if llm_url else []
    )
    return await _serve_platform(
        platform,
        args.platform_port,
        lambda: [
            f"Simulated Retell platform on {platform.url}",
            f"  API key (demo):  {platform.api_key} (it also signs the webhooks: give the receiver the same key)",
            f"  webhook URL:     {webhook} (the agent's; the console's Retell routes are appended)",
            f"  scenario:        {scenario.name} at speed {args.speed:g}",
            f"  agent:           {RETELL_AGENT_ID}\n  phone number:    {RETELL_NUMBER}",
            *custom_llm,
            f"Point the console at it: VOICE_CONSOLE_RETELL_BASE_URL={platform.url} "
            f"VOICE_CONSOLE_RETELL_API_KEY={platform.api_key}",
        ],
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else 0.0


def simulate_report(records: list[DeliveryRecord], calls: int, elapsed_s: float) -> tuple[str, bool]:
    """The end-of-run report and whether everything went well."""
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    for record in records:
        by_type[record.type][str(record.status) if record.status is not None else "no answer"] += 1
    latencies = [r.latency_ms for r in records if r.status is not None]
    tool_latencies = [r.latency_ms for r in records if r.status is not None and r.type in TOOL_TYPES]
    failures = [r for r in records if r.error]
    bad = [r for r in records if r.bad_reply]
    lines = [f"{calls} calls, {len(records)} messages in {elapsed_s:.1f} s"]
    lines += [
        f"  {kind:<26} " + ", ".join(f"{status}: {n}" for status, n in sorted(counts.items()))
        for kind, counts in sorted(by_type.items())
    ]
    if latencies:
        lines.append(
            f"latency ms: p50 {_percentile(latencies, 0.5):.1f}, p99 {_percentile(latencies, 0.99):.1f}"
            + (
                f"; tool calls p50 {_percentile(tool_latencies, 0.5):.1f}, p99 {_percentile(tool_latencies, 0.99):.1f}"
                if tool_latencies
                else ""
            )
        )
    else:
        lines.append("latency: the target never answered")
    lines.append(
        f"failed deliveries: {len(failures)}" + "".join(f"\n  {r.type} ({r.call_id}): {r.error}" for r in failures[:5])
    )
    lines.append(
        f"tool-call replies of the wrong shape: {len(bad)}"
        + "".join(f"\n  {r.call_id}: {r.bad_reply}" for r in bad[:5])
    )
    return "\n".join(lines), not failures and not bad


async def simulate(
    target: str,
    scenario: Scenario,
    *,
    calls: int,
    concurrency: int,
    speed: float,
    settings: Settings | None = None,
    secret: str | None = None,
    progress: Any = None,
    provider: str = "vapi",
    public_url: str | None = None,
    media_stream: bool = False,
) -> tuple[list[DeliveryRecord], float]:
    """Play `calls` calls straight at `target` (no REST); the delivery records and the run time.

    `secret` is the provider's signing secret: the Vapi webhook secret, the Retell
    API key or the Twilio auth token. For retell/twilio `target` is the receiver's
    base URL (or one of its routes); `public_url` and `media_stream` are Twilio's.
    A bad `target` raises ValueError; a target whose first NOT_FOUND_LIMIT deliveries
    all get 404 raises TargetNotFound (the other calls are not played).
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}; one of {', '.join(PROVIDERS)}")
    retell = retell_endpoints(target) if provider == "retell" else None
    twilio = twilio_endpoints(target, public_url) if provider == "twilio" else None
    records: list[DeliveryRecord] = []
    wrong_url = asyncio.Event()

    def record(delivery: DeliveryRecord) -> None:
        records.append(delivery)
        if len(records) == NOT_FOUND_LIMIT and all(r.status == 404 for r in records):
            wrong_url.set()

    seed = SimulatedPlatform(target, scenario=scenario)  # not started: only its demo assistant and number
    assistant, number = seed.assistants[RECEPTIONIST_ID], seed.phone_numbers[PHONE_NUMBER_ID]
    limit = asyncio.Semaphore(concurrency)
    done = 0
    started = time.perf_counter()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency * 2 + 4)) as client:
        webhook = Webhook(client, settings.vapi if settings else None, secret, on_record=record)
        dialect = DialectWebhook(client, on_record=record)

        async def play() -> None:
            if retell is not None:
                await RetellCallPlayer(scenario, retell, dialect, api_key=secret, speed=speed).run()
            elif twilio is not None:
                await TwilioCallPlayer(
                    scenario, twilio, dialect, auth_token=secret, speed=speed, media_stream=media_stream
                ).run()
            else:
                call = new_call(assistant=assistant, scenario=scenario, phone_number=number, webhook_url=target)
                await CallEngine(call, webhook, speed=speed).run()

        async def one() -> None:
            nonlocal done
            async with limit:
                await play()
            done += 1
            if progress is not None:
                progress(done, calls, len(records), sum(1 for r in records if r.error))

        run = asyncio.ensure_future(asyncio.gather(*(one() for _ in range(calls))))
        stop = asyncio.ensure_future(wrong_url.wait())
        try:
            first: set[asyncio.Future[Any]] = {run, stop}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            stopped_early = not run.done()
            if stopped_early:
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
        if not stopped_early:
            run.result()  # a player's unexpected error surfaces as before
    if wrong_url.is_set() or (records and all(r.status == 404 for r in records)):
        posted = retell.webhook if retell else twilio.voice if twilio else target
        raise TargetNotFound(not_found_hint(provider, target, posted, min(len(records), NOT_FOUND_LIMIT)))
    return records, time.perf_counter() - started


async def _signing_secret(args: argparse.Namespace) -> tuple[Settings, str | None]:
    if args.provider == "vapi":
        return await _webhook_auth(args)
    settings = load_settings(getattr(args, "config", None))
    spec = registry.spec(args.provider)
    assert spec.signing_secret is not None
    lookup = await SecretStore().aget(spec.signing_secret)
    if lookup.value is None:
        what = spec.secret(spec.signing_secret).label
        header = "X-Retell-Signature" if args.provider == "retell" else "X-Twilio-Signature"
        print(
            f"voice-console: warning: no {what} ({lookup.note}); requests are sent without {header} "
            "and a receiver will refuse them.",
            file=sys.stderr,
        )
    return settings, lookup.value


async def run_simulate(args: argparse.Namespace) -> int:
    if args.provider not in PROVIDERS:
        print(
            f"voice-console: the simulator does not play {args.provider} webhooks; "
            f"choose one of {', '.join(PROVIDERS)}",
            file=sys.stderr,
        )
        return 2
    public_url: str | None = getattr(args, "sim_public_url", None)
    for flag, url in (("--target", args.target), ("--public-url", public_url)):
        if url is not None and not (url.startswith(("http://", "https://")) and urlsplit(url).netloc):
            print(f"voice-console: {flag} must be an http:// or https:// URL", file=sys.stderr)
            return 2
    if args.provider != "twilio" and (public_url or getattr(args, "media_stream", False)):
        print("voice-console: --public-url and --media-stream are for --provider twilio", file=sys.stderr)
        return 2
    try:
        settings, secret = await _signing_secret(args)
        scenario = load_scenario(args.scenario)
    except ConfigError as exc:
        print(f"voice-console: {exc}", file=sys.stderr)
        return 2
    target = args.target
    if args.provider == "vapi":
        target, appended = vapi_target(target)
        if appended:
            print(
                f"voice-console: --target {args.target} has no path; posting to {target} "
                "(the console's Vapi webhook route)",
                file=sys.stderr,
            )
    elif urlsplit(target).path in ("", "/"):
        if args.provider == "retell":
            retell = retell_endpoints(target)
            urls = [retell.webhook, retell.function]
        else:
            twilio = twilio_endpoints(target, public_url)
            urls = [twilio.voice, twilio.status] + ([twilio.stream] if getattr(args, "media_stream", False) else [])
        print(f"voice-console: posting to the console's {args.provider} routes: {', '.join(urls)}", file=sys.stderr)
    tty = sys.stderr.isatty()

    def progress(done: int, total: int, messages: int, failed: int) -> None:
        text = f"calls {done}/{total}, messages {messages}, failed {failed}"
        print(("\r" + text) if tty else text, end="" if tty and done < total else "\n", file=sys.stderr, flush=True)

    try:
        records, elapsed = await simulate(
            target,
            scenario,
            calls=args.calls,
            concurrency=args.concurrency,
            speed=args.speed,
            settings=settings,
            secret=secret,
            progress=progress,
            provider=args.provider,
            public_url=public_url,
            media_stream=getattr(args, "media_stream", False),
        )
    except TargetNotFound as exc:
        print(("\n" if tty else "") + f"voice-console: {exc}", file=sys.stderr)
        return 1
    report, ok = simulate_report(records, args.calls, elapsed)
    print(report)
    return 0 if ok else 1
