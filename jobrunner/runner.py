"""`jobrunner run` and `jobrunner rollback`: everything around the scheduler, safe under kill -9.

A run, in order: take the run lock (one command per ledger), check the ledger file (SQLite's
quick check), return work a dead runner left in progress to the queue, apply the flags
(--retry-failed, --recreate-rolled-back, --restore-deleted, --update-existing), get a token,
find the ids of people a stopped run left without one, resolve every name the remaining work
uses (rows that name something unknown fail before their create), order the creates
(managers first), and run the scheduler (jobrunner/scheduler.py) over the registry's steps
(jobrunner/steps/) until the work is done or the run stops.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobrunner import steps
from jobrunner.caller import RetryPolicy, RunStats
from jobrunner.context import Modes, RunContext
from jobrunner.errors import JobrunnerError
from jobrunner.genesys import CallError
from jobrunner.ledger import Ledger, free_bytes
from jobrunner.ledger.model import Row
from jobrunner.limiter import WindowLimiter
from jobrunner.lock import RunLock
from jobrunner.log import get_logger
from jobrunner.resolve import MANAGER_IN_LEDGER, Resolution, describe
from jobrunner.scheduler import Scheduler
from jobrunner.steps.contract import Stopping, StopRun
from jobrunner.steps.create import existing_user, lookup_failed

__all__ = ["RetryPolicy", "RunLock", "RunResult", "RunStats", "Runner"]

log = get_logger("jobrunner.runner")

DEFAULT_CONCURRENCY = 8
# What a run may write per row still to do (ledger pages, WAL growth): warned about when the
# ledger's disk has less free (the WAL grew to ~4 MB on a 2,000-row run).
DISK_PER_ROW = 8_000
DISK_BASE = 32_000_000


@dataclass
class RollbackChoice:
    """The people a rollback would delete, and those it leaves out (by how they were
    settled: `lookup`, `restore`, None for an earlier jobrunner's rows)."""

    chosen: list[dict[str, Any]]
    left_out: Counter[str | None]
    resuming: int  # rollback steps of an earlier rollback still to finish
    # People outside the rollback who report to someone it deletes.
    orphans: list[dict[str, Any]] = field(default_factory=list)


def choose_for_rollback(
    ledger: Ledger,
    sources: Sequence[str],
    emails: Sequence[str],
    *,
    failed_steps_only: bool = False,
    include_restored: bool = False,
    include_looked_up: bool = False,
) -> RollbackChoice:
    """Only the users this ledger created: never people who were there before (`exists`);
    those settled by a look-up (a person who was there before may look the same) and those
    restored only when asked for."""
    found = ledger.rollback_candidates(sources, emails, failed_steps_only)
    wanted: set[str | None] = {"create"}
    if include_restored:
        wanted.add("restore")
    if include_looked_up:
        wanted |= {"lookup", None}
    chosen = [r for r in found if r["settled_by"] in wanted]
    return RollbackChoice(
        chosen,
        Counter(r["settled_by"] for r in found if r["settled_by"] not in wanted),
        sum(ledger.steps_left((steps.ROLLBACK.kind,)).values()),
        ledger.reports_outside([r["id"] for r in chosen]),
    )


def revive_healed(ledger: Ledger, resolution: Resolution) -> tuple[int, int]:
    """Failures the org has fixed since (every name a failed row uses resolves now; the
    name a failed step needed, or its manager's user, is there now) go back to the queue:
    no --retry-failed needed. Failures the API gave for the person (a 400) still wait for
    --retry-failed or a corrected file. Returns (rows, steps) revived."""
    rows, failed_steps = ledger.healable()
    if not rows and not failed_steps:
        return 0, 0
    blocked = resolution.problems_by_row()
    revive_rows = [r for r in rows if r not in blocked]
    revive_steps = []
    for row_id, kind, target, code, manager in failed_steps:
        if code == "manager_missing":
            if manager and _manager_has_user(ledger, resolution, manager):
                revive_steps.append((row_id, kind, target))
            continue
        if not any(
            steps.step_of_name(f.kind) == kind and (kind != "queue" or f.key == target)
            for f in blocked.get(row_id, [])
        ):
            revive_steps.append((row_id, kind, target))
    return ledger.revive(revive_rows, revive_steps)


def _manager_has_user(ledger: Ledger, resolution: Resolution, email: str) -> bool:
    found = resolution.id_of("manager", email)
    if found is None:
        return False
    if found != MANAGER_IN_LEDGER:
        return True
    row = ledger.manager_row(email)
    return bool(row and row["user_id"])


@dataclass
class RunResult:
    counts: dict[str, int]
    stats: RunStats
    steps_open: int = 0  # steps pending or failed at the end
    recovered: int = 0
    recovered_in_doubt: int = 0
    requeued: int = 0
    limited: int = 0  # requests answered 429
    # the ledger's steps: done, failed, open (still to do), waiting (for a manager)
    step_totals: dict[str, int] = field(default_factory=dict)
    # exists rows: there (before the job), in_line (brought in line), deleted, unknown
    exists_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        left = self.counts["failed"] + self.counts["pending"] + self.counts["in_progress"]
        return 1 if left or self.steps_open else 0


class Runner:
    """Runs the work of one ledger. `client` is a GenesysClient (or a stand-in)."""

    def __init__(
        self,
        ledger: Ledger,
        client: Any,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        policy: RetryPolicy | None = None,
        limiter: Any = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        update_existing: bool = False,
        restore_deleted: bool = False,
        recreate_rolled_back: bool = False,
    ) -> None:
        self.ctx = RunContext(
            ledger,
            client,
            limiter or WindowLimiter(),
            policy=policy or RetryPolicy(),
            modes=Modes(update_existing, restore_deleted, recreate_rolled_back),
            concurrency=concurrency,
            clock=clock,
            rand=rand,
        )

    @property
    def stats(self) -> RunStats:
        return self.ctx.stats

    @property
    def limiter(self) -> Any:
        return self.ctx.limiter

    # -- run -----------------------------------------------------------------------------------

    def run(self, retry_failed: bool = False, progress: Any = None) -> RunResult:
        with RunLock(self.ctx.ledger.path).held(self.ctx.owner):
            return self._run_locked(retry_failed, progress)

    def _run_locked(self, retry_failed: bool, progress: Any) -> RunResult:
        ctx, ledger = self.ctx, self.ctx.ledger
        ledger.quick_check()
        recovered, in_doubt, steps_back = ledger.recover_abandoned()
        if recovered or steps_back:
            log.warning(
                "recovered",
                rows=recovered,
                in_doubt=in_doubt,
                steps=steps_back,
                detail="work a stopped run left in progress is back in the queue",
            )
        self._apply_modes()
        requeued = 0
        if retry_failed:
            requeued, steps_requeued = ledger.requeue_failed()
            if requeued or steps_requeued:
                log.info("retry_failed", rows=requeued, steps=steps_requeued)
        counts = ledger.counts()
        left, _due = ledger.work_left(steps.RUN_KINDS)
        ctx.stats.total = counts["pending"]
        ctx.stats.steps_total = sum(ledger.steps_left(steps.RUN_KINDS).values())
        self._warn_if_disk_low(left)
        log.info(
            "run.start",
            pending=counts["pending"],
            steps=ctx.stats.steps_total,
            concurrency=ctx.concurrency,
        )
        healable = any(ledger.healable())
        if left or healable or ledger.exists_without_id(limit=1):
            ctx.authenticate()  # ConfigError here: nothing sent, nothing marked
            try:
                # People found there before whose id a stopped run (or a lagging search)
                # never brought: first, so their reports' profiles and updates can use it.
                self._name_existing(ledger.exists_without_id())
                if ctx.modes.update_existing and self._bring_in_line():
                    left, _due = ledger.work_left(steps.RUN_KINDS)
                if (left or healable) and ctx.fatal is None:
                    resolution = ctx.names.resolve()
                    revived = revive_healed(ledger, resolution)
                    if any(revived):
                        log.info(
                            "revived",
                            rows=revived[0],
                            steps=revived[1],
                            detail="failures for names the org has now are due again",
                        )
                    self._fail_unknown_names(resolution)
                    ledger.wake_all_reports(steps.AFTER_MANAGER)
                    ledger.set_ranks()
                    ctx.stats.total = ledger.counts()["pending"]
                    ctx.stats.steps_total = sum(ledger.steps_left(steps.RUN_KINDS).values())
                    Scheduler(ctx, (*steps.RUN_STEPS, steps.CREATE)).work(progress)
            except StopRun as stop:
                ctx.set_fatal(stop.error)
            except CallError as err:  # a look-up failed for good before any work began
                ctx.set_fatal(
                    JobrunnerError(f"could not look the file's names up in the org: {err}")
                )
            except Stopping:
                pass
            ctx.stats.calls["token"] = ctx.tokens_fetched(1)
        result = RunResult(
            ledger.counts(),
            ctx.stats,
            ledger.steps_not_done(steps.RUN_KINDS),
            recovered,
            in_doubt,
            requeued,
            limited=ctx.limiter.limited,
            step_totals=ledger.step_totals(steps.RUN_KINDS),
            exists_kinds=ledger.exists_kinds(),
        )
        if ctx.fatal is not None:
            raise ctx.fatal
        log.info(
            "run.end",
            **result.counts,
            steps_open=result.steps_open,
            calls=dict(ctx.stats.calls),
            limited=ctx.limiter.limited,
        )
        return result

    def _apply_modes(self) -> None:
        """What the flags ask of rows an earlier run settled."""
        ledger, modes = self.ctx.ledger, self.ctx.modes
        if modes.recreate_rolled_back and (n := ledger.recreate_rolled_back()):
            log.info("recreate_rolled_back", rows=n)
        if modes.restore_deleted and (n := ledger.plan_restores()):
            log.info("restore_deleted", rows=n, detail="people found deleted are restored")
        if modes.update_existing and (n := self._bring_in_line()):
            log.info("update_existing", rows=n, detail="people already there are compared")
        # (brought in line again once the ids of people found there before are known)

    def _bring_in_line(self) -> int:
        """--update-existing: every person found already there (not deleted) gets the steps
        that bring them in line with the file. Steps already done stay done."""
        rows = self.ctx.ledger.to_bring_in_line()
        for row in rows:
            self.ctx.ledger.activate_steps(row.id, steps.brought_in_line_steps(row), 0.0)
        return len(rows)

    def _warn_if_disk_low(self, left: int) -> None:
        path = self.ctx.ledger.path
        free = free_bytes(path)
        needed = DISK_BASE + DISK_PER_ROW * left
        if free is not None and free < needed:
            log.warning(
                "disk.low",
                ledger=str(path),
                free_mb=round(free / 1e6, 1),
                needed_mb=round(needed / 1e6, 1),
                detail="the ledger's disk may fill up during this run; nothing is lost if it "
                "does, but free some space first",
            )

    def _fail_unknown_names(self, resolution: Resolution) -> None:
        """A row that names something the org does not have is not created at all; a step
        of a person already created that needs it fails."""
        for found in resolution.unknown():
            uses = resolution.uses[(found.kind, found.key)]
            log.warning(
                "name.unknown",
                kind=found.kind,
                name=found.name,
                problem=describe(found),
                rows=len(uses),
                lines=", ".join(f"{source}:{line}" for _r, source, line in uses[:10]),
            )
        rows: dict[int, tuple[str, str]] = {}
        failing: dict[tuple[int, str, str | None], tuple[str, str]] = {}
        for row_id, problems in resolution.problems_by_row().items():
            message = "; ".join(describe(f) for f in problems[:3])
            if len(problems) > 3:
                message += f" and {len(problems) - 3} more"
            rows[row_id] = ("unknown_name", f"{message} (see `jobrunner check`)")
            for found in problems:
                kind = steps.step_of_name(found.kind)
                if kind is None:
                    continue
                # A queue's step is the queue's; another kind's steps of the row all need it.
                target = found.key if kind == "queue" else None
                failing[(row_id, kind, target)] = (
                    "unknown_name",
                    f"{describe(found)} (see `jobrunner check`)",
                )
        ledger, stats = self.ctx.ledger, self.ctx.stats
        stats.outcomes["failed"] += ledger.fail_rows(rows)
        stats.steps["failed"] += ledger.fail_steps(failing)

    def _name_existing(self, rows: list[Row]) -> None:
        """Find the ids of `exists` rows that have none: a stopped run never looked, or the
        search did not show them yet (its index lags). One search each, every run until
        found; on network trouble the rest wait for the next run."""
        ctx = self.ctx
        for row in rows:
            if ctx.stop.is_set():
                return
            try:
                found = ctx.read("search", ctx.client.find_user_by_email, row.email)
            except CallError as err:
                if err.retryable:
                    log.warning("exists.ids_later", error=str(err), rows=len(rows))
                    return
                ctx.ledger.set_user_id(row.id, None, lookup_failed(err))
                continue
            user_id, note = existing_user(found)
            ctx.ledger.set_user_id(row.id, user_id, note, found.state if found else None)
            if user_id:
                log.info("row.exists.id", line=row.line, email=row.email, user_id=user_id)

    # -- rollback ------------------------------------------------------------------------------

    def rollback(
        self, row_ids: list[int], progress: Any = None, clear_managers: Sequence[int] = ()
    ) -> RunResult:
        """Delete the users of these rows (and finish a rollback a stop cut short), each
        recorded the moment it is done; same lock as `run`. `clear_managers`: rows of people
        who report to someone deleted, whose manager is cleared."""
        ctx, ledger = self.ctx, self.ctx.ledger
        kinds = (steps.ROLLBACK.kind, steps.CLEAR_MANAGER.kind)
        with RunLock(ledger.path).held(ctx.owner, command="rollback"):
            ledger.quick_check()
            ledger.recover_abandoned()
            ledger.plan_rollback(row_ids)
            ledger.plan_rollback(clear_managers, steps.CLEAR_MANAGER.kind)
            ctx.stats.steps_total = sum(ledger.steps_left(kinds).values())
            log.info("rollback.start", users=ctx.stats.steps_total)
            if ctx.stats.steps_total:
                ctx.authenticate()
                Scheduler(ctx, (steps.ROLLBACK, steps.CLEAR_MANAGER)).work(progress)
            ctx.stats.calls["token"] = ctx.tokens_fetched(0)
            result = RunResult(
                ledger.counts(),
                ctx.stats,
                ledger.steps_not_done(kinds),
                limited=ctx.limiter.limited,
            )
            if ctx.fatal is not None:
                raise ctx.fatal
            return result
