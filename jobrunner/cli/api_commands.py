"""The commands that talk to the API: check (reads only), run, rollback."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from jobrunner.cli import render
from jobrunner.cli.common import api_command, confirm_or_refuse, progress_line, run_options

if TYPE_CHECKING:
    from jobrunner.config import Settings
    from jobrunner.ledger import Ledger
    from jobrunner.runner import RunResult


@click.command()
@click.option(
    "--rate-per-minute",
    type=click.FloatRange(min=1, min_open=False),
    default=None,
    help="The org's budget of requests a minute, for the run's length (default: 300, "
    "Genesys' default for a client-credentials token).",
)
@click.pass_context
def check(ctx: click.Context, rate_per_minute: float | None) -> None:
    """Look every name the ledger's rows use up in the org and say what `run` would do.

    Divisions, roles, queues, skills, locations and managers are resolved with list and
    search calls, exactly as `run` does before its first create (names match ignoring case
    and outer spaces). Creates and changes nothing in the org. Exit 0 when every name
    resolves, 1 when any does not (each is listed with the lines that use it).
    """
    from jobrunner.check import plan
    from jobrunner.genesys import GenesysClient

    with api_command(ctx) as (settings, ledger):
        result = plan(ledger, GenesysClient(settings, pool_size=1), rate_per_minute=rate_per_minute)
    render.write_plan(sys.stdout, result, settings.endpoint.display)
    ctx.exit(1 if result.unknown else 0)


@click.command()
@run_options
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
    with api_command(ctx) as (settings, ledger):
        result = execute_run(
            ctx,
            ledger,
            settings,
            concurrency=concurrency,
            max_attempts=max_attempts,
            retry_failed=retry_failed,
            rate_per_minute=rate_per_minute,
            progress=progress,
            update_existing=update_existing,
            restore_deleted=restore_deleted,
            recreate_rolled_back=recreate_rolled_back,
        )
    ctx.exit(result.exit_code)


def execute_run(
    ctx: click.Context,
    ledger: Ledger,
    settings: Settings,
    *,
    concurrency: int,
    max_attempts: int,
    retry_failed: bool,
    rate_per_minute: float | None,
    progress: bool | None,
    **modes: Any,
) -> RunResult:
    """Shared by `run` and `demo`: build the runner, run, print the summary."""
    runner = _runner(ledger, settings, concurrency, max_attempts, rate_per_minute, **modes)
    result = runner.run(retry_failed=retry_failed, progress=progress_line(ctx, progress))
    render.write_run_summary(sys.stdout, result)
    return result


def _runner(
    ledger: Ledger,
    settings: Settings,
    concurrency: int,
    max_attempts: int,
    rate_per_minute: float | None,
    **modes: Any,
) -> Any:
    from jobrunner.genesys import GenesysClient
    from jobrunner.limiter import WindowLimiter
    from jobrunner.runner import RetryPolicy, Runner

    return Runner(
        ledger,
        GenesysClient(settings, pool_size=concurrency),
        concurrency=concurrency,
        policy=RetryPolicy(max_attempts=max_attempts),
        limiter=WindowLimiter(rate_per_minute),
        **modes,
    )


@click.command()
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
@click.option(
    "--clear-managers",
    is_flag=True,
    help="Clear the manager of people outside the rollback who report to someone it deletes "
    "(without it, they keep a deleted user as their manager).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (for scripts).")
@run_options
@click.pass_context
def rollback(
    ctx: click.Context,
    sources: tuple[str, ...],
    emails: tuple[str, ...],
    status: str,
    include_restored: bool,
    include_looked_up: bool,
    clear_managers: bool,
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
    from jobrunner.lock import RunLock
    from jobrunner.runner import choose_for_rollback

    with api_command(ctx) as (settings, ledger):
        # A command working on the ledger is named before anything is counted or asked (the
        # rollback itself takes the lock again, and refuses if one started meanwhile).
        with RunLock(ledger.path).held("rollback", command="rollback"):
            pass
        choice = choose_for_rollback(
            ledger,
            sources,
            emails,
            failed_steps_only=status == "failed",
            include_restored=include_restored,
            include_looked_up=include_looked_up,
        )
        render.write_rollback_choice(sys.stdout, choice)
        if not choice.chosen and not choice.resuming:
            return
        question = "delete them in Genesys Cloud?"
        if choice.orphans:
            question = (
                "delete them in Genesys Cloud, and clear the manager of the people who report "
                "to them?"
                if clear_managers
                else "delete them in Genesys Cloud, leaving the people who report to them with "
                "a deleted manager?"
            )
        confirm_or_refuse(question, "nothing deleted", yes)
        runner = _runner(ledger, settings, concurrency, max_attempts, rate_per_minute)
        result = runner.rollback(
            [r["id"] for r in choice.chosen],
            progress=progress_line(ctx, progress),
            clear_managers=[r["id"] for r in choice.orphans] if clear_managers else (),
        )
    render.write_rollback_summary(sys.stdout, result)
    ctx.exit(1 if result.steps_open else 0)
