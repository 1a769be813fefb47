"""`jobrunner run`: everything a run does around the scheduler, safe under kill -9.

In order: take the run lock (one runner per ledger), check the ledger file (SQLite's quick
check), return work a dead runner left in progress to the queue, get a token, resolve every
name the remaining work uses (rows that name something unknown fail before their create),
order the creates (managers first), run the scheduler (jobrunner/scheduler.py) until the
work is done or the run stops, and find the ids of people a stopped run left without one.
The rules of each call live in the step modules (jobrunner/steps/).
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobrunner.errors import JobrunnerError, LedgerBusy, LedgerError
from jobrunner.genesys import CallError
from jobrunner.ledger import Ledger, Row, free_bytes
from jobrunner.limiter import WindowLimiter
from jobrunner.log import get_logger
from jobrunner.resolve import Resolution, Resolver, describe
from jobrunner.scheduler import RetryPolicy, RunStats, Scheduler
from jobrunner.steps import Stopping, StopRun
from jobrunner.steps import rollback as rollback_step
from jobrunner.steps.create import existing_user, lookup_failed

__all__ = ["RetryPolicy", "RunLock", "RunResult", "RunStats", "Runner"]

log = get_logger("jobrunner.runner")

DEFAULT_CONCURRENCY = 8
# What a run may write per row still to do (ledger pages, WAL growth): warned about when the
# ledger's disk has less free (the WAL grew to ~4 MB on a 2,000-row run).
DISK_PER_ROW = 8_000
DISK_BASE = 32_000_000
# A name's problem -> the step of a row already created that cannot be done without it.
_STEP_OF = {
    "role": "roles",
    "division": "roles",
    "skill": "skills",
    "queue": "queue",
    "manager": "profile",
    "location": "profile",
}


class RunLock:
    """An exclusive OS lock next to the ledger; it dies with its process, even under kill -9.

    The holder writes who it is into the lock file right after taking the lock; one who
    finds it taken reads that, and waits a moment for it if the holder has only just got
    the lock, so the refusal always names the holder.
    """

    NAME_WAIT_S = 2.0

    def __init__(self, db: Path) -> None:
        real = db.resolve()  # one lock per ledger file, whatever path or link names it
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None

    def acquire(self, owner: str, command: str = "run") -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LedgerError(
                f"cannot create the run lock {self.path}: {exc.strerror} (its folder must be "
                "writable)"
            ) from None
        deadline = time.monotonic() + self.NAME_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if holder is None and time.monotonic() < deadline:
                    time.sleep(0.02)  # the holder has the lock and is writing its name
                    continue
                os.close(fd)
                raise LedgerBusy(
                    f"another jobrunner command is working on this ledger "
                    f"({holder or 'its process did not say who it is'}); wait for it to finish "
                    "or stop it, then run again"
                ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "owner": owner,
            "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        data = json.dumps(info).encode()
        try:
            os.pwrite(fd, data, 0)  # write, then cut: a reader never sees it empty
            os.ftruncate(fd, len(data))
        except OSError as exc:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise LedgerError(f"cannot write the run lock {self.path}: {exc.strerror}") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass  # the lock goes with the descriptor either way
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str | None:
    """Who holds the lock, from what it wrote; None while that is not (yet) there."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"null")
        pid = int(info["pid"])
        if info["host"] == socket.gethostname():
            os.kill(pid, 0)  # a stale name from a holder that died: not this one
        return (
            f"`jobrunner {info.get('command', 'run')}`, pid {pid} on {info['host']}, "
            f"started {info['started']}"
        )
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError, OSError):
        return None


@dataclass
class RunResult:
    counts: dict[str, int]
    stats: RunStats
    steps_open: int = 0  # steps pending or failed at the end
    recovered: int = 0
    recovered_in_doubt: int = 0
    requeued: int = 0

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
        self.ledger = ledger
        self.update_existing = update_existing
        self.restore_deleted = restore_deleted
        self.recreate_rolled_back = recreate_rolled_back
        self.client = client
        self.concurrency = max(1, concurrency)
        self.policy = policy or RetryPolicy()
        self.limiter = limiter or WindowLimiter()
        self.clock = clock
        self.rand = rand
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = RunStats()
        self.scheduler: Scheduler | None = None

    def run(self, retry_failed: bool = False, progress: Any = None) -> RunResult:
        lock = RunLock(self.ledger.path)
        lock.acquire(self.owner)
        try:
            return self._run_locked(retry_failed, progress)
        finally:
            lock.release()

    def _run_locked(self, retry_failed: bool, progress: Any) -> RunResult:
        ledger = self.ledger
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
        self._plan_modes()
        requeued = 0
        if retry_failed:
            requeued, steps_requeued = ledger.requeue_failed()
            if requeued or steps_requeued:
                log.info("retry_failed", rows=requeued, steps=steps_requeued)
        counts = ledger.counts()
        left, _due = ledger.work_left()
        self.stats.total = counts["pending"]
        self.stats.steps_total = sum(ledger.steps_left().values())
        self._warn_if_disk_low(left)
        ledger.record_run_start(self.owner, os.getpid(), socket.gethostname(), self.clock())
        log.info(
            "run.start",
            pending=counts["pending"],
            steps=self.stats.steps_total,
            concurrency=self.concurrency,
        )
        scheduler = self._scheduler(
            update_existing=self.update_existing, restore_deleted=self.restore_deleted
        )
        unnamed = ledger.exists_without_id(limit=1)
        if left or unnamed:
            if hasattr(self.client, "on_new_token"):
                self.client.on_new_token = self.limiter.new_token
            self.client.authenticate()  # ConfigError here: nothing sent, nothing marked
            try:
                # People found there before whose id a stopped run (or a lagging search)
                # never brought: first, so their reports' profiles and updates can use it.
                self._name_existing(scheduler, ledger.exists_without_id())
                if self.update_existing and ledger.plan_updates():
                    left, _due = ledger.work_left()
                if left and scheduler.fatal is None:
                    scheduler.resolution = Resolver(
                        ledger, self.client, scheduler.call_reading
                    ).resolve()
                    self._fail_unknown_names(scheduler.resolution)
                    ledger.set_ranks()
                    scheduler.work(progress)
            except StopRun as stop:
                scheduler.set_fatal(stop.error)
            except CallError as err:  # a look-up failed for good before any work began
                scheduler.set_fatal(
                    JobrunnerError(f"could not look the file's names up in the org: {err}")
                )
            except Stopping:
                pass
            self.stats.calls["token"] = getattr(self.client, "tokens_fetched", 1)
        ledger.record_run_heartbeat(self.owner, self.clock())
        result = RunResult(
            ledger.counts(),
            self.stats,
            _open_steps(ledger),
            recovered,
            in_doubt,
            requeued,
        )
        if scheduler.fatal is not None:
            raise scheduler.fatal
        log.info(
            "run.end",
            **result.counts,
            steps_open=result.steps_open,
            calls=dict(self.stats.calls),
            limited=self.limiter.limited,
        )
        return result

    def rollback(self, row_ids: list[int], progress: Any = None) -> RunResult:
        """Delete the users of these rows (and finish a rollback a stop cut short), each
        recorded the moment it is done; same lock as `run`."""
        lock = RunLock(self.ledger.path)
        lock.acquire(self.owner, command="rollback")
        try:
            ledger = self.ledger
            ledger.quick_check()
            ledger.recover_abandoned()
            ledger.plan_rollback(row_ids)
            self.stats.steps_total = ledger.pending_rollbacks()
            scheduler = self._scheduler(modules=(rollback_step,), creates=False)
            log.info("rollback.start", users=self.stats.steps_total)
            if self.stats.steps_total:
                if hasattr(self.client, "on_new_token"):
                    self.client.on_new_token = self.limiter.new_token
                self.client.authenticate()
                scheduler.work(progress)
            self.stats.calls["token"] = getattr(self.client, "tokens_fetched", 0)
            left = ledger.pending_rollbacks()
            (failed,) = ledger.execute(
                "SELECT count(*) FROM steps WHERE kind = 'rollback' AND status = 'failed'"
            ).fetchone()
            if scheduler.fatal is not None:
                raise scheduler.fatal
            return RunResult(ledger.counts(), self.stats, left + failed)
        finally:
            lock.release()

    def _scheduler(self, **mode: Any) -> Scheduler:
        """The scheduler of this run, sharing its client, limiter, policy and counters."""
        self.scheduler = Scheduler(
            self.ledger,
            self.client,
            self.limiter,
            owner=self.owner,
            concurrency=self.concurrency,
            policy=self.policy,
            resolution=Resolution(),
            stats=self.stats,
            clock=self.clock,
            rand=self.rand,
            **mode,
        )
        return self.scheduler

    def _plan_modes(self) -> None:
        """What the flags ask of rows an earlier run settled."""
        ledger = self.ledger
        if self.recreate_rolled_back and (n := ledger.recreate_rolled_back()):
            log.info("recreate_rolled_back", rows=n)
        if self.restore_deleted and (n := ledger.plan_restores()):
            log.info("restore_deleted", rows=n, detail="people found deleted are restored")
        if self.update_existing and (n := ledger.plan_updates()):
            log.info("update_existing", rows=n, detail="people already there are compared")
        # (plan_updates runs again once the ids of people found there before are known)

    def _warn_if_disk_low(self, left: int) -> None:
        free = free_bytes(self.ledger.path)
        needed = DISK_BASE + DISK_PER_ROW * left
        if free is not None and free < needed:
            log.warning(
                "disk.low",
                ledger=str(self.ledger.path),
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
        steps: dict[tuple[int, str, str], tuple[str, str]] = {}
        for row_id, problems in resolution.problems_by_row().items():
            message = "; ".join(describe(f) for f in problems[:3])
            if len(problems) > 3:
                message += f" and {len(problems) - 3} more"
            rows[row_id] = ("unknown_name", f"{message} (see `jobrunner check`)")
            for found in problems:
                target = found.key if found.kind == "queue" else ""
                steps[(row_id, _STEP_OF[found.kind], target)] = (
                    "unknown_name",
                    f"{describe(found)} (see `jobrunner check`)",
                )
        failed = self.ledger.fail_rows(rows)
        self.stats.outcomes["failed"] += failed
        self.stats.steps["failed"] += self.ledger.fail_steps(steps)

    def _name_existing(self, scheduler: Scheduler, rows: list[Row]) -> None:
        """Find the ids of `exists` rows that have none: a stopped run never looked, or the
        search did not show them yet (its index lags). One search each, every run until
        found; on network trouble the rest wait for the next run."""
        for row in rows:
            if scheduler.stop.is_set():
                return
            try:
                found = scheduler.call_reading("search", self.client.find_user_by_email, row.email)
            except CallError as err:
                if err.retryable:
                    log.warning("exists.ids_later", error=str(err), rows=len(rows))
                    return
                self.ledger.set_user_id(row.id, None, lookup_failed(err))
                continue
            user_id, note = existing_user(found)
            self.ledger.set_user_id(row.id, user_id, note, found.state if found else None)
            if user_id:
                log.info("row.exists.id", line=row.line, email=row.email, user_id=user_id)


def _open_steps(ledger: Ledger) -> int:
    """Steps of a run that are not done: pending, in progress or failed."""
    (n,) = ledger.execute(
        "SELECT count(*) FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
        "WHERE s.kind != 'rollback' AND (s.status IN ('pending', 'in_progress', 'failed') "
        "OR (s.status = 'waiting' AND r.status IN ('pending', 'in_progress')))"
    ).fetchone()
    return int(n)
