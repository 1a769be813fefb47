"""`jobrunner ingest FILE`: a validated CSV into the ledger, all or nothing.

The whole file goes in one transaction: a file-level problem found on the last line still
leaves the ledger exactly as it was.

A person is known by their email. A file that names a person the ledger already has:
* same values: nothing to do ("already present");
* other values, and no user was ever made or may have been made for the row (pending, or
  failed without doubt): the row takes the file's values ("updated"); a failed one goes back
  to pending with fresh attempts;
* otherwise the row is left as it is and named: a create that may have been sent keeps what
  was sent (a look-up compares against it; what comes after the create, such as roles or the
  manager, may still change), and a person already created or found existing is never
  changed by ingest.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobrunner.csv_input import CsvFile, read_csv
from jobrunner.ledger import (
    INPUT_FIELDS,
    PLAN_FIELDS,
    Ledger,
    missing_folders,
    remove_ledger_files,
)
from jobrunner.log import get_logger
from jobrunner.steps import planned_steps, steps_for_change
from jobrunner.validation import LEVEL_COLUMNS, InputRow, name_key

_BATCH = 500
NAMED_AT_MOST = 10  # rows named one by one in the summary, per reason


@dataclass
class IngestSummary:
    file: str
    sha256: str = ""
    delimiter: str = ","
    rows_read: int = 0
    added_pending: int = 0
    added_invalid: int = 0
    corrected: int = 0  # valid rows that replaced an invalid row from an earlier ingest
    invalid_again: int = 0  # invalid rows whose earlier row was invalid too: this file's wins
    updated: int = 0  # rows never sent whose values the file changed
    requeued: int = 0  # of which were failed and are pending again
    already_present: int = 0
    already_from: Counter[str] = field(default_factory=Counter)  # earlier file -> rows
    invalid_by_reason: Counter[str] = field(default_factory=Counter)
    invalid_examples: dict[str, str] = field(default_factory=dict)  # reason -> "line N: msg"
    unknown_columns: list[str] = field(default_factory=list)
    suggestions: dict[str, str] = field(default_factory=dict)  # ignored column -> ours
    shadowed: dict[str, str] = field(default_factory=dict)  # ignored column -> the one used
    # Rows whose file values differ but which ingest will not change: reason -> count, and
    # up to NAMED_AT_MOST "line N (email)" each.
    follow: int = 0  # people the job created whose row changed: the next run updates them
    follow_existing: int = 0  # people there before whose row changed: --update-existing
    follow_rolled_back: int = 0  # rolled back: --recreate-rolled-back onboards them so
    kept: Counter[str] = field(default_factory=Counter)
    kept_named: dict[str, list[str]] = field(default_factory=dict)

    @property
    def added(self) -> int:
        """New rows in the ledger: to create, and invalid."""
        return self.added_pending + self.added_invalid

    def count_invalid(self, row: InputRow) -> None:
        assert row.error_code is not None
        self.invalid_by_reason[row.error_code] += 1
        self.invalid_examples.setdefault(row.error_code, f"line {row.line}: {row.error_message}")

    def keep(self, reason: str, row: InputRow) -> None:
        self.kept[reason] += 1
        named = self.kept_named.setdefault(reason, [])
        if len(named) < NAMED_AT_MOST:
            named.append(f"line {row.line} ({row.email})")


# Why a row with other values in the file is not changed, as the summary says it.
KEPT_IN_DOUBT = (
    "a create may have been sent: the row keeps the values a create sends (a look-up "
    "compares them); manager, location, roles, queues and skills follow the file"
)
KEPT_RUNNING = "a run is working on it right now: ingest again when it is done"
KEPT_PERSON = "the person has a user whose row a run is settling: ingest again when it is done"
KEPT_NAME = (
    "the name differs: people keep the name they were created or found with (rename them in "
    "the admin UI)"
)
KEPT_INVALID = "invalid in this file: the ledger keeps the earlier values"


# An email is the person's identity, compared ignoring case like Genesys does.
_COMPARED = tuple(c for c in INPUT_FIELDS if c != "email")
_NAME_FIELDS = ("name", "first_name", "last_name")


def _values(row: InputRow, source_id: int, norm: str) -> dict[str, Any]:
    return {
        "source_id": source_id,
        "line": row.line,
        "name": row.full_name,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "email": row.email,
        "email_norm": norm,
        "phone_number": row.phone_number,
        "extension": row.extension,
        "division": row.division,
        "division_id": row.division_id,
        "title": row.title,
        "department": row.department,
        "email_manager": row.email_manager,
        "location_work": row.location_work,
        # The list cells are kept in one canonical spelling, so a re-ingest compares
        # meaning, not spaces.
        "roles_divisions": ", ".join(
            f"{role}:[{division}]" if division else role for role, division in row.roles
        )
        if row.roles
        else None,
        "queues": ", ".join(row.queue_names) if row.queue_names else None,
        "skills": _levels_text(row.skill_levels),
        "languages": _levels_text(row.language_levels),
        "status": "pending" if row.valid else "invalid",
        "error_code": row.error_code,
        "error_message": row.error_message,
        "wants": _wants(row) if row.valid else [],
        "steps": planned_steps(row) if row.valid else [],
    }


def _levels_text(levels: tuple[tuple[str, float], ...]) -> str | None:
    """A skills or languages cell in its canonical spelling: `Name:5, Other:3`."""
    return ", ".join(f"{name}:{level:g}" for name, level in levels) if levels else None


def _levels(row: InputRow) -> dict[str, tuple[tuple[str, float], ...]]:
    """The skills and languages cells, parsed: column -> ((name, proficiency), ...)."""
    return {"skills": row.skill_levels, "languages": row.language_levels}


def _wants(row: InputRow) -> list[tuple[Any, ...]]:
    wants: list[tuple[Any, ...]] = []
    if not (row.roles or row.queue_names or row.skill_levels or row.language_levels):
        return wants
    wants.extend(("role", role, name_key(role), division, None) for role, division in row.roles)
    wants.extend(("queue", queue, name_key(queue), None, None) for queue in row.queue_names)
    for column, levels in _levels(row).items():
        noun = LEVEL_COLUMNS[column]
        wants.extend((noun, name, name_key(name), None, level) for name, level in levels)
    return wants


def ingest_file(
    ledger: Ledger,
    path: Path | str,
    display_name: str | None = None,
    default_country: str | None = None,
) -> IngestSummary:
    """Validate `path` and add its new rows to the ledger. Raises InputFileError, LedgerError."""
    return ingest_csv(ledger, read_csv(path, default_country), display_name)


def ingest_into(db: Path, path: Path, default_country: str | None = None) -> IngestSummary:
    """`jobrunner ingest`: the file into the ledger at `db` (made there if nothing is there),
    all or nothing. A file refused as a whole is refused before any ledger is made, and a
    ledger this ingest began is removed again, whatever stopped it."""
    csv_file = read_csv(path, default_country)  # most refusals come here, before a ledger
    new_ledger = not db.exists() and not db.is_symlink()
    new_folders = missing_folders(db.parent)
    finished = False
    try:
        with Ledger.open(db, create=True) as ledger:
            summary = ingest_csv(ledger, csv_file)
        finished = True
        return summary
    finally:
        csv_file.close()
        if new_ledger and not finished:
            remove_ledger_files(db, new_folders)


def ingest_csv(ledger: Ledger, csv_file: CsvFile, display_name: str | None = None) -> IngestSummary:
    """Add the rows of a file opened with read_csv() (whose head was already checked)."""
    name = display_name or csv_file.path.name
    summary = IngestSummary(
        file=name,
        sha256=csv_file.sha256,
        delimiter=csv_file.delimiter,
        unknown_columns=csv_file.unknown_columns,
        suggestions=csv_file.suggestions,
        shadowed=csv_file.shadowed,
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
        ledger.finish_source(
            source_id, csv_file.sha256, summary.rows_read, summary.added + summary.corrected
        )
    get_logger().info(
        "ingested",
        file=name,
        rows_read=summary.rows_read,
        to_create=summary.added_pending,
        invalid=summary.added_invalid + summary.invalid_again,
        corrected=summary.corrected,
        updated=summary.updated,
        already_present=summary.already_present,
        not_updated=sum(summary.kept.values()),
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
    """Add a chunk of rows; a person an earlier ingest brought is compared, not added."""
    norms = [r.email_norm for r in chunk]  # each row's, once (validation is over)
    emails = [e for e in norms if e]
    earlier: dict[str, dict[str, Any]] = {}
    if not first_ingest:
        earlier = ledger.find_by_emails(emails, source_id)
    # Duplicates within this file: against rows of it already stored, then within the chunk.
    first_line = ledger.lines_in_source(emails, source_id)
    batch: list[dict[str, Any]] = []
    for row, norm in zip(chunk, norms, strict=True):
        summary.rows_read += 1
        if norm:
            first = first_line.get(norm)
            if first is not None:
                row.invalidate("duplicate", f"duplicate of line {first} (same email)")
            elif row.valid:
                first_line[norm] = row.line
        known: dict[str, Any] | None
        if first_ingest:
            known = None
        elif norm:
            known = earlier.get(norm)
        else:
            known = ledger.source_line_known(sha256, row.line, exclude_source=source_id)
        values = _values(row, source_id, norm)
        if known is not None:
            _compare(ledger, row, values, known, summary)
            continue
        if row.valid:
            summary.added_pending += 1
        else:
            summary.added_invalid += 1
            summary.count_invalid(row)
        batch.append(values)
    if batch:
        ledger.insert_rows(batch)


def _follow(
    ledger: Ledger,
    row: InputRow,
    values: dict[str, Any],
    known: dict[str, Any],
    summary: IngestSummary,
) -> None:
    """A person with a user (the job created them, or found them there before) for whom the
    file says something else: the row follows the file. The next `run` brings a person the
    job created in line with it (read first, only the differences sent, nothing removed);
    people who were there before wait for `run --update-existing`, as ever."""
    changed = {c for c in _COMPARED if known[c] != values[c]}
    if changed & set(_NAME_FIELDS):
        summary.keep(KEPT_NAME, row)
    changed -= set(_NAME_FIELDS)
    if not changed:
        return
    status = known["status"]
    step_status = "pending" if status == "created" else "skipped"
    if ledger.follow_file(known["id"], values, steps_for_change(row, changed), step_status):
        if status == "created":
            summary.follow += 1
        elif status == "exists":
            summary.follow_existing += 1
        else:
            summary.follow_rolled_back += 1
    else:  # it changed under us (a run claimed it): say so rather than guess
        summary.keep(KEPT_RUNNING, row)


def _compare(
    ledger: Ledger,
    row: InputRow,
    values: dict[str, Any],
    known: dict[str, Any],
    summary: IngestSummary,
) -> None:
    """A row for a person the ledger already has."""
    status = known["status"]
    if status == "invalid":
        if row.valid and row.email_norm:
            ledger.update_row(known["id"], values, restart=True)
            summary.corrected += 1
            return
        if (
            not row.valid
            and row.error_code != "duplicate"
            and "name" in known
            and any(known[c] != values[c] for c in _COMPARED)
        ):
            # Invalid still, with other values (and perhaps for another reason): what the
            # ledger says is this file's. The same values again: already present.
            ledger.update_invalid(known["id"], values)
            summary.invalid_again += 1
            summary.count_invalid(row)
            return
    elif row.error_code == "duplicate":
        pass  # a line repeating an earlier one of this file: that line was compared
    elif "name" in known and any(known[c] != values[c] for c in _COMPARED):
        if not row.valid:
            summary.keep(KEPT_INVALID, row)
        elif known["user_id"] and status in ("created", "exists", "rolled_back"):
            _follow(ledger, row, values, known, summary)
        elif known["user_id"]:
            summary.keep(KEPT_PERSON, row)
        elif status == "in_progress":
            summary.keep(KEPT_RUNNING, row)
        elif known["in_doubt"]:
            # What the create sent stays (a look-up compares against it); what comes after
            # the create may change.
            if any(known[c] != values[c] for c in PLAN_FIELDS) and ledger.update_plan(
                known["id"], values
            ):
                summary.updated += 1
            if any(known[c] != values[c] for c in _COMPARED if c not in PLAN_FIELDS):
                summary.keep(KEPT_IN_DOUBT, row)
        elif ledger.update_row(known["id"], values, restart=status == "failed"):
            summary.updated += 1
            summary.requeued += status == "failed"
        else:  # it changed under us (a run claimed it): say so rather than guess
            summary.keep(KEPT_RUNNING, row)
        return
    summary.already_present += 1
    summary.already_from[known["source"]] += 1
