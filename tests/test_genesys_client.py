"""GenesysClient's transport, token and logging layer, through the real SDK: against the
emulator, local servers that answer what a test scripts, and one that never answers."""

from __future__ import annotations

import base64
import io
import json
import math
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import structlog

from jobrunner import log
from jobrunner.config import Settings, parse_environment
from jobrunner.emulator.server import Emulator, EmulatorConfig
from jobrunner.errors import ConfigError
from jobrunner.genesys import (
    READ_TIMEOUT_S,
    REFUSAL_WAIT_S,
    GenesysClient,
    NewUser,
    TransportError,
    _make_transport,
    _route,
)

CLIENT_ID = "client-id-for-tests"
SECRET = "Zq-SECRET-9b1f7e3c-never-shown"
BASIC = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
JOIN_S = 30.0  # a guard against a hung test, never a margin a pass depends on


@pytest.fixture
def emulator(sdk: Any) -> Iterator[Callable[..., Emulator]]:
    started: list[Emulator] = []

    def start(**kw: Any) -> Emulator:
        emu = Emulator(EmulatorConfig(client_id=CLIENT_ID, client_secret=SECRET, **kw)).start()
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


def settings_for(url: str, secret: str = SECRET) -> Settings:
    return Settings(CLIENT_ID, secret, parse_environment(url))


class HungServer:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def hung(sdk: Any) -> Iterator[HungServer]:
    server = HungServer()
    yield server
    server.close()


def in_thread(fn: Callable[[], Any]) -> Any:
    """fn() in a thread joined with a timeout: a hang fails the test instead of hanging it."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(("ok", fn()))
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(("raised", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(JOIN_S)
    assert not thread.is_alive(), f"still waiting after {JOIN_S} s: no timeout"
    return outcome[0]


def config_error_of(fn: Callable[[], Any]) -> ConfigError:
    kind, value = in_thread(fn)
    assert kind == "raised" and isinstance(value, ConfigError), (kind, value)
    return value


# -- the debug event ---------------------------------------------------------------------------


@pytest.fixture
def log_to() -> Iterator[Callable[[str], io.StringIO]]:
    saved = structlog.get_config()

    def configure(level: str) -> io.StringIO:
        out = io.StringIO()
        log.configure(level=level, fmt="json", stream=out)
        return out

    yield configure
    structlog.configure(**saved)


def events(out: io.StringIO, name: str | None = None) -> list[dict[str, Any]]:
    """The JSON events logged, all or those named `name`."""
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    return [e for e in lines if name is None or e["event"] == name]


def exercise(client: GenesysClient, emu: Emulator, user_email: str) -> str:
    """Token, search, create, 409, get by id, 401 and a new token, 429: one request each."""
    from jobrunner.genesys import ApiError

    client.authenticate()
    assert client.find_user_by_email(user_email) is None
    user_id = client.create_user(NewUser("Pat Example", user_email, phone="+13175550101")).id
    with pytest.raises(ApiError):
        client.create_user(NewUser("Pat Example", user_email))
    client._call(lambda: client.users.get_user(user_id, state="active"))  # noqa: SLF001
    emu.revoke_tokens()
    assert client.find_user_by_email(user_email) is not None
    emu.config.rate_per_minute = 1  # this token has used its budget: the next is a 429
    with pytest.raises(ApiError):
        client.find_user_by_email(user_email)
    return str(user_id)


def test_debug_logs_one_event_per_request_and_no_secret(emulator: Any, log_to: Any) -> None:
    emu = emulator()
    out = log_to("debug")
    client = GenesysClient(settings_for(emu.url), pool_size=1)
    tokens: list[str] = []
    client.on_new_token = lambda: tokens.append(client.client.access_token)
    user_email = "pat.debug@example.com"
    user_id = exercise(client, emu, user_email)

    seen = events(out, "http.request")
    assert len(seen) == emu.stats()["requests_total"] == 9
    summary = [(e["method"], e["route"], e.get("status"), e["retry"]) for e in seen]
    assert summary == [
        ("POST", "/oauth/token", 200, "ok"),
        ("POST", "/api/v2/users/search", 200, "ok"),
        ("POST", "/api/v2/users", 200, "ok"),
        ("POST", "/api/v2/users", 409, "no retry"),
        ("GET", "/api/v2/users/{id}", 200, "ok"),
        ("POST", "/api/v2/users/search", 401, "new token, then again"),
        ("POST", "/oauth/token", 200, "ok"),
        ("POST", "/api/v2/users/search", 200, "ok"),
        ("POST", "/api/v2/users/search", 429, "every worker waits Retry-After"),
    ]
    for event in seen:
        assert event["level"] == "debug"
        assert isinstance(event["duration_ms"], float) and event["duration_ms"] >= 0
        expected = {"event", "level", "timestamp", "method", "route", "status", "duration_ms"}
        expected |= {"retry"} | ({"query"} if "query" in event else set())
        expected |= {"retry_after_s"} if event["status"] == 429 else set()
        assert set(event) == expected, event
    assert seen[4]["query"] == "state"
    assert seen[-1]["retry_after_s"] > 0
    # Everything the client logged (the in-process emulator logs its own paths, ids included).
    ours = [e for e in events(out) if not e["event"].startswith("emulator.")]
    text = "\n".join(json.dumps(e) for e in ours)
    assert len(tokens) == 2
    for secret in (SECRET, BASIC, *tokens, user_email, user_id, "Pat Example", "+1317555"):
        assert secret not in text
    for word in ("Bearer", "Basic", "Authorization", "authorization"):
        assert word not in text


def test_debug_logs_network_errors_by_kind(log_to: Any, hung: HungServer) -> None:
    out = log_to("debug")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = GenesysClient(settings_for(f"http://127.0.0.1:{port}"), pool_size=1)
    config_error_of(refused.authenticate)
    timing_out = GenesysClient(settings_for(hung.url), pool_size=1, read_timeout=0.3)
    timing_out.client.access_token = "a-token"
    in_thread(lambda: timing_out.find_user_by_email("x@example.com"))
    seen = [
        (e["method"], e["route"], e["network_error"], e["retry"], "status" in e)
        for e in events(out, "http.request")
    ]
    assert seen == [
        ("POST", "/oauth/token", "connect", "no retry", False),
        ("POST", "/api/v2/users/search", "timeout", "back off and retry", False),
    ]


def test_info_level_logs_no_request_events(emulator: Any, log_to: Any) -> None:
    emu = emulator()
    out = log_to("info")
    exercise(GenesysClient(settings_for(emu.url), pool_size=1), emu, "pat.info@example.com")
    assert events(out, "http.request") == []
    assert "http.request" not in out.getvalue()


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/oauth/token", "/oauth/token"),
        ("/api/v2/users", "/api/v2/users"),
        ("/api/v2/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/api/v2/users/{id}"),
        (
            "/api/v2/users/3f2504e0-4f89-11d3-9a0c-0305e82c3301/routingskills/bulk",
            "/api/v2/users/{id}/routingskills/bulk",
        ),
        ("/api/v2/routing/queues/1234/members", "/api/v2/routing/queues/{id}/members"),
        ("/api/v2/users/pat%40example.com", "/api/v2/users/{id}"),
        ("/api/v2/authorization/divisions/home", "/api/v2/authorization/divisions/home"),
    ],
)
def test_routes_name_no_ids(path: str, route: str) -> None:
    assert _route("https://api.mypurecloud.com" + path + "?name=Pat") == route


# -- timeouts ----------------------------------------------------------------------------------


def test_the_transport_times_out_on_a_server_that_never_answers(hung: HungServer) -> None:
    from PureCloudPlatformClientV2.http_request_options import HttpRequestOptions

    transport = _make_transport(1, 5.0, 0.3)
    options = HttpRequestOptions(url=hung.url + "/api/v2/users/search", method="POST", body={})
    kind, err = in_thread(lambda: transport.request(options))
    assert kind == "raised" and isinstance(err, TransportError), err
    assert err.kind == "timeout" and err.maybe_acted


def test_a_call_times_out_on_a_server_that_never_answers(hung: HungServer) -> None:
    client = GenesysClient(settings_for(hung.url), pool_size=1, read_timeout=0.3)
    client.client.access_token = "a-token"  # as if authenticated
    kind, err = in_thread(lambda: client.find_user_by_email("someone@example.com"))
    assert kind == "raised" and isinstance(err, TransportError), err
    assert err.kind == "timeout"


def test_the_default_transport_has_finite_timeouts(sdk: Any) -> None:
    client = GenesysClient(settings_for("https://api.mypurecloud.com"))
    timeout = client.client.get_http_client().pool.connection_pool_kw["timeout"]
    assert timeout.read_timeout == READ_TIMEOUT_S and math.isfinite(timeout.read_timeout)
    assert timeout.connect_timeout is not None and math.isfinite(timeout.connect_timeout)


class FakeClock:
    """Monotonic seconds that move only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- proactive renewal -------------------------------------------------------------------------


def test_tokens_are_renewed_before_expiry_one_request_per_renewal(emulator: Any) -> None:
    """Eight threads, rounds of one request each, the clock frozen within a round and moved
    0.25 s between rounds (and once far past the token's end): the emulator never answers 401,
    and each renewal is one token request made when a quarter of the life is left."""
    clock = FakeClock()
    emu = emulator(token_lifetime_s=3, clock=clock)
    client = GenesysClient(settings_for(emu.url), pool_size=8, read_timeout=10, clock=clock)
    new_tokens: list[float] = []
    client.on_new_token = lambda: new_tokens.append(clock.now)
    client.authenticate()
    workers = 8
    barrier = threading.Barrier(workers, timeout=JOIN_S)

    def one_request(_: int) -> None:
        barrier.wait()  # all eight reach the renewal check together
        assert client.find_user_by_email("nobody@example.com") is None

    with ThreadPoolExecutor(workers) as pool:
        for round_no in range(48):
            clock.now += 0.25 if round_no != 24 else 10.0  # idle past the end, once
            list(pool.map(one_request, range(workers), timeout=JOIN_S))

    stats = emu.stats()
    assert stats["responses_by_status"].get("401", 0) == 0
    assert stats["requests_by_route"]["POST /api/v2/users/search"] == 48 * workers
    assert stats["tokens_issued"] == client.tokens_fetched == len(new_tokens) >= 6
    assert stats["token_requests_rejected"] == 0
    gaps = [b - a for a, b in zip(new_tokens, new_tokens[1:], strict=False)]
    gaps.remove(max(gaps))  # across the idle jump: renewed by the first request after it
    # Renewed with 0.75 s (a quarter of 3 s) or a little less left: never early, never late.
    assert all(2.25 <= gap <= 2.5 for gap in gaps), gaps
    assert client.token_expires_at == new_tokens[-1] + 3


def test_no_expires_in_means_no_early_renewal(emulator: Any) -> None:
    emu = emulator()
    client = GenesysClient(settings_for(emu.url), pool_size=1)
    fetch = client.client.get_client_credentials_token

    def fetch_and_forget(*args: Any) -> Any:  # an answer whose body we never see
        answer = fetch(*args)
        client._api.transport.take_token_answer()  # noqa: SLF001
        return answer

    client.client.get_client_credentials_token = fetch_and_forget
    client.authenticate()
    assert client.token_expires_at is None and client.token_renew_at == math.inf
    assert client.find_user_by_email("nobody@example.com") is None
    assert emu.stats()["tokens_issued"] == 1


# -- refusals right after a success ------------------------------------------------------------


def test_two_revocations_a_moment_apart_do_not_stop_the_calls(emulator: Any) -> None:
    """The emulator revokes every token at its 6th API request, and again the first time the
    new token is shown 0.1 s or more after it was issued: the calls that got a 401 come back
    with it (0.15 s latency) and are refused again."""
    emu = emulator(revoke_tokens_after=6, latency_ms=150)
    issued: list[tuple[str, float]] = []
    revoked_again = threading.Event()
    lock = threading.Lock()
    real_issue, real_check = emu.tokens.issue, emu.tokens.check

    def issue(lifetime_s: float) -> str:
        token = real_issue(lifetime_s)
        issued.append((token, emu.config.clock()))
        return token

    def check(token: str) -> bool:
        with lock:
            if (
                len(issued) == 2
                and token == issued[1][0]
                and not revoked_again.is_set()
                and emu.config.clock() - issued[1][1] >= 0.1
            ):
                revoked_again.set()
                emu.revoke_tokens()
        return real_check(token)

    emu.tokens.issue = issue  # type: ignore[method-assign]
    emu.tokens.check = check  # type: ignore[method-assign]
    waits: list[float] = []
    client = GenesysClient(settings_for(emu.url), pool_size=4, read_timeout=10, sleep=waits.append)
    client.authenticate()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(8):
                assert client.find_user_by_email(f"w{n}.{i}@example.com") is None
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_S)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert revoked_again.is_set()
    stats = emu.stats()
    assert stats["tokens_issued"] == 3 and stats["token_requests_rejected"] == 0
    assert waits == [REFUSAL_WAIT_S]  # the second token was refused before it ever worked


def test_a_token_refusal_right_after_a_token_is_tried_again(emulator: Any) -> None:
    emu = emulator()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        emu.config.client_secret = SECRET  # the refusal passes during the wait

    client = GenesysClient(settings_for(emu.url), pool_size=1, sleep=sleep)
    client.authenticate()
    assert client.find_user_by_email("nobody@example.com") is None  # the token works
    emu.config.client_secret = "not-yet"  # the login service refuses us for a moment
    emu.revoke_tokens()
    assert client.find_user_by_email("nobody@example.com") is None
    stats = emu.stats()
    assert stats["token_requests_rejected"] == 1 and stats["tokens_issued"] == 2
    assert waits == [REFUSAL_WAIT_S]


def test_wrong_credentials_at_start_fail_at_once(emulator: Any) -> None:
    emu = emulator()
    waits: list[float] = []
    client = GenesysClient(settings_for(emu.url, secret="wrong"), pool_size=1, sleep=waits.append)
    with pytest.raises(ConfigError, match=r"refused the OAuth client \(invalid_client\)"):
        client.authenticate()
    assert emu.stats()["token_requests_rejected"] == 1 and waits == []


# -- a scripted login service and API: every ConfigError message -------------------------------


Reply = tuple[int, str, dict[str, str]]


class Scripted:
    """A local server answering every request with `script(method, path)`."""

    def __init__(self, script: Callable[[str, str], Reply]) -> None:
        self.script = script
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.partition("?")[0]
                outer.requests.append((self.command, path))
                status, body, headers = outer.script(self.command, path)
                data = body.encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, path: str) -> int:
        return sum(1 for _, p in self.requests if p == path)


def token_ok(expires_in: int = 86400) -> Reply:
    body = {"access_token": "tok-" + "x" * 20, "token_type": "bearer", "expires_in": expires_in}
    return 200, json.dumps(body), {}


def login_error(status: int, error: str, description: str) -> Reply:
    return status, json.dumps({"error": error, "description": description}), {}


def api_error(status: int, code: str, message: str) -> Reply:
    return status, json.dumps({"status": status, "code": code, "message": message}), {}


SEARCH_OK: Reply = (200, json.dumps({"total": 0, "results": []}), {})


@pytest.fixture
def scripted(sdk: Any) -> Iterator[Callable[[Callable[[str, str], Reply]], Scripted]]:
    made: list[Scripted] = []

    def make(script: Callable[[str, str], Reply]) -> Scripted:
        server = Scripted(script)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def assert_no_secret(err: BaseException) -> None:
    """Neither the message nor anything chained to it shows the secret, one line only."""
    assert "\n" not in str(err)
    seen: BaseException | None = err
    while seen is not None:
        for text in (str(seen), repr(seen), repr(getattr(seen, "args", ()))):
            assert SECRET not in text and BASIC not in text, text
        seen = seen.__cause__ or seen.__context__


def refusing_after_first_token(reply: Reply) -> Callable[[str, str], Reply]:
    """A login service that gives one token, then `reply`; the API refuses that token once."""
    tokens = 0

    def script(method: str, path: str) -> Reply:
        nonlocal tokens
        if path == "/oauth/token":
            tokens += 1
            return token_ok() if tokens == 1 else reply
        return api_error(401, "bad.credentials", "Invalid login credentials.")

    return script


def expiring_then(reply: Reply) -> Callable[[str, str], Reply]:
    """One 8-second token, then `reply` to every token request; the API answers searches."""
    tokens = 0

    def script(method: str, path: str) -> Reply:
        nonlocal tokens
        if path == "/oauth/token":
            tokens += 1
            return token_ok(expires_in=8) if tokens == 1 else reply
        return SEARCH_OK

    return script


INVALID_CLIENT = login_error(400, "invalid_client", "authentication failed")
UNSUPPORTED = login_error(400, "unsupported_grant_type", "grant type not supported")
UNAVAILABLE = (503, json.dumps({"message": "down"}), {"Retry-After": "1"})


FRESH_REFUSED = api_error(401, "bad.credentials", "Invalid login credentials.")

# (script, the message, is the refusal kept for every later call): every way authenticate(),
# a renewal or a call can end in a ConfigError, bar the network ones below.
CONFIG_ERRORS = {
    "refused at start": (lambda m, p: INVALID_CLIENT, "refused the OAuth client", False),
    "other refusal": (lambda m, p: UNSUPPORTED, "cannot get a token from", False),
    "login down": (lambda m, p: UNAVAILABLE, "cannot get a token from", False),
    "no token": (
        lambda m, p: (200, json.dumps({"token_type": "bearer"}), {}),
        "answered the token request with no token (KeyError)",
        False,
    ),
    "not json": (
        lambda m, p: (200, "<html>", {}),
        "answered the token request with no token",
        False,
    ),
    "refused after a token": (
        refusing_after_first_token(INVALID_CLIENT),
        "refused the OAuth client",
        True,
    ),
    "other refusal after a token": (
        refusing_after_first_token(UNSUPPORTED),
        "cannot get a token from",
        True,
    ),
    "fresh tokens refused": (
        lambda m, p: token_ok() if p == "/oauth/token" else FRESH_REFUSED,
        "the API refused a fresh token (bad.credentials)",
        True,
    ),
    "renewal refused": (expiring_then(INVALID_CLIENT), "refused the OAuth client", True),
    "renewal down": (expiring_then(UNAVAILABLE), "cannot get a token from", True),
}


@pytest.mark.parametrize("case", sorted(CONFIG_ERRORS))
def test_no_config_error_carries_the_secret(scripted: Any, case: str) -> None:
    script, message, kept = CONFIG_ERRORS[case]
    server = scripted(script)
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    client = GenesysClient(settings_for(server.url), pool_size=2, clock=clock, sleep=sleep)

    def authenticate_then_call() -> None:
        client.authenticate()
        clock.now += 7.5  # past the 8 s token's renewal time, where there is one
        client.find_user_by_email("someone@example.com")

    err = config_error_of(authenticate_then_call)
    assert message in str(err), str(err)
    assert_no_secret(err)
    if kept:  # the next call gets the same refusal without asking again
        before = len(server.requests)
        assert config_error_of(lambda: client.find_user_by_email("x@example.com")) is err
        assert len(server.requests) == before


def test_no_config_error_carries_the_secret_when_the_host_is_unreachable(sdk: Any) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = GenesysClient(settings_for(f"http://127.0.0.1:{port}"), pool_size=1)
    err = config_error_of(client.authenticate)
    assert "cannot reach" in str(err) and "cannot connect" in str(err)
    assert_no_secret(err)


def test_no_config_error_carries_the_secret_when_the_login_service_hangs(hung: HungServer) -> None:
    waits: list[float] = []
    settings = settings_for(hung.url)
    client = GenesysClient(settings, pool_size=1, read_timeout=0.3, sleep=waits.append)
    err = config_error_of(client.authenticate)
    assert "cannot reach" in str(err) and "no answer within the read timeout" in str(err)
    assert_no_secret(err)
    assert len(waits) == 2  # three tries


def test_a_renewal_the_login_service_fails_is_tried_later_while_the_token_works(
    scripted: Any, log_to: Any
) -> None:
    out = log_to("info")
    answers = [token_ok(expires_in=100), UNAVAILABLE, UNAVAILABLE, UNAVAILABLE, token_ok()]

    def script(method: str, path: str) -> Reply:
        return answers.pop(0) if path == "/oauth/token" else SEARCH_OK

    server = scripted(script)
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    client = GenesysClient(settings_for(server.url), pool_size=1, clock=clock, sleep=sleep)
    client.authenticate()
    renew_at = client.token_renew_at
    assert renew_at == 1000.0 + 75  # a quarter of 100 s before the end
    clock.now = renew_at
    # Three token requests fail (Retry-After: 1 s): 23 s are left, so the search goes out with
    # the current token and the renewal waits 5 s.
    assert client.find_user_by_email("someone@example.com") is None
    assert server.count("/oauth/token") == 4 and client.token_renew_at == renew_at + 2 + 5
    [warning] = events(out, "token.renew_later")
    assert warning["seconds_left"] == 23.0 and "cannot get a token" in warning["error"]
    assert client.find_user_by_email("someone@example.com") is None  # not due yet
    assert server.count("/oauth/token") == 4
    clock.now = client.token_renew_at
    assert client.find_user_by_email("someone@example.com") is None
    assert server.count("/oauth/token") == 5 and client.token_expires_at == clock.now + 86400
