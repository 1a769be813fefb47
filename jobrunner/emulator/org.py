"""Roles, queues, skills, languages and locations: the org file, their ids, and look-ups by
name the way the real endpoints match names.

A `Catalog` is filled once at start-up and never changes afterwards, so threads share it
without a lock. Divisions live in `Directory` (users point at them); the org file's users are
ordinary existing users.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jobrunner.emulator.errors import invalid_query_param

KINDS = ("roles", "queues", "skills", "languages", "locations")
ORG_KEYS = ("divisions", *KINDS, "users", "extensionPools")
MAX_NAME = 255
SORT_ORDERS = ("asc", "desc", "ascending", "descending")


def stable_id(seed: int | None, kind: str, name: str) -> str:
    """An id for an org object given without one: the same for the same seed, kind and name
    (a random one when there is no seed). Shaped as a version-4 UUID like the real ids."""
    if seed is None:
        return str(uuid.uuid4())
    digest = hashlib.sha256(f"{seed}\0{kind}\0{name}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def read_org_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The org file: a JSON object with any of the keys in ORG_KEYS, each a list of objects
    with a unique name and, optionally, a UUID id. Raises ValueError naming the problem."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8-sig"))
    check_org(data, str(path))
    try:
        for kind in ("divisions", *KINDS):
            org_entries(data, kind, seed=0)
        extension_pools(data)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return data


def check_org(data: Any, where: str = "org") -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object with {', '.join(ORG_KEYS)}")
    unknown = sorted(set(data) - set(ORG_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; expected {ORG_KEYS}")
    for key in ORG_KEYS:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise ValueError(f"{where}: {key} must be a list of objects")


def org_entries(data: Mapping[str, Any], kind: str, seed: int | None) -> list[tuple[str, str]]:
    """(id, name) pairs of one kind. Names must be non-empty and unique in their kind (two
    that differ only in case are allowed: real orgs have them); ids must be UUIDs."""
    pairs: list[tuple[str, str]] = []
    names: set[str] = set()
    ids: set[str] = set()
    for entry in data.get(kind) or []:
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise ValueError(f"{kind}: every entry needs a name (1-{MAX_NAME} characters)")
        raw_id = entry.get("id")
        object_id = stable_id(seed, kind, name) if raw_id in (None, "") else raw_id
        try:
            object_id = str(uuid.UUID(str(object_id)))
        except ValueError:
            raise ValueError(f"{kind}: id for {name!r} is not a UUID: {raw_id!r}") from None
        if name in names:
            raise ValueError(f"{kind}: the name {name!r} is given twice")
        if object_id in ids:
            raise ValueError(f"{kind}: the id {object_id} is given twice")
        names.add(name)
        ids.add(object_id)
        pairs.append((object_id, name))
    return pairs


def extension_pools(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The org file's "extensionPools" ([{"startNumber", "endNumber"}], as the API's
    ExtensionPool) as (start, end) pairs of digit strings."""
    pools = []
    for entry in data.get("extensionPools") or []:
        pools.append(extension_pool(entry.get("startNumber"), entry.get("endNumber")))
    return pools


def extension_pool(start: Any, end: Any) -> tuple[str, str]:
    """A pool of extensions from `start` to `end`: digits, as many of each, start <= end."""
    if not (
        isinstance(start, str)
        and isinstance(end, str)
        and start.isdigit()
        and end.isdigit()
        and len(start) == len(end)
        and int(start) <= int(end)
    ):
        raise ValueError(
            f"extension pool {start!r}-{end!r}: startNumber and endNumber are digit strings of "
            "one length, the start not above the end"
        )
    return start, end


# ---- name matching, as each real endpoint does it -----------------------------------------


def _contains(term: str) -> Callable[[str], bool]:
    term = term.lower()
    return lambda name: term in name.lower()


def _starts_with(term: str) -> Callable[[str], bool]:
    term = term.lower()
    return lambda name: name.lower().startswith(term)


def _whole_name(term: str) -> Callable[[str], bool]:
    """GET /api/v2/routing/queues?name=: the whole name, with a leading and/or trailing `*`."""
    lead, trail = term.startswith("*"), term.endswith("*") and len(term) > 1
    core = term.strip("*").lower()
    if lead and trail:
        return lambda name: core in name.lower()
    if lead:
        return lambda name: name.lower().endswith(core)
    if trail:
        return lambda name: name.lower().startswith(core)
    return lambda name: name.lower() == core


MATCHERS: dict[str, Callable[[str], Callable[[str], bool]] | None] = {
    "roles": _contains,
    "queues": _whole_name,
    "skills": _starts_with,
    # GET /api/v2/routing/languages?name=: Genesys documents the parameter only as "Name"
    # (RoutingApi.get_routing_languages), and the Terraform provider compares the names it
    # gets back exactly; so the emulator matches the start of the name, as for skills.
    "languages": _starts_with,
    "locations": None,  # the real GET /api/v2/locations has no name filter
}

PATHS = {
    "roles": "/api/v2/authorization/roles",
    "queues": "/api/v2/routing/queues",
    "skills": "/api/v2/routing/skills",
    "languages": "/api/v2/routing/languages",
    "locations": "/api/v2/locations",
}


# ---- listings ------------------------------------------------------------------------------


def entity_listing(
    items: list[Any],
    page_size: int,
    page_number: int,
    path: str,
    query: Mapping[str, str] | None = None,
    *,
    counted: bool = True,
) -> dict[str, Any]:
    """One page of an entity listing as Genesys sends it: entities, pageSize, pageNumber,
    total and pageCount (unless `counted` is False, as for queue members), and the
    first/self/next/previous/last URIs."""
    start = (page_number - 1) * page_size
    total = len(items)
    page_count = math.ceil(total / page_size) if total else 0
    extra = {k: v for k, v in (query or {}).items() if v not in (None, "")}

    def uri(number: int) -> str:
        return path + "?" + urlencode({"pageSize": page_size, "pageNumber": number, **extra})

    listing: dict[str, Any] = {
        "entities": items[start : start + page_size],
        "pageSize": page_size,
        "pageNumber": page_number,
    }
    if counted:
        listing["total"] = total
    listing["firstUri"] = uri(1)
    listing["selfUri"] = uri(page_number)
    if page_number < page_count:
        listing["nextUri"] = uri(page_number + 1)
    if page_number > 1:
        listing["previousUri"] = uri(page_number - 1)
    if counted:
        listing["lastUri"] = uri(max(page_count, 1))
        listing["pageCount"] = page_count
    return listing


def sort_descending(sort_order: str | None) -> bool:
    if sort_order in (None, ""):
        return False
    assert sort_order is not None
    if sort_order.lower() not in SORT_ORDERS:
        raise invalid_query_param("sortOrder", sort_order, SORT_ORDERS)
    return sort_order.lower() in ("desc", "descending")


# ---- the catalog ---------------------------------------------------------------------------


class Catalog:
    """The org's roles, queues, skills, languages and locations, in the shapes the API
    sends."""

    def __init__(self, home_division_ref: Mapping[str, Any], created: str) -> None:
        self._home = dict(home_division_ref)
        self._created = created
        self._items: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}

    def add(self, kind: str, object_id: str, name: str) -> None:
        if object_id in self._items[kind]:
            raise ValueError(f"{kind}: the id {object_id} is given twice")
        self._items[kind][object_id] = self._shape(kind, object_id, name)

    def _shape(self, kind: str, object_id: str, name: str) -> dict[str, Any]:
        self_uri = f"{PATHS[kind]}/{object_id}"
        if kind == "roles":  # DomainOrganizationRole
            return {
                "id": object_id,
                "name": name,
                "description": "",
                "permissions": [],
                "permissionPolicies": [],
                "default": False,
                "base": False,
                "roleNeedsUpdate": False,
                "selfUri": self_uri,
            }
        if kind == "queues":  # Queue; member counts are the Directory's to fill in
            return {
                "id": object_id,
                "name": name,
                "division": dict(self._home),
                "description": "",
                "dateCreated": self._created,
                "dateModified": self._created,
                "selfUri": self_uri,
            }
        if kind in ("skills", "languages"):  # RoutingSkill, Language
            return {
                "id": object_id,
                "name": name,
                "dateModified": self._created,
                "state": "active",
                "version": "1",
                "selfUri": self_uri,
            }
        return {  # LocationDefinition
            "id": object_id,
            "name": name,
            "state": "active",
            "version": 1,
            "path": [],
            "addressVerified": False,
            "selfUri": self_uri,
        }

    def get(self, kind: str, object_id: Any) -> dict[str, Any] | None:
        """The object (not to be mutated), or None for an unknown or non-string id."""
        if not isinstance(object_id, str):
            return None
        return self._items[kind].get(object_id)

    def named(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object of this kind with exactly this name, or None."""
        return next((i for i in self._items[kind].values() if i["name"] == name), None)

    def name_of(self, kind: str, object_id: str) -> str:
        item = self._items[kind].get(object_id)
        return item["name"] if item else ""

    def matching(
        self, kind: str, name: str | None = None, ids: Any = (), descending: bool = False
    ) -> list[dict[str, Any]]:
        """Objects whose name matches `name` as the real endpoint matches it, sorted by name."""
        found = list(self._items[kind].values())
        matcher = MATCHERS[kind]
        if name and matcher is not None:
            accepts = matcher(name)
            found = [item for item in found if accepts(item["name"])]
        wanted = set(ids)
        if wanted:
            found = [item for item in found if item["id"] in wanted]
        found.sort(key=lambda item: (item["name"].lower(), item["name"], item["id"]))
        if descending:
            found.reverse()
        return found

    def __len__(self) -> int:
        return sum(len(items) for items in self._items.values())
