"""The command line: parse, call one library function, render, map errors to exit codes.

Nothing heavy is imported at module level: `jobrunner --help` and `jobrunner report` never
import the Genesys SDK.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jobrunner import __version__, log
from jobrunner.emulator.command import emulator as emulator_command
from jobrunner.errors import Interrupted, JobrunnerError

if TYPE_CHECKING:
    from jobrunner.config import Settings
    from jobrunner.ledger import Ledger

DEFAULT_DB = Path("state") / "jobrunner.db"
STATUS_CHOICES = (
    "pending",
    "in_progress",
    "created",
    "exists",
    "failed",
    "invalid",
    "rolled_back",
)


class Context:
    def __init__(self, db: Path) -> None:
        self.db = db


def fail(error: JobrunnerError) -> click.ClickException:
    """Turn a domain error into a one-line click error with the right exit code."""
    exc = click.ClickException(str(error))
    exc.exit_code = error.exit_code  # type: ignore[misc]
    return exc


class _Group(click.Group):
    """Failures of the machine itself (a full disk, a broken ledger file) get one line too."""

    def invoke(self, ctx: click.Context) -> Any:
        import sqlite3

        try:
            return super().invoke(ctx)
        except sqlite3.Error as exc:
            where = ctx.obj.db if isinstance(ctx.obj, Context) else "the ledger"
            raise click.ClickException(f"ledger {where}: {exc}") from None
        except BrokenPipeError:
            sys.stderr.close()  # the reader went away (`| head`): nothing more to say
            raise SystemExit(1) from None
        except OSError as exc:
            raise click.ClickException(f"{exc.strerror or exc}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jobrunner")
@click.option(
    "--db",
    type=click.Path(path_type=Path),
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


def examples_dir() -> Path:
    from jobrunner.resources import examples_dir as folder

    return folder()


def _open_ledger(ctx_obj: Context, create: bool) -> Any:
    from jobrunner.ledger import Ledger

    try:
        return Ledger.open(ctx_obj.db, create=create)
    except JobrunnerError as exc:
        raise fail(exc) from None


@cli.command()
@click.argument("file", type=click.Path(path_type=Path, dir_okay=True, exists=False))
@click.option(
    "--default-country",
    metavar="CODE",
    default=None,
    help="ISO country code (US, GB, DE, ...) for phone numbers written without their "
    "country code, e.g. (317) 555-0142.",
)
@click.pass_obj
def ingest(obj: Context, file: Path, default_country: str | None) -> None:
    """Validate FILE (CSV, UTF-8) and add its people to the ledger.

    Columns: email and name (or first_name and last_name) are required; phone_number
    (or phone_work), extension, title, department, division (name or id), email_manager,
    location_work, roles_divisions, queues and skills are optional: the Genesys admin
    UI's import template is read as it is. Invalid rows are kept as `invalid` with a
    reason and never sent. A person already in the ledger is compared: rows never sent
    take the file's new values, failed ones go back to pending.
    """
    from jobrunner.csv_input import read_csv
    from jobrunner.ingest import ingest_csv
    from jobrunner.ledger import missing_folders, remove_ledger_files

    if default_country is not None:
        from jobrunner.csv_input import check_country

        try:
            default_country = check_country(default_country)
        except JobrunnerError as exc:
            raise click.BadParameter(
                str(exc).removeprefix("--default-country "), param_hint="'--default-country'"
            ) from None
    try:
        csv_file = read_csv(file, default_country)  # most refusals come here, before a ledger
    except JobrunnerError as exc:
        raise fail(exc) from None
    new_ledger = not obj.db.exists() and not obj.db.is_symlink()
    new_folders = missing_folders(obj.db.parent)
    finished = False
    try:
        ledger = _open_ledger(obj, create=True)
        try:
            summary = ingest_csv(ledger, csv_file)
        finally:
            ledger.close()
        finished = True
    except JobrunnerError as exc:
        raise fail(exc) from None
    finally:
        csv_file.close()
        if new_ledger and not finished:  # whatever stopped it: leave no ledger behind
            remove_ledger_files(obj.db, new_folders)
    _print_ingest_summary(summary, obj.db)


def _print_ingest_summary(summary: Any, db: Path) -> None:
    out = click.echo
    out(f"{summary.file}: {summary.rows_read:,} rows read")
    if not summary.rows_read:
        out("  (the file has a header and no rows)")
    out(f"  added:            {summary.added_pending:,} to create")
    if summary.updated:
        again = f"; {summary.requeued:,} failed rows are pending again" if summary.requeued else ""
        out(f"  updated:          {summary.updated:,} (never sent: new values taken{again})")
    if summary.corrected:
        out(
            f"  corrected:        {summary.corrected:,} (replace invalid rows of an earlier ingest)"
        )
    again = (
        f" ({summary.invalid_again:,} invalid in an earlier ingest too: the ledger now holds "
        "this file's values and reasons)"
        if summary.invalid_again
        else ""
    )
    out(f"  invalid:          {summary.added_invalid + summary.invalid_again:,}{again}")
    for reason, n in summary.invalid_by_reason.most_common():
        out(f"    {reason:<20} {n:>7,}   e.g. {summary.invalid_examples[reason]}")
    already = ", ".join(f"{n:,} from {src}" for src, n in summary.already_from.most_common())
    out(f"  already present:  {summary.already_present:,}" + (f" ({already})" if already else ""))
    if summary.kept:
        out(f"  not updated:      {sum(summary.kept.values()):,} (the file gives other values)")
        for reason, n in summary.kept.most_common():
            named = ", ".join(summary.kept_named[reason])
            more = n - len(summary.kept_named[reason])
            out(f"    {n:,}: {reason}: {named}" + (f" and {more:,} more" if more else ""))
    if summary.unknown_columns:
        shown = [
            f"{c} (did you mean {summary.suggestions[c]}?)" if c in summary.suggestions else c
            for c in summary.unknown_columns[:12]
        ]
        more = len(summary.unknown_columns) - len(shown)
        out(f"  ignored columns:  {', '.join(shown)}" + (f" and {more:,} more" if more else ""))
    for ignored, used in summary.shadowed.items():
        out(f"  ignored column:   {ignored} (the file's {used} column is used instead)")
    if summary.delimiter != ",":
        names = {";": "semicolon", "\t": "tab", "|": "pipe"}
        out(f"  delimiter:        {names.get(summary.delimiter, summary.delimiter)}")
    out(f"ledger: {db}")


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
    type=click.Choice(list(STATUS_CHOICES)),
    help="Only rows with this status (repeatable).",
)
@click.pass_obj
def report(obj: Context, fmt: str, statuses: tuple[str, ...]) -> None:
    """What happened to every row: counts per status and step, and the rows themselves.

    The table lists failed and invalid rows, and rows with a failed step, with the reason;
    json and csv give every row with its steps.
    """
    from jobrunner import render
    from jobrunner.report import counts, report_rows, step_counts

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
            with_steps = not statuses
            heading = " and ".join(shown) + " rows" + (", and rows with a failed step" * with_steps)
            render.write_table_report(
                out,
                totals,
                report_rows(ledger, shown, failed_steps=with_steps),
                heading,
                email_width=ledger.widest_email(shown, failed_steps=with_steps),
                steps=step_counts(ledger),
                settled=ledger.settled_counts(),
            )
    finally:
        ledger.close()


@cli.command()
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
@click.pass_obj
def forget(
    obj: Context,
    emails: tuple[str, ...],
    statuses: tuple[str, ...],
    sources: tuple[str, ...],
    yes: bool,
) -> None:
    """Remove rows no user was ever created for (pending, failed, invalid).

    The filters combine (a row must match each one given). A row whose person was created
    or found in the org, or whose create may have been sent, is never removed: it is named
    and the command exits 1.
    """
    from jobrunner.runner import RunLock

    if not (emails or statuses or sources):
        raise click.UsageError("say which rows: --email, --status or --source")
    ledger = _open_ledger(obj, create=False)
    lock = RunLock(ledger.path)
    try:
        lock.acquire("forget", command="forget")
        matched = ledger.select_rows(emails, statuses, sources)
        removable = [r for r in matched if _forgettable(r) is None]
        refused = [r for r in matched if _forgettable(r) is not None]
        if not matched:
            click.echo("no rows match")
            return
        for r in refused[:20]:
            click.echo(f"kept: {r['source']}:{r['line']} {r['email']}: {_forgettable(r)}")
        if len(refused) > 20:
            click.echo(f"kept: ... and {len(refused) - 20:,} more")
        if removable:
            by_status = Counter(r["status"] for r in removable)
            shown = ", ".join(f"{n:,} {s}" for s, n in sorted(by_status.items()))
            click.echo(f"{len(removable):,} rows to forget ({shown})")
            if not yes:
                if not _stdin_is_terminal():
                    raise click.ClickException(
                        "nothing removed: confirm with --yes when not on a terminal"
                    )
                click.confirm("remove them from the ledger?", abort=True)
            removed = ledger.forget_rows([r["id"] for r in removable])
            click.echo(f"forgot {removed:,} rows")
    except JobrunnerError as exc:
        raise fail(exc) from None
    finally:
        lock.release()
        ledger.close()
    if refused:
        raise click.ClickException(
            f"{len(refused):,} rows were kept: a user was created or found for them, or their "
            "create may have been sent"
        )


def _stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def _forgettable(row: dict[str, Any]) -> str | None:
    """None if the row may be forgotten, else why not."""
    if row["status"] in ("created", "exists", "rolled_back") or row["user_id"]:
        return f"{row['status']}: the person is in Genesys"
    if row["in_doubt"]:
        return "a create may have been sent (a run looks it up first)"
    if row["status"] not in ("pending", "failed", "invalid"):
        return f"{row['status']}: a run is working on it"
    return None


@cli.command()
@click.argument("dest", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--force", is_flag=True, help="Replace DEST if it exists.")
@click.pass_obj
def backup(obj: Context, dest: Path, force: bool) -> None:
    """Copy the ledger to DEST safely, even while a run is working on it.

    Copying the .db file alone loses what is still in its -wal file; DEST is one
    self-contained file (SQLite's backup API) that `--db DEST` can open as it is.
    """
    import os
    import tempfile

    if dest.exists() and not force:
        raise click.ClickException(f"{dest} exists: choose another name, or --force to replace it")
    if dest.resolve() == obj.db.resolve():
        raise click.ClickException(f"{dest} is the ledger itself")
    ledger = _open_ledger(obj, create=False)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent or Path("."))
        os.close(fd)  # mkstemp makes it 0600: the copy holds personal data too
        tmp = Path(name)
        ledger.backup(tmp)
        os.replace(tmp, dest)
        tmp = None
        rows = sum(ledger.counts().values())
    except JobrunnerError as exc:
        raise fail(exc) from None
    except OSError as exc:
        raise click.ClickException(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        ledger.close()
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    click.echo(f"ledger {obj.db} copied to {dest} ({rows:,} rows, {dest.stat().st_size:,} bytes)")


class _ClearLineStream:
    """stderr while a progress line is drawn: each log line first clears the progress line."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text and text != "\n":
            text = "\r\033[K" + text
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return True


def _quiet_logs_unless_asked(ctx: click.Context, stream: Any = None, console: bool = False) -> None:
    """Log at warning and above, unless --log-level or JOBRUNNER_LOG_LEVEL said otherwise."""
    root = ctx.find_root()
    asked = root.get_parameter_source("log_level") not in (click.core.ParameterSource.DEFAULT, None)
    fmt = root.params.get("log_format", "auto")
    log.configure(
        level=root.params.get("log_level", "info") if asked else "warning",
        fmt="console" if console and fmt == "auto" else fmt,
        stream=stream,
    )


def _execute_run(
    ctx: click.Context,
    ledger: Any,
    settings: Any,
    *,
    concurrency: int,
    max_attempts: int,
    retry_failed: bool,
    rate_per_minute: float | None,
    progress: bool | None,
    modes: dict[str, bool] | None = None,
) -> Any:
    """Shared by `run` and `demo`: build the client and runner, run, map errors."""
    from jobrunner.genesys import GenesysClient
    from jobrunner.limiter import WindowLimiter
    from jobrunner.progress import Progress
    from jobrunner.runner import RetryPolicy, Runner

    show = sys.stderr.isatty() if progress is None else progress
    display = None
    if show:
        # The progress line owns the terminal: logs below warning only when asked for.
        _quiet_logs_unless_asked(ctx, stream=_ClearLineStream(sys.stderr), console=True)
        display = Progress(sys.stderr)
    client = GenesysClient(settings, pool_size=concurrency)
    runner = Runner(
        ledger,
        client,
        concurrency=concurrency,
        policy=RetryPolicy(max_attempts=max_attempts),
        limiter=WindowLimiter(rate_per_minute),
        update_existing=(modes or {}).get("update_existing", False),
        restore_deleted=(modes or {}).get("restore_deleted", False),
        recreate_rolled_back=(modes or {}).get("recreate_rolled_back", False),
    )
    result = runner.run(retry_failed=retry_failed, progress=display)
    counts = result.counts
    stats = result.stats
    if result.recovered:
        click.echo(
            f"recovered {result.recovered:,} rows a stopped run left in progress "
            f"({result.recovered_in_doubt:,} looked up before any new create)"
        )
    rolled_back = f" | rolled back {counts['rolled_back']:,}" if counts["rolled_back"] else ""
    click.echo(
        f"created {counts['created']:,} | exists {counts['exists']:,} | "
        f"failed {counts['failed']:,} | pending {counts['pending']:,} | "
        f"invalid {counts['invalid']:,} (from ingest){rolled_back}"
    )
    if stats.steps_total or stats.steps:
        click.echo(
            f"steps: done {stats.steps['done']:,} | failed {stats.steps['failed']:,} | "
            f"still open {result.steps_open:,}"
        )
    click.echo(
        f"this run: {stats.done:,} people settled, {stats.steps['done']:,} steps done; "
        f"API calls: {_calls_text(stats.calls)}; {result.limited:,} answered 429"
    )
    if counts["failed"] or stats.steps["failed"]:
        click.echo(
            "failed rows and steps: `jobrunner report`; "
            "retry them with `jobrunner run --retry-failed`"
        )
    return result


def _calls_text(calls: Any) -> str:
    """API calls by what they were for (a step's reads count with its writes)."""
    from jobrunner import steps

    names = {  # kind -> (one, many)
        steps.CREATE.kind: steps.CREATE.calls,
        "search": ("search", "searches"),
        "lookup": ("name look-up", "name look-ups"),
        **{step.kind: step.calls for step in steps.RUN_STEPS},
        "restore": ("for restores", "for restores"),
        steps.ROLLBACK.kind: steps.ROLLBACK.calls,
        "token": ("token", "tokens"),
    }
    shown = [f"{calls[k]:,} {names[k][calls[k] != 1]}" for k in names if calls[k]]
    shown += [f"{n:,} {k}" for k, n in calls.items() if k not in names and n]
    return ", ".join(shown) or "none"


def _run_options(fn: Any) -> Any:
    options = [
        click.option(
            "--concurrency",
            type=click.IntRange(1, 64),
            default=8,
            show_default=True,
            help="Worker threads sharing one token. The default reaches the API's limit "
            "of 300 requests a minute with up to ~1.5 s latency.",
        ),
        click.option(
            "--max-attempts",
            type=click.IntRange(1, 1000),
            default=10,
            show_default=True,
            help="Tries per row on 5xx and network errors (429s never count).",
        ),
        click.option(
            "--rate-per-minute",
            type=click.FloatRange(min=1, min_open=False),
            default=None,
            help="A ceiling on requests a minute, for an org whose budget other "
            "integrations share (default: none; the pace follows the API's window, learned "
            "from its first 429).",
        ),
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Live progress line (default: on when stderr is a terminal).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@contextlib.contextmanager
def _api_command(ctx: click.Context) -> Iterator[tuple[Settings, Ledger]]:
    """The settings and the ledger of a command that talks to the API. Its errors end it
    with one line and their exit code; until the runner installs its own handlers (after
    the SDK import and the token), a SIGTERM is a Ctrl-C: the interrupted code."""
    from jobrunner.config import load_settings

    obj: Context = ctx.obj
    try:
        settings = load_settings()
    except JobrunnerError as exc:
        raise fail(exc) from None
    ledger = _open_ledger(obj, create=False)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield settings, ledger
    except JobrunnerError as exc:
        raise fail(exc) from None
    except KeyboardInterrupt:
        raise fail(Interrupted()) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        ledger.close()


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Look every name the ledger's rows use up in the org and say what `run` would do.

    Divisions, roles, queues, skills, locations and managers are resolved with list and
    search calls, exactly as `run` does before its first create (names match ignoring case
    and outer spaces). Creates and changes nothing in the org. Exit 0 when every name
    resolves, 1 when any does not (each is listed with the lines that use it).
    """
    from jobrunner import render
    from jobrunner.check import plan
    from jobrunner.genesys import GenesysClient

    with _api_command(ctx) as (settings, ledger):
        result = plan(ledger, GenesysClient(settings, pool_size=1))
    render.write_plan(sys.stdout, result, settings.endpoint.display)
    ctx.exit(1 if result.unknown else 0)


@cli.command()
@_run_options
@click.option(
    "--retry-failed", is_flag=True, help="Put failed rows and steps back in the queue first."
)
@click.option(
    "--update-existing",
    is_flag=True,
    help="Bring people who were already there in line with the file: add roles, queues and "
    "skills (never remove), set the fields the file gives, move division. Reads first; sends "
    "only what differs.",
)
@click.option(
    "--restore-deleted",
    is_flag=True,
    help="A person whose email belongs to a deleted user: restore that user, then onboard "
    "them like a new one.",
)
@click.option(
    "--recreate-rolled-back",
    is_flag=True,
    help="Onboard again the rows a `jobrunner rollback` undid (their deleted users are restored).",
)
@click.pass_context
def run(
    ctx: click.Context,
    concurrency: int,
    max_attempts: int,
    rate_per_minute: float | None,
    progress: bool | None,
    retry_failed: bool,
    update_existing: bool,
    restore_deleted: bool,
    recreate_rolled_back: bool,
) -> None:
    """Create every pending user in Genesys Cloud. Safe to rerun after any crash.

    Reads GENESYS_CLOUD_CLIENT_ID, GENESYS_CLOUD_CLIENT_SECRET and
    GENESYS_CLOUD_ENVIRONMENT from the environment or ./.env. Created, existing and
    invalid rows are skipped; rows a crashed run left unanswered are looked up before
    they are created again.
    """
    with _api_command(ctx) as (settings, ledger):
        result = _execute_run(
            ctx,
            ledger,
            settings,
            concurrency=concurrency,
            max_attempts=max_attempts,
            retry_failed=retry_failed,
            rate_per_minute=rate_per_minute,
            progress=progress,
            modes={
                "update_existing": update_existing,
                "restore_deleted": restore_deleted,
                "recreate_rolled_back": recreate_rolled_back,
            },
        )
    ctx.exit(result.exit_code)


@cli.command()
@click.option("--source", "sources", multiple=True, metavar="FILE", help="Only rows of this file.")
@click.option("--email", "emails", multiple=True, metavar="EMAIL", help="Only this person.")
@click.option(
    "--status",
    type=click.Choice(["created", "failed"]),
    default="created",
    show_default=True,
    help="created: every person this ledger created; failed: only those with a failed step.",
)
@click.option("--include-restored", is_flag=True, help="Also delete users this job restored.")
@click.option(
    "--include-looked-up",
    is_flag=True,
    help="Also delete users settled by a look-up after an unanswered create (a person who "
    "was there before and looks the same cannot be told apart).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@_run_options
@click.pass_context
def rollback(
    ctx: click.Context,
    sources: tuple[str, ...],
    emails: tuple[str, ...],
    status: str,
    include_restored: bool,
    include_looked_up: bool,
    yes: bool,
    concurrency: int,
    max_attempts: int,
    rate_per_minute: float | None,
    progress: bool | None,
) -> None:
    """Delete the users this ledger created, and only those. Resumable.

    Never touches people who were there before the job (`exists`). Each delete is recorded
    (`rolled_back`); a user already gone counts as done; a stopped rollback resumes where it
    stopped. After it, `run` creates those rows again only with --recreate-rolled-back.
    """
    from jobrunner.genesys import GenesysClient
    from jobrunner.limiter import WindowLimiter
    from jobrunner.runner import RetryPolicy, RunLock, Runner

    with _api_command(ctx) as (settings, ledger):
        # A command working on the ledger is named before anything is counted or asked (the
        # rollback itself takes the lock again, and refuses if one started meanwhile).
        probe = RunLock(ledger.path)
        probe.acquire("rollback", command="rollback")
        probe.release()
        found = ledger.rollback_candidates(sources, emails, status == "failed")
        wanted: set[str | None] = {"create"}
        if include_restored:
            wanted.add("restore")
        if include_looked_up:
            wanted |= {"lookup", None}
        chosen = [r for r in found if r["settled_by"] in wanted]
        left_out = Counter(r["settled_by"] for r in found if r["settled_by"] not in wanted)
        resuming = sum(ledger.steps_left(("rollback",)).values())
        click.echo(
            f"{len(chosen):,} users this ledger created will be deleted"
            + (f" ({resuming:,} of an earlier rollback still to finish)" if resuming else "")
        )
        if left_out["lookup"]:
            click.echo(
                f"  left out: {left_out['lookup']:,} created by look-up after an unanswered "
                "create (a person who was there before looks the same): --include-looked-up"
            )
        if left_out[None]:
            click.echo(
                f"  left out: {left_out[None]:,} created by an earlier jobrunner, which did not "
                "record whether a look-up settled them: --include-looked-up"
            )
        if left_out["restore"]:
            click.echo(f"  left out: {left_out['restore']:,} restored: --include-restored")
        if not chosen and not resuming:
            return
        if not yes:
            if not _stdin_is_terminal():
                raise click.ClickException(
                    "nothing deleted: confirm with --yes when not on a terminal"
                )
            click.confirm("delete them in Genesys Cloud?", abort=True)
        show = sys.stderr.isatty() if progress is None else progress
        display = None
        if show:
            from jobrunner.progress import Progress

            _quiet_logs_unless_asked(ctx, stream=_ClearLineStream(sys.stderr), console=True)
            display = Progress(sys.stderr)
        runner = Runner(
            ledger,
            GenesysClient(settings, pool_size=concurrency),
            concurrency=concurrency,
            policy=RetryPolicy(max_attempts=max_attempts),
            limiter=WindowLimiter(rate_per_minute),
        )
        result = runner.rollback([r["id"] for r in chosen], progress=display)
    click.echo(
        f"rolled back {result.counts['rolled_back']:,} rows in all; this run: "
        f"{result.stats.steps['done']:,} deleted or already gone, "
        f"{result.stats.steps['failed']:,} failed; API calls: {_calls_text(result.stats.calls)}"
    )
    ctx.exit(1 if result.steps_open else 0)


@cli.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's ledger in this folder (default: a temporary folder, removed at the end).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress line (default: on when stderr is a terminal).",
)
@click.pass_context
def demo(ctx: click.Context, keep: Path | None, progress: bool | None) -> None:
    """Rehearse a whole onboarding offline against the bundled emulator.

    Starts the emulator on a free loopback port with the org of examples/org.json (roles,
    queues, skills, locations, divisions, a few people already there), some 5xx faults and
    dropped connections; ingests examples/users.csv (the admin UI's import template, with
    managers later in the file than some of their reports) into a ledger of its own (never
    your default one); runs; and prints the report and what the emulator recorded.
    """
    import shutil
    import tempfile

    folder = keep or Path(tempfile.mkdtemp(prefix="jobrunner-demo-"))
    try:
        code = _demo(ctx, folder, progress, kept=keep is not None)
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    ctx.exit(code)


def _demo(ctx: click.Context, folder: Path, progress: bool | None, kept: bool) -> int:
    import secrets

    from jobrunner import render
    from jobrunner.config import Settings, parse_environment
    from jobrunner.emulator.directory import read_existing_users
    from jobrunner.emulator.org import read_org_file
    from jobrunner.emulator.server import Emulator, EmulatorConfig
    from jobrunner.ingest import ingest_file
    from jobrunner.ledger import Ledger
    from jobrunner.report import counts, report_rows, step_counts

    _quiet_logs_unless_asked(ctx)
    examples = examples_dir()
    db = folder / "demo.db"
    secret = secrets.token_urlsafe(24)
    config = EmulatorConfig(
        client_id="jobrunner-demo",
        client_secret=secret,
        # Genesys' org-wide limit, so the demo takes seconds: `jobrunner emulator` rehearses
        # the per-token 300 a minute.
        rate_per_minute=3000,
        latency_ms=40,
        latency_jitter_ms=40,
        fault_5xx_rate=0.03,
        drop_after_create_rate=0.03,
        fresh_user_404_s=1.0,
        seed=7,
        org=read_org_file(examples / "org.json"),
        existing_users=read_existing_users(examples / "org_users.csv"),
    )
    try:
        ledger = Ledger.open(db)
        summary = ingest_file(ledger, examples / "users.csv")
    except JobrunnerError as exc:
        raise fail(exc) from None
    click.echo(
        f"demo ledger: {db}" + ("" if kept else " (removed at the end; --keep DIR keeps it)")
    )
    click.echo(
        f"ingested {summary.file}: {summary.added_pending} to create, "
        f"{summary.added_invalid} invalid, {summary.already_present} already present"
    )
    try:
        with Emulator(config) as emulator:
            click.echo(
                f"emulator: {emulator.url} (org of examples/org.json; rate limit 3,000/min, "
                "3% 5xx, 3% dropped creates, new ids unknown to other services for 1 s)"
            )
            settings = Settings("jobrunner-demo", secret, parse_environment(emulator.url))
            result = _execute_run(
                ctx,
                ledger,
                settings,
                concurrency=8,
                max_attempts=10,
                retry_failed=False,
                rate_per_minute=None,
                progress=progress,
            )
            stats = emulator.stats()
        click.echo()
        shown = ("failed", "invalid", "exists")
        render.write_table_report(
            sys.stdout,
            counts(ledger),
            report_rows(ledger, shown, failed_steps=True),
            "exists, failed and invalid rows, and rows with a failed step",
            email_width=ledger.widest_email(shown, failed_steps=True),
            steps=step_counts(ledger),
            settled=ledger.settled_counts(),
        )
    except JobrunnerError as exc:
        raise fail(exc) from None
    finally:
        ledger.close()
    created = stats.get("creations_by_email", {})
    twice = sum(1 for n in created.values() if n > 1)
    ours = [stats["onboarding"][email] for email in created if email in stats["onboarding"]]
    click.echo(
        f"\nemulator saw {stats.get('requests_total', '?')} requests; "
        f"{len(created)} users created, {twice} created more than once"
    )
    click.echo(
        f"it recorded for them: {sum(len(u['grants']) for u in ours):,} role grants, "
        f"{sum(len(u['queues']) for u in ours):,} queue memberships, "
        f"{sum(len(u['skills']) for u in ours):,} skills, "
        f"{sum(1 for u in ours if u['manager']):,} managers, "
        f"{sum(1 for u in ours if u['location']):,} locations"
    )
    if kept:
        click.echo(f"see it again: jobrunner --db {db} report")
    return int(result.exit_code)


def main() -> Any:
    return cli(prog_name="jobrunner")
