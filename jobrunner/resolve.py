"""Names to ids: every division, role, queue, skill, location and manager a file names.

Each distinct name is looked up once per run with the API's list calls (every page), and
matched exactly, ignoring case and outer spaces; two objects whose names differ only in case
are an ambiguity. A manager is a person of the same ledger (created in this job) or an
existing user found by email.

`jobrunner check` prints what this finds and what `run` would do; `run` does the same before
its first create, and fails (before any create) each row that names something unknown.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobrunner.genesys import Named
from jobrunner.ledger import Ledger
from jobrunner.ledger.model import Row
from jobrunner.validation import is_uuid, key_of, name_key

KINDS = ("division", "role", "queue", "skill", "language", "location", "manager")
MANAGER_IN_LEDGER = "row"  # a manager's object id when the manager is a row of this ledger


@dataclass
class Found:
    kind: str
    key: str
    name: str  # as the org spells it, or as written when it was not found
    id: str | None  # None: unknown or ambiguous
    problem: str | None = None
    held: str | None = None  # a manager whose own row is invalid or failed: why reports wait


@dataclass
class Resolution:
    """What the names of a ledger's remaining work resolve to."""

    found: dict[tuple[str, str], Found] = field(default_factory=dict)
    # (kind, key) -> [(row id, source, line)] of the rows that use it
    uses: dict[tuple[str, str], list[tuple[int, str, int]]] = field(default_factory=dict)
    home_division_id: str | None = None

    def id_of(self, kind: str, name: str) -> str | None:
        found = self.found.get((kind, key_of(kind, name)))
        return found.id if found else None

    def unknown(self) -> list[Found]:
        return [f for f in self.found.values() if f.id is None]

    def problems_by_row(self) -> dict[int, list[Found]]:
        """row id -> the unknown or ambiguous names it uses."""
        by_row: dict[int, list[Found]] = defaultdict(list)
        for found in self.unknown():
            for row_id, _source, _line in self.uses[(found.kind, found.key)]:
                by_row[row_id].append(found)
        return by_row


def describe(found: Found) -> str:
    """`queue 'Bilingx': not in the org`, `role 'agent': ambiguous, the org has ...`."""
    return f"{found.kind} {found.name!r}: {found.problem or NOT_FOUND}"


NOT_FOUND = "not in the org"


def held_reason(row: dict[str, Any]) -> str:
    """Why a manager's reports wait: `their own row, line 156 of users.csv, is invalid: ...`"""
    reason = row.get("error_message") or row.get("error_code") or "no reason recorded"
    return f"their own row, line {row['line']} of {row['source']}, is {row['status']}: {reason}"


class Resolver:
    """Looks names up through `call(kind, fn, *args)`: the scheduler's paced, retried call."""

    def __init__(self, ledger: Ledger, client: Any, call: Callable[..., Any]) -> None:
        self.ledger = ledger
        self.client = client
        self.call = call

    def resolve(self) -> Resolution:
        """Every name the rows with work left use."""
        result = Resolution()
        self.resolve_into(result, self.ledger.names_in_use())
        return result

    def resolve_into(self, result: Resolution, uses: list[tuple[Any, ...]]) -> None:
        """Record these uses (kind, name as written, row id, source, line) in `result`, and
        look up the names it does not know yet."""
        names: dict[str, dict[str, str]] = defaultdict(dict)  # kind -> key -> name as written
        for kind, name, row_id, source, line in uses:
            key = key_of(kind, name)
            result.uses.setdefault((kind, key), []).append((row_id, source, line))
            if (kind, key) not in result.found:
                names[kind].setdefault(key, name.strip())
        found = []
        for kind in KINDS:
            if names[kind]:
                found.extend(self._resolve_kind(kind, names[kind]))
        for f in found:
            result.found[(f.kind, f.key)] = f

    def home_division(self) -> Named:
        return self.call("lookup", self.client.home_division)

    def _resolve_kind(self, kind: str, names: dict[str, str]) -> list[Found]:
        if kind == "manager":
            return [self._manager(key, name) for key, name in names.items()]
        if kind == "location":  # no name filter: list them all once
            listed = self._all_pages(kind, None)
            return [_match(kind, key, name, listed) for key, name in names.items()]
        found = []
        for key, name in names.items():
            if kind == "division" and is_uuid(name):
                division = self.call("lookup", self.client.division_by_id, name)
                found.append(
                    Found(kind, key, division.name, division.id)
                    if division
                    else Found(kind, key, name, None, "no division has this id")
                )
                continue
            found.append(_match(kind, key, name, self._all_pages(kind, name.strip())))
        return found

    def _all_pages(self, kind: str, name: str | None) -> list[Named]:
        listed: list[Named] = []
        page = 1
        while True:
            entities, more = self.call("lookup", self.client.list_page, kind, name, page)
            listed.extend(entities)
            if not more or not entities:
                return listed
            page += 1

    def _manager(self, key: str, email: str) -> Found:
        row = self.ledger.manager_row(key)
        if row is not None and row["status"] not in ("failed", "rolled_back", "invalid"):
            return Found("manager", key, email, MANAGER_IN_LEDGER)
        user = self.call("search", self.client.find_user_by_email, email)
        if user is not None and user.state == "active":
            return Found("manager", key, user.email or email, user.id)
        if row is not None and row["status"] in ("invalid", "failed"):
            # The manager is a person of this file whose own row can be fixed: the reports
            # are created, and their profile waits for the manager (named with the reason).
            return Found("manager", key, email, MANAGER_IN_LEDGER, held=held_reason(row))
        if row is not None:
            return Found(
                "manager",
                key,
                email,
                None,
                f"line {row['line']} of {row['source']}, whose create failed "
                f"({row['error_message'] or row['status']})",
            )
        state = f" (the user with this email is {user.state})" if user is not None else ""
        return Found(
            "manager", key, email, None, f"not a person of this file nor of the org{state}"
        )


def _match(kind: str, key: str, name: str, listed: list[Named]) -> Found:
    """The one object whose name is `name`, ignoring case and outer spaces."""
    same = [n for n in listed if name_key(n.name) == key]
    unique = {n.id: n for n in same}
    if len(unique) == 1:
        only = next(iter(unique.values()))
        return Found(kind, key, only.name, only.id)
    if len(unique) > 1:
        spelled = " and ".join(repr(n.name) for n in unique.values())
        return Found(kind, key, name, None, f"ambiguous {kind} {name!r}: the org has {spelled}")
    return Found(kind, key, name, None)


class NameService:
    """The names of a run, as its steps use them: resolved once before the first create,
    and looked up on demand for a row ingested while the run works."""

    def __init__(self, ledger: Ledger, client: Any, read: Callable[..., Any]) -> None:
        self.resolver = Resolver(ledger, client, read)
        self.ledger = ledger
        self.client = client
        self.read = read
        self.resolution = Resolution()
        self._lock = threading.Lock()

    def resolve(self) -> Resolution:
        """Every name the rows with work left use (replacing what was known)."""
        self.resolution = self.resolver.resolve()
        return self.resolution

    def id_of(self, kind: str, name: str) -> str | None:
        return self.resolution.id_of(kind, name)

    def name_of(self, kind: str, name: str) -> str:
        found = self.resolution.found.get((kind, key_of(kind, name)))
        return found.name if found else name

    def home_division_id(self) -> str:
        with self._lock:
            if self.resolution.home_division_id is None:
                home = self.read("lookup", self.client.home_division)
                self.resolution.home_division_id = home.id
            return self.resolution.home_division_id

    def problems(self, row: Row) -> list[str]:
        """What this row names that the org does not have. Names this run has not looked up
        yet (a row ingested while it runs) are looked up now."""
        uses = self.ledger.names_in_use([row.id])
        with self._lock:
            if any(
                (kind, key_of(kind, name)) not in self.resolution.found for kind, name, *_ in uses
            ):
                self.resolver.resolve_into(self.resolution, uses)
        problems = []
        for kind, name, *_rest in uses:
            found = self.resolution.found.get((kind, key_of(kind, name)))
            if found is not None and found.id is None:
                problems.append(describe(found))
        return sorted(set(problems))
