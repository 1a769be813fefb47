"""CSV -> ledger -> report JSON preserves every field exactly (hypothesis)."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import unicodedata
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from jobrunner.cli import cli

# Any text a person can type on one line, tabs included (control characters are refused at
# ingest, and so are line breaks in a name, title or department: tests/test_ingest_fixes.py).
_chars = st.characters(exclude_categories=("Cs", "Cc"), include_characters="\t")
field = st.text(_chars, min_size=1, max_size=40).filter(
    lambda s: s == s.strip() and any(not c.isspace() and unicodedata.category(c) != "Cf" for c in s)
)
optional_field = st.one_of(st.none(), field)
local_part = st.from_regex(r"[A-Za-z0-9_+-]{1,20}(\.[A-Za-z0-9_+-]{1,10}){0,2}", fullmatch=True)


@st.composite
def people(draw: st.DrawFn) -> list[dict[str, str | None]]:
    n = draw(st.integers(min_value=1, max_value=8))
    locals_ = draw(st.lists(local_part, min_size=n, max_size=n, unique_by=str.lower))
    return [
        {
            "first_name": draw(field),
            "last_name": draw(field),
            "email": f"{local}@example.org",
            "title": draw(optional_field),
            "department": draw(optional_field),
        }
        for local in locals_
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=people(), crlf=st.booleans(), bom=st.booleans())
def test_every_field_survives_csv_ledger_report(
    rows: list[dict[str, str | None]], crlf: bool, bom: bool
) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer,
        fieldnames=["email", "first_name", "last_name", "title", "department"],
        lineterminator="\r\n" if crlf else "\n",
        # Python's writer quotes only the characters of its own line terminator: with "\n" a
        # bare "\r" in a value would go out unquoted (a line break), so quote everything.
        quoting=csv.QUOTE_MINIMAL if crlf else csv.QUOTE_ALL,
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "people.csv"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8"))
        db = Path(tmp) / "l.db"
        runner = CliRunner()
        result = runner.invoke(cli, ["--db", str(db), "--log-level", "error", "ingest", str(path)])
        assert result.exit_code == 0, result.output
        result = runner.invoke(cli, ["--db", str(db), "report", "--format", "json"])
        assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["counts"]["pending"] == len(rows), report
    got = [
        {k: r[k] for k in ("first_name", "last_name", "email", "title", "department")}
        for r in report["rows"]
    ]
    assert got == rows


# -- the CSV report: Excel opens it with accents intact, and it goes back into ingest ---------

_FIXED_BY_A_PERSON = ("email", "first_name", "last_name", "name", "title", "department")


def _ingest(runner: CliRunner, db: Path, path: Path) -> None:
    result = runner.invoke(cli, ["--db", str(db), "--log-level", "error", "ingest", str(path)])
    assert result.exit_code == 0, result.output


def _report(runner: CliRunner, db: Path, fmt: str) -> bytes:
    result = runner.invoke(cli, ["--db", str(db), "report", "--format", fmt])
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


def test_the_csv_report_starts_with_a_bom_so_excel_keeps_accents(tmp_path: Path) -> None:
    """Excel reads a CSV without a byte-order mark in the system's 8-bit code page: Zoë
    would show as ZoÃ«. With the mark it reads UTF-8."""
    f = tmp_path / "people.csv"
    f.write_text(
        "first_name,last_name,email,title\nZoë,Ñúñez-Müller,zoe@example.com,Directeur général\n",
        encoding="utf-8",
    )
    _ingest(CliRunner(), tmp_path / "l.db", f)
    data = _report(CliRunner(), tmp_path / "l.db", "csv")
    assert data.startswith(b"\xef\xbb\xbf") and not data.startswith(b"\xef\xbb\xbf" * 2)
    text = data[3:].decode("utf-8")
    assert text.startswith("line,email,first_name,last_name,")
    (row,) = csv.DictReader(io.StringIO(text, newline=""))
    assert (row["first_name"], row["last_name"]) == ("Zoë", "Ñúñez-Müller")
    assert row["title"] == "Directeur général"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=people(), formula=st.sampled_from(["=", "+", "-", "@", ""]))
@example(
    rows=[
        {
            "first_name": "Zoë",
            "last_name": "-Ng",
            "email": "zoe@example.org",
            "title": "SUM(A1)",
            "department": "@Ops",
        }
    ],
    formula="=",
)
def test_the_csv_report_fed_back_to_ingest_gives_the_same_people(
    rows: list[dict[str, str | None]], formula: str
) -> None:
    """CSV -> ledger -> `report --format csv` (BOM, formula guards) -> a new ledger: every
    field a person would fix in a spreadsheet comes back as it was."""
    if rows[0]["title"] is not None:
        rows[0]["title"] = formula + rows[0]["title"]  # a cell the report guards with '
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), quoting=csv.QUOTE_ALL)
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    runner = CliRunner()
    with tempfile.TemporaryDirectory() as tmp:
        first, exported = Path(tmp) / "people.csv", Path(tmp) / "report.csv"
        first.write_text(buffer.getvalue(), encoding="utf-8")
        _ingest(runner, Path(tmp) / "a.db", first)
        before = json.loads(_report(runner, Path(tmp) / "a.db", "json"))
        exported.write_bytes(_report(runner, Path(tmp) / "a.db", "csv"))
        _ingest(runner, Path(tmp) / "b.db", exported)
        after = json.loads(_report(runner, Path(tmp) / "b.db", "json"))
    assert after["counts"] == before["counts"]
    assert [{k: r[k] for k in _FIXED_BY_A_PERSON} for r in after["rows"]] == [
        {k: r[k] for k in _FIXED_BY_A_PERSON} for r in before["rows"]
    ]
