"""Users and divisions as the Genesys Cloud users API keeps them, and what onboarding gives a
user: role grants, routing skills, queue memberships, manager, locations.

`Directory` validates requests the way the API does (400 naming the field, 409 on a taken email,
404 on an unknown id, 409 on a stale version), soft-deletes and restores, searches, and lists
divisions, roles, queues, skills and locations (the last four in its read-only `org` Catalog).
It knows nothing about HTTP and is safe to call from many threads (one short lock; user records
are replaced, never mutated, so a snapshot can be serialised outside the lock).

The onboarding services of a real org learn about a new user a few seconds after the directory
does: methods that stand for them take `now` and `fresh_s` and answer 404 for a user created
less than `fresh_s` ago.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
import threading
import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jobrunner.emulator.errors import (
    ApiError,
    bad_request,
    field_error,
    invalid_query_param,
    invalid_value,
    missing_field,
    not_found,
)
from jobrunner.emulator.org import (
    KINDS,
    PATHS,
    Catalog,
    check_org,
    entity_listing,
    org_entries,
    sort_descending,
)

STATES = ("active", "inactive", "deleted")
MEDIA_TYPES = ("PHONE", "EMAIL", "SMS")
CONTACT_TYPES = ("PRIMARY", "WORK", "WORK2", "WORK3", "WORK4", "HOME", "MOBILE", "MAIN", "OTHER")
CONTACT_KEYS = ("address", "display", "mediaType", "type", "extension", "countryCode")
E164 = re.compile(r"^\+\d{7,15}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
MAX_STRING = 255

# UserSearchCriteria.type values (the SDK's allowed_values) and the subset the emulator evaluates.
SEARCH_TYPES = (
    "EXACT",
    "STARTS_WITH",
    "CONTAINS",
    "REGEX",
    "TERM",
    "TERMS",
    "REQUIRED_FIELDS",
    "MATCH_ALL",
    "QUERY_STRING",
    "RANGE",
    "LESS_THAN",
    "LESS_THAN_EQUAL_TO",
    "GREATER_THAN",
    "GREATER_THAN_EQUAL_TO",
)
SUPPORTED_SEARCH_TYPES = ("EXACT", "TERM", "TERMS", "STARTS_WITH", "CONTAINS", "MATCH_ALL")
SEARCH_OPERATORS = ("AND", "OR", "NOT")
SEARCH_FIELDS = ("id", "name", "email", "state", "title", "department", "username", "division.id")
SEARCH_SORT_FIELDS = ("name", "email", "id", "department", "title")
DEFAULT_SEARCH_STATES = ("active", "inactive")
MAX_PAGE_SIZE = 100
GET_STATES = ("active", "deleted")  # GET /api/v2/users/{id}?state=, default active
MAX_SKILLS_PER_CALL = 50
MAX_MEMBERS_PER_CALL = 100
# The real API's own text for a queue-member batch of the wrong size (x-inin-error-codes).
MEMBERS_COUNT_MESSAGE = (
    "Invalid request data.  Make sure you submit a valid number of queue members."
)


def now_iso() -> str:
    """Genesys timestamps: ISO 8601, UTC, milliseconds, Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def is_email(value: str) -> bool:
    return len(value) <= 254 and EMAIL.match(value) is not None


def _string(body: Mapping[str, Any], key: str, field: str, *, required: bool = False) -> str | None:
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


def _enum(value: Any, allowed: Iterable[str], field: str) -> str:
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
        media = _enum(contact["mediaType"], MEDIA_TYPES, where + ".mediaType")
        if contact.get("type") is None:
            raise missing_field(where + ".type")
        _enum(contact["type"], CONTACT_TYPES, where + ".type")
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


def _int(body: Mapping[str, Any], key: str, default: int, low: int, high: int | None) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_value(key, value, "must be an integer")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise invalid_value(key, value, "must be " + bound)
    return value


class Directory:
    """The org's users, divisions and the rest of the org (roles, queues, skills, locations).

    `divisions` maps extra division names to ids; the Home division is always there. More
    come from an org file through load_org().
    """

    def __init__(self, home_division_id: str, divisions: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, Any]] = {}
        self._by_email: dict[str, str] = {}
        # When each user was created (clock seconds; -inf for users that existed before).
        self._indexed_at: dict[str, float] = {}
        self.home_division_id = home_division_id
        self._divisions: dict[str, dict[str, Any]] = {}
        self._add_division(home_division_id, "Home", home=True)
        for name, division_id in (divisions or {}).items():
            self.add_division(division_id, name)
        self.org = Catalog(self._division_ref(home_division_id), now_iso())
        # Onboarding state, all guarded by _lock:
        self._grants: dict[str, dict[tuple[str, str], str]] = {}  # user -> (role, div) -> when
        self._skills: dict[str, dict[str, float]] = {}  # user -> skill -> proficiency
        self._members: dict[str, dict[str, None]] = {}  # queue -> users, in the order added
        self._locations: dict[str, list[dict[str, Any]]] = {}  # user -> [{"id", "notes"}]

    # ---- divisions -----------------------------------------------------------------------

    def add_division(self, division_id: str, name: str) -> bool:
        """Add a division at start-up. False if this very (id, name) is there already."""
        existing = self._divisions.get(division_id)
        if existing is not None and existing["name"] == name:
            return False
        if name == "Home" or division_id == self.home_division_id:
            raise ValueError(f"division {name}={division_id} clashes with the Home division")
        if any(d["name"] == name for d in self._divisions.values()):
            raise ValueError(f"division {name!r} is given twice")
        self._add_division(division_id, name, home=False)
        return True

    def load_org(self, data: Mapping[str, Any], seed: int | None = None) -> None:
        """Divisions, roles, queues, skills and locations from an org file's data (its users
        are added with add_existing). Objects without an id get one derived from `seed`."""
        check_org(data)
        for division_id, name in org_entries(data, "divisions", seed):
            self.add_division(division_id, name)
        for kind in KINDS:
            for object_id, name in org_entries(data, kind, seed):
                self.org.add(kind, object_id, name)

    def _add_division(self, division_id: str, name: str, *, home: bool) -> None:
        try:
            uuid.UUID(division_id)
        except ValueError:
            raise ValueError(f"division id for {name!r} is not a UUID: {division_id!r}") from None
        if division_id in self._divisions:
            raise ValueError(f"division id {division_id} is given twice")
        self._divisions[division_id] = {
            "id": division_id,
            "name": name,
            "description": "",
            "homeDivision": home,
            "selfUri": f"/api/v2/authorization/divisions/{division_id}",
        }

    def _division_ref(self, division_id: str) -> dict[str, Any]:
        division = self._divisions.get(division_id)
        name = division["name"] if division else ""
        return {
            "id": division_id,
            "name": name,
            "selfUri": f"/api/v2/authorization/divisions/{division_id}",
        }

    def home_division(self) -> dict[str, Any]:
        return dict(self._divisions[self.home_division_id])

    def get_division(self, division_id: str) -> dict[str, Any]:
        division = self._divisions.get(division_id)
        if division is None:
            raise not_found(f"Division {division_id} not found")
        return dict(division)

    def list_divisions(
        self,
        name: str | None = None,
        ids: Iterable[str] = (),
        page_size: int = 25,
        page_number: int = 1,
    ) -> dict[str, Any]:
        """GET /api/v2/authorization/divisions: `name` is a search term (substring, any case)."""
        wanted = set(ids)
        entities = sorted(self._divisions.values(), key=lambda d: (d["name"].lower(), d["id"]))
        if name:
            entities = [d for d in entities if name.lower() in d["name"].lower()]
        if wanted:
            entities = [d for d in entities if d["id"] in wanted]
        path = "/api/v2/authorization/divisions"
        return entity_listing(
            [dict(d) for d in entities], page_size, page_number, path, {"name": name or ""}
        )

    # ---- users ---------------------------------------------------------------------------

    def _put(self, user: dict[str, Any]) -> None:
        old = self._users.get(user["id"])
        if old is not None and old["email"].lower() != user["email"].lower():
            self._by_email.pop(old["email"].lower(), None)
        self._users[user["id"]] = user
        self._by_email[user["email"].lower()] = user["id"]

    def _user(self, user_id: str) -> dict[str, Any]:
        user = self._users.get(user_id)
        if user is None:
            raise not_found(f"User {user_id} not found")
        return user

    def _conflict_if_taken(self, email: str, except_id: str | None = None) -> None:
        owner = self._by_email.get(email.lower())
        if owner is not None and owner != except_id:
            raise ApiError(
                409,
                "general.conflict",
                "The email address [{email}] is already in use.",
                params={"email": email},
                details=[{"errorCode": "general.conflict", "fieldName": "email"}],
            )

    def _build(
        self,
        *,
        user_id: str,
        name: str,
        email: str,
        division_id: str,
        state: str,
        version: int,
        department: str | None = None,
        title: str | None = None,
        addresses: list[dict[str, Any]] | None = None,
        manager_id: str | None = None,
        date_modified: str | None = None,
    ) -> dict[str, Any]:
        user: dict[str, Any] = {
            "id": user_id,
            "name": name,
            "division": self._division_ref(division_id),
            "email": email,
            "primaryContactInfo": [{"address": email, "mediaType": "EMAIL", "type": "PRIMARY"}],
            "addresses": list(addresses or []),
            "state": state,
            "username": email,
            "version": version,
            "acdAutoAnswer": False,
            "dateModified": date_modified or now_iso(),
            "selfUri": f"/api/v2/users/{user_id}",
        }
        if department is not None:
            user["department"] = department
        if title is not None:
            user["title"] = title
        if manager_id:
            user["manager"] = {"id": manager_id, "selfUri": f"/api/v2/users/{manager_id}"}
        return user

    def create(self, body: Any, now: float = 0.0) -> dict[str, Any]:
        """POST /api/v2/users with a CreateUser body. Returns the new User."""
        if not isinstance(body, dict):
            raise bad_request("The request body must be a CreateUser JSON object.")
        name = _string(body, "name", "name", required=True)
        email = _string(body, "email", "email", required=True)
        assert name is not None and email is not None
        validate_email(email)
        department = _string(body, "department", "department")
        title = _string(body, "title", "title")
        _string(body, "password", "password")  # accepted, never stored or returned
        state = "active"
        if body.get("state") is not None:
            state = _enum(body["state"], ("active", "inactive"), "state")
        division_id = body.get("divisionId")
        if division_id is None:
            division_id = self.home_division_id
        elif not isinstance(division_id, str) or division_id not in self._divisions:
            raise invalid_value("divisionId", division_id, "no division has this id")
        addresses = (
            validate_addresses(body["addresses"]) if body.get("addresses") is not None else []
        )
        user = self._build(
            user_id=str(uuid.uuid4()),
            name=name,
            email=email,
            division_id=division_id,
            state=state,
            version=1,
            department=department,
            title=title,
            addresses=addresses,
        )
        with self._lock:
            self._conflict_if_taken(email)
            self._put(user)
            self._indexed_at[user["id"]] = now
        return user

    def division_of(self, user_id: str) -> str | None:
        """The id of the user's division, None for an unknown user."""
        user = self._users.get(user_id)
        return user["division"]["id"] if user else None

    def get(
        self, user_id: str, state: str | None = None, expand: Collection[str] = ()
    ) -> dict[str, Any]:
        """GET /api/v2/users/{id}: a deleted user only with state "deleted", the others only
        without it (or with "active"). `expand` may add "locations" and "skills"."""
        wanted = state or "active"
        if wanted not in GET_STATES:
            raise invalid_query_param("state", state, GET_STATES)
        with self._lock:
            user = self._users.get(user_id)
        if user is None or (user["state"] == "deleted") != (wanted == "deleted"):
            raise not_found(f"User {user_id} not found")
        return self._present(user, expand)

    def _present(self, user: dict[str, Any], expand: Collection[str]) -> dict[str, Any]:
        if not expand:
            return user
        shown = dict(user)
        with self._lock:
            locations = list(self._locations.get(user["id"], []))
            skills = dict(self._skills.get(user["id"], {}))
        if "locations" in expand:
            shown["locations"] = [self._location_entity(loc) for loc in locations]
        if "skills" in expand:
            shown["skills"] = self._skill_entities(user["id"], skills)
        return shown

    @staticmethod
    def _version_of(body: Mapping[str, Any]) -> int:
        version = body.get("version")
        if version is None:
            raise missing_field("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise invalid_value("version", version, "must be an integer")
        return version

    @staticmethod
    def _check_version(version: int, current: Mapping[str, Any]) -> None:
        if version != current["version"]:
            raise ApiError(
                409,
                "general.conflict",
                "The version supplied [{version}] does not match the current version of the "
                "user [{current}].",
                params={"version": str(version), "current": str(current["version"])},
                details=[{"errorCode": "general.conflict", "fieldName": "version"}],
            )

    def patch(self, user_id: str, body: Any) -> dict[str, Any]:
        """PATCH /api/v2/users/{id} with an UpdateUser body: `version` must be the current one.

        Takes name, email, department, title, state (active/inactive), addresses, manager (a
        user id; "" removes the manager) and locations ([{"id", "notes"}], replacing the
        list). A deleted user is only restored: exactly {"state": "active", "version"}.
        """
        if not isinstance(body, dict):
            raise bad_request("The request body must be an UpdateUser JSON object.")
        with self._lock:
            current = self._user(user_id)
        if current["state"] == "deleted":
            return self._restore(user_id, body)
        version = self._version_of(body)
        changes: dict[str, Any] = {}
        for key in ("name", "email", "department", "title"):
            value = _string(body, key, key)
            if value is None:
                continue
            if key in ("name", "email") and not value.strip():
                raise missing_field(key)
            if key == "email":
                validate_email(value)
            changes[key] = value
        if body.get("state") is not None:
            # Deleting is DELETE /api/v2/users/{id}'s job; PATCH only switches these two.
            changes["state"] = _enum(body["state"], ("active", "inactive"), "state")
        if body.get("addresses") is not None:
            changes["addresses"] = validate_addresses(body["addresses"])
        locations = None
        if body.get("locations") is not None:
            locations = self._validate_locations(body["locations"])
        manager = body.get("manager")
        if manager is not None and not isinstance(manager, str):
            raise invalid_value("manager", manager, "must be a user id")
        with self._lock:
            current = self._user(user_id)
            if current["state"] == "deleted":
                raise not_found(f"User {user_id} not found")
            manager_id = (current.get("manager") or {}).get("id")
            if manager == "":
                manager_id = None
            elif manager is not None:
                boss = self._users.get(manager)
                if boss is None or boss["state"] == "deleted" or manager == user_id:
                    raise invalid_value("manager", manager, "no other user has this id")
                manager_id = manager
            self._check_version(version, current)
            if "email" in changes:
                self._conflict_if_taken(changes["email"], except_id=user_id)
            user = self._build(
                user_id=user_id,
                name=changes.get("name", current["name"]),
                email=changes.get("email", current["email"]),
                division_id=current["division"]["id"],
                state=changes.get("state", current["state"]),
                version=current["version"] + 1,
                department=changes.get("department", current.get("department")) or None,
                title=changes.get("title", current.get("title")) or None,
                addresses=changes.get("addresses", current["addresses"]),
                manager_id=manager_id,
            )
            self._put(user)
            if locations is not None:
                self._locations[user_id] = locations
        return user

    def _restore(self, user_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """PATCH of a deleted user: exactly {"state": "active", "version"} restores it (as
        Terraform's provider does); without state the user is not found; anything else
        beside state and version is refused."""
        if body.get("state") is None:
            raise not_found(f"User {user_id} not found")
        extra = sorted(
            k for k, v in body.items() if k not in ("state", "version") and v is not None
        )
        if extra:
            raise field_error(
                400,
                "bad.request",
                extra[0],
                "A deleted user is restored with state and version alone; [{field}] was sent too.",
            )
        if body["state"] != "active":
            raise invalid_value("state", body["state"], "a deleted user is restored as active")
        version = self._version_of(body)
        with self._lock:
            current = self._user(user_id)
            self._check_version(version, current)
            if current["state"] != "deleted":
                raise ApiError(409, "general.conflict", "The user is not deleted.")
            user = {
                **current,
                "state": "active",
                "version": current["version"] + 1,
                "dateModified": now_iso(),
            }
            self._put(user)
        return user

    def delete(self, user_id: str) -> None:
        """Soft delete: state "deleted", the email stays taken; the user goes back to the Home
        division, loses its role grants and queue memberships, and its addresses lose their
        extensions. Deleting a deleted user is a 404."""
        with self._lock:
            current = self._users.get(user_id)
            if current is None or current["state"] == "deleted":
                raise not_found(f"User {user_id} not found")
            self._put(
                {
                    **current,
                    "state": "deleted",
                    "version": current["version"] + 1,
                    "division": self._division_ref(self.home_division_id),
                    "addresses": _without_extensions(current["addresses"]),
                    "dateModified": now_iso(),
                }
            )
            self._grants.pop(user_id, None)
            for members in self._members.values():
                members.pop(user_id, None)

    def add_existing(self, record: Mapping[str, Any], *, skip_taken: bool = False) -> bool:
        """Add a user that exists before the job (seed file, org file, state file). False if
        skipped.

        Accepts the User JSON shape or a flat {name, email, title, department, state,
        divisionId, manager} dict. A taken email raises ValueError unless `skip_taken`.
        """
        email = record.get("email")
        if not isinstance(email, str) or not is_email(email):
            raise ValueError(f"existing user without a valid email: {dict(record)!r}")
        name = record.get("name") or email.split("@")[0]
        division_id = record.get("divisionId") or (record.get("division") or {}).get("id")
        state = record.get("state") or "active"
        if state not in STATES:
            raise ValueError(f"existing user {email}: state must be one of {STATES}")
        addresses = record.get("addresses") or []
        try:
            addresses = validate_addresses(addresses)
        except ApiError as error:
            raise ValueError(f"existing user {email}: {error.message}") from None
        manager = record.get("manager")
        if isinstance(manager, dict):
            manager = manager.get("id")
        user = self._build(
            user_id=str(record.get("id") or uuid.uuid4()),
            name=str(name),
            email=email,
            division_id=str(division_id or self.home_division_id),
            state=state,
            version=int(record.get("version") or 1),
            department=record.get("department") or None,
            title=record.get("title") or None,
            addresses=addresses,
            manager_id=str(manager) if manager else None,
            date_modified=record.get("dateModified"),
        )
        with self._lock:
            if email.lower() in self._by_email or user["id"] in self._users:
                if skip_taken:
                    return False
                raise ValueError(f"existing user {email}: email or id given twice")
            self._put(user)
            self._indexed_at[user["id"]] = float("-inf")
        return True

    def users(self) -> list[dict[str, Any]]:
        """All users (deleted ones included), oldest first. The dicts must not be mutated."""
        with self._lock:
            return list(self._users.values())

    def __len__(self) -> int:
        return len(self._users)

    # ---- the rest of the org: look-ups by name ---------------------------------------------

    def list_org(
        self,
        kind: str,
        name: str | None = None,
        page_size: int = 25,
        page_number: int = 1,
        sort_order: str | None = None,
        ids: Iterable[str] = (),
    ) -> dict[str, Any]:
        """GET /api/v2/authorization/roles, /routing/queues, /routing/skills, /locations: one
        page of the objects whose names match `name` the way that endpoint matches names."""
        found = self.org.matching(kind, name, ids, descending=sort_descending(sort_order))
        if kind == "queues":
            with self._lock:
                counts = {q: len(m) for q, m in self._members.items()}
            found = [_queue_with_counts(q, counts.get(q["id"], 0)) for q in found]
        else:
            found = [dict(item) for item in found]
        query = {"name": name or "", "sortOrder": sort_order or ""}
        return entity_listing(found, page_size, page_number, PATHS[kind], query)

    # ---- onboarding ------------------------------------------------------------------------

    def _onboarded(self, user_id: str, now: float, fresh_s: float) -> dict[str, Any]:
        """(lock held) A user the onboarding services know: not deleted, and created at least
        `fresh_s` ago. Anyone else is a 404, as a real org's other services answer."""
        user = self._users.get(user_id)
        created = self._indexed_at.get(user_id, float("-inf"))
        if user is None or user["state"] == "deleted" or now - created < fresh_s:
            raise not_found(f"User {user_id} not found")
        return user

    def grant(self, subject_id: str, body: Any, now: float = 0.0, fresh_s: float = 0.0) -> None:
        """POST /api/v2/authorization/subjects/{id}/bulkadd with RoleDivisionGrants. A grant
        already held stays as it was; nothing is granted unless every pair is valid."""
        if not isinstance(body, dict):
            raise bad_request("The request body must be a RoleDivisionGrants JSON object.")
        raw = body.get("grants")
        if raw is None:
            raise missing_field("grants")
        if not isinstance(raw, list):
            raise invalid_value("grants", raw, "must be a list of {roleId, divisionId}")
        pairs: list[tuple[str, str]] = []
        for index, entry in enumerate(raw):
            where = f"grants[{index}]"
            if not isinstance(entry, dict):
                raise invalid_value(where, entry, "must be a {roleId, divisionId} object")
            for key in ("roleId", "divisionId"):
                if entry.get(key) in (None, ""):
                    raise missing_field(f"{where}.{key}")
            role_id, division_id = entry["roleId"], entry["divisionId"]
            if self.org.get("roles", role_id) is None:
                raise invalid_value(where + ".roleId", role_id, "no role has this id")
            if not isinstance(division_id, str) or division_id not in self._divisions:
                raise invalid_value(where + ".divisionId", division_id, "no division has this id")
            pairs.append((role_id, division_id))
        with self._lock:
            self._onboarded(subject_id, now, fresh_s)
            held = self._grants.setdefault(subject_id, {})
            stamp = now_iso()
            for pair in pairs:
                held.setdefault(pair, stamp)

    def subject(self, subject_id: str, now: float = 0.0, fresh_s: float = 0.0) -> dict[str, Any]:
        """GET /api/v2/authorization/subjects/{id}: an AuthzSubject with the user's grants."""
        with self._lock:
            user = self._onboarded(subject_id, now, fresh_s)
            held = list(self._grants.get(subject_id, {}).items())
        grants: list[dict[str, Any]] = []
        for (role_id, division_id), made_at in held:
            role = self.org.get("roles", role_id) or {}
            grants.append(
                {
                    "subjectId": subject_id,
                    "division": dict(self._divisions[division_id]),
                    "role": {
                        "id": role_id,
                        "name": role.get("name", ""),
                        "description": role.get("description", ""),
                        "default": role.get("default", False),
                        "selfUri": f"/api/v2/authorization/roles/{role_id}",
                    },
                    "grantMadeAt": made_at,
                }
            )
        grants.sort(key=lambda g: (g["role"]["name"].lower(), g["division"]["name"].lower()))
        return {
            "id": subject_id,
            "name": user["name"],
            "grants": grants,
            "selfUri": f"/api/v2/authorization/subjects/{subject_id}",
        }

    def set_skills(
        self, user_id: str, body: Any, now: float = 0.0, fresh_s: float = 0.0
    ) -> dict[str, Any]:
        """PATCH /api/v2/users/{id}/routingskills/bulk: add or update (never remove) up to 50
        skills; answers a UserSkillEntityListing of all the user's skills."""
        if not isinstance(body, list):
            raise bad_request("The request body must be a list of UserRoutingSkillPost objects.")
        if len(body) > MAX_SKILLS_PER_CALL:
            raise ApiError(
                400,
                "bad.request",
                "At most {max} skills may be added or updated in one request; this one has "
                "{count}.",
                params={"max": str(MAX_SKILLS_PER_CALL), "count": str(len(body))},
            )
        entries: list[tuple[str, float]] = []
        for index, entry in enumerate(body):
            where = f"body[{index}]"
            if not isinstance(entry, dict):
                raise invalid_value(where, entry, "must be a {id, proficiency} object")
            skill_id, proficiency = entry.get("id"), entry.get("proficiency")
            if skill_id in (None, ""):
                raise missing_field(where + ".id")
            if proficiency is None:
                raise missing_field(where + ".proficiency")
            if (
                isinstance(proficiency, bool)
                or not isinstance(proficiency, (int, float))
                or not 0 <= proficiency <= 5
            ):
                raise invalid_value(where + ".proficiency", proficiency, "must be from 0 to 5")
            if self.org.get("skills", skill_id) is None:
                raise invalid_value(where + ".id", skill_id, "no skill has this id")
            entries.append((skill_id, float(proficiency)))
        with self._lock:
            self._onboarded(user_id, now, fresh_s)
            held = self._skills.setdefault(user_id, {})
            held.update(entries)
            snapshot = dict(held)
        items = self._skill_entities(user_id, snapshot)
        path = f"/api/v2/users/{user_id}/routingskills"
        return entity_listing(items, max(25, len(items)), 1, path)

    def user_skills(
        self,
        user_id: str,
        page_size: int = 25,
        page_number: int = 1,
        sort_order: str | None = None,
        now: float = 0.0,
        fresh_s: float = 0.0,
    ) -> dict[str, Any]:
        """GET /api/v2/users/{id}/routingskills: a UserSkillEntityListing, sorted by name."""
        descending = sort_descending(sort_order)
        with self._lock:
            self._onboarded(user_id, now, fresh_s)
            snapshot = dict(self._skills.get(user_id, {}))
        items = self._skill_entities(user_id, snapshot, descending)
        path = f"/api/v2/users/{user_id}/routingskills"
        return entity_listing(items, page_size, page_number, path, {"sortOrder": sort_order or ""})

    def _skill_entities(
        self, user_id: str, skills: Mapping[str, float], descending: bool = False
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = [
            {
                "id": skill_id,
                "name": self.org.name_of("skills", skill_id),
                "proficiency": proficiency,
                "state": "active",
                "skillUri": f"/api/v2/routing/skills/{skill_id}",
                "selfUri": f"/api/v2/users/{user_id}/routingskills/{skill_id}",
            }
            for skill_id, proficiency in skills.items()
        ]
        items.sort(key=lambda s: (s["name"].lower(), s["id"]), reverse=descending)
        return items

    def update_queue_members(
        self,
        queue_id: str,
        body: Any,
        delete: bool = False,
        now: float = 0.0,
        fresh_s: float = 0.0,
    ) -> None:
        """POST /api/v2/routing/queues/{id}/members: add (or with `delete`, remove) 1 to 100
        users. One unknown user refuses the whole batch (404); members already there, or
        already gone, are fine."""
        if not isinstance(body, list):
            raise bad_request("The request body must be a list of {id} objects.")
        if not 1 <= len(body) <= MAX_MEMBERS_PER_CALL:
            raise ApiError(400, "bad.request", MEMBERS_COUNT_MESSAGE)
        user_ids: list[str] = []
        for index, entry in enumerate(body):
            where = f"body[{index}]"
            if not isinstance(entry, dict):
                raise invalid_value(where, entry, "must be an {id} object")
            user_id = entry.get("id")
            if user_id in (None, ""):
                raise missing_field(where + ".id")
            if not isinstance(user_id, str):
                raise invalid_value(where + ".id", user_id, "must be a user id")
            user_ids.append(user_id)
        if self.org.get("queues", queue_id) is None:
            raise not_found(f"Queue {queue_id} not found")
        with self._lock:
            for user_id in user_ids:
                self._onboarded(user_id, now, fresh_s)
            members = self._members.setdefault(queue_id, {})
            for user_id in user_ids:
                if delete:
                    members.pop(user_id, None)
                else:
                    members.setdefault(user_id, None)

    def queue_members(
        self,
        queue_id: str,
        page_size: int = 25,
        page_number: int = 1,
        sort_order: str | None = None,
        name: str | None = None,
        joined: bool | None = None,
    ) -> dict[str, Any]:
        """GET /api/v2/routing/queues/{id}/members: a QueueMemberEntityListing (no total or
        pageCount in the real one either: page until there is no nextUri)."""
        if self.org.get("queues", queue_id) is None:
            raise not_found(f"Queue {queue_id} not found")
        descending = sort_descending(sort_order)
        with self._lock:
            users = [self._users[u] for u in self._members.get(queue_id, {})]
        if name:
            users = [u for u in users if name.lower() in u["name"].lower()]
        if joined is False:
            users = []  # every member the emulator adds is joined
        users.sort(key=lambda u: (u["name"].lower(), u["id"]), reverse=descending)
        entities = [
            {
                "id": u["id"],
                "name": u["name"],
                "user": {
                    key: u[key]
                    for key in ("id", "name", "division", "email", "state", "username", "version")
                }
                | {"selfUri": u["selfUri"]},
                "ringNumber": 1,
                "joined": True,
                "memberBy": "user",
                "selfUri": f"/api/v2/routing/queues/{queue_id}/members/{u['id']}",
            }
            for u in users
        ]
        path = f"/api/v2/routing/queues/{queue_id}/members"
        query = {"sortOrder": sort_order or "", "name": name or ""}
        return entity_listing(entities, page_size, page_number, path, query, counted=False)

    def user_queues(
        self,
        user_id: str,
        page_size: int = 25,
        page_number: int = 1,
        joined: bool | None = None,
        division_ids: Collection[str] = (),
        now: float = 0.0,
        fresh_s: float = 0.0,
    ) -> dict[str, Any]:
        """GET /api/v2/users/{id}/queues: the queues the user is a member of
        (UserQueueEntityListing), sorted by name."""
        with self._lock:
            self._onboarded(user_id, now, fresh_s)
            counts = {q: len(m) for q, m in self._members.items() if user_id in m}
        queues = []
        for queue_id, count in counts.items():
            queue = self.org.get("queues", queue_id)
            if queue is not None:
                queues.append(_queue_with_counts(queue, count) | {"joined": True})
        if division_ids:
            queues = [q for q in queues if q["division"]["id"] in division_ids]
        if joined is False:
            queues = []
        queues.sort(key=lambda q: (q["name"].lower(), q["id"]))
        path = f"/api/v2/users/{user_id}/queues"
        return entity_listing(queues, page_size, page_number, path)

    def _validate_locations(self, value: Any) -> list[dict[str, Any]]:
        """UpdateUser.locations as the Terraform provider sends it: [{"id", "notes"}] (an id
        inside "locationDefinition" is taken too)."""
        if not isinstance(value, list):
            raise invalid_value("locations", value, "must be a list of Location objects")
        cleaned: dict[str, dict[str, Any]] = {}
        for index, entry in enumerate(value):
            where = f"locations[{index}]"
            if not isinstance(entry, dict):
                raise invalid_value(where, entry, "must be a Location object")
            location_id = entry.get("id")
            definition = entry.get("locationDefinition")
            if location_id in (None, "") and isinstance(definition, dict):
                location_id = definition.get("id")
            if location_id in (None, ""):
                raise missing_field(where + ".id")
            if self.org.get("locations", location_id) is None:
                raise invalid_value(where + ".id", location_id, "no location has this id")
            notes = entry.get("notes")
            if notes is not None and not isinstance(notes, str):
                raise invalid_value(where + ".notes", notes, "must be a string")
            cleaned[location_id] = {"id": location_id, **({"notes": notes} if notes else {})}
        return list(cleaned.values())

    def _location_entity(self, location: Mapping[str, Any]) -> dict[str, Any]:
        definition = self.org.get("locations", location["id"]) or {"id": location["id"]}
        return {"id": location["id"], "locationDefinition": dict(definition)} | (
            {"notes": location["notes"]} if location.get("notes") else {}
        )

    def move_to_division(self, division_id: str, object_type: str, body: Any) -> None:
        """POST /api/v2/authorization/divisions/{id}/objects/USER: moves users there. An
        unknown division or user is a 404 and moves nobody."""
        if division_id not in self._divisions:
            raise not_found(f"Division {division_id} not found")
        if object_type != "USER":
            raise invalid_value("objectType", object_type, "the emulator moves USER objects only")
        if not isinstance(body, list) or not all(isinstance(i, str) for i in body):
            raise bad_request("The request body must be a JSON list of object ids.")
        with self._lock:
            for user_id in body:
                user = self._users.get(user_id)
                if user is None or user["state"] == "deleted":
                    raise not_found(f"User {user_id} not found")
            for user_id in dict.fromkeys(body):
                current = self._users[user_id]
                if current["division"]["id"] == division_id:
                    continue
                self._put(
                    {
                        **current,
                        "division": self._division_ref(division_id),
                        "version": current["version"] + 1,
                        "dateModified": now_iso(),
                    }
                )

    # ---- onboarding state: statistics and persistence --------------------------------------

    def onboarding(self) -> dict[str, dict[str, Any]]:
        """Every user's onboarding state keyed by lower-cased email, in names: grants as
        [role, division] pairs, skills {name: proficiency}, queues, manager (email), location
        (the first one's name), division, state."""
        with self._lock:
            users = list(self._users.values())
            grants = {u: list(g) for u, g in self._grants.items()}
            skills = {u: dict(s) for u, s in self._skills.items()}
            locations = {u: list(loc) for u, loc in self._locations.items()}
            queues_of: dict[str, list[str]] = defaultdict(list)
            for queue_id, members in self._members.items():
                for user_id in members:
                    queues_of[user_id].append(self.org.name_of("queues", queue_id))
        emails = {u["id"]: u["email"].lower() for u in users}
        summary: dict[str, dict[str, Any]] = {}
        for user in users:
            user_id = user["id"]
            manager_id = (user.get("manager") or {}).get("id")
            held_locations = locations.get(user_id) or []
            first_location = held_locations[0] if held_locations else None
            summary[user["email"].lower()] = {
                "state": user["state"],
                "division": self._divisions.get(user["division"]["id"], {}).get("name", ""),
                "grants": sorted(
                    [self.org.name_of("roles", role_id), self._divisions[division_id]["name"]]
                    for role_id, division_id in grants.get(user_id, [])
                ),
                "skills": {
                    self.org.name_of("skills", skill_id): proficiency
                    for skill_id, proficiency in sorted(skills.get(user_id, {}).items())
                },
                "queues": sorted(queues_of.get(user_id, [])),
                "manager": emails.get(manager_id) if manager_id else None,
                "location": (
                    self.org.name_of("locations", first_location["id"]) if first_location else None
                ),
            }
        return summary

    def export_onboarding(self) -> dict[str, Any]:
        """Grants, skills, queue members and user locations, for the state file."""
        with self._lock:
            return {
                "grants": {
                    user_id: [[role, division, made_at] for (role, division), made_at in g.items()]
                    for user_id, g in self._grants.items()
                    if g
                },
                "skills": {user_id: dict(s) for user_id, s in self._skills.items() if s},
                "queueMembers": {q: list(m) for q, m in self._members.items() if m},
                "userLocations": {u: list(loc) for u, loc in self._locations.items() if loc},
            }

    def load_onboarding(self, data: Mapping[str, Any]) -> int:
        """Restore export_onboarding()'s data after the users are loaded. References to users,
        roles, divisions, skills, queues or locations that are no longer there are dropped;
        returns how many were."""
        dropped = 0
        with self._lock:
            for user_id, grants in (data.get("grants") or {}).items():
                for role_id, division_id, made_at in grants:
                    if (
                        user_id in self._users
                        and self.org.get("roles", role_id) is not None
                        and division_id in self._divisions
                    ):
                        self._grants.setdefault(user_id, {})[(role_id, division_id)] = made_at
                    else:
                        dropped += 1
            for user_id, skills in (data.get("skills") or {}).items():
                for skill_id, proficiency in skills.items():
                    if user_id in self._users and self.org.get("skills", skill_id) is not None:
                        self._skills.setdefault(user_id, {})[skill_id] = float(proficiency)
                    else:
                        dropped += 1
            for queue_id, members in (data.get("queueMembers") or {}).items():
                for user_id in members:
                    if user_id in self._users and self.org.get("queues", queue_id) is not None:
                        self._members.setdefault(queue_id, {})[user_id] = None
                    else:
                        dropped += 1
            for user_id, locations in (data.get("userLocations") or {}).items():
                kept = [
                    loc
                    for loc in locations
                    if user_id in self._users and self.org.get("locations", loc.get("id"))
                ]
                dropped += len(locations) - len(kept)
                if kept:
                    self._locations[user_id] = kept
        return dropped

    # ---- search --------------------------------------------------------------------------

    def search(
        self,
        body: Any,
        now: float = 0.0,
        index_delay_s: float = 0.0,
        hidden_divisions: Collection[str] = (),
    ) -> dict[str, Any]:
        """POST /api/v2/users/search with a UserSearchRequest body.

        Criteria are combined the Genesys (Elasticsearch bool) way: AND (the default) must
        match, NOT must not, and when OR criteria are present at least one must match. Without
        a criterion on `state`, only active and inactive users are returned. A user becomes
        searchable `index_delay_s` after its creation (the real index is eventually consistent).
        Users in `hidden_divisions` (where the caller may not view users) are left out.
        """
        if not isinstance(body, dict):
            raise bad_request("The request body must be a UserSearchRequest JSON object.")
        query = body.get("query")
        if not isinstance(query, list) or not query:
            raise missing_field("query")
        page_size = _int(body, "pageSize", 25, 1, MAX_PAGE_SIZE)
        page_number = _int(body, "pageNumber", 1, 1, None)
        sort_order = body.get("sortOrder") or "ASC"
        _enum(sort_order, ("ASC", "DESC", "SCORE"), "sortOrder")
        sort_by = body.get("sortBy") or "name"
        _enum(sort_by, SEARCH_SORT_FIELDS, "sortBy")
        criteria = [_Criterion.parse(c, f"query[{i}]") for i, c in enumerate(query)]
        mentions_state = any(c.mentions("state") for c in criteria)
        with self._lock:
            candidates = [
                u
                for u in self._users.values()
                if now - self._indexed_at.get(u["id"], float("-inf")) >= index_delay_s
                and u["division"]["id"] not in hidden_divisions
            ]
        results = [
            u
            for u in candidates
            if (mentions_state or u["state"] in DEFAULT_SEARCH_STATES) and _combine(criteria, u)
        ]
        results.sort(
            key=lambda u: (str(u.get(sort_by, "")).lower(), u["id"]), reverse=sort_order == "DESC"
        )
        listing = _page("results", results, page_size, page_number)
        listing["types"] = ["users"]
        return listing


def _field_values(user: Mapping[str, Any], field: str) -> list[str]:
    if field == "division.id":
        return [user["division"]["id"]]
    value = user.get(field)
    return [value] if isinstance(value, str) else []


class _Criterion:
    def __init__(
        self,
        kind: str,
        fields: list[str],
        values: list[str],
        operator: str,
        group: list[_Criterion],
    ) -> None:
        self.kind = kind
        self.fields = fields
        self.values = [v.lower() for v in values]
        self.operator = operator
        self.group = group

    @classmethod
    def parse(cls, raw: Any, where: str) -> _Criterion:
        if not isinstance(raw, dict):
            raise invalid_value(where, raw, "must be a search criterion object")
        operator = raw.get("operator") or "AND"
        _enum(operator, SEARCH_OPERATORS, where + ".operator")
        group_raw = raw.get("group")
        if group_raw is not None:
            if not isinstance(group_raw, list) or not group_raw:
                raise invalid_value(where + ".group", group_raw, "must be a non-empty list")
            group = [cls.parse(g, f"{where}.group[{i}]") for i, g in enumerate(group_raw)]
            return cls("GROUP", [], [], operator, group)
        kind = raw.get("type")
        if kind is None:
            raise missing_field(where + ".type")
        _enum(kind, SEARCH_TYPES, where + ".type")
        if kind not in SUPPORTED_SEARCH_TYPES:
            raise bad_request(f"The emulator does not evaluate search criteria of type {kind}.")
        if kind == "MATCH_ALL":
            return cls(kind, [], [], operator, [])
        fields = raw.get("fields")
        if not isinstance(fields, list) or not fields:
            raise missing_field(where + ".fields")
        for field in fields:
            _enum(field, SEARCH_FIELDS, where + ".fields")
        values: list[str] = []
        if raw.get("value") is not None:
            values.append(raw["value"])
        if raw.get("values") is not None:
            if not isinstance(raw["values"], list):
                raise invalid_value(where + ".values", raw["values"], "must be a list")
            values.extend(raw["values"])
        if not values:
            raise missing_field(where + ".value")
        if not all(isinstance(v, str) for v in values):
            raise invalid_value(where + ".values", values, "must be strings")
        return cls(kind, fields, values, operator, [])

    def mentions(self, field: str) -> bool:
        return field in self.fields or any(g.mentions(field) for g in self.group)

    def matches(self, user: Mapping[str, Any]) -> bool:
        if self.kind == "GROUP":
            return _combine(self.group, user)
        if self.kind == "MATCH_ALL":
            return True
        for field in self.fields:
            for have in _field_values(user, field):
                have = have.lower()
                for want in self.values:
                    if self.kind in ("EXACT", "TERM", "TERMS") and have == want:
                        return True
                    if self.kind == "CONTAINS" and want in have:
                        return True
                    if self.kind == "STARTS_WITH" and have.startswith(want):
                        return True
        return False


def _combine(criteria: list[_Criterion], user: Mapping[str, Any]) -> bool:
    should = [c for c in criteria if c.operator == "OR"]
    for criterion in criteria:
        if criterion.operator == "AND" and not criterion.matches(user):
            return False
        if criterion.operator == "NOT" and criterion.matches(user):
            return False
    return not should or any(c.matches(user) for c in should)


def _queue_with_counts(queue: Mapping[str, Any], members: int) -> dict[str, Any]:
    return {
        **queue,
        "memberCount": members,
        "userMemberCount": members,
        "joinedMemberCount": members,
    }


def _without_extensions(addresses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A deleted user's addresses: extensions go back to the pool."""
    kept = []
    for contact in addresses:
        if "extension" not in contact:
            kept.append(contact)
        elif contact.get("address"):
            kept.append({k: v for k, v in contact.items() if k != "extension"})
    return kept


def _page(key: str, items: list[Any], page_size: int, page_number: int) -> dict[str, Any]:
    start = (page_number - 1) * page_size
    total = len(items)
    return {
        key: items[start : start + page_size],
        "pageSize": page_size,
        "pageNumber": page_number,
        "total": total,
        "pageCount": math.ceil(total / page_size) if total else 0,
    }


# ---- files -------------------------------------------------------------------------------


def read_existing_users(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Users that exist before the job: a JSON list of user dicts, or a CSV whose header has
    name,email and optionally title,department,state,divisionId."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("users"), list):
            data = data["users"]
        if not isinstance(data, list) or not all(isinstance(u, dict) for u in data):
            raise ValueError(f"{path}: expected a JSON list of user objects")
        return data
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "email" not in reader.fieldnames:
        raise ValueError(f"{path}: the CSV header must name an email column")
    return [
        {k: v.strip() for k, v in row.items() if k and v is not None and v.strip()}
        for row in reader
    ]


def load_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The saved state file, or None when it does not exist yet."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("users"), list):
        raise ValueError(f"{path}: not an emulator state file")
    return data


def save_state(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
