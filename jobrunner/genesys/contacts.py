"""A user's contacts (the `addresses` of the Users API): their fields, and phone numbers."""

from __future__ import annotations

# A Contact's fields: JSON name -> the SDK model's attribute.
_CONTACT_FIELDS = {
    "address": "address",
    "display": "display",
    "mediaType": "media_type",
    "type": "type",
    "extension": "extension",
    "countryCode": "country_code",
}


def digits_of(phone: str | None) -> str:
    """A phone number's digits (the API may format numbers)."""
    return "".join(c for c in phone or "" if c.isdigit())
