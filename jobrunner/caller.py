"""One paced caller for every request a command sends: `run`, `check` and `rollback` share it.

`call()` sends one request when the rate limiter lets it go; a 429 makes every worker wait
(the limiter), a connection refusal makes every worker pause and, if the API stays
unreachable for a minute, stops the run; a refused token stops it at once. `read()` is a
call that is safe to repeat (a search, a GET): 429s and passing failures are tried again
there, a few times, before its caller sees them.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobrunner.errors import ConfigError
from jobrunner.genesys import ApiError, TransportError
from jobrunner.steps.contract import Stopping, StopRun

# Consecutive "cannot connect" failures (no HTTP answer at all) before the run stops: the API
# is unreachable, and burning every row's attempts would help nobody.
UNREACHABLE_AFTER = 25
UNREACHABLE_FOR_S = 60.0  # ... over at least this long (a blip of a few seconds is waited out)
READ_TRIES = 4  # a read (look-up) is tried this often on passing failures
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


class PacedCaller:
    """Every request of one command, through one limiter. `stop` is set when the command
    stops (a signal, a fatal error): no request is sent after that."""

    def __init__(
        self,
        limiter: Any,
        stats: RunStats,
        stop: threading.Event,
        *,
        policy: RetryPolicy,
        concurrency: int = 1,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.limiter = limiter
        self.stats = stats
        self.stop = stop
        self.policy = policy
        self.concurrency = max(1, concurrency)
        self.rand = rand
        self.pause_reason = RATE_LIMITED
        self.succeeded: set[str] = set()  # kinds of call that succeeded in this command
        self._unreachable = 0
        self._unreachable_since = 0.0
        self._lock = threading.Lock()

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
        self.succeeded.add(kind)
        return result

    def read(self, kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
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

    def wait_reason(self, why: str) -> str:
        """What a wait the limiter reports (its `why`) is for, in words."""
        return WINDOW_FULL if why == "window" else self.pause_reason

    def _not_reached(self, err: TransportError) -> None:
        """Nothing reached the API: every worker pauses (longer each time); if it stays
        unreachable for a while, the run stops with every unfinished row pending."""
        now = time.monotonic()
        with self._lock:
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
        with self._lock:
            self._unreachable = 0
