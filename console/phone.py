"""Phone numbers as people type them, checked against Google's libphonenumber data.

`parse_phone("(415) 555-0142", default_region="US")` gives `+14155550142`;
a number no network can route (`+10000`) is refused with the reason. What is sent
to a platform is always E.164; what is shown is the international format with
the country's name. `phonenumbers` is imported lazily: its metadata is large and
`--help` must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass

# Used when the operator types a national number and configured no region.
DEFAULT_REGION = "US"


class PhoneNumberError(ValueError):
    """A number that cannot be dialed; the message says why, in one sentence."""


@dataclass(frozen=True)
class PhoneNumber:
    e164: str  # what platforms get: +14155550142
    international: str  # what people read: +1 415-555-0142
    region: str  # ISO 3166 code: US
    country: str  # English name: United States

    def describe(self) -> str:
        """`+1 415-555-0142 · United States`"""
        return f"{self.international} · {self.country or self.region}"


def _reason(phonenumbers, code: int) -> str:
    reasons = phonenumbers.ValidationResult
    return {
        reasons.INVALID_COUNTRY_CODE: "its country code does not exist",
        reasons.TOO_SHORT: "it is too short for its country",
        reasons.TOO_LONG: "it is too long for its country",
        reasons.INVALID_LENGTH: "it has the wrong number of digits for its country",
    }.get(code, "no network can route it")


def parse_phone(text: str, *, default_region: str | None = None, what: str = "number") -> PhoneNumber:
    """Parse what the operator typed (E.164 or national) into a dialable number.

    `default_region` (ISO code such as "US" or "GB") applies to numbers typed
    without `+` and a country code. Raises PhoneNumberError saying what is wrong.
    """
    import phonenumbers
    from phonenumbers import geocoder

    raw = (text or "").strip()
    if not raw:
        raise PhoneNumberError(f"the {what} is empty")
    region = (default_region or DEFAULT_REGION).upper()
    hint = "" if raw.startswith("+") else f" (read as a {region} number; start with + and the country code otherwise)"
    try:
        number = phonenumbers.parse(raw, None if raw.startswith("+") else region)
    except phonenumbers.NumberParseException as exc:
        raise PhoneNumberError(
            f"the {what} {raw!r} is not a phone number: {_parse_reason(phonenumbers, exc)}{hint}"
        ) from None
    if not phonenumbers.is_valid_number(number):
        possible = phonenumbers.is_possible_number_with_reason(number)
        reason = (
            _reason(phonenumbers, possible)
            if possible != phonenumbers.ValidationResult.IS_POSSIBLE
            else ("no network can route it (the digits fit no numbering plan of its country)")
        )
        raise PhoneNumberError(f"the {what} {raw!r} is not a valid phone number: {reason}{hint}")
    region_code = phonenumbers.region_code_for_number(number) or ""
    return PhoneNumber(
        e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        international=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
        region=region_code,
        country=geocoder.country_name_for_number(number, "en") or region_code,
    )


def _parse_reason(phonenumbers, exc) -> str:
    kinds = phonenumbers.NumberParseException
    return {
        kinds.INVALID_COUNTRY_CODE: "its country code does not exist",
        kinds.NOT_A_NUMBER: "it does not look like a number",
        kinds.TOO_SHORT_AFTER_IDD: "it is too short after the international prefix",
        kinds.TOO_SHORT_NSN: "it is too short",
        kinds.TOO_LONG: "it is too long",
    }.get(exc.error_type, str(exc))


def to_e164(text: str, *, default_region: str | None = None, what: str = "number") -> str:
    """The E.164 form of `text`, or PhoneNumberError."""
    return parse_phone(text, default_region=default_region, what=what).e164


def is_region(code: str) -> bool:
    """True for a region libphonenumber knows (used to validate `default_region` in config)."""
    import phonenumbers

    return code.upper() in phonenumbers.SUPPORTED_REGIONS
