"""The command line: each command parses, calls one library function, renders the result
(jobrunner/cli/render.py), and maps errors to exit codes (jobrunner/cli/common.py).

    __init__.py   the group and its options (--db, --log-level, --log-format)
    common.py     what commands share: errors, the ledger (closed in one place), the run
                  options, the progress line
    ledger_commands.py   ingest, report, forget, backup: the ledger alone
    api_commands.py      check, run, rollback: the ledger and the API
    demo.py              demo: the whole import against the bundled emulator
    render.py            every table, summary and report format

Nothing heavy is imported at module level: `jobrunner --help` and `jobrunner report` never
import the Genesys SDK.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from jobrunner import __version__, log
from jobrunner.cli.common import Obj

DEFAULT_DB = Path("state") / "jobrunner.db"


class _Group(click.Group):
    """Failures of the machine itself (a full disk, a broken ledger file) get one line too."""

    def invoke(self, ctx: click.Context) -> Any:
        import sqlite3

        try:
            return super().invoke(ctx)
        except sqlite3.Error as exc:
            where = ctx.obj.db if isinstance(ctx.obj, Obj) else "the ledger"
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
      jobrunner check              what run would do (reads the org only)
      jobrunner run                create and onboard the people (resumes after a crash)
      jobrunner report             what happened to every row
    """
    log.configure(level=log_level.lower(), fmt=log_format)
    ctx.obj = Obj(db=db)


def _add_commands() -> None:
    from jobrunner.cli import api_commands, demo, ledger_commands
    from jobrunner.emulator.command import emulator

    for command in (
        ledger_commands.ingest,
        api_commands.check,
        api_commands.run,
        ledger_commands.report,
        api_commands.rollback,
        ledger_commands.forget,
        ledger_commands.backup,
        demo.demo,
        emulator,
    ):
        cli.add_command(command)


_add_commands()


def main() -> Any:
    return cli(prog_name="jobrunner")
