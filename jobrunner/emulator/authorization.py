"""Authorization: the roles a user holds in which divisions (grants), granted one subject at a
time (bulkadd) or one role to many subjects at once, and moving users between divisions.

The authorization service of a real org learns about a new user a few seconds after the
directory does: methods that stand for it take `now` and `fresh_s` and treat a user created
less than `fresh_s` ago as unknown.
"""

from __future__ import annotations

from typing import Any

from jobrunner.emulator.errors import (
    ApiError,
    bad_request,
    invalid_id,
    invalid_value,
    is_uuid,
    missing_field,
    not_found,
)
from jobrunner.emulator.store import Store
from jobrunner.emulator.validation import now_iso

# What POST /api/v2/authorization/roles/{roleId} does with a subject it does not know (an
# unknown, deleted or too new user). Genesys documents nothing: "404-batch" refuses the whole
# batch with a 404 (as bulkadd answers for one unknown subject), "400-batch" refuses it with a
# 400 naming the id, "skip" grants the known subjects and ignores the others.
UNKNOWN_SUBJECT_ANSWERS = ("404-batch", "400-batch", "skip")


class Authorization(Store):
    """POST .../subjects/{id}/bulkadd, GET .../subjects/{id}, POST .../roles/{id}, POST
    .../divisions/{id}/objects/USER."""

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

    def grant_role(
        self,
        role_id: str,
        body: Any,
        subject_type: str = "PC_USER",
        unknown_subject: str = "404-batch",
        max_subjects: int | None = None,
        now: float = 0.0,
        fresh_s: float = 0.0,
    ) -> list[str]:
        """POST /api/v2/authorization/roles/{roleId}?subjectType=PC_USER with SubjectDivisions:
        every subject gets the role in every division listed; a grant already held stays as it
        was. A non-UUID subject id is a 400 invalid.id; an unknown subject is answered as
        `unknown_subject` says (UNKNOWN_SUBJECT_ANSWERS). More than `max_subjects` subjects
        (None: no cap, as documented) is a 400. The emulated org has no groups or OAuth
        clients: subjects of another `subject_type` are all unknown. Returns the subjects
        granted."""
        if self.org.get("roles", role_id) is None:
            raise not_found(f"Role {role_id} not found")
        if not isinstance(body, dict):
            raise bad_request("The request body must be a SubjectDivisions JSON object.")
        subject_ids = self._id_list(body, "subjectIds")
        division_ids = self._id_list(body, "divisionIds")
        if max_subjects is not None and len(subject_ids) > max_subjects:
            raise ApiError(
                400,
                "bad.request",
                "At most {max} subjects may be granted a role in one request; this one has "
                "{count}.",
                params={"max": str(max_subjects), "count": str(len(subject_ids))},
            )
        for index, division_id in enumerate(division_ids):
            if division_id not in self._divisions:
                raise invalid_value(f"divisionIds[{index}]", division_id, "no division has this id")
        with self._lock:
            known: list[str] = []
            for index, subject_id in enumerate(subject_ids):
                try:
                    if subject_type != "PC_USER":
                        raise not_found(f"Subject {subject_id} not found")
                    self._onboarded(subject_id, now, fresh_s)
                except ApiError:
                    if unknown_subject == "404-batch":
                        raise not_found(f"Subject {subject_id} not found") from None
                    if unknown_subject == "400-batch":
                        raise invalid_value(
                            f"subjectIds[{index}]", subject_id, "no user has this id"
                        ) from None
                    continue
                known.append(subject_id)
            stamp = now_iso()
            for subject_id in dict.fromkeys(known):
                held = self._grants.setdefault(subject_id, {})
                for division_id in division_ids:
                    held.setdefault((role_id, division_id), stamp)
        return list(dict.fromkeys(known))

    @staticmethod
    def _id_list(body: dict[str, Any], key: str) -> list[str]:
        """A non-empty list of UUIDs; a non-UUID is Genesys' 400 invalid.id."""
        value = body.get(key)
        if value is None:
            raise missing_field(key)
        if not isinstance(value, list) or not value:
            raise invalid_value(key, value, "must be a non-empty list of ids")
        for index, item in enumerate(value):
            if not is_uuid(item):
                raise invalid_id(f"{key}[{index}]", item)
        return list(value)

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
                self._settle(user_id)
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
