"""CSV -> ledger -> report JSON preserves every field exactly (hypothesis)."""

from __future__ import annotations

import csv
import io
import json
import tempfile
import unicodedata
from pathlib import Path

from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
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
