"""Files as admins really have them, and ledger data that can be fixed (ingest, forget)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from jobrunner.cli import cli
from jobrunner.ledger import Ledger

HEADER = "first_name,last_name,email,phone_number,division_id,title,department\n"
ADMIN_HEADER = (
    "name,email,phone_work,extension,title,department,email_manager,location_work,"
    "roles_divisions,queues,division,skills\n"
)


def run(db: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), "--log-level", "error", *args], input=input)


def write(tmp_path: Path, name: str, content: str) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8", newline="")
    return path


def rows(db: Path) -> dict[str, dict]:
    result = run(db, "report", "--format", "json")
    assert result.exit_code == 0, result.output
    return {r["email"].lower(): r for r in json.loads(result.output)["rows"]}


def sql(db: Path, statement: str) -> None:
    with Ledger.open(db) as ledger:
        ledger.execute(statement)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger.db"


# -- headers ---------------------------------------------------------------------------------


def test_header_names_admins_write_map_to_our_columns(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "hr-export.csv",
        "Given Name,Family Name,E-mail,Work Phone,Job Title,Dept,Mobile\n"
        "Ada,Lovelace,ada@example.com,+44 20 7946 0958,Engineer,R&D,+1 317 555 0101\n",
    )
    result = run(db, "ingest", str(f))
    assert result.exit_code == 0, result.output
    assert "added:            1 to create" in result.output
    # Two columns for the phone: the first alias in the table wins, the other is named.
    assert "ignored column:   Mobile (the file's Work Phone column is used instead)" in (
        result.output
    )
    ada = rows(db)["ada@example.com"]
    assert (ada["first_name"], ada["last_name"], ada["name"]) == ("Ada", "Lovelace", "Ada Lovelace")
    assert (ada["title"], ada["department"], ada["phone_number"]) == (
        "Engineer",
        "R&D",
        "+442079460958",
    )


def test_a_column_close_to_one_we_know_gets_did_you_mean(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "u.csv",
        "first_name,last_name,email,titel,departmnt,Notes\nAda,L,ada@example.com,Eng,R&D,x\n",
    )
    result = run(db, "ingest", str(f))
    assert result.exit_code == 0, result.output
    assert (
        "ignored columns:  titel (did you mean title?), departmnt (did you mean department?), "
        "Notes\n" in result.output
    )


def test_a_semicolon_file_missing_a_column_is_told_only_what_is_missing(
    tmp_path: Path, db: Path
) -> None:
    f = write(tmp_path, "u.csv", "E-mail;Title;Department\nada@example.com;Eng;R&D\n")
    result = run(db, "ingest", str(f))
    assert result.exit_code == 1
    assert "missing required column(s) name (or first_name and last_name);" in result.output
    assert "email" not in result.output.split("columns found")[0].split("column(s)")[1]
    assert "'E-mail', 'Title', 'Department'" in result.output  # split on semicolons
    assert len(result.output.strip().splitlines()) == 1


def test_a_semicolon_file_with_aliases_is_read(tmp_path: Path, db: Path) -> None:
    f = write(tmp_path, "u.csv", "Vorname;Nachname;E-Mail\nJürgen;Weiß;j@example.com\n")
    result = run(db, "ingest", str(f))
    assert result.exit_code == 0, result.output
    assert "delimiter:        semicolon" in result.output
    assert rows(db)["j@example.com"]["name"] == "Jürgen Weiß"


# -- phones ------------------------------------------------------------------------------------


def test_default_country_reads_local_numbers(tmp_path: Path, db: Path) -> None:
    f = write(tmp_path, "u.csv", HEADER + "Ada,L,ada@example.com,(317) 555-0142,,,\n")
    result = run(db, "ingest", str(f))
    assert result.exit_code == 0
    ada = rows(db)["ada@example.com"]
    assert ada["status"] == "invalid" and "--default-country" in ada["error"]
    result = run(db, "ingest", "--default-country", "us", str(f))
    assert result.exit_code == 0, result.output
    assert "corrected:        1" in result.output
    ada = rows(db)["ada@example.com"]
    assert ada["status"] == "pending" and ada["phone_number"] == "+13175550142"


def test_a_wrong_default_country_is_one_line(tmp_path: Path, db: Path) -> None:
    f = write(tmp_path, "u.csv", HEADER + "Ada,L,ada@example.com,,,,\n")
    result = run(db, "ingest", "--default-country", "USA", str(f))
    assert result.exit_code == 2  # a bad command line, as for any other option
    assert "Invalid value for '--default-country': 'USA' is not a country code" in result.output
    assert not db.exists()


def test_a_missing_column_close_to_one_the_file_has_gets_did_you_mean(
    tmp_path: Path, db: Path
) -> None:
    f = write(tmp_path, "u.csv", "name,Emial\nAda Lovelace,ada@example.com\n")
    result = run(db, "ingest", str(f))
    assert result.exit_code == 1
    assert "missing required column(s) email;" in result.output
    assert "did you mean email ('Emial')?" in result.output


# -- the admin UI's template ---------------------------------------------------------------------


def test_the_admin_ui_template_is_read_with_every_assignment(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "admin.csv",
        ADMIN_HEADER
        + "Ada Lovelace,ada@example.com,+13175550101,204,Engineer,R&D,boss@example.com,"
        '"Dublin Office, Ireland","Agent:[Sales], Supervisor","Billing, VIP Care",Sales,'
        '"English:5, Billing"\n' + "Boss Person,boss@example.com,,,,,,,,,,\n",
    )
    result = run(db, "ingest", str(f))
    assert result.exit_code == 0, result.output
    ada = rows(db)["ada@example.com"]
    assert ada["name"] == "Ada Lovelace" and ada["extension"] == "204"
    assert ada["location_work"] == "Dublin Office, Ireland"  # a single name may hold a comma
    assert ada["roles_divisions"] == "Agent:[Sales], Supervisor"
    assert ada["queues"] == "Billing, VIP Care"
    assert ada["skills"] == "English:5, Billing:0"  # no proficiency: 0
    assert ada["division"] == "Sales" and ada["division_id"] is None  # resolved at run time
    assert ada["steps"] == {
        name: {"status": "pending", "error": None}
        for name in ("roles", "skills", "queues", "profile")
    }
    assert rows(db)["boss@example.com"]["steps"] == {}


@pytest.mark.parametrize(
    ("cells", "code", "words"),
    [
        ({"roles_divisions": "Agent:Sales"}, "roles_invalid", "'Role:[Division]'"),
        ({"roles_divisions": "Agent:[ ]"}, "roles_invalid", "'Agent:[ ]'"),
        ({"skills": "English:7"}, "skills_invalid", "N from 0 to 5"),
        ({"skills": "English:high"}, "skills_invalid", "'English:high'"),
        ({"skills": "English:3, english:4"}, "skills_invalid", "twice"),
        ({"email_manager": "boss@"}, "manager_invalid", "email_manager 'boss@'"),
        ({"email_manager": "ADA@example.com"}, "manager_invalid", "own email"),
        ({"extension": "20-4"}, "extension_invalid", "not only digits"),
        ({"name": " "}, "name_missing", "name is empty"),
        ({"name": "Ada\nLovelace"}, "line_break", "name contains a line break"),
        ({"title": "Lead\r\nTeam B"}, "line_break", "title contains a line break"),
    ],
)
def test_cell_syntax_is_checked_at_ingest(
    tmp_path: Path, db: Path, cells: dict[str, str], code: str, words: str
) -> None:
    values = dict.fromkeys(ADMIN_HEADER.strip().split(","), "")
    values.update(name="Ada Lovelace", email="ada@example.com")
    values.update(cells)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(values), lineterminator="\n")
    writer.writeheader()
    writer.writerow(values)
    f = write(tmp_path, "admin.csv", buffer.getvalue())
    assert run(db, "ingest", str(f)).exit_code == 0
    ada = rows(db)["ada@example.com"]
    assert ada["status"] == "invalid" and ada["error_code"] == code, ada
    assert words in ada["error"]


def test_a_list_cell_may_hold_one_item_a_line(tmp_path: Path, db: Path) -> None:
    """A spreadsheet cell written with Alt+Enter: the line breaks separate items."""
    f = write(
        tmp_path,
        "admin.csv",
        ADMIN_HEADER + 'Ada Lovelace,ada@example.com,,,,,,,"Agent:[Sales]\nSupervisor",'
        '"Billing\r\nVIP Care,\nSales",,"English:5\nBilling:2"\n',
    )
    assert run(db, "ingest", str(f)).exit_code == 0
    with sqlite3.connect(db) as conn:
        wants = conn.execute("SELECT kind, name FROM wants ORDER BY kind, position").fetchall()
    assert wants == [
        ("queue", "Billing"),
        ("queue", "VIP Care"),
        ("queue", "Sales"),
        ("role", "Agent"),
        ("role", "Supervisor"),
        ("skill", "English"),
        ("skill", "Billing"),
    ]


# -- data that can be fixed ------------------------------------------------------------------


def test_report_csv_fed_back_to_ingest_fixes_failed_rows(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "u.csv",
        HEADER
        + "Ada,L,ada@example.com,+13175550101,,=cmd,\n"
        + "'t Hooft,Gerard,gt@example.com,,,,\n"
        + "Grace,Hopper,grace@example.com,,,,\n",
    )
    assert run(db, "ingest", str(f)).exit_code == 0
    sql(
        db,
        "UPDATE rows SET status = 'failed', attempts = 3, error_code = 'invalid.value', "
        "error_message = 'bad division' WHERE email = 'ada@example.com'",
    )
    exported = run(db, "report", "--format", "csv")
    assert exported.exit_code == 0
    assert "'+13175550101" in exported.output and "'=cmd" in exported.output
    # The admin fixes Ada's row in a spreadsheet: a new department.
    fixed = exported.output.replace("'=cmd,", "'=cmd,Support", 1)
    assert fixed != exported.output
    g = write(tmp_path, "fixed.csv", fixed)
    result = run(db, "ingest", str(g))
    assert result.exit_code == 0, result.output
    assert "updated:          1 (never sent: new values taken; 1 failed row is pending again)" in (
        result.output
    )
    assert "already present:  2" in result.output
    got = rows(db)
    ada = got["ada@example.com"]
    assert ada["status"] == "pending" and ada["attempts"] == 0 and ada["error"] is None
    assert ada["department"] == "Support"
    assert ada["phone_number"] == "+13175550101" and ada["title"] == "=cmd"  # quote removed
    assert got["gt@example.com"]["first_name"] == "'t Hooft"  # a quote that is a name stays
    assert ada["source"] == "fixed.csv"


def test_reingest_updates_rows_never_sent_and_people_with_a_user_follow_the_file(
    tmp_path: Path, db: Path
) -> None:
    people = [f"p{i}@example.com" for i in range(6)]
    first = write(
        tmp_path, "a.csv", HEADER + "".join(f"P,{i},{e},,,Old,\n" for i, e in enumerate(people))
    )
    assert run(db, "ingest", str(first)).exit_code == 0
    # 0 pending never sent; 1 failed, never in doubt; 2 failed in doubt; 3 pending in doubt;
    # 4 created; 5 exists.
    sql(db, "UPDATE rows SET status = 'failed', attempts = 2 WHERE email = 'p1@example.com'")
    sql(
        db,
        "UPDATE rows SET status = 'failed', attempts = 2, in_doubt = 1 "
        "WHERE email = 'p2@example.com'",
    )
    sql(db, "UPDATE rows SET attempts = 1, in_doubt = 1 WHERE email = 'p3@example.com'")
    sql(db, "UPDATE rows SET status = 'created', user_id = 'u4' WHERE email = 'p4@example.com'")
    sql(db, "UPDATE rows SET status = 'exists', user_id = 'u5' WHERE email = 'p5@example.com'")
    second = write(
        tmp_path, "b.csv", HEADER + "".join(f"P,{i},{e},,,New,\n" for i, e in enumerate(people))
    )
    result = run(db, "ingest", str(second))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "updated:          2" in out and "1 failed row is pending again" in out
    assert "not updated:      2" in out
    assert "2: a create may have been sent: the row keeps the values a create sends" in out
    assert "line 4 (p2@example.com)" in out
    assert "line 5 (p3@example.com)" in out
    # Issue 16: a person with a user follows the file: the job's own at the next run, people
    # who were there before with --update-existing.
    assert "to update:        1 person this job created: the next `jobrunner run`" in out
    assert (
        "to update:        1 person there before the job: `jobrunner run --update-existing`" in out
    )
    got = rows(db)
    assert [got[e]["title"] for e in people] == ["New", "New", "Old", "Old", "New", "New"]
    assert (got["p1@example.com"]["status"], got["p1@example.com"]["attempts"]) == ("pending", 0)
    assert (got["p2@example.com"]["status"], got["p2@example.com"]["attempts"]) == ("failed", 2)
    assert got["p4@example.com"]["status"] == "created"


def test_a_row_invalid_again_takes_the_new_files_values_and_reason(
    tmp_path: Path, db: Path
) -> None:
    first = write(tmp_path, "t1.csv", ADMIN_HEADER + "Ada Lovelace,ada@example.com,,12a,,,,,,,,\n")
    assert run(db, "ingest", str(first)).exit_code == 0
    assert rows(db)["ada@example.com"]["error_code"] == "extension_invalid"
    # The extension is fixed, but the roles cell is wrong now.
    second = write(
        tmp_path, "t1b.csv", ADMIN_HEADER + "Ada Lovelace,ada@example.com,,12,,,,,Agent:Sales,,,\n"
    )
    result = run(db, "ingest", str(second))
    assert result.exit_code == 0, result.output
    assert "invalid:          1 (1 invalid in an earlier ingest too" in result.output
    assert "roles_invalid" in result.output and "already present:  0" in result.output
    ada = rows(db)["ada@example.com"]
    assert (ada["status"], ada["error_code"]) == ("invalid", "roles_invalid")
    assert (ada["extension"], ada["source"]) == ("12", "t1b.csv")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM rows").fetchone() == (1,)


def test_a_duplicate_line_ingested_again_is_already_present_not_kept(
    tmp_path: Path, db: Path
) -> None:
    f = write(
        tmp_path, "u.csv", HEADER + "Ada,L,ada@example.com,,,,\nAda,Again,ADA@example.com,,,,\n"
    )
    assert run(db, "ingest", str(f)).exit_code == 0
    again = run(db, "ingest", str(f))
    assert "already present:  2" in again.output and "not updated" not in again.output


def test_ingest_log_and_summary_agree_on_added(tmp_path: Path, db: Path) -> None:
    f = write(tmp_path, "u.csv", HEADER + "Ada,L,ada@example.com,,,,\nBad,Row,nope,,,,\n")
    result = CliRunner().invoke(cli, ["--db", str(db), "--log-format", "json", "ingest", str(f)])
    assert result.exit_code == 0
    event = json.loads(result.stderr.strip().splitlines()[-1])
    assert event["event"] == "ingested"
    assert "added:            1 to create" in result.stdout and event["to_create"] == 1
    assert "invalid:          1" in result.stdout and event["invalid"] == 1


# -- forget ------------------------------------------------------------------------------------


def test_forget_removes_rows_never_sent_and_names_what_it_keeps(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "a.csv",
        ADMIN_HEADER
        + "".join(f"P {i},p{i}@example.com,,,,,,,Agent,Billing,,\n" for i in range(5))
        + "Bad,nope,,,,,,,,,,\n",
    )
    assert run(db, "ingest", str(f)).exit_code == 0
    sql(db, "UPDATE rows SET status = 'failed' WHERE email = 'p1@example.com'")
    sql(db, "UPDATE rows SET status = 'created', user_id = 'u' WHERE email = 'p2@example.com'")
    sql(db, "UPDATE rows SET in_doubt = 1, attempts = 1 WHERE email = 'p3@example.com'")
    # Not on a terminal and no --yes: nothing is removed.
    result = run(db, "forget", "--source", "a.csv")
    assert result.exit_code == 1 and "confirm with --yes" in result.output
    assert len(rows(db)) == 6
    result = run(db, "forget", "--source", "a.csv", "--yes")
    # Issue 16: it forgot what could go, and says what it kept and why: not a failure.
    assert result.exit_code == 0, result.output
    assert "4 rows to forget (1 failed, 1 invalid, 2 pending)" in result.output
    assert "kept: a.csv:4 p2@example.com: created" in result.output
    assert "kept: a.csv:5 p3@example.com: a create may have been sent" in result.output
    assert sorted(rows(db)) == ["p2@example.com", "p3@example.com"]
    with Ledger.open(db) as ledger:  # their plans went with them
        (orphans,) = ledger.execute(
            "SELECT count(*) FROM steps WHERE row_id NOT IN (SELECT id FROM rows)"
        ).fetchone()
    assert orphans == 0


def test_forget_by_email_asks_on_a_terminal_and_needs_a_filter(
    tmp_path: Path, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = write(tmp_path, "a.csv", HEADER + "Ada,L,ada@example.com,,,,\nBo,B,bo@example.com,,,,\n")
    assert run(db, "ingest", str(f)).exit_code == 0
    assert run(db, "forget").exit_code == 2
    monkeypatch.setattr("jobrunner.cli.common.stdin_is_terminal", lambda: True)
    result = run(db, "forget", "--email", "ADA@example.com", input="n\n")
    assert result.exit_code == 1 and len(rows(db)) == 2
    result = run(db, "forget", "--email", "ADA@example.com", input="y\n")
    assert result.exit_code == 0, result.output
    assert "forgot 1 row\n" in result.output and list(rows(db)) == ["bo@example.com"]
    # Asked for only rows that must stay: nothing forgotten, and the exit code says so.
    sql(db, "UPDATE rows SET status = 'created', user_id = 'u' WHERE email = 'bo@example.com'")
    kept = run(db, "forget", "--email", "bo@example.com", "--yes")
    assert kept.exit_code == 1 and "nothing forgotten: 1 row kept" in kept.output
    assert "kept: a.csv:3 bo@example.com: created" in kept.output
