"""Onboarding end to end: the admin UI's file, names resolved, every step done exactly once,
against the emulator through the real SDK."""

from __future__ import annotations

import csv
import functools
import io
import json
import math
import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import emulated
import pytest
from click.testing import CliRunner
from emulated import emulators, env_for, finish, kill_9_during, settings_for

from jobrunner.cli import cli
from jobrunner.emulator.org import read_org_file
from jobrunner.emulator.server import Emulator
from jobrunner.genesys import GenesysClient
from jobrunner.ingest import ingest_file
from jobrunner.ledger import Ledger
from jobrunner.report import report_rows, step_counts
from jobrunner.runner import RetryPolicy, Runner

SECRET = "onboarding-secret-0123456789"
ORG = read_org_file(Path(__file__).resolve().parents[1] / "examples" / "org.json")
COLUMNS = (
    "name,email,phone_work,extension,title,department,email_manager,location_work,"
    "roles_divisions,queues,division,skills"
).split(",")
QUEUES = ["Billing", "Technical Support", "Retention"]
SKILLS = ["English", "Spanish", "Billing", "Chat", "Email"]
LOCATIONS = ["Indianapolis HQ", "Dublin Office", "Remote"]
FAST = RetryPolicy(max_attempts=8, base_delay_s=0.05, max_delay_s=0.3)


def admin_file(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: row.get(c, "") for c in COLUMNS})
    return out.getvalue()


def team(n: int, leads: int = 5, seed: int = 1, prefix: str = "agent") -> list[dict[str, str]]:
    """n people; the first `leads` emails are team leads, written at the END of the file, so
    most reports come before their manager. Each: 2 roles (one in a named division), 2 of 3
    queues, 3 skills, a manager and a location."""
    rng = random.Random(seed)
    lead_emails = [f"{prefix}-lead{i}@example.com" for i in range(leads)]
    people = []
    for i in range(n - leads):
        people.append(
            {
                "name": f"Agent {i}",
                "email": f"{prefix}{i}@example.com",
                "email_manager": rng.choice(lead_emails),
                "location_work": rng.choice(LOCATIONS),
                "roles_divisions": "Employee, Agent:[Support]",
                "queues": ", ".join(rng.sample(QUEUES, 2)),
                "division": "Support",
                "skills": ", ".join(f"{s}:{rng.randint(0, 5)}" for s in rng.sample(SKILLS, 3)),
                "extension": str(2000 + i),
            }
        )
    for i, email in enumerate(lead_emails):
        people.append(
            {
                "name": f"Lead {i}",
                "email": email,
                "email_manager": "maria.gonzalez@example.com",  # in the org before the job
                "location_work": "Austin Office",
                "roles_divisions": "Employee, Supervisor:[Sales]",
                "queues": "VIP Care",
                "skills": "Escalations:5",
            }
        )
    return people


@pytest.fixture
def emulator() -> Iterator[Any]:
    with emulators(
        client_id="onboarding", client_secret=SECRET, rate_per_minute=100_000, org=ORG
    ) as start:
        yield start


@pytest.fixture
def ledger_for(tmp_path: Path) -> Iterator[Any]:
    opened: list[Ledger] = []

    def make(rows: list[dict[str, str]]) -> Ledger:
        f = tmp_path / "admin.csv"
        f.write_text(admin_file(rows), encoding="utf-8")
        ledger = Ledger.open(tmp_path / "ledger.db")
        ingest_file(ledger, f)
        opened.append(ledger)
        return ledger

    yield make
    for ledger in opened:
        ledger.close()


run_against = functools.partial(emulated.run_against, policy=FAST)


def expected(person: dict[str, str]) -> dict[str, Any]:
    """What the emulator must hold for a person of the file."""
    grants = []
    for item in person["roles_divisions"].split(","):
        role, _, division = item.strip().partition(":")
        grants.append([role, division.strip("[]") or person.get("division") or "Home"])
    # Every Genesys user holds the Employee role (in Home) from creation: the emulator too.
    if ["Employee", "Home"] not in grants:
        grants.append(["Employee", "Home"])
    return {
        "grants": sorted(grants),
        "queues": sorted(q.strip() for q in person["queues"].split(",")),
        "skills": {
            s.split(":")[0].strip(): float(s.split(":")[1]) for s in person["skills"].split(",")
        },
        "manager": person["email_manager"],
        "location": person["location_work"],
        "division": person.get("division") or "Home",
    }


def held(emu: Emulator, email: str) -> dict[str, Any]:
    user = emu.stats()["onboarding"][email]
    return {
        "grants": sorted(user["grants"]),
        "queues": sorted(user["queues"]),
        "skills": user["skills"],
        "manager": user["manager"],
        "location": user["location"],
        "division": user["division"],
    }


def steps_of(ledger: Ledger) -> Counter[tuple[str, str]]:
    return Counter(ledger.execute("SELECT kind, status FROM steps").fetchall())


def test_every_assignment_lands_with_queue_members_batched_across_rows(
    emulator: Any, ledger_for: Any
) -> None:
    people = team(260, leads=6)
    emu = emulator()
    ledger = ledger_for(people)
    result = run_against(emu, ledger)
    assert result.exit_code == 0
    for person in people:
        assert held(emu, person["email"]) == expected(person), person["email"]
    creations = emu.stats()["creations_by_email"]
    assert len(creations) == len(people) and set(creations.values()) == {1}
    # One members call per queue per 100 new members (plus at most one per queue).
    members = Counter(q.strip() for p in people for q in p["queues"].split(","))
    ceiling = sum(math.ceil(n / 100) for n in members.values()) + len(members)
    routes = emu.stats()["requests_by_route"]
    assert routes["POST /api/v2/routing/queues/{id}/members"] <= ceiling
    # One call per (role, division) per 100 people (issue 18), not one per person.
    grants = Counter(
        (item.strip(), p.get("division") or "")
        for p in people
        for item in p["roles_divisions"].split(",")
    )
    assert routes["POST /api/v2/authorization/roles/{id}"] <= sum(
        math.ceil(n / 100) + 1 for n in grants.values()
    )
    assert "POST /api/v2/authorization/subjects/{id}/bulkadd" not in routes
    assert routes["PATCH /api/v2/users/{id}/routingskills/bulk"] == len(people)
    assert routes["PATCH /api/v2/users/{id}"] == len(people)
    assert set(steps_of(ledger)) == {(k, "done") for k in ("roles", "skills", "queue", "profile")}
    # A second run has nothing to send.
    before = emu.stats()["requests_total"]
    assert run_against(emu, ledger).exit_code == 0
    assert emu.stats()["requests_total"] == before


def test_managers_later_in_the_file_are_created_before_their_reports(
    emulator: Any, ledger_for: Any
) -> None:
    people = team(60, leads=4)
    emu = emulator(latency_ms=5)
    ledger = ledger_for(people)
    assert run_against(emu, ledger, concurrency=8).exit_code == 0
    settled = dict(ledger.execute("SELECT email, settled_at FROM rows").fetchall())
    for person in people:
        manager = person["email_manager"]
        if manager in settled:
            assert settled[manager] <= settled[person["email"]], person["email"]
    lead_line = min(
        line for (line,) in ledger.execute("SELECT line FROM rows WHERE email LIKE '%lead%'")
    )
    assert lead_line > 50  # the leads really are at the end of the file


def test_unknown_names_are_found_by_check_and_nobody_is_created_for_their_rows(
    emulator: Any, ledger_for: Any
) -> None:
    people = team(12, leads=2)
    people[0]["queues"] = "Billing, Bilingual Line"
    people[1]["skills"] = "Klingon:3"
    people[2]["email_manager"] = "nobody@example.com"
    people[3]["division"] = "Moon Base"
    people[4]["roles_divisions"] = "Employee, Agent:[Atlantis]"
    emu = emulator()
    ledger = ledger_for(people)
    db = ledger.path
    checked = CliRunner().invoke(
        cli, ["--db", str(db), "--log-level", "error", "check"], env=env_for(emu)
    )
    assert checked.exit_code == 1, checked.output
    out = checked.output
    assert "users to create:             7" in out
    assert "5 names do not resolve; the 5 rows that use them are not created:" in out
    assert "queue     'Bilingual Line': not in the org; admin.csv line 2\n" in out
    assert "skill     'Klingon': not in the org; admin.csv line 3\n" in out
    assert (
        "manager   'nobody@example.com': not a person of this file nor of the org; "
        "admin.csv line 4\n" in out
    )
    assert "division  'Moon Base'" in out and "division  'Atlantis'" in out
    assert emu.stats()["requests_by_route"].get("POST /api/v2/users", 0) == 0  # reads only
    result = run_against(emu, ledger)
    assert result.exit_code == 1
    rows = dict(ledger.execute("SELECT email, status || ':' || coalesce(error_code, '') FROM rows"))
    bad = {p["email"] for p in people[:5]}
    assert {rows[e] for e in bad} == {"failed:unknown_name"}
    created = emu.stats()["creations_by_email"]
    assert not bad & set(created) and len(created) == 7
    # A row failed before its create has no steps to do: the report shows none (neither
    # pending nor failed); the plan is kept for --retry-failed.
    shown = {r["email"]: r["steps"] for r in report_rows(ledger)}
    assert all(shown[e] == {} for e in bad) and shown[people[5]["email"]]
    counted = step_counts(ledger)
    assert all(c["pending"] == 0 and c["failed"] == 0 for c in counted.values()), counted
    # The admin adds what was missing to the org; --retry-failed onboards the rest.
    org = emu.directory.org
    org.add("queues", "c0000000-0000-4000-8000-0000000000aa", "Bilingual Line")
    org.add("skills", "5c000000-0000-4000-8000-0000000000aa", "Klingon")
    emu.directory.add_division("d0000000-0000-4000-8000-0000000000aa", "Moon Base")
    emu.directory.add_division("d0000000-0000-4000-8000-0000000000ab", "Atlantis")
    emu.directory.add_existing({"name": "No Body", "email": "nobody@example.com"})
    result = Runner(ledger, GenesysClient(settings_for(emu), read_timeout=5), policy=FAST).run(
        retry_failed=True
    )
    assert result.exit_code == 0
    for person in people:
        assert held(emu, person["email"]) == expected(person), person["email"]


def test_a_step_refused_for_everyone_stops_the_run_and_leaves_its_steps_pending(
    emulator: Any, ledger_for: Any
) -> None:
    people = team(10, leads=2)
    emu = emulator(refused_permissions={"routing:skill:assign"})
    ledger = ledger_for(people)
    result = CliRunner().invoke(
        cli,
        ["--db", str(ledger.path), "--log-format", "json", "run", "--no-progress"],
        env=env_for(emu),
    )
    assert result.exit_code == 3, result.output
    assert "routing:skill:assign" in result.output and "Traceback" not in result.output
    skills = {s for (k, s), _n in steps_of(ledger).items() if k == "skills"}
    assert skills == {"pending"}
    assert ledger.execute("SELECT count(*) FROM steps WHERE status = 'failed'").fetchone()[0] == 0
    emu.config.refused_permissions = set()
    assert run_against(emu, ledger).exit_code == 0
    for person in people:
        assert held(emu, person["email"]) == expected(person)


def test_a_grant_refused_in_one_division_fails_only_those_rows_roles(
    emulator: Any, ledger_for: Any
) -> None:
    sales = next(d["id"] for d in ORG["divisions"] if d["name"] == "Sales")
    people = team(12, leads=2)  # leads get Supervisor:[Sales]
    emu = emulator(refused_permissions={f"authorization:grant:add@{sales}"})
    ledger = ledger_for(people)
    result = run_against(emu, ledger, concurrency=1)
    assert result.exit_code == 1
    failed = dict(
        ledger.execute(
            "SELECT rows.email, steps.error_code FROM steps JOIN rows ON rows.id = steps.row_id "
            "WHERE steps.status = 'failed'"
        ).fetchall()
    )
    assert set(failed) == {p["email"] for p in people if "Sales" in p["roles_divisions"]}
    assert set(failed.values()) == {"missing.permissions"}
    # A step a grant (issue 18): only the refused Sales grants fail, the leads' others are done.
    grants = sum(len(p["roles_divisions"].split(",")) for p in people)
    assert steps_of(ledger)[("roles", "failed")] == 2
    assert steps_of(ledger)[("roles", "done")] == grants - 2


def test_fresh_ids_unknown_to_other_services_are_retried_until_known(
    emulator: Any, ledger_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobrunner.context as context_module

    monkeypatch.setattr(context_module, "STEP_DELAY_S", 0.0)
    people = team(8, leads=2)
    emu = emulator(fresh_user_404_s=1.0)
    ledger = ledger_for(people)
    assert run_against(emu, ledger, policy=RetryPolicy(10, 0.2, 1.0)).exit_code == 0
    assert emu.stats()["responses_by_status"].get("404", 0) > 0
    for person in people:
        assert held(emu, person["email"]) == expected(person)


def test_51_skills_and_101_members_are_split_into_calls_the_api_takes(
    emulator: Any, ledger_for: Any
) -> None:
    org = json.loads(json.dumps(ORG))
    org["skills"] = [{"name": f"Skill {i:02d}"} for i in range(60)]
    people = [
        {
            "name": f"P {i}",
            "email": f"p{i}@example.com",
            "queues": "Billing",
            "roles_divisions": "",
            "skills": "Skill 00:1",
        }
        for i in range(101)
    ]
    people[0]["skills"] = ", ".join(f"Skill {i:02d}:{i % 6}" for i in range(51))
    emu = emulator(org=org)
    ledger = ledger_for(people)
    assert run_against(emu, ledger).exit_code == 0
    routes = emu.stats()["requests_by_route"]
    assert routes["POST /api/v2/routing/queues/{id}/members"] == 2  # 100 + 1
    assert routes["PATCH /api/v2/users/{id}/routingskills/bulk"] == 101 + 1  # 50 + 1 for p0
    assert len(emu.stats()["onboarding"]["p0@example.com"]["skills"]) == 51
    assert all(
        "Billing" in u["queues"]
        for u in emu.stats()["onboarding"].values()
        if u["state"] == "active" and u.get("skills")
    )


# -- kill -9 between and during steps ------------------------------------------------------------

RUN_ARGS = ("run", "--no-progress", "--max-attempts", "50")


@pytest.mark.slow
def test_kill_9_between_and_during_steps_does_every_step_exactly_once(
    emulator: Any, ledger_for: Any
) -> None:
    people = team(150, leads=6, seed=7)
    emu = emulator(
        latency_ms=25,
        latency_jitter_ms=20,
        fault_5xx_rate=0.03,
        drop_after_create_rate=0.03,
        fresh_user_404_s=0.5,
        seed=13,
    )
    ledger = ledger_for(people)
    db = ledger.path
    ledger.close()
    rng = random.Random(99)
    in_flight: list[int] = []

    def count_steps_in_flight() -> None:
        conn = sqlite3.connect(db)
        in_flight.append(
            conn.execute("SELECT count(*) FROM steps WHERE status = 'in_progress'").fetchone()[0]
        )
        conn.close()

    pauses = (rng.uniform(0.0, 0.8) for _ in range(8))
    kills = kill_9_during(db, emu, RUN_ARGS, pauses, after_kill=count_steps_in_flight)
    steps_in_flight = sum(in_flight)
    assert kills >= 3 and steps_in_flight > 0  # the kills really landed during steps
    finish(db, emu, *RUN_ARGS)
    conn = sqlite3.connect(db)
    try:
        statuses = Counter(r[0] for r in conn.execute("SELECT status FROM steps"))
    finally:
        conn.close()
    assert set(statuses) == {"done"}
    creations = emu.stats()["creations_by_email"]
    assert len(creations) == len(people) and set(creations.values()) == {1}
    for person in people:
        assert held(emu, person["email"]) == expected(person), person["email"]
