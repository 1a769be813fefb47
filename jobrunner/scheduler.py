"""The scheduler: workers claim due work from the ledger, pace every call, record each answer.

It knows nothing of what a step does (jobrunner/steps/): it offers them `call()` (one paced
request; 429s pause every worker, connection refusals pause and, if they last, stop the run),
`call_reading()` (a read, safe to repeat: retried on 429 and passing failures), `done()` and
`failed()`; and it applies the rules every step shares to whatever a step raises:

* 429: every worker waits (the limiter); the work goes back without using an attempt;
* no connection: every worker pauses; no attempt used; an API unreachable for a minute stops
  the run with everything still pending;
* 5xx, timeouts, dropped connections: back off (exponential, full jitter), then fail;
* 404 while the user is fresh from its create: back off (other services learn new ids a
  few seconds late), for up to FRESH_WINDOW_S;
* 403: the run stops (exit 3) naming the permission, the work left pending, unless the same
  call succeeded for another row in this run (a grant refused in one division only): then
  only this work fails (every other row's step is tried before a refusal stops the run);
* anything else: failed, with the API's code and message.

Work is claimed in this order: steps of people who exist (roles, skills, profile), queue
batches, then creates. The create has its own rules (jobrunner/steps/create.py).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from jobrunner.csv_input import key_of
from jobrunner.errors import ConfigError, Interrupted, JobrunnerError
from jobrunner.genesys import ApiError, TransportError
from jobrunner.ledger import Ledger, Row, StepClaim
from jobrunner.log import get_logger
from jobrunner.resolve import Resolution, Resolver, describe
from jobrunner.steps import PERMISSIONS, RetryLater, StepFailed, Stopping, StopRun
from jobrunner.steps import create as create_step
from jobrunner.steps import division as division_step
from jobrunner.steps import profile as profile_step
from jobrunner.steps import queues as queue_step
from jobrunner.steps import roles as roles_step
from jobrunner.steps import skills as skills_step

log = get_logger("jobrunner.scheduler")

LEASE_S = 600.0
GRACE_S = 5.0  # after SIGINT/SIGTERM, how long in-flight requests may take to finish
STEP_DELAY_S = 3.0  # a new user's steps wait this long (its id reaches other services late)
FRESH_WINDOW_S = 60.0  # a 404 this soon after a user's create is retried, not failed
# Consecutive "cannot connect" failures (no HTTP answer at all) before the run stops:
# the API is unreachable, and burning every row's attempts would help nobody.
UNREACHABLE_AFTER = 25
UNREACHABLE_FOR_S = 60.0  # ... over at least this long (a blip of a few seconds is waited out)
WAIT_SAY_S = 3.0  # a wait of every worker longer than this is said (log, progress line)
WAIT_SAY_EVERY_S = 10.0  # ... and said again this often while it lasts
READ_TRIES = 4  # a read (look-up) is tried this often on passing failures
# A step refused (403) before the same call worked for anyone goes back this much later, so
# the other rows' steps are tried first.
REFUSED_RETRY_S = 2.0

# Step modules, in the order their due work is claimed.
STEP_MODULES: tuple[ModuleType, ...] = (
    division_step,
    roles_step,
    skills_step,
    profile_step,
    queue_step,
)
RATE_LIMITED = "rate limited: every worker waits out the API's Retry-After"
UNREACHABLE = "the API is unreachable: every worker waits before trying again"
WINDOW_FULL = "at the rate limit: the API's window is full, every worker waits for room"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for 5xx and network errors (not 429s)."""

    max_attempts: int = 10
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0

    def delay(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempts - 1))
        return rand() * ceiling


@dataclass
class RunStats:
    """Counters for the progress display and the closing summary."""

    started_at: float = field(default_factory=time.monotonic)
    total: int = 0  # rows to settle in this run (pending at start)
    steps_total: int = 0  # steps to do in this run (at start)
    outcomes: Counter[str] = field(default_factory=Counter)  # rows: created, exists, failed
    steps: Counter[str] = field(default_factory=Counter)  # steps: done, failed
    calls: Counter[str] = field(default_factory=Counter)  # create, search, roles, ...
    lock: threading.Lock = field(default_factory=threading.Lock)

    def outcome(self, status: str) -> None:
        with self.lock:
            self.outcomes[status] += 1

    def step(self, status: str, n: int = 1) -> None:
        with self.lock:
            self.steps[status] += n

    def call(self, kind: str) -> None:
        with self.lock:
            self.calls[kind] += 1

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())


class Scheduler:
    """Runs the work of one ledger with `concurrency` workers sharing one limiter."""

    def __init__(
        self,
        ledger: Ledger,
        client: Any,
        limiter: Any,
        *,
        owner: str,
        concurrency: int,
        policy: RetryPolicy,
        resolution: Resolution,
        stats: RunStats,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        modules: tuple[ModuleType, ...] | None = None,
        creates: bool = True,
        update_existing: bool = False,
        restore_deleted: bool = False,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.limiter = limiter
        self.owner = owner
        self.concurrency = max(1, concurrency)
        self.policy = policy
        self.resolution = resolution
        self.stats = stats
        self.clock = clock
        self.rand = rand
        self.lease_s = LEASE_S
        self.step_delay_s = STEP_DELAY_S
        self.create = create_step
        self.modules = STEP_MODULES if modules is None else modules
        self.creates = creates
        self.update_existing = update_existing
        self.restore_deleted = restore_deleted
        self.stop = threading.Event()
        self.fatal: JobrunnerError | None = None
        self.pause_reason = RATE_LIMITED
        self._fatal_lock = threading.Lock()
        self._abandoned = False
        self._succeeded: set[str] = set()  # call kinds that succeeded in this run
        self._refused_steps: set[tuple[int, str, str]] = set()  # 403s before any success
        self._unreachable = 0
        self._unreachable_since = 0.0
        self._unreachable_lock = threading.Lock()
        self._home: str | None = resolution.home_division_id
        self._members: dict[str, set[str]] = {}  # queue id -> member ids (people already there)
        self._members_lock = threading.Lock()
        self._resolve_lock = threading.Lock()
        self._said_wait_at: float | None = None
        self._said_reason = ""

    # -- calls -------------------------------------------------------------------------------

    def call(
        self,
        kind: str,
        fn: Callable[..., Any],
        *args: Any,
        before_send: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One request, when the limiter allows it. Raises what the call raised (ApiError,
        TransportError), Stopping when the run stopped first (or `before_send`, run once the
        limiter lets the request go, said no), StopRun for a refused token or an API that
        stays unreachable."""
        if self.stop.is_set() or not self.limiter.wait(self.stop):
            raise Stopping
        if before_send is not None and not before_send():
            self.limiter.unanswered(reached=False)
            raise Stopping
        self.stats.call(kind)
        try:
            result = fn(*args, **kwargs)
        except ApiError as err:
            self._reachable()
            self.limiter.answered(err.status, err.retry_after)
            if err.status == 429:
                self.pause_reason = RATE_LIMITED
            raise
        except TransportError as err:
            self.limiter.unanswered(reached=err.kind != "connect")
            if err.kind == "connect":
                self._not_reached(err)
            raise
        except ConfigError as err:  # a token refused: nothing was sent
            raise StopRun(err) from None
        self._reachable()
        self.limiter.answered(200)
        self._succeeded.add(kind)
        return result

    def call_reading(self, kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A read (search, GET): safe to repeat, so 429s and passing failures are tried
        again here, a few times."""
        tries = 0
        while True:
            try:
                return self.call(kind, fn, *args, **kwargs)
            except ApiError as err:
                if err.status == 429:
                    continue  # the limiter makes every worker wait first
                tries += 1
                if not err.retryable or tries >= READ_TRIES:
                    raise
            except TransportError as err:
                tries += 1
                if err.kind != "connect" and tries >= READ_TRIES:
                    raise
            if self.stop.wait(min(2.0, self.policy.delay(tries, self.rand))):
                raise Stopping

    def _not_reached(self, err: TransportError) -> None:
        """Nothing reached the API: every worker pauses (longer each time); if it stays
        unreachable for a while, the run stops with every unfinished row pending."""
        now = time.monotonic()
        with self._unreachable_lock:
            if self._unreachable == 0:
                self._unreachable_since = now
            self._unreachable += 1
            failures, since = self._unreachable, self._unreachable_since
        if failures >= UNREACHABLE_AFTER and now - since >= UNREACHABLE_FOR_S:
            raise StopRun(
                ConfigError(
                    f"the API stopped answering ({err.message}) for {now - since:.0f} s; every "
                    "unfinished row is still pending: run again when it is reachable"
                )
            )
        rounds = min(failures // self.concurrency, 10)
        self.pause_reason = UNREACHABLE
        self.limiter.pause(min(30.0, self.policy.max_delay_s, self.policy.base_delay_s * 2**rounds))

    def _reachable(self) -> None:
        with self._unreachable_lock:
            self._unreachable = 0

    def fresh(self, row: Row) -> bool:
        """Is the row's user new enough that other services may not know its id yet?"""
        return row.settled_at is not None and self.clock() - row.settled_at < FRESH_WINDOW_S

    def queue_members(self, queue_id: str) -> set[str]:
        """A queue's members, read once per run (every page) and kept up to date with what
        this run adds: people already in it need no write."""
        with self._members_lock:
            known = self._members.get(queue_id)
        if known is None:
            known, page = set(), 1
            while True:
                ids, more = self.call_reading(
                    "queue", self.client.queue_members_page, queue_id, page
                )
                known |= ids
                if not more:
                    break
                page += 1
            with self._members_lock:
                known = self._members.setdefault(queue_id, known)
        return known

    def added_to_queue(self, queue_id: str, user_ids: list[str]) -> None:
        with self._members_lock:
            if queue_id in self._members:
                self._members[queue_id].update(user_ids)

    def names_problems(self, row: Row) -> list[str]:
        """What this row names that the org does not have. Names this run has not looked up
        yet (a row ingested while it runs) are looked up now."""
        uses = self.ledger.names_in_use([row.id])
        with self._resolve_lock:
            if any(
                (kind, key_of(kind, name)) not in self.resolution.found for kind, name, *_ in uses
            ):
                Resolver(self.ledger, self.client, self.call_reading).resolve_into(
                    self.resolution, uses
                )
        problems = []
        for kind, name, *_rest in uses:
            found = self.resolution.found.get((kind, key_of(kind, name)))
            if found is not None and found.id is None:
                problems.append(describe(found))
        return sorted(set(problems))

    def home_division_id(self) -> str:
        if self._home is None:
            self._home = self.call_reading("lookup", self.client.home_division).id
        return self._home

    # -- recording steps ---------------------------------------------------------------------

    def done(self, claims: Sequence[StepClaim], detail: str | None = None) -> None:
        n = self.ledger.finish_steps(claims, self.owner, "done", detail=detail)
        self.said(claims, "done", n, detail=detail)

    def failed(self, claims: Sequence[StepClaim], code: str, message: str) -> None:
        n = self.ledger.finish_steps(
            claims, self.owner, "failed", error_code=code, error_message=message
        )
        self.said(claims, "failed", n, error_code=code, error=message)

    def said(self, claims: Sequence[StepClaim], status: str, n: int, **fields: Any) -> None:
        """Count `n` recorded steps and log one event per step."""
        self.stats.step(status, n)
        emit = log.warning if status == "failed" else log.info
        for c in claims:
            emit(
                f"step.{status}",
                step=c.kind,
                target=c.target or None,
                line=c.row.line,
                email=c.row.email,
                **fields,
            )

    def _retry_steps(
        self, claims: Sequence[StepClaim], code: str, message: str, fresh: bool = False
    ) -> None:
        """Back in the queue after a backoff (an attempt counts), or failed once the attempts
        are used up. `fresh`: a new user's 404, retried while the user is fresh."""
        attempts = max(c.attempts for c in claims) + 1
        if attempts >= self.policy.max_attempts and not fresh:
            self.failed(claims, code, f"{message} (gave up after {attempts} attempts)")
            return
        delay = self.policy.delay(attempts, self.rand)
        log.info(
            "step.retry",
            step=claims[0].kind,
            members=len(claims),
            error=message,
            attempts=attempts,
            retry_in_s=round(delay, 2),
        )
        self.ledger.release_steps(
            claims,
            self.owner,
            next_attempt_at=self.clock() + delay,
            count_attempt=True,
            error_code=code,
            error_message=message,
        )

    def _give_back(self, claims: Sequence[StepClaim]) -> None:
        self.ledger.release_steps(claims, self.owner, next_attempt_at=0)

    def run_step(self, module: ModuleType, claims: list[StepClaim]) -> None:
        """Perform one claimed piece of step work and record its answer."""
        kind = module.KIND
        try:
            module.perform(self, claims)
        except Stopping:
            self._give_back(claims)
        except StopRun:
            self._give_back(claims)
            raise
        except StepFailed as exc:
            self.failed(claims, exc.code, exc.message)
        except RetryLater as exc:
            self._retry_steps(claims, exc.code, exc.message, fresh=True)
        except ApiError as err:
            if err.status == 429:
                self._give_back(claims)
            elif err.status == 403:
                self._refused(kind, claims, err)
            elif err.status == 404 and any(self.fresh(c.row) for c in claims):
                self._retry_steps(claims, err.code, str(err), fresh=True)
            elif err.retryable:
                self._retry_steps(claims, err.code, str(err))
            else:
                self.failed(claims, err.code, str(err))
        except TransportError as err:
            if err.kind == "connect":
                self._give_back(claims)
            else:
                self._retry_steps(claims, err.code, str(err))

    def _refused(self, kind: str, claims: list[StepClaim], err: ApiError) -> None:
        """A 403: missing for everyone (stop, exit 3), or for some rows only (fail them).

        The same call succeeding for another row (in this run, or an earlier one of this
        ledger) shows it is this row's (a grant refused in one division only). Until then a
        refused step goes back, later than the others, and the run stops only once every
        step of this kind still to do has been refused: the permission is missing for all
        of them, and they stay pending.
        """
        if kind in self._succeeded or self.ledger.any_step_done(kind):
            self.failed(claims, err.code, f"{err} (refused for this person only)")
            return
        with self._fatal_lock:
            self._refused_steps.update((c.row.id, c.kind, c.target) for c in claims)
            refused = set(self._refused_steps)
        others = [key for key in self.ledger.open_steps_of(kind) if key not in refused]
        if others:
            self.ledger.release_steps(
                claims, self.owner, next_attempt_at=self.clock() + REFUSED_RETRY_S
            )
            return
        self._give_back(claims)
        raise StopRun(
            ConfigError(
                f"the API refused the {kind} step ({err.code}: {err.message}); give the OAuth "
                f"client a role with the {PERMISSIONS.get(kind, 'needed')} permission. The "
                "steps are still pending: run again after that"
            )
        )

    # -- workers -------------------------------------------------------------------------------

    def set_fatal(self, error: JobrunnerError) -> None:
        with self._fatal_lock:
            if self.fatal is None:
                self.fatal = error
                log.error("run.stop", error=str(error))
        self.stop.set()

    def _claim(self) -> tuple[ModuleType, Any] | None:
        now = self.clock()
        for module in self.modules:
            claims = module.claim(self)
            if claims:
                return module, claims
        if not self.creates:
            return None
        row = self.ledger.claim_next(self.owner, now, self.lease_s)
        return (self.create, row) if row is not None else None

    def _worker(self) -> None:
        try:
            while not self.stop.is_set() and not self._abandoned:
                work = self._claim()
                if work is None:
                    if not self._wait_for_work():
                        return
                    continue
                module, claimed = work
                try:
                    if module is self.create:
                        self.create.perform(self, claimed)
                    else:
                        self.run_step(module, claimed)
                except StopRun as stop:
                    self.set_fatal(stop.error)
        except JobrunnerError as exc:  # the ledger failed (disk full, ...): one line, stop
            if not self._abandoned:
                self.set_fatal(exc)
        except Exception as exc:  # a bug: stop cleanly, the ledger stays consistent
            if self._abandoned:
                return
            log.exception("worker.crash", error=repr(exc))
            self.set_fatal(JobrunnerError(f"internal error in the runner: {exc!r}"))

    def _wait_for_work(self) -> bool:
        """Nothing claimable now. False when nothing is left to do in this run."""
        left, due = self.ledger.work_left([m.KIND for m in self.modules], rows=self.creates)
        if left == 0:
            return False
        delay = 0.2 if due is None else min(1.0, max(0.05, due - self.clock()))
        return not self.stop.wait(delay)

    def work(self, progress: Any = None) -> None:
        """Run the workers until the work is done or the run is stopped."""
        workers = [
            threading.Thread(target=self._worker, name=f"worker-{i}", daemon=True)
            for i in range(self.concurrency)
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
            self.stop.set()

        in_main = threading.current_thread() is threading.main_thread()
        previous = {}
        if in_main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        if progress:
            progress.start(self)
        try:
            for w in workers:
                w.start()
            stop_seen_at: float | None = None
            while any(w.is_alive() for w in workers):
                for w in workers:
                    w.join(0.1)
                self._say_waits()
                if self.stop.is_set():
                    stop_seen_at = stop_seen_at or time.monotonic()
                    if time.monotonic() - stop_seen_at > GRACE_S:
                        break  # requests still in flight: their work goes back below
        finally:
            self._abandoned = True
            released = self.ledger.release_all(self.owner)
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
        if interrupts and self.fatal is None:
            self.fatal = Interrupted()

    def _say_waits(self) -> None:
        """A pause that keeps every worker waiting is said when it starts and every
        WAIT_SAY_EVERY_S while it lasts (piped output must not look hung)."""
        left, why = self.limiter.wait_remaining()
        now = time.monotonic()
        if left > WAIT_SAY_S:
            if self._said_wait_at is None or now - self._said_wait_at >= WAIT_SAY_EVERY_S:
                self._said_reason = self.wait_reason(why)
                log.info("waiting", reason=self._said_reason, seconds_left=round(left, 1))
                self._said_wait_at = now
        elif left <= 0 and self._said_wait_at is not None:
            log.info("waiting.over", reason=self._said_reason)
            self._said_wait_at = None

    def wait_reason(self, why: str) -> str:
        """What a wait the limiter reports (its `why`) is for, in words."""
        return WINDOW_FULL if why == "window" else self.pause_reason
