"""Twilio webhook parameters -> normalized events."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Final

from console.core.events import CallEnded, CallStatus, Event, Raw, to_utc
from console.providers.twilio.wire import STATUS_MAP, CallParams, FormPairs, pairs_as_dict

PROVIDER: Final = "twilio"
_MAX_SEQUENCE_US = 999_999  # the tie-breaker must stay inside the callback's second


def sequence_number(params: CallParams) -> int | None:
    try:
        value = int(params.sequence_number) if params.sequence_number is not None else None
    except ValueError:
        return None
    return value if value is not None and value >= 0 else None


def callback_time(params: CallParams, received_at: datetime) -> datetime:
    """`Timestamp` (RFC 2822, whole seconds) plus SequenceNumber microseconds.

    Status callbacks are separate requests that may arrive out of order; the
    sequence number keeps several callbacks within one second in their real order.
    """
    if not params.timestamp:
        return received_at
    try:
        when = to_utc(parsedate_to_datetime(params.timestamp))
    except (TypeError, ValueError, IndexError):
        return received_at
    seq = sequence_number(params)
    return when + timedelta(microseconds=min(seq, _MAX_SEQUENCE_US)) if seq is not None else when


def _duration_s(params: CallParams) -> float | None:
    try:
        return float(params.call_duration) if params.call_duration not in (None, "") else None
    except ValueError:
        return None


def status_events(message_type: str, params: CallParams, pairs: FormPairs, at: datetime) -> list[Event]:
    """CallStatus for a known CallStatus value (plus CallEnded when it is final); else raw."""
    value = params.call_status or ""
    status = STATUS_MAP.get(value)
    cid = params.call_sid
    if status is None:
        return [Raw(at=at, provider=PROVIDER, call_id=cid, type=message_type, data=pairs_as_dict(pairs))]
    if status != "ended":
        return [CallStatus(at=at, provider=PROVIDER, call_id=cid, status=status)]
    return [
        CallStatus(at=at, provider=PROVIDER, call_id=cid, status="ended", ended_reason=value),
        CallEnded(at=at, provider=PROVIDER, call_id=cid, reason=value, duration_s=_duration_s(params)),
    ]


def call_extra(params: CallParams) -> dict[str, Any]:
    """Facts about the call the normalized events have no field for (numbers, direction)."""
    fields = {
        "from": params.from_,
        "to": params.to,
        "direction": params.direction,
        "account_sid": params.account_sid,
        "parent_call_sid": params.parent_call_sid,
        "call_status": params.call_status,
        "callback_source": params.callback_source,
        "sip_response_code": params.sip_response_code,
        "sequence_number": sequence_number(params),
    }
    return {k: v for k, v in fields.items() if v not in (None, "")}
