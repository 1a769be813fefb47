"""Field checks shared by the emulated endpoints, as Genesys makes them: a 400 that names the
field (`invalid.value`, `required.field.missing`), never a silent fix."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from jobrunner.emulator.errors import invalid_value, missing_field

STATES = ("active", "inactive", "deleted")
MEDIA_TYPES = ("PHONE", "EMAIL", "SMS")
CONTACT_TYPES = ("PRIMARY", "WORK", "WORK2", "WORK3", "WORK4", "HOME", "MOBILE", "MAIN", "OTHER")
CONTACT_KEYS = ("address", "display", "mediaType", "type", "extension", "countryCode")
E164 = re.compile(r"^\+\d{7,15}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
MAX_STRING = 255


def now_iso() -> str:
    """Genesys timestamps: ISO 8601, UTC, milliseconds, Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def is_email(value: str) -> bool:
    return len(value) <= 254 and EMAIL.match(value) is not None


def text_field(
    body: Mapping[str, Any], key: str, field: str, *, required: bool = False
) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise missing_field(field)
        return None
    if not isinstance(value, str):
        raise invalid_value(field, value, "must be a string")
    if required and not value.strip():
        raise missing_field(field)
    if len(value) > MAX_STRING:
        raise invalid_value(field, value[:40] + "...", f"longer than {MAX_STRING} characters")
    return value


def enum_field(value: Any, allowed: Iterable[str], field: str) -> str:
    # The SDK turns unknown enum values into "outdated_sdk_version": not in `allowed` either.
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise invalid_value(field, value, "must be one of " + "|".join(allowed))
    return value


def validate_email(value: str, field: str = "email") -> str:
    if not is_email(value):
        raise invalid_value(field, value, "not a valid email address")
    return value


def validate_addresses(value: Any, field: str = "addresses") -> list[dict[str, Any]]:
    """Contact list as Genesys checks it: enums, E.164 phone numbers, email syntax."""
    if not isinstance(value, list):
        raise invalid_value(field, value, "must be a list of contacts")
    cleaned: list[dict[str, Any]] = []
    for index, contact in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(contact, dict):
            raise invalid_value(where, contact, "must be a contact object")
        if contact.get("mediaType") is None:
            raise missing_field(where + ".mediaType")
        media = enum_field(contact["mediaType"], MEDIA_TYPES, where + ".mediaType")
        if contact.get("type") is None:
            raise missing_field(where + ".type")
        enum_field(contact["type"], CONTACT_TYPES, where + ".type")
        for key in ("address", "display", "extension", "countryCode"):
            if contact.get(key) is not None and not isinstance(contact[key], str):
                raise invalid_value(f"{where}.{key}", contact[key], "must be a string")
        address = contact.get("address")
        if media in ("PHONE", "SMS"):
            if not address and not contact.get("extension"):
                raise missing_field(where + ".address")
            if address and not E164.match(address):
                raise invalid_value(
                    where + ".address", address, "phone numbers must be E.164 (+ and 7-15 digits)"
                )
        else:
            if not address:
                raise missing_field(where + ".address")
            validate_email(address, where + ".address")
        cleaned.append({key: contact[key] for key in CONTACT_KEYS if contact.get(key) is not None})
    return cleaned


def int_field(body: Mapping[str, Any], key: str, default: int, low: int, high: int | None) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_value(key, value, "must be an integer")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise invalid_value(key, value, "must be " + bound)
    return value
