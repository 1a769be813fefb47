"""The second hour: the admin fixes the file and runs again. A corrected file reaches people
the job created, failures the org fixed heal with no flag, `check` tells the whole plan, and
reports of a manager whose own row is invalid wait for it. Against the emulator through the
real SDK, through the command line as an admin types it."""

from __future__ import annotations

import copy
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from emulated import finish, kill_9_during
from test_existing_people import WRITES
from test_onboarding import (  # the same fixtures and helpers
    SKILLS,
    admin_file,
    emulator,
    env_for,
    expected,
    held,
    team,
)

from jobrunner.cli import cli
from jobrunner.emulator.server import Emulator

__all__ = ["emulator"]  # a pytest fixture used by name
RUN = ("run", "--no-progress", "--max-attempts", "20")


def api_writes(emu: Emulator) -> int:
    """Requests that could change the org (a search and a token change nothing)."""
    return sum(
        n
        for route, n in emu.stats()["requests_by_route"].items()
        if route.split()[0] in WRITES and "/users/search" not in route and "oauth" not in route
    )


def jobrunner(db: Path, emu: Emulator | None, *args: str) -> Result:
    env = env_for(emu) if emu is not None else {}
    return CliRunner().invoke(cli, ["--db", str(db), "--log-level", "error", *args], env=env)


def ingest(tmp_path: Path, db: Path, name: str, people: list[dict[str, str]]) -> Result:
    f = tmp_path / name
    f.write_text(admin_file(people), encoding="utf-8")
    result = jobrunner(db, None, "ingest", str(f))
    assert result.exit_code == 0, result.output
    return result


def corrected(people: list[dict[str, str]], who: range) -> list[dict[str, str]]:
    """The same file with, for the people at `who`: a queue, a role and a skill more, and
    the other team lead as their manager."""
    fixed = copy.deepcopy(people)
    leads = [p["email"] for p in fixed if p["name"].startswith("Lead")]
    for i in who:
        person = fixed[i]
        queues = [q.strip() for q in person["queues"].split(",")]
        person["queues"] = ", ".join([*queues, "Spanish Line"])
        person["roles_divisions"] += ", Quality Evaluator"
        had = {s.split(":")[0].strip() for s in person["skills"].split(",")}
        person["skills"] += f", {next(s for s in SKILLS if s not in had)}:4"
        person["email_manager"] = next(e for e in leads if e != person["email_manager"])
    return fixed


def test_a_corrected_file_reaches_the_people_the_job_created_and_nothing_else(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(12, leads=2, seed=21)
    emu = emulator()
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "first.csv", people)
    assert jobrunner(db, emu, *RUN).exit_code == 0
    before = {p["email"]: held(emu, p["email"]) for p in people}
    fixed = corrected(people, range(3))
    again = ingest(tmp_path, db, "fixed.csv", fixed)
    assert "to update:        3 people this job created: the next `jobrunner run`" in again.output
    assert "already present:  9" in again.output
    run = jobrunner(db, emu, *RUN)
    assert run.exit_code == 0, run.output
    assert "this run: 0 people settled" in run.output
    for i, person in enumerate(fixed):
        now = held(emu, person["email"])
        if i < 3:
            assert now == expected(person), person["email"]
            # Nothing removed: what they held is still theirs.
            old = before[person["email"]]
            assert set(map(tuple, old["grants"])) <= set(map(tuple, now["grants"]))
            assert set(old["queues"]) <= set(now["queues"])
        else:
            assert now == before[person["email"]], person["email"]
    report = jobrunner(db, None, "report", "--format", "json")
    rows = {r["email"]: r for r in json.loads(report.output)["rows"]}
    changes = rows[fixed[0]["email"]]["changes"]
    assert "queues: added to Spanish Line" in changes  # as the org spells it
    assert "roles: added Quality Evaluator" in changes and "profile: set manager" in changes
    assert rows[fixed[5]["email"]]["changes"] is None  # not changed: nothing to say
    # A second run has nothing to send.
    sent = api_writes(emu)
    rerun = jobrunner(db, emu, *RUN)
    assert rerun.exit_code == 0 and api_writes(emu) == sent
    assert (
        "API calls: none" in rerun.output or "this run: 0 people settled, 0 steps" in rerun.output
    )


@pytest.mark.slow
def test_kill_9_during_the_converging_run_sends_nothing_twice_and_loses_nothing(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(30, leads=3, seed=22)
    emu = emulator(latency_ms=30, latency_jitter_ms=20, seed=5)
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "first.csv", people)
    assert jobrunner(db, emu, *RUN).exit_code == 0
    fixed = corrected(people, range(20))
    ingest(tmp_path, db, "fixed.csv", fixed)
    kills = kill_9_during(db, emu, RUN, (0.3, 0.6, 0.2, 0.9, 0.4))
    assert kills >= 2
    finish(db, emu, *RUN)
    for person in fixed:
        assert held(emu, person["email"]) == expected(person), person["email"]
    assert set(emu.stats()["creations_by_email"].values()) == {1}
    conn = sqlite3.connect(db)
    try:
        assert {s for (s,) in conn.execute("SELECT status FROM steps")} == {"done"}
    finally:
        conn.close()


def test_a_name_made_in_the_org_revives_its_rows_with_no_flag(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(10, leads=2, seed=23)
    for person in people[:4]:
        person["queues"] = "Night Shift, Billing"
    emu = emulator()
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "first.csv", people)
    first = jobrunner(db, emu, *RUN)
    assert first.exit_code == 1 and "failed 4" in first.output
    # The admin makes the queue in the org; `check` finds it and revives the rows.
    emu.directory.load_org({"queues": [{"name": "Night Shift"}]}, seed=3)
    checked = jobrunner(db, emu, "check")
    assert checked.exit_code == 0, checked.output
    assert re.search(r"revived: +4 rows, 0 steps", checked.output), checked.output
    assert "users to create:             4" in checked.output
    second = jobrunner(db, emu, *RUN)
    assert second.exit_code == 0, second.output
    for person in people[:4]:
        assert "Night Shift" in held(emu, person["email"])["queues"]


def test_reports_of_a_manager_whose_own_row_is_invalid_wait_for_it(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(8, leads=1, seed=24)
    lead = people[-1]
    lead["phone_work"] = "555-01"  # invalid: the lead's row is refused at ingest
    emu = emulator()
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "first.csv", people)
    checked = jobrunner(db, emu, "check")
    assert "7 reports wait for their manager agent-lead0@example.com" in checked.output
    assert "their own row, line 9 of first.csv, is invalid: phone_number '555-01'" in (
        checked.output
    )
    run = jobrunner(db, emu, *RUN)
    assert run.exit_code == 1, run.output  # their profiles wait: not done
    report = jobrunner(db, None, "report", "--format", "json")
    rows = {r["email"]: r for r in json.loads(report.output)["rows"]}
    for person in people[:-1]:
        row = rows[person["email"]]
        assert row["status"] == "created"
        assert row["steps"]["profile"]["status"] == "waiting"
        assert "their own row, line 9 of first.csv, is invalid" in row["steps"]["profile"]["error"]
        assert "not a person of this file" not in json.dumps(row)
    table = jobrunner(db, None, "report").output  # the table lists them, with why
    for person in people[:-1]:
        email = re.escape(person["email"])
        assert re.search(rf"created +{email} +user \S+; profile waiting", table)
    # The lead's row fixed: the lead is created, and the reports' managers are set.
    lead["phone_work"] = "+13175550100"
    ingest(tmp_path, db, "fixed.csv", people)
    assert jobrunner(db, emu, *RUN).exit_code == 0
    for person in people[:-1]:
        assert held(emu, person["email"])["manager"] == lead["email"]


def test_check_tells_the_whole_plan_and_sends_no_write(emulator: Any, tmp_path: Path) -> None:
    people = team(14, leads=2, seed=25)
    emu = emulator()
    # Two people were there before the job, one was deleted.
    there, gone = people[:2], people[2]
    for person in there:
        emu.directory.add_existing({"name": person["name"], "email": person["email"]})
    emu.directory.add_existing({"name": gone["name"], "email": gone["email"], "state": "deleted"})
    db = tmp_path / "l.db"
    first = [{**p, "email_manager": "maria.gonzalez@example.com"} for p in people[3:6]]
    ingest(tmp_path, db, "first.csv", first)  # three the job creates first
    assert jobrunner(db, emu, *RUN).exit_code == 0
    fixed = corrected(people, range(3, 5))  # two of them change
    fixed[13]["phone_work"] = "555-01"  # a team lead's own row is invalid
    waiting = sum(1 for p in fixed if p["email_manager"] == fixed[13]["email"])
    ingest(tmp_path, db, "all.csv", fixed)
    sent = api_writes(emu)
    calls = emu.stats()["requests_total"]
    checked = jobrunner(db, emu, "check")
    assert "reads only" in checked.output
    assert checked.exit_code == 0, checked.output
    out = checked.output
    assert api_writes(emu) == sent  # reads only
    assert "2 people of the file are in the org already (there before the job)" in out
    assert "1 person of the file is deleted users: left as they are" in out
    # Two corrected, and one whose manager differs from the first file's.
    assert "3 people this job created have other values in the file now" in out
    assert "queues: added to Spanish Line" in out and "roles: added Quality Evaluator" in out
    assert re.search(r"users to create: +7\n", out)  # 14 - 3 there - 3 created - 1 invalid
    assert f"{waiting} reports wait for their manager {fixed[13]['email']}" in out
    assert "line 15 of all.csv, is invalid: phone_number '555-01'" in out
    assert emu.stats()["requests_total"] > calls  # it read the org
    searches = emu.stats()["requests_by_route"].get("POST /api/v2/users/search", 0)
    assert searches < 8  # one search for many people, not one each


def test_check_says_a_new_manager_of_the_file_is_set_once_the_run_creates_them(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(6, leads=1, seed=26)
    emu = emulator()
    db = tmp_path / "l.db"
    first = [{**p, "email_manager": "maria.gonzalez@example.com"} for p in people[:2]]
    ingest(tmp_path, db, "first.csv", first)  # two the job creates first
    assert jobrunner(db, emu, *RUN).exit_code == 0
    # The whole file: the two now report to the team lead, a new row (line 7) not yet made.
    lead = people[-1]["email"]
    ingest(tmp_path, db, "all.csv", people)
    checked = jobrunner(db, emu, "check")
    assert checked.exit_code == 0, checked.output
    said = f"profile: manager {lead} set once the run creates them (line 7 of all.csv)"
    assert checked.output.count(said) == 2, checked.output
    assert "has no user" not in checked.output
    assert jobrunner(db, emu, *RUN).exit_code == 0
    for person in people[:-1]:
        assert held(emu, person["email"])["manager"] == lead


def test_rollback_names_the_people_left_with_a_deleted_manager_and_clears_it_on_request(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(6, leads=1, seed=26)
    lead = people[-1]
    emu = emulator()
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "first.csv", people)
    assert jobrunner(db, emu, *RUN).exit_code == 0
    assert all(held(emu, p["email"])["manager"] == lead["email"] for p in people[:-1])
    # The path the file was ingested with, as the admin typed it.
    asked = jobrunner(db, emu, "rollback", "--source", "./first.csv", "--email", lead["email"])
    assert asked.exit_code == 1 and "nothing deleted" in asked.output
    assert "1 users this ledger created will be deleted" in asked.output
    assert "5 people outside the rollback report to someone it deletes" in asked.output
    assert f"first.csv:2 {people[0]['email']} (manager {lead['email']})" in asked.output
    done = jobrunner(
        db, emu, "rollback", "--email", lead["email"], "--clear-managers", "--yes", "--no-progress"
    )
    assert done.exit_code == 0, done.output
    for person in people[:-1]:
        assert held(emu, person["email"])["manager"] is None, person["email"]
    assert emu.stats()["onboarding"][lead["email"]]["state"] == "deleted"


def said_for(output: str, email: str) -> str:
    """What `check` says `run --update-existing` would change for this person."""
    found = re.search(rf"^  \S+ +{re.escape(email)}: (.*)$", output, re.MULTILINE)
    assert found, output
    return found.group(1)


def test_check_says_what_update_existing_does_before_and_after_a_plain_run(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(5, leads=1, seed=27)
    there = people[:2]  # in Home with nothing: the file moves them to Support
    emu = emulator()
    for person in there:
        emu.directory.add_existing({"name": person["name"], "email": person["email"]})
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    before = jobrunner(db, emu, "check")
    assert before.exit_code == 0, before.output
    planned = {p["email"]: said_for(before.output, p["email"]) for p in there}
    # A grant without a division goes where the file puts the person (Support), not where
    # they are now (Home): as the run grants it.
    assert all("roles: added Employee in Support" in said for said in planned.values()), planned
    assert jobrunner(db, emu, *RUN).exit_code == 0  # they are left as they are
    # No work is left for their names; check still looks them up for what it would change.
    after = jobrunner(db, emu, "check")
    assert "not in the org" not in after.output and "not found" not in after.output, after.output
    planned = {p["email"]: said_for(after.output, p["email"]) for p in there}
    assert all("roles: added Employee in Support" in said for said in planned.values()), planned
    assert all("profile: set manager, location" in said for said in planned.values()), planned
    assert jobrunner(db, emu, *RUN, "--update-existing").exit_code == 0
    report = json.loads(jobrunner(db, None, "report", "--format", "json").output)
    done = {r["email"]: r["changes"] for r in report["rows"] if r["status"] == "exists"}
    assert done == planned
