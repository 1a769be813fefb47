"""Users and divisions as the Genesys Cloud users API keeps them.

`Directory` validates requests the way the API does (400 naming the field, 409 on a taken email,
404 on an unknown id, 409 on a stale version), soft-deletes, searches, and lists divisions. It
knows nothing about HTTP and is safe to call from many threads (one short lock; user records
are replaced, never mutated, so a snapshot can be serialised outside the lock).
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
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jobrunner.emulator.errors import (
    ApiError,
    bad_request,
    invalid_value,
    missing_field,
    not_found,
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
    """The org's users and divisions.

    `divisions` maps extra division names to ids; the Home division is always there.
    """

    def __init__(self, home_division_id: str, divisions: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, dict[str, Any]] = {}
        self._by_email: dict[str, str] = {}
        self._indexed_at: dict[str, float] = {}
        self.home_division_id = home_division_id
        self._divisions: dict[str, dict[str, Any]] = {}
        self._add_division(home_division_id, "Home", home=True)
        for name, division_id in (divisions or {}).items():
            if name == "Home" or division_id == home_division_id:
                raise ValueError(f"division {name}={division_id} clashes with the Home division")
            self._add_division(division_id, name, home=False)

    # ---- divisions -----------------------------------------------------------------------

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
        return _page("entities", [dict(d) for d in entities], page_size, page_number)

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

    def get(self, user_id: str, state: str | None = None) -> dict[str, Any]:
        with self._lock:
            user = self._user(user_id)
        if state is not None and user["state"] != state:
            raise not_found(f"User {user_id} not found")
        return user

    def patch(self, user_id: str, body: Any) -> dict[str, Any]:
        """PATCH /api/v2/users/{id} with an UpdateUser body: `version` must be the current one."""
        if not isinstance(body, dict):
            raise bad_request("The request body must be an UpdateUser JSON object.")
        version = body.get("version")
        if version is None:
            raise missing_field("version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise invalid_value("version", version, "must be an integer")
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
            changes["state"] = _enum(body["state"], STATES, "state")
        if body.get("addresses") is not None:
            changes["addresses"] = validate_addresses(body["addresses"])
        with self._lock:
            current = self._user(user_id)
            if version != current["version"]:
                raise ApiError(
                    409,
                    "general.conflict",
                    "The version supplied [{version}] does not match the current version of the "
                    "user [{current}].",
                    params={"version": str(version), "current": str(current["version"])},
                    details=[{"errorCode": "general.conflict", "fieldName": "version"}],
                )
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
            )
            self._put(user)
        return user

    def delete(self, user_id: str) -> None:
        """Soft delete: state "deleted", the email stays taken."""
        with self._lock:
            current = self._user(user_id)
            if current["state"] != "deleted":
                self._put(
                    {
                        **current,
                        "state": "deleted",
                        "version": current["version"] + 1,
                        "dateModified": now_iso(),
                    }
                )

    def add_existing(self, record: Mapping[str, Any], *, skip_taken: bool = False) -> bool:
        """Add a user that exists before the job (seed file, state file). False if skipped.

        Accepts the User JSON shape or a flat {name, email, title, department, state,
        divisionId} dict. A taken email raises ValueError unless `skip_taken`.
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

    # ---- search --------------------------------------------------------------------------

    def search(self, body: Any, now: float = 0.0, index_delay_s: float = 0.0) -> dict[str, Any]:
        """POST /api/v2/users/search with a UserSearchRequest body.

        Criteria are combined the Genesys (Elasticsearch bool) way: AND (the default) must
        match, NOT must not, and when OR criteria are present at least one must match. Without
        a criterion on `state`, only active and inactive users are returned. A user becomes
        searchable `index_delay_s` after its creation (the real index is eventually consistent).
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
