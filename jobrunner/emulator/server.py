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
import socket
import socketserver
import struct
import threading
import time
import uuid
from collections import Counter
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from jobrunner.emulator.access import RateLimiter, TokenRegistry
from jobrunner.emulator.config import EmulatorConfig
from jobrunner.emulator.directory import Directory, load_state, save_state
from jobrunner.emulator.errors import ApiError, bad_request, not_found
from jobrunner.emulator.org import extension_pool, stable_id
from jobrunner.emulator.routes import EMPLOYEE, ApiRoutes, Reply, error_reply, json_reply
from jobrunner.emulator.stats import Stats
from jobrunner.log import get_logger

__all__ = ["Emulator", "EmulatorConfig"]

MAX_BODY_BYTES = 512_000
_DISCARD_LIMIT = 16 * 1024 * 1024
FAULT_STATUSES = (502, 503, 504)
_FAULT_CODES = {502: "bad.gateway", 503: "service.unavailable", 504: "gateway.timeout"}
_STATE_FORMAT = "jobrunner-emulator-state"
# 2 added grants, skills, queue members and user locations; 3 added languages
_STATE_VERSION = 3

log = get_logger("jobrunner.emulator")


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


class Emulator(ApiRoutes):
    """A running (after start()) emulated Genesys Cloud org. See the module docstring."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        cfg = self.config
        self._rng = random.Random(cfg.seed)
        self._rng_lock = threading.Lock()
        # Apart from the faults' so that turning a dialect option on moves no fault.
        self._dialect = random.Random(None if cfg.seed is None else f"dialect-{cfg.seed}")
        saved = load_state(cfg.state_file) if cfg.state_file else None
        home_id = (saved or {}).get("homeDivisionId") or cfg.home_division_id
        if not home_id:
            home_id = str(uuid.UUID(int=self._rng.getrandbits(128), version=4))
        self.directory = Directory(home_id, cfg.divisions, clock=self._now)
        org = cfg.org or {}
        self.directory.load_org(org, seed=cfg.seed)
        for pool in cfg.extension_pools:
            start, _, end = pool.partition("-")
            self.directory.extension_pools.append(extension_pool(start, end))
        if cfg.employee_role and self.directory.org.named("roles", EMPLOYEE) is None:
            self.directory.org.add("roles", stable_id(cfg.seed, "roles", EMPLOYEE), EMPLOYEE)
        self.directory.default_grants = self._employee_grants()
        for record in (saved or {}).get("users", []):
            self.directory.add_existing(record)
        existing = [
            *org.get("users", []),
            *cfg.existing_users,
            *({"email": email} for email in cfg.existing_emails),
        ]
        for record in existing:
            self.directory.add_existing(
                record, skip_taken=saved is not None, grants=self._employee_grants()
            )
        if saved is not None:
            dropped = self.directory.load_onboarding(saved)
            if dropped:
                log.warning("emulator.state_references_dropped", count=dropped)
        self.tokens = TokenRegistry(self._now)
        self.limiter = RateLimiter(self._now)
        self._stats = Stats()
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

    def _dialect_rng(self) -> random.Random:
        return self._dialect

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

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> tuple[str, Reply]:
        """Answer one request. Returns (route label for the stats, reply)."""
        path, _, query = target.partition("?")
        if path.startswith("/api/v2/"):
            return self._api(method, path, query, headers, body)
        if path == "/oauth/token":
            return "POST /oauth/token", self._oauth(method, headers, body)
        if path.startswith("/emulator/"):
            return "", self._inspect(method, path)
        return f"{method} (unknown)", error_reply(not_found())

    def _oauth(self, method: str, headers: Any, body: bytes) -> Reply:
        if method != "POST":
            return json_reply(405, {"error": "invalid_request", "description": "use POST"})
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
            return json_reply(
                400, {"error": error, "description": description, "error_description": description}
            )
        token = self.tokens.issue(cfg.token_lifetime_s)
        self._stats.bump("token")
        return json_reply(
            200,
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": int(cfg.token_lifetime_s),
            },
        )

    def _inspect(self, method: str, path: str) -> Reply:
        if method == "GET" and path == "/emulator/stats":
            return json_reply(200, self.stats())
        if method == "GET" and path == "/emulator/users":
            return json_reply(200, self.directory.users())
        if method == "GET" and path == "/emulator/health":
            return json_reply(200, {"status": "ok", "users": len(self.directory)})
        if method == "POST" and path == "/emulator/revoke-tokens":
            return json_reply(200, {"revoked": self.revoke_tokens()})
        if method == "POST" and path == "/emulator/reset-stats":
            self.reset_stats()
            return json_reply(200, {})
        return error_reply(not_found(f"No emulator endpoint {method} {path}"))

    def _api(
        self, method: str, path: str, query: str, headers: Any, body: bytes
    ) -> tuple[str, Reply]:
        cfg = self.config
        self._pause()
        route, handler, args = self._route(method, path)
        token = _bearer(headers)
        if token is None:
            return route, error_reply(
                ApiError(
                    401,
                    "authentication.required",
                    "No authentication bearer token specified in authorization header.",
                )
            )
        if not self.tokens.check(token):
            return route, error_reply(
                ApiError(401, "bad.credentials", "Invalid login credentials.")
            )
        wait = self.limiter.admit(
            token, cfg.rate_per_minute, cfg.rate_window_s, cfg.rate_window_mode
        )
        if wait:
            return route, error_reply(
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
            return route, error_reply(
                ApiError(status, _FAULT_CODES[status], f"{phrase} (injected by the emulator)")
            )
        if handler is None:
            return route, error_reply(not_found(f"No API route {method} {path}"))
        try:
            params = parse_qs(query)
            return route, handler(body=body, args=args, params=params)
        except ApiError as error:
            return route, error_reply(error)


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
            error_reply(
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
            self._write(error_reply(bad_request("Malformed request body framing.")))
            return
        if body is None:
            return
        try:
            route, reply = emulator.handle(self.command, self.path, self.headers, body)
        except Exception:
            log.error("emulator.internal_error", method=self.command, path=self.path, exc_info=True)
            route, reply = (
                f"{self.command} (error)",
                error_reply(
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

    def _write(self, reply: Reply) -> None:
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
