"""What the client sends and what it reads back: plain values, no SDK."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobrunner.genesys.contacts import digits_of


@dataclass(frozen=True)
class Created:
    """What a create answered: the new user's id and version."""

    id: str
    version: int


@dataclass(frozen=True)
class Named:
    """An org object found by name (division, role, queue, skill, location)."""

    id: str
    name: str


@dataclass(frozen=True)
class UserDetail:
    """GET /api/v2/users/{id}: what the steps compare with and update."""

    id: str
    version: int
    state: str | None
    division_id: str | None
    manager_id: str | None
    location_ids: tuple[str, ...]
    title: str | None
    department: str | None
    phones: tuple[str, ...]  # every PHONE contact's number, read as `read_phone` does
    extensions: tuple[str, ...]  # ... and every extension
    # Every contact, every field as the API gave it (a PATCH of `addresses` replaces them all,
    # so the others are sent back exactly as they were), and every location with its notes.
    contacts: tuple[dict[str, Any], ...] = ()
    locations: tuple[dict[str, Any], ...] = ()
    # The work phone as Genesys reads it back (`work_phone`): number in E.164, extension.
    phone: str | None = None
    extension: str | None = None


@dataclass(frozen=True)
class FoundUser:
    """A user the search found, with what it read of the user's phones."""

    id: str
    name: str | None
    email: str | None
    state: str | None
    division_id: str | None
    title: str | None
    department: str | None
    # Every PHONE contact's number, read as `read_phone` does (a number given only in the
    # display is there, a pooled extension is not). None: the search did not list addresses.
    phones: tuple[str, ...] | None
    version: int | None = None
    modified: float | None = None  # unix time of dateModified, when the API gives it
    # The work phone as Genesys reads it back (`work_phone`): number in E.164, extension.
    phone: str | None = None
    extension: str | None = None


@dataclass(frozen=True)
class NewUser:
    """What we send to POST /api/v2/users, and what a look-up compares against."""

    name: str
    email: str
    phone: str | None = None
    division_id: str | None = None
    title: str | None = None
    department: str | None = None
    extension: str | None = None

    def matches(self, user: FoundUser) -> bool:
        """Is `user` the one we (may have) created? Every field we sent must agree.

        Name, email, title and department must be equal (the API leaves empty fields out of
        its JSON, so a missing title is an empty one). A division or an address list the
        search result does not show at all does not count against it.

        Phones are compared as the client reads them back (`read_phone`, `work_phone`: the
        four shapes Genesys answers in), so a number sent with an extension and given back
        only in the display still agrees. The number sent must be among the user's phone
        numbers, compared by their digits since the API may format them, and the user has
        none if we sent none; the extension must be the work phone's, and the user has none
        if we sent none.
        """

        def agrees(sent: str | None, found: str | None) -> bool:
            return (sent or "").strip() == (found or "").strip()

        if user.state == "deleted":  # a deleted user is never the one we just created
            return False
        if (user.email or "").lower() != self.email.lower():
            return False
        if not user.name or user.name.strip() != self.name.strip():
            return False
        if self.division_id and user.division_id not in (None, self.division_id):
            return False
        if not (agrees(self.title, user.title) and agrees(self.department, user.department)):
            return False
        if user.phones is not None:
            digits = {digits_of(p) for p in user.phones}
            if self.phone and digits_of(self.phone) not in digits:
                return False
            if not self.phone and digits:
                return False
            if not agrees(self.extension, user.extension):
                return False
        return True
