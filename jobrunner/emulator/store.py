"""The emulated org's state, shared by every part of the Directory: users, divisions, the
org's roles, queues, skills and locations (a read-only Catalog), and what onboarding gave each
user, all guarded by one short lock. User records are replaced, never mutated, so a snapshot
can be serialised outside the lock.

Also here: divisions (users point at them) and the org's listings by name.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

from jobrunner.emulator.errors import not_found
from jobrunner.emulator.org import (
    KINDS,
    PATHS,
    Catalog,
    check_org,
    entity_listing,
    extension_pools,
    org_entries,
    sort_descending,
)
from jobrunner.emulator.validation import now_iso

HISTORY_KEPT = 32  # records kept per user for a lagging search (older changes are settled)


class Store:
    """The org's users, divisions and the rest of the org (roles, queues, skills, locations),
    and the onboarding state. Users, Onboarding, Search and Snapshots add the endpoints;
    Directory puts them together.

    `divisions` maps extra division names to ids; the Home division is always there. More
    come from an org file through load_org().
    """

    def __init__(
        self,
        home_division_id: str,
        divisions: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._users: dict[str, dict[str, Any]] = {}
        self._by_email: dict[str, str] = {}
        # When each user was created (clock seconds; -inf for users that existed before).
        self._indexed_at: dict[str, float] = {}
        # Each user's records as they changed: (clock seconds, record), oldest first, at most
        # HISTORY_KEPT; what a lagging search index still shows (search.py).
        self._history: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        # When other services will still move a new user's version on their own (clock
        # seconds, ascending; users.py).
        self._churn: dict[str, list[float]] = {}
        self.home_division_id = home_division_id
        self._divisions: dict[str, dict[str, Any]] = {}
        self._add_division(home_division_id, "Home", home=True)
        for name, division_id in (divisions or {}).items():
            self.add_division(division_id, name)
        self.org = Catalog(self._division_ref(home_division_id), now_iso())
        # Onboarding state, all guarded by _lock:
        self._grants: dict[str, dict[tuple[str, str], str]] = {}  # user -> (role, div) -> when
        self._skills: dict[str, dict[str, float]] = {}  # user -> skill -> proficiency
        self._languages: dict[str, dict[str, float]] = {}  # user -> language -> proficiency
        self._members: dict[str, dict[str, None]] = {}  # queue -> users, in the order added
        self._locations: dict[str, list[dict[str, Any]]] = {}  # user -> [{"id", "notes"}]
        # Extension pools (start, end), digit strings: set at start-up, read without the lock.
        self.extension_pools: list[tuple[str, str]] = []
        # The grants every user holds (the Employee role in Home): set at start-up.
        self.default_grants: list[tuple[str, str]] = []

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
        self.extension_pools.extend(extension_pools(data))

    def in_pool(self, extension: str) -> bool:
        """True if `extension` is in one of the org's extension pools."""
        return extension.isdigit() and any(
            len(start) == len(extension) and int(start) <= int(extension) <= int(end)
            for start, end in self.extension_pools
        )

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

    def _put(self, user: dict[str, Any], at: float | None = None) -> None:
        """(lock held) Store a user's new record, changed at `at` (default: now)."""
        old = self._users.get(user["id"])
        if old is not None and old["email"].lower() != user["email"].lower():
            self._by_email.pop(old["email"].lower(), None)
        self._users[user["id"]] = user
        self._by_email[user["email"].lower()] = user["id"]
        history = self._history.setdefault(user["id"], [])
        history.append((self._clock() if at is None else at, user))
        del history[:-HISTORY_KEPT]

    def _settle(self, user_id: str, now: float | None = None) -> int:
        """(lock held) Apply the version moves other services have made to a new user by now
        (see Users.create's `churn_at`). Returns how many there were."""
        due = self._churn.get(user_id)
        if not due:
            return 0
        now = self._clock() if now is None else now
        moved = 0
        while due and due[0] <= now:
            at = due.pop(0)
            current = self._users[user_id]
            if current["state"] != "deleted":
                self._put(
                    {**current, "version": current["version"] + 1, "dateModified": now_iso()}, at
                )
                moved += 1
        if not due:
            del self._churn[user_id]
        return moved

    def _settle_all(self) -> None:
        """(lock held) _settle() every user whose version still moves on its own."""
        now = self._clock()
        for user_id in list(self._churn):
            self._settle(user_id, now)

    def _user(self, user_id: str) -> dict[str, Any]:
        user = self._users.get(user_id)
        if user is None:
            raise not_found(f"User {user_id} not found")
        return user

    def division_of(self, user_id: str) -> str | None:
        """The id of the user's division, None for an unknown user."""
        user = self._users.get(user_id)
        return user["division"]["id"] if user else None

    def __len__(self) -> int:
        return len(self._users)

    # ---- the rest of the org: look-ups by name -------------------------------------------

    def list_org(
        self,
        kind: str,
        name: str | None = None,
        page_size: int = 25,
        page_number: int = 1,
        sort_order: str | None = None,
        ids: Iterable[str] = (),
    ) -> dict[str, Any]:
        """GET /api/v2/authorization/roles, /routing/queues, /routing/skills,
        /routing/languages, /locations: one page of the objects whose names match `name` the
        way that endpoint matches names."""
        found = self.org.matching(kind, name, ids, descending=sort_descending(sort_order))
        if kind == "queues":
            with self._lock:
                counts = {q: len(m) for q, m in self._members.items()}
            found = [queue_with_counts(q, counts.get(q["id"], 0)) for q in found]
        else:
            found = [dict(item) for item in found]
        query = {"name": name or "", "sortOrder": sort_order or ""}
        return entity_listing(found, page_size, page_number, PATHS[kind], query)

    def _onboarded(self, user_id: str, now: float, fresh_s: float) -> dict[str, Any]:
        """(lock held) A user the onboarding services know: not deleted, and created at least
        `fresh_s` ago. Anyone else is a 404, as a real org's other services answer."""
        user = self._users.get(user_id)
        created = self._indexed_at.get(user_id, float("-inf"))
        if user is None or user["state"] == "deleted" or now - created < fresh_s:
            raise not_found(f"User {user_id} not found")
        return user

    def _expand(self, user: Mapping[str, Any], expand: Collection[str]) -> dict[str, Any]:
        """The fields `expand` adds to a user on GET /api/v2/users/{id}. Each part of the
        Directory adds its own and calls super()."""
        return {}


def queue_with_counts(queue: Mapping[str, Any], members: int) -> dict[str, Any]:
    """A Queue as the listings send it, with its member counts."""
    return {
        **queue,
        "memberCount": members,
        "userMemberCount": members,
        "joinedMemberCount": members,
    }
