"""GenesysClient: the calls jobrunner makes to Genesys Cloud, through the official SDK.

The SDK (`PureCloudPlatformClientV2`, ~3 s and ~220 MB to import) is imported only here, and
only on the first call, so `ingest`, `report` and `--help` never load it. Each call goes
through `_call`: the token is renewed first when due (`token.py`), the SDK's errors become ours
(`errors.py`), a 401 gets a new token and the call again. The SDK's ApiClient sends over our
transport (`transport.py`): no retries, real timeouts.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobrunner.config import Settings
from jobrunner.genesys.contacts import _CONTACT_FIELDS, read_phone, work_phone
from jobrunner.genesys.errors import ApiError, _api_error
from jobrunner.genesys.models import Created, FoundUser, Named, NewUser, UserDetail
from jobrunner.genesys.token import TokenKeeper
from jobrunner.genesys.transport import (
    CONNECT_TIMEOUT_S,
    READ_TIMEOUT_S,
    _make_transport,
    _retry_decision,
)

# Look-ups by name: kind -> (SDK api, method, whether `name` filters on the server).
LISTINGS = {
    "division": ("AuthorizationApi", "get_authorization_divisions", True),
    "role": ("AuthorizationApi", "get_authorization_roles", True),
    "queue": ("RoutingApi", "get_routing_queues", True),
    "skill": ("RoutingApi", "get_routing_skills", True),
    "language": ("RoutingApi", "get_routing_languages", True),
    "location": ("LocationsApi", "get_locations", False),
}
PAGE_SIZE = 100
# Routing assignments with a proficiency: kind -> (the SDK's post model, the bulk PATCH, the
# user's listing).
_LEVELS = {
    "skill": ("UserRoutingSkillPost", "patch_user_routingskills_bulk", "get_user_routingskills"),
    "language": (
        "UserRoutingLanguagePost",
        "patch_user_routinglanguages_bulk",
        "get_user_routinglanguages",
    ),
}
SEARCH_VALUES = 50  # emails in one search (`values` of one criterion)


@dataclass(frozen=True)
class _Sdk:
    module: Any
    api_exception: Any
    client: Any
    users: Any
    transport: Any


class GenesysClient:
    """One ApiClient and one token, shared by every worker thread.

    The token's life (renewal before expiry, one new token after a 401, the refusal rules) is
    a TokenKeeper's; see `jobrunner.genesys.token`. `clock` (monotonic seconds) and `sleep`
    are injectable.
    """

    def __init__(
        self,
        settings: Settings,
        pool_size: int = 8,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        read_timeout: float = READ_TIMEOUT_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._transport_settings = (pool_size, connect_timeout, read_timeout)
        self._token = TokenKeeper(settings, lambda: self._api, clock, sleep)
        self._search_any_state = True  # include deleted users (they keep their email)
        self._search_many = True  # several emails in one search criterion

    @functools.cached_property
    def _api(self) -> _Sdk:
        """The SDK, imported and wired on first use (~3 s): a run with nothing to send never
        pays for it."""
        import PureCloudPlatformClientV2 as sdk
        from PureCloudPlatformClientV2.rest import ApiException

        client = sdk.ApiClient()
        endpoint = self.settings.endpoint
        if endpoint.gateway:
            host, protocol, port = endpoint.gateway
            client.set_gateway(host, protocol, port, "", "")
        else:
            client.host = endpoint.api_url
        transport = _make_transport(*self._transport_settings, decide=self._decide)
        client.set_http_client(transport)
        return _Sdk(sdk, ApiException, client, sdk.UsersApi(client), transport)

    @property
    def client(self) -> Any:
        """The SDK's ApiClient (shared by every thread)."""
        return self._api.client

    @property
    def users(self) -> Any:
        return self._api.users

    def _decide(self, token_request: bool, status: int | None, network: str | None) -> str:
        return _retry_decision(token_request, status, network, self._token.generation > 0)

    # -- the token -----------------------------------------------------------------------

    @property
    def tokens_fetched(self) -> int:
        """Token requests sent."""
        return self._token.tokens_fetched

    @property
    def token_expires_at(self) -> float | None:
        """clock() time the token expires; None: the login service gave no expires_in."""
        return self._token.expires_at

    @property
    def token_renew_at(self) -> float:
        """clock() time from which a call renews the token first."""
        return self._token.renew_at

    @property
    def on_new_token(self) -> Any:
        """Called after each new token (the pacer's window)."""
        return self._token.on_new_token

    @on_new_token.setter
    def on_new_token(self, callback: Any) -> None:
        self._token.on_new_token = callback

    def authenticate(self) -> None:
        """Fetch a client-credentials token. Every failure is a ConfigError.

        A 5xx, 429 or network error from the login service is tried a few times first.
        """
        self._token.authenticate()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Every API call goes through here: token renewal, 401s, errors mapped to ours."""
        refused = 0
        while True:
            generation = self._token.before_call()
            try:
                result = fn(*args, **kwargs)
            except self._api.api_exception as exc:
                err = _api_error(exc.status or 0, exc.body, exc.headers)
                if err.status != 401:
                    raise err from None
            else:
                self._token.worked(generation)
                return result
            refused += 1
            self._token.refused(generation, err, refused)

    # -- calls ---------------------------------------------------------------------------

    def create_user(self, new: NewUser) -> Created:
        """POST /api/v2/users; the new user's id and version."""
        sdk = self._api.module
        body = sdk.CreateUser()
        body.name = new.name
        body.email = new.email
        if new.division_id:
            body.division_id = new.division_id
        if new.title:
            body.title = new.title
        if new.department:
            body.department = new.department
        if new.phone or new.extension:
            body.addresses = [self._work_phone(new.phone, new.extension)]
        user = self._call(self.users.post_users, body)
        return Created(str(user.id), int(user.version or 1))

    def _work_phone(self, phone: str | None, extension: str | None) -> Any:
        contact = self._api.module.Contact()
        contact.media_type = "PHONE"
        contact.type = "WORK"
        if phone:
            contact.address = phone
        if extension:
            contact.extension = extension
        return contact

    def _sdk_api(self, name: str) -> Any:
        """One instance per SDK api class (they are thin wrappers of the shared ApiClient)."""
        apis = self.__dict__.setdefault("_apis", {})
        if name not in apis:
            apis[name] = getattr(self._api.module, name)(self.client)
        return apis[name]

    # -- look-ups by name ------------------------------------------------------------------

    def list_page(self, kind: str, name: str | None, page: int) -> tuple[list[Named], bool]:
        """One page of a listing, filtered by `name` where the API filters (divisions, roles
        and queues match names, skills starts of names; locations are listed whole). Returns
        (objects, whether a next page exists). Callers compare names exactly themselves."""
        api_name, method, filters = LISTINGS[kind]
        kwargs: dict[str, Any] = {"page_size": PAGE_SIZE, "page_number": page}
        if filters and name is not None:
            kwargs["name"] = name
        listing = self._call(getattr(self._sdk_api(api_name), method), **kwargs)
        entities = [Named(str(e.id), e.name or "") for e in (listing.entities or [])]
        count = getattr(listing, "page_count", None)
        more = page < count if count else len(entities) == PAGE_SIZE
        return entities, more

    def division_by_id(self, division_id: str) -> Named | None:
        listing = self._call(
            self._sdk_api("AuthorizationApi").get_authorization_divisions, id=[division_id]
        )
        for e in listing.entities or []:
            if str(e.id) == division_id:
                return Named(str(e.id), e.name or "")
        return None

    def organization(self) -> Named:
        """The org the token belongs to: GET /api/v2/tokens/me (a client-credentials token
        may read its own), else GET /api/v2/organizations/me (needs directory:organization
        view) when the first is refused."""
        try:
            info = self._call(self._sdk_api("TokensApi").get_tokens_me)
            org = getattr(info, "organization", None)
        except ApiError as err:
            if err.status not in (403, 404):
                raise
            org = self._call(self._sdk_api("OrganizationApi").get_organizations_me)
        if org is None or not getattr(org, "id", None):
            raise ApiError(502, "bad.answer", "the API did not say which org the token is for")
        return Named(str(org.id), getattr(org, "name", None) or "")

    def home_division(self) -> Named:
        home = self._call(self._sdk_api("AuthorizationApi").get_authorization_divisions_home)
        return Named(str(home.id), home.name or "Home")

    # -- the steps -------------------------------------------------------------------------

    def grant_roles(self, user_id: str, grants: list[tuple[str, str]]) -> None:
        """POST .../subjects/{id}/bulkadd: roles in divisions; a grant held already is fine."""
        sdk = self._api.module
        body = sdk.RoleDivisionGrants()
        body.grants = []
        for role_id, division_id in grants:
            grant = sdk.RoleDivision()
            grant.role_id, grant.division_id = role_id, division_id
            body.grants.append(grant)
        self._call(
            self._sdk_api("AuthorizationApi").post_authorization_subject_bulkadd,
            user_id,
            body,
            subject_type="PC_USER",
        )

    def grant_role_to_many(self, role_id: str, division_id: str, user_ids: list[str]) -> None:
        """POST /api/v2/authorization/roles/{roleId}?subjectType=PC_USER: every user given
        gets the role in the division; a grant held already is fine."""
        body = self._api.module.SubjectDivisions()
        body.subject_ids = list(user_ids)
        body.division_ids = [division_id]
        self._call(
            self._sdk_api("AuthorizationApi").post_authorization_role,
            role_id,
            body,
            subject_type="PC_USER",
        )

    def add_skills(self, user_id: str, skills: list[tuple[str, float]]) -> None:
        """PATCH .../routingskills/bulk: adds or updates (never removes), 50 at most."""
        self._add_levels("skill", user_id, skills)

    def add_languages(self, user_id: str, languages: list[tuple[str, float]]) -> None:
        """PATCH .../routinglanguages/bulk: adds or updates (never removes), 50 at most."""
        self._add_levels("language", user_id, languages)

    def _add_levels(self, kind: str, user_id: str, levels: list[tuple[str, float]]) -> None:
        model, method, _read = _LEVELS[kind]
        body = []
        for object_id, proficiency in levels:
            entry = getattr(self._api.module, model)()
            entry.id, entry.proficiency = object_id, float(proficiency)
            body.append(entry)
        self._call(getattr(self.users, method), user_id, body)

    def add_queue_members(self, queue_id: str, user_ids: list[str]) -> None:
        """POST /routing/queues/{id}/members: 100 at most; a member already there is fine."""
        sdk = self._api.module
        body = []
        for user_id in user_ids:
            member = sdk.WritableEntity()
            member.id = user_id
            body.append(member)
        self._call(self._sdk_api("RoutingApi").post_routing_queue_members, queue_id, body)

    def update_user(
        self,
        user_id: str,
        version: int,
        *,
        manager_id: str | None = None,
        location_id: str | None = None,
        locations: list[dict[str, Any]] | None = None,
        title: str | None = None,
        department: str | None = None,
        contacts: list[dict[str, Any]] | None = None,
    ) -> int:
        """PATCH /api/v2/users/{id} with only the fields given; the user's new version.
        `locations` ({"id", "notes"}) and `contacts` (the Contact fields, camelCase) replace
        the user's whole lists; `location_id` alone sets a one-location list."""
        sdk = self._api.module
        body = sdk.UpdateUser()
        body.version = version
        if manager_id is not None:
            body.manager = manager_id
        if location_id is not None:
            locations = [{"id": location_id}]
        if locations is not None:
            body.locations = []
            for entry in locations:
                location = sdk.Location()
                location.id = entry["id"]
                if entry.get("notes"):
                    location.notes = entry["notes"]
                body.locations.append(location)
        if title is not None:
            body.title = title
        if department is not None:
            body.department = department
        if contacts is not None:
            body.addresses = []
            for fields in contacts:
                contact = sdk.Contact()
                for key, attribute in _CONTACT_FIELDS.items():
                    if fields.get(key) is not None:
                        setattr(contact, attribute, fields[key])
                body.addresses.append(contact)
        user = self._call(self.users.patch_user, user_id, body)
        return int(user.version or version + 1)

    def get_user(self, user_id: str, state: str | None = None) -> UserDetail:
        kwargs: dict[str, Any] = {"expand": ["locations"]}
        if state:
            kwargs["state"] = state
        user = self._call(self.users.get_user, user_id, **kwargs)
        manager = getattr(user, "manager", None)
        locations_known = getattr(user, "locations", None) is not None
        locations = tuple(
            {
                "id": str(getattr(getattr(loc, "location_definition", None), "id", None) or loc.id),
                "notes": getattr(loc, "notes", None),
            }
            for loc in (getattr(user, "locations", None) or [])
        )
        phones = [read_phone(a) for a in _phone_contacts(user.addresses)]
        phone, extension = work_phone(user.addresses)
        division = getattr(user, "division", None)
        contacts = tuple(
            {key: getattr(a, attribute, None) for key, attribute in _CONTACT_FIELDS.items()}
            for a in (user.addresses or [])
        )
        return UserDetail(
            contacts=contacts,
            locations=locations,
            id=str(user.id),
            version=int(user.version or 1),
            state=user.state,
            division_id=getattr(division, "id", None),
            manager_id=getattr(manager, "id", None) if manager else None,
            location_ids=tuple(str(loc["id"]) for loc in locations),
            title=getattr(user, "title", None),
            department=getattr(user, "department", None),
            phones=tuple(number for number, _ in phones if number),
            extensions=tuple(ext for _, ext in phones if ext),
            phone=phone,
            extension=extension,
            locations_known=locations_known,
        )

    def user_grants(self, user_id: str) -> set[tuple[str, str]]:
        """(role id, division id) the user holds."""
        subject = self._call(self._sdk_api("AuthorizationApi").get_authorization_subject, user_id)
        return {
            (str(g.role.id), str(g.division.id))
            for g in (subject.grants or [])
            if g.role is not None and g.division is not None
        }

    def user_skills(self, user_id: str) -> dict[str, float]:
        """skill id -> proficiency, of every skill the user has."""
        return self._user_levels("skill", user_id)

    def user_languages(self, user_id: str) -> dict[str, float]:
        """language id -> proficiency, of every language the user has."""
        return self._user_levels("language", user_id)

    def _user_levels(self, kind: str, user_id: str) -> dict[str, float]:
        _model, _write, method = _LEVELS[kind]
        listing = self._call(getattr(self.users, method), user_id, page_size=PAGE_SIZE)
        return {str(s.id): float(s.proficiency or 0) for s in (listing.entities or [])}

    def user_queue_ids(self, user_id: str, joined: bool | None = None) -> set[str]:
        """The ids of the queues the user is a member of (GET /api/v2/users/{id}/queues,
        every page: a new user has few). `joined`: None asks for the API's default listing
        (joined members), False for the queues the user is a member of but has not joined."""
        found: set[str] = set()
        page = 1
        extra = {} if joined is None else {"joined": joined}
        while True:
            listing = self._call(
                self._sdk_api("UsersApi").get_user_queues,
                user_id,
                page_size=PAGE_SIZE,
                page_number=page,
                **extra,
            )
            ids = {str(q.id) for q in (listing.entities or [])}
            found |= ids
            if not ids or not getattr(listing, "next_uri", None):
                return found
            page += 1

    def queue_members_page(self, queue_id: str, page: int) -> tuple[set[str], bool]:
        """One page of a queue's members (user ids); the listing has no total: a next page
        exists while it says so."""
        listing = self._call(
            self._sdk_api("RoutingApi").get_routing_queue_members,
            queue_id,
            page_size=PAGE_SIZE,
            page_number=page,
        )
        ids = {str(m.id) for m in (listing.entities or [])}
        return ids, bool(getattr(listing, "next_uri", None)) and len(ids) > 0

    def move_to_division(self, division_id: str, user_ids: list[str]) -> None:
        self._call(
            self._sdk_api("AuthorizationApi").post_authorization_division_object,
            division_id,
            "USER",
            list(user_ids),
        )

    def delete_user(self, user_id: str) -> None:
        self._call(self.users.delete_user, user_id)

    def restore_user(self, user_id: str, version: int) -> int:
        """PATCH a deleted user with only {state: active, version}; its new version."""
        body = self._api.module.UpdateUser()
        body.state = "active"
        body.version = version
        user = self._call(self.users.patch_user, user_id, body)
        return int(user.version or version + 1)

    def find_user_by_email(self, email: str) -> FoundUser | None:
        """POST /api/v2/users/search, exact email, any state (deleted users keep their email)."""
        sdk = self._api.module
        by_email = sdk.UserSearchCriteria()
        by_email.type = "EXACT"
        by_email.fields = ["email"]
        by_email.value = email
        any_state = sdk.UserSearchCriteria()
        any_state.type = "EXACT"
        any_state.fields = ["state"]
        any_state.values = ["active", "inactive", "deleted"]
        request = sdk.UserSearchRequest()
        request.query = [by_email, any_state] if self._search_any_state else [by_email]
        request.page_size = 25
        try:
            response = self._call(self.users.post_users_search, request)
        except ApiError as err:
            if err.status != 400 or not self._search_any_state:
                raise
            # A gateway that does not take the state criterion: search active users only.
            self._search_any_state = False
            request.query = [by_email]
            response = self._call(self.users.post_users_search, request)
        for user in response.results or []:
            if (user.email or "").lower() == email.lower():
                return _found(user)
        return None

    def find_users_by_emails(
        self, emails: list[str], page: int = 1
    ) -> tuple[list[FoundUser], bool]:
        """One page of a search for many emails at once (`values`: any of them), any state:
        (users found, whether a next page exists). Callers compare emails themselves. At
        most SEARCH_VALUES emails a call; a gateway that does not take several values in one
        criterion (a 400) is asked one email a call from then on (`find_user_by_email`)."""
        if not self._search_many:
            raise ApiError(400, "search.values", "one email a search")
        sdk = self._api.module
        by_email = sdk.UserSearchCriteria()
        by_email.type = "EXACT"
        by_email.fields = ["email"]
        by_email.values = list(emails[:SEARCH_VALUES])
        any_state = sdk.UserSearchCriteria()
        any_state.type = "EXACT"
        any_state.fields = ["state"]
        any_state.values = ["active", "inactive", "deleted"]
        request = sdk.UserSearchRequest()
        request.query = [by_email, any_state] if self._search_any_state else [by_email]
        request.page_size = PAGE_SIZE
        request.page_number = page
        try:
            response = self._call(self.users.post_users_search, request)
        except ApiError as err:
            if err.status == 400:
                self._search_many = False
            raise
        users = [_found(user) for user in response.results or []]
        pages = getattr(response, "page_count", None) or 1
        return users, page < pages


def _found(user: Any) -> FoundUser:
    phones: tuple[str, ...] | None = None
    phone = extension = None
    if user.addresses is not None:
        phones = tuple(n for n, _ in map(read_phone, _phone_contacts(user.addresses)) if n)
        phone, extension = work_phone(user.addresses)
    division = getattr(user, "division", None)
    return FoundUser(
        id=str(user.id),
        name=user.name,
        email=user.email,
        state=user.state,
        division_id=getattr(division, "id", None),
        title=getattr(user, "title", None),
        department=getattr(user, "department", None),
        phones=phones,
        version=getattr(user, "version", None),
        modified=_timestamp(getattr(user, "date_modified", None)),
        phone=phone,
        extension=extension,
    )


def _phone_contacts(addresses: Any) -> list[Any]:
    return [a for a in (addresses or []) if getattr(a, "media_type", None) == "PHONE"]


def _timestamp(value: Any) -> float | None:
    """A datetime (the SDK parses dates) or an ISO text, as unix time."""
    if value is None:
        return None
    if isinstance(value, str):
        from datetime import datetime

        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    try:
        return float(value.timestamp())
    except (AttributeError, OverflowError, ValueError):
        return None
