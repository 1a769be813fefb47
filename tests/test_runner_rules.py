"""Mistakes that once passed the whole suite, each pinned by a fast test that fails with it:
claims owned by their runner, the doubt committed before a create goes out, Retry-After
reaching the limiter, claims given back when a request hangs past the grace period, waits
that say so (a 429's and a full window's), and duplicates far apart in a big file."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import deque
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fakes import FakeClient
from structlog.testing import capture_logs

import jobrunner.caller as caller_module
import jobrunner.scheduler as scheduler_module
from jobrunner import log
from jobrunner.cli import cli
from jobrunner.genesys import ApiError
from jobrunner.ingest import ingest_file
from jobrunner.ledger import Ledger
from jobrunner.limiter import WindowLimiter
from jobrunner.runner import RetryPolicy, Runner

HEADER = "first_name,last_name,email,phone_number,division_id,title,department\n"


@pytest.fixture
def ledger(tmp_path: Path) -> Any:
    f = tmp_path / "u.csv"
    f.write_text(HEADER + "Ada,Lovelace,ada@example.com,,,,\nGrace,Hopper,grace@example.com,,,,\n")
    ledger = Ledger.open(tmp_path / "l.db")
    ingest_file(ledger, f)
    yield ledger
    ledger.close()


def row(ledger: Ledger, email: str) -> dict[str, Any]:
    cur = ledger.execute(
        "SELECT status, attempts, in_doubt, claim_owner, user_id FROM rows WHERE email = ?",
        (email,),
    )
    keys = ("status", "attempts", "in_doubt", "owner", "user_id")
    return dict(zip(keys, cur.fetchone(), strict=True))


def test_only_the_runner_holding_a_claim_may_write_it(ledger: Ledger) -> None:
    claimed = ledger.claim_next("runner-a", now=1e12)
    assert claimed is not None
    before = row(ledger, claimed.email)
    assert not ledger.mark_attempt(claimed.id, "runner-b")
    assert not ledger.finish(claimed.id, "runner-b", "created", user_id="x")
    assert not ledger.release(claimed.id, "runner-b", next_attempt_at=0, in_doubt=0)
    assert not ledger.mark_restoring(claimed.id, "runner-b", "deleted-user")
    assert row(ledger, claimed.email) == before
    assert ledger.mark_attempt(claimed.id, "runner-a")
    assert ledger.finish(claimed.id, "runner-a", "created", user_id="x")


def test_only_the_runner_holding_a_step_may_write_it(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("name,email,roles_divisions\nAda,ada@example.com,Agent\n")
    with Ledger.open(tmp_path / "l.db") as ledger:
        ingest_file(ledger, f)
        ledger.execute("UPDATE rows SET status = 'created', user_id = 'u'")
        ledger.execute("UPDATE steps SET status = 'pending'")
        (claim,) = ledger.claim_steps("roles", "runner-a", now=1e12)
        assert ledger.finish_steps([claim], "runner-b", "done") == 0
        assert ledger.release_steps([claim], "runner-b", next_attempt_at=0) == 0
        assert ledger.execute("SELECT status FROM steps").fetchone() == ("in_progress",)
        assert ledger.finish_steps([claim], "runner-a", "done") == 1


def test_the_doubt_is_committed_before_the_create_is_sent(ledger: Ledger) -> None:
    """What a kill -9 during the request would leave: the row must already be in doubt."""
    seen: list[tuple[int, int]] = []
    client = FakeClient()
    original = client.create_user

    def create_user(new: Any) -> Any:
        other = sqlite3.connect(ledger.path)  # what another process (the next run) would read
        seen.append(
            other.execute(
                "SELECT in_doubt, attempts FROM rows WHERE email = ?", (new.email,)
            ).fetchone()
        )
        other.close()
        return original(new)

    client.create_user = create_user  # type: ignore[method-assign]
    Runner(ledger, client, concurrency=1).run()
    assert seen == [(1, 1), (1, 1)]


class RecordingLimiter(WindowLimiter):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, float | None]] = []

    def answered(self, status: int, retry_after: float | None = None) -> None:
        self.seen.append((status, retry_after))
        super().answered(status, retry_after)


def test_retry_after_of_a_create_reaches_the_limiter(ledger: Ledger) -> None:
    client = FakeClient()
    limited = ApiError(429, "too.many.requests.retry.after", "slow down", retry_after=0.3)
    client.create_script["ada@example.com"] = deque([limited])
    limiter = RecordingLimiter()
    result = Runner(ledger, client, concurrency=1, limiter=limiter).run()
    assert result.exit_code == 0
    assert (429, 0.3) in limiter.seen
    assert row(ledger, "ada@example.com")["attempts"] == 1  # the 429 used no attempt


def test_a_request_hanging_past_the_grace_period_gives_its_claim_back(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "GRACE_S", 0.2)
    client = FakeClient()
    sent = threading.Event()
    hang = threading.Event()
    original = client.create_user

    def create_user(new: Any) -> Any:
        sent.set()
        hang.wait(10)
        return original(new)

    client.create_user = create_user  # type: ignore[method-assign]
    runner = Runner(ledger, client, concurrency=1)

    def stop_when_sent() -> None:
        sent.wait(10)
        runner.ctx.stop.set()

    threading.Thread(target=stop_when_sent).start()
    runner.run()
    hang.set()
    ada = row(ledger, "ada@example.com")
    assert (ada["status"], ada["owner"], ada["in_doubt"]) == ("pending", None, 1)


def test_a_long_wait_of_every_worker_is_said_when_it_starts_and_while_it_lasts(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler_module, "WAIT_SAY_S", 0.5)
    monkeypatch.setattr(scheduler_module, "WAIT_SAY_EVERY_S", 0.5)
    client = FakeClient()
    limited = ApiError(429, "too.many.requests.retry.after", "slow down", retry_after=2.2)
    client.create_script["ada@example.com"] = deque([limited])
    log.configure(level="info")
    with capture_logs() as logs:
        assert Runner(ledger, client, concurrency=1).run().exit_code == 0
    waits = [e for e in logs if e["event"] == "waiting"]
    assert len(waits) >= 2 and all(e["log_level"] == "info" for e in waits)
    assert waits[0]["seconds_left"] > waits[-1]["seconds_left"] > 0
    assert "rate limited" in waits[0]["reason"]
    assert any(e["event"] == "waiting.over" for e in logs)


def test_a_full_window_that_keeps_every_worker_waiting_is_said(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the limit the workers wait inside the limiter for room in the window, not for a
    429: said the same way (it was silent: ~49 s of every minute at 300/min looked hung)."""
    monkeypatch.setattr(scheduler_module, "WAIT_SAY_S", 0.5)
    monkeypatch.setattr(scheduler_module, "WAIT_SAY_EVERY_S", 0.5)
    limiter = WindowLimiter(probe=False)
    limiter.budget, limiter.window_s = 1, 2.2  # as if learned from a 429: 1 per 2.2 s
    log.configure(level="info")
    with capture_logs() as logs:
        assert Runner(ledger, FakeClient(), concurrency=1, limiter=limiter).run().exit_code == 0
    waits = [e for e in logs if e["event"] == "waiting"]
    assert len(waits) >= 2, [e["event"] for e in logs]
    assert all(e["reason"] == caller_module.WINDOW_FULL for e in waits)
    assert waits[0]["seconds_left"] > waits[-1]["seconds_left"] > 0
    assert any(e["event"] == "waiting.over" for e in logs)


def test_a_duplicate_far_apart_in_a_big_file_is_one_invalid_row(tmp_path: Path) -> None:
    """Line 702 repeats line 5: more than one ingest batch apart."""
    lines = [f"P,{i},p{i}@example.com,,,," for i in range(900)]
    lines[700] = "Dup,Licate,P3@example.com,,,,"
    f = tmp_path / "big.csv"
    f.write_text(HEADER + "\n".join(lines) + "\n")
    db = tmp_path / "l.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "--log-level", "error", "ingest", str(f)])
    assert result.exit_code == 0, result.output
    assert "added:            899 to create" in result.output
    assert "duplicate" in result.output and "line 702: duplicate of line 5" in result.output
    report = CliRunner().invoke(cli, ["--db", str(db), "report", "--format", "json"])
    counts = json.loads(report.output)["counts"]
    assert (counts["pending"], counts["invalid"]) == (899, 1)


def test_retry_policy_keeps_its_bounds() -> None:
    policy = RetryPolicy(base_delay_s=1, max_delay_s=60)
    assert [policy.delay(n, lambda: 1.0) for n in (1, 4, 20)] == [1, 8, 60]
