"""The /api/v2 routes: each checks its permission, parses its request and asks the Directory.

`ApiRoutes` is a part of the Emulator (server.py): the request pipeline (token, rate limit,
faults) runs first, then `_route()` finds the handler here by path and method.
"""

from __future__ import annotations

import json
import random
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from jobrunner.emulator.config import EmulatorConfig
from jobrunner.emulator.directory import Directory
from jobrunner.emulator.errors import (
    ApiError,
    VersionConflict,
    bad_request,
    invalid_query_param,
    invalid_value,
    missing_permission,
    not_found,
)
from jobrunner.emulator.stats import Stats

_MAX_PAGE_SIZE = 500
_MAX_MEMBERS_PAGE_SIZE = 100  # GET /api/v2/routing/queues/{id}/members: "Max value is 100"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False


def json_reply(status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> Reply:
    return Reply(status, json.dumps(data, separators=(",", ":")).encode(), headers or [])


def error_reply(error: ApiError) -> Reply:
    context_id = str(uuid.uuid4())
    headers = [("ININ-Correlation-Id", context_id), *error.headers.items()]
    return json_reply(error.status, error.body(context_id), headers)


def _query_int(params: dict[str, list[str]], name: str, default: int, high: int) -> int:
    raw = params.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise invalid_value(name, raw, "must be an integer") from None
    if not 1 <= value <= high:
        raise invalid_value(name, raw, f"must be between 1 and {high}")
    return value


def _query_str(params: dict[str, list[str]], name: str) -> str | None:
    return params.get(name, [None])[-1]


def _query_list(params: dict[str, list[str]], name: str) -> list[str]:
    """A list parameter, repeated (`a=1&a=2`) or comma-joined as the SDK sends it (`a=1,2`)."""
    return [item for value in params.get(name, []) for item in value.split(",") if item]


def _query_bool(params: dict[str, list[str]], name: str) -> bool | None:
    raw = _query_str(params, name)
    if raw is None or raw == "":
        return None
    if raw.lower() not in ("true", "false"):
        raise invalid_query_param(name, raw, ("true", "false"))
    return raw.lower() == "true"


def _paging(params: dict[str, list[str]], high: int = _MAX_PAGE_SIZE) -> dict[str, int]:
    return {
        "page_size": _query_int(params, "pageSize", 25, high),
        "page_number": _query_int(params, "pageNumber", 1, 1_000_000),
    }


def _grant_divisions(body: Any) -> list[str]:
    """The division ids a RoleDivisionGrants body names (for the permission check only)."""
    grants = body.get("grants") if isinstance(body, dict) else None
    if not isinstance(grants, list):
        return []
    return [
        g["divisionId"]
        for g in grants
        if isinstance(g, dict) and isinstance(g.get("divisionId"), str)
    ]


@dataclass(frozen=True)
class _Route:
    """A path pattern, its label in the stats, and its handlers by HTTP method."""

    pattern: re.Pattern[str]
    template: str
    handlers: dict[str, str]


def _route_for(template: str, **handlers: str) -> _Route:
    regex = re.escape(template).replace(r"\{id\}", "([^/]+)").replace(r"\{type\}", "([^/]+)")
    return _Route(re.compile(f"^{regex}$"), template, handlers)


# First match wins: fixed segments ("search", "home") come before {id}.
_ROUTES = (
    _route_for("/api/v2/users", POST="_create"),
    _route_for("/api/v2/users/search", POST="_search"),
    _route_for("/api/v2/users/{id}", GET="_get_user", PATCH="_patch_user", DELETE="_delete_user"),
    _route_for("/api/v2/users/{id}/routingskills/bulk", PATCH="_set_skills"),
    _route_for("/api/v2/users/{id}/routingskills", GET="_user_skills"),
    _route_for("/api/v2/users/{id}/routinglanguages/bulk", PATCH="_set_languages"),
    _route_for("/api/v2/users/{id}/routinglanguages", GET="_user_languages"),
    _route_for("/api/v2/users/{id}/queues", GET="_user_queues"),
    _route_for("/api/v2/authorization/divisions", GET="_divisions"),
    _route_for("/api/v2/authorization/divisions/home", GET="_home"),
    _route_for("/api/v2/authorization/divisions/{id}", GET="_division"),
    _route_for("/api/v2/authorization/divisions/{id}/objects/{type}", POST="_move_objects"),
    _route_for("/api/v2/authorization/roles", GET="_roles"),
    _route_for("/api/v2/authorization/roles/{id}", POST="_grant_role"),
    _route_for("/api/v2/authorization/subjects/{id}", GET="_subject"),
    _route_for("/api/v2/authorization/subjects/{id}/bulkadd", POST="_bulkadd"),
    _route_for("/api/v2/routing/queues", GET="_queues"),
    _route_for("/api/v2/routing/queues/{id}/members", GET="_members", POST="_update_members"),
    _route_for("/api/v2/routing/skills", GET="_skills"),
    _route_for("/api/v2/routing/languages", GET="_languages"),
    _route_for("/api/v2/locations", GET="_locations"),
    _route_for("/api/v2/organizations/me", GET="_organization"),
    _route_for("/api/v2/tokens/me", GET="_token_info"),
)
SUBJECT_TYPES = ("PC_USER", "PC_GROUP", "PC_OAUTH_CLIENT")
EMPLOYEE = "Employee"  # the role every Genesys user holds from creation


class ApiRoutes:
    """The handlers named in _ROUTES. The Emulator provides what is declared here."""

    config: EmulatorConfig
    directory: Directory
    _stats: Stats
    _dirty: threading.Event

    def _now(self) -> float:
        raise NotImplementedError

    def _chance(self, rate: float) -> bool:
        raise NotImplementedError

    def _dialect_rng(self) -> random.Random:
        """The seeded randomness of the dialect options (apart from the faults')."""
        raise NotImplementedError

    def _route(
        self, method: str, path: str
    ) -> tuple[str, Callable[..., Reply] | None, tuple[str, ...]]:
        for route in _ROUTES:
            match = route.pattern.match(path)
            if match:
                name = route.handlers.get(method)
                handler = getattr(self, name) if name else None
                return f"{method} {route.template}", handler, tuple(map(unquote, match.groups()))
        return f"{method} (unknown)", None, ()

    @staticmethod
    def _json_body(body: bytes) -> Any:
        try:
            return json.loads(body) if body else None
        except ValueError:
            raise bad_request("The request body is not valid JSON.") from None

    def _authorize(self, permission: str, divisions: Iterable[str | None] = ()) -> None:
        """403 if the caller lacks `permission`, everywhere or in one of `divisions`."""
        refused = self.config.refused_permissions
        if not refused:
            return
        if permission in refused:
            raise missing_permission(permission)
        for division_id in divisions:
            if division_id and f"{permission}@{division_id}" in refused:
                raise missing_permission(permission)

    def _authorize_any(self, permissions: Iterable[str], divisions: Iterable[str | None]) -> None:
        """403 unless the caller holds one of `permissions` ("Requires ANY permissions") in
        every one of `divisions`."""
        permissions, divisions = list(permissions), list(divisions)
        refused = 0
        for permission in permissions:
            try:
                self._authorize(permission, divisions)
            except ApiError:
                refused += 1
        if refused == len(permissions):
            raise missing_permission(", ".join(permissions))

    def _refused_divisions(self, permission: str) -> set[str]:
        prefix = permission + "@"
        return {p[len(prefix) :] for p in self.config.refused_permissions if p.startswith(prefix)}

    def _fresh(self) -> dict[str, Any]:
        """now and fresh_s for the Directory's onboarding methods."""
        return {"now": self._now(), "fresh_s": self.config.fresh_user_404_s}

    # ---- users ---------------------------------------------------------------------------

    def _employee_grants(self) -> list[tuple[str, str]]:
        """The grant every user holds from creation: the Employee role in Home (with
        EmulatorConfig.employee_role, when the org has the role)."""
        if not self.config.employee_role:
            return []
        role = self.directory.org.named("roles", EMPLOYEE)
        return [(role["id"], self.directory.home_division_id)] if role else []

    def _shown(self, user: dict[str, Any]) -> dict[str, Any]:
        """A user as the API answers it (phone contacts as Genesys reads them back)."""
        return self.directory.as_read(user) if self.config.phone_shapes else user

    def _conflict(self, error: VersionConflict) -> ApiError:
        """A version conflict answered as EmulatorConfig.version_conflict_status says."""
        status = self.config.version_conflict_status
        if status == "either":
            status = self._dialect_rng().choice(("409", "400"))
        return error.as_400() if status == "400" else error

    def _create(self, body: bytes, **_: Any) -> Reply:
        data = self._json_body(body)
        division_id = data.get("divisionId") if isinstance(data, dict) else None
        self._authorize(
            "directory:user:add",
            [division_id if isinstance(division_id, str) else self.directory.home_division_id],
        )
        now = self._now()
        churn_at: list[float] = []
        if self.config.new_user_version_churn_s > 0:
            rng, span = self._dialect_rng(), self.config.new_user_version_churn_s
            churn_at = [now + rng.uniform(0, span) for _ in range(rng.randint(2, 4))]
        user = self.directory.create(
            data, now=now, grants=self._employee_grants(), churn_at=churn_at
        )
        self._dirty.set()
        self._stats.bump("creation", user["email"].lower())
        if self._chance(self.config.drop_after_create_rate):
            self._stats.bump("fault", "drop_after_create")
            return Reply(200, drop=True)
        return json_reply(200, self._shown(user))

    def _search(self, body: bytes, **_: Any) -> Reply:
        self._authorize("directory:user:view")
        result = self.directory.search(
            self._json_body(body),
            now=self._now(),
            index_delay_s=self.config.search_index_delay_s,
            hidden_divisions=self._refused_divisions("directory:user:view"),
            lag_changes=self.config.search_index_lags_changes,
        )
        result["results"] = [self._shown(u) for u in result["results"]]
        return json_reply(200, result)

    def _get_user(self, args: tuple[str, ...], params: dict[str, list[str]], **_: Any) -> Reply:
        self._authorize("directory:user:view", [self.directory.division_of(args[0])])
        # expand is best effort ("not guaranteed to be returned"): each expansion asked for
        # may be left out.
        drop = self.config.expand_drop_rate
        expand = [
            e
            for e in _query_list(params, "expand")
            if drop <= 0 or self._dialect_rng().random() >= drop
        ]
        user = self.directory.get(args[0], state=_query_str(params, "state"), expand=expand)
        return json_reply(200, self._shown(user))

    def _patch_user(self, args: tuple[str, ...], body: bytes, **_: Any) -> Reply:
        self._authorize("directory:user:edit", [self.directory.division_of(args[0])])
        try:
            user = self.directory.patch(
                args[0],
                self._json_body(body),
                state_with_others=self.config.patch_state_with_others,
                restore_grants=self._employee_grants(),
            )
        except VersionConflict as error:
            raise self._conflict(error) from None
        self._dirty.set()
        return json_reply(200, self._shown(user))

    def _delete_user(self, args: tuple[str, ...], **_: Any) -> Reply:
        self._authorize("directory:user:delete", [self.directory.division_of(args[0])])
        try:
            self.directory.delete(args[0])
        except VersionConflict as error:
            raise self._conflict(error) from None
        self._dirty.set()
        return json_reply(200, {})

    def _divisions(self, params: dict[str, list[str]], **_: Any) -> Reply:
        return json_reply(
            200,
            self.directory.list_divisions(
                name=_query_str(params, "name"), ids=_query_list(params, "id"), **_paging(params)
            ),
        )

    def _home(self, **_: Any) -> Reply:
        return json_reply(200, self.directory.home_division())

    def _division(self, args: tuple[str, ...], **_: Any) -> Reply:
        return json_reply(200, self.directory.get_division(args[0]))

    def _move_objects(self, args: tuple[str, ...], body: bytes, **_: Any) -> Reply:
        division_id, object_type = args
        user_ids = self._json_body(body)
        moved = user_ids if isinstance(user_ids, list) else []
        self._authorize(
            "authorization:division:edit",
            [division_id, *(self.directory.division_of(u) for u in moved if isinstance(u, str))],
        )
        self.directory.move_to_division(division_id, object_type, user_ids)
        self._dirty.set()
        return Reply(204)

    def _org_listing(
        self, kind: str, params: dict[str, list[str]], name: str | None = None
    ) -> Reply:
        listing = self.directory.list_org(
            kind,
            name=name,
            sort_order=_query_str(params, "sortOrder"),
            ids=_query_list(params, "id"),
            **_paging(params),
        )
        return json_reply(200, listing)

    def _roles(self, params: dict[str, list[str]], **_: Any) -> Reply:
        self._authorize("authorization:role:view")
        return self._org_listing("roles", params, _query_str(params, "name"))

    def _queues(self, params: dict[str, list[str]], **_: Any) -> Reply:
        self._authorize("routing:queue:view")
        return self._org_listing("queues", params, _query_str(params, "name"))

    def _skills(self, params: dict[str, list[str]], **_: Any) -> Reply:
        return self._org_listing("skills", params, _query_str(params, "name"))

    def _languages(self, params: dict[str, list[str]], **_: Any) -> Reply:
        return self._org_listing("languages", params, _query_str(params, "name"))

    def _locations(self, params: dict[str, list[str]], **_: Any) -> Reply:
        return self._org_listing("locations", params)  # no name filter in the real API

    def _bulkadd(self, args: tuple[str, ...], body: bytes, params: dict[str, list[str]]) -> Reply:
        data = self._json_body(body)
        self._authorize("authorization:grant:add", _grant_divisions(data))
        subject_type = _query_str(params, "subjectType") or "PC_USER"
        if subject_type not in SUBJECT_TYPES:
            raise invalid_query_param("subjectType", subject_type, SUBJECT_TYPES)
        if subject_type != "PC_USER":  # the emulated org has no groups or OAuth clients
            raise not_found(f"Subject {args[0]} not found")
        self.directory.grant(args[0], data, **self._fresh())
        self._dirty.set()
        return Reply(204)

    def _grant_role(
        self, args: tuple[str, ...], body: bytes, params: dict[str, list[str]]
    ) -> Reply:
        data = self._json_body(body)
        divisions = data.get("divisionIds") if isinstance(data, dict) else None
        self._authorize(
            "authorization:grant:add",
            [d for d in divisions if isinstance(d, str)] if isinstance(divisions, list) else [],
        )
        subject_type = _query_str(params, "subjectType") or "PC_USER"
        if subject_type not in SUBJECT_TYPES:
            raise invalid_query_param("subjectType", subject_type, SUBJECT_TYPES)
        self.directory.grant_role(
            args[0],
            data,
            subject_type=subject_type,
            unknown_subject=self.config.role_batch_unknown_subject,
            max_subjects=self.config.role_batch_max_subjects,
            **self._fresh(),
        )
        self._dirty.set()
        return Reply(204)

    def _subject(self, args: tuple[str, ...], **_: Any) -> Reply:
        return json_reply(200, self.directory.subject(args[0], **self._fresh()))

    def _set_skills(self, args: tuple[str, ...], body: bytes, **_: Any) -> Reply:
        self._authorize("routing:skill:assign", [self.directory.division_of(args[0])])
        listing = self.directory.set_skills(args[0], self._json_body(body), **self._fresh())
        self._dirty.set()
        return json_reply(200, listing)

    def _user_skills(self, args: tuple[str, ...], params: dict[str, list[str]], **_: Any) -> Reply:
        listing = self.directory.user_skills(
            args[0], sort_order=_query_str(params, "sortOrder"), **_paging(params), **self._fresh()
        )
        return json_reply(200, listing)

    def _set_languages(self, args: tuple[str, ...], body: bytes, **_: Any) -> Reply:
        self._authorize_any(
            ("routing:skill:assign", "routing:language:assign"),
            [self.directory.division_of(args[0])],
        )
        listing = self.directory.set_languages(args[0], self._json_body(body), **self._fresh())
        self._dirty.set()
        return json_reply(200, listing)

    def _user_languages(
        self, args: tuple[str, ...], params: dict[str, list[str]], **_: Any
    ) -> Reply:
        listing = self.directory.user_languages(
            args[0], sort_order=_query_str(params, "sortOrder"), **_paging(params), **self._fresh()
        )
        return json_reply(200, listing)

    def _update_members(
        self, args: tuple[str, ...], body: bytes, params: dict[str, list[str]]
    ) -> Reply:
        queue = self.directory.org.get("queues", args[0])
        self._authorize("routing:queue:edit", [queue["division"]["id"] if queue else None])
        self.directory.update_queue_members(
            args[0],
            self._json_body(body),
            delete=bool(_query_bool(params, "delete")),
            invalid_id=self.config.queue_member_invalid_id,
            unknown_member=self.config.queue_unknown_member,
            **self._fresh(),
        )
        self._dirty.set()
        return Reply(204)

    def _members(self, args: tuple[str, ...], params: dict[str, list[str]], **_: Any) -> Reply:
        self._authorize("routing:queue:view")
        listing = self.directory.queue_members(
            args[0],
            sort_order=_query_str(params, "sortOrder"),
            name=_query_str(params, "name"),
            joined=_query_bool(params, "joined"),
            **_paging(params, _MAX_MEMBERS_PAGE_SIZE),
        )
        return json_reply(200, listing)

    def _user_queues(self, args: tuple[str, ...], params: dict[str, list[str]], **_: Any) -> Reply:
        self._authorize("routing:queue:view")
        listing = self.directory.user_queues(
            args[0],
            joined=_query_bool(params, "joined"),
            division_ids=_query_list(params, "divisionId"),
            **_paging(params),
            **self._fresh(),
        )
        return json_reply(200, listing)

    # ---- the org the caller belongs to ---------------------------------------------------

    def _org_ref(self) -> dict[str, Any]:
        return {"id": self.config.org_id, "name": self.config.org_name}

    def _organization(self, **_: Any) -> Reply:
        """GET /api/v2/organizations/me: an Organization."""
        cfg = self.config
        short = re.sub(r"[^a-z0-9]+", "-", cfg.org_name.lower()).strip("-") or "org"
        return json_reply(
            200,
            {
                **self._org_ref(),
                "defaultLanguage": "en-us",
                "defaultCountryCode": "US",
                "thirdPartyOrgName": short,
                "domain": short,
                "version": 1,
                "state": "active",
                "features": {},
                "voicemailEnabled": True,
                "productPlatform": "PureCloud",
                "selfUri": f"/api/v2/organizations/{cfg.org_id}",
            },
        )

    def _token_info(self, **_: Any) -> Reply:
        """GET /api/v2/tokens/me: a TokenInfo for the client-credentials token (no user
        behind it, so no clonedUser; the token's org is its client's home org)."""
        cfg = self.config
        return json_reply(
            200,
            {
                "organization": self._org_ref(),
                "homeOrganization": self._org_ref(),
                "authorizedScope": [],
                "OAuthClient": {
                    "id": cfg.client_id,
                    "name": cfg.client_id,
                    "authorizedGrantType": "CLIENT-CREDENTIALS",
                    "scope": [],
                    "state": "active",
                    "organization": self._org_ref(),
                },
            },
        )
