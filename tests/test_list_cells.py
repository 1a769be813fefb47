"""`;` in the list cells (roles_divisions, queues, skills), as the admin UI's import reads
them: items are separated by commas (or line breaks); inside a role's brackets `;`
separates divisions (`Agent:[Sales; Support]`: the role in both); a `;` between items is
refused at ingest with the reason, never found first by `check` as an unknown name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from emulated import env_for
from test_onboarding import FAST, emulator, held, ledger_for

from jobrunner.cli import cli

__all__ = ["emulator", "ledger_for"]  # pytest fixtures used by name


def ingest(tmp_path: Path, text: str) -> tuple[Path, dict[str, dict[str, Any]]]:
    """Ingest `text` as a file: the ledger and its rows by email (report --format json)."""
    f = tmp_path / "users.csv"
    f.write_text(text, encoding="utf-8")
    db = tmp_path / "ledger.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "--log-level", "error", "ingest", str(f)])
    assert result.exit_code == 0, result.output
    report = CliRunner().invoke(cli, ["--db", str(db), "report", "--format", "json"])
    return db, {r["email"]: r for r in json.loads(report.output)["rows"]}


@pytest.mark.parametrize(
    ("column", "cell", "code", "fixed"),
    [
        ("roles_divisions", "Employee; Agent", "roles_invalid", "'Employee, Agent'"),
        (
            "roles_divisions",
            "Employee; Agent:[Sales]",
            "roles_invalid",
            "'Employee, Agent:[Sales]'",
        ),
        ("queues", "Billing; Retention", "queues_invalid", "'Billing, Retention'"),
        ("skills", "English; Spanish", "skills_invalid", "'English, Spanish'"),
        ("skills", "English:3; Spanish:2", "skills_invalid", "'English:3, Spanish:2'"),
    ],
)
def test_a_semicolon_between_items_is_refused_at_ingest_with_the_reason(
    tmp_path: Path, column: str, cell: str, code: str, fixed: str
) -> None:
    _db, rows = ingest(
        tmp_path, f'name,email,{column}\nAda,ada@example.com,"{cell}"\nBo,bo@example.com,\n'
    )
    ada = rows["ada@example.com"]
    assert (ada["status"], ada["error_code"]) == ("invalid", code)
    assert f"{column} item {cell!r} holds a ';'" in ada["error"]
    assert (
        f"items are separated by commas (or line breaks), as in the admin UI's import: "
        f"write {fixed}" in ada["error"]
    )
    assert rows["bo@example.com"]["status"] == "pending"


def test_check_never_sees_a_semicolon_list_as_one_name(tmp_path: Path, emulator: Any) -> None:
    """`check` (what `run` resolves) has nothing left to say about those rows: every name of
    the pending rows resolves."""
    db, rows = ingest(
        tmp_path,
        "name,email,roles_divisions,queues\n"
        'Ada,ada@example.com,"Employee; Agent",Billing\n'
        'Bo,bo@example.com,Employee,"Billing; Retention"\n'
        "Cy,cy@example.com,Employee,Billing\n",
    )
    assert [r["status"] for r in rows.values()] == ["invalid", "invalid", "pending"]
    checked = CliRunner().invoke(
        cli, ["--db", str(db), "--log-level", "error", "check"], env=env_for(emulator())
    )
    assert checked.exit_code == 0, checked.output
    assert "every name resolves" in checked.output and ";" not in checked.output


def test_a_role_with_several_divisions_in_its_brackets_is_granted_in_each(
    emulator: Any, ledger_for: Any
) -> None:
    """The admin UI's import writes a role held in several divisions as `Role: [A; B]`."""
    from emulated import run_against

    email = "multi@example.com"
    ledger = ledger_for(
        [
            {
                "name": "Multi Division",
                "email": email,
                "roles_divisions": "Employee, Agent: [Sales; EMEA Support], Supervisor:[Sales]",
                "division": "Support",
            }
        ]
    )
    emu = emulator()
    assert run_against(emu, ledger, policy=FAST).exit_code == 0
    assert held(emu, email)["grants"] == [
        ["Agent", "EMEA Support"],
        ["Agent", "Sales"],
        ["Employee", "Home"],  # every Genesys user holds it from creation
        ["Employee", "Support"],
        ["Supervisor", "Sales"],
    ]
    (stored,) = ledger.execute("SELECT roles_divisions FROM rows").fetchone()
    assert stored == "Employee, Agent:[Sales], Agent:[EMEA Support], Supervisor:[Sales]"


def test_a_semicolon_delimited_file_with_comma_separated_items_is_read(tmp_path: Path) -> None:
    """What a European Excel saves: `;` between columns, commas inside the list cells (and
    the cells holding a `;` quoted)."""
    _db, rows = ingest(
        tmp_path,
        "name;email;roles_divisions;queues;skills\n"
        'Jürgen Weiß;j@example.com;"Employee, Agent:[Sales; Support]";Billing, Retention;'
        "English:4, German:5\n",
    )
    row = rows["j@example.com"]
    assert row["status"] == "pending", row["error"]
    assert row["roles_divisions"] == "Employee, Agent:[Sales], Agent:[Support]"
    assert row["queues"] == "Billing, Retention" and row["skills"] == "English:4, German:5"
