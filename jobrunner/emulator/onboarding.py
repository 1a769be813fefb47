"""What onboarding gives a user: role grants, routing skills, queue memberships, division
moves.

The onboarding services of a real org learn about a new user a few seconds after the directory
does: methods that stand for them take `now` and `fresh_s` and answer 404 for a user created
less than `fresh_s` ago.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from jobrunner.emulator.errors import (
    ApiError,
    bad_request,
    invalid_value,
    missing_field,
    not_found,
)
from jobrunner.emulator.org import entity_listing, sort_descending
from jobrunner.emulator.store import Store, queue_with_counts
from jobrunner.emulator.validation import now_iso

MAX_SKILLS_PER_CALL = 50
MAX_MEMBERS_PER_CALL = 100
# The real API's own text for a queue-member batch of the wrong size (x-inin-error-codes).
MEMBERS_COUNT_MESSAGE = (
    "Invalid request data.  Make sure you submit a valid number of queue members."
)


class Onboarding(Store):
    """The onboarding endpoints: authorization subjects, routing skills, queue members,
    division moves."""

    def _expand(self, user: Mapping[str, Any], expand: Collection[str]) -> dict[str, Any]:
        shown = super()._expand(user, expand)
        if "skills" in expand:
            with self._lock:
                skills = dict(self._skills.get(user["id"], {}))
            shown["skills"] = self._skill_entities(user["id"], skills)
        return shown

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
                queues.append(queue_with_counts(queue, count) | {"joined": True})
        if division_ids:
            queues = [q for q in queues if q["division"]["id"] in division_ids]
        if joined is False:
            queues = []
        queues.sort(key=lambda q: (q["name"].lower(), q["id"]))
        path = f"/api/v2/users/{user_id}/queues"
        return entity_listing(queues, page_size, page_number, path)

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
