"""CSV file -> validated rows. Pure: no database, no network.

`read_csv(path)` returns a `CsvFile` whose `rows()` streams `InputRow`s, each either valid or
carrying the reason it is invalid. (Duplicates within a file are found by ingest.py against
the ledger, so memory stays flat however long the file is.) Problems with the file as a
whole raise `InputFileError` with one line naming the file (and the line, where there is one).

This module reads the file: its encoding (UTF-8, a BOM, refusing UTF-16 and spreadsheets),
its delimiter, its header mapped to our columns, and its records into rows. What checks one
row's values (`InputRow`, `validate`, names, email, phone, list cells) is validation.py's.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from jobrunner.columns import NAME_COLUMNS, column_for, suggestion
from jobrunner.errors import InputFileError

# `name as name`: moved to validation.py, re-exported for the tests that import them here.
from jobrunner.validation import _SIMPLE_EMAIL as _SIMPLE_EMAIL
from jobrunner.validation import KNOWN_COLUMNS, InputRow, check_country, validate
from jobrunner.validation import _normalise_phone_fully as _normalise_phone_fully
from jobrunner.validation import email_problem as email_problem
from jobrunner.validation import normalise_phone as normalise_phone

# A field beyond this size cannot be a record at all: the file is refused.
MAX_FIELD_BYTES = 16_000_000
DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_SNIFF_BYTES = 64 * 1024

_ADDRESS_LIKE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_BLANK = " \t\r\n\x1a\ufeff"  # what an empty row may hold (^Z: DOS end of file)
_SEP_HINT = re.compile(r"sep=([,;\t|])", re.IGNORECASE)
# What follows the ' that `report --format csv` puts before a cell a spreadsheet would run.
_NEUTRALISED = frozenset("=+-@\t\r")


@dataclass
class CsvFile:
    path: Path
    delimiter: str
    columns: list[str]  # the header as found
    mapping: dict[str, int]  # known column -> index
    unknown_columns: list[str] = field(default_factory=list)
    sha256: str = ""
    default_country: str | None = None  # ISO 3166 code for phone numbers without +
    suggestions: dict[str, str] = field(default_factory=dict)  # ignored column -> ours
    shadowed: dict[str, str] = field(default_factory=dict)  # ignored column -> the one used
    _stream: IO[bytes] | None = None

    def rows(self) -> Iterator[InputRow]:
        assert self._stream is not None
        yield from _read_rows(self)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def _line_breaks(data: bytes) -> int:
    """Line breaks in LF, CRLF or old-Mac CR files."""
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _hash_and_check_utf8(name: str, raw: IO[bytes]) -> str:
    """sha256 of the file; refuses it, naming the line, unless it is all UTF-8."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    lines_before = 0
    for chunk in iter(lambda: raw.read(1 << 20), b""):
        digest.update(chunk)
        if b"\x00" in chunk:
            line = lines_before + _line_breaks(chunk[: chunk.index(b"\x00")]) + 1
            raise InputFileError(
                f"{name}: line {line} contains a NUL byte: not a text CSV file "
                "(binary content, or a UTF-16 export)"
            )
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            # Positions are within this chunk, plus whatever the decoder held back (< 4 bytes).
            pending = len(exc.object) - len(chunk)
            at = max(exc.start - pending, 0)
            line = lines_before + _line_breaks(chunk[:at]) + 1
            raise _decode_error(name, exc, line) from None
        lines_before += _line_breaks(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise _decode_error(name, exc, lines_before + 1) from None
    return digest.hexdigest()


def read_csv(path: Path | str, default_country: str | None = None) -> CsvFile:
    """Open `path`, check what it is, read its header. Raises InputFileError.

    `default_country` (an ISO 3166 code such as US) lets phone numbers written without
    their country code be read as that country's.
    """
    path = Path(path)
    name = str(path)
    country = check_country(default_country) if default_country else None
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by _read_rows
    except FileNotFoundError:
        raise InputFileError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{name}: is a folder, not a CSV file") from None
    except PermissionError:
        raise InputFileError(f"{name}: permission denied") from None
    except OSError as exc:
        raise InputFileError(f"{name}: cannot read ({exc.strerror})") from None
    try:
        head = raw.read(_SNIFF_BYTES)
    except OSError as exc:
        raw.close()
        raise InputFileError(f"{name}: cannot read ({exc.strerror})") from None
    try:
        _check_head(name, head)
        raw.seek(0)
        sha256 = _hash_and_check_utf8(name, raw)
        raw.seek(0)
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="strict", newline="")
        header_line = _first_record_text(name, text, 1)
        header_at = 1
        hint = _SEP_HINT.fullmatch(header_line.rstrip("\r\n").strip('"'))
        if hint:  # Excel's "sep=;" first line names the delimiter; the header follows it
            header_at = 2
            header_line = _first_record_text(name, text, header_at)
        if header_line.count('"') % 2:
            raise InputFileError(f"{name}: line {header_at}: the header has an unterminated quote")
        delimiter, columns = _choose_delimiter(header_line, hint.group(1) if hint else None)
        mapping, unknown, shadowed = _map_columns(name, columns, delimiter, header_at)
    except BaseException:
        raw.close()
        raise
    suggestions = {c: s for c in unknown if (s := suggestion(c)) and s not in mapping}
    csv_file = CsvFile(
        path, delimiter, columns, mapping, unknown, sha256, country, suggestions, shadowed
    )
    csv_file._stream = raw
    csv_file._text = text  # type: ignore[attr-defined]
    csv_file._header_line = header_line  # type: ignore[attr-defined]
    csv_file._header_at = header_at  # type: ignore[attr-defined]
    return csv_file


def _check_head(name: str, head: bytes) -> None:
    if not head:
        raise InputFileError(f"{name}: the file is empty")
    if head.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise InputFileError(
            f"{name}: this is a spreadsheet (Excel) file, not CSV: save it as 'CSV UTF-8'"
        )
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _looks_utf16(head):
        raise InputFileError(f"{name}: the file is UTF-16, not UTF-8: save it as 'CSV UTF-8'")
    if not head.strip(b"\xef\xbb\xbf \t\r\n"):
        raise InputFileError(f"{name}: the file is empty")


def _looks_utf16(head: bytes) -> bool:
    """UTF-16 without a BOM: text in one byte of each pair, NUL in the other."""
    sample = head[: 4096 - 4096 % 2]
    if len(sample) < 4:
        return False
    even, odd = sample[0::2], sample[1::2]
    for zeros, text in ((odd, even), (even, odd)):
        if zeros.count(0) > 0.9 * len(zeros) and text.count(0) < 0.1 * len(text):
            return True
    return False


def _decode_error(name: str, exc: UnicodeDecodeError, line: int | None) -> InputFileError:
    bad = exc.object[exc.start : exc.start + 1].hex() if exc.object else "?"
    where = f"line {line}: " if line else ""
    return InputFileError(
        f"{name}: {where}not UTF-8 (byte 0x{bad}): save the file as 'CSV UTF-8' "
        "(it may be Windows-1252 or Latin-1)"
    )


def _first_record_text(name: str, text: IO[str], number: int) -> str:
    try:
        line = text.readline()
    except UnicodeDecodeError as exc:
        raise _decode_error(name, exc, number) from None
    if not line.strip():
        raise InputFileError(f"{name}: line {number} is blank: the header must be the first line")
    return line


def _split_header(line: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter, strict=True))
    except (csv.Error, StopIteration):
        return [line]


def _choose_delimiter(header_line: str, hint: str | None) -> tuple[str, list[str]]:
    """The delimiter that makes the most of the header's cells columns we know (a tie goes
    to the comma), so a semicolon file is read as one even when a column is missing."""
    if hint:
        return hint, _split_header(header_line.rstrip("\r\n"), hint)
    best: tuple[int, str, list[str]] | None = None
    for delimiter in DELIMITERS:
        cells = _split_header(header_line.rstrip("\r\n"), delimiter)
        known = len({found[0] for c in cells if (found := column_for(c))})
        if best is None or known > best[0]:
            best = (known, delimiter, cells)
    assert best is not None
    return best[1], best[2]


def _map_columns(
    name: str, columns: list[str], delimiter: str, line: int = 1
) -> tuple[dict[str, int], list[str], dict[str, str]]:
    """(known column -> index, unknown columns, shadowed column -> the one used instead)."""
    chosen: dict[str, tuple[int, int, str]] = {}  # column -> (rank, index, header cell)
    unknown: list[str] = []
    shadowed: dict[str, str] = {}
    for index, cell in enumerate(columns):
        found = column_for(cell)
        if found is None:
            if cell.strip():  # spreadsheets export unnamed trailing columns: say nothing
                unknown.append(cell.strip())
            continue
        column, rank = found
        held = chosen.get(column)
        if held is not None and held[0] == rank:
            raise InputFileError(
                f"{name}: line {line}: column {column!r} appears twice in the header "
                f"({held[2].strip()!r} and {cell.strip()!r})"
            )
        if held is None or rank < held[0]:
            if held is not None:
                shadowed[held[2].strip()] = cell.strip()
            chosen[column] = (rank, index, cell)
        else:
            shadowed[cell.strip()] = held[2].strip()
    mapping = {column: index for column, (_rank, index, _cell) in chosen.items()}
    missing = []
    if "email" not in mapping:
        missing.append("email")
    has_first, has_last = "first_name" in mapping, "last_name" in mapping
    if "name" not in mapping and not (has_first and has_last):
        if has_first:
            missing.append("last_name (or name)")
        elif has_last:
            missing.append("first_name (or name)")
        else:
            missing.append("name (or first_name and last_name)")
    if missing:
        found_text = ", ".join(repr(c.strip()) for c in columns) if columns else "none"
        seen = ""
        header_text = delimiter.join(columns)
        others = [d for d in DELIMITERS if d != delimiter and d in header_text]
        if not mapping and others:
            seen = f" (the header has {_DELIMITER_NAMES[others[0]]}s, but no known columns)"
        close = {c.strip(): s for c in unknown if (s := suggestion(c)) and s not in mapping}
        if close:
            seen += "; did you mean " + ", ".join(f"{s} ({c!r})" for c, s in close.items()) + "?"
        raise InputFileError(
            f"{name}: line {line}: missing required column(s) {', '.join(missing)}; "
            f"columns found: {found_text}{seen}"
        )
    return mapping, unknown, shadowed


def _read_rows(f: CsvFile) -> Iterator[InputRow]:
    name = str(f.path)
    text: IO[str] = f._text  # type: ignore[attr-defined]
    old_limit = csv.field_size_limit(MAX_FIELD_BYTES)
    width = len(f.columns)
    m = f.mapping
    get_index = [(col, index) for col in KNOWN_COLUMNS if (index := m.get(col)) is not None]
    required = [col for col in ("email", *NAME_COLUMNS) if col in m]
    split_names = "first_name" in m or "last_name" in m
    present = tuple(col for col in KNOWN_COLUMNS if col in m)
    reader = csv.reader(text, delimiter=f.delimiter, strict=True)
    header_at: int = f._header_at  # type: ignore[attr-defined]  # the header: one physical line
    previous_end = header_at
    try:
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except UnicodeDecodeError as exc:
                raise _decode_error(name, exc, previous_end + 1) from None
            except csv.Error as exc:
                raise _csv_error(name, str(exc), previous_end + 1) from None
            start = previous_end + 1
            previous_end = reader.line_num + header_at
            if not any(cell.strip(_BLANK) for cell in record):
                continue  # a blank line, a spreadsheet row of empty cells, a DOS ^Z
            row = InputRow(line=start)
            for col, index in get_index:
                if index < len(record):
                    value = record[index]
                    if value[:1] == "'" and value[1:2] in _NEUTRALISED:
                        value = value[1:]  # `report --format csv` guarded it from spreadsheets
                    value = value.strip()
                    if "\x1a" in value:  # DOS end-of-file marks: never part of a value
                        value = value.replace("\x1a", "").strip()
                    setattr(row, col, value)
            if previous_end > start:
                _check_spanning_values(
                    name, row, record, f.delimiter, m["email"], start, previous_end
                )
            missing = [c for c in required if m[c] >= len(record)]
            if missing:
                hint = ""
                if len(record) == 1 and any(d in record[0] for d in DELIMITERS if d != f.delimiter):
                    hint = f" (a line separated by another delimiter than {f.delimiter!r}?)"
                row.invalidate(
                    "too_few_fields",
                    f"has {len(record)} field(s) but the header has {width}: no "
                    f"{', '.join(missing)}{hint}",
                )
            if len(record) > width:
                extra = record[width:]
                if any(cell.strip() for cell in extra):
                    row.invalidate(
                        "too_many_fields",
                        f"has {len(record)} fields but the header has {width}: "
                        "an unquoted comma (or delimiter) in a value?",
                    )
            validate(row, split_names=split_names, country=f.default_country, columns=present)
            yield row
    finally:
        csv.field_size_limit(old_limit)
        if f._stream is not None:
            f._stream.close()


def _check_spanning_values(
    name: str, row: InputRow, record: list[str], delimiter: str, email_at: int, start: int, end: int
) -> None:
    """A quoted value that spans lines: fine in a title, fatal when it swallowed rows.

    A line inside any value (known column or not) that reads as a row with an address in
    the email column means a stray quote ate the rows in between: the file is refused.
    """
    for cell in record:
        if "\n" not in cell and "\r" not in cell:
            continue
        for part in cell.splitlines():
            if "@" not in part:
                continue
            cells = next(csv.reader([part], delimiter=delimiter), [])
            if (
                len(cells) >= 3
                and len(cells) > email_at
                and _ADDRESS_LIKE.fullmatch(cells[email_at].strip())
            ):
                raise InputFileError(
                    f'{name}: line {start}: a quote (") opened here runs to line {end} and '
                    "swallows what look like whole rows: check the quoting"
                )


def _csv_error(name: str, message: str, line: int) -> InputFileError:
    if "unexpected end of data" in message or "EOF" in message:
        return InputFileError(
            f'{name}: line {line}: unterminated quote (a " opens a value that never closes)'
        )
    if "field larger than field limit" in message:
        return InputFileError(
            f"{name}: line {line}: a value is larger than {MAX_FIELD_BYTES:,} characters "
            "(broken quoting?)"
        )
    if "NUL" in message:
        return InputFileError(f"{name}: line {line}: contains a NUL byte: not a text CSV file")
    return InputFileError(f"{name}: line {line}: malformed CSV ({message})")
