"""The emulator through a plain HTTP client with no retries: rate limit, faults, latency,
inspection endpoints, framing, shutdown and logging."""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from jobrunner import log as jobrunner_log
from jobrunner.emulator.server import Emulator, EmulatorConfig

CLIENT_ID = "http-client"
CLIENT_SECRET = "http-secret-value"
HOME = "/api/v2/authorization/divisions/home"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(**overrides: Any) -> EmulatorConfig:
    return EmulatorConfig(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **overrides)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(config(rate_per_minute=100_000)) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator, http_client: Any) -> Any:
    c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
    assert c.login()[0] == 200
    return c


# ---- rate limit --------------------------------------------------------------------------


def test_rate_limit_429_with_retry_after_and_genesys_body(http_client: Any) -> None:
    clock = FakeClock()
    with Emulator(config(rate_per_minute=5, clock=clock)) as emu:
        c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        c.login()
        for _ in range(5):
            assert c.api("GET", HOME)[0] == 200
        status, headers, body = c.api("GET", HOME)
        assert status == 429
        assert headers["retry-after"] == "60"
        assert body["code"] == "too.many.requests.retry.after"
        assert body["status"] == 429
        assert (
            body["message"] == "Rate limit exceeded the maximum. Retry the request in [60] seconds"
        )
        assert body["messageParams"] == {"retryAfter": "60"}
        assert emu.stats()["rate_limited"] == 1
        assert emu.stats()["responses_by_status"] == {"200": 6, "429": 1}  # token + 5 API


def test_rate_limit_window_slides_and_rejections_cost_nothing(http_client: Any) -> None:
    clock = FakeClock(0.0)
    with Emulator(config(rate_per_minute=5, clock=clock)) as emu:
        c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        c.login()
        for second in (0, 10, 20, 30, 40):
            clock.now = second
            assert c.api("GET", HOME)[0] == 200
        clock.now = 50
        status, headers, _ = c.api("GET", HOME)
        assert (status, headers["retry-after"]) == (429, "10")
        for second in range(51, 60):  # hammering while limited must not push the window out
            clock.now = second
            assert c.api("GET", HOME)[0] == 429
        clock.now = 59.5
        assert c.api("GET", HOME)[1]["retry-after"] == "1"  # rounded up, at least 1
        clock.now = 60  # the request of t=0 leaves the window: exactly one slot
        assert c.api("GET", HOME)[0] == 200
        status, headers, _ = c.api("GET", HOME)
        assert (status, headers["retry-after"]) == (429, "10")
        clock.now = 75  # t=10 leaves
        assert c.api("GET", HOME)[0] == 200


def test_rate_limit_is_per_token_and_ignores_oauth(http_client: Any) -> None:
    clock = FakeClock()
    with Emulator(config(rate_per_minute=2, clock=clock)) as emu:
        first = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        for _ in range(5):
            assert first.login()[0] == 200  # token requests never count
        assert [first.api("GET", HOME)[0] for _ in range(3)] == [200, 200, 429]
        second = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        second.login()
        assert [second.api("GET", HOME)[0] for _ in range(3)] == [200, 200, 429]


def test_rate_limit_can_change_at_run_time(http_client: Any) -> None:
    with Emulator(config(rate_per_minute=1, clock=FakeClock())) as emu:
        c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        c.login()
        assert [c.api("GET", HOME)[0] for _ in range(2)] == [200, 429]
        emu.config.rate_per_minute = 3
        assert [c.api("GET", HOME)[0] for _ in range(3)] == [200, 200, 429]


def test_fixed_window_resets_on_its_boundaries(http_client: Any) -> None:
    clock = FakeClock(1000.0)  # windows of 60 s start at 960, 1020, 1080, ...
    with Emulator(config(rate_per_minute=3, rate_window_mode="fixed", clock=clock)) as emu:
        c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        c.login()
        assert [c.api("GET", HOME)[0] for _ in range(3)] == [200, 200, 200]
        status, headers, body = c.api("GET", HOME)
        assert (status, headers["retry-after"]) == (429, "20")  # to the next boundary
        assert body["messageParams"] == {"retryAfter": "20"}
        clock.now = 1019.5
        assert c.api("GET", HOME)[1]["retry-after"] == "1"  # rounded up, at least 1
        clock.now = 1020.0  # a new window: the whole budget at once (a sliding one: nothing)
        assert [c.api("GET", HOME)[0] for _ in range(4)] == [200, 200, 200, 429]
        assert c.api("GET", HOME)[1]["retry-after"] == "60"
        clock.now = 1079.999
        assert c.api("GET", HOME)[0] == 429
        clock.now = 1080.0
        assert c.api("GET", HOME)[0] == 200
        assert emu.stats()["rate_limited"] == 5


def test_fixed_window_budget_length_and_mode_change_at_run_time(http_client: Any) -> None:
    clock = FakeClock(1000.0)
    with Emulator(config(rate_per_minute=4, rate_window_mode="fixed", clock=clock)) as emu:
        c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        c.login()
        assert [c.api("GET", HOME)[0] for _ in range(2)] == [200, 200]
        emu.config.rate_per_minute = 2  # halved mid-window: what was admitted still counts
        status, headers, _ = c.api("GET", HOME)
        assert (status, headers["retry-after"]) == (429, "20")
        emu.config.rate_window_s = 6.0  # windows on multiples of 6 s: [996, 1002) is new
        assert [c.api("GET", HOME)[0] for _ in range(3)] == [200, 200, 429]
        assert c.api("GET", HOME)[1]["retry-after"] == "2"
        clock.now = 1002.0
        assert [c.api("GET", HOME)[0] for _ in range(3)] == [200, 200, 429]
        emu.config.rate_window_mode = "sliding"  # the sliding window has its own record
        assert [c.api("GET", HOME)[0] for _ in range(3)] == [200, 200, 429]


def test_rate_window_mode_must_be_known() -> None:
    with pytest.raises(ValueError, match="rate_window_mode"):
        config(rate_window_mode="rolling")


# ---- 5xx faults --------------------------------------------------------------------------


def test_5xx_faults_answer_before_acting(http_client: Any, unique_email: Any) -> None:
    with Emulator(config(fault_5xx_rate=1.0)) as emu:
        c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        assert c.login()[0] == 200  # /oauth/token is never faulted
        statuses = set()
        for _ in range(12):
            status, headers, body = c.api(
                "POST", "/api/v2/users", {"name": "X", "email": unique_email()}
            )
            statuses.add(status)
            assert body["status"] == status
            assert body["code"] in {"bad.gateway", "service.unavailable", "gateway.timeout"}
            assert "retry-after" not in headers
        assert statuses <= {502, 503, 504} and len(statuses) > 1
        assert emu.users() == []
        assert emu.stats()["faults"]["http_5xx"] == 12
        emu.config.fault_5xx_rate = 0.0
        assert c.api("POST", "/api/v2/users", {"name": "X", "email": unique_email()})[0] == 200


def test_faults_are_reproducible_with_a_seed(http_client: Any) -> None:
    def run(seed: int) -> list[int]:
        with Emulator(config(fault_5xx_rate=0.5, seed=seed)) as emu:
            c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
            c.login()
            return [c.api("GET", HOME)[0] for _ in range(30)]

    first, again, other = run(7), run(7), run(8)
    assert first == again
    assert first != other
    assert 200 in first and set(first) - {200}


# ---- dropped connection ------------------------------------------------------------------


def test_dropped_connection_after_create(http_client: Any, unique_email: Any) -> None:
    with Emulator(config(drop_after_create_rate=1.0)) as emu:
        c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        c.login()
        email = unique_email("drop")
        with pytest.raises((ConnectionError, http.client.HTTPException)):
            c.api("POST", "/api/v2/users", {"name": "Dropped", "email": email})
        assert [u["email"] for u in emu.users()] == [email]  # created, though nobody heard
        stats = emu.stats()
        assert stats["creations_by_email"] == {email: 1}
        assert stats["faults"]["drop_after_create"] == 1
        assert stats["responses_by_status"]["dropped"] == 1
        # Only successful creates are dropped: the retry hears its 409.
        c.conn.close()
        status, _, body = c.api("POST", "/api/v2/users", {"name": "Dropped", "email": email})
        assert (status, body["code"]) == (409, "general.conflict")


# ---- latency -----------------------------------------------------------------------------


def test_latency_is_concurrent_not_serialised(http_client: Any) -> None:
    with Emulator(config(latency_ms=1000)) as emu:
        login = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        login.login()
        clients = [http_client(emu.port) for _ in range(10)]
        durations: list[float] = []
        statuses: list[int] = []

        def call(c: Any) -> None:
            started = time.perf_counter()
            statuses.append(c.api("GET", HOME, token=login.token)[0])
            durations.append(time.perf_counter() - started)

        started = time.perf_counter()
        threads = [threading.Thread(target=call, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        assert statuses == [200] * 10
        assert min(durations) >= 0.99
        # Ten 1 s requests in parallel, not 10 s in a row; the margin holds on a loaded machine.
        assert elapsed < 5.0


def test_latency_jitter_stays_in_bounds(http_client: Any) -> None:
    """The delays the emulator sleeps, recorded rather than timed (no wall-clock margins)."""
    with Emulator(config(latency_ms=30, latency_jitter_ms=20, seed=3)) as emu:
        slept: list[float] = []

        def record(delay: float | None = None) -> bool:
            slept.append(delay or 0.0)
            return False

        emu._stopping.wait = record  # type: ignore[method-assign]  # noqa: SLF001
        c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        c.login()
        for _ in range(8):
            assert c.api("GET", HOME)[0] == 200
        assert len(slept) == 8
        assert all(0.010 <= d <= 0.050 for d in slept)
        assert max(slept) - min(slept) > 0.005  # it does vary


def test_keep_alive_responses_are_not_delayed_by_nagle(client: Any) -> None:
    started = time.perf_counter()
    for _ in range(100):
        assert client.api("GET", HOME)[0] == 200
    # One send per response with TCP_NODELAY: well under a millisecond each on loopback.
    # Nagle plus delayed ACKs would cost ~40 ms per request (4 s here).
    assert time.perf_counter() - started < 2.5


# ---- auth and framing --------------------------------------------------------------------


def test_missing_or_malformed_authorization_is_401(client: Any) -> None:
    status, _, body = client.api("GET", HOME, token="")
    assert (status, body["code"]) == (401, "authentication.required")
    status, _, body = client.raw("GET", HOME, headers={"Authorization": "Basic abc"})
    assert (status, body["code"]) == (401, "authentication.required")
    status, _, body = client.api("GET", HOME, token="forged")
    assert (status, body["code"]) == (401, "bad.credentials")


def test_oauth_rejects_other_grant_types_and_missing_auth(client: Any) -> None:
    status, _, body = client.raw(
        "POST",
        "/oauth/token",
        b"grant_type=password",
        {
            "Authorization": _basic(CLIENT_ID, CLIENT_SECRET),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert (status, body["error"]) == (400, "unsupported_grant_type")
    status, _, body = client.raw(
        "POST",
        "/oauth/token",
        b"grant_type=client_credentials",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (status, body["error"]) == (400, "invalid_client")


def _basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def test_token_response_shape(emu: Emulator, http_client: Any) -> None:
    c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
    status, body = c.login()
    assert status == 200
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert (body["token_type"], body["expires_in"]) == ("bearer", 86400)


def test_bad_bodies_and_unknown_routes(client: Any) -> None:
    status, headers, body = client.raw(
        "POST",
        "/api/v2/users",
        b"{not json",
        {"Authorization": "Bearer " + client.token, "Content-Type": "application/json"},
    )
    assert (status, body["code"]) == (400, "bad.request")
    assert headers["inin-correlation-id"] == body["contextId"]
    status, _, body = client.api("POST", "/api/v2/users", ["a list"])
    assert (status, body["code"]) == (400, "bad.request")
    status, _, body = client.api("GET", "/api/v2/nothing/here")
    assert (status, body["code"]) == (404, "not.found")
    status, _, body = client.api("PUT", "/api/v2/users/some-id", {})
    assert status == 404
    status, _, body = client.api("POST", "/api/v2/users/search", {"query": []})
    assert (status, body["details"][0]["fieldName"]) == (400, "query")
    status, _, body = client.api(
        "POST",
        "/api/v2/users/search",
        {"query": [{"type": "EXACT", "fields": ["email"], "value": "a@b.co"}], "pageSize": 500},
    )
    assert (status, body["details"][0]["fieldName"]) == (400, "pageSize")


def test_oversized_body_is_413_and_closes(client: Any) -> None:
    big = {"name": "x" * 600_000, "email": "big@example.com"}
    status, headers, body = client.api("POST", "/api/v2/users", big)
    assert status == 413 and headers["connection"] == "close"


def test_search_operators_and_groups(client: Any, unique_email: Any) -> None:
    tag = unique_email("ops").split("@")[0]
    for name, title in (("Ann", "Agent"), ("Bob", "Agent"), ("Cid", "Lead")):
        email = f"{name.lower()}.{tag}@example.com"
        assert (
            client.api("POST", "/api/v2/users", {"name": name, "email": email, "title": title})[0]
            == 200
        )

    def names(query: list[dict[str, Any]]) -> list[str]:
        status, _, body = client.api("POST", "/api/v2/users/search", {"query": query})
        assert status == 200, body
        return [u["name"] for u in body["results"]]

    mine = {"type": "CONTAINS", "fields": ["email"], "value": tag}
    assert names([mine]) == ["Ann", "Bob", "Cid"]
    assert names([mine, {"type": "EXACT", "fields": ["title"], "value": "agent"}]) == ["Ann", "Bob"]
    assert names(
        [mine, {"type": "EXACT", "fields": ["name"], "value": "Ann", "operator": "NOT"}]
    ) == ["Bob", "Cid"]
    assert names(
        [
            mine,
            {
                "group": [
                    {"type": "EXACT", "fields": ["name"], "value": "Ann", "operator": "OR"},
                    {"type": "STARTS_WITH", "fields": ["name"], "value": "c", "operator": "OR"},
                ]
            },
        ]
    ) == ["Ann", "Cid"]
    status, _, body = client.api(
        "POST",
        "/api/v2/users/search",
        {"query": [mine], "pageSize": 2, "pageNumber": 2, "sortOrder": "DESC"},
    )
    assert (body["total"], body["pageCount"], [u["name"] for u in body["results"]]) == (
        3,
        2,
        ["Ann"],
    )


def test_search_index_delay(http_client: Any) -> None:
    clock = FakeClock()
    with Emulator(config(search_index_delay_s=5, clock=clock)) as emu:
        c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        c.login()
        c.api("POST", "/api/v2/users", {"name": "Late", "email": "late@example.com"})
        query = {"query": [{"type": "EXACT", "fields": ["email"], "value": "late@example.com"}]}
        assert c.api("POST", "/api/v2/users/search", query)[2]["total"] == 0
        clock.now += 5
        assert c.api("POST", "/api/v2/users/search", query)[2]["total"] == 1


# ---- inspection --------------------------------------------------------------------------


def test_inspection_endpoints(http_client: Any, unique_email: Any) -> None:
    with Emulator(config(existing_users=[{"email": "old@example.com"}])) as emu:
        c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        c.login()
        email = unique_email("Inspect")
        status, _, user = c.api("POST", "/api/v2/users", {"name": "I", "email": email})
        c.api("GET", f"/api/v2/users/{user['id']}")
        c.api("GET", "/api/v2/users/00000000-0000-4000-8000-000000000000")

        status, _, stats = c.raw("GET", "/emulator/stats")
        assert status == 200
        assert stats == emu.stats()
        assert stats["requests_total"] == 4
        assert stats["requests_by_route"] == {
            "POST /oauth/token": 1,
            "POST /api/v2/users": 1,
            "GET /api/v2/users/{id}": 2,
        }
        assert stats["responses_by_status"] == {"200": 3, "404": 1}
        assert stats["creations_by_email"] == {email.lower(): 1}
        assert stats["tokens_issued"] == 1
        assert stats["users"] == {"total": 2, "active": 2, "inactive": 0, "deleted": 0}
        assert stats["faults"] == {"http_5xx": 0, "drop_after_create": 0, "token_revocation": 0}

        status, _, users = c.raw("GET", "/emulator/users")
        assert sorted(u["email"] for u in users) == sorted(["old@example.com", email])

        assert c.raw("POST", "/emulator/revoke-tokens")[2] == {"revoked": 1}
        assert c.api("GET", HOME)[0] == 401
        assert c.raw("POST", "/emulator/reset-stats")[0] == 200
        stats = emu.stats()
        assert (stats["requests_total"], stats["creations_by_email"]) == (0, {})
        assert stats["users"]["total"] == 2  # users are not stats
        assert c.raw("GET", "/emulator/nothing")[0] == 404


# ---- lifecycle and logs ------------------------------------------------------------------


def test_stop_closes_idle_and_busy_connections_promptly(http_client: Any) -> None:
    emu = Emulator(config(latency_ms=10_000)).start()
    idle = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
    idle.login()  # keep-alive connection stays open
    busy = http_client(emu.port)
    outcome: list[Any] = []

    def slow_call() -> None:
        try:
            outcome.append(busy.api("GET", HOME, token=idle.token)[0])
        except (OSError, http.client.HTTPException) as error:
            outcome.append(error)

    thread = threading.Thread(target=slow_call)
    thread.start()
    time.sleep(0.1)
    started = time.perf_counter()
    emu.stop()
    assert time.perf_counter() - started < 5.0  # the request would hold it for 10 s
    thread.join(timeout=5)
    assert not thread.is_alive() and outcome
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", idle.port), timeout=1).close()


def test_port_in_use_raises(emu: Emulator) -> None:
    with pytest.raises(OSError):
        Emulator(config(port=emu.port)).start()


def test_requests_are_logged_without_secrets(http_client: Any) -> None:
    saved = structlog.get_config()
    jobrunner_log.configure(level="debug", fmt="json")
    try:
        with Emulator(config()) as emu, capture_logs() as logs:
            c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
            c.login()
            c.api(
                "POST",
                "/api/v2/users",
                {"name": "L", "email": "log@example.com", "password": "pw-Secret-1"},
            )
            c.api("GET", HOME + "?x=1")
    finally:
        structlog.configure(**saved)
    requests = [e for e in logs if e["event"] == "emulator.request"]
    assert [(e["method"], e["path"], e["status"]) for e in requests] == [
        ("POST", "/oauth/token", 200),
        ("POST", "/api/v2/users", 200),
        ("GET", HOME, 200),
    ]
    assert all(e["log_level"] == "debug" and e["duration_ms"] >= 0 for e in requests)
    text = repr(logs)
    for secret in (CLIENT_SECRET, c.token, "pw-Secret-1", "Bearer", "Basic"):
        assert secret not in text


def test_concurrent_creates_of_one_email_make_one_user(emu: Emulator, http_client: Any) -> None:
    login = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
    login.login()
    clients = [http_client(emu.port) for _ in range(20)]
    statuses: list[int] = []

    def create(c: Any) -> None:
        body = {"name": "Racer", "email": "racer@example.com"}
        statuses.append(c.api("POST", "/api/v2/users", body, token=login.token)[0])

    threads = [threading.Thread(target=create, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [409] * 19
    assert emu.stats()["creations_by_email"]["racer@example.com"] == 1
