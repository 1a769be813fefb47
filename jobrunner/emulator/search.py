"""POST /api/v2/users/search: criteria, their combination, sorting and paging, and the lag of
the search index behind the directory."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from typing import Any

from jobrunner.emulator.errors import bad_request, invalid_value, missing_field
from jobrunner.emulator.store import Store
from jobrunner.emulator.validation import enum_field, int_field

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


class Search(Store):
    """POST /api/v2/users/search."""

    def search(
        self,
        body: Any,
        now: float = 0.0,
        index_delay_s: float = 0.0,
        hidden_divisions: Collection[str] = (),
        lag_changes: bool = False,
    ) -> dict[str, Any]:
        """POST /api/v2/users/search with a UserSearchRequest body.

        Criteria are combined the Genesys (Elasticsearch bool) way: AND (the default) must
        match, NOT must not, and when OR criteria are present at least one must match. Without
        a criterion on `state`, only active and inactive users are returned. A user becomes
        searchable `index_delay_s` after its creation (the real index is eventually consistent);
        with `lag_changes` every change lags so: the search answers from the users as they
        were `index_delay_s` ago (a deleted user is still found as active, a new email not yet).
        Users in `hidden_divisions` (where the caller may not view users) are left out.
        """
        if not isinstance(body, dict):
            raise bad_request("The request body must be a UserSearchRequest JSON object.")
        query = body.get("query")
        if not isinstance(query, list) or not query:
            raise missing_field("query")
        page_size = int_field(body, "pageSize", 25, 1, MAX_PAGE_SIZE)
        page_number = int_field(body, "pageNumber", 1, 1, None)
        sort_order = body.get("sortOrder") or "ASC"
        enum_field(sort_order, ("ASC", "DESC", "SCORE"), "sortOrder")
        sort_by = body.get("sortBy") or "name"
        enum_field(sort_by, SEARCH_SORT_FIELDS, "sortBy")
        criteria = [_Criterion.parse(c, f"query[{i}]") for i, c in enumerate(query)]
        mentions_state = any(c.mentions("state") for c in criteria)
        with self._lock:
            self._settle_all()
            if lag_changes and index_delay_s > 0:
                indexed = [self._as_indexed(u, now - index_delay_s) for u in self._users]
            else:
                indexed = [
                    u
                    for u in self._users.values()
                    if now - self._indexed_at.get(u["id"], float("-inf")) >= index_delay_s
                ]
            candidates = [
                u for u in indexed if u is not None and u["division"]["id"] not in hidden_divisions
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

    def _as_indexed(self, user_id: str, when: float) -> dict[str, Any] | None:
        """(lock held) The user's record as it was at `when`; None if it did not exist yet."""
        found = None
        for changed_at, record in self._history.get(user_id, []):
            if changed_at > when:
                break
            found = record
        return found


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
        enum_field(operator, SEARCH_OPERATORS, where + ".operator")
        group_raw = raw.get("group")
        if group_raw is not None:
            if not isinstance(group_raw, list) or not group_raw:
                raise invalid_value(where + ".group", group_raw, "must be a non-empty list")
            group = [cls.parse(g, f"{where}.group[{i}]") for i, g in enumerate(group_raw)]
            return cls("GROUP", [], [], operator, group)
        kind = raw.get("type")
        if kind is None:
            raise missing_field(where + ".type")
        enum_field(kind, SEARCH_TYPES, where + ".type")
        if kind not in SUPPORTED_SEARCH_TYPES:
            raise bad_request(f"The emulator does not evaluate search criteria of type {kind}.")
        if kind == "MATCH_ALL":
            return cls(kind, [], [], operator, [])
        fields = raw.get("fields")
        if not isinstance(fields, list) or not fields:
            raise missing_field(where + ".fields")
        for field in fields:
            enum_field(field, SEARCH_FIELDS, where + ".fields")
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
