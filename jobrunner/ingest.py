"""`jobrunner ingest FILE`: a validated CSV into the ledger, all or nothing.

The whole file goes in one transaction: a file-level problem found on the last line still
leaves the ledger exactly as it was.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobrunner.csv_input import CsvFile, InputRow, read_csv
from jobrunner.ledger import Ledger
from jobrunner.log import get_logger

_BATCH = 500


@dataclass
class IngestSummary:
    file: str
    sha256: str = ""
    delimiter: str = ","
    rows_read: int = 0
    added_pending: int = 0
    added_invalid: int = 0
    corrected: int = 0  # valid rows that replaced an invalid row from an earlier ingest
    already_present: int = 0
    already_from: Counter[str] = field(default_factory=Counter)  # earlier file -> rows
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    invalid_examples: dict[str, str] = field(default_factory=dict)  # reason -> "line N: msg"
    unknown_columns: list[str] = field(default_factory=list)

    @property
    def added(self) -> int:
        return self.added_pending + self.added_invalid + self.corrected


def _values(row: InputRow, source_id: int) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "line": row.line,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "email": row.email,
        "email_norm": row.email_norm,
        "phone_number": row.phone_number,
        "division_id": row.division_id,
        "title": row.title,
        "department": row.department,
        "status": "pending" if row.valid else "invalid",
        "error_code": row.error_code,
        "error_message": row.error_message,
    }


def ingest_file(ledger: Ledger, path: Path | str, display_name: str | None = None) -> IngestSummary:
    """Validate `path` and add its new rows to the ledger. Raises InputFileError, LedgerError."""
    return ingest_csv(ledger, read_csv(path), display_name)


def ingest_csv(ledger: Ledger, csv_file: CsvFile, display_name: str | None = None) -> IngestSummary:
    """Add the rows of a file opened with read_csv() (whose head was already checked)."""
    name = display_name or csv_file.path.name
    summary = IngestSummary(
        file=name,
        sha256=csv_file.sha256,
        delimiter=csv_file.delimiter,
        unknown_columns=csv_file.unknown_columns,
    )
    with ledger.transaction():
        source_id = ledger.add_source(name)
        first_ingest = not ledger.has_rows()
        chunk: list[InputRow] = []
        for row in csv_file.rows():
            chunk.append(row)
            if len(chunk) >= _BATCH:
                _add_chunk(ledger, chunk, source_id, csv_file.sha256, summary, first_ingest)
                chunk = []
        _add_chunk(ledger, chunk, source_id, csv_file.sha256, summary, first_ingest)
        ledger.finish_source(source_id, csv_file.sha256, summary.rows_read, summary.added)
    get_logger().info(
        "ingested",
        file=name,
        rows_read=summary.rows_read,
        added=summary.added,
        invalid=summary.added_invalid,
        already_present=summary.already_present,
    )
    return summary


def _add_chunk(
    ledger: Ledger,
    chunk: list[InputRow],
    source_id: int,
    sha256: str,
    summary: IngestSummary,
    first_ingest: bool,
) -> None:
    """Add a chunk of rows, skipping those an earlier ingest already brought."""
    emails = [r.email_norm for r in chunk if r.email_norm]
    earlier: dict[str, tuple[int, str, int, str]] = {}
    if not first_ingest:
        earlier = ledger.find_by_emails(emails, source_id)
    # Duplicates within this file: against rows of it already stored, then within the chunk.
    first_line = ledger.lines_in_source(emails, source_id)
    batch: list[dict[str, Any]] = []
    for row in chunk:
        summary.rows_read += 1
        if row.email_norm:
            first = first_line.get(row.email_norm)
            if first is not None:
                row.invalidate("duplicate", f"duplicate of line {first} (same email)")
            elif row.valid:
                first_line[row.email_norm] = row.line
        if first_ingest:
            known = None
        elif row.email_norm:
            known = earlier.get(row.email_norm)
        else:
            known = ledger.source_line_known(sha256, row.line, exclude_source=source_id)
        if known is not None:
            row_id, status, _line, source = known
            if status == "invalid" and row.valid and row.email_norm:
                ledger.replace_invalid_row(row_id, _values(row, source_id))
                summary.corrected += 1
            else:
                summary.already_present += 1
                summary.already_from[source] += 1
            continue
        if row.valid:
            summary.added_pending += 1
        else:
            summary.added_invalid += 1
            assert row.error_code is not None
            summary.invalid_by_reason[row.error_code] += 1
            summary.invalid_examples.setdefault(
                row.error_code, f"line {row.line}: {row.error_message}"
            )
        batch.append(_values(row, source_id))
    if batch:
        ledger.insert_rows(batch)
