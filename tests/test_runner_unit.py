"""Runner rules with a scripted client: recovery, doubt, 409/403/429/5xx handling, pacing.

These tests pin the decisions; tests/test_runner_emulator.py proves them end to end against
the emulator through the real SDK.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeClient

from jobrunner.config import parse_environment
from jobrunner.errors import ConfigError, LedgerBusy
from jobrunner.genesys import ApiError, FoundUser, NewUser, TransportError
from jobrunner.ingest import ingest_file
from jobrunner.ledger import Ledger
from jobrunner.runner import RetryPolicy, RunLock, Runner
from jobrunner.steps.create import is_ours

HEADER = "first_name,last_name,email,phone_number,division_id,title,department\n"


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    f = tmp_path / "u.csv"
    f.write_text(
        HEADER
        + "Ada,Lovelace,ada@example.com,+13175550101,,Engineer,R&D\n"
        + "Grace,Hopper,grace@example.com,,,,\n"
        + "Alan,Turing,alan@example.com,,3f2504e0-4f89-11d3-9a0c-0305e82c3301,,\n"
    )
    ledger = Ledger.open(tmp_path / "l.db")
    ingest_file(ledger, f)
    yield ledger
    ledger.close()


def rows(ledger: Ledger) -> dict[str, dict[str, Any]]:
    cur = ledger.execute(
        "SELECT email, status, user_id, attempts, in_doubt, error_code, error_message FROM rows"
    )
    keys = ("status", "user_id", "attempts", "in_doubt", "code", "error")
    return {r[0]: dict(zip(keys, r[1:], strict=True)) for r in cur}


def make_runner(ledger: Ledger, client: FakeClient, **kw: Any) -> Runner:
    kw.setdefault("policy", RetryPolicy(max_attempts=4, base_delay_s=0.0, max_delay_s=0.0))
    kw.setdefault("concurrency", 2)
    return Runner(ledger, client, **kw)


def ada() -> NewUser:
    return NewUser("Ada Lovelace", "ada@example.com", "+13175550101", None, "Engineer", "R&D")


def test_happy_path_one_create_per_row(ledger: Ledger) -> None:
    client = FakeClient()
    result = make_runner(ledger, client).run()
    assert result.exit_code == 0
    assert [c for c in client.calls if c[0] == "search"] == []
    got = rows(ledger)
    assert {r["status"] for r in got.values()} == {"created"}
    assert got["ada@example.com"]["user_id"] == "id-ada@example.com"
    assert all(r["in_doubt"] == 0 and r["attempts"] == 1 for r in got.values())


def test_conflict_on_a_clean_row_is_exists_with_the_id(ledger: Ledger) -> None:
    client = FakeClient()
    client.add_user(NewUser("Ada L.", "ADA@example.com"), "already-there")
    make_runner(ledger, client).run()
    got = rows(ledger)["ada@example.com"]
    assert got["status"] == "exists" and got["user_id"] == "already-there"


def test_dropped_create_is_created_after_lookup_not_exists(ledger: Ledger) -> None:
    client = FakeClient()
    client.create_script["ada@example.com"] = deque(["drop-after-create"])
    make_runner(ledger, client).run()
    got = rows(ledger)["ada@example.com"]
    assert got["status"] == "created" and got["user_id"] == "id-ada@example.com"
    assert client.calls.count(("create", "ada@example.com")) == 1
    assert client.calls.count(("search", "ada@example.com")) == 1


def test_in_doubt_row_whose_user_differs_is_exists(ledger: Ledger) -> None:
    ledger.execute("UPDATE rows SET in_doubt = 1, attempts = 1 WHERE email = 'ada@example.com'")
    client = FakeClient()
    client.add_user(NewUser("Somebody Else", "ada@example.com"), "someone")
    make_runner(ledger, client).run()
    got = rows(ledger)["ada@example.com"]
    assert got["status"] == "exists" and got["user_id"] == "someone"
    assert ("create", "ada@example.com") not in client.calls


def test_in_doubt_row_with_stale_search_then_409_resolves_to_created(ledger: Ledger) -> None:
    """Search index lag: the look-up misses our own user, the create answers 409."""
    ledger.execute("UPDATE rows SET in_doubt = 1, attempts = 1 WHERE email = 'ada@example.com'")
    client = FakeClient()
    client.add_user(ada(), "ours")
    original = client.find_user_by_email
    misses = {"n": 1}

    def lagging(email: str) -> FoundUser | None:
        if email == "ada@example.com" and misses["n"]:
            misses["n"] -= 1
            client.calls.append(("search", email))
            return None
        return original(email)

    client.find_user_by_email = lagging  # type: ignore[method-assign]
    make_runner(ledger, client).run()
    got = rows(ledger)["ada@example.com"]
    assert got["status"] == "created" and got["user_id"] == "ours"


def test_crash_state_is_recovered_at_start(ledger: Ledger) -> None:
    """What kill -9 leaves: rows in_progress for a dead owner, one with its create sent."""
    ledger.execute(
        "UPDATE rows SET status = 'in_progress', claim_owner = 'dead:1:x', "
        "in_doubt = 1, attempts = 1 WHERE email = 'ada@example.com'"
    )
    ledger.execute(
        "UPDATE rows SET status = 'in_progress', claim_owner = 'dead:1:x' "
        "WHERE email = 'grace@example.com'"
    )
    client = FakeClient()
    client.add_user(ada(), "made-before-the-crash")
    result = make_runner(ledger, client).run()
    assert (result.recovered, result.recovered_in_doubt) == (2, 1)
    got = rows(ledger)
    assert got["ada@example.com"]["status"] == "created"
    assert got["ada@example.com"]["user_id"] == "made-before-the-crash"
    assert ("create", "ada@example.com") not in client.calls
    assert got["grace@example.com"]["status"] == "created"
    assert ("search", "grace@example.com") not in client.calls


def test_400_fails_the_row_with_code_and_message(ledger: Ledger) -> None:
    client = FakeClient()
    client.create_script["alan@example.com"] = deque(
        [
            ApiError(
                400,
                "invalid.value",
                "divisionId is not a valid division",
                field_names=("divisionId",),
            )
        ]
    )
    result = make_runner(ledger, client).run()
    assert result.exit_code == 1
    got = rows(ledger)["alan@example.com"]
    assert got["status"] == "failed" and got["code"] == "invalid.value"
    assert "divisionId is not a valid division" in got["error"]


def test_403_on_a_division_row_fails_only_that_row(ledger: Ledger) -> None:
    client = FakeClient()
    client.create_script["alan@example.com"] = deque(
        [ApiError(403, "missing.division.permission", "no")]
    )
    make_runner(ledger, client).run()
    got = rows(ledger)
    assert got["alan@example.com"]["status"] == "failed"
    assert "division 3f2504e0" in got["alan@example.com"]["error"]
    assert got["ada@example.com"]["status"] == got["grace@example.com"]["status"] == "created"


def test_403_without_division_stops_the_run_and_leaves_rows_pending(ledger: Ledger) -> None:
    client = FakeClient()
    forbidden = ApiError(403, "missing.permissions", "Unable to perform the requested action")
    for email in ("ada@example.com", "grace@example.com"):
        client.create_script[email] = deque([forbidden] * 5)
    ledger.execute("UPDATE rows SET status = 'invalid' WHERE email = 'alan@example.com'")
    with pytest.raises(ConfigError, match="directory:user:add"):
        make_runner(ledger, client, concurrency=1).run()
    got = rows(ledger)
    assert got["ada@example.com"]["status"] == got["grace@example.com"]["status"] == "pending"
    assert got["ada@example.com"]["attempts"] == 0 and got["ada@example.com"]["in_doubt"] == 0


def test_429_never_uses_up_attempts(ledger: Ledger) -> None:
    client = FakeClient()
    limited = ApiError(
        429, "too.many.requests.retry.after", "Rate limit exceeded", retry_after=0.05
    )
    client.create_script["ada@example.com"] = deque([limited] * 6)  # more than max_attempts
    result = make_runner(ledger, client).run()
    assert result.exit_code == 0
    got = rows(ledger)["ada@example.com"]
    assert got["status"] == "created" and got["attempts"] == 1


def test_5xx_is_retried_then_fails_after_max_attempts_keeping_doubt(ledger: Ledger) -> None:
    client = FakeClient()
    bad = ApiError(503, "service.unavailable", "try later")
    client.create_script["grace@example.com"] = deque([bad, bad])
    client.create_script["ada@example.com"] = deque([bad] * 10)
    result = make_runner(ledger, client).run()
    got = rows(ledger)
    assert got["grace@example.com"]["status"] == "created"
    assert got["ada@example.com"]["status"] == "failed"
    assert got["ada@example.com"]["attempts"] == 4 and got["ada@example.com"]["in_doubt"] == 1
    assert "gave up after 4 attempts" in got["ada@example.com"]["error"]
    assert result.exit_code == 1
    # --retry-failed redrives it; its doubt makes the runner look it up first.
    client.create_script["ada@example.com"] = deque()
    result = make_runner(ledger, client).run(retry_failed=True)
    assert result.requeued == 1 and result.exit_code == 0
    assert rows(ledger)["ada@example.com"]["status"] == "created"


def test_second_runner_is_refused_naming_the_first(ledger: Ledger) -> None:
    lock = RunLock(ledger.path)
    lock.acquire("first")
    try:
        with pytest.raises(
            LedgerBusy, match=r"another jobrunner command.*`jobrunner run`, pid \d+"
        ):
            make_runner(ledger, FakeClient()).run()
    finally:
        lock.release()
    assert make_runner(ledger, FakeClient()).run().exit_code == 0


def test_retry_policy_full_jitter_is_bounded() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=60)
    assert policy.delay(1, lambda: 1.0) == 1
    assert policy.delay(4, lambda: 1.0) == 8
    assert policy.delay(20, lambda: 1.0) == 60
    assert policy.delay(5, lambda: 0.0) == 0


@pytest.mark.parametrize(
    ("value", "api", "login"),
    [
        ("mypurecloud.ie", "https://api.mypurecloud.ie", "https://login.mypurecloud.ie"),
        ("usw2.pure.cloud", "https://api.usw2.pure.cloud", "https://login.usw2.pure.cloud"),
        ("api.mypurecloud.de", "https://api.mypurecloud.de", "https://login.mypurecloud.de"),
        ("", "https://api.mypurecloud.com", "https://login.mypurecloud.com"),
        ("http://127.0.0.1:8765", "http://127.0.0.1:8765", "http://127.0.0.1:8765"),
        ("http://localhost:9", "http://localhost:9", "http://localhost:9"),
        ("https://gw.example.com", "https://gw.example.com:443", "https://gw.example.com:443"),
    ],
)
def test_environment_values(value: str, api: str, login: str) -> None:
    endpoint = parse_environment(value)
    assert (endpoint.api_url, endpoint.login_url) == (api, login)


@pytest.mark.parametrize(
    "value",
    [
        "http://10.0.0.5:8080",
        "http://example.com",
        "ftp://x",
        "not a domain",
        "http://127.0.0.1/api",
        "https://[::1",
    ],
)
def test_bad_environment_values_are_refused(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_environment(value)


def test_a_409_after_an_unanswered_create_never_creates_again_while_the_index_lags(
    ledger: Ledger,
) -> None:
    """Our dropped create made the user; the search index does not show it for a long time."""
    client = FakeClient()
    client.create_script["ada@example.com"] = deque(["drop-after-create"])
    hidden = {"on": True}
    original = client.find_user_by_email

    def lagging(email: str) -> FoundUser | None:
        if email == "ada@example.com" and hidden["on"]:
            client.calls.append(("search", email))
            return None
        return original(email)

    client.find_user_by_email = lagging  # type: ignore[method-assign]
    result = make_runner(ledger, client).run()
    ada = rows(ledger)["ada@example.com"]
    assert ada["status"] == "failed" and ada["in_doubt"] == 2
    assert "may be the one this job created" in ada["error"]
    assert client.calls.count(("create", "ada@example.com")) == 2  # the dropped one, one 409
    assert result.exit_code == 1
    hidden["on"] = False  # the index caught up
    result = make_runner(ledger, client).run(retry_failed=True)
    ada = rows(ledger)["ada@example.com"]
    assert ada["status"] == "created" and ada["user_id"] == "id-ada@example.com"
    assert client.calls.count(("create", "ada@example.com")) == 2  # never a third
    assert result.exit_code == 0


def test_the_run_lock_holds_through_a_symlink(tmp_path: Path, ledger: Ledger) -> None:
    link = tmp_path / "link.db"
    link.symlink_to(ledger.path)
    lock = RunLock(ledger.path)
    lock.acquire("first")
    try:
        with pytest.raises(LedgerBusy):
            RunLock(link).acquire("second")
    finally:
        lock.release()


def test_non_ascii_credentials_are_refused_plainly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobrunner.config import load_settings

    monkeypatch.setenv("GENESYS_CLOUD_CLIENT_ID", "abc")
    monkeypatch.setenv("GENESYS_CLOUD_CLIENT_SECRET", "sécret")
    with pytest.raises(ConfigError, match="GENESYS_CLOUD_CLIENT_SECRET has characters that are"):
        load_settings(tmp_path / "none.env")


def test_dotenv_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobrunner.config import load_settings

    env = tmp_path / ".env"
    env.write_text(
        "GENESYS_CLOUD_CLIENT_ID=from-file\nGENESYS_CLOUD_CLIENT_SECRET=file-secret\n"
        "GENESYS_CLOUD_ENVIRONMENT=mypurecloud.ie\n"
    )
    monkeypatch.delenv("GENESYS_CLOUD_CLIENT_SECRET", raising=False)
    monkeypatch.delenv("GENESYS_CLOUD_ENVIRONMENT", raising=False)
    monkeypatch.setenv("GENESYS_CLOUD_CLIENT_ID", "from-env")
    settings = load_settings(env)
    assert settings.client_id == "from-env" and settings.client_secret == "file-secret"
    assert settings.endpoint.api_url == "https://api.mypurecloud.ie"
    assert "file-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("found", "ours"),
    [
        (dict(), True),
        (dict(phones=None), True),  # the search did not list addresses at all
        (dict(title=None), False),  # the API leaves an empty title out: not what we sent
        (dict(phones=("+1 (317) 555-0101",)), True),  # formatted by the API
        (dict(name="Ada King"), False),
        (dict(title="Countess"), False),
        (dict(phones=("+13175550199",)), False),
        (dict(phones=()), False),
        (dict(state="deleted"), False),
        (dict(division_id="0b9a8ea6-5c79-4d2e-9a3e-3c1d1a2b3c4d"), True),  # we sent none
    ],
)
def test_what_counts_as_the_user_we_created(found: dict[str, Any], ours: bool) -> None:
    sent = ada()
    base = dict(
        id="u",
        name="Ada Lovelace",
        email="ADA@example.com",
        state="active",
        division_id=None,
        title="Engineer",
        department="R&D",
        phones=("+13175550101",),
    )
    assert is_ours(sent, FoundUser(**{**base, **found})) is ours


def connect_error() -> TransportError:
    return TransportError("connect", "cannot connect: Connection refused", maybe_acted=False)


def test_a_network_blip_costs_no_attempts(ledger: Ledger) -> None:
    client = FakeClient()
    client.create_script["ada@example.com"] = deque([connect_error()] * 3)
    client.create_script["grace@example.com"] = deque([connect_error()] * 2)
    result = make_runner(ledger, client).run()
    assert result.exit_code == 0
    got = rows(ledger)
    assert all(r["status"] == "created" and r["attempts"] == 1 for r in got.values())


def test_an_unreachable_api_stops_the_run_with_rows_pending(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobrunner.caller as caller_module

    monkeypatch.setattr(caller_module, "UNREACHABLE_FOR_S", 0.0)
    ledger.execute("UPDATE rows SET in_doubt = 1, attempts = 2 WHERE email = 'ada@example.com'")
    client = FakeClient()
    for email in ("ada@example.com", "grace@example.com", "alan@example.com"):
        client.create_script[email] = deque([connect_error()] * 100)
        client.search_script[email] = deque([connect_error()] * 100)
    with pytest.raises(ConfigError, match="stopped answering"):
        make_runner(ledger, client).run()
    got = rows(ledger)
    assert {r["status"] for r in got.values()} == {"pending"}
    assert got["ada@example.com"]["attempts"] == 2 and got["ada@example.com"]["in_doubt"] == 1
    assert got["grace@example.com"]["attempts"] == 0


def test_an_exists_row_whose_id_look_up_was_cut_short_gets_its_id_next_run(
    ledger: Ledger,
) -> None:
    """kill -9 between committing `exists` (after a 409) and the search for the id."""
    ledger.execute(
        "UPDATE rows SET status = 'exists', attempts = 1 WHERE email = 'grace@example.com'"
    )
    ledger.execute(
        "UPDATE rows SET status = 'created', user_id = 'x' WHERE email != 'grace@example.com'"
    )
    client = FakeClient()
    client.add_user(NewUser("Grace B. Hopper", "grace@example.com"), "the-real-grace")
    result = make_runner(ledger, client).run()
    assert result.exit_code == 0
    grace = rows(ledger)["grace@example.com"]
    assert grace["status"] == "exists" and grace["user_id"] == "the-real-grace"
    assert client.calls == [("search", "grace@example.com")]


def test_a_rerun_with_nothing_to_do_makes_no_calls(ledger: Ledger) -> None:
    ledger.execute("UPDATE rows SET status = 'created', user_id = 'x'")
    client = FakeClient()
    for _ in range(2):
        assert make_runner(ledger, client).run().exit_code == 0
    assert client.calls == [] and client.authenticated == 0


def test_an_exists_row_the_search_did_not_show_is_looked_up_again_each_run(
    ledger: Ledger,
) -> None:
    """The search index lagged behind the 409: the next run asks again, until it shows."""
    ledger.execute(
        "UPDATE rows SET status = 'exists', error_message = 'the search did not return the "
        "existing user' WHERE email = 'grace@example.com'"
    )
    ledger.execute(
        "UPDATE rows SET status = 'created', user_id = 'x' WHERE email != 'grace@example.com'"
    )
    client = FakeClient()
    assert make_runner(ledger, client).run().exit_code == 0
    assert client.calls == [("search", "grace@example.com")]
    assert rows(ledger)["grace@example.com"]["user_id"] is None
    client.add_user(NewUser("Grace Hopper", "grace@example.com"), "the-real-grace")
    assert make_runner(ledger, client).run().exit_code == 0
    assert rows(ledger)["grace@example.com"]["user_id"] == "the-real-grace"
