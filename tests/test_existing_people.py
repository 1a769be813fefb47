"""People who were already there (--update-existing), people who were deleted
(--restore-deleted), and undo (`jobrunner rollback`), against the emulator through the SDK."""

from __future__ import annotations

import json
import random
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from emulated import finish, kill_9_during
from test_onboarding import (  # the same fixtures and helpers
    FAST,
    ORG,
    emulator,
    env_for,
    expected,
    held,
    ledger_for,
    settings_for,
    team,
)

from jobrunner.cli import cli
from jobrunner.emulator.server import Emulator
from jobrunner.genesys import GenesysClient
from jobrunner.runner import Runner

__all__ = ["emulator", "ledger_for"]  # pytest fixtures used by name
WRITES = ("POST", "PATCH", "PUT", "DELETE")


def org_id(kind: str, name: str) -> str:
    return next(o["id"] for o in ORG[kind] if o["name"] == name)


def writes(emu: Emulator) -> int:
    return sum(
        n
        for route, n in emu.stats()["requests_by_route"].items()
        if route.split()[0] in WRITES and "/api/v2/users/search" not in route
    )


def prepare(emu: Emulator, person: dict[str, str], exactly: bool) -> str:
    """Put a person in the org before the job: as the file says (`exactly`), or partly, in
    another division and with a role of their own (which must never be removed)."""
    client = GenesysClient(settings_for(emu), read_timeout=5)
    client.authenticate()
    mine = expected(person)
    emu.directory.add_existing(
        {
            "name": person["name"],
            "email": person["email"],
            "title": "Old title" if not exactly else None,
            "divisionId": org_id("divisions", mine["division"]) if exactly else None,
        }
    )
    user_id = client.find_user_by_email(person["email"]).id  # type: ignore[union-attr]
    home = client.home_division().id
    division = {d["name"]: d["id"] for d in ORG["divisions"]}
    grants = [(org_id("roles", r), division.get(d, home)) for r, d in mine["grants"]]
    if exactly:
        client.grant_roles(user_id, grants)
        client.add_skills(user_id, [(org_id("skills", s), p) for s, p in mine["skills"].items()])
        for queue in mine["queues"]:
            client.add_queue_members(org_id("queues", queue), [user_id])
        manager = client.find_user_by_email(mine["manager"]) if mine["manager"] else None
        version = client.get_user(user_id).version
        client.update_user(
            user_id,
            version,
            manager_id=manager.id if manager else None,
            location_id=org_id("locations", mine["location"]),
            contacts=[{"mediaType": "PHONE", "type": "WORK", "extension": person["extension"]}],
        )
    else:
        client.grant_roles(user_id, [grants[0], (org_id("roles", "Reporting Viewer"), home)])
        other = next(loc["name"] for loc in ORG["locations"] if loc["name"] != mine["location"])
        client.update_user(
            user_id, client.get_user(user_id).version, location_id=org_id("locations", other)
        )
    return user_id


def test_a_file_of_existing_deleted_and_new_people_ends_as_the_file_says(
    emulator: Any, ledger_for: Any
) -> None:
    people = team(30, leads=3, seed=5)
    # Leads (managers) are new; of the 27 agents: 4 in line, 6 not, 3 deleted, 14 new.
    in_line, out_of_line, deleted = people[:4], people[4:10], people[10:13]
    for person in in_line:  # their manager is in the org already, so they can be in line
        person["email_manager"] = "maria.gonzalez@example.com"
    emu = emulator()
    ids = {}
    for person in in_line:
        ids[person["email"]] = prepare(emu, person, exactly=True)
    for person in out_of_line:
        ids[person["email"]] = prepare(emu, person, exactly=False)
    for person in deleted:
        emu.directory.add_existing(
            {"name": person["name"], "email": person["email"], "state": "deleted"}
        )
        ids[person["email"]] = next(u["id"] for u in emu.users() if u["email"] == person["email"])
    # The leads (managers of everyone) are rows too: in-line people need them to exist.
    # Run once without flags first, the way an admin would find out about them.
    ledger = ledger_for(people)
    client = GenesysClient(settings_for(emu), read_timeout=5)
    result = Runner(ledger, client, policy=FAST).run()
    assert result.exit_code == 0
    states = dict(
        ledger.execute("SELECT email, status || '/' || coalesce(user_state, '') FROM rows")
    )
    assert {states[p["email"]] for p in deleted} == {"exists/deleted"}
    for person in out_of_line:  # without the flag nobody who was there is touched
        assert sorted(held(emu, person["email"])["grants"]) != expected(person)["grants"]
    report = CliRunner().invoke(cli, ["--db", str(ledger.path), "report", "--status", "exists"])
    assert "[deleted]" in report.output and "--restore-deleted" in report.output

    # Now with both flags: everybody in line, nothing removed, nobody created twice.
    before_writes = writes(emu)
    result = Runner(ledger, client, policy=FAST, update_existing=True, restore_deleted=True).run()
    assert result.exit_code == 0
    assert writes(emu) > before_writes
    creations = emu.stats()["creations_by_email"]
    assert set(creations.values()) == {1}
    assert not (set(creations) & {p["email"] for p in in_line + out_of_line + deleted})
    for person in people:
        have, want = held(emu, person["email"]), expected(person)
        assert set(map(tuple, want["grants"])) <= set(map(tuple, have["grants"])), person
        assert set(want["queues"]) <= set(have["queues"])
        assert {k: have["skills"][k] for k in want["skills"]} == want["skills"]
        for key in ("manager", "location", "division"):
            assert have[key] == want[key], (person["email"], key)
    for person in out_of_line:  # their own role was kept
        assert ["Reporting Viewer", "Home"] in held(emu, person["email"])["grants"]
        # the file's location is set: it is the user's one location, not added to theirs
        user_id = ids[person["email"]]
        mine = org_id("locations", expected(person)["location"])
        assert client.get_user(user_id).location_ids == (mine,), person["email"]
        user = next(u for u in emu.users() if u["email"] == person["email"])
        assert user.get("title") == "Old title"  # the file's empty cell changes nothing
    for person in deleted:  # the same user, restored
        user = next(u for u in emu.users() if u["email"] == person["email"])
        assert user["id"] == ids[person["email"]] and user["state"] == "active"
    data = json.loads(
        CliRunner().invoke(cli, ["--db", str(ledger.path), "report", "--format", "json"]).output
    )
    rows = {r["email"]: r for r in data["rows"]}
    assert {rows[p["email"]]["changes"] for p in in_line} == {"no change"}
    for person in out_of_line:
        changes = rows[person["email"]]["changes"]
        assert "roles: added Employee in Support" in changes  # they had Agent already
        assert "division: moved to Support" in changes and "profile: set manager" in changes
    assert {rows[p["email"]]["settled_by"] for p in deleted} == {"restore"}

    # A second run with the flags sends no write at all.
    before_writes = writes(emu)
    assert (
        Runner(ledger, client, policy=FAST, update_existing=True, restore_deleted=True)
        .run()
        .exit_code
        == 0
    )
    assert writes(emu) == before_writes


def test_rollback_deletes_only_what_this_ledger_created(
    emulator: Any, ledger_for: Any, tmp_path: Path
) -> None:
    people = team(20, leads=2, seed=3)
    emu = emulator(drop_after_create_rate=0.25, seed=4)
    emu.directory.add_existing({"name": "There Before", "email": people[0]["email"]})
    ledger = ledger_for(people)
    assert Runner(ledger, GenesysClient(settings_for(emu)), policy=FAST).run().exit_code == 0
    by = Counter(r for (r,) in ledger.execute("SELECT settled_by FROM rows"))
    assert by["lookup"] > 0 and by["conflict"] == 1
    db = ledger.path
    refused = CliRunner().invoke(cli, ["--db", str(db), "rollback"], env=env_for(emu))
    assert refused.exit_code == 1 and "confirm with --yes" in refused.output
    result = CliRunner().invoke(
        cli, ["--db", str(db), "rollback", "--yes", "--no-progress"], env=env_for(emu)
    )
    assert result.exit_code == 0, result.output
    assert f"{by['create']} users this ledger created will be deleted" in result.output
    assert f"left out: {by['lookup']} created by look-up" in result.output
    users = {u["email"]: u["state"] for u in emu.users()}
    statuses = dict(ledger.execute("SELECT email, status FROM rows"))
    assert users[people[0]["email"]] == "active"  # never a person who was there before
    for email, status in statuses.items():
        if status == "rolled_back":
            assert users[email] == "deleted"
    assert Counter(statuses.values())["rolled_back"] == by["create"]
    # The looked-up ones only on request; then a run does not recreate anything...
    result = CliRunner().invoke(
        cli,
        ["--db", str(db), "rollback", "--yes", "--include-looked-up", "--no-progress"],
        env=env_for(emu),
    )
    assert result.exit_code == 0, result.output
    before = dict(emu.stats()["creations_by_email"])
    assert Runner(ledger, GenesysClient(settings_for(emu)), policy=FAST).run().exit_code == 0
    assert emu.stats()["creations_by_email"] == before
    # ...unless asked: the same users come back (restored), nobody is created twice.
    result = Runner(
        ledger, GenesysClient(settings_for(emu)), policy=FAST, recreate_rolled_back=True
    ).run()
    assert result.exit_code == 0
    assert set(emu.stats()["creations_by_email"].values()) == {1}
    for person in people[1:]:
        assert held(emu, person["email"]) == expected(person)


# -- kill -9 during update, restore and rollback ------------------------------------------------


OPTIONS = ("--no-progress", "--max-attempts", "50")


def kill_loop(db: Path, emu: Emulator, event: str, *args: str, rounds: int = 6) -> int:
    rng = random.Random(len(args) + rounds)
    pauses = (rng.uniform(0.0, 0.5) for _ in range(rounds))
    kills = kill_9_during(db, emu, (*args, *OPTIONS), pauses, event=event)
    finish(db, emu, *args, *OPTIONS)
    return kills


@pytest.mark.slow
def test_kill_9_during_update_restore_and_rollback_does_nothing_twice(
    emulator: Any, ledger_for: Any
) -> None:
    people = team(60, leads=3, seed=11)
    emu = emulator(latency_ms=20, latency_jitter_ms=15, seed=21)
    for person in people[:20]:
        prepare(emu, person, exactly=False)
    emu.config.fault_5xx_rate = 0.03  # the faults are for the run, not for setting up the org
    for person in people[20:35]:
        emu.directory.add_existing(
            {"name": person["name"], "email": person["email"], "state": "deleted"}
        )
    deleted_ids = {u["email"]: u["id"] for u in emu.users() if u["state"] == "deleted"}
    ledger = ledger_for(people)
    db = ledger.path
    ledger.close()
    kills = kill_loop(db, emu, "step.done", "run", "--update-existing", "--restore-deleted")
    assert kills >= 2
    creations = emu.stats()["creations_by_email"]
    assert set(creations.values()) == {1} and len(creations) == 25  # the new ones only
    for person in people:
        have, want = held(emu, person["email"]), expected(person)
        assert set(map(tuple, want["grants"])) <= set(map(tuple, have["grants"]))
        assert set(want["queues"]) <= set(have["queues"])
    for email, user_id in deleted_ids.items():
        user = next(u for u in emu.users() if u["email"] == email)
        assert user["id"] == user_id and user["state"] == "active"
    # Rollback under kill -9: every user this ledger created is deleted, once.
    emu.config.latency_ms = 300  # slow enough for kills to land while users are deleted
    kills = kill_loop(db, emu, "step.done", "rollback", "--yes", "--include-looked-up")
    assert kills >= 2  # the kills landed while users were being deleted
    conn = sqlite3.connect(db)
    statuses = dict(conn.execute("SELECT email, status FROM rows"))
    conn.close()
    users = {u["email"]: u["state"] for u in emu.users()}
    for person in people[:20]:
        assert users[person["email"]] == "active" and statuses[person["email"]] == "exists"
    for email in creations:
        assert statuses[email] == "rolled_back" and users[email] == "deleted"
    deletes = emu.stats()["requests_by_route"].get("DELETE /api/v2/users/{id}", 0)
    assert deletes >= 25  # each once, a few again after a kill (then a 404: already gone)
