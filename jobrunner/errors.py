"""One exception family. Every expected failure is a JobrunnerError with a one-line message.

The CLI turns these into a one-line error and the exit code below; anything else is a bug.
"""

from __future__ import annotations

# Exit codes, documented in README.md.
EXIT_OK = 0
EXIT_FAILED = 1  # some rows failed, or the command could not do its job (bad file, bad ledger)
EXIT_USAGE = 2  # click's own code for a bad command line
EXIT_CONFIG = 3  # configuration: credentials, environment, unreachable host, missing permission
EXIT_BUSY = 4  # another `jobrunner run` is working on this ledger
EXIT_INTERRUPTED = 130  # SIGINT / SIGTERM: stopped cleanly, rerun to resume


class JobrunnerError(Exception):
    """Base of every failure a user can cause or fix."""

    exit_code = EXIT_FAILED


class InputFileError(JobrunnerError):
    """The input file was refused as a whole; nothing from it was stored."""


class LedgerError(JobrunnerError):
    """The ledger cannot be opened or used."""


class ConfigError(JobrunnerError):
    """Missing or wrong configuration: nothing was sent, or the API refused who we are."""

    exit_code = EXIT_CONFIG


class LedgerBusy(JobrunnerError):
    """Another runner holds the ledger."""

    exit_code = EXIT_BUSY


class Interrupted(JobrunnerError):
    """The run was stopped by a signal; the ledger is consistent and a rerun resumes."""

    exit_code = EXIT_INTERRUPTED

    def __init__(
        self,
        message: str = "interrupted: the ledger is consistent; run `jobrunner run` again to resume",
    ) -> None:
        super().__init__(message)
