"""`jobrunner run` end to end: the real SDK against the bundled emulator, faults included."""

from __future__ import annotations

import functools
import json
import random
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import emulated
import pytest
from click.testing import CliRunner
from emulated import emulators, env_for, settings_for, spawn, wait_for_event

from jobrunner.cli import cli
from jobrunner.emulator.server import Emulator
from jobrunner.errors import ConfigError
from jobrunner.genesys import REFUSAL_TRIES, REFUSAL_WAIT_S, GenesysClient
from jobrunner.ingest import ingest_file
from jobrunner.ledger import Ledger
from jobrunner.limiter import WindowLimiter
from jobrunner.runner import RetryPolicy, Runner

SECRET = "s3cr3t-never-printed-0123456789"
HEADER = "first_name,last_name,email,phone_number,division_id,title,department\n"
FAST_RETRY = RetryPolicy(max_attempts=8, base_delay_s=0.02, max_delay_s=0.2)


def people(n: int, prefix: str = "agent") -> str:
    lines = [
        f"First{i},Last{i},{prefix}{i}@example.com,+1317555{i % 10000:04d},,Agent,Support\n"
        for i in range(n)
    ]
    return HEADER + "".join(lines)


@pytest.fixture
def make_ledger(tmp_path: Path) -> Iterator[Any]:
    opened: list[Ledger] = []

    def make(csv_text: str) -> Ledger:
        f = tmp_path / "users.csv"
        f.write_text(csv_text, encoding="utf-8")
        ledger = Ledger.open(tmp_path / "state" / "ledger.db")
        ingest_file(ledger, f)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


@pytest.fixture
def emulator() -> Iterator[Any]:
    with emulators(client_id="test-client", client_secret=SECRET) as start:
        yield start


run_against = functools.partial(emulated.run_against, policy=FAST_RETRY)


def report_rows(ledger: Ledger) -> dict[str, dict[str, Any]]:
    cur = ledger.execute(
        "SELECT email, status, user_id, attempts, in_doubt, error_code, error_message FROM rows"
    )
    keys = ("status", "user_id", "attempts", "in_doubt", "code", "error")
    return {r[0].lower(): dict(zip(keys, r[1:], strict=True)) for r in cur}


def emulator_ids(emu: Emulator) -> dict[str, str]:
    return {u["email"].lower(): u["id"] for u in emu.users()}


def assert_each_created_once(emu: Emulator, ledger: Ledger) -> None:
    rows = report_rows(ledger)
    ids = emulator_ids(emu)
    creations = emu.stats()["creations_by_email"]
    for email, row in rows.items():
        if row["status"] == "created":
            assert creations.get(email) == 1, (email, creations.get(email))
            assert row["user_id"] == ids[email], email
    assert all(n == 1 for n in creations.values()), creations


def test_every_row_created_once_with_the_emulators_ids(emulator: Any, make_ledger: Any) -> None:
    emu = emulator(
        existing_users=[
            {"name": "Someone Else", "email": "AGENT3@example.com"},
            {"name": "First7 Last7", "email": "agent7@example.com", "title": "Boss"},
        ]
    )
    ledger = make_ledger(people(30))
    result = run_against(emu, ledger)
    assert result.exit_code == 0
    rows = report_rows(ledger)
    assert sum(r["status"] == "created" for r in rows.values()) == 28
    ids = emulator_ids(emu)
    for email in ("agent3@example.com", "agent7@example.com"):
        assert rows[email]["status"] == "exists" and rows[email]["user_id"] == ids[email]
    assert_each_created_once(emu, ledger)
    stats = emu.stats()["requests_by_route"]
    assert stats["POST /api/v2/users"] == 30  # one create per row
    assert stats.get("POST /api/v2/users/search", 0) == 2  # one look-up per conflict
    user = next(u for u in emu.users() if u["email"] == "agent5@example.com")
    assert user["name"] == "First5 Last5" and user["title"] == "Agent"
    assert user["addresses"][0]["address"] == "+13175550005"


def test_a_connection_dropped_after_the_create_is_created_not_duplicated(
    emulator: Any, make_ledger: Any
) -> None:
    emu = emulator(drop_after_create_rate=0.3, seed=3)
    ledger = make_ledger(people(40))
    result = run_against(emu, ledger)
    assert result.exit_code == 0
    drops = emu.stats()["faults"]["drop_after_create"]
    assert drops >= 5
    rows = report_rows(ledger)
    assert all(r["status"] == "created" for r in rows.values())
    assert_each_created_once(emu, ledger)
    assert len(emu.users()) == 40
    # Each dropped create was settled by a look-up, and the report says so, with the id.
    by = dict(ledger.execute("SELECT settled_by, count(*) FROM rows GROUP BY settled_by"))
    assert by == {"lookup": drops, "create": 40 - drops}
    report = CliRunner().invoke(cli, ["--db", str(ledger.path), "report", "--format", "json"])
    looked_up = [r for r in json.loads(report.output)["rows"] if r["settled_by"] == "lookup"]
    assert len(looked_up) == drops and all(r["user_id"] for r in looked_up)
    table = CliRunner().invoke(cli, ["--db", str(ledger.path), "report", "--status", "created"])
    assert f"created            40  ({drops} by look-up after a lost answer)" in table.output
    assert table.output.count("created by look-up") == drops


def test_5xx_faults_are_retried(emulator: Any, make_ledger: Any) -> None:
    emu = emulator(fault_5xx_rate=0.3, seed=5)
    ledger = make_ledger(people(30))
    assert run_against(emu, ledger).exit_code == 0
    assert emu.stats()["faults"]["http_5xx"] >= 5
    assert all(r["status"] == "created" for r in report_rows(ledger).values())
    assert_each_created_once(emu, ledger)


def test_a_429_storm_never_fails_a_row_and_the_limiter_learns_it(
    emulator: Any, make_ledger: Any
) -> None:
    emu = emulator(rate_per_minute=8, rate_window_s=1.0)  # 8 per second: binds at once
    ledger = make_ledger(people(40))
    result = run_against(emu, ledger, policy=RetryPolicy(max_attempts=1))
    assert result.exit_code == 0
    limited = emu.stats()["rate_limited"]
    # The first 429s teach the window (one per request in flight, and the test of what was
    # learned); after that the limiter keeps the run below the limit.
    assert 0 < limited <= 8, limited
    rows = report_rows(ledger)
    assert all(r["status"] == "created" and r["attempts"] == 1 for r in rows.values())
    assert_each_created_once(emu, ledger)


def test_with_pacing_switched_off_the_same_storm_is_answered_429_many_times(
    emulator: Any, make_ledger: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the test above guards: workers that never wait for the limiter."""
    monkeypatch.setattr(WindowLimiter, "wait", lambda self, stop: not stop.is_set())
    emu = emulator(rate_per_minute=8, rate_window_s=1.0)
    ledger = make_ledger(people(40))
    run_against(emu, ledger, policy=RetryPolicy(max_attempts=1))
    assert emu.stats()["rate_limited"] > 20


def test_a_token_revoked_mid_run_is_replaced_once(emulator: Any, make_ledger: Any) -> None:
    emu = emulator(revoke_tokens_after=10)
    ledger = make_ledger(people(25))
    assert run_against(emu, ledger).exit_code == 0
    stats = emu.stats()
    assert stats["faults"]["token_revocation"] == 1 and stats["tokens_issued"] == 2
    assert all(r["status"] == "created" for r in report_rows(ledger).values())
    assert_each_created_once(emu, ledger)


def test_dropped_creates_with_a_lagging_search_index_are_created_once(
    emulator: Any, make_ledger: Any
) -> None:
    """Every create is dropped after it worked, and new users reach the search 1.5 s later."""
    emu = emulator(drop_after_create_rate=1.0, search_index_delay_s=1.5, seed=4)
    ledger = make_ledger(people(8))
    policy = RetryPolicy(max_attempts=12, base_delay_s=0.3, max_delay_s=1.0)
    result = run_against(emu, ledger, policy=policy)
    assert result.exit_code == 0
    rows = report_rows(ledger)
    assert all(r["status"] == "created" for r in rows.values()), rows
    assert_each_created_once(emu, ledger)
    # The dropped create, at most one 409 per row, never more.
    assert emu.stats()["requests_by_route"]["POST /api/v2/users"] <= 16


def test_one_new_token_for_all_workers_when_it_is_revoked(emulator: Any, make_ledger: Any) -> None:
    emu = emulator(revoke_tokens_after=20, latency_ms=60)
    ledger = make_ledger(people(60))
    client = GenesysClient(settings_for(emu), pool_size=8, read_timeout=5)
    fetch = client.client.get_client_credentials_token

    def slow_fetch(*args: Any) -> Any:  # a slow login service: every worker sees the 401
        time.sleep(0.4)
        return fetch(*args)

    client.client.get_client_credentials_token = slow_fetch
    result = Runner(ledger, client, concurrency=8, policy=FAST_RETRY).run()
    assert result.exit_code == 0
    assert emu.stats()["tokens_issued"] == 2
    assert result.stats.calls["token"] == 2
    assert_each_created_once(emu, ledger)


def test_a_secret_rotated_mid_run_stops_the_run_after_a_few_refused_token_requests(
    emulator: Any, make_ledger: Any
) -> None:
    emu = emulator(revoke_tokens_after=15, latency_ms=30)
    ledger = make_ledger(people(60))
    waits: list[float] = []
    client = GenesysClient(settings_for(emu), pool_size=8, read_timeout=5, sleep=waits.append)
    fetch = client.client.get_client_credentials_token

    def then_rotate(*args: Any) -> Any:
        answer = fetch(*args)
        emu.config.client_secret = "rotated"  # the admin rotated it: our copy is now wrong
        return answer

    client.client.get_client_credentials_token = then_rotate
    with pytest.raises(ConfigError, match="refused the OAuth client"):
        Runner(ledger, client, concurrency=8, policy=FAST_RETRY).run()
    # One refusal and REFUSAL_TRIES tries after short waits (it got a token a moment ago),
    # for all the workers together.
    assert emu.stats()["token_requests_rejected"] == 1 + REFUSAL_TRIES
    assert waits == [REFUSAL_WAIT_S * 2**i for i in range(REFUSAL_TRIES)]
    statuses = {r["status"] for r in report_rows(ledger).values()}
    assert statuses == {"created", "pending"}
    assert_each_created_once(emu, ledger)


def test_an_unknown_division_id_fails_that_row_before_its_create(
    emulator: Any, make_ledger: Any
) -> None:
    emu = emulator()
    ledger = make_ledger(
        HEADER
        + "Ada,Lovelace,ada@example.com,,3f2504e0-4f89-11d3-9a0c-0305e82c3301,,\n"
        + "Grace,Hopper,grace@example.com,,,,\n"
    )
    result = run_against(emu, ledger)
    assert result.exit_code == 1
    rows = report_rows(ledger)
    assert rows["grace@example.com"]["status"] == "created"
    ada = rows["ada@example.com"]
    assert ada["status"] == "failed" and ada["code"] == "unknown_name"
    assert (
        "division '3f2504e0-4f89-11d3-9a0c-0305e82c3301': no division has this id" in (ada["error"])
    )
    assert ada["attempts"] == 0
    assert emu.stats()["requests_by_route"]["POST /api/v2/users"] == 1  # Grace's only


# -- through the command line ---------------------------------------------------------------


def cli_run(db: Path, env: dict[str, str], *args: str) -> Any:
    base = {
        "GENESYS_CLOUD_CLIENT_ID": None,
        "GENESYS_CLOUD_CLIENT_SECRET": None,
        "GENESYS_CLOUD_ENVIRONMENT": None,
    }
    return CliRunner().invoke(
        cli,
        ["--db", str(db), "--log-format", "json", "run", "--no-progress", *args],
        env={**base, **env},
    )


def all_pending_untouched(ledger: Ledger) -> bool:
    return all(
        r["status"] == "pending" and r["attempts"] == 0 for r in report_rows(ledger).values()
    )


def test_wrong_credentials_leave_every_row_pending(
    emulator: Any, make_ledger: Any, tmp_path: Path
) -> None:
    emu = emulator()
    ledger = make_ledger(people(5))
    result = cli_run(ledger.path, env_for(emu, secret="wrong"))
    assert result.exit_code == 3
    assert "refused the OAuth client (invalid_client)" in result.output
    assert "GENESYS_CLOUD_CLIENT_SECRET" in result.output
    assert all_pending_untouched(ledger)
    assert emu.stats()["requests_by_route"].get("POST /api/v2/users", 0) == 0


def test_unreachable_host_is_a_config_error(make_ledger: Any) -> None:
    ledger = make_ledger(people(3))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli_run(
        ledger.path,
        {
            "GENESYS_CLOUD_CLIENT_ID": "x",
            "GENESYS_CLOUD_CLIENT_SECRET": "y",
            "GENESYS_CLOUD_ENVIRONMENT": f"http://127.0.0.1:{port}",
        },
    )
    assert result.exit_code == 3
    assert "cannot reach" in result.output and "GENESYS_CLOUD_ENVIRONMENT" in result.output
    assert all_pending_untouched(ledger)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GENESYS_CLOUD_CLIENT_ID": "x"}, "GENESYS_CLOUD_CLIENT_SECRET not set"),
        (
            {
                "GENESYS_CLOUD_CLIENT_ID": "x",
                "GENESYS_CLOUD_CLIENT_SECRET": "y",
                "GENESYS_CLOUD_ENVIRONMENT": "http://api.example.com",
            },
            "plain http is allowed only",
        ),
    ],
)
def test_configuration_refusals_send_nothing(
    make_ledger: Any, env: dict[str, str], message: str
) -> None:
    ledger = make_ledger(people(2))
    result = cli_run(ledger.path, env)
    assert result.exit_code == 3
    assert message in result.output
    assert all_pending_untouched(ledger)


def test_secrets_never_reach_output_logs_or_ledger(
    emulator: Any, make_ledger: Any, tmp_path: Path
) -> None:
    emu = emulator(drop_after_create_rate=0.2, fault_5xx_rate=0.1, seed=9)
    ledger = make_ledger(people(10))
    result = CliRunner().invoke(
        cli,
        [
            "--db",
            str(ledger.path),
            "--log-level",
            "debug",
            "--log-format",
            "json",
            "run",
            "--no-progress",
        ],
        env=env_for(emu),
    )
    assert result.exit_code == 0, result.output
    tokens = list(emu.tokens._expiry)  # noqa: SLF001 - the live bearer token(s)
    assert tokens
    ledger.close()
    blobs = [
        result.output,
        *(p.read_bytes().decode("latin-1") for p in ledger.path.parent.iterdir() if p.is_file()),
    ]
    for blob in blobs:
        assert SECRET not in blob
        for token in tokens:
            assert token not in blob


# -- real processes: signals, kill -9, two runners -------------------------------------------


def spawn_run(db: Path, emu: Emulator, *extra: str) -> subprocess.Popen[str]:
    return spawn(db, emu, "run", "--no-progress", *extra)


def db_rows(db: Path) -> dict[str, tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return {
            r[0]: r[1:] for r in conn.execute("SELECT email, status, user_id, in_doubt FROM rows")
        }
    finally:
        conn.close()


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_the_rerun_finishes(emulator: Any, make_ledger: Any) -> None:
    emu = emulator(latency_ms=100)
    ledger = make_ledger(people(200))
    db = ledger.path
    ledger.close()
    proc = spawn_run(db, emu)
    wait_for_event(proc, "row.created")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err[-2000:]
    assert time.monotonic() - started < 8
    assert "Traceback" not in err
    assert "interrupted" in err
    statuses = [r[0] for r in db_rows(db).values()]
    assert "in_progress" not in statuses
    assert 0 < statuses.count("created") < 200
    again = spawn_run(db, emu)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err[-2000:]
    with Ledger.open(db) as reopened:
        assert_each_created_once(emu, reopened)
        assert reopened.counts()["created"] == 200


@pytest.mark.slow
def test_a_signal_during_start_up_exits_interrupted(emulator: Any, make_ledger: Any) -> None:
    emu = emulator()
    ledger = make_ledger(people(5))
    db = ledger.path
    proc = spawn_run(db, emu)
    # `run.start` is logged before the token request, which imports the SDK (~2 s): the
    # signal lands during start-up, whatever the machine's load.
    wait_for_event(proc, "run.start")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "interrupted" in err
    assert {r[0] for r in db_rows(db).values()} == {"pending"}


@pytest.mark.slow
def test_a_second_runner_refuses_naming_the_first(emulator: Any, make_ledger: Any) -> None:
    emu = emulator(latency_ms=200)
    ledger = make_ledger(people(100))
    db = ledger.path
    first = spawn_run(db, emu)
    try:
        wait_for_event(first, "row.created")
        result = cli_run(db, env_for(emu))
        assert result.exit_code == 4
        assert (
            f"pid {first.pid}" in result.output
            and "another jobrunner command" in result.output
            and "`jobrunner run`" in result.output
        )
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)


@pytest.mark.slow
def test_kill_9_loop_creates_every_user_exactly_once(emulator: Any, make_ledger: Any) -> None:
    """Start, SIGKILL at a random moment mid-flight, repeat; then a final run."""
    n = 400
    existing = {f"k9-{i}@example.com" for i in range(0, n, 40)}  # people already in the org
    emu = emulator(
        latency_ms=40,
        latency_jitter_ms=30,
        drop_after_create_rate=0.05,
        fault_5xx_rate=0.05,
        seed=11,
        existing_users=[{"name": "Someone Else", "email": e} for e in existing],
    )
    ledger = make_ledger(people(n, prefix="k9-"))
    db = ledger.path
    ledger.close()
    rng = random.Random(1234)
    kills = left_in_flight = left_in_doubt = 0
    for _ in range(6):
        proc = spawn_run(db, emu, "--max-attempts", "50")
        try:
            wait_for_event(proc, "row.created")  # past the SDK import and the token
        except AssertionError:
            proc.kill()
            break
        time.sleep(rng.uniform(0.05, 1.2))
        if proc.poll() is not None:
            break  # it finished before we could kill it
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        kills += 1
        left = [r for r in db_rows(db).values() if r[0] == "in_progress"]
        left_in_flight += len(left)
        left_in_doubt += sum(1 for r in left if r[2])
    assert kills >= 3
    assert left_in_flight > 0 and left_in_doubt > 0  # the kills really hit requests in flight
    final = spawn_run(db, emu, "--max-attempts", "50")
    out, err = final.communicate(timeout=120)
    assert final.returncode == 0, err[-3000:]
    rows = db_rows(db)
    assert len(rows) == n
    ids = emulator_ids(emu)
    creations = emu.stats()["creations_by_email"]
    for email, (status, user_id, _in_doubt) in rows.items():
        assert status == ("exists" if email in existing else "created"), (email, status)
        assert creations.get(email, 0) == (0 if email in existing else 1), email
        assert user_id == ids[email], email
    assert len(emu.users()) == n


def test_demo_runs_the_whole_job_in_its_own_ledger(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "--db",
            str(tmp_path / "mine.db"),
            "demo",
            "--keep",
            str(tmp_path / "demo"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "created 187 | exists 6 | failed 0 | pending 0 | invalid 7" in result.output
    assert "steps: done 1,148 | failed 0 | still open 0" in result.output
    assert "0 created more than once" in result.output
    # What the emulator recorded matches what the file asks for (see examples/users.csv).
    assert (
        "it recorded for them: 400 role grants, 374 queue memberships, 561 skills, "
        "185 managers, 187 locations" in result.output
    )
    assert (tmp_path / "demo" / "demo.db").exists()
    assert not (tmp_path / "mine.db").exists()  # never the user's ledger


def test_demo_removes_its_temporary_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(cli, ["demo", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "removed at the end" in result.output
    assert list(tmp_path.iterdir()) == []


def test_search_falls_back_to_email_only_when_the_state_criterion_is_refused(
    emulator: Any,
) -> None:
    emu = emulator(existing_users=[{"name": "Pat Lee", "email": "pat@example.com"}])
    client = GenesysClient(settings_for(emu), pool_size=2, read_timeout=5)
    client.authenticate()
    real_search = client.users.post_users_search
    seen: list[int] = []

    def picky(request: Any) -> Any:  # a gateway that only knows the email criterion
        seen.append(len(request.query))
        if len(request.query) > 1:
            from PureCloudPlatformClientV2.rest import ApiException

            raise ApiException(status=400, reason="Bad Request")
        return real_search(request)

    client.users.post_users_search = picky
    found = client.find_user_by_email("PAT@example.com")
    assert found is not None and found.name == "Pat Lee"
    assert client.find_user_by_email("nobody@example.com") is None
    assert seen == [2, 1, 1]  # refused once, then email-only from then on
