"""One command's run, built once: the ledger, the client, the limiter and its paced caller,
the clock, who owns the claims, the modes the command was given, the names of the file, and
the counters. `run`, `check` and `rollback` each build one; the scheduler and every step use
it (a step sees it as the contract's `Context`: jobrunner/steps/contract.py).
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobrunner.caller import PacedCaller, RetryPolicy, RunStats
from jobrunner.errors import JobrunnerError
from jobrunner.ledger import Ledger
from jobrunner.ledger.model import Row
from jobrunner.log import get_logger
from jobrunner.resolve import NameService
from jobrunner.steps import brought_in_line_steps

log = get_logger("jobrunner.scheduler")

STEP_DELAY_S = 3.0  # a new user's steps wait this long (its id reaches other services late)


@dataclass(frozen=True)
class Modes:
    """What the command was asked to do beyond creating the file's people."""

    update_existing: bool = False  # bring people who were there before in line
    restore_deleted: bool = False  # restore deleted users instead of leaving them
    recreate_rolled_back: bool = False  # onboard again what a rollback undid


def new_owner() -> str:
    """Who holds a command's claims: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass
class RunContext:
    ledger: Ledger
    client: Any
    limiter: Any
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    modes: Modes = field(default_factory=Modes)
    concurrency: int = 1
    clock: Callable[[], float] = time.time
    rand: Callable[[], float] = random.random
    owner: str = field(default_factory=new_owner)
    step_delay_s: float = field(default_factory=lambda: STEP_DELAY_S)
    dry_run: bool = False  # never for a run: `check` wraps it in its DryRun
    stats: RunStats = field(default_factory=RunStats)
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.concurrency = max(1, self.concurrency)
        self.caller = PacedCaller(
            self.limiter,
            self.stats,
            self.stop,
            policy=self.policy,
            concurrency=self.concurrency,
            rand=self.rand,
        )
        self.names = NameService(self.ledger, self.client, self.caller.read)
        self.fatal: JobrunnerError | None = None
        self._fatal_lock = threading.Lock()
        self._memos: dict[str, dict[str, Any]] = {}
        self._memo_lock = threading.Lock()

    # -- the contract a step sees --------------------------------------------------------------

    @property
    def update_existing(self) -> bool:
        return self.modes.update_existing

    @property
    def restore_deleted(self) -> bool:
        return self.modes.restore_deleted

    def now(self) -> float:
        return self.clock()

    def call(self, kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.caller.call(kind, fn, *args, **kwargs)

    def read(self, kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.caller.read(kind, fn, *args, **kwargs)

    def wait(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            from jobrunner.steps.contract import Stopping

            raise Stopping

    def wants(self, row: Row, kind: str) -> list[tuple[str, str, str | None, float | None]]:
        return self.ledger.wants_of(row.id, kind)

    def manager_row(self, email: str) -> dict[str, Any] | None:
        return self.ledger.manager_row(email)

    def memo(self, kind: str) -> dict[str, Any]:
        with self._memo_lock:
            return self._memos.setdefault(kind, {})

    def brought_in_line_steps(self, row: Row) -> tuple[tuple[str, str], ...]:
        return brought_in_line_steps(row)

    # -- the run ------------------------------------------------------------------------------

    def authenticate(self) -> None:
        """The first token, before any work: a refused one stops here, nothing marked. Then
        the org the token reaches must be the ledger's (the first one is recorded)."""
        if hasattr(self.client, "on_new_token"):
            self.client.on_new_token = self.limiter.new_token
        self.client.authenticate()
        self.bind_org()

    def bind_org(self) -> None:
        """A ledger belongs to one org: the first command that reaches an org records its
        id, name and region; one whose credentials reach another org is refused here,
        before any write, naming both (a client that cannot tell its org is not asked)."""
        if not hasattr(self.client, "organization"):
            return
        from jobrunner.errors import JobrunnerError
        from jobrunner.genesys import CallError
        from jobrunner.steps.contract import StopRun

        try:
            org = self.caller.read("lookup", self.client.organization)
        except StopRun as stop:
            raise stop.error from None
        except CallError as err:
            raise JobrunnerError(
                f"could not tell which org these credentials reach ({err}); nothing was sent"
            ) from None
        settings = getattr(self.client, "settings", None)
        region = settings.endpoint.display if settings is not None else "unknown"
        known = self.ledger.org()
        if known is None:
            self.ledger.bind_org(org.id, org.name, region)
            log.info("org.bound", org_id=org.id, org=org.name, region=region)
            return
        if known["org_id"] != org.id:
            from jobrunner.errors import ConfigError

            raise ConfigError(
                f"this ledger ({self.ledger.path}) belongs to the org {known['name']!r} "
                f"({known['org_id']}, {known['region']}), but these credentials reach the org "
                f"{org.name!r} ({org.id}, {region}); nothing was sent. For that org, start a "
                "new ledger: --db NEW.db (or JOBRUNNER_DB) and ingest the file there"
            )

    def set_fatal(self, error: JobrunnerError) -> None:
        """The run cannot go on: the first such error is what the command ends with."""
        with self._fatal_lock:
            if self.fatal is None:
                self.fatal = error
                log.error("run.stop", error=str(error))
        self.stop.set()

    def tokens_fetched(self, default: int) -> int:
        return int(getattr(self.client, "tokens_fetched", default))
