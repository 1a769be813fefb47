"""What the commands share: one-line errors with their exit codes, the ledger (opened once
per command and closed when the command ends, through click's `call_on_close`), the options
of the commands that send requests, and the progress line."""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from jobrunner import log
from jobrunner.errors import Interrupted, JobrunnerError

if TYPE_CHECKING:
    from jobrunner.config import Settings
    from jobrunner.ledger import Ledger


@dataclass
class Obj:
    """What the group gives its commands."""

    db: Path


def fail(error: JobrunnerError) -> click.ClickException:
    """Turn a domain error into a one-line click error with the right exit code."""
    exc = click.ClickException(str(error))
    exc.exit_code = error.exit_code  # type: ignore[misc]
    return exc


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """A domain error ends the command with one line and its exit code."""
    try:
        yield
    except JobrunnerError as exc:
        raise fail(exc) from None


def open_ledger(ctx: click.Context, create: bool = False) -> Ledger:
    """The command's ledger; closed when the command ends, however it ends."""
    from jobrunner.ledger import Ledger

    obj = ctx.find_object(Obj)
    assert obj is not None, "the group sets Obj"
    with one_line_errors():
        ledger = Ledger.open(obj.db, create=create)
    ctx.call_on_close(ledger.close)
    return ledger


def stdin_is_terminal() -> bool:
    return sys.stdin.isatty()


def confirm_or_refuse(question: str, refusal: str, yes: bool) -> None:
    """Ask on a terminal; without one, `--yes` is needed (scripts must say so)."""
    if yes:
        return
    if not stdin_is_terminal():
        raise click.ClickException(f"{refusal}: confirm with --yes when not on a terminal")
    click.confirm(question, abort=True)


@contextlib.contextmanager
def api_command(ctx: click.Context) -> Iterator[tuple[Settings, Ledger]]:
    """The settings and the ledger of a command that talks to the API. Its errors end it
    with one line and their exit code; until the runner installs its own handlers (after
    the SDK import and the token), a SIGTERM is a Ctrl-C: the interrupted code."""
    from jobrunner.config import load_settings

    with one_line_errors():
        settings = load_settings()
    ledger = open_ledger(ctx)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with one_line_errors():
            yield settings, ledger
    except KeyboardInterrupt:
        raise fail(Interrupted()) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_options(fn: Any) -> Any:
    """--concurrency, --max-attempts, --rate-per-minute, --progress."""
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
        progress_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress line (default: on when stderr is a terminal).",
)


def progress_line(ctx: click.Context, progress: bool | None) -> Any:
    """The live progress line when asked for (or stderr is a terminal), else None. The line
    owns the terminal: logs below warning only when asked for."""
    if not (sys.stderr.isatty() if progress is None else progress):
        return None
    from jobrunner.progress import Progress

    quiet_logs_unless_asked(ctx, stream=_ClearLineStream(sys.stderr), console=True)
    return Progress(sys.stderr)


class _ClearLineStream:
    """stderr while a progress line is drawn: each log line first clears the progress line."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text and text != "\n":
            text = "\r\033[K" + text
        return int(self._stream.write(text))

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return True


def quiet_logs_unless_asked(ctx: click.Context, stream: Any = None, console: bool = False) -> None:
    """Log at warning and above, unless --log-level or JOBRUNNER_LOG_LEVEL said otherwise."""
    root = ctx.find_root()
    asked = root.get_parameter_source("log_level") not in (click.core.ParameterSource.DEFAULT, None)
    fmt = root.params.get("log_format", "auto")
    log.configure(
        level=root.params.get("log_level", "info") if asked else "warning",
        fmt="console" if console and fmt == "auto" else fmt,
        stream=stream,
    )
