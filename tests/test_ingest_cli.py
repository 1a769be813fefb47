"""`jobrunner ingest`: what a user sees, and what lands in the ledger, for good and bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from jobrunner.cli import cli

HEADER = "first_name,last_name,email,phone_number,division_id,title,department\n"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ledger.db"


def run(db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), "--log-level", "error", *args])


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def report(db: Path) -> dict:
    result = run(db, "report", "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_ingest_valid_file_adds_pending_rows(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "users.csv",
        HEADER
        + "Ada,Lovelace,ada@example.com,+44 20 7946 0958,,Engineer,R&D\n"
        + "Grace,Hopper,grace@example.com,,3f2504e0-4f89-11d3-9a0c-0305e82c3301,,\n",
    )
    result = run(db, "ingest", str(f))
    assert result.exit_code == 0, result.output
    assert "2 rows read" in result.output
    assert "added:            2 to create" in result.output
    data = report(db)
    assert data["counts"]["pending"] == 2
    ada, grace = data["rows"]
    assert ada["line"] == 2 and ada["email"] == "ada@example.com"
    assert ada["phone_number"] == "+442079460958"  # normalised to E.164
    assert ada["title"] == "Engineer" and ada["department"] == "R&D"
    assert grace["division_id"] == "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    assert grace["phone_number"] is None and grace["title"] is None


@pytest.mark.parametrize(
    ("row", "code", "words"),
    [
        ("Ada,,ada@example.com,,,,", "last_name_missing", "last_name is empty"),
        (",Lovelace,ada@example.com,,,,", "first_name_missing", "first_name is empty"),
        ("Ada,Lovelace,,,,,", "email_missing", "email is empty"),
        ("Ada,Lovelace,ada@@example.com,,,,", "email_invalid", "'ada@@example.com' is not valid"),
        ("Ada,Lovelace,ada@example,,,,", "email_invalid", "is not valid"),
        ("Ada,Lovelace,ada@example.com,555-0101,,,", "phone_invalid", "country code"),
        ("Ada,Lovelace,ada@example.com,+1 317 555,,,", "phone_invalid", "digits"),
        ("Ada," + "L" * 101 + ",ada@example.com,,,,", "too_long", "last_name is 101 characters"),
        ("Ada,Lovelace,ada@example.com,,,,,extra", "too_many_fields", "has 8 fields"),
    ],
)
def test_invalid_rows_are_kept_with_an_actionable_reason(
    tmp_path: Path, db: Path, row: str, code: str, words: str
) -> None:
    f = write(tmp_path, "users.csv", HEADER + row + "\nBob,Ok,bob@example.com,,,,\n")
    result = run(db, "ingest", str(f))
    assert result.exit_code == 0, result.output
    assert code in result.output and "line 2" in result.output
    data = report(db)
    assert data["counts"] == {
        "pending": 1,
        "in_progress": 0,
        "created": 0,
        "exists": 0,
        "failed": 0,
        "invalid": 1,
        "rolled_back": 0,
    }
    bad = data["rows"][0]
    assert bad["status"] == "invalid" and bad["error_code"] == code
    assert words in bad["error"]


def test_duplicate_email_in_one_file_ignoring_case(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "users.csv",
        HEADER + "Ada,Lovelace,ada@example.com,,,,\nAda,L,ADA@Example.com,,,,\n",
    )
    assert run(db, "ingest", str(f)).exit_code == 0
    rows = report(db)["rows"]
    assert [r["status"] for r in rows] == ["pending", "invalid"]
    assert rows[1]["error"] == "duplicate of line 2 (same email)"


def test_reingest_adds_nothing_and_second_file_appends_only_new_people(
    tmp_path: Path, db: Path
) -> None:
    first = write(tmp_path, "a.csv", HEADER + "Ada,L,ada@example.com,,,,\nBad,Row,nope,,,,\n")
    second = write(
        tmp_path,
        "b.csv",
        HEADER + "Ada,L,ADA@example.com,,,,\nNew,Person,new@example.com,,,,\n",
    )
    assert run(db, "ingest", str(first)).exit_code == 0
    again = run(db, "ingest", str(first))
    assert again.exit_code == 0
    assert "added:            0 to create" in again.output
    assert "already present:  2 (2 from a.csv)" in again.output
    result = run(db, "ingest", str(second))
    assert result.exit_code == 0
    assert "already present:  1 (1 from a.csv)" in result.output
    data = report(db)
    assert sorted(r["email"] for r in data["rows"]) == [
        "ada@example.com",
        "new@example.com",
        "nope",
    ]
    assert data["counts"]["pending"] == 2


def test_a_corrected_file_replaces_an_invalid_row(tmp_path: Path, db: Path) -> None:
    broken = write(tmp_path, "a.csv", HEADER + "Ada,,ada@example.com,,,,\n")
    fixed = write(tmp_path, "a-fixed.csv", HEADER + "Ada,Lovelace,ada@example.com,,,,\n")
    assert run(db, "ingest", str(broken)).exit_code == 0
    result = run(db, "ingest", str(fixed))
    assert result.exit_code == 0 and "corrected:        1" in result.output
    rows = report(db)["rows"]
    assert len(rows) == 1
    assert rows[0]["status"] == "pending" and rows[0]["last_name"] == "Lovelace"
    assert rows[0]["source"] == "a-fixed.csv"


def test_header_variants_any_order_unknown_columns_named(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "export.csv",
        " EMAIL ,Notes, Last Name ,First_Name,Cost Center\nada@example.com,x,Lovelace,Ada,bob\n",
    )
    result = run(db, "ingest", str(f))
    assert result.exit_code == 0, result.output
    assert "ignored columns:  Notes, Cost Center" in result.output
    row = report(db)["rows"][0]
    assert (row["first_name"], row["last_name"], row["email"]) == (
        "Ada",
        "Lovelace",
        "ada@example.com",
    )


@pytest.mark.parametrize(
    "content",
    [
        b"\xef\xbb\xbffirst_name,last_name,email\r\nAda,Lovelace,ada@example.com\r\n",
        b"first_name;last_name;email\nAda;Lovelace;ada@example.com\n",
        b"first_name\tlast_name\temail\r\nAda\tLovelace\tada@example.com\r\n",
        b"first_name,last_name,email\nAda,Lovelace,ada@example.com",  # no final newline
    ],
    ids=["bom-crlf", "semicolon", "tab", "no-final-newline"],
)
def test_spreadsheet_export_shapes_are_read(tmp_path: Path, db: Path, content: bytes) -> None:
    f = write(tmp_path, "export.csv", content)
    assert run(db, "ingest", str(f)).exit_code == 0
    row = report(db)["rows"][0]
    assert (row["first_name"], row["last_name"], row["email"]) == (
        "Ada",
        "Lovelace",
        "ada@example.com",
    )


def test_quoted_commas_quotes_and_newlines(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "q.csv",
        "first_name,last_name,email,title\n"
        '"Smith, Jr","O""Brien",q@example.com,"Line one\r\nLine two"\n'
        "Next,Row,next@example.com,\n",
    )
    assert run(db, "ingest", str(f)).exit_code == 0
    rows = report(db)["rows"]
    assert rows[0]["first_name"] == "Smith, Jr" and rows[0]["last_name"] == 'O"Brien'
    assert rows[0]["title"] == "Line one\r\nLine two"
    assert rows[1]["line"] == 4  # the quoted newline spans two physical lines


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"\n\n  \n", "the file is empty"),
        (
            b"name,phone\nAda,+13175550101\n",
            "missing required column(s) email; columns found: 'name', 'phone'",
        ),
        (b"first_name,email\nAda,ada@example.com\n", "missing required column(s) last_name"),
        (
            b'first_name,last_name,email\nA,B,a@example.com\n"C,D,c@example.com\nE,F,e@example.com\n',
            "line 3: unterminated quote",
        ),
        (b"first_name,last_name,email\nJos\xe9,B,a@example.com\n", "line 2: not UTF-8"),
        (b"\xff\xfef\x00i\x00r\x00s\x00t\x00", "UTF-16"),
        (b"first_name,last_name,email\nA,B,a@ex\x00ample.com\n", "line 2 contains a NUL byte"),
        (b"PK\x03\x04\x14\x00\x06\x00", "spreadsheet (Excel) file"),
        (b"vorname|nachname|adresse\nA|B|c\n", "missing required column(s) email; columns"),
        (b'first_name,last_name,email\nA,B,"a@example.com"x\n', "line 2: malformed CSV"),
        (b"first_name,first_name,last_name,email\n", "appears twice"),
    ],
    ids=[
        "empty",
        "blank",
        "wrong-columns",
        "one-missing",
        "unterminated",
        "latin1",
        "utf16",
        "nul",
        "xlsx",
        "unknown-delimiter",
        "junk-after-quote",
        "duplicate-header",
    ],
)
def test_file_level_refusals_store_nothing(
    tmp_path: Path, db: Path, content: bytes, message: str
) -> None:
    good = write(tmp_path, "good.csv", HEADER + "Ada,Lovelace,ada@example.com,,,,\n")
    assert run(db, "ingest", str(good)).exit_code == 0
    before = report(db)
    bad = write(tmp_path, "bad.csv", content)
    result = run(db, "ingest", str(bad))
    assert result.exit_code == 1
    assert message in result.output
    assert "bad.csv" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert report(db) == before


def test_refusal_found_on_the_last_line_rolls_back_every_earlier_row(
    tmp_path: Path, db: Path
) -> None:
    rows = "".join(f"U{i},L{i},u{i}@example.com,,,,\n" for i in range(5000))
    bad = write(tmp_path, "bad.csv", HEADER + rows + '"Broken,Row,b@example.com,,,,\n')
    result = run(db, "ingest", str(bad))
    assert result.exit_code == 1 and "line 5002: unterminated quote" in result.output
    assert not db.exists()  # the ledger this ingest began is gone again
    good = write(tmp_path, "good.csv", HEADER + "Ada,L,ada@example.com,,,,\n")
    assert run(db, "ingest", str(good)).exit_code == 0
    before = report(db)
    result = run(db, "ingest", str(bad))
    assert result.exit_code == 1 and report(db) == before  # an existing ledger is untouched


def test_a_huge_field_is_an_invalid_row_not_a_crash(tmp_path: Path, db: Path) -> None:
    f = write(tmp_path, "huge.csv", HEADER + "Ada," + "x" * 200_000 + ",ada@example.com,,,,\n")
    result = run(db, "ingest", str(f))
    assert result.exit_code == 0
    row = report(db)["rows"][0]
    assert row["status"] == "invalid" and "200,000 characters" in row["error"]


@pytest.mark.parametrize("target", ["missing.csv", "folder"])
def test_missing_or_unreadable_path(tmp_path: Path, db: Path, target: str) -> None:
    (tmp_path / "folder").mkdir()
    result = run(db, "ingest", str(tmp_path / target))
    assert result.exit_code == 1
    assert target in result.output and (
        "no such file" in result.output or "folder" in result.output
    )


def test_ledger_file_and_folder_are_private(tmp_path: Path, db: Path) -> None:
    f = write(tmp_path, "users.csv", HEADER + "Ada,Lovelace,ada@example.com,,,,\n")
    assert run(db, "ingest", str(f)).exit_code == 0
    assert db.stat().st_mode & 0o777 == 0o600
    assert db.parent.stat().st_mode & 0o777 == 0o700


def test_excel_sep_hint_trailing_empty_columns_and_empty_rows(tmp_path: Path, db: Path) -> None:
    hinted = write(
        tmp_path, "hinted.csv", b"sep=;\r\nfirst_name;last_name;email\r\nA;B;a@example.com\r\n"
    )
    result = run(db, "ingest", str(hinted))
    assert result.exit_code == 0, result.output
    padded = write(
        tmp_path,
        "padded.csv",
        b"first_name,last_name,email,,,\r\nC,D,c@example.com,,,\r\n,,,,,\r\n ,, ,,,\r\n",
    )
    result = run(db, "ingest", str(padded))
    assert result.exit_code == 0 and "1 rows read" in result.output
    assert "ignored columns" not in result.output
    rows = report(db)["rows"]
    assert [(r["source"], r["line"], r["email"]) for r in rows] == [
        ("hinted.csv", 3, "a@example.com"),
        ("padded.csv", 2, "c@example.com"),
    ]


def test_old_mac_line_endings(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path, "cr.csv", b"first_name,last_name,email\rA,B,a@example.com\rC,D,c@example.com\r"
    )
    assert run(db, "ingest", str(f)).exit_code == 0
    assert [r["line"] for r in report(db)["rows"]] == [2, 3]


def test_a_stray_quote_that_swallows_rows_refuses_the_file(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "stray.csv",
        HEADER
        + '"Ada,Lovelace,ada@example.com,,,,\n'
        + "Bob,Smith,bob@example.com,,,,\n"
        + 'Cy",Doe,cy@example.com,,,,\n',
    )
    result = run(db, "ingest", str(f))
    assert result.exit_code == 1
    assert "line 2: a quote" in result.output and "runs to line 4" in result.output
    assert not db.exists()


def test_a_nul_byte_late_in_a_big_file_is_refused(tmp_path: Path, db: Path) -> None:
    rows = "".join(f"N{i},L{i},u{i}@example.com,,,,\n" for i in range(3000))
    f = write(
        tmp_path, "late.csv", (HEADER + rows).encode() + b"Nul\x00Guy,X,nul@example.com,,,,\n"
    )
    assert len(f.read_bytes()) > 70_000  # past the first look at the file's head
    result = run(db, "ingest", str(f))
    assert result.exit_code == 1 and "line 3002 contains a NUL byte" in result.output
    assert not db.exists()  # refused before any ledger was made


@pytest.mark.parametrize(
    ("row", "code", "words"),
    [
        ("\u200b,Lovelace,a@example.com,,,,", "first_name_missing", "first_name is empty"),
        ("Ada\x01,Lovelace,a@example.com,,,,", "control_character", "U+0001"),
        ("Ada,Lovelace,a@example.com,+1 317 555 0101 ext. 12,,,", "phone_invalid", "extension"),
        ("Ada,Lovelace", "too_few_fields", "has 2 field(s) but the header has 7: no email"),
        ("Ada;Lovelace;a@example.com", "too_few_fields", "another delimiter"),
    ],
)
def test_more_row_reasons(tmp_path: Path, db: Path, row: str, code: str, words: str) -> None:
    f = write(tmp_path, "u.csv", HEADER + row + "\n")
    assert run(db, "ingest", str(f)).exit_code == 0
    bad = report(db)["rows"][0]
    assert bad["status"] == "invalid" and bad["error_code"] == code, bad
    assert words in bad["error"]


def test_braced_division_ids_and_dos_end_of_file(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "u.csv",
        (HEADER + "Ada,L,a@example.com,,{0B9A8EA6-5C79-4D2E-9A3E-3C1D1A2B3C4D},,\n").encode()
        + b"\x1a",
    )
    assert run(db, "ingest", str(f)).exit_code == 0
    rows = report(db)["rows"]
    assert len(rows) == 1 and rows[0]["division_id"] == "0b9a8ea6-5c79-4d2e-9a3e-3c1d1a2b3c4d"


def test_utf16_without_a_bom_is_named(tmp_path: Path, db: Path) -> None:
    f = write(tmp_path, "u16.csv", (HEADER + "Ada,L,a@example.com,,,,\n").encode("utf-16-be"))
    result = run(db, "ingest", str(f))
    assert result.exit_code == 1 and "UTF-16" in result.output


def test_a_refused_file_creates_no_ledger(tmp_path: Path) -> None:
    empty = write(tmp_path, "empty.csv", b"")
    db = tmp_path / "new" / "folder" / "l.db"
    result = run(db, "ingest", str(empty))
    assert result.exit_code == 1 and "the file is empty" in result.output
    assert not (tmp_path / "new").exists()


def test_db_pointing_at_a_folder_or_another_programs_database(tmp_path: Path) -> None:
    import hashlib
    import sqlite3

    result = run(tmp_path, "report")
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path} is a folder, not a ledger file"
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE invoices (x)")
    conn.commit()
    conn.close()
    before = hashlib.sha256(other.read_bytes()).hexdigest()
    for args in (
        ["report"],
        ["ingest", str(write(tmp_path, "u.csv", HEADER + "A,B,a@example.com,,,,\n"))],
    ):
        result = run(other, *args)
        assert result.exit_code == 1
        assert "is not a jobrunner ledger" in result.output and "invoices" in result.output
    assert hashlib.sha256(other.read_bytes()).hexdigest() == before


@pytest.mark.parametrize(
    "content",
    [
        # the stray quote opens in a column jobrunner ignores
        'first_name,last_name,notes,email\nA,B,"oops,a@example.com\nC,D,x,c@example.com\n'
        'E,F,y",e@example.com\n',
        # the swallowed rows have fewer fields than the header
        HEADER
        + '"Ada,Lovelace,ada@example.com\nBob,Smith,bob@example.com\nCy",Doe,cy@example.com\n',
        # a stray quote before the email column would glue a wrong name to a good address
        'first_name,last_name,email\na,"b\nc,d,e@example.com\nf",g@example.com\n',
    ],
    ids=["unknown-column", "short-rows", "before-email"],
)
def test_more_swallowed_rows(tmp_path: Path, db: Path, content: str) -> None:
    result = run(db, "ingest", str(write(tmp_path, "s.csv", content)))
    assert result.exit_code == 1 and "swallows what look like whole rows" in result.output


def test_multi_line_titles_are_kept(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "t.csv",
        "first_name,last_name,email,title\n"
        'Ada,L,a@example.com,"Head of Sales\nEMEA, APAC, LATAM, NA"\n'
        'Bo,M,b@example.com,"Agent\x0bNights"\n',
    )
    assert run(db, "ingest", str(f)).exit_code == 0
    rows = report(db)["rows"]
    assert rows[0]["title"] == "Head of Sales\nEMEA, APAC, LATAM, NA"
    assert rows[1]["status"] == "pending" and rows[1]["title"] == "Agent\x0bNights"


def test_line_numbers_in_old_mac_files_name_the_bad_line(tmp_path: Path, db: Path) -> None:
    f = write(
        tmp_path,
        "cr.csv",
        b"first_name,last_name,email\rA,B,a@example.com\rJos\xe9,B,j@example.com\r",
    )
    result = run(db, "ingest", str(f))
    assert result.exit_code == 1 and "line 3: not UTF-8" in result.output
