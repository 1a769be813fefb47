"""The commands that need the ledger alone: ingest, report, forget, backup."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import click

from jobrunner.cli import render
from jobrunner.cli.common import Obj, confirm_or_refuse, one_line_errors, open_ledger
from jobrunner.errors import JobrunnerError
from jobrunner.ledger import STATUSES


@click.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True, exists=False))
@click.option(
    "--default-country",
    metavar="CODE",
    default=None,
    help="ISO country code (US, GB, DE, ...) for phone numbers written without their "
    "country code, e.g. (317) 555-0142.",
)
@click.pass_obj
def ingest(obj: Obj, file: Path, default_country: str | None) -> None:
    """Validate FILE (CSV, UTF-8) and add its people to the ledger.

    Columns: email and name (or first_name and last_name) are required; phone_number
    (or phone_work), extension, title, department, division (name or id), email_manager,
    location_work, roles_divisions, queues and skills are optional: the Genesys admin
    UI's import template is read as it is. Invalid rows are kept as `invalid` with a
    reason and never sent. A person already in the ledger is compared: rows never sent
    take the file's new values, failed ones go back to pending.
    """
    from jobrunner.ingest import ingest_into

    if default_country is not None:
        from jobrunner.validation import check_country

        try:
            default_country = check_country(default_country)
        except JobrunnerError as exc:
            raise click.BadParameter(
                str(exc).removeprefix("--default-country "), param_hint="'--default-country'"
            ) from None
    with one_line_errors():
        summary = ingest_into(obj.db, file, default_country)
    render.write_ingest_summary(sys.stdout, summary, obj.db)


@click.command()
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
    type=click.Choice(list(STATUSES)),
    help="Only rows with this status (repeatable).",
)
@click.pass_context
def report(ctx: click.Context, fmt: str, statuses: tuple[str, ...]) -> None:
    """What happened to every row: counts per status and step, and the rows themselves.

    The table lists exists, failed and invalid rows, and rows with a failed or waiting step;
    json and csv give every row with its steps.
    """
    from jobrunner.report import report_rows, step_counts

    ledger = open_ledger(ctx)
    out = sys.stdout
    if fmt == "json":
        render.write_json_report(
            out, ledger.counts(), report_rows(ledger, statuses or None), org=ledger.org()
        )
    elif fmt == "csv":
        render.write_csv_report(out, report_rows(ledger, statuses or None))
    else:
        shown = statuses or ("exists", "failed", "invalid")
        with_steps = not statuses
        heading = ", ".join(shown[:-1]) + (" and " if len(shown) > 1 else "") + shown[-1]
        heading += " rows" + (", and rows with a failed or waiting step" * with_steps)
        render.write_table_report(
            out,
            ledger.counts(),
            report_rows(ledger, shown, failed_steps=with_steps),
            heading,
            email_width=ledger.widest_email(shown, failed_steps=with_steps),
            steps=step_counts(ledger),
            settled=ledger.settled_counts(),
            org=ledger.org(),
        )


@click.command()
@click.option("--email", "emails", multiple=True, metavar="EMAIL", help="This person (repeatable).")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["pending", "failed", "invalid"]),
    help="Rows with this status (repeatable).",
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="FILE",
    help="Rows an ingest of this file brought (its name as `report` shows it; repeatable).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@click.pass_context
def forget(
    ctx: click.Context,
    emails: tuple[str, ...],
    statuses: tuple[str, ...],
    sources: tuple[str, ...],
    yes: bool,
) -> None:
    """Remove rows no user was ever created for (pending, failed, invalid).

    The filters combine (a row must match each one given). A row whose person was created
    or found in the org, or whose create may have been sent, is never removed: it is named
    with why. Exit 0 when it forgot rows; 1 when it kept every row asked for.
    """
    from jobrunner.forget import plan_forget
    from jobrunner.lock import RunLock

    if not (emails or statuses or sources):
        raise click.UsageError("say which rows: --email, --status or --source")
    ledger = open_ledger(ctx)
    with one_line_errors(), RunLock(ledger.path).held("forget", command="forget"):
        plan = plan_forget(ledger, emails, statuses, sources)
        if not plan.matched:
            click.echo("no rows match")
            return
        for r, why in plan.kept[:20]:
            click.echo(f"kept: {r['source']}:{r['line']} {r['email']}: {why}")
        if len(plan.kept) > 20:
            click.echo(f"kept: ... and {len(plan.kept) - 20:,} more")
        if plan.removable:
            by_status = Counter(r["status"] for r in plan.removable)
            shown = ", ".join(f"{n:,} {s}" for s, n in sorted(by_status.items()))
            click.echo(f"{_rows(len(plan.removable))} to forget ({shown})")
            confirm_or_refuse("remove them from the ledger?", "nothing removed", yes)
            removed = ledger.forget_rows([r["id"] for r in plan.removable])
            click.echo(f"forgot {_rows(removed)}")
    if plan.kept and not plan.removable:
        # Nothing that was asked for could go: say so with the exit code too.
        raise click.ClickException(
            f"nothing forgotten: {_rows(len(plan.kept))} kept (a user was created or found "
            "for them, or their create may have been sent)"
        )


def _rows(n: int) -> str:
    return "1 row" if n == 1 else f"{n:,} rows"


@click.command()
@click.argument("dest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@click.pass_context
def backup(ctx: click.Context, dest: Path, force: bool) -> None:
    """Copy the ledger to DEST safely, even while a run is working on it.

    Copying the .db file alone loses what is still in its -wal file; DEST is one
    self-contained file (SQLite's backup API) that `--db DEST` can open as it is.
    """
    import os
    import tempfile

    obj: Obj = ctx.obj
    if dest.exists() and not force:
        raise click.ClickException(f"{dest} exists: choose another name, or --force to replace it")
    if dest.resolve() == obj.db.resolve():
        raise click.ClickException(f"{dest} is the ledger itself")
    ledger = open_ledger(ctx)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent or Path("."))
        os.close(fd)  # mkstemp makes it 0600: the copy holds personal data too
        tmp = Path(name)
        with one_line_errors():
            ledger.backup(tmp)
        os.replace(tmp, dest)
        tmp = None
        rows = sum(ledger.counts().values())
    except OSError as exc:
        raise click.ClickException(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    click.echo(f"ledger {obj.db} copied to {dest} ({rows:,} rows, {dest.stat().st_size:,} bytes)")
