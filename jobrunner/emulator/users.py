"""Users as the Genesys Cloud users API keeps them: create, get, patch (and restore), soft
delete, and the users that exist before the job. A user's locations come with it: PATCH
/api/v2/users/{id} sets them and `expand=locations` shows them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any

from jobrunner.emulator.errors import (
    ApiError,
    VersionConflict,
    bad_request,
    field_error,
    invalid_query_param,
    invalid_value,
    missing_field,
    not_found,
)
from jobrunner.emulator.store import Store
from jobrunner.emulator.validation import (
    STATES,
    enum_field,
    is_email,
    now_iso,
    text_field,
    validate_addresses,
    validate_email,
)

GET_STATES = ("active", "deleted")  # GET /api/v2/users/{id}?state=, default active
STATE_WITH_OTHERS = ("apply", "400", "ignore")  # see Users.patch
SAME_USER = ("id", "version")  # UpdateUser fields that change nothing


class Users(Store):
    """POST /api/v2/users, GET/PATCH/DELETE /api/v2/users/{id}, and the users that exist
    before the job."""

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

    def create(
        self,
        body: Any,
        now: float = 0.0,
        grants: Collection[tuple[str, str]] = (),
        churn_at: Collection[float] = (),
    ) -> dict[str, Any]:
        """POST /api/v2/users with a CreateUser body. Returns the new User.

        `grants`: (role id, division id) pairs the user holds from creation (the Employee
        role). `churn_at`: clock times at which other services move the new user's version
        on their own (a PATCH with the version the create answered then conflicts)."""
        if not isinstance(body, dict):
            raise bad_request("The request body must be a CreateUser JSON object.")
        name = text_field(body, "name", "name", required=True)
        email = text_field(body, "email", "email", required=True)
        assert name is not None and email is not None
        validate_email(email)
        department = text_field(body, "department", "department")
        title = text_field(body, "title", "title")
        text_field(body, "password", "password")  # accepted, never stored or returned
        state = "active"
        if body.get("state") is not None:
            state = enum_field(body["state"], ("active", "inactive"), "state")
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
            self._put(user, now)
            self._indexed_at[user["id"]] = now
            stamp = now_iso()
            for pair in grants:
                self._grants.setdefault(user["id"], {})[pair] = stamp
            if churn_at:
                self._churn[user["id"]] = sorted(churn_at)
        return user

    def get(
        self, user_id: str, state: str | None = None, expand: Collection[str] = ()
    ) -> dict[str, Any]:
        """GET /api/v2/users/{id}: a deleted user only with state "deleted", the others only
        without it (or with "active"). `expand` may add "locations" and "skills"."""
        wanted = state or "active"
        if wanted not in GET_STATES:
            raise invalid_query_param("state", state, GET_STATES)
        with self._lock:
            if user_id in self._users:
                self._settle(user_id)
            user = self._users.get(user_id)
        if user is None or (user["state"] == "deleted") != (wanted == "deleted"):
            raise not_found(f"User {user_id} not found")
        return self._present(user, expand)

    def as_read(self, user: dict[str, Any]) -> dict[str, Any]:
        """The user with its phone contacts as Genesys reads them back (read_contact)."""
        addresses = user.get("addresses") or []
        shown = [read_contact(contact, self.in_pool) for contact in addresses]
        return user if shown == addresses else {**user, "addresses": shown}

    def _present(self, user: dict[str, Any], expand: Collection[str]) -> dict[str, Any]:
        if not expand:
            return user
        return {**user, **self._expand(user, expand)}

    def _expand(self, user: Mapping[str, Any], expand: Collection[str]) -> dict[str, Any]:
        shown = super()._expand(user, expand)
        if "locations" in expand:
            with self._lock:
                locations = list(self._locations.get(user["id"], []))
            shown["locations"] = [self._location_entity(loc) for loc in locations]
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
            raise VersionConflict(version, current["version"])

    def patch(
        self,
        user_id: str,
        body: Any,
        state_with_others: str = "apply",
        restore_grants: Collection[tuple[str, str]] = (),
    ) -> dict[str, Any]:
        """PATCH /api/v2/users/{id} with an UpdateUser body: `version` must be the current one.

        Takes name, email, department, title, state (active/inactive), addresses, manager (a
        user id; "" removes the manager) and locations ([{"id", "notes"}], replacing the
        list). A deleted user is only restored: exactly {"state": "active", "version"}
        (and then holds `restore_grants`).

        UpdateUser.state is documented as "If specified, it is the only modifiable field";
        what the API answers when other fields come with it is not. `state_with_others`
        (STATE_WITH_OTHERS): "400" refuses the PATCH naming the first other field, "ignore"
        changes the state alone, "apply" changes everything sent.
        """
        if not isinstance(body, dict):
            raise bad_request("The request body must be an UpdateUser JSON object.")
        with self._lock:
            current = self._user(user_id)
        if current["state"] == "deleted":
            return self._restore(user_id, body, restore_grants)
        if body.get("state") is not None and state_with_others != "apply":
            others = sorted(
                k for k, v in body.items() if k not in (*SAME_USER, "state") and v is not None
            )
            if others and state_with_others == "400":
                raise field_error(
                    400,
                    "bad.request",
                    others[0],
                    "A PATCH that changes state may change nothing else; [{field}] was sent too.",
                )
            body = {k: v for k, v in body.items() if k in SAME_USER or k == "state"}
        version = self._version_of(body)
        changes: dict[str, Any] = {}
        for key in ("name", "email", "department", "title"):
            value = text_field(body, key, key)
            if value is None:
                continue
            if key in ("name", "email") and not value.strip():
                raise missing_field(key)
            if key == "email":
                validate_email(value)
            changes[key] = value
        if body.get("state") is not None:
            # Deleting is DELETE /api/v2/users/{id}'s job; PATCH only switches these two.
            changes["state"] = enum_field(body["state"], ("active", "inactive"), "state")
        if body.get("addresses") is not None:
            changes["addresses"] = validate_addresses(body["addresses"])
        locations = None
        if body.get("locations") is not None:
            locations = self._validate_locations(body["locations"])
        manager = body.get("manager")
        if manager is not None and not isinstance(manager, str):
            raise invalid_value("manager", manager, "must be a user id")
        with self._lock:
            self._settle(user_id)
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

    def _restore(
        self, user_id: str, body: Mapping[str, Any], grants: Collection[tuple[str, str]] = ()
    ) -> dict[str, Any]:
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
            stamp = now_iso()
            for pair in grants:
                self._grants.setdefault(user_id, {}).setdefault(pair, stamp)
        return user

    def delete(self, user_id: str) -> None:
        """Soft delete: state "deleted", the email stays taken; the user goes back to the Home
        division, loses its role grants and queue memberships, and its addresses lose their
        extensions. Deleting a deleted user is a 404.

        DELETE takes no version, but the directory "occasionally returns version errors on
        deletes if an object was updated at the same time" (the Terraform provider): a DELETE
        that meets a version move of a new user's churn (Users.create) is a VersionConflict,
        and deletes nothing."""
        with self._lock:
            current = self._users.get(user_id)
            if current is None or current["state"] == "deleted":
                raise not_found(f"User {user_id} not found")
            if self._settle(user_id):
                raise VersionConflict(current["version"], self._users[user_id]["version"])
            current = self._users[user_id]
            self._put(
                {
                    **current,
                    "state": "deleted",
                    "version": current["version"] + 1,
                    "division": self._division_ref(self.home_division_id),
                    "addresses": without_extensions(current["addresses"]),
                    "dateModified": now_iso(),
                }
            )
            self._grants.pop(user_id, None)
            for members in self._members.values():
                members.pop(user_id, None)

    def add_existing(
        self,
        record: Mapping[str, Any],
        *,
        skip_taken: bool = False,
        grants: Collection[tuple[str, str]] | None = None,
    ) -> bool:
        """Add a user that exists before the job (seed file, org file, state file). False if
        skipped.

        Accepts the User JSON shape or a flat {name, email, title, department, state,
        divisionId, manager} dict. A taken email raises ValueError unless `skip_taken`. A user
        that is not deleted holds `grants` ((role id, division id) pairs); by default, the
        grants every user of the org holds (`default_grants`: the Employee role in Home).
        """
        if grants is None:
            grants = self.default_grants
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
            self._put(user, float("-inf"))
            self._indexed_at[user["id"]] = float("-inf")
            if state != "deleted":
                stamp = user["dateModified"]
                for pair in grants:
                    self._grants.setdefault(user["id"], {}).setdefault(pair, stamp)
        return True

    def users(self) -> list[dict[str, Any]]:
        """All users (deleted ones included), oldest first, as stored (addresses as sent).
        The dicts must not be mutated."""
        with self._lock:
            self._settle_all()
            return list(self._users.values())

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


def without_extensions(addresses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A deleted user's addresses: extensions go back to the pool."""
    kept = []
    for contact in addresses:
        if "extension" not in contact:
            kept.append(contact)
        elif contact.get("address"):
            kept.append({k: v for k, v in contact.items() if k != "extension"})
    return kept


def read_contact(contact: dict[str, Any], pooled: Callable[[str], bool]) -> dict[str, Any]:
    """A phone (or SMS) contact as Genesys reads it back: the four shapes the Terraform
    provider's flattenUserAddresses reads (genesyscloud/user/resource_genesyscloud_user_utils.go).

    - a number alone: in `address`, as sent;
    - a number with an extension: the number only in `display`, `extension` beside it;
    - an extension alone, in one of the org's pools: `extension` equal to `display`;
    - an extension alone, outside every pool: only `display`.
    """
    extension = contact.get("extension")
    if contact.get("mediaType") not in ("PHONE", "SMS") or not extension:
        return contact
    rest = {k: v for k, v in contact.items() if k not in ("address", "display", "extension")}
    if contact.get("address"):
        return {**rest, "display": contact["address"], "extension": extension}
    if pooled(extension):
        return {**rest, "extension": extension, "display": extension}
    return {**rest, "display": extension}
