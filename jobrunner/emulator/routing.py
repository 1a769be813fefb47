"""Routing: a user's skills and languages (each with a proficiency), and queue memberships.

The routing service of a real org learns about a new user a few seconds after the directory
does: methods that stand for it take `now` and `fresh_s` and answer 404 for a user created
less than `fresh_s` ago.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from jobrunner.emulator.errors import (
    ApiError,
    bad_request,
    invalid_value,
    is_uuid,
    missing_field,
    not_found,
)
from jobrunner.emulator.errors import invalid_id as invalid_id_error
from jobrunner.emulator.org import entity_listing, sort_descending
from jobrunner.emulator.store import Store, queue_with_counts

MAX_SKILLS_PER_CALL = 50  # PATCH .../routingskills/bulk and .../routinglanguages/bulk: "Max 50"
MAX_MEMBERS_PER_CALL = 100
# The real API's own text for a queue-member batch of the wrong size (x-inin-error-codes).
MEMBERS_COUNT_MESSAGE = (
    "Invalid request data.  Make sure you submit a valid number of queue members."
)
UNKNOWN_MEMBER_ANSWERS = ("404-batch", "400-batch", "skip")  # see update_queue_members
# Skills and languages work alike: the org's kind, the path segment under /api/v2/users/{id},
# the singular in messages and in the UserRouting* shape's "<noun>Uri".
ROUTING_KINDS = {
    "skills": ("routingskills", "skill"),
    "languages": ("routinglanguages", "language"),
}


class Routing(Store):
    """PATCH/GET /api/v2/users/{id}/routingskills and routinglanguages, POST/GET
    /api/v2/routing/queues/{id}/members, GET /api/v2/users/{id}/queues."""

    def _expand(self, user: Mapping[str, Any], expand: Collection[str]) -> dict[str, Any]:
        shown = super()._expand(user, expand)
        for kind in ROUTING_KINDS:
            if kind in expand:
                with self._lock:
                    held = dict(self._held(kind).get(user["id"], {}))
                shown[kind] = self._routing_entities(kind, user["id"], held)
        return shown

    def _held(self, kind: str) -> dict[str, dict[str, float]]:
        """(lock held) user -> {skill or language id: proficiency}."""
        return self._skills if kind == "skills" else self._languages

    def set_skills(
        self, user_id: str, body: Any, now: float = 0.0, fresh_s: float = 0.0
    ) -> dict[str, Any]:
        """PATCH /api/v2/users/{id}/routingskills/bulk: add or update (never remove) up to 50
        skills; answers a UserSkillEntityListing of all the user's skills."""
        return self._set_routing("skills", user_id, body, now, fresh_s)

    def set_languages(
        self, user_id: str, body: Any, now: float = 0.0, fresh_s: float = 0.0
    ) -> dict[str, Any]:
        """PATCH /api/v2/users/{id}/routinglanguages/bulk: add or update (never remove) up to 50
        languages; answers a UserLanguageEntityListing of all the user's languages."""
        return self._set_routing("languages", user_id, body, now, fresh_s)

    def user_skills(self, user_id: str, **kw: Any) -> dict[str, Any]:
        """GET /api/v2/users/{id}/routingskills: a UserSkillEntityListing, sorted by name."""
        return self._user_routing("skills", user_id, **kw)

    def user_languages(self, user_id: str, **kw: Any) -> dict[str, Any]:
        """GET /api/v2/users/{id}/routinglanguages: a UserLanguageEntityListing, by name."""
        return self._user_routing("languages", user_id, **kw)

    def _set_routing(
        self, kind: str, user_id: str, body: Any, now: float, fresh_s: float
    ) -> dict[str, Any]:
        segment, noun = ROUTING_KINDS[kind]
        post = "UserRouting" + noun.capitalize() + "Post"
        if not isinstance(body, list):
            raise bad_request(f"The request body must be a list of {post} objects.")
        if len(body) > MAX_SKILLS_PER_CALL:
            raise ApiError(
                400,
                "bad.request",
                "At most {max} " + kind + " may be added or updated in one request; this one "
                "has {count}.",
                params={"max": str(MAX_SKILLS_PER_CALL), "count": str(len(body))},
            )
        entries: list[tuple[str, float]] = []
        for index, entry in enumerate(body):
            where = f"body[{index}]"
            if not isinstance(entry, dict):
                raise invalid_value(where, entry, "must be a {id, proficiency} object")
            object_id, proficiency = entry.get("id"), entry.get("proficiency")
            if object_id in (None, ""):
                raise missing_field(where + ".id")
            if proficiency is None:
                raise missing_field(where + ".proficiency")
            if (
                isinstance(proficiency, bool)
                or not isinstance(proficiency, (int, float))
                or not 0 <= proficiency <= 5
            ):
                raise invalid_value(where + ".proficiency", proficiency, "must be from 0 to 5")
            if self.org.get(kind, object_id) is None:
                raise invalid_value(where + ".id", object_id, f"no {noun} has this id")
            entries.append((object_id, float(proficiency)))
        with self._lock:
            self._onboarded(user_id, now, fresh_s)
            held = self._held(kind).setdefault(user_id, {})
            held.update(entries)
            snapshot = dict(held)
        items = self._routing_entities(kind, user_id, snapshot)
        path = f"/api/v2/users/{user_id}/{segment}"
        return entity_listing(items, max(25, len(items)), 1, path)

    def _user_routing(
        self,
        kind: str,
        user_id: str,
        page_size: int = 25,
        page_number: int = 1,
        sort_order: str | None = None,
        now: float = 0.0,
        fresh_s: float = 0.0,
    ) -> dict[str, Any]:
        descending = sort_descending(sort_order)
        with self._lock:
            self._onboarded(user_id, now, fresh_s)
            snapshot = dict(self._held(kind).get(user_id, {}))
        items = self._routing_entities(kind, user_id, snapshot, descending)
        path = f"/api/v2/users/{user_id}/{ROUTING_KINDS[kind][0]}"
        return entity_listing(items, page_size, page_number, path, {"sortOrder": sort_order or ""})

    def _routing_entities(
        self, kind: str, user_id: str, held: Mapping[str, float], descending: bool = False
    ) -> list[dict[str, Any]]:
        """UserRoutingSkill or UserRoutingLanguage objects, sorted by name."""
        segment, noun = ROUTING_KINDS[kind]
        items: list[dict[str, Any]] = [
            {
                "id": object_id,
                "name": self.org.name_of(kind, object_id),
                "proficiency": proficiency,
                "state": "active",
                f"{noun}Uri": f"/api/v2/routing/{kind}/{object_id}",
                "selfUri": f"/api/v2/users/{user_id}/{segment}/{object_id}",
            }
            for object_id, proficiency in held.items()
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
        invalid_id: bool = False,
        unknown_member: str = "404-batch",
    ) -> list[str]:
        """POST /api/v2/routing/queues/{id}/members: add (or with `delete`, remove) 1 to 100
        users; members already there, or already gone, are fine. Returns the users added (or
        removed).

        With `invalid_id` a non-UUID id is Genesys' 400 invalid.id (without it, an unknown
        user). What one unknown (or deleted, or too new) user does to the batch is not
        documented, and the call answers no body to tell per id: `unknown_member`
        (UNKNOWN_MEMBER_ANSWERS) "404-batch" refuses the whole batch with a 404, "400-batch"
        with a 400 naming the id, "skip" acts on the known users and ignores the others."""
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
            if invalid_id and not is_uuid(user_id):
                raise invalid_id_error(where + ".id", user_id)
            user_ids.append(user_id)
        if self.org.get("queues", queue_id) is None:
            raise not_found(f"Queue {queue_id} not found")
        with self._lock:
            known = []
            for index, user_id in enumerate(user_ids):
                try:
                    self._onboarded(user_id, now, fresh_s)
                except ApiError:
                    if unknown_member == "400-batch":
                        raise invalid_value(
                            f"body[{index}].id", user_id, "no user has this id"
                        ) from None
                    if unknown_member != "skip":
                        raise
                    continue
                known.append(user_id)
            members = self._members.setdefault(queue_id, {})
            for user_id in known:
                if delete:
                    members.pop(user_id, None)
                else:
                    members.setdefault(user_id, None)
        return known

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
            self._settle_all()
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
