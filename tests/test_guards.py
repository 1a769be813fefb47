"""Behaviours a user relies on that the rest of the suite would let break unnoticed.

Each test here was seen to fail with the code it guards broken on purpose. Those about the
API run jobrunner against the emulator through the real SDK: in this process
(`emulated.run_against`), through the CLI, or as a real `python -m jobrunner` process where
the broken code would keep a run going for ever (the process is then killed and the test
fails, instead of the suite hanging).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import emulated
import pytest
import structlog
from click.testing import CliRunner
from emulated import env_for, spawn
from test_onboarding import FAST, ORG, emulator, held, ledger_for

from jobrunner import log
from jobrunner.cli import cli
from jobrunner.emulator.server import Emulator
from jobrunner.errors import ConfigError
from jobrunner.ledger import Ledger

__all__ = ["emulator", "ledger_for"]  # pytest fixtures used by name

run_against = functools.partial(emulated.run_against, policy=FAST)
MEMBERS = "POST /api/v2/routing/queues/{id}/members"
ROLE_BATCH = "POST /api/v2/authorization/roles/{id}"  # one role for many people (issue 18)
SKILLS = "PATCH /api/v2/users/{id}/routingskills/bulk"
CREATE = "POST /api/v2/users"


def org_id(kind: str, name: str) -> str:
    return next(o["id"] for o in ORG[kind] if o["name"] == name)


def user_of(emu: Emulator, email: str) -> dict[str, Any]:
    return next(u for u in emu.users() if u["email"].lower() == email)


def routes(emu: Emulator) -> dict[str, int]:
    return dict(emu.stats()["requests_by_route"])


def writes(emu: Emulator) -> dict[str, int]:
    """Requests per route that write (or search), tokens aside."""
    return {r: n for r, n in routes(emu).items() if not r.startswith(("GET", "POST /oauth"))}


def cli_run(db: Path, emu: Emulator, *args: str) -> Any:
    return CliRunner().invoke(
        cli, ["--db", str(db), "--log-level", "error", *args], env=env_for(emu)
    )


def run_process(db: Path, emu: Emulator, *args: str, timeout: float = 90) -> str:
    """`jobrunner run ARGS` as a real process: "exit N" and its stderr (JSON log lines).
    Fails the test if the run is still going after `timeout` (a run retrying for ever)."""
    proc = spawn(db, emu, "run", "--no-progress", *args)
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _out, err = proc.communicate(timeout=10)
        pytest.fail(f"`jobrunner run` was still going after {timeout} s:\n{err[-3000:]}")
    return f"exit {proc.returncode}\n{err}"


def steps_by_email(db: Path, kind: str) -> dict[str, tuple[str, int, str | None, str | None]]:
    """email -> (status, attempts, error_code, error_message) of each row's step of `kind`."""
    with Ledger.open(db, create=False) as ledger:
        found = ledger.execute(
            "SELECT rows.email, steps.status, steps.attempts, steps.error_code, "
            "steps.error_message FROM steps JOIN rows ON rows.id = steps.row_id "
            "WHERE steps.kind = ?",
            (kind,),
        ).fetchall()
    return {email: tuple(rest) for email, *rest in found}  # type: ignore[misc]


# -- a. the CSV report guards cells a spreadsheet would run -------------------------------------


def test_csv_report_guards_cells_that_start_with_a_tab_or_a_carriage_return(
    tmp_path: Path,
) -> None:
    """A spreadsheet reads a cell starting with a tab or a CR as one starting with what
    follows (OWASP's CSV-injection list): `report --format csv` prefixes them with `'`.
    Such values come from what jobrunner does not control (an API's error message)."""
    db = tmp_path / "ledger.db"
    f = tmp_path / "u.csv"
    f.write_text(
        "first_name,last_name,email\nTab,Error,tab@example.com\nCr,Error,cr@example.com\n"
        "Mid,Tab,mid@example.com\n",
        encoding="utf-8",
    )
    assert CliRunner().invoke(cli, ["--db", str(db), "ingest", str(f)]).exit_code == 0
    with Ledger.open(db) as ledger:  # what a run records from the API's answers
        for email, message in (
            ("tab@example.com", '\t=HYPERLINK("http://evil.example")'),
            ("cr@example.com", "\r=1+2"),
            ("mid@example.com", "bad\t=1+2"),
        ):
            ledger.execute(
                "UPDATE rows SET status = 'failed', error_code = 'bad.request', "
                "error_message = ? WHERE email = ?",
                (message, email),
            )
    result = CliRunner().invoke(cli, ["--db", str(db), "report", "--format", "csv"])
    assert result.exit_code == 0, result.output
    text = result.output.removeprefix("\ufeff")
    errors = {r["email"]: r["error"] for r in csv.DictReader(io.StringIO(text, newline=""))}
    assert errors["tab@example.com"] == '\'\t=HYPERLINK("http://evil.example")'
    assert errors["cr@example.com"] == "'\r=1+2"
    assert errors["mid@example.com"] == "bad\t=1+2"  # only a cell's first character counts


# -- b. --update-existing sends the file's proficiency -----------------------------------------


def test_update_existing_sets_a_held_skill_to_the_files_proficiency(
    emulator: Any, ledger_for: Any, http_client: Any
) -> None:
    emu = emulator()
    email = "sam.skilled@example.com"
    emu.directory.add_existing({"name": "Sam Skilled", "email": email})
    api = http_client(emu.port, emu.config.client_id, emu.config.client_secret)
    assert api.login()[0] == 200
    held_before = [
        {"id": org_id("skills", "English"), "proficiency": 1},
        {"id": org_id("skills", "Chat"), "proficiency": 3},
    ]
    path = f"/api/v2/users/{user_of(emu, email)['id']}/routingskills/bulk"
    assert api.api("PATCH", path, held_before)[0] == 200
    ledger = ledger_for(
        [{"name": "Sam Skilled", "email": email, "skills": "English:4, Chat:3, Spanish:2"}]
    )
    assert run_against(emu, ledger, update_existing=True).exit_code == 0
    assert held(emu, email)["skills"] == {"English": 4.0, "Chat": 3.0, "Spanish": 2.0}
    report = CliRunner().invoke(cli, ["--db", str(ledger.path), "report", "--format", "json"])
    (row,) = json.loads(report.output)["rows"]
    assert "English 4" in row["changes"] and "Spanish 2" in row["changes"]
    assert "Chat" not in row["changes"]  # held at the file's level already: not sent
    # In line now: a second run sends no skills at all.
    before = routes(emu)[SKILLS]
    assert run_against(emu, ledger, update_existing=True).exit_code == 0
    assert routes(emu)[SKILLS] == before


# -- c. a queue batch refused with 404 is split to find the member at fault --------------------


def test_a_queue_batch_refused_for_one_unknown_member_fails_only_that_member(
    emulator: Any, ledger_for: Any
) -> None:
    people = [
        {"name": f"Queue {i}", "email": f"q{i}@example.com", "queues": "Billing"} for i in range(8)
    ]
    # Run 1: everyone is created; the queue step is refused (no permission): still pending.
    emu = emulator(refused_permissions={"routing:queue:edit"})
    ledger = ledger_for(people)
    with pytest.raises(ConfigError, match="routing:queue:edit"):
        run_against(emu, ledger)
    # Meanwhile someone deletes one of them; an hour passes (no id is fresh any more).
    gone = "q5@example.com"
    emu.directory.delete(user_of(emu, gone)["id"])
    ledger.execute("UPDATE rows SET settled_at = settled_at - 3600")
    ledger.close()
    emu.config.refused_permissions = set()
    before = routes(emu).get(MEMBERS, 0)
    out = run_process(ledger.path, emu, "--max-attempts", "3")
    assert out.startswith("exit 1\n"), out[-3000:]
    steps = steps_by_email(ledger.path, "queue")
    assert steps[gone][0] == "failed" and "does not know this user" in (steps[gone][3] or "")
    assert {e for e, s in steps.items() if s[0] == "done"} == {p["email"] for p in people} - {gone}
    queue = emu.stats()["onboarding"]
    for person in people:
        if person["email"] != gone:
            assert queue[person["email"]]["queues"] == ["Billing"], person["email"]
    # Halving 8 members to the one at fault: the batch, then two calls per level (4, 2, 1).
    assert routes(emu)[MEMBERS] - before <= 1 + 2 * 3


# -- d. an empty phone cell leaves the person's number alone -----------------------------------


def test_update_existing_with_only_an_extension_keeps_the_persons_work_number(
    emulator: Any, ledger_for: Any
) -> None:
    emu = emulator()
    email = "ext.only@example.com"
    emu.directory.add_existing(
        {
            "name": "Ext Only",
            "email": email,
            "addresses": [{"mediaType": "PHONE", "type": "WORK", "address": "+13175550101"}],
        }
    )
    ledger = ledger_for([{"name": "Ext Only", "email": email, "extension": "2042"}])
    assert run_against(emu, ledger, update_existing=True).exit_code == 0
    work = [
        a
        for a in user_of(emu, email)["addresses"]
        if (a["mediaType"], a["type"]) == ("PHONE", "WORK")
    ]
    assert len(work) == 1, work
    assert work[0].get("address") == "+13175550101" and work[0].get("extension") == "2042"


# -- e. rollback never deletes people who were there before ------------------------------------


def test_rollback_never_deletes_a_person_who_was_there_before(
    emulator: Any, ledger_for: Any
) -> None:
    """`exists` is what says a person was there before the job. The row's `settled_by`
    (how its user id became known) is made to say every value it can hold, so that the
    status alone has to keep these people safe, with every --include flag given."""
    new = [{"name": f"New {i}", "email": f"new{i}@example.com"} for i in range(3)]
    before = [
        {"name": f"Before {i}", "email": f"before{i}@example.com", "title": "From the file"}
        for i in range(4)
    ]
    emu = emulator()
    for person in before:
        emu.directory.add_existing({"name": person["name"], "email": person["email"]})
    ids = {p["email"]: user_of(emu, p["email"])["id"] for p in before}
    ledger = ledger_for(new + before)
    assert run_against(emu, ledger, update_existing=True).exit_code == 0
    for person, settled_by in zip(before, ("conflict", None, "lookup", "restore"), strict=True):
        ledger.execute(
            "UPDATE rows SET settled_by = ? WHERE email = ?", (settled_by, person["email"])
        )
    db = ledger.path
    everything = ("--include-looked-up", "--include-restored", "--yes", "--no-progress")
    named = [arg for p in before for arg in ("--email", p["email"])]
    result = cli_run(db, emu, "rollback", *named, *everything)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("0 users this ledger created will be deleted"), result.output
    result = cli_run(db, emu, "rollback", *everything)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("3 users this ledger created will be deleted"), result.output
    assert routes(emu)["DELETE /api/v2/users/{id}"] == 3
    for person in before:
        user = user_of(emu, person["email"])
        assert user["state"] == "active" and user["id"] == ids[person["email"]]
    for person in new:
        assert user_of(emu, person["email"])["state"] == "deleted"
    rows = dict(ledger.execute("SELECT email, status || ' ' || coalesce(user_id, '') FROM rows"))
    for person in before:
        assert rows[person["email"]] == f"exists {ids[person['email']]}"


# -- f. a plain run leaves rolled-back rows alone -----------------------------------------------


def test_a_plain_run_after_a_rollback_brings_nobody_back(emulator: Any, ledger_for: Any) -> None:
    people = [
        {"name": f"Undone {i}", "email": f"undone{i}@example.com", "queues": "Billing"}
        for i in range(4)
    ]
    emu = emulator()
    ledger = ledger_for(people)
    assert run_against(emu, ledger).exit_code == 0
    ids = {p["email"]: user_of(emu, p["email"])["id"] for p in people}
    result = cli_run(ledger.path, emu, "rollback", "--yes", "--no-progress")
    assert result.exit_code == 0, result.output
    writes_before = writes(emu)
    assert run_against(emu, ledger).exit_code == 0
    writes_after = writes(emu)
    assert writes_after == writes_before  # no create, no search, no restore, no step
    assert {user_of(emu, p["email"])["state"] for p in people} == {"deleted"}
    assert {s for (s,) in ledger.execute("SELECT status FROM rows")} == {"rolled_back"}
    # Asked for, they come back: the same users, restored, never created twice.
    assert run_against(emu, ledger, recreate_rolled_back=True).exit_code == 0
    for person in people:
        user = user_of(emu, person["email"])
        assert user["state"] == "active" and user["id"] == ids[person["email"]]
    assert set(emu.stats()["creations_by_email"].values()) == {1}


# -- g. a 404 for a user created long ago fails at once -----------------------------------------


def test_a_404_for_a_user_created_long_ago_fails_instead_of_waiting_for_the_id(
    emulator: Any, ledger_for: Any
) -> None:
    """A 404 is retried only while the user is fresh from its create (other services learn
    new ids late). For a user created an hour ago it means the user is gone: fail, once."""
    people = [
        {"name": f"Grant {i}", "email": f"grant{i}@example.com", "roles_divisions": "Agent"}
        for i in range(5)
    ]
    emu = emulator(refused_permissions={"authorization:grant:add"})
    ledger = ledger_for(people)
    with pytest.raises(ConfigError, match="authorization:grant:add"):
        run_against(emu, ledger)
    gone = "grant2@example.com"
    emu.directory.delete(user_of(emu, gone)["id"])
    ledger.execute("UPDATE rows SET settled_at = settled_at - 3600")
    ledger.close()
    emu.config.refused_permissions = set()
    before = routes(emu).get(ROLE_BATCH, 0)
    out = run_process(ledger.path, emu, "--max-attempts", "5", timeout=60)
    assert out.startswith("exit 1\n"), out[-3000:]
    steps = steps_by_email(ledger.path, "roles")
    status, attempts, code, _message = steps[gone]
    assert (status, attempts) == ("failed", 1) and code and "not.found" in code
    assert {e for e, s in steps.items() if s[0] == "done"} == {p["email"] for p in people} - {gone}
    # One batch, split in halves to find the one at fault: never retried as if fresh.
    assert routes(emu)[ROLE_BATCH] - before <= len(people)


# -- h. the re-check before a create compares with what ingest stores --------------------------


def test_a_ledger_value_ingest_would_have_normalised_is_never_sent(
    emulator: Any, ledger_for: Any
) -> None:
    """Ingest stores phones in E.164 and managers' emails in lower case; a ledger row
    holding anything else did not come from ingest (a damaged or hand-edited ledger)."""
    people = [{"name": f"Check {i}", "email": f"check{i}@example.com"} for i in range(4)]
    emu = emulator()
    ledger = ledger_for(people)
    for email, column, value in (
        ("check0@example.com", "phone_number", "+1 317 555 0101"),
        ("check1@example.com", "email_manager", "Maria.Gonzalez@Example.com"),
    ):
        ledger.execute(f"UPDATE rows SET {column} = ? WHERE email = ?", (value, email))
    assert run_against(emu, ledger).exit_code == 1
    rows = {
        email: (status, code, message)
        for email, status, code, message in ledger.execute(
            "SELECT email, status, error_code, error_message FROM rows"
        )
    }
    for email, column in (
        ("check0@example.com", "phone_number"),
        ("check1@example.com", "email_manager"),
    ):
        status, code, message = rows[email]
        assert (status, code) == ("failed", "ledger_row_invalid"), rows[email]
        assert column in message and "nothing was sent" in message
    assert routes(emu)[CREATE] == 2  # the other two; never these
    assert set(emu.stats()["creations_by_email"]) == {"check2@example.com", "check3@example.com"}


# -- i. run checks the ledger before it sends anything -----------------------------------------


def test_run_refuses_a_damaged_ledger_before_any_request(tmp_path: Path, emulator: Any) -> None:
    """Damage where a run does not read (the sources table's page) is found only by the
    integrity check: without it, this run would create all 300 people from a ledger that
    is broken."""
    db = tmp_path / "ledger.db"
    f = tmp_path / "u.csv"
    f.write_text(
        "first_name,last_name,email\n" + "".join(f"P,{i},p{i}@example.com\n" for i in range(300)),
        encoding="utf-8",
    )
    assert CliRunner().invoke(cli, ["--db", str(db), "ingest", str(f)]).exit_code == 0
    with Ledger.open(db) as ledger:
        ledger.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = ledger.execute("PRAGMA page_size").fetchone()
        pages = [p for (p,) in ledger.execute("SELECT pageno FROM dbstat WHERE name = 'sources'")]
    assert pages
    data = bytearray(db.read_bytes())
    for page in pages:
        start = (page - 1) * page_size
        data[start + 8 : start + 40] = b"\xa5" * 32
    db.write_bytes(bytes(data))
    emu = emulator()
    result = cli_run(db, emu, "run", "--no-progress")
    assert result.exit_code == 1, result.output
    assert "is damaged" in result.output and "nothing was sent" in result.output
    assert emu.stats()["requests_total"] == 0


# -- j. the log masks fields named like secrets --------------------------------------------------

SECRET_FIELDS = {
    "client_secret": "s3cr3t-value-1",
    "access_token": "t0ken-value-2",
    "Authorization": "Bearer b3arer-value-3",
    "password": "passw0rd-value-4",
    "refresh_TOKEN": "t0ken-value-5",
}


@pytest.fixture
def restore_structlog() -> Any:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_the_log_masks_fields_named_like_secrets(fmt: str, restore_structlog: Any) -> None:
    out = io.StringIO()
    log.configure(level="info", fmt=fmt, stream=out)
    log.get_logger("jobrunner.test").info("token.fetched", route="/oauth/token", **SECRET_FIELDS)
    text = out.getvalue()
    for value in SECRET_FIELDS.values():
        assert value not in text, text
    assert "token.fetched" in text and "/oauth/token" in text  # the event itself is kept
    if fmt == "json":
        event = json.loads(text)
        assert {k: event[k] for k in SECRET_FIELDS} == dict.fromkeys(SECRET_FIELDS, "***")
    else:
        for key in SECRET_FIELDS:
            assert f"{key}=***" in text, text
