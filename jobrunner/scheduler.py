"""The scheduler: workers claim due work from the ledger, perform it, record each answer.

It knows no step: it is given the kinds of work of a command (jobrunner/steps/, in the
registry's order: the steps of people who exist first, then the creates) and, for each,
claims its due work the way its `StepKind` says (a row, one step, a batch of one target),
hands it to the step's `perform` with the run's context (jobrunner/context.py), and passes
what came back (outcomes, or what a call raised) to the one shared path that applies the
rules every step shares and writes the ledger (jobrunner/record.py).

Ctrl-C (or SIGTERM) stops claiming, lets requests in flight finish for GRACE_S and gives
back what is still held; a second Ctrl-C quits at once. A wait that keeps every worker idle
is said when it starts and every WAIT_SAY_EVERY_S while it lasts.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from jobrunner.context import RunContext
from jobrunner.errors import Interrupted, JobrunnerError
from jobrunner.genesys import CallError
from jobrunner.log import get_logger
from jobrunner.record import ClaimedRow, ClaimedSteps, Recorder
from jobrunner.steps.contract import Outcome, StepKind, Stopping, StopRun, give_back

log = get_logger("jobrunner.scheduler")

GRACE_S = 5.0  # after SIGINT/SIGTERM, how long in-flight requests may take to finish
WAIT_SAY_S = 3.0  # a wait of every worker longer than this is said (log, progress line)
WAIT_SAY_EVERY_S = 10.0  # ... and said again this often while it lasts

Work = ClaimedRow | ClaimedSteps


class Scheduler:
    """Runs `steps` of one ledger with the context's workers sharing one limiter."""

    def __init__(self, ctx: RunContext, steps: Sequence[StepKind]) -> None:
        self.ctx = ctx
        self.steps = tuple(steps)
        self.recorder = Recorder(
            ctx.ledger,
            ctx.owner,
            ctx.stats,
            ctx.policy,
            clock=ctx.clock,
            rand=ctx.rand,
            succeeded=ctx.caller.succeeded,
        )
        self.after_manager = tuple(s.kind for s in self.steps if s.after_manager)
        self._abandoned = False
        self._said_wait_at: float | None = None
        self._said_reason = ""

    # -- one piece of work ---------------------------------------------------------------------

    def claim(self) -> tuple[StepKind, Work] | None:
        """The next due piece of work, in the order of `steps`."""
        ctx, now = self.ctx, self.ctx.clock()
        ledger = ctx.ledger
        for step in self.steps:
            if step.claim == "row":
                row = ledger.claim_next(ctx.owner, now)
                if row is not None:
                    return step, ClaimedRow(
                        ledger,
                        ctx.owner,
                        row,
                        ctx.stats,
                        step_delay_s=ctx.step_delay_s,
                        wake=self.after_manager,
                    )
                continue
            if step.claim == "batch":
                claims = ledger.claim_batch(step.kind, ctx.owner, now, step.batch_size)
            else:
                claims = ledger.claim_steps(
                    step.kind, ctx.owner, now, after_manager=step.after_manager
                )
            if claims:
                return step, ClaimedSteps(claims)
        return None

    def perform(self, step: StepKind, work: Work) -> None:
        """Perform one claimed piece of work and record its answer."""
        arg = work if isinstance(work, ClaimedRow) else work.claims
        outcomes: Outcome | Sequence[Outcome]
        try:
            outcomes = step.perform(self.ctx, arg)
        except Stopping:
            outcomes = give_back()
        except StopRun:
            self.recorder.record(step, work, give_back())
            raise
        except CallError as err:
            outcomes = self.recorder.outcome_of(step, work, err)
        self.recorder.record(step, work, outcomes)

    # -- workers -------------------------------------------------------------------------------

    def _worker(self) -> None:
        ctx = self.ctx
        try:
            while not ctx.stop.is_set() and not self._abandoned:
                work = self.claim()
                if work is None:
                    if not self._wait_for_work():
                        return
                    continue
                try:
                    self.perform(*work)
                except StopRun as stop:
                    ctx.set_fatal(stop.error)
        except JobrunnerError as exc:  # the ledger failed (disk full, ...): one line, stop
            if not self._abandoned:
                ctx.set_fatal(exc)
        except Exception as exc:  # a bug: stop cleanly, the ledger stays consistent
            if self._abandoned:
                return
            log.exception("worker.crash", error=repr(exc))
            ctx.set_fatal(JobrunnerError(f"internal error in the runner: {exc!r}"))

    def _wait_for_work(self) -> bool:
        """Nothing claimable now. False when nothing is left to do in this run."""
        kinds = [s.kind for s in self.steps if s.claim != "row"]
        rows = any(s.claim == "row" for s in self.steps)
        left, due = self.ctx.ledger.work_left(kinds, rows=rows)
        if left == 0:
            return False
        delay = 0.2 if due is None else min(1.0, max(0.05, due - self.ctx.clock()))
        return not self.ctx.stop.wait(delay)

    def work(self, progress: Any = None) -> None:
        """Run the workers until the work is done or the run is stopped."""
        ctx = self.ctx
        workers = [
            threading.Thread(target=self._worker, name=f"worker-{i}", daemon=True)
            for i in range(ctx.concurrency)
        ]
        interrupts = 0

        def on_signal(signum: int, _frame: Any) -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1:
                sys.stderr.write("\njobrunner: stopped at once; the next run recovers\n")
                os._exit(Interrupted.exit_code)
            log.warning(
                "stopping",
                signal=signal.Signals(signum).name,
                detail="finishing in-flight requests; press Ctrl-C again to quit at once",
            )
            ctx.stop.set()

        in_main = threading.current_thread() is threading.main_thread()
        previous = {}
        if in_main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        if progress:
            progress.start(ctx)
        try:
            for w in workers:
                w.start()
            stop_seen_at: float | None = None
            while any(w.is_alive() for w in workers):
                for w in workers:
                    w.join(0.1)
                self._say_waits()
                if ctx.stop.is_set():
                    stop_seen_at = stop_seen_at or time.monotonic()
                    if time.monotonic() - stop_seen_at > GRACE_S:
                        break  # requests still in flight: their work goes back below
        finally:
            self._abandoned = True
            released = ctx.ledger.release_all(ctx.owner)
            if released:
                log.warning(
                    "released",
                    claims=released,
                    detail="requests still in flight; the next run looks them up",
                )
            if progress:
                progress.stop()
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        if interrupts and ctx.fatal is None:
            ctx.fatal = Interrupted()

    def _say_waits(self) -> None:
        """A pause that keeps every worker waiting is said when it starts and every
        WAIT_SAY_EVERY_S while it lasts (piped output must not look hung)."""
        left, why = self.ctx.limiter.wait_remaining()
        now = time.monotonic()
        if left > WAIT_SAY_S:
            if self._said_wait_at is None or now - self._said_wait_at >= WAIT_SAY_EVERY_S:
                self._said_reason = self.ctx.caller.wait_reason(why)
                log.info("waiting", reason=self._said_reason, seconds_left=round(left, 1))
                self._said_wait_at = now
        elif left <= 0 and self._said_wait_at is not None:
            log.info("waiting.over", reason=self._said_reason)
            self._said_wait_at = None
