"""steps.create.is_ours, the create's "is this user ours?" after an unanswered create, with the
user as the client reads it back from a search: its work phone in each of the shapes Genesys
gives it back in."""

from __future__ import annotations

from typing import Any

import pytest

from jobrunner.genesys import FoundUser, NewUser, _found
from jobrunner.steps.create import is_ours

WORK = {"media_type": "PHONE", "type": "WORK"}
MOBILE = {
    "address": "+13175550199",
    "display": "(317) 555-0199",
    "media_type": "PHONE",
    "type": "MOBILE",
}

NUMBER, EXTENSION = "+13175550142", "204"
BOTH = NewUser("Pat Doe", "pat@example.com", phone=NUMBER, title="Engineer", extension=EXTENSION)
NUMBER_ONLY = NewUser("Pat Doe", "pat@example.com", phone=NUMBER, title="Engineer")
EXTENSION_ONLY = NewUser("Pat Doe", "pat@example.com", title="Engineer", extension=EXTENSION)
NEITHER = NewUser("Pat Doe", "pat@example.com", title="Engineer")


def found(sdk: Any, *contacts: dict[str, str]) -> FoundUser:
    """What the client makes of a search result: an SDK User with these contacts."""
    user = sdk.model(
        "User",
        id="6b8a5e4c-1f2d-4e3a-9b7c-0d1e2f3a4b5c",
        name="Pat Doe",
        email="pat@example.com",
        state="active",
        title="Engineer",
        version=2,
        addresses=[sdk.model("Contact", **c) for c in contacts],
    )
    return _found(user)


CASES: dict[str, tuple[NewUser, list[dict[str, str]], bool]] = {
    # Sent a number and an extension.
    "both, read back as sent": (BOTH, [{"address": NUMBER, "extension": EXTENSION}], True),
    "both, shape 3: the number only in display": (
        BOTH,
        [{"extension": EXTENSION, "display": NUMBER}],
        True,
    ),
    "both, shape 3: a formatted display": (
        BOTH,
        [{"extension": EXTENSION, "display": "+1 317-555-0142"}],
        True,
    ),
    "both, shape 3: a national display in the contact's country": (
        BOTH,
        [{"extension": EXTENSION, "display": "(317) 555-0142", "country_code": "US"}],
        True,
    ),
    "both, shape 3, beside a mobile number": (
        BOTH,
        [MOBILE, {"extension": EXTENSION, "display": NUMBER}],
        True,
    ),
    "both, shape 3 with another number": (
        BOTH,
        [{"extension": EXTENSION, "display": "+13175550143"}],
        False,
    ),
    "both, shape 3 with another extension": (
        BOTH,
        [{"extension": "205", "display": NUMBER}],
        False,
    ),
    "both, shape 1: the number without the extension": (BOTH, [{"address": NUMBER}], False),
    "both, shape 2: the extension without the number": (
        BOTH,
        [{"extension": EXTENSION, "display": EXTENSION}],
        False,
    ),
    # Sent an extension alone.
    "extension, shape 2: pooled": (
        EXTENSION_ONLY,
        [{"extension": EXTENSION, "display": EXTENSION}],
        True,
    ),
    "extension, shape 2: pooled, the org filled address": (
        EXTENSION_ONLY,
        [{"address": "+13175550100", "extension": EXTENSION, "display": EXTENSION}],
        True,
    ),
    "extension, shape 4: only as display": (EXTENSION_ONLY, [{"display": EXTENSION}], True),
    "extension, shape 4: in brackets": (EXTENSION_ONLY, [{"display": "(204)"}], True),
    "extension, shape 4 with another extension": (EXTENSION_ONLY, [{"display": "205"}], False),
    "extension, read back as sent": (EXTENSION_ONLY, [{"extension": EXTENSION}], True),
    "extension, but the user has a number too": (
        EXTENSION_ONLY,
        [{"extension": EXTENSION, "display": NUMBER}],
        False,
    ),
    "extension, but the user has no phone": (EXTENSION_ONLY, [], False),
    # Sent a number alone.
    "number, shape 1": (NUMBER_ONLY, [{"address": NUMBER}], True),
    "number, shape 1 with its display": (
        NUMBER_ONLY,
        [{"address": NUMBER, "display": "(317) 555-0142"}],
        True,
    ),
    "number, but the user has an extension too": (
        NUMBER_ONLY,
        [{"extension": EXTENSION, "display": NUMBER}],
        False,
    ),
    "number, shape 4: an extension and no number": (NUMBER_ONLY, [{"display": "204"}], False),
    # Sent no phone.
    "neither, no phone": (NEITHER, [], True),
    "neither, shape 2: the user has an extension": (
        NEITHER,
        [{"extension": EXTENSION, "display": EXTENSION}],
        False,
    ),
    "neither, shape 4: the user has an extension": (NEITHER, [{"display": "204"}], False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_is_the_user_read_back_ours(sdk: Any, case: str) -> None:
    sent, contacts, ours = CASES[case]
    user = found(sdk, *[c if c is MOBILE else {**WORK, **c} for c in contacts])
    assert is_ours(sent, user) is ours


def test_a_search_that_lists_no_addresses_does_not_count_against_phones() -> None:
    user = FoundUser("u", "Pat Doe", "pat@example.com", "active", None, "Engineer", None, None)
    assert is_ours(BOTH, user) and is_ours(EXTENSION_ONLY, user)
