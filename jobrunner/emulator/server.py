"""The emulator's HTTP server: one loopback port for the login host and the API host.

    from jobrunner.emulator.server import Emulator, EmulatorConfig
    with Emulator(EmulatorConfig(rate_per_minute=300)) as emu:
        client.set_gateway("127.0.0.1", "http", emu.port, "", "")

Order of events for an /api/v2 request: latency sleep, bearer token check (401), rate limit
(429, costs no budget), token-revocation countdown, 5xx fault (502/503/504, before acting),
the route itself (its permission check, 403, first), then for a successful create the
dropped-connection fault.

Every response goes out in a single send with TCP_NODELAY set, so keep-alive clients never wait
on Nagle's algorithm and delayed ACKs.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import random
import re
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote

from jobrunner.emulator.access import RateLimiter, TokenRegistry
from jobrunner.emulator.directory import Directory, load_state, save_state
from jobrunner.emulator.errors import (
    ApiError,
    bad_request,
    invalid_query_param,
    invalid_value,
    missing_permission,
    not_found,
)
from jobrunner.log import get_logger

MAX_BODY_BYTES = 512_000
_DISCARD_LIMIT = 16 * 1024 * 1024
FAULT_STATUSES = (502, 503, 504)
_FAULT_CODES = {502: "bad.gateway", 503: "service.unavailable", 504: "gateway.timeout"}
_STATE_FORMAT = "jobrunner-emulator-state"
_STATE_VERSION = 2  # 2 added grants, skills, queue members and user locations
_MAX_PAGE_SIZE = 500
_MAX_MEMBERS_PAGE_SIZE = 100  # GET /api/v2/routing/queues/{id}/members: "Max value is 100"

log = get_logger("jobrunner.emulator")


@dataclass
class EmulatorConfig:
    """What the emulated org looks like and how badly it behaves.

    Fields are read on every request, so a test may change them on a running emulator
    (e.g. `emu.config.fault_5xx_rate = 0.5`). `clock` is monotonic seconds; tests inject a
    fake one to move the rate-limit window and token expiry without waiting.
    """

    client_id: str = "jobrunner-demo"
    client_secret: str = "jobrunner-demo-secret"
    rate_per_minute: int = 300
    # The real API's window is 60 s. A shorter one makes rate-limit drills (and tests) quick:
    # `rate_per_minute` requests are then allowed per `rate_window_s` seconds.
    rate_window_s: float = 60.0
    # "sliding": any `rate_window_s` seconds; "fixed": windows that reset on multiples of it.
    rate_window_mode: str = "sliding"
    token_lifetime_s: float = 86400
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    fault_5xx_rate: float = 0.0
    drop_after_create_rate: float = 0.0
    revoke_tokens_after: int | None = None
    seed: int | None = 0
    existing_users: list[dict[str, Any]] = field(default_factory=list)
    divisions: dict[str, str] = field(default_factory=dict)
    state_file: str | Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    clock: Callable[[], float] = time.monotonic
    search_index_delay_s: float = 0.0
    home_division_id: str | None = None
    save_interval_s: float = 2.0
    # Divisions, roles, queues, skills, locations and users, as in an org file (org.py).
    org: dict[str, Any] | None = None
    # For this long after a user's creation the onboarding endpoints (bulkadd, subjects,
    # routingskills, queue members, a user's queues) answer 404 for it.
    fresh_user_404_s: float = 0.0
    # Permissions the caller lacks ("routing:queue:edit"), or lacks in one division only
    # ("authorization:grant:add@<division id>"): the endpoints needing them answer 403.
    refused_permissions: Collection[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.rate_per_minute < 1:
            raise ValueError("rate_per_minute must be at least 1")
        if self.rate_window_s <= 0:
            raise ValueError("rate_window_s must be positive")
        if self.rate_window_mode not in ("sliding", "fixed"):
            raise ValueError("rate_window_mode must be 'sliding' or 'fixed'")
        if self.token_lifetime_s <= 0:
            raise ValueError("token_lifetime_s must be positive")
        for name in ("latency_ms", "latency_jitter_ms", "search_index_delay_s", "fresh_user_404_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("fault_5xx_rate", "drop_after_create_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.revoke_tokens_after is not None and self.revoke_tokens_after < 1:
            raise ValueError("revoke_tokens_after must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if isinstance(self.refused_permissions, str) or not all(
            isinstance(p, str) and p for p in self.refused_permissions
        ):
            raise ValueError("refused_permissions must be a collection of permission names")


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False


def _json_reply(status: int, data: Any, headers: list[tuple[str, str]] | None = None) -> _Reply:
    return _Reply(status, json.dumps(data, separators=(",", ":")).encode(), headers or [])


def _error_reply(error: ApiError) -> _Reply:
    context_id = str(uuid.uuid4())
    headers = [("ININ-Correlation-Id", context_id), *error.headers.items()]
    return _json_reply(error.status, error.body(context_id), headers)


class _Stats:
    """Counters for GET /emulator/stats."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests_total = 0
            self.by_route: Counter[str] = Counter()
            self.by_status: Counter[str] = Counter()
            self.creations: Counter[str] = Counter()
            self.faults: Counter[str] = Counter(
                {"http_5xx": 0, "drop_after_create": 0, "token_revocation": 0}
            )
            self.rate_limited = 0
            self.tokens_issued = 0
            self.token_requests_rejected = 0

    def record(self, route: str, status: int | str) -> None:
        with self._lock:
            self.requests_total += 1
            self.by_route[route] += 1
            self.by_status[str(status)] += 1
            if status == 429:
                self.rate_limited += 1

    def bump(self, what: str, key: str | None = None) -> None:
        with self._lock:
            if what == "creation" and key is not None:
                self.creations[key] += 1
            elif what == "fault" and key is not None:
                self.faults[key] += 1
            elif what == "token":
                self.tokens_issued += 1
            elif what == "token_rejected":
                self.token_requests_rejected += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_total": self.requests_total,
                "requests_by_route": dict(self.by_route),
                "responses_by_status": dict(self.by_status),
                "creations_by_email": dict(self.creations),
                "rate_limited": self.rate_limited,
                "faults": dict(self.faults),
                "tokens_issued": self.tokens_issued,
                "token_requests_rejected": self.token_requests_rejected,
            }


def _bearer(headers: Any) -> str | None:
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _basic(headers: Any) -> tuple[str, str] | None:
    value = headers.get("Authorization")
    if not value:
        return None
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


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
    _route_for("/api/v2/users/{id}/queues", GET="_user_queues"),
    _route_for("/api/v2/authorization/divisions", GET="_divisions"),
    _route_for("/api/v2/authorization/divisions/home", GET="_home"),
    _route_for("/api/v2/authorization/divisions/{id}", GET="_division"),
    _route_for("/api/v2/authorization/divisions/{id}/objects/{type}", POST="_move_objects"),
    _route_for("/api/v2/authorization/roles", GET="_roles"),
    _route_for("/api/v2/authorization/subjects/{id}", GET="_subject"),
    _route_for("/api/v2/authorization/subjects/{id}/bulkadd", POST="_bulkadd"),
    _route_for("/api/v2/routing/queues", GET="_queues"),
    _route_for("/api/v2/routing/queues/{id}/members", GET="_members", POST="_update_members"),
    _route_for("/api/v2/routing/skills", GET="_skills"),
    _route_for("/api/v2/locations", GET="_locations"),
)


class Emulator:
    """A running (after start()) emulated Genesys Cloud org. See the module docstring."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        cfg = self.config
        self._rng = random.Random(cfg.seed)
        self._rng_lock = threading.Lock()
        saved = load_state(cfg.state_file) if cfg.state_file else None
        home_id = (saved or {}).get("homeDivisionId") or cfg.home_division_id
        if not home_id:
            home_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        self.directory = Directory(home_id, cfg.divisions)
        org = cfg.org or {}
        self.directory.load_org(org, seed=cfg.seed)
        for record in (saved or {}).get("users", []):
            self.directory.add_existing(record)
        for record in [*org.get("users", []), *cfg.existing_users]:
            self.directory.add_existing(record, skip_taken=saved is not None)
        if saved is not None:
            dropped = self.directory.load_onboarding(saved)
            if dropped:
                log.warning("emulator.state_references_dropped", count=dropped)
        self.tokens = TokenRegistry(self._now)
        self.limiter = RateLimiter(self._now)
        self._stats = _Stats()
        self._counter_lock = threading.Lock()
        self._api_requests = 0
        self._revoked_after_count = False
        self._dirty = threading.Event()
        self._save_lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []

    # ---- public API ----------------------------------------------------------------------

    @property
    def home_division_id(self) -> str:
        return self.directory.home_division_id

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = self.config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def start(self) -> Emulator:
        """Bind and serve in background threads. Raises OSError if the port is taken."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.config.host, self.config.port), _Handler, self)
        serve = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="emulator-serve",
            daemon=True,
        )
        serve.start()
        self._threads = [serve]
        if self.config.state_file:
            saver = threading.Thread(target=self._save_loop, name="emulator-save", daemon=True)
            saver.start()
            self._threads.append(saver)
        log.info("emulator.started", url=self.url, users=len(self.directory))
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection, then save the state file."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=2.0)
        self._server = None
        if self.config.state_file:
            self.save()
        log.info("emulator.stopped")

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters since start (or the last reset_stats()), as GET /emulator/stats."""
        data = self._stats.snapshot()
        states = Counter(u["state"] for u in self.directory.users())
        data["users"] = {
            "total": sum(states.values()),
            **{s: states[s] for s in ("active", "inactive", "deleted")},
        }
        data["live_tokens"] = len(self.tokens)
        data["onboarding"] = self.directory.onboarding()
        return data

    def reset_stats(self) -> None:
        self._stats.reset()

    def users(self) -> list[dict[str, Any]]:
        """Every user, deleted ones included, as the API shows them."""
        return json.loads(json.dumps(self.directory.users()))

    def revoke_tokens(self) -> int:
        """Invalidate every token issued so far; clients must fetch a new one."""
        count = self.tokens.revoke_all()
        self.limiter.forget(self.tokens.check)
        log.info("emulator.tokens_revoked", count=count)
        return count

    def save(self) -> None:
        """Write the state file now (atomically)."""
        if not self.config.state_file:
            return
        with self._save_lock:
            self._dirty.clear()
            save_state(
                self.config.state_file,
                {
                    "format": _STATE_FORMAT,
                    "version": _STATE_VERSION,
                    "homeDivisionId": self.home_division_id,
                    "users": self.directory.users(),
                    **self.directory.export_onboarding(),
                },
            )

    # ---- internals -----------------------------------------------------------------------

    def _now(self) -> float:
        return self.config.clock()

    def _save_loop(self) -> None:
        while not self._stopping.wait(self.config.save_interval_s):
            if self._dirty.is_set():
                try:
                    self.save()
                except OSError as error:
                    log.error("emulator.save_failed", error=str(error))

    def _track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    def _chance(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        with self._rng_lock:
            return self._rng.random() < rate

    def _pause(self) -> None:
        cfg = self.config
        if cfg.latency_ms <= 0 and cfg.latency_jitter_ms <= 0:
            return
        with self._rng_lock:
            jitter = self._rng.uniform(-cfg.latency_jitter_ms, cfg.latency_jitter_ms)
        delay = max(0.0, cfg.latency_ms + jitter) / 1000.0
        # An Event, not a lock: other connections carry on, and stop() wakes the sleeper.
        self._stopping.wait(delay)

    def _count_api_request(self) -> None:
        limit = self.config.revoke_tokens_after
        with self._counter_lock:
            self._api_requests += 1
            fire = (
                limit is not None
                and not self._revoked_after_count
                and (self._api_requests >= limit)
            )
            if fire:
                self._revoked_after_count = True
        if fire:
            self._stats.bump("fault", "token_revocation")
            self.revoke_tokens()

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[str, _Reply]:
        """Answer one request. Returns (route label for the stats, reply)."""
        path, _, query = target.partition("?")
        if path.startswith("/api/v2/"):
            return self._api(method, path, query, headers, body)
        if path == "/oauth/token":
            return "POST /oauth/token", self._oauth(method, headers, body)
        if path.startswith("/emulator/"):
            return "", self._inspect(method, path)
        return f"{method} (unknown)", _error_reply(not_found())

    def _oauth(self, method: str, headers: Any, body: bytes) -> _Reply:
        if method != "POST":
            return _json_reply(405, {"error": "invalid_request", "description": "use POST"})
        form = parse_qs(body.decode("utf-8", "replace"))
        creds = _basic(headers)
        if creds is None and "client_id" in form:
            creds = (form["client_id"][-1], form.get("client_secret", [""])[-1])
        cfg = self.config
        rejection = None
        if creds is None:
            rejection = ("invalid_client", "client authentication required")
        elif not hmac.compare_digest(creds[0].encode(), cfg.client_id.encode()):
            rejection = ("invalid_client", "client not found")
        elif not hmac.compare_digest(creds[1].encode(), cfg.client_secret.encode()):
            rejection = ("invalid_client", "authentication failed")
        elif form.get("grant_type", [""])[-1] != "client_credentials":
            rejection = ("unsupported_grant_type", "grant type not supported for this client")
        if rejection is not None:
            self._stats.bump("token_rejected")
            error, description = rejection
            return _json_reply(
                400, {"error": error, "description": description, "error_description": description}
            )
        token = self.tokens.issue(cfg.token_lifetime_s)
        self._stats.bump("token")
        return _json_reply(
            200,
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": int(cfg.token_lifetime_s),
            },
        )

    def _inspect(self, method: str, path: str) -> _Reply:
        if method == "GET" and path == "/emulator/stats":
            return _json_reply(200, self.stats())
        if method == "GET" and path == "/emulator/users":
            return _json_reply(200, self.directory.users())
        if method == "GET" and path == "/emulator/health":
            return _json_reply(200, {"status": "ok", "users": len(self.directory)})
        if method == "POST" and path == "/emulator/revoke-tokens":
            return _json_reply(200, {"revoked": self.revoke_tokens()})
        if method == "POST" and path == "/emulator/reset-stats":
            self.reset_stats()
            return _json_reply(200, {})
        return _error_reply(not_found(f"No emulator endpoint {method} {path}"))

    def _route(
        self, method: str, path: str
    ) -> tuple[str, Callable[..., _Reply] | None, tuple[str, ...]]:
        for route in _ROUTES:
            match = route.pattern.match(path)
            if match:
                name = route.handlers.get(method)
                handler = getattr(self, name) if name else None
                return f"{method} {route.template}", handler, tuple(map(unquote, match.groups()))
        return f"{method} (unknown)", None, ()

    def _api(
        self, method: str, path: str, query: str, headers: Any, body: bytes
    ) -> tuple[str, _Reply]:
        cfg = self.config
        self._pause()
        route, handler, args = self._route(method, path)
        token = _bearer(headers)
        if token is None:
            return route, _error_reply(
                ApiError(
                    401,
                    "authentication.required",
                    "No authentication bearer token specified in authorization header.",
                )
            )
        if not self.tokens.check(token):
            return route, _error_reply(
                ApiError(401, "bad.credentials", "Invalid login credentials.")
            )
        wait = self.limiter.admit(
            token, cfg.rate_per_minute, cfg.rate_window_s, cfg.rate_window_mode
        )
        if wait:
            return route, _error_reply(
                ApiError(
                    429,
                    "too.many.requests.retry.after",
                    "Rate limit exceeded the maximum. Retry the request in [{retryAfter}] seconds",
                    params={"retryAfter": str(wait)},
                    headers={"Retry-After": str(wait)},
                )
            )
        self._count_api_request()
        if self._chance(cfg.fault_5xx_rate):
            with self._rng_lock:
                status = self._rng.choice(FAULT_STATUSES)
            self._stats.bump("fault", "http_5xx")
            phrase = HTTPStatus(status).phrase
            return route, _error_reply(
                ApiError(status, _FAULT_CODES[status], f"{phrase} (injected by the emulator)")
            )
        if handler is None:
            return route, _error_reply(not_found(f"No API route {method} {path}"))
        try:
            params = parse_qs(query)
            return route, handler(body=body, args=args, params=params)
        except ApiError as error:
            return route, _error_reply(error)

    # ---- API routes ----------------------------------------------------------------------

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

    def _refused_divisions(self, permission: str) -> set[str]:
        prefix = permission + "@"
        return {p[len(prefix) :] for p in self.config.refused_permissions if p.startswith(prefix)}

    def _fresh(self) -> dict[str, Any]:
        """now and fresh_s for the Directory's onboarding methods."""
        return {"now": self._now(), "fresh_s": self.config.fresh_user_404_s}

    def _create(self, body: bytes, **_: Any) -> _Reply:
        data = self._json_body(body)
        division_id = data.get("divisionId") if isinstance(data, dict) else None
        self._authorize(
            "directory:user:add",
            [division_id if isinstance(division_id, str) else self.home_division_id],
        )
        user = self.directory.create(data, now=self._now())
        self._dirty.set()
        self._stats.bump("creation", user["email"].lower())
        if self._chance(self.config.drop_after_create_rate):
            self._stats.bump("fault", "drop_after_create")
            return _Reply(200, drop=True)
        return _json_reply(200, user)

    def _search(self, body: bytes, **_: Any) -> _Reply:
        self._authorize("directory:user:view")
        result = self.directory.search(
            self._json_body(body),
            now=self._now(),
            index_delay_s=self.config.search_index_delay_s,
            hidden_divisions=self._refused_divisions("directory:user:view"),
        )
        return _json_reply(200, result)

    def _get_user(self, args: tuple[str, ...], params: dict[str, list[str]], **_: Any) -> _Reply:
        self._authorize("directory:user:view", [self.directory.division_of(args[0])])
        user = self.directory.get(
            args[0], state=_query_str(params, "state"), expand=_query_list(params, "expand")
        )
        return _json_reply(200, user)

    def _patch_user(self, args: tuple[str, ...], body: bytes, **_: Any) -> _Reply:
        self._authorize("directory:user:edit", [self.directory.division_of(args[0])])
        user = self.directory.patch(args[0], self._json_body(body))
        self._dirty.set()
        return _json_reply(200, user)

    def _delete_user(self, args: tuple[str, ...], **_: Any) -> _Reply:
        self._authorize("directory:user:delete", [self.directory.division_of(args[0])])
        self.directory.delete(args[0])
        self._dirty.set()
        return _json_reply(200, {})

    def _divisions(self, params: dict[str, list[str]], **_: Any) -> _Reply:
        return _json_reply(
            200,
            self.directory.list_divisions(
                name=_query_str(params, "name"), ids=_query_list(params, "id"), **_paging(params)
            ),
        )

    def _home(self, **_: Any) -> _Reply:
        return _json_reply(200, self.directory.home_division())

    def _division(self, args: tuple[str, ...], **_: Any) -> _Reply:
        return _json_reply(200, self.directory.get_division(args[0]))

    def _move_objects(self, args: tuple[str, ...], body: bytes, **_: Any) -> _Reply:
        division_id, object_type = args
        user_ids = self._json_body(body)
        moved = user_ids if isinstance(user_ids, list) else []
        self._authorize(
            "authorization:division:edit",
            [division_id, *(self.directory.division_of(u) for u in moved if isinstance(u, str))],
        )
        self.directory.move_to_division(division_id, object_type, user_ids)
        self._dirty.set()
        return _Reply(204)

    def _org_listing(
        self, kind: str, params: dict[str, list[str]], name: str | None = None
    ) -> _Reply:
        listing = self.directory.list_org(
            kind,
            name=name,
            sort_order=_query_str(params, "sortOrder"),
            ids=_query_list(params, "id"),
            **_paging(params),
        )
        return _json_reply(200, listing)

    def _roles(self, params: dict[str, list[str]], **_: Any) -> _Reply:
        self._authorize("authorization:role:view")
        return self._org_listing("roles", params, _query_str(params, "name"))

    def _queues(self, params: dict[str, list[str]], **_: Any) -> _Reply:
        self._authorize("routing:queue:view")
        return self._org_listing("queues", params, _query_str(params, "name"))

    def _skills(self, params: dict[str, list[str]], **_: Any) -> _Reply:
        return self._org_listing("skills", params, _query_str(params, "name"))

    def _locations(self, params: dict[str, list[str]], **_: Any) -> _Reply:
        return self._org_listing("locations", params)  # no name filter in the real API

    def _bulkadd(self, args: tuple[str, ...], body: bytes, params: dict[str, list[str]]) -> _Reply:
        data = self._json_body(body)
        self._authorize("authorization:grant:add", _grant_divisions(data))
        subject_type = _query_str(params, "subjectType") or "PC_USER"
        if subject_type not in ("PC_USER", "PC_GROUP", "PC_OAUTH_CLIENT"):
            raise invalid_query_param(
                "subjectType", subject_type, ("PC_USER", "PC_GROUP", "PC_OAUTH_CLIENT")
            )
        if subject_type != "PC_USER":  # the emulated org has no groups or OAuth clients
            raise not_found(f"Subject {args[0]} not found")
        self.directory.grant(args[0], data, **self._fresh())
        self._dirty.set()
        return _Reply(204)

    def _subject(self, args: tuple[str, ...], **_: Any) -> _Reply:
        return _json_reply(200, self.directory.subject(args[0], **self._fresh()))

    def _set_skills(self, args: tuple[str, ...], body: bytes, **_: Any) -> _Reply:
        self._authorize("routing:skill:assign", [self.directory.division_of(args[0])])
        listing = self.directory.set_skills(args[0], self._json_body(body), **self._fresh())
        self._dirty.set()
        return _json_reply(200, listing)

    def _user_skills(self, args: tuple[str, ...], params: dict[str, list[str]], **_: Any) -> _Reply:
        listing = self.directory.user_skills(
            args[0], sort_order=_query_str(params, "sortOrder"), **_paging(params), **self._fresh()
        )
        return _json_reply(200, listing)

    def _update_members(
        self, args: tuple[str, ...], body: bytes, params: dict[str, list[str]]
    ) -> _Reply:
        queue = self.directory.org.get("queues", args[0])
        self._authorize("routing:queue:edit", [queue["division"]["id"] if queue else None])
        self.directory.update_queue_members(
            args[0],
            self._json_body(body),
            delete=bool(_query_bool(params, "delete")),
            **self._fresh(),
        )
        self._dirty.set()
        return _Reply(204)

    def _members(self, args: tuple[str, ...], params: dict[str, list[str]], **_: Any) -> _Reply:
        self._authorize("routing:queue:view")
        listing = self.directory.queue_members(
            args[0],
            sort_order=_query_str(params, "sortOrder"),
            name=_query_str(params, "name"),
            joined=_query_bool(params, "joined"),
            **_paging(params, _MAX_MEMBERS_PAGE_SIZE),
        )
        return _json_reply(200, listing)

    def _user_queues(self, args: tuple[str, ...], params: dict[str, list[str]], **_: Any) -> _Reply:
        self._authorize("routing:queue:view")
        listing = self.directory.user_queues(
            args[0],
            joined=_query_bool(params, "joined"),
            division_ids=_query_list(params, "divisionId"),
            **_paging(params),
            **self._fresh(),
        )
        return _json_reply(200, listing)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], handler: type, emulator: Emulator) -> None:
        self.emulator = emulator
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's getfqdn(): a DNS lookup that can stall start-up.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanish, stop() shuts sockets down under live handlers: not worth a traceback.
        log.debug("emulator.connection_error", client=str(client_address), exc_info=True)


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True))
    return _date_cache[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "jobrunner-emulator"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # requests are logged with structlog in _dispatch

    def _read_body(self) -> bytes | None:
        """The request body, or None after answering 413 (too large)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            size = 0
            while True:
                line = self.rfile.readline(65537)
                length = int(line.split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                size += length
                if size > MAX_BODY_BYTES:
                    break
                chunks.append(self.rfile.read(length))
                self.rfile.readline(65537)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError("negative Content-Length")
            if length <= MAX_BODY_BYTES:
                return self.rfile.read(length) if length > 0 else b""
            if length <= _DISCARD_LIMIT:
                # Swallow the body so the client, still sending it, gets to read the 413.
                while length > 0:
                    chunk = self.rfile.read(min(length, 65536))
                    if not chunk:
                        break
                    length -= len(chunk)
        self.close_connection = True
        self._write(
            _error_reply(
                ApiError(
                    413,
                    "request.entity.too.large",
                    f"The request body is larger than {MAX_BODY_BYTES} bytes.",
                )
            )
        )
        return None

    def _dispatch(self) -> None:
        started = time.perf_counter()
        emulator = self.server.emulator
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True
            self._write(_error_reply(bad_request("Malformed request body framing.")))
            return
        if body is None:
            return
        try:
            route, reply = emulator.handle(self.command, self.path, self.headers, body)
        except Exception:
            log.error("emulator.internal_error", method=self.command, path=self.path, exc_info=True)
            route, reply = (
                f"{self.command} (error)",
                _error_reply(
                    ApiError(500, "internal.server.error", "The emulator failed on this request.")
                ),
            )
        status: int | str = "dropped" if reply.drop else reply.status
        # Counted and logged before the client can see the outcome, so what a client has
        # heard is always in the stats and the log.
        if route:
            emulator._stats.record(route, status)
        log.debug(
            "emulator.request",
            method=self.command,
            path=self.path.partition("?")[0],
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        if reply.drop:
            self._drop()
        else:
            self._write(reply)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _dispatch

    def _write(self, reply: _Reply) -> None:
        lines = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
        if reply.status != 204:  # a 204 has no body, so neither type nor length
            lines += ["Content-Type: application/json", f"Content-Length: {len(reply.body)}"]
        lines.append(f"Date: {_http_date()}")
        lines.extend(f"{name}: {value}" for name, value in reply.headers)
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + reply.body)  # one send: status line, headers and body

    def _drop(self) -> None:
        """Vanish without answering: FIN then RST (SO_LINGER 0) once the server closes it."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
