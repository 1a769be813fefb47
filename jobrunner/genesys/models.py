"""What the client sends and what it reads back: plain values, no SDK."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    # Did the answer carry the locations expansion at all? (`expand` is best effort: one
    # left out says nothing about the user's locations.)
    locations_known: bool = True


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
