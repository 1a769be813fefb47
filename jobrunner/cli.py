"""The command line: parse, call one library function, render, map errors to exit codes.

Nothing heavy is imported at module level: `jobrunner --help` and `jobrunner report` never
import the Genesys SDK.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from jobrunner import __version__, log
from jobrunner.errors import JobrunnerError
from jobrunner.emulator.command import emulator as emulator_command

DEFAULT_DB = Path("state") / "jobrunner.db"


class Context:
    def __init__(self, db: Path) -> None:
        self.db = db


def fail(error: JobrunnerError) -> click.ClickException:
    """Turn a domain error into a one-line click error with the right exit code."""
    exc = click.ClickException(str(error))
    exc.exit_code = error.exit_code
    return exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jobrunner")
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="JOBRUNNER_DB",
    default=DEFAULT_DB,
    show_default=True,
    help="The ledger (SQLite file). Env: JOBRUNNER_DB.",
)
@click.option(
    "--log-level",
    type=click.Choice(log.LEVELS, case_sensitive=False),
    envvar="JOBRUNNER_LOG_LEVEL",
    default="info",
    show_default=True,
    help="Env: JOBRUNNER_LOG_LEVEL.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
    help="Logs go to stderr: readable on a terminal, JSON lines otherwise.",
)
@click.pass_context
def cli(ctx: click.Context, db: Path, log_level: str, log_format: str) -> None:
    """Create Genesys Cloud users from a CSV, exactly once, safe to rerun after any crash.

    \b
      jobrunner ingest users.csv   load and validate the file into the ledger
      jobrunner run                create the pending users (resumes after a crash)
      jobrunner report             what happened to every row
    """
    log.configure(level=log_level.lower(), fmt=log_format)
    ctx.obj = Context(db=db)


cli.add_command(emulator_command)


def _open_ledger(ctx_obj: Context, create: bool) -> Any:
    from jobrunner.ledger import Ledger

    try:
        return Ledger.open(ctx_obj.db, create=create)
    except JobrunnerError as exc:
        raise fail(exc) from None


@cli.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True, exists=False))
@click.pass_obj
def ingest(obj: Context, file: Path) -> None:
    """Validate FILE (CSV, UTF-8) and add its new rows to the ledger.

    Columns: first_name, last_name, email (required); phone_number (E.164, e.g.
    +13175550101), division_id (UUID), title, department (optional). Invalid rows are
    kept as `invalid` with a reason and never sent. Rows whose email is already in the
    ledger are skipped, so ingesting a file twice adds nothing.
    """
    from jobrunner.ingest import ingest_file

    ledger = _open_ledger(obj, create=True)
    try:
        summary = ingest_file(ledger, file)
    except JobrunnerError as exc:
        raise fail(exc) from None
    finally:
        ledger.close()
    out = click.echo
    out(f"{summary.file}: {summary.rows_read:,} rows read")
    out(f"  added:            {summary.added_pending:,} to create")
    if summary.corrected:
        out(f"  corrected:        {summary.corrected:,} (replace invalid rows of an earlier ingest)")
    out(f"  invalid:          {summary.added_invalid:,}")
    for reason, n in summary.invalid_by_reason.most_common():
        out(f"    {reason:<20} {n:>7,}   e.g. {summary.invalid_examples[reason]}")
    already = ", ".join(f"{n:,} from {src}" for src, n in summary.already_from.most_common())
    out(f"  already present:  {summary.already_present:,}" + (f" ({already})" if already else ""))
    if summary.unknown_columns:
        out(f"  ignored columns:  {', '.join(summary.unknown_columns)}")
    if summary.delimiter != ",":
        names = {";": "semicolon", "\t": "tab", "|": "pipe"}
        out(f"  delimiter:        {names.get(summary.delimiter, summary.delimiter)}")
    out(f"ledger: {obj.db}")


@cli.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "csv"]),
    default="table",
    show_default=True,
    help="table: counts, then failed and invalid rows; json/csv: every row.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["pending", "in_progress", "created", "exists", "failed", "invalid"]),
    help="Only rows with this status (repeatable).",
)
@click.pass_obj
def report(obj: Context, fmt: str, statuses: tuple[str, ...]) -> None:
    """What happened to every row: counts per status and the rows themselves."""
    from jobrunner import render
    from jobrunner.report import counts, report_rows

    ledger = _open_ledger(obj, create=False)
    try:
        totals = counts(ledger)
        out = sys.stdout
        if fmt == "json":
            render.write_json_report(out, totals, report_rows(ledger, statuses or None))
        elif fmt == "csv":
            render.write_csv_report(out, report_rows(ledger, statuses or None))
        else:
            shown = statuses or ("failed", "invalid")
            heading = " and ".join(shown) + " rows"
            render.write_table_report(out, totals, report_rows(ledger, shown), heading)
    finally:
        ledger.close()


def main() -> Any:
    return cli(prog_name="jobrunner")
