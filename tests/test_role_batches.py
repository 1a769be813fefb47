"""Roles granted to many people per call (POST /api/v2/authorization/roles/{roleId}),
through the real SDK against the emulator: batched across people, one bad id found whichever
way the API refuses the batch, and every grant exactly as the file says."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_onboarding import emulator, expected, held, team
from test_second_hour import ingest, jobrunner

__all__ = ["emulator"]  # a pytest fixture used by name
RUN = ("run", "--no-progress", "--max-attempts", "30")
ROLE_BATCH = "POST /api/v2/authorization/roles/{id}"


def test_one_call_grants_a_role_to_many_people(emulator: Any, tmp_path: Path) -> None:
    people = team(230, leads=4, seed=51)
    emu = emulator()
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    assert jobrunner(db, emu, *RUN).exit_code == 0
    for person in people:
        assert held(emu, person["email"]) == expected(person), person["email"]
    grants = Counter(
        (item.strip(), p.get("division") or "")
        for p in people
        for item in p["roles_divisions"].split(",")
    )
    calls = emu.stats()["requests_by_route"][ROLE_BATCH]
    assert calls <= sum(math.ceil(n / 100) + 1 for n in grants.values())
    assert calls < len(people) / 20  # not one a person


@pytest.mark.parametrize("answer", ["404-batch", "400-batch"])
def test_a_role_batch_with_one_bad_id_grants_everyone_else(
    emulator: Any, tmp_path: Path, answer: str
) -> None:
    people = team(9, leads=1, seed=52)
    emu = emulator(role_batch_unknown_subject=answer)
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    # The grants need a permission the first run lacks: everyone is created first.
    emu.config.refused_permissions = {"authorization:grant:add"}
    jobrunner(db, emu, *RUN)
    gone = people[2]["email"]
    emu.directory.delete(next(u["id"] for u in emu.users() if u["email"] == gone))
    with sqlite3.connect(db) as conn:  # nobody is fresh from their create any more
        conn.execute("UPDATE rows SET settled_at = settled_at - 3600")
    emu.config.refused_permissions = set()
    assert jobrunner(db, emu, *RUN).exit_code == 1
    report = json.loads(jobrunner(db, None, "report", "--format", "json").output)
    for row in report["rows"]:
        status = row["steps"]["roles"]["status"]
        assert status == ("failed" if row["email"] == gone else "done"), row["email"]
    for person in people:
        if person["email"] != gone:
            assert held(emu, person["email"])["grants"] == expected(person)["grants"]


def test_check_says_how_many_calls_the_run_makes_and_how_long_they_take(
    emulator: Any, tmp_path: Path
) -> None:
    people = team(230, leads=4, seed=53)
    emu = emulator()
    db = tmp_path / "l.db"
    ingest(tmp_path, db, "f.csv", people)
    checked = jobrunner(db, emu, "check", "--rate-per-minute", "120")
    assert checked.exit_code == 0, checked.output
    found = re.search(
        r"run takes: +about (.+?) at 120 requests a minute \(--rate-per-minute\): ([\d,]+) calls",
        checked.output,
    )
    assert found, checked.output
    planned = int(found.group(2).replace(",", ""))
    before = emu.stats()["requests_by_route"]
    assert jobrunner(db, emu, *RUN).exit_code == 0
    after = emu.stats()["requests_by_route"]
    writes = sum(
        n - before.get(route, 0)
        for route, n in after.items()
        if route.split()[0] in ("POST", "PATCH") and "search" not in route and "oauth" not in route
    )
    assert writes == planned  # the run sent exactly the calls check counted
    assert found.group(
        1
    ) == f"{round(planned / 120) // 60} h {round(planned / 120) % 60:02d} min" or (
        found.group(1) == f"{round(planned / 120)} min"
    )
    # A create, a skills call and a profile call a person; roles and queues go in batches.
    per_person = after["POST /api/v2/users"] + after["PATCH /api/v2/users/{id}/routingskills/bulk"]
    per_person += after["PATCH /api/v2/users/{id}"]
    assert per_person == 3 * len(people)
    assert (planned - per_person) / len(people) < 0.1
