"""`jobrunner report`: the table people read, and the JSON/CSV contract tools rely on."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from jobrunner.cli import cli
from jobrunner.ledger import Ledger

HEADER = "first_name,last_name,email,phone_number,division_id,title,department\n"


def run(db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), "--log-level", "error", *args])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    db = tmp_path / "ledger.db"
    f = tmp_path / "users.csv"
    f.write_text(
        HEADER
        + 'Ada,Lovelace,ada@example.com,+13175550101,,=HYPERLINK("http://x"),@SUM(A1)\n'
        + "Grace,Hopper,grace@example.com,,,,\n"
        + "Bad,Email,not-an-email,,,,\n"
        + "-Minus,Tab,minus@example.com,,,,\n",
        encoding="utf-8",
    )
    assert run(db, "ingest", str(f)).exit_code == 0
    # What a runner leaves behind: one created, one failed.
    with Ledger.open(db) as ledger:
        ledger.execute(
            "UPDATE rows SET status = 'created', user_id = 'u-1', attempts = 1 "
            "WHERE email = 'grace@example.com'"
        )
        ledger.execute(
            "UPDATE rows SET status = 'failed', attempts = 2, error_code = 'invalid.value', "
            "error_message = 'HTTP 400 invalid.value: bad title' WHERE email = 'ada@example.com'"
        )
    return db


def test_json_contract(db: Path) -> None:
    result = run(db, "report", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["counts"] == {
        "pending": 1,
        "in_progress": 0,
        "created": 1,
        "exists": 0,
        "failed": 1,
        "invalid": 1,
        "rolled_back": 0,
    }
    assert len(data["rows"]) == 4
    for row in data["rows"]:
        assert isinstance(row["line"], int) and isinstance(row["attempts"], int)
        for key in ("email", "first_name", "last_name", "status"):
            assert isinstance(row[key], str)
        assert row["user_id"] is None or isinstance(row["user_id"], str)
        assert row["error"] is None or isinstance(row["error"], str)
    by_email = {r["email"]: r for r in data["rows"]}
    assert by_email["grace@example.com"]["user_id"] == "u-1"
    assert by_email["ada@example.com"]["error"] == "HTTP 400 invalid.value: bad title"
    assert by_email["ada@example.com"]["title"] == '=HYPERLINK("http://x")'  # JSON is raw
    assert by_email["not-an-email"]["status"] == "invalid"


def test_status_filter(db: Path) -> None:
    result = run(db, "report", "--format", "json", "--status", "created", "--status", "pending")
    data = json.loads(result.output)
    assert sorted(r["status"] for r in data["rows"]) == ["created", "pending"]
    assert data["counts"]["failed"] == 1  # counts stay whole


def test_csv_neutralises_formulas(db: Path) -> None:
    result = run(db, "report", "--format", "csv")
    assert result.exit_code == 0
    assert result.output.startswith("\ufeff")  # UTF-8's byte-order mark: Excel keeps accents
    rows = list(csv.DictReader(io.StringIO(result.output.removeprefix("\ufeff"))))
    by_email = {r["email"]: r for r in rows}
    ada = by_email["ada@example.com"]
    assert ada["title"] == '\'=HYPERLINK("http://x")'
    assert ada["department"] == "'@SUM(A1)"
    assert ada["phone_number"] == "'+13175550101"
    assert by_email["minus@example.com"]["first_name"] == "'-Minus"
    assert by_email["grace@example.com"]["first_name"] == "Grace"
    assert list(rows[0])[:8] == [
        "line",
        "email",
        "first_name",
        "last_name",
        "status",
        "user_id",
        "attempts",
        "error",
    ]


def test_table_shows_counts_then_failed_and_invalid_rows(db: Path) -> None:
    result = run(db, "report")
    assert result.exit_code == 0
    out = result.output
    assert "created             1" in out and "total               4" in out
    # Issue 16: the table lists exists rows too, and steps held back (waiting).
    assert "exists, failed and invalid rows, and rows with a failed or waiting step:" in out
    assert "users.csv:2" in out and "[invalid.value] HTTP 400 invalid.value: bad title" in out
    assert "users.csv:4" in out and "not-an-email" in out
    assert "grace@example.com" not in out


def test_report_without_a_ledger_is_a_one_line_error(tmp_path: Path) -> None:
    result = run(tmp_path / "nothing.db", "report")
    assert result.exit_code == 1
    assert "no ledger at" in result.output and "jobrunner ingest" in result.output
    assert not (tmp_path / "nothing.db").exists()


def test_report_on_a_file_that_is_not_a_ledger(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    result = run(junk, "report")
    assert result.exit_code == 1
    assert "not a jobrunner ledger" in result.output
    assert junk.read_bytes() == b"this is not sqlite" * 100


def test_report_and_help_never_import_the_sdk(db: Path) -> None:
    code = (
        "import sys\n"
        "from jobrunner.cli import cli\n"
        f"for args in (['--help'], ['--db', {str(db)!r}, 'report', '--format', 'json'], "
        f"['--db', {str(db)!r}, 'report']):\n"
        "    try:\n"
        "        cli(args, standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in sys.modules if m.startswith('PureCloudPlatformClientV2')]\n"
        "assert not heavy, heavy[:3]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", [[], ["ingest"], ["report"], ["run"], ["emulator"], ["demo"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
