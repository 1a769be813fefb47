"""The real API's dialect: phones read back in four shapes, version conflicts as 409 or 400, a
lagging search index, the Employee role, queue batches refused either way, and a ledger
bound to its org. Against the emulator answering as Genesys does, through the real SDK."""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from emulated import finish, kill_9_during
from test_onboarding import RUN_ARGS, emulator, expected, held, team
from test_second_hour import api_writes, ingest, jobrunner

from jobrunner.emulator.server import Emulator

__all__ = ["emulator"]  # a pytest fixture used by name
RUN = ("run", "--no-progress", "--max-attempts", "30")


def rows(db: Path) -> dict[str, dict[str, Any]]:
    report = jobrunner(db, None, "report", "--format", "json")
    return {r["email"]: r for r in json.loads(report.output)["rows"]}


def test_a_dropped_create_with_a_phone_and_an_extension_ends_created_by_look_up(
    emulator: Any, tmp_path: Path
) -> None:
    """Genesys gives the number back only in `display` when it has an extension: the
    look-up after the lost answer must still know its own user."""
    people = team(12, leads=2, seed=31)
    for i, person in enumerate(people):
        person["phone_work"] = f"+1317555{1000 + i}"
    emu = emulator(drop_after_create_rate=0.5, seed=4)
    assert emu.config.phone_shapes  # the default: as Genesys reads phones back
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    final = jobrunner(db, emu, *RUN)
    assert final.exit_code == 0, final.output
    got = rows(db)
    for person in people:
        row = got[person["email"]]
        assert row["status"] == "created", (person["email"], row)
        assert set(s["status"] for s in row["steps"].values()) == {"done"}
        assert held(emu, person["email"]) == expected(person)
    assert set(emu.stats()["creations_by_email"].values()) == {1}
    assert any(r["settled_by"] == "lookup" for r in got.values())


def test_a_person_brought_in_line_twice_is_sent_no_phone_the_second_time(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(4, leads=1, seed=32)
    there = people[0]
    emu = emulator()
    emu.directory.add_existing(
        {
            "name": there["name"],
            "email": there["email"],
            "addresses": [
                {"address": "+13175550100", "mediaType": "PHONE", "type": "WORK"},
            ],
        }
    )
    there["phone_work"] = "+13175550100"  # the number they have, and an extension more
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    assert jobrunner(db, emu, *RUN, "--update-existing").exit_code == 0
    first = rows(db)[there["email"]]["changes"] or ""
    assert "profile: set" in first and "phone" in first  # the extension was new
    # A second correction (a new title) brings them in line again: the phone, read back
    # with its number only in the display now, is not sent again.
    there["title"] = "Team Coach"
    ingest(tmp_path, db, "again.csv", people)
    assert jobrunner(db, emu, *RUN, "--update-existing").exit_code == 0
    again = rows(db)[there["email"]]["changes"] or ""
    assert "profile: set title" in again and "phone" not in again, again


@pytest.mark.parametrize("answer", ["404-batch", "400-batch"])
def test_the_queue_batch_finds_a_bad_member_whichever_way_the_api_refuses(
    emulator: Any, tmp_path: Path, answer: str
) -> None:
    people = team(10, leads=1, seed=33)
    for person in people:
        person["queues"] = "Billing"
    emu = emulator(queue_unknown_member=answer, fresh_user_404_s=0.0)
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    # The queue step needs a permission the first run lacks: everyone is created first.
    emu.config.refused_permissions = {"routing:queue:edit"}
    jobrunner(db, emu, *RUN)
    gone = people[3]["email"]
    user_id = next(u["id"] for u in emu.users() if u["email"] == gone)
    emu.directory.delete(user_id)  # one member the queue service will not know
    with sqlite3.connect(db) as conn:  # and nobody is fresh from their create any more
        conn.execute("UPDATE rows SET settled_at = settled_at - 3600")
    emu.config.refused_permissions = set()
    jobrunner(db, emu, *RUN)
    got = rows(db)
    assert got[gone]["steps"]["queues"]["status"] == "failed"
    for person in people:
        if person["email"] != gone:
            assert got[person["email"]]["steps"]["queues"]["status"] == "done", person["email"]
            assert "Billing" in held(emu, person["email"])["queues"]


def test_an_api_that_skips_new_ids_in_a_batch_still_gets_every_grant_and_member(
    emulator: Any, tmp_path: Path
) -> None:
    # Genesys does not say what a role or queue batch answers for an id it does not know
    # yet. Where it grants the others and skips that one with a success, every person must
    # still end with what the file says.
    people = team(24, leads=2, seed=35)
    emu = emulator(
        role_batch_unknown_subject="skip",
        queue_unknown_member="skip",
        fresh_user_404_s=5.0,
        latency_ms=20,
        latency_jitter_ms=10,
        seed=35,
    )
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    result = jobrunner(db, emu, *RUN)
    assert result.exit_code == 0, result.output
    for person in people:
        want, got = expected(person), held(emu, person["email"])
        assert (got["grants"], got["queues"]) == (want["grants"], want["queues"]), person["email"]
    assert set(emu.stats()["creations_by_email"].values()) == {1}
    # Sent again while the ids were new, as often as it took: only the send that did it
    # counts as an attempt.
    with sqlite3.connect(db) as conn:
        tries = dict(
            conn.execute(
                "SELECT kind, max(attempts) FROM steps WHERE kind IN ('roles', 'queue')"
                " GROUP BY kind"
            )
        )
    assert tries == {"roles": 1, "queue": 1}


def test_rollback_and_recreate_under_a_lagging_search_settle_every_row(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(8, leads=1, seed=34)
    gone = people[:2]  # deleted before the job: --restore-deleted restores them
    emu = emulator(search_index_delay_s=3.0, search_index_lags_changes=True)
    for person in gone:
        emu.directory.add_existing(
            {"name": person["name"], "email": person["email"], "state": "deleted"}
        )
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    time.sleep(3.2)  # the pre-existing users are in the index
    first = jobrunner(db, emu, *RUN, "--restore-deleted")
    assert first.exit_code == 0, first.output
    assert {rows(db)[p["email"]]["settled_by"] for p in gone} == {"restore"}
    rolled = jobrunner(db, emu, "rollback", "--yes", "--no-progress", "--include-restored")
    assert rolled.exit_code == 0, rolled.output
    # Right away, while the search still shows the users as they were before the deletes.
    back = jobrunner(db, emu, *RUN, "--recreate-rolled-back")
    assert back.exit_code == 0, back.output
    got = rows(db)
    assert {r["status"] for r in got.values()} == {"created"}
    assert set(emu.stats()["creations_by_email"].values()) == {1}
    for person in people:
        assert emu.stats()["onboarding"][person["email"]]["state"] == "active"
        assert held(emu, person["email"]) == expected(person), person["email"]


def test_a_ledger_refuses_another_org_before_any_write(emulator: Any, tmp_path: Path) -> None:
    people = team(4, leads=1, seed=35)
    sandbox = emulator(org_name="Sandbox", seed=1)
    production = emulator(org_name="Production", seed=2)
    assert sandbox.config.org_id != production.config.org_id
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    assert jobrunner(db, sandbox, *RUN).exit_code == 0
    report = jobrunner(db, None, "report")
    assert f"org: Sandbox ({sandbox.config.org_id})" in report.output
    # More people for the same ledger, and .env pointed at production by mistake.
    more = team(3, leads=1, seed=36, prefix="more")
    ingest(tmp_path, db, "more.csv", more)
    for command in (RUN, ("check",), ("rollback", "--yes", "--no-progress")):
        before = api_writes(production)
        refused = jobrunner(db, production, *command)
        assert refused.exit_code == 3, refused.output
        assert "'Sandbox'" in refused.output and "'Production'" in refused.output
        assert "new ledger" in refused.output
        assert api_writes(production) == before
    assert not production.stats()["creations_by_email"]


@pytest.mark.slow
def test_kill_9_onboarding_with_moving_versions_ends_with_every_step_done(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(60, leads=3, seed=36)
    emu: Emulator = emulator(
        latency_ms=20,
        latency_jitter_ms=20,
        fault_5xx_rate=0.03,
        new_user_version_churn_s=4.0,
        expand_drop_rate=0.1,
        search_index_delay_s=1.0,
        search_index_lags_changes=True,
        seed=17,
    )
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    rng = random.Random(5)
    kills = kill_9_during(db, emu, RUN_ARGS, (rng.uniform(0.1, 0.7) for _ in range(5)))
    assert kills >= 2
    finish(db, emu, *RUN_ARGS, timeout=240)
    conn = sqlite3.connect(db)
    try:
        statuses = Counter(s for (s,) in conn.execute("SELECT status FROM steps"))
    finally:
        conn.close()
    assert set(statuses) == {"done"}
    assert set(emu.stats()["creations_by_email"].values()) == {1}
    for person in people:
        assert held(emu, person["email"]) == expected(person), person["email"]
