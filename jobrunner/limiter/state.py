"""What a WindowLimiter knows, and the questions each of its parts asks of it.

`_LimiterState` holds what is learned (B, W, the kind of window, a fixed window's
boundaries), the requests admitted (in send order, and the answered ones by the time their
slot frees), the holds, the open episode of 429s (`_Episode`) and where the tests and probes
stand. Its methods answer what admission and learning both ask: when a request can have
arrived, how many of ours a span of time holds, which fixed window is full, and what an
observation of a boundary does to the grid.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from jobrunner.limiter.arrivals import RoundTrips, Ticket, _counted_at, _sent
from jobrunner.limiter.constants import _LOG_KEEP_S, FORGET_AFTER_S, MAX_WINDOW_S, PROBE_FIRST
from jobrunner.limiter.grid import _Grid

Clock = Callable[[], float]
Sleep = Callable[[threading.Event, float], bool]  # True: stop was set


@dataclass
class _Episode:
    """The 429s answering requests that were sent before the first of them came back."""

    kind: str  # first | relearn
    opened_at: float
    s_ref: float  # earliest send of a rejected request
    lo: float | None  # the moment the window frees, in send time: lo < T <= hi
    hi: float | None
    prior: tuple[int | None, float | None, float, str]
    external: bool = False
    unsure: int = 0  # requests the budget may be short of
    hold: float | None = None  # every worker waits until then (in send time): the earliest
    # moment all of the episode's Retry-After values allow, and the margin

    def add(self, sent: float, lo: float | None, hi: float | None) -> None:
        self.s_ref = min(self.s_ref, sent)
        if lo is None or hi is None or self.lo is None or self.hi is None:
            return
        if max(self.lo, lo) <= min(self.hi, hi):  # narrow; disjoint bounds: keep the first
            self.lo, self.hi = max(self.lo, lo), min(self.hi, hi)


class _LimiterState:
    """The state a WindowLimiter's parts share, and its constructor (see WindowLimiter)."""

    def __init__(
        self,
        rate_per_minute: float | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep | None = None,
        forget_after_s: float = FORGET_AFTER_S,
        probe: bool = True,
    ) -> None:
        self._clock = clock
        self._sleep: Sleep = sleep or (lambda stop, seconds: stop.wait(seconds))
        self._min_gap = 60.0 / rate_per_minute if rate_per_minute else 0.0
        self._ceiling = rate_per_minute / 60.0 if rate_per_minute else None
        self.forget_after_s = forget_after_s
        self._probe = probe
        self._lock = threading.Lock()
        # What is learned.
        self.budget: int | None = None
        self.window_s: float | None = None  # the upper end of W's interval: what the mirror uses
        self.window_lo = 0.0
        self.mode = "unknown"  # or "fixed" (Retry-After pointed at boundaries)
        self.limited = 0  # 429s seen
        self._window_assumed = False  # W is the documented default, not measured
        self._grid: _Grid | None = None  # mode "fixed": where the boundaries are
        # The requests.
        self._seq = 0
        self._epoch = 0
        self._log: list[Ticket] = []  # every admitted request of this epoch, in send order
        self._keys: list[Ticket] = []  # answered and counted, by counted_at
        self._flight: dict[int, Ticket] = {}  # in flight, this epoch
        self._old: dict[int, Ticket] = {}  # in flight, sent with an older token
        self._by_thread: dict[int, Ticket] = {}
        self._waiters = 0  # threads inside wait()
        self._last_admit = -math.inf
        self._trips = RoundTrips()  # the round trips: when a request can have arrived
        # Holds.
        self._paused_until = -math.inf  # pause(): the API is unreachable
        self._held_until = -math.inf  # a 429's Retry-After
        # Learning.
        self._episode: _Episode | None = None
        self._prev: tuple[float, float, float] | None = None  # last episode's T lo, T hi, s_ref
        self._test: str | None = None  # "validate": armed
        self._cohort_start = 0.0
        self._cohort_first: Ticket | None = None
        self._after_first = False  # the last episode was the first learning
        self._solo: Ticket | None = None  # a test in flight: nobody else goes
        self._round: list[Ticket] = []  # the probes of the last round
        self._round_open = False  # more probes may join the round (none answered yet)
        self._calm_since = 0.0
        self._probe_every = PROBE_FIRST
        self._probe_step = 1
        self._probe_left = 0
        self._probe_growth = False  # the probes left are for growth (else for a lower bound)
        self._sure = False  # the budget is known exactly (a probe was refused at it, say)

    # -- when a request can have arrived ---------------------------------------------------

    def _offset(self) -> float:
        """The fastest round trip seen, the part of every round trip not spent waiting (0
        while too few answers are known, or while W is only assumed): see RoundTrips."""
        return self._trips.offset(self._window_assumed)

    def _spread(self) -> float:
        """How much later than its send a request on its way may arrive, in those terms."""
        return self._trips.spread(self._window_assumed)

    def _arrives_by(self, ticket: Ticket) -> float:
        return self._trips.arrives_by(ticket, self._window_assumed)

    def _solo_block(self) -> float:
        return max(1.0, 4 * (self._trips.average or 0.25))

    def _hold(self) -> float:
        hold = max(self._paused_until, self._held_until)
        episode = self._episode
        if episode is not None and episode.hold is not None:
            hold = max(hold, episode.hold)
        return hold

    # -- our requests, counted -------------------------------------------------------------

    def _count(self, start: float, end: float) -> int:
        """Our requests sent in [start, end] that the server may have counted (a rejected
        request does not count; those sent with it in the same instant may)."""
        log = self._log
        i = bisect.bisect_left(log, start, key=_sent)
        j = bisect.bisect_right(log, end, key=_sent)
        return sum(1 for t in log[i:j] if t.counted)

    def _count_landing(self, lo: float, hi: float) -> int:
        """Our requests that may count and may have arrived in [lo, hi)."""
        log = self._log
        i = bisect.bisect_left(log, lo - self._spread(), key=_sent)
        j = bisect.bisect_left(log, hi, key=_sent)
        return sum(1 for t in log[i:j] if t.counted and self._arrives_by(t) >= lo)

    def _count_window(self, n: int) -> int:
        """Our requests sent when boundary n had surely passed (and n + 1 had not, as far as
        we knew then), that may count: they hold window n's budget, unless the next window
        began before them (then it also began before anything sent after them)."""
        count = 0
        for ticket in reversed(self._log):
            if ticket.window is not None and ticket.window < n - 1:
                break
            count += ticket.window == n and ticket.counted
        return count

    def _full_window(self, now: float, budget: int, grid: _Grid) -> int | None:
        """The latest window a request sent now may land in that has no room, or None."""
        n = grid.window_of(now)
        full = None
        for k in (n - 1, n, n + 1):
            lo_k = grid.bounds(k)[0]
            hi_next = grid.bounds(k + 1)[1]
            if now + self._spread() >= lo_k and now < hi_next:  # it may land in window k
                if self._count_landing(lo_k, hi_next) >= budget:
                    full = k
        return full

    def _prune(self, now: float) -> None:
        keys = self._keys
        if keys and keys[0].counted_at < now - MAX_WINDOW_S - 30:
            del keys[: bisect.bisect_left(keys, now - MAX_WINDOW_S - 1, key=_counted_at)]
        log = self._log
        if log and log[0].sent < now - _LOG_KEEP_S - 30:
            del log[: bisect.bisect_left(log, now - _LOG_KEEP_S, key=_sent)]

    # -- a fixed window's boundaries -------------------------------------------------------

    def _observe(self, n: int, lo: float, hi: float, soft: bool = False) -> bool:
        """Boundary n of the fixed window lies in (lo, hi]; False (and the window is no longer
        taken for a fixed one) if that contradicts what was learned of the boundaries."""
        grid = self._grid
        if grid is None:
            return False
        if grid.observe(n, lo, hi, soft):
            self.window_lo, self.window_s = grid.w_lo, grid.w_hi
            return True
        self._leave_fixed()
        return False

    def _leave_fixed(self) -> None:
        """The boundaries contradict what the server said: back to a window that may slide."""
        self._grid = None
        self.mode = "unknown"
