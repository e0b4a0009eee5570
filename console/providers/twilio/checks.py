"""Operator checks on a Twilio number: will its calls come to this console, and their streams
through the tap? Each problem is a `Check` (console.providers.checks); `patch_number` builds
the one update that points the number here (reference/retell-twilio.md §6)."""

from __future__ import annotations

from typing import Any

from console.providers.checks import Check, same_url
from console.providers.twilio.client import STATUS_PATH, VOICE_PATH

TAP_PATH = "/stream/twilio/"


def _stream_urls(twiml: str) -> list[str]:
    """The `<Stream url="…">`s a TwiML text names (crudely: no parsing needed for a check)."""
    found = []
    for part in twiml.split("<Stream")[1:]:
        if 'url="' in part:
            found.append(part.split('url="', 1)[1].split('"', 1)[0])
    return found


def check_number(number: dict[str, Any], *, public_url: str | None, voice_twiml: str | None = None) -> list[Check]:
    """Everything that would keep the number's calls, or their streams, away from this console.
    `voice_twiml` is `[twilio] voice_twiml` (None: the default, a stream to the tap)."""
    name = number.get("friendly_name") or number.get("phone_number") or "this number"
    if not public_url:
        return [
            Check(
                "info",
                "public-url-unknown",
                "No public URL is configured, so the number's voice URL and status callback cannot be checked.",
                "Set receiver.public_url (or --public-url) to the tunnel that reaches this console.",
            )
        ]
    base = public_url.rstrip("/")
    checks: list[Check] = []
    voice = str(number.get("voice_url") or "")
    if not voice:
        checks.append(
            Check(
                "warning",
                "voice-url-missing",
                f"{name} has no voice URL: its calls are answered by Twilio's default, not by this console.",
                f"Set its voice URL to {base}{VOICE_PATH} (the console can apply this for you).",
            )
        )
    elif not same_url(voice, base + VOICE_PATH):
        checks.append(
            Check(
                "warning",
                "voice-url-elsewhere",
                f"{name} sends its calls to {voice.split('?', 1)[0]}, not to this console; their TwiML, and so "
                "whether their stream runs through the tap, is that server's.",
                f"Set its voice URL to {base}{VOICE_PATH} (the console can apply this for you; it then answers "
                "with a stream to the tap, relayed to [twilio] stream_forward_to).",
            )
        )
    elif voice_twiml is not None and "{stream_url}" not in voice_twiml:
        elsewhere = [url for url in _stream_urls(voice_twiml) if TAP_PATH not in url]
        if elsewhere:
            checks.append(
                Check(
                    "warning",
                    "stream-not-tapped",
                    f"[twilio] voice_twiml streams {name}'s calls straight to {elsewhere[0].split('?', 1)[0]}: "
                    "the console hears none of their audio (no barge-in, no time-to-stop).",
                    'Put url="{stream_url}" in the <Stream> (the tap) and your agent in [twilio] stream_forward_to.',
                )
            )
    if not number.get("status_callback"):
        checks.append(
            Check(
                "warning",
                "status-callback-missing",
                f"{name} has no status callback: the console will not see its calls ring, answer or end.",
                f"Set its status callback to {base}{STATUS_PATH} (the console can apply this for you).",
            )
        )
    elif not same_url(str(number["status_callback"]), base + STATUS_PATH):
        checks.append(
            Check(
                "info",
                "status-callback-elsewhere",
                f"{name} posts its status callbacks to {str(number['status_callback']).split('?', 1)[0]}.",
                f"Point it at {base}{STATUS_PATH} for the console to follow each call's progress.",
            )
        )
    return checks


def patch_number(number: dict[str, Any], *, public_url: str | None) -> dict[str, str]:
    """The update (IncomingPhoneNumbers form fields) pointing the number's calls and callbacks here;
    `{}` when nothing needs it or no public URL is known."""
    if not public_url:
        return {}
    base = public_url.rstrip("/")
    patch: dict[str, str] = {}
    if not same_url(str(number.get("voice_url") or ""), base + VOICE_PATH):
        patch |= {"VoiceUrl": base + VOICE_PATH, "VoiceMethod": "POST"}
    if not same_url(str(number.get("status_callback") or ""), base + STATUS_PATH):
        patch |= {"StatusCallback": base + STATUS_PATH, "StatusCallbackMethod": "POST"}
    return patch
