"""`jobrunner run`: claim -> call -> record, at the API's pace, safe under kill -9.

The rules that make a create happen exactly once:

* A row's attempt is committed (`in_doubt = 1`) before its create is sent.
* A create that was never answered (timeout, dropped connection, 5xx, a crash mid-request)
  leaves the row in doubt. Before creating it again the runner looks the email up: a user who
  matches every field we sent is ours (`created`), one who differs was there before
  (`exists`), nobody means create again. Email is unique, so even a stale search index can
  at worst produce a 409, which for a row in doubt is resolved by another look-up.
* A 409 for a row that was never in doubt means the person was there before the job.
* Only one runner works on a ledger at a time (an OS lock next to the ledger file); at start
  it returns rows a dead runner left in_progress to the queue, doubt and all.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TextIO

from jobrunner.errors import ConfigError, Interrupted, JobrunnerError, LedgerBusy, LedgerError
from jobrunner.genesys import ApiError, CallError, NewUser, TransportError
from jobrunner.ledger import Ledger, Row
from jobrunner.log import get_logger

log = get_logger("jobrunner.runner")

DEFAULT_CONCURRENCY = 8
LEASE_S = 600.0
GRACE_S = 5.0  # after SIGINT/SIGTERM, how long in-flight requests may take to finish
# Consecutive "cannot connect" failures (no HTTP answer at all) before the run stops:
# the API is unreachable, and burning every row's attempts would help nobody.
UNREACHABLE_AFTER = 25
UNREACHABLE_FOR_S = 60.0  # ... over at least this long (a blip of a few seconds is waited out)
# Doubt levels of a row (the ledger's in_doubt column).
MAYBE_SENT = 1  # a create was sent and never answered: look the email up before creating
CONFLICT_SEEN = 2  # ... and a later create got 409: only look up, never create again
_LAGGING_INDEX = "a create got 409 (email in use) but the search does not show the user yet"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter for 5xx and network errors (not 429s)."""

    max_attempts: int = 10
    base_delay_s: float = 1.0
    max_delay_s: float = 300.0

    def delay(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** max(0, attempts - 1))
        return rand() * ceiling


class Pacer:
    """One pace for every worker: honours Retry-After, then paces from what the API showed.

    The limit is per token over a sliding minute. Until the first 429 the runner goes as fast
    as its workers allow (or at `rate_per_minute` if given). On a 429, every worker pauses
    until Retry-After has passed, and the pace is set from the number of requests the API
    accepted on this token in the minute before: one every 60 s / that number, so 429s stay
    rare. Fewer than LEARN_MIN accepted means some other limit answered (the org-wide one, say):
    then it only pauses. After each whole minute without a 429 the pace loosens by a tenth,
    so one unlucky measurement does not slow the rest of a long run.
    """

    WINDOW_S = 60.0
    MARGIN = 1.02
    LEARN_MIN = 10
    LOOSEN = 0.9

    def __init__(
        self,
        rate_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = WINDOW_S,
    ) -> None:
        self.window_s = window_s  # the API's is a minute; the emulator's drills may be shorter
        self._clock = clock
        self._lock = threading.Lock()
        # --rate-per-minute is a ceiling the pace never goes above; learning only slows down.
        self.min_interval = window_s / rate_per_minute if rate_per_minute else 0.0
        self.interval = self.min_interval
        self._learned = False
        self._next_slot = 0.0
        self.paused_until = 0.0
        self._accepted: deque[float] = deque()
        self._calm_since = clock()  # last 429, or last loosening
        self.limited = 0  # 429s seen

    def new_token(self) -> None:
        """The limit is per token: a new token starts with an empty window."""
        with self._lock:
            self._accepted.clear()

    def _reserve(self) -> float:
        with self._lock:
            now = self._clock()
            if self._learned and now - self._calm_since >= self.window_s:
                self.interval = max(self.min_interval, self.interval * self.LOOSEN)
                self._calm_since = now
            at = max(now, self.paused_until, self._next_slot)
            self._next_slot = at + self.interval
            return at

    def wait(self, stop: threading.Event) -> bool:
        """Block until this caller may send. False if `stop` was set meanwhile."""
        at = self._reserve()
        while True:
            delay = at - self._clock()
            if delay > 0 and stop.wait(delay):
                return False
            with self._lock:
                paused = self.paused_until
            if self._clock() >= paused:
                return not stop.is_set()
            at = self._reserve()  # a 429 arrived while we waited: queue up again

    def answered(self, status: int, retry_after: float | None = None) -> None:
        with self._lock:
            now = self._clock()
            while self._accepted and self._accepted[0] < now - self.window_s:
                self._accepted.popleft()
            if status != 429:
                self._accepted.append(now)
                return
            self.limited += 1
            self._calm_since = now
            self.paused_until = max(self.paused_until, now + (retry_after or 1.0))
            seen = len(self._accepted)
            if seen >= self.LEARN_MIN:
                self.interval = max(self.min_interval, self.window_s / seen * self.MARGIN)
                self._learned = True

    def pause(self, seconds: float) -> None:
        """Every worker waits (the API is unreachable, say)."""
        with self._lock:
            self.paused_until = max(self.paused_until, self._clock() + seconds)

    def pause_remaining(self) -> float:
        return max(0.0, self.paused_until - self._clock())


@dataclass
class RunStats:
    """Counters for the progress display and the closing summary."""

    started_at: float = field(default_factory=time.monotonic)
    total: int = 0  # rows to settle in this run (pending + in_progress at start)
    outcomes: Counter[str] = field(default_factory=Counter)
    calls: Counter[str] = field(default_factory=Counter)  # create, search, token
    lock: threading.Lock = field(default_factory=threading.Lock)

    def outcome(self, status: str) -> None:
        with self.lock:
            self.outcomes[status] += 1

    def call(self, kind: str) -> None:
        with self.lock:
            self.calls[kind] += 1

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())


@dataclass
class RunResult:
    counts: dict[str, int]
    stats: RunStats
    recovered: int = 0
    recovered_in_doubt: int = 0
    requeued: int = 0

    @property
    def exit_code(self) -> int:
        left = self.counts["failed"] + self.counts["pending"] + self.counts["in_progress"]
        return 1 if left else 0


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


class _StopRun(Exception):
    def __init__(self, error: JobrunnerError) -> None:
        self.error = error


class Runner:
    """Creates the pending rows of one ledger. `client` is a GenesysClient (or a stand-in)."""

    def __init__(
        self,
        ledger: Ledger,
        client: Any,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        policy: RetryPolicy | None = None,
        pacer: Pacer | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.concurrency = max(1, concurrency)
        self.policy = policy or RetryPolicy()
        self.pacer = pacer or Pacer()
        self.clock = clock
        self.rand = rand
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stop = threading.Event()
        self.stats = RunStats()
        self.fatal: JobrunnerError | None = None
        self._fatal_lock = threading.Lock()
        self._abandoned = False
        self._unreachable = 0
        self._unreachable_since = 0.0
        self._unreachable_lock = threading.Lock()

    # -- the whole run -------------------------------------------------------------------

    def run(self, retry_failed: bool = False, progress: Progress | None = None) -> RunResult:
        lock = RunLock(self.ledger.path)
        lock.acquire(self.owner)
        try:
            return self._run_locked(retry_failed, progress)
        finally:
            lock.release()

    def _run_locked(self, retry_failed: bool, progress: Progress | None) -> RunResult:
        recovered, in_doubt = self.ledger.recover_abandoned()
        if recovered:
            log.warning(
                "recovered",
                rows=recovered,
                in_doubt=in_doubt,
                detail="rows a stopped run left in progress are back in the queue",
            )
        requeued = self.ledger.requeue_failed() if retry_failed else 0
        if requeued:
            log.info("retry_failed", rows=requeued)
        counts = self.ledger.counts()
        self.stats.total = counts["pending"]
        self.ledger.record_run_start(self.owner, os.getpid(), socket.gethostname(), self.clock())
        log.info("run.start", pending=counts["pending"], concurrency=self.concurrency)
        unnamed = self.ledger.exists_without_id(limit=1)
        if counts["pending"] or unnamed:
            if hasattr(self.client, "on_new_token"):
                self.client.on_new_token = self.pacer.new_token
            self.client.authenticate()  # ConfigError here: nothing sent, nothing marked
            if counts["pending"]:
                self._work(progress)
            if self.fatal is None:
                self._name_existing(self.ledger.exists_without_id())
            self.stats.calls["token"] = getattr(self.client, "tokens_fetched", 1)
        self.ledger.record_run_heartbeat(self.owner, self.clock())
        result = RunResult(self.ledger.counts(), self.stats, recovered, in_doubt, requeued)
        if self.fatal is not None:
            raise self.fatal
        log.info(
            "run.end", **result.counts, calls=dict(self.stats.calls), limited=self.pacer.limited
        )
        return result

    def _work(self, progress: Progress | None) -> None:
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
                if self.stop.is_set():
                    stop_seen_at = stop_seen_at or time.monotonic()
                    if time.monotonic() - stop_seen_at > GRACE_S:
                        break  # requests still in flight: their rows go back to pending below
        finally:
            self._abandoned = True
            released = self.ledger.release_all(self.owner)
            if released:
                log.warning(
                    "released",
                    rows=released,
                    detail="requests still in flight; the next run looks them up",
                )
            if progress:
                progress.stop()
            if in_main:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        if interrupts and self.fatal is None:
            self.fatal = Interrupted()

    def _name_existing(self, rows: list[Row]) -> None:
        """Find the ids of `exists` rows whose look-up a stopped run never finished.

        One search each; on network trouble the rest wait for the next run.
        """
        for row in rows:
            if self.stop.is_set() or not self.pacer.wait(self.stop):
                return
            try:
                found = self._lookup(row)
            except _StopRun as stop:
                self._set_fatal(stop.error)
                return
            except CallError as err:
                if err.retryable:
                    log.warning("exists.ids_later", error=str(err), rows=len(rows))
                    return
                self.ledger.set_user_id(row.id, None, _lookup_failed(err))
                continue
            except JobrunnerError as err:
                self._set_fatal(err)
                return
            user_id, note = _existing_user(found)
            self.ledger.set_user_id(row.id, user_id, note)
            if user_id:
                log.info("row.exists.id", line=row.line, email=row.email, user_id=user_id)

    def _set_fatal(self, error: JobrunnerError) -> None:
        with self._fatal_lock:
            if self.fatal is None:
                self.fatal = error
                log.error("run.stop", error=str(error))
        self.stop.set()

    # -- one worker ----------------------------------------------------------------------

    def _worker(self) -> None:
        try:
            while not self.stop.is_set() and not self._abandoned:
                row = self.ledger.claim_next(self.owner, self.clock(), LEASE_S)
                if row is None:
                    if not self._wait_for_work():
                        return
                    continue
                if not self.pacer.wait(self.stop):
                    self.ledger.release(
                        row.id, self.owner, next_attempt_at=0, in_doubt=row.in_doubt
                    )
                    return
                try:
                    self._process(row)
                except _StopRun as stop:
                    self._set_fatal(stop.error)
        except Exception as exc:  # a bug: stop cleanly, the ledger stays consistent
            if self._abandoned:
                return
            log.exception("worker.crash", error=repr(exc))
            self._set_fatal(JobrunnerError(f"internal error in the runner: {exc!r}"))

    def _wait_for_work(self) -> bool:
        """No due row now. False when the queue is empty and nothing is in flight."""
        pending, due, held = self.ledger.queue_state(self.owner)
        if pending == 0 and held == 0:
            return False
        delay = 0.2 if pending == 0 else min(1.0, max(0.05, (due or 0) - self.clock()))
        return not self.stop.wait(delay)

    def _process(self, row: Row) -> None:
        if row.division and not row.division_id:
            self._finish(
                row,
                "failed",
                error_code="division.unresolved",
                error_message=f"division {row.division!r} is given by name, which this "
                "runner cannot resolve yet: give its id",
            )
            return
        new = NewUser(
            name=row.name,
            email=row.email,
            phone=row.phone_number,
            division_id=row.division_id,
            title=row.title,
            department=row.department,
        )
        doubt = row.in_doubt
        if doubt:
            if self._settle_by_lookup(row, new, doubt):
                return
            if doubt == CONFLICT_SEEN:
                # A 409 showed a user with this email exists, and the search does not show it
                # yet (its index lags): never create again, only look again later.
                self._retry_later(row, "conflict.unresolved", _LAGGING_INDEX, doubt, count=True)
                return
            if not self.pacer.wait(self.stop):
                self.ledger.release(row.id, self.owner, next_attempt_at=0, in_doubt=doubt)
                return
        if not self.ledger.mark_attempt(row.id, self.owner):
            return  # the claim was taken back (shutdown): leave the row alone
        self.stats.call("create")
        try:
            user_id = self.client.create_user(new)
        except ApiError as err:
            self._reachable()
            self.pacer.answered(err.status, err.retry_after)
            self._on_create_error(row, new, err, doubt)
        except TransportError as err:
            self._on_transport_error(row, err, doubt)
        except ConfigError as err:  # 401, and a fresh token was refused too: not acted on
            self._give_back_and_stop(row, doubt, err)
        else:
            self._reachable()
            self.pacer.answered(200)
            self._finish(row, "created", user_id=user_id)

    def _give_back_and_stop(
        self, row: Row, doubt: int, error: JobrunnerError, undo_attempt: bool = True
    ) -> NoReturn:
        """The run cannot go on: the row goes back to pending as it was, and the run stops."""
        self.ledger.release(
            row.id, self.owner, next_attempt_at=0, in_doubt=doubt, undo_attempt=undo_attempt
        )
        raise _StopRun(error)

    def _on_create_error(self, row: Row, new: NewUser, err: ApiError, doubt: int) -> None:
        if err.status == 409:
            if doubt:
                # Our own unanswered create may be the one holding this email.
                if not self.pacer.wait(self.stop):
                    self.ledger.release(
                        row.id, self.owner, next_attempt_at=0, in_doubt=CONFLICT_SEEN
                    )
                    return
                if not self._settle_by_lookup(row, new, CONFLICT_SEEN, counted=True):
                    self._retry_later(row, err.code, str(err), CONFLICT_SEEN)
                return
            self._record_exists(row)
            return
        if err.status == 429:  # not acted on; never uses up the row's attempts
            self.ledger.release(
                row.id, self.owner, next_attempt_at=0, in_doubt=doubt, undo_attempt=True
            )
            return
        if err.status == 403 and not row.division_id:
            self._give_back_and_stop(
                row,
                doubt,
                ConfigError(
                    f"the API refused to create users ({err.code}: {err.message}); give the "
                    "OAuth client a role with the directory:user:add permission. Every row is "
                    "still pending"
                ),
            )
        if err.status == 403:
            message = f"{err} (the OAuth client may lack access to division {row.division_id})"
            self._finish(row, "failed", in_doubt=doubt, error_code=err.code, error_message=message)
            return
        if err.retryable:  # 5xx (a gateway may have passed it on), 408
            self._retry_later(row, err.code, str(err), max(doubt, int(err.maybe_acted)))
            return
        self._finish(row, "failed", in_doubt=doubt, error_code=err.code, error_message=str(err))

    def _on_transport_error(self, row: Row, err: TransportError, doubt: int) -> None:
        if err.kind == "connect":
            self._not_reached(row, doubt, err, undo_attempt=True)
            return
        self._retry_later(row, err.code, str(err), max(doubt, int(err.maybe_acted)))

    def _not_reached(self, row: Row, doubt: int, err: TransportError, undo_attempt: bool) -> None:
        """Nothing reached the API. Not the row's fault: it keeps its attempts and goes back to
        the queue, every worker pauses (longer each time), and if the API stays unreachable
        for a while the run stops with every unfinished row pending."""
        now = time.monotonic()
        with self._unreachable_lock:
            if self._unreachable == 0:
                self._unreachable_since = now
            self._unreachable += 1
            failures = self._unreachable
            since = self._unreachable_since
        if failures >= UNREACHABLE_AFTER and now - since >= UNREACHABLE_FOR_S:
            self._give_back_and_stop(
                row,
                doubt,
                ConfigError(
                    f"the API stopped answering ({err.message}) for {now - since:.0f} s; every "
                    "unfinished row is still pending: run again when it is reachable"
                ),
                undo_attempt=undo_attempt,
            )
        rounds = min(failures // self.concurrency, 10)
        self.pacer.pause(min(30.0, self.policy.max_delay_s, self.policy.base_delay_s * 2**rounds))
        self.ledger.release(
            row.id,
            self.owner,
            next_attempt_at=0,
            in_doubt=doubt,
            undo_attempt=undo_attempt,
            error_code=err.code,
            error_message=str(err),
        )

    def _reachable(self) -> None:
        with self._unreachable_lock:
            self._unreachable = 0

    def _retry_later(
        self, row: Row, code: str, message: str, doubt: int, count: bool = False
    ) -> None:
        """Back in the queue after a backoff, or failed once the attempts are used up.

        `count`: this round made no create (a look-up only), count it here.
        """
        attempts = self.ledger.attempts_of(row.id) + (1 if count else 0)
        if attempts >= self.policy.max_attempts:
            if doubt == CONFLICT_SEEN:
                code = "conflict.unresolved"
                message = (
                    "a user with this email exists but the search has not shown it; it may be "
                    "the one this job created: `jobrunner run --retry-failed` looks it up "
                    "again and never creates it twice"
                )
            self._finish(
                row,
                "failed",
                in_doubt=doubt,
                error_code=code,
                error_message=f"{message} (gave up after {attempts} attempts)",
                count_attempt=count,
            )
            return
        delay = self.policy.delay(attempts, self.rand)
        log.info(
            "row.retry",
            line=row.line,
            email=row.email,
            attempts=attempts,
            error=message,
            in_doubt=doubt,
            retry_in_s=round(delay, 2),
        )
        self.ledger.release(
            row.id,
            self.owner,
            next_attempt_at=self.clock() + delay,
            in_doubt=doubt,
            count_attempt=count,
            error_code=code,
            error_message=message,
        )

    def _lookup(self, row: Row) -> Any:
        """Search by email. Raises CallError; 429s wait (paced) and try again."""
        while True:
            self.stats.call("search")
            try:
                found = self.client.find_user_by_email(row.email)
            except ApiError as err:
                self._reachable()
                self.pacer.answered(err.status, err.retry_after)
                if err.status == 429:
                    if not self.pacer.wait(self.stop):
                        raise
                    continue
                if err.status in (401, 403):
                    raise _StopRun(
                        ConfigError(
                            f"the API refused a user search ({err}); the OAuth client needs "
                            "directory:user:view to check unanswered creates. Every "
                            "unfinished row is still pending"
                        )
                    ) from None
                raise
            self._reachable()
            self.pacer.answered(200)
            return found

    def _settle_by_lookup(self, row: Row, new: NewUser, doubt: int, counted: bool = False) -> bool:
        """For a row in doubt: True if the look-up settled it (or put it back in the queue).

        False: nobody has this email (as far as the search shows). `counted`: this round
        already counted an attempt (a create was sent), so a failed look-up adds none.
        """
        try:
            found = self._lookup(row)
        except _StopRun:
            self.ledger.release(row.id, self.owner, next_attempt_at=0, in_doubt=doubt)
            raise
        except ApiError as err:
            if err.status == 429:  # stopped while waiting out a 429
                self.ledger.release(row.id, self.owner, next_attempt_at=0, in_doubt=doubt)
                return True
            self._retry_later(row, err.code, str(err), doubt, count=not counted)
            return True
        except TransportError as err:
            if err.kind == "connect":
                self._not_reached(row, doubt, err, undo_attempt=False)
            else:
                self._retry_later(row, err.code, str(err), doubt, count=not counted)
            return True
        except ConfigError as err:
            self.ledger.release(row.id, self.owner, next_attempt_at=0, in_doubt=doubt)
            raise _StopRun(err) from None
        if found is None:
            return False
        if new.matches(found):
            self._finish(row, "created", user_id=found.id, recovered=True)
        else:
            self._finish(
                row,
                "exists",
                user_id=found.id,
                error_message="a different user with this email was already there "
                f"(state {found.state})",
            )
        return True

    def _record_exists(self, row: Row) -> None:
        """409 on a clean row: the person was there before the job. One search for the id.

        The outcome is committed first; the id is added when the search brings it, and the
        row's one log event is written then, with the id.
        """
        if not self._finish(row, "exists", quiet=True):
            return
        user_id, note = None, None
        for attempt in range(1, 5):  # a read: safe to repeat on 5xx and network errors
            if not self.pacer.wait(self.stop):
                # No note: the next run looks this row up (see _name_existing).
                self._log_outcome(row, "exists", None, "the id is looked up by the next run")
                return
            try:
                found = self._lookup(row)
            except _StopRun:
                self._log_outcome(row, "exists", None, "the id is looked up by the next run")
                raise
            except CallError as err:
                if not err.retryable:
                    note = _lookup_failed(err)
                    break
                if attempt == 4 or self.stop.wait(min(2.0, self.policy.delay(attempt, self.rand))):
                    self._log_outcome(
                        row, "exists", None, f"the id is looked up by the next run ({err})"
                    )
                    return
                continue
            except JobrunnerError as err:
                note = _lookup_failed(err)
                break
            user_id, note = _existing_user(found)
            break
        self.ledger.set_user_id(row.id, user_id, note)
        self._log_outcome(row, "exists", user_id, note)

    def _finish(
        self,
        row: Row,
        status: str,
        *,
        user_id: str | None = None,
        in_doubt: int = 0,
        error_code: str | None = None,
        error_message: str | None = None,
        recovered: bool = False,
        count_attempt: bool = False,
        quiet: bool = False,
    ) -> bool:
        """Commit the outcome; then one structlog event for it (unless `quiet`)."""
        if not self.ledger.finish(
            row.id,
            self.owner,
            status,
            user_id=user_id,
            in_doubt=in_doubt,
            error_code=error_code,
            error_message=error_message,
            count_attempt=count_attempt,
        ):
            return False
        self.stats.outcome(status)
        if not quiet:
            self._log_outcome(row, status, user_id, error_message, error_code, recovered)
        return True

    def _log_outcome(
        self,
        row: Row,
        status: str,
        user_id: str | None,
        message: str | None,
        code: str | None = None,
        recovered: bool = False,
    ) -> None:
        fields: dict[str, Any] = {"line": row.line, "email": row.email, "user_id": user_id}
        if recovered:
            fields["recovered"] = True
        if status == "failed":
            log.warning("row.failed", **fields, error_code=code, error=message)
        else:
            log.info(f"row.{status}", **fields, **({"note": message} if message else {}))


def _existing_user(found: Any) -> tuple[str | None, str | None]:
    """What a look-up for an `exists` row gives the ledger: (user id, note)."""
    if found is None:
        return None, "the search did not return the existing user"
    inactive = found.state not in (None, "active")
    return found.id, f"the existing user is {found.state}" if inactive else None


def _lookup_failed(err: JobrunnerError) -> str:
    return f"could not look up the existing user's id ({err})"


class Progress:
    """A live status line on a terminal: done of total, rate, ETA, outcomes, pauses."""

    def __init__(self, stream: TextIO, interval_s: float = 0.5) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runner: Runner | None = None

    def start(self, runner: Runner) -> None:
        self._runner = runner
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(1.0)
        self._draw(final=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._draw()

    def line(self) -> str:
        runner = self._runner
        assert runner is not None
        stats = runner.stats
        elapsed = max(0.001, time.monotonic() - stats.started_at)
        done, total = stats.done, stats.total
        rate = done / elapsed
        pause = runner.pacer.pause_remaining()
        per_row = runner.pacer.interval or (1 / rate if rate > 0 else None)
        eta = pause + (total - done) * per_row if per_row is not None else None
        parts = [f"{done:,}/{total:,} done", f"{rate * 60:,.0f}/min"]
        parts.append(f"ETA {_duration(eta)}" if eta is not None else "ETA --")
        parts.append(" ".join(f"{k} {v:,}" for k, v in sorted(stats.outcomes.items())) or "")
        if pause > 0:
            parts.append(f"rate limited: waiting {pause:.0f}s")
        if runner.stop.is_set():
            parts.append("stopping")
        return " | ".join(p for p in parts if p)

    def _draw(self, final: bool = False) -> None:
        if self._runner is None:
            return
        self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
