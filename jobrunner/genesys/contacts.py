"""A user's contacts (the `addresses` of the Users API): their fields, and the phones in them
as Genesys reads them back."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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


def work_phone(addresses: Iterable[Any] | None) -> tuple[str | None, str | None]:
    """The work phone in a user's addresses as Genesys reads it back: (number in E.164 or
    None, extension or None). (None, None) when there is no PHONE contact of type WORK; the
    first one counts when there are several.

    `addresses` are SDK Contact models or their JSON dicts (camelCase keys). How each contact
    is read is `read_phone`.
    """
    for contact in addresses or ():
        if _field(contact, "mediaType") == "PHONE" and _field(contact, "type") == "WORK":
            return read_phone(contact)
    return None, None


def read_phone(contact: Any) -> tuple[str | None, str | None]:
    """One PHONE contact as (number in E.164 or None, extension or None).

    Based on the Terraform provider's flattenUserAddresses (MyPureCloud/
    terraform-provider-genesyscloud, genesyscloud/user/resource_genesyscloud_user_utils.go),
    which lists the four shapes a phone comes back in from the API:

    1. A number alone is in `address` (unless the contact is shape 2: some orgs fill
       `address` for pooled extensions too, and that is not the person's number).
    2. A pooled extension has `extension` equal to `display`: an extension, no number.
    3. A number with an extension comes back with `extension` and a `display` that differs
       from it: the number is read from `display` (it wins over `address`), the extension
       from `extension`.
    4. An extension outside any pool comes only as `display` (no `address`, no
       `extension`): it is the extension.

    As there, leading and trailing brackets are trimmed from an extension read in shapes 2
    and 4 ("(204)" -> "204") and nothing else: a display "ext 204" is the extension
    "ext 204", not "204". Numbers are formatted as E.164 with libphonenumber, as the
    provider's FormatAsCalculatedE164Number does; the region for a number written without
    its country code is the contact's `countryCode` (the provider uses the org's default
    country, which we do not know). A number libphonenumber cannot read (a national number
    with no known country, a display that is a name) is None, where the provider keeps the
    text with a "+" before it: we do not claim a number we could not read.

    Two things beyond the provider's four shapes: an `extension` with no `display` (what we
    send, and what the emulator echoes) is that extension, where the provider drops it; an
    empty or blank field is an absent one.
    """
    address = _text(_field(contact, "address"))
    display = _text(_field(contact, "display"))
    extension = _text(_field(contact, "extension"))
    region = _text(_field(contact, "countryCode"))
    number = ext = None
    if address is not None and (extension is None or display is None or extension != display):
        number = _e164(address.strip("()"), region)  # 1
    if extension is not None and display is not None:
        if extension == display:  # 2
            ext = extension.strip("()")
        else:  # 3
            ext = extension
            number = _e164(display.strip("()"), region)
    if address is None and extension is None and display is not None:  # 4
        ext = display.strip("()")
    if extension is not None and display is None:
        ext = extension
    return number, ext


def _field(contact: Any, key: str) -> Any:
    """A contact's field by its JSON name, from a dict or an SDK model."""
    if isinstance(contact, Mapping):
        return contact.get(key)
    return getattr(contact, _CONTACT_FIELDS[key], None)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _e164(text: str, region: str | None) -> str | None:
    """`text` as an E.164 number, read with libphonenumber; None if it is no number."""
    import phonenumbers

    region = region.upper() if region and region.upper() in phonenumbers.SUPPORTED_REGIONS else None
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        parsed = None
    if parsed is None or not (parsed.country_code and parsed.national_number):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
