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


def main() -> Any:
    return cli(prog_name="jobrunner")
