"""`jobrunner demo`: a whole onboarding rehearsed offline against the bundled emulator."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from jobrunner.cli import render
from jobrunner.cli.api_commands import execute_run
from jobrunner.cli.common import one_line_errors, progress_option, quiet_logs_unless_asked


@click.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the demo's ledger in this folder (default: a temporary folder, removed at the end).",
)
@progress_option
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

    from jobrunner.config import Settings, parse_environment
    from jobrunner.emulator.directory import read_existing_users
    from jobrunner.emulator.org import read_org_file
    from jobrunner.emulator.server import Emulator, EmulatorConfig
    from jobrunner.ingest import ingest_file
    from jobrunner.ledger import Ledger
    from jobrunner.report import report_rows, step_counts
    from jobrunner.resources import examples_dir

    quiet_logs_unless_asked(ctx)
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
        # Genesys' timing, as a real org shows it: the search index lags every change of a
        # user, a new user's version moves in its first seconds, `expand` is best effort.
        search_index_delay_s=1.0,
        search_index_lags_changes=True,
        new_user_version_churn_s=2.0,
        expand_drop_rate=0.05,
        seed=7,
        org=read_org_file(examples / "org.json"),
        existing_users=read_existing_users(examples / "org_users.csv"),
    )
    with one_line_errors():
        ledger = Ledger.open(db)
    try:
        with one_line_errors():
            summary = ingest_file(ledger, examples / "users.csv")
        click.echo(
            f"demo ledger: {db}" + ("" if kept else " (removed at the end; --keep DIR keeps it)")
        )
        click.echo(
            f"ingested {summary.file}: {summary.added_pending} to create, "
            f"{summary.added_invalid} invalid, {summary.already_present} already present"
        )
        with one_line_errors(), Emulator(config) as emulator:
            click.echo(
                f"emulator: {emulator.url} (org of examples/org.json; rate limit 3,000/min, "
                "3% 5xx, 3% dropped creates, new ids unknown to other services for 1 s, search 1 s "
                "behind every change, new users' versions moving for 2 s)"
            )
            settings = Settings("jobrunner-demo", secret, parse_environment(emulator.url))
            result = execute_run(
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
            ledger.counts(),
            report_rows(ledger, shown, failed_steps=True),
            "exists, failed and invalid rows, and rows with a failed or waiting step",
            email_width=ledger.widest_email(shown, failed_steps=True),
            steps=step_counts(ledger),
            settled=ledger.settled_counts(),
        )
        created = stats.get("creations_by_email", {})
        twice = sum(1 for n in created.values() if n > 1)
        ours = [stats["onboarding"][email] for email in created if email in stats["onboarding"]]
        # Every user holds the Employee role in Home from creation: not the job's grant.
        granted = sum(1 for u in ours for g in u["grants"] if list(g) != ["Employee", "Home"])
        click.echo(
            f"\nemulator saw {stats.get('requests_total', '?')} requests; "
            f"{len(created)} users created, {twice} created more than once"
        )
        click.echo(
            f"it recorded for them: {granted:,} role grants, "
            f"{sum(len(u['queues']) for u in ours):,} queue memberships, "
            f"{sum(len(u['skills']) for u in ours):,} skills, "
            f"{sum(1 for u in ours if u['manager']):,} managers, "
            f"{sum(1 for u in ours if u['location']):,} locations"
        )
        if kept:
            click.echo(f"see it again: jobrunner --db {db} report")
        return int(result.exit_code)
    finally:
        ledger.close()
