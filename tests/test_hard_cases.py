"""Cases an independent review reproduced, each pinned by a test: who counts as ours, rows
whose create may have been sent, people found there before without an id, a grant refused
in one division, names beyond ASCII, what --update-existing must keep, and rows ingested
while a run works."""

from __future__ import annotations

import shutil
import sqlite3
from collections import deque
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fakes import FakeClient
from test_onboarding import (
    FAST,
    ORG,
    admin_file,
    emulator,
    expected,
    held,
    ledger_for,
    settings_for,
    team,
)

from jobrunner.cli import cli
from jobrunner.genesys import ApiError, FoundUser, GenesysClient
from jobrunner.ingest import ingest_file
from jobrunner.ledger import Ledger, available_migrations
from jobrunner.resources import migrations_dir
from jobrunner.runner import Runner

__all__ = ["emulator", "ledger_for"]  # pytest fixtures used by name
LONG_AGO = "2024-01-01T00:00:00.000Z"


def client_for(emu: Any) -> GenesysClient:
    return GenesysClient(settings_for(emu), read_timeout=5)


def test_a_ledger_of_the_first_version_keeps_look_ups_out_of_rollback(tmp_path: Path) -> None:
    """Version 1 did not record whether a created row was settled by a look-up."""
    old = tmp_path / "migrations"
    old.mkdir()
    shutil.copy(migrations_dir() / "0001_initial.sql", old)
    db = tmp_path / "old.db"
    ledger = Ledger.open(db)  # new code, but migrate only to 0001 below
    ledger.close()
    db.unlink()
    conn = sqlite3.connect(db)
    for migration in available_migrations(old):
        conn.executescript(migration.sql)
    conn.execute("CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    conn.execute("INSERT INTO schema_migrations VALUES ('0001_initial', 'then')")
    conn.execute("INSERT INTO sources VALUES (1, 'old.csv', 'x', 'then', 1, 1)")
    conn.execute(
        "INSERT INTO rows (source_id, line, first_name, last_name, email, email_norm, status, "
        "user_id, created_at, updated_at) VALUES (1, 2, 'Pat', 'Doe', 'pat@example.com', "
        "'pat@example.com', 'created', 'u-pat', 'then', 'then')"
    )
    conn.commit()
    conn.close()
    with Ledger.open(db) as ledger:
        assert ledger.execute("SELECT name, settled_by FROM rows").fetchone() == ("Pat Doe", None)
    env = {
        "GENESYS_CLOUD_CLIENT_ID": "x",
        "GENESYS_CLOUD_CLIENT_SECRET": "y",
        "GENESYS_CLOUD_ENVIRONMENT": "http://127.0.0.1:9",
    }
    result = CliRunner().invoke(cli, ["--db", str(db), "rollback", "--yes"], env=env)
    assert result.exit_code == 0, result.output
    assert "0 users this ledger created will be deleted" in result.output
    assert "left out: 1 created by an earlier jobrunner" in result.output


def test_a_person_there_long_before_is_not_taken_for_ours_after_an_unanswered_create(
    tmp_path: Path,
) -> None:
    f = tmp_path / "u.csv"
    f.write_text("name,email\nPat Doe,pat@example.com\n")
    ledger = Ledger.open(tmp_path / "l.db")
    ingest_file(ledger, f)
    client = FakeClient()
    client.users["pat@example.com"] = FoundUser(
        "pats-own-id",
        "Pat Doe",
        "pat@example.com",
        "active",
        None,
        None,
        None,
        (),
        modified=1_600_000_000.0,  # 2020
    )
    client.create_script["pat@example.com"] = deque(
        [ApiError(503, "service.unavailable", "a gateway failed; the API never saw it")]
    )
    Runner(ledger, client, concurrency=1, policy=FAST).run()
    row = ledger.execute("SELECT status, user_id, settled_by, error_message FROM rows").fetchone()
    assert row[:3] == ("exists", "pats-own-id", "conflict")
    assert "last changed before this job's first create" in row[3]
    ledger.close()


def test_a_row_whose_create_may_have_been_sent_is_looked_up_before_names_fail_it(
    emulator: Any, ledger_for: Any
) -> None:
    """Its manager vanished from the org after a lost answer: the look-up finds our user
    (created), and only the step needing the manager fails."""
    people = [
        {
            "name": "Ada Lovelace",
            "email": "ada@example.com",
            "email_manager": "gone@example.com",
            "roles_divisions": "Agent",
            "queues": "Billing",
            "skills": "English:3",
        }
    ]
    emu = emulator()
    ledger = ledger_for(people)
    emu.directory.add_existing({"name": "Ada Lovelace", "email": "ada@example.com"})
    ledger.execute("UPDATE rows SET in_doubt = 1, attempts = 1, first_sent_at = 0")
    result = Runner(ledger, client_for(emu), policy=FAST).run()
    assert result.exit_code == 1
    row = ledger.execute("SELECT status, user_id, settled_by FROM rows").fetchone()
    assert row[0] == "created" and row[1] and row[2] == "lookup"
    steps = dict(ledger.execute("SELECT kind, status FROM steps").fetchall())
    assert steps == {"roles": "done", "skills": "done", "queue": "done", "profile": "failed"}
    # A new file with a manager who exists: what comes after the create may change.
    f = ledger.path.parent / "fixed.csv"
    people[0]["email_manager"] = "tom.becker@example.com"
    f.write_text(admin_file(people), encoding="utf-8")
    ingest_file(ledger, f)  # the row is created: ingest leaves it (update-existing's job)


def test_a_grant_refused_in_one_division_never_stops_the_run_for_everyone(
    emulator: Any, ledger_for: Any
) -> None:
    """Five team leads (Supervisor in Sales, refused) are created first, so their roles steps
    come first at concurrency 1: the others' grants still go through."""
    sales = next(d["id"] for d in ORG["divisions"] if d["name"] == "Sales")
    people = team(15, leads=5)
    emu = emulator(refused_permissions={f"authorization:grant:add@{sales}"})
    ledger = ledger_for(people)
    for _ in range(2):  # the second run must not stop either
        result = Runner(ledger, client_for(emu), concurrency=1, policy=FAST).run(retry_failed=True)
        assert result.exit_code == 1
        roles = dict(
            ledger.execute(
                "SELECT rows.email, steps.status FROM steps JOIN rows ON rows.id = steps.row_id "
                "WHERE kind = 'roles'"
            ).fetchall()
        )
        assert {e for e, s in roles.items() if s == "failed"} == {
            p["email"] for p in people if "Sales" in p["roles_divisions"]
        }
        assert sum(s == "done" for s in roles.values()) == 10


def test_names_beyond_ascii_match_the_org_ignoring_case(emulator: Any, ledger_for: Any) -> None:
    org = {**ORG, "divisions": [*ORG["divisions"], {"name": "Økonomi"}]}
    org["locations"] = [*ORG["locations"], {"name": "Århus Office"}]
    people = team(4, leads=1)
    for person in people:
        person["division"] = "økonomi"
        person["location_work"] = "ÅRHUS OFFICE"
        person["roles_divisions"] = "Employee, Agent:[ØKONOMI]"
    emu = emulator(org=org)
    ledger = ledger_for(people)
    assert Runner(ledger, client_for(emu), policy=FAST).run().exit_code == 0
    for person in people:
        have = held(emu, person["email"])
        assert have["division"] == "Økonomi" and have["location"] == "Århus Office"
        assert ["Agent", "Økonomi"] in have["grants"]


def test_update_existing_sets_the_location_and_keeps_other_contacts_and_their_division(
    emulator: Any, ledger_for: Any
) -> None:
    support = next(d["id"] for d in ORG["divisions"] if d["name"] == "Support")
    location = {loc["name"]: loc["id"] for loc in ORG["locations"]}
    emu = emulator()
    for name, email in (("Pat Doe", "pat@example.com"), ("Sam Roe", "sam@example.com")):
        emu.directory.add_existing(
            {
                "name": name,
                "email": email,
                "divisionId": support,
                "dateModified": LONG_AGO,
                "addresses": [
                    {
                        "address": "+13175550199",
                        "display": "(317) 555-0199",
                        "mediaType": "PHONE",
                        "type": "MOBILE",
                        "countryCode": "US",
                    }
                ],
            }
        )
    client = client_for(emu)
    client.authenticate()
    ids = {}
    had = [{"id": location["Remote"]}, {"id": location["Dublin Office"], "notes": "d4"}]
    for email in ("pat@example.com", "sam@example.com"):
        found = client.find_user_by_email(email)
        assert found is not None
        ids[email] = found.id
        client.update_user(found.id, client.get_user(found.id).version, locations=had)
    people = [
        {
            "name": "Pat Doe",
            "email": "pat@example.com",
            "location_work": "Austin Office",
            "extension": "2042",
            "roles_divisions": "Agent",  # no [division], no division cell: where Pat is
        },
        {"name": "Sam Roe", "email": "sam@example.com", "location_work": "Dublin Office"},
    ]
    ledger = ledger_for(people)
    result = Runner(ledger, client, policy=FAST, update_existing=True).run()
    assert result.exit_code == 0
    user = next(u for u in emu.users() if u["email"] == "pat@example.com")
    mobile = next(a for a in user["addresses"] if a["type"] == "MOBILE")
    assert mobile == {
        "address": "+13175550199",
        "display": "(317) 555-0199",
        "mediaType": "PHONE",
        "type": "MOBILE",
        "countryCode": "US",
    }
    work = next(a for a in user["addresses"] if a["type"] == "WORK")
    assert work["extension"] == "2042"
    # The file's location is set: it becomes the person's one location ...
    assert client.get_user(ids["pat@example.com"]).location_ids == (location["Austin Office"],)
    # ... keeping its notes when the person had it already.
    sam = client.get_user(ids["sam@example.com"])
    assert [(loc["id"], loc.get("notes")) for loc in sam.locations] == [
        (location["Dublin Office"], "d4")
    ]
    # Employee in Home: every Genesys user holds it from creation.
    assert held(emu, "pat@example.com")["grants"] == [["Agent", "Support"], ["Employee", "Home"]]


def test_rows_ingested_while_a_run_works_have_their_names_looked_up(
    emulator: Any, ledger_for: Any, monkeypatch: Any
) -> None:
    first = team(6, leads=1, prefix="first")
    later = team(4, leads=1, prefix="later")
    for person in later:
        person["queues"] = "Spanish Line, VIP Care"  # names the run has not looked up
        person["location_work"] = "Indianapolis HQ"
    emu = emulator()
    ledger = ledger_for(first)
    original = ledger.set_ranks

    def ingest_then_rank() -> None:  # after the run's look-ups, before its work
        f = ledger.path.parent / "later.csv"
        f.write_text(admin_file(later), encoding="utf-8")
        ingest_file(ledger, f)
        original()

    monkeypatch.setattr(ledger, "set_ranks", ingest_then_rank)
    result = Runner(ledger, client_for(emu), policy=FAST).run()
    assert result.exit_code == 0
    for person in first + later:
        assert held(emu, person["email"]) == expected(person), person["email"]
