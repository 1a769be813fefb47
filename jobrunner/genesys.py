"""The only module that imports the Genesys Cloud SDK; it maps the SDK's errors to ours.

The SDK's own transport silently re-sends POSTs and retries 429s (urllib3 Retry with POST
allowed) and has no timeouts. We give its ApiClient our own transport: no retries at all,
explicit connect and read timeouts, and every network failure raised as a `TransportError`
that says whether the request may have reached the server. Retrying is the runner's job,
because only the runner knows whether a retry could create a person twice.

At debug level the transport logs one `http.request` event per request, token requests
included: method, route (ids replaced by {id}), status or network error, duration and the retry
decision the answer implies. Never a header, a body, a query value or a token.
"""

from __future__ import annotations

import functools
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from jobrunner.config import Settings
from jobrunner.errors import ConfigError, JobrunnerError
from jobrunner.log import get_logger

log = get_logger("jobrunner.genesys")

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
TOKEN_TRIES = 3  # token requests on 5xx, 429 and network errors
RENEW_BEFORE_S = 60.0  # renew when less than this (or a quarter of the lifetime) is left
SEND_SLACK_S = 5.0  # with less left than this (or a tenth of it), wait for the new token
RENEW_RETRY_S = 5.0  # a renewal the login service failed is tried again this much later
REFUSAL_TRIES = 3  # refusals of credentials that just worked, tried again before giving up
REFUSAL_WAIT_S = 0.5  # ... after this wait, doubling each time


class CallError(JobrunnerError):
    """A call that did not succeed. `maybe_acted`: the server may have done the work."""

    maybe_acted = False
    retryable = False


class ApiError(CallError):
    """The API answered with an error status."""

    def __init__(
        self,
        status: int,
        code: str | None,
        message: str,
        retry_after: float | None = None,
        field_names: tuple[str, ...] = (),
    ) -> None:
        self.status = status
        self.code = code or f"http.{status}"
        self.message = message
        self.retry_after = retry_after
        self.field_names = field_names
        # A 5xx from a gateway may come after the API acted on the request.
        self.maybe_acted = status >= 500 or status == 408
        self.retryable = status >= 500 or status in (408, 429)
        super().__init__(f"HTTP {status} {self.code}: {message}")


class TransportError(CallError):
    """No HTTP answer: refused, timed out, or the connection dropped."""

    retryable = True

    def __init__(self, kind: str, message: str, maybe_acted: bool) -> None:
        self.kind = kind  # connect | timeout | dropped | tls
        self.code = f"network.{kind}"
        self.message = message
        self.maybe_acted = maybe_acted
        super().__init__(message)


@dataclass(frozen=True)
class Created:
    """What a create answered: the new user's id and version."""

    id: str
    version: int


@dataclass(frozen=True)
class Named:
    """An org object found by name (division, role, queue, skill, location)."""

    id: str
    name: str


@dataclass(frozen=True)
class UserDetail:
    """GET /api/v2/users/{id}: what the steps compare with and update."""

    id: str
    version: int
    state: str | None
    division_id: str | None
    manager_id: str | None
    location_ids: tuple[str, ...]
    title: str | None
    department: str | None
    phones: tuple[str, ...]
    extensions: tuple[str, ...]
    # Every contact, every field as the API gave it (a PATCH of `addresses` replaces them all,
    # so the others are sent back exactly as they were), and every location with its notes.
    contacts: tuple[dict[str, Any], ...] = ()
    locations: tuple[dict[str, Any], ...] = ()


# A Contact's fields: JSON name -> the SDK model's attribute.
_CONTACT_FIELDS = {
    "address": "address",
    "display": "display",
    "mediaType": "media_type",
    "type": "type",
    "extension": "extension",
    "countryCode": "country_code",
}

# Look-ups by name: kind -> (SDK api, method, whether `name` filters on the server).
LISTINGS = {
    "division": ("AuthorizationApi", "get_authorization_divisions", True),
    "role": ("AuthorizationApi", "get_authorization_roles", True),
    "queue": ("RoutingApi", "get_routing_queues", True),
    "skill": ("RoutingApi", "get_routing_skills", True),
    "location": ("LocationsApi", "get_locations", False),
}
PAGE_SIZE = 100


@dataclass(frozen=True)
class FoundUser:
    id: str
    name: str | None
    email: str | None
    state: str | None
    division_id: str | None
    title: str | None
    department: str | None
    phones: tuple[str, ...] | None  # None: the search result did not list addresses
    version: int | None = None
    modified: float | None = None  # unix time of dateModified, when the API gives it


@dataclass(frozen=True)
class NewUser:
    """What we send to POST /api/v2/users, and what a look-up compares against."""

    name: str
    email: str
    phone: str | None = None
    division_id: str | None = None
    title: str | None = None
    department: str | None = None
    extension: str | None = None

    def matches(self, user: FoundUser) -> bool:
        """Is `user` the one we (may have) created? Every field we sent must agree.

        Name, email, title and department must be equal (the API leaves empty fields out of
        its JSON, so a missing title is an empty one). A division or an address list the
        search result does not show at all does not count against it. Phones are compared
        by their digits, since the API may format them.
        """

        def agrees(sent: str | None, found: str | None) -> bool:
            return (sent or "").strip() == (found or "").strip()

        if user.state == "deleted":  # a deleted user is never the one we just created
            return False
        if (user.email or "").lower() != self.email.lower():
            return False
        if not user.name or user.name.strip() != self.name.strip():
            return False
        if self.division_id and user.division_id not in (None, self.division_id):
            return False
        if not (agrees(self.title, user.title) and agrees(self.department, user.department)):
            return False
        if user.phones is not None:
            digits = {digits_of(p) for p in user.phones}
            if self.phone and digits_of(self.phone) not in digits:
                return False
            if not self.phone and digits:
                return False
        return True


def _api_error(status: int, body: str | None, headers: Any) -> ApiError:
    code, message = None, ""
    fields: tuple[str, ...] = ()
    try:
        data = json.loads(body or "")
    except ValueError:
        data = None
    if isinstance(data, dict):
        code = data.get("code") or data.get("error")
        message = (
            data.get("message") or data.get("description") or data.get("error_description") or ""
        )
        details = data.get("details") or []
        if isinstance(details, list):
            fields = tuple(
                str(d.get("fieldName"))
                for d in details
                if isinstance(d, dict) and d.get("fieldName")
            )
    if not message:
        message = (body or "").strip()[:200] or "no message"
    retry_after = None
    if headers is not None:
        value = headers.get("Retry-After") if hasattr(headers, "get") else None
        if value is not None:
            try:
                retry_after = max(0.0, float(value))
            except ValueError:
                retry_after = None
    return ApiError(status, code, " ".join(str(message).split()), retry_after, fields)


class _Response:
    """What the SDK expects back from a transport (the shape of its RESTResponse)."""

    def __init__(self, status: int, reason: str, data: str, headers: Any) -> None:
        self.status = status
        self.reason = reason
        self.data = data
        self._headers = headers

    def getheaders(self) -> Any:
        return self._headers

    def getheader(self, name: str, default: Any = None) -> Any:
        return self._headers.get(name, default)


# A path segment kept as it is in a logged route: a word or an API version. Anything else
# (a UUID, a number, an encoded value) becomes {id}.
_ROUTE_WORD = re.compile(r"[A-Za-z]+|v\d+")
TOKEN_PATH = "/oauth/token"


def _route(url: str) -> str:
    """The path of `url` with every id replaced by {id}: "/api/v2/users/{id}"."""
    path = urlsplit(url).path
    return "/".join(
        part if not part or _ROUTE_WORD.fullmatch(part) else "{id}" for part in path.split("/")
    )


def _retry_decision(
    token_request: bool, status: int | None, network: str | None, had_token: bool = False
) -> str:
    """What the client layer (or, for the API, the runner) does after this answer."""
    if network is not None:
        if token_request and network == "connect":
            return "no retry"  # a wrong environment, most likely: stop at once
        return "back off and retry"
    assert status is not None
    if 200 <= status <= 205:
        return "ok"
    if status in (408, 429) or status >= 500:
        if token_request:
            return "back off and retry"
        return "every worker waits Retry-After" if status == 429 else "back off and retry"
    if token_request:
        # A refusal of credentials that got a token before may pass (revocations propagate).
        return "wait, then again" if had_token and status in (400, 401) else "no retry"
    if status == 401:
        return "new token, then again"
    return "no retry"


Decide = Callable[[bool, int | None, str | None], str]


def _make_transport(
    pool_size: int,
    connect_timeout: float,
    read_timeout: float,
    decide: Decide = _retry_decision,
) -> Any:
    import certifi
    import urllib3
    from PureCloudPlatformClientV2.abstract_http_client import AbstractHttpClient
    from PureCloudPlatformClientV2.rest import ApiException
    from urllib3 import exceptions as ux

    class Transport(AbstractHttpClient):  # type: ignore[misc]
        """No retries, real timeouts, our own errors."""

        def __init__(self) -> None:
            super().__init__()
            self._local = threading.local()  # each thread's last token answer
            self.pool = urllib3.PoolManager(
                num_pools=4,
                maxsize=pool_size,
                block=True,
                retries=False,
                timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
                cert_reqs="CERT_REQUIRED",
                ca_certs=certifi.where(),
            )

        def request(self, options: Any) -> Any:
            method = options.method
            url = options.url
            route = _route(url)
            headers = dict(options.headers or {})
            headers.setdefault("Content-Type", "application/json")
            body: bytes | None = None
            if method in ("POST", "PUT", "PATCH"):
                if headers["Content-Type"] == "application/x-www-form-urlencoded":
                    body = urlencode(options.post_params or {}).encode()
                else:
                    body = json.dumps(options.body).encode() if options.body is not None else b"{}"
            if options.query_params:
                url += "?" + urlencode(options.query_params, doseq=True)
            started = time.perf_counter()
            try:
                r = self._send(method, url, body, headers)
            except TransportError as error:
                self._log(method, route, options.query_params, started, network=error.kind)
                raise
            data = r.data.decode("utf-8", errors="replace")
            response = _Response(r.status, r.reason or "", data, r.headers)
            self._log(
                method,
                route,
                options.query_params,
                started,
                status=r.status,
                retry_after=r.headers.get("Retry-After"),
            )
            if not 200 <= r.status <= 205:
                raise ApiException(http_resp=response)
            if route.endswith(TOKEN_PATH):
                self._local.token_answer = data
            return response

        def _send(self, method: str, url: str, body: bytes | None, headers: Any) -> Any:
            try:
                return self.pool.request(
                    method,
                    url,
                    body=body,
                    headers=headers,
                    retries=False,
                    redirect=False,
                    preload_content=True,
                )
            except ux.MaxRetryError as exc:  # urllib3 may still wrap the cause
                raise _transport_error(exc.reason or exc, method) from None
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised as ours
                raise _transport_error(exc, method) from None

        def take_token_answer(self) -> str | None:
            """The body of this thread's last token answer (the SDK keeps only the token)."""
            answer: str | None = getattr(self._local, "token_answer", None)
            self._local.token_answer = None
            return answer

        @staticmethod
        def _log(
            method: str,
            route: str,
            query: Any,
            started: float,
            status: int | None = None,
            network: str | None = None,
            retry_after: str | None = None,
        ) -> None:
            """One debug event per request. Names only: no header, body or query value."""
            fields: dict[str, Any] = {"method": method, "route": route}
            if query:
                fields["query"] = ",".join(sorted(str(k) for k in query))
            if network is None:
                fields["status"] = status
            else:
                fields["network_error"] = network
            fields["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
            fields["retry"] = decide(route.endswith(TOKEN_PATH), status, network)
            if retry_after is not None:
                try:
                    fields["retry_after_s"] = float(retry_after)
                except ValueError:
                    fields["retry_after_s"] = None
            log.debug("http.request", **fields)

    return Transport()


def _transport_error(exc: BaseException, method: str) -> TransportError:
    from urllib3 import exceptions as ux

    sent = method not in ("GET", "HEAD")  # for reads it does not matter; be safe for writes
    # urllib3 2 makes NameResolutionError and NewConnectionError kinds of ConnectTimeoutError:
    # test the narrow ones first.
    if isinstance(exc, ux.NameResolutionError):
        return TransportError("connect", "host name not found (DNS)", maybe_acted=False)
    if isinstance(exc, (ux.NewConnectionError, ConnectionRefusedError)):
        reason = str(exc).split(": ", 1)[-1]
        return TransportError("connect", f"cannot connect: {reason}", maybe_acted=False)
    if isinstance(exc, ux.ConnectTimeoutError):
        return TransportError("connect", "connection timed out", maybe_acted=False)
    if isinstance(exc, ux.SSLError):
        # It may come while reading the answer, after the server acted: stay on the safe side.
        return TransportError("tls", f"TLS error: {exc}", maybe_acted=sent)
    if isinstance(exc, (ux.ReadTimeoutError, TimeoutError)):
        return TransportError("timeout", "no answer within the read timeout", maybe_acted=sent)
    if isinstance(exc, (ux.ProtocolError, ConnectionError, ux.HTTPError, OSError)):
        return TransportError("dropped", "connection dropped before an answer", maybe_acted=sent)
    return TransportError("dropped", f"request failed: {type(exc).__name__}", maybe_acted=sent)


@dataclass(frozen=True)
class _Sdk:
    module: Any
    api_exception: Any
    client: Any
    users: Any
    transport: Any


class _LoginUnavailable(ConfigError):
    """No token, for a reason that may pass: the login service failed, limited or vanished."""


class GenesysClient:
    """One ApiClient and one token, shared by every worker thread.

    The token is renewed before it expires: the first call that finds less than
    min(RENEW_BEFORE_S, a quarter of its lifetime) left fetches a new one while the others go
    on with the old one, still valid. A 401 (revocation) gets one new token for all threads.
    A refusal of credentials that have just worked (a 401 for a token nobody has used yet, or
    the login service refusing after it gave a token) is tried again after a short wait, a few
    times, before it is a ConfigError. `clock` (monotonic seconds) and `sleep` are injectable.
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
        self._clock = clock
        self._sleep = sleep
        self._token_lock = threading.Lock()  # held while a token is fetched
        self._token_generation = 0  # how many tokens we got
        self._proven_generation = 0  # the newest token a call succeeded with
        self._fresh_refusals = 0  # new tokens refused in a row before any call worked
        self.tokens_fetched = 0  # token requests sent
        self.token_expires_at: float | None = None  # clock() time; None: no expires_in given
        self.token_renew_at = math.inf  # clock() time from which a call renews first
        self._token_lifetime = math.inf
        self._refusal: ConfigError | None = None
        self._search_any_state = True  # include deleted users (they keep their email)
        self.on_new_token: Any = None  # called after each new token (the pacer's window)

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
        return _retry_decision(token_request, status, network, self._token_generation > 0)

    # -- authentication ------------------------------------------------------------------

    def authenticate(self) -> None:
        """Fetch a client-credentials token. Every failure is a ConfigError.

        A 5xx, 429 or network error from the login service is tried a few times first.
        """
        with self._token_lock:
            self._fetch_token()

    def _fetch_token(self) -> None:
        """One token request (a few on passing failures); the caller holds _token_lock.

        The SDK's own request sets the token on the ApiClient; its lifetime (`expires_in`,
        which the SDK drops) comes from the answer our transport kept.
        """
        where = self.settings.endpoint.login_url
        failures = refusals = 0
        while True:
            sent_at = self._clock()
            self._api.transport.take_token_answer()  # forget any stale one
            try:
                self.tokens_fetched += 1
                self.client.get_client_credentials_token(
                    self.settings.client_id, self.settings.client_secret
                )
                answer = self._api.transport.take_token_answer()
                break
            except self._api.api_exception as exc:
                err = _api_error(exc.status or 0, exc.body, exc.headers)
                if err.retryable and failures < TOKEN_TRIES - 1:
                    failures += 1
                    self._sleep(min(err.retry_after or 2.0**failures, 30.0))
                    continue
                if err.retryable:
                    raise _LoginUnavailable(f"cannot get a token from {where}: {err}") from None
                refused = err.status in (400, 401)
                if refused and self._token_generation and refusals < REFUSAL_TRIES:
                    # These credentials got a token before: a refusal may pass.
                    refusals += 1
                    wait = REFUSAL_WAIT_S * 2 ** (refusals - 1)
                    log.warning("token.refused", code=err.code, by="login", retry_in_s=wait)
                    self._sleep(wait)
                    continue
                if refused and err.code in ("invalid_client", "unauthorized_client"):
                    raise ConfigError(
                        f"{where} refused the OAuth client ({err.code}): check "
                        "GENESYS_CLOUD_CLIENT_ID and GENESYS_CLOUD_CLIENT_SECRET, and that the "
                        "client's grant type is Client Credentials"
                    ) from None
                raise ConfigError(f"cannot get a token from {where}: {err}") from None
            except TransportError as exc:
                if exc.kind != "connect" and failures < TOKEN_TRIES - 1:
                    failures += 1
                    self._sleep(2.0**failures)
                    continue
                raise _LoginUnavailable(
                    f"cannot reach {where}: {exc.message} (check GENESYS_CLOUD_ENVIRONMENT)"
                ) from None
            except (ValueError, KeyError) as exc:
                raise ConfigError(
                    f"{where} answered the token request with no token ({type(exc).__name__})"
                ) from None
        self._set_lifetime(sent_at, answer)
        self._token_generation += 1
        if self.on_new_token is not None:
            self.on_new_token()

    def _set_lifetime(self, sent_at: float, answer: str | None) -> None:
        """Expiry and renewal time of the new token, counted from when it was asked for."""
        try:
            lifetime = float(json.loads(answer or "")["expires_in"])
        except (ValueError, KeyError, TypeError):
            lifetime = math.nan
        if not (math.isfinite(lifetime) and lifetime > 0):
            self.token_expires_at, self.token_renew_at = None, math.inf
            self._token_lifetime = math.inf
            return
        self._token_lifetime = lifetime
        self.token_expires_at = sent_at + lifetime
        self.token_renew_at = self.token_expires_at - min(RENEW_BEFORE_S, lifetime / 4)

    def _token_usable(self) -> bool:
        """Can a request still go out with the current token (not about to expire)?"""
        if self.token_expires_at is None:
            return True
        slack = min(SEND_SLACK_S, self._token_lifetime / 10)
        return self._clock() < self.token_expires_at - slack

    def _renew_if_due(self) -> None:
        """Before a request: renew a token near its end, one request for all threads.

        While one thread renews, the others go on with the current token if it is still
        usable, or wait for the new one.
        """
        if self._clock() < self.token_renew_at and self._refusal is None:
            return
        if not self._token_lock.acquire(blocking=not self._token_usable()):
            return  # another thread is renewing; ours is still good
        try:
            if self._refusal is not None:
                raise self._refusal
            if self._clock() < self.token_renew_at:
                return  # renewed while we waited
            try:
                self._fetch_token()
            except _LoginUnavailable as exc:
                if not self._token_usable():
                    self._refusal = exc
                    raise
                # The current token still works: try again a little later.
                left = (self.token_expires_at or 0.0) - self._clock()
                self.token_renew_at = self._clock() + min(RENEW_RETRY_S, left / 2)
                log.warning("token.renew_later", error=str(exc), seconds_left=round(left, 1))
            except ConfigError as refusal:
                self._refusal = refusal
                raise
        finally:
            self._token_lock.release()

    def _renew_after_401(self, seen_generation: int, err: ApiError) -> None:
        """After a 401: one new token for all the threads that saw the old one refused.

        The lock is held for the whole fetch, so the others wait and then use the new token;
        if the login service refused it, they all get that refusal without asking again.
        A token refused before any call succeeded with it is replaced after a short wait, a
        few times (revocations take a moment to settle), then the run stops.
        """
        with self._token_lock:
            if self._refusal is not None:
                raise self._refusal
            if self._token_generation != seen_generation:
                return  # another thread has a new token already
            if self._proven_generation != seen_generation:
                self._fresh_refusals += 1
                if self._fresh_refusals > REFUSAL_TRIES:
                    self._refusal = _fresh_token_refused(err)
                    raise self._refusal
                wait = REFUSAL_WAIT_S * 2 ** (self._fresh_refusals - 1)
                log.warning("token.refused", code=err.code, by="api", retry_in_s=wait)
                self._sleep(wait)
            try:
                self._fetch_token()
            except ConfigError as refusal:
                self._refusal = refusal
                raise

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Every API call goes through here: token renewal, 401s, errors mapped to ours."""
        refused = 0
        while True:
            self._renew_if_due()
            generation = self._token_generation
            try:
                result = fn(*args, **kwargs)
            except self._api.api_exception as exc:
                err = _api_error(exc.status or 0, exc.body, exc.headers)
                if err.status != 401:
                    raise err from None
                refused += 1
                if refused > REFUSAL_TRIES + 1:
                    raise _fresh_token_refused(err) from None
                self._renew_after_401(generation, err)
                continue
            if generation > self._proven_generation:
                self._proven_generation = generation
                self._fresh_refusals = 0
            return result

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

    def add_skills(self, user_id: str, skills: list[tuple[str, float]]) -> None:
        """PATCH .../routingskills/bulk: adds or updates (never removes), 50 at most."""
        sdk = self._api.module
        body = []
        for skill_id, proficiency in skills:
            skill = sdk.UserRoutingSkillPost()
            skill.id, skill.proficiency = skill_id, float(proficiency)
            body.append(skill)
        self._call(self.users.patch_user_routingskills_bulk, user_id, body)

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
        locations = tuple(
            {
                "id": str(getattr(getattr(loc, "location_definition", None), "id", None) or loc.id),
                "notes": getattr(loc, "notes", None),
            }
            for loc in (getattr(user, "locations", None) or [])
        )
        phones = [a for a in (user.addresses or []) if getattr(a, "media_type", None) == "PHONE"]
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
            phones=tuple(a.address for a in phones if a.address),
            extensions=tuple(a.extension for a in phones if a.extension),
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
        listing = self._call(self.users.get_user_routingskills, user_id, page_size=PAGE_SIZE)
        return {str(s.id): float(s.proficiency or 0) for s in (listing.entities or [])}

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


def _fresh_token_refused(err: ApiError) -> ConfigError:
    return ConfigError(f"the API refused a fresh token ({err.code}): {err.message}")


def digits_of(phone: str | None) -> str:
    """A phone number's digits (the API may format numbers)."""
    return "".join(c for c in phone or "" if c.isdigit())


def _found(user: Any) -> FoundUser:
    phones = None
    if user.addresses is not None:
        # Numbers only: a contact with just an extension has no number (its display may
        # read "ext 204", which is not a phone to compare).
        phones = tuple(
            a.address
            for a in user.addresses
            if getattr(a, "media_type", None) == "PHONE" and a.address
        )
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
    )


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
