"""A client-side mirror of the API's rate-limit window: send exactly when the window has room.

The API counts requests per token in a window of W seconds and allows B of them (300 per
60 s today; other limits have other windows, and B shrinks when another integration starts
sharing the token). The window may slide (any W seconds) or reset on fixed boundaries. The
API shows none of this, only 429s with `Retry-After` in whole seconds, rounded up. This
module learns B, W and the kind of window from those 429s, and then sends each request when
the window has room for it: the steady state is at the limit and free of 429s.

When a request arrives
    The server counts a request when it arrives, somewhere between our send and our answer.
    Each way varies; the fastest round trip seen (X) is the least both ways take. Times of
    arrival are kept less the shortest way there, so that a request arrives, in those terms,
    no earlier than its send and no later than its answer less X (with the server counting
    the moment its answer leaves, that is exact up to how much the way back varies). A
    request on its way may arrive as late as its send plus the spread of recent round trips.
    (Until 8 answers are known, and while W is only assumed, X is 0: the answer.)

The mirror (sliding, and until a window is known to be fixed)
    A request holds one of B slots from its send (in flight counts) until W after the latest
    it can have arrived; a new request may go while fewer than B slots are held. A request
    sent then arrives after the one whose slot it takes has left the window, so no W
    seconds ever hold more than B of ours, whether the window slides or resets. W is the
    upper end of what is known of it. A rejected request costs the server nothing: a 429
    frees its slot at once.

The first 429 (nothing known yet)
    Until then everything goes through: the burst the window allows. The first 429 comes when
    the window is full, and a burst that fills it does so before its first request leaves,
    so B = our requests accepted before the window could free. Retry-After points at the
    moment T it frees: in a sliding window the expiry of the oldest request in it, our first,
    so W = T - (our first arrival), T lying in (send + Retry-After - 1, latest arrival +
    Retry-After] of each rejected request; the 429s of the requests still on their way (one
    per worker) narrow it. Every worker waits until T's upper end: a request sent then
    arrives after T. (A first 429 without Retry-After: the documented 60 s, answers as
    arrivals.)

Fixed windows
    A window that resets on boundaries points Retry-After at the next boundary, and frees a
    whole budget at once there. A first burst that began p seconds into such a window gives
    W - p: too short. After T both kinds free a window's worth; they part after that. So the
    first reuse of a slot of the next wave is a validation test, sent alone: a sliding window
    never refuses it (our W is an upper bound); a fixed one does, its Retry-After pointing
    at the next boundary, one window after T. A first burst that straddled a boundary counts
    two windows' worth (more if it was slow): the next wave's 429s come early, again
    pointing one window after T. Either way the budget seems to shrink at once, right after
    the first learning; if the two T's are one fixed window apart and one budget explains
    both counts (the first burst holding as many windows' worth at most as it spanned), the
    window is fixed: B = what we sent from the first T on.

    Then the boundaries are kept as a grid: boundary n = x + n W, for the (x, W) every
    observation allows (each says a boundary lies in some interval; together, a convex
    region, which pins W the closer the further apart they are). A request goes if every
    window it may land in has room, so each window's budget goes the moment that window
    surely began, as fast as the workers go, and never follows the last window's pace. A
    boundary known loosely is tested by its window's first request, alone, halfway:
    accepted, the window began before it arrived (soft: a budget that grew explains it too,
    and gives way to any Retry-After that contradicts it); refused, after (and Retry-After
    says by when). Only while the budget is exactly known, and the window before surely
    holds all of it. Probes go late in a full window, where Retry-After's whole seconds
    halve the next boundary's interval. A refused test or probe holds no one. A 429 that
    contradicts the grid, or boundaries known to less than a window, send the limiter back
    to the mirror above (safe in a fixed window too). A window whose first burst began on a
    boundary passes the validation test and is paced as a sliding one: a little slower,
    never faster.

Later 429s (a budget that changes)
    With W known, a 429 tells the budget: Retry-After points at the moment the window drops
    below B again, so B = our requests sent from (T - W) up to the rejected one (another
    integration's requests, invisible here, are not in that count: B is what is left for us).
    In a fixed window: our requests in the window that 429 ends. Counted from the latest
    moment the window can have begun, that may be short of the budget by up to a second's
    worth: the budget stays "unsure", and the next full window sends as many probes at once
    as it may be short of, then one at a time, until one is refused. A 429 whose window
    holds nothing of ours (Retry-After longer than W, say) comes from some other limit:
    honoured (every worker waits) but not learned from; a Retry-After over 300 s is never
    taken for a window. Without a Retry-After the budget drops by a tenth.

    A budget that grows shows nothing. So after two calm windows, at a full window, the
    limiter probes: requests beyond B where the server's window surely holds all B (before
    the oldest of them can leave it; in a fixed window, surely in the window that is full).
    Accepted: B grows, and single probes follow until one is refused; the next round, a
    window later, probes twice as many. Refused: the next round waits twice as many windows
    (at most 16). A probe refused as expected holds no one.

Robustness
    Every request `wait()` admits should be reported once: `answered()` with the HTTP status,
    or `unanswered(reached)`. Reports are matched to the calling thread's admitted request
    (the runner's workers wait, send and report in one thread), else to the oldest request
    in flight. A thread that calls `wait()` again without reporting has its earlier request
    counted as answered then; one unreported for `forget_after_s` counts as accepted at its
    send time. A missing report can never wedge the limiter nor speed it up. A new token
    starts with an empty window; B, W and the boundaries carry over.

    `rate_per_minute` is a ceiling: requests at least 60/rate_per_minute seconds apart,
    whatever was learned. `pause()` (the API is unreachable) holds every worker.
"""

from __future__ import annotations

import bisect
import math
import threading

from jobrunner.limiter.arrivals import Ticket, _counted_at
from jobrunner.limiter.constants import (
    _TICK,
    DEFAULT_WINDOW_S,
    EDGE_AT,
    EDGE_SHARE,
    FORGET_AFTER_S,
    MAX_WINDOW_S,
    MIN_EDGE_S,
    POLL_S,
    PROBE_FIRST,
    PROBE_MAX,
    RTT_SAMPLES,
    RTT_SAMPLES_MIN,
    TIMED_POLL_S,
)
from jobrunner.limiter.grid import _Grid
from jobrunner.limiter.learning import _Learning
from jobrunner.limiter.state import Clock, Sleep

__all__ = [
    "DEFAULT_WINDOW_S",
    "EDGE_AT",
    "EDGE_SHARE",
    "FORGET_AFTER_S",
    "MAX_WINDOW_S",
    "MIN_EDGE_S",
    "POLL_S",
    "PROBE_FIRST",
    "PROBE_MAX",
    "RTT_SAMPLES",
    "RTT_SAMPLES_MIN",
    "TIMED_POLL_S",
    "Clock",
    "Sleep",
    "Ticket",
    "WindowLimiter",
]


class WindowLimiter(_Learning):
    """Mirrors the API's rate-limit window for every worker. See the package docstring.

    Thread-safe: any number of workers share one. `clock` is monotonic seconds; `sleep(stop,
    seconds)` waits and returns True if `stop` was set (tests inject both).

    Here: the interface, and the admission of each request. The state and the constructor
    are `_LimiterState`'s (state.py); what answers and 429s teach, `_Learning`'s
    (learning.py).
    """

    # -- the interface the runner uses --------------------------------------------------

    def wait(self, stop: threading.Event) -> bool:
        """Block until the caller may send one request now. False if `stop` was set while
        waiting (then no slot is taken)."""
        me = threading.get_ident()
        with self._lock:
            self._waiters += 1
        try:
            while not stop.is_set():
                with self._lock:
                    now = self._clock()
                    earlier = self._by_thread.pop(me, None)
                    if earlier is not None and earlier.state == "flight":
                        self._report(earlier, now, None, None)  # never reported: counted now
                    ticket, delay = self._try(now)
                    if ticket is not None:
                        self._by_thread[me] = ticket
                        return True
                nap = POLL_S if delay is None else min(max(delay, 0.0), TIMED_POLL_S)
                if self._sleep(stop, nap):
                    return False
            return False
        finally:
            with self._lock:
                self._waiters -= 1

    def answered(self, status: int, retry_after: float | None = None) -> None:
        """After every HTTP answer to a request wait() admitted (429 with its Retry-After)."""
        with self._lock:
            ticket = self._own_ticket()
            now = self._clock()
            if ticket is None:
                self._orphan_answer(now, status, retry_after)
            elif ticket.state != "flight":  # already settled (forgotten as stale): count only
                self.limited += status == 429
            else:
                self._report(ticket, now, status, retry_after)

    def unanswered(self, reached: bool) -> None:
        """After a request wait() admitted got no HTTP answer. reached=True: a timeout or a
        dropped connection, the server may have counted it; False: it never arrived."""
        with self._lock:
            ticket = self._own_ticket()
            if ticket is not None:
                self._report(ticket, self._clock(), None, None, lost=not reached)

    def pause(self, seconds: float) -> None:
        """Every worker waits (the API is unreachable, say)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def wait_remaining(self) -> tuple[float, str]:
        """How long the workers waiting for a slot still wait, and why: "held" (a 429's
        Retry-After, or pause()); "window" (the learned window is full until its oldest
        request leaves it, or until a fixed window's next boundary: said only while a worker
        is waiting in wait()); or (0, "")."""
        with self._lock:
            now = self._clock()
            hold = self._hold() - now
            if hold > 0:
                return hold, "held"
            budget, window = self.budget, self.window_s
            if not self._waiters or budget is None or window is None:
                return 0.0, ""
            if self._grid is not None:
                full = self._full_window(now, budget, self._grid)
                if full is None:
                    return 0.0, ""
                return max(0.0, self._grid.bounds(full + 1)[1] - now), "window"
            keys = self._keys
            first = bisect.bisect_right(keys, now - window, key=_counted_at)
            occupied = len(self._flight) + len(keys) - first
            need = first + occupied - budget
            if occupied < budget or need >= len(keys):
                return 0.0, ""  # room now, or only an answer on its way holds the slot
            return max(0.0, keys[need].counted_at + window - now), "window"

    def new_token(self) -> None:
        """The limit is per token: a new token's window starts empty. B and W carry over."""
        with self._lock:
            self._epoch += 1
            self._old.update(self._flight)
            self._flight.clear()
            self._log.clear()
            self._keys.clear()
            self._episode = None
            self._prev = None
            self._test = None
            self._solo = None
            self._round = []
            self._round_open = False
            self._held_until = -math.inf
            self._calm_since = self._clock()

    def rate_per_s(self) -> float | None:
        """The sustainable pace it believes (requests per second), None while unknown."""
        with self._lock:
            learned = None
            if self.budget is not None and self.window_s is not None:
                extra = (
                    0.0
                    if self._grid is not None
                    else max(0.0, (self._trips.average or 0.0) - self._offset())
                )
                learned = self.budget / (self.window_s + extra)
            if learned is None:
                return self._ceiling
            return min(learned, self._ceiling) if self._ceiling else learned

    @property
    def interval(self) -> float:
        """Seconds per request at that pace (0.0 while unknown), for the old Pacer's callers."""
        rate = self.rate_per_s()
        return 1.0 / rate if rate else 0.0

    # -- the same without threads: explicit tickets (the simulations in the tests) -----------

    def try_acquire(self) -> tuple[Ticket | None, float | None]:
        """(ticket, 0.0) if a request may go now; else (None, seconds until asking again is
        worth it; None: not before some answer)."""
        with self._lock:
            return self._try(self._clock())

    def report(self, ticket: Ticket, status: int, retry_after: float | None = None) -> None:
        with self._lock:
            self._report(ticket, self._clock(), status, retry_after)

    def report_unanswered(self, ticket: Ticket, reached: bool) -> None:
        with self._lock:
            self._report(ticket, self._clock(), None, None, lost=not reached)

    # -- admission ------------------------------------------------------------------------

    def _try(self, now: float) -> tuple[Ticket | None, float | None]:
        self._forget_stale(now)
        self._maybe_close_episode(now)
        hold = self._hold()
        if now < hold:
            return None, max(hold - now, _TICK)
        solo = self._solo
        if solo is not None:
            if solo.state == "flight" and now - solo.sent < self._solo_block():
                return None, None
            self._solo = None
        probing = self._probing(now)
        if probing and not (self._round_open and self._probe_left > 0):
            return None, None  # a round of probes is on its way: nothing else goes
        if now < self._last_admit + self._min_gap:
            return None, max(self._last_admit + self._min_gap - now, _TICK)
        budget, window = self.budget, self.window_s
        if budget is None or window is None:
            return self._admit(now), 0.0
        self._prune(now)
        grid = self._grid
        if grid is not None:
            lo, hi = grid.bounds(grid.window_of(now) + 1)
            if hi - lo <= grid.w_lo:
                return self._try_fixed(now, budget, grid, probing)
            self._leave_fixed()  # boundaries known too loosely to be of use any more
        keys = self._keys
        first = bisect.bisect_right(keys, now - window, key=_counted_at)
        if probing:  # more probes join the round while none is answered
            owner = keys[first] if first < len(keys) else None
            if (
                owner is not None
                and now + 2 * (self._trips.average or 0.0) < owner.sent + self.window_lo
            ):
                return self._admit(now, "probe", owner), 0.0
            return None, None
        occupied = len(self._flight) + len(keys) - first
        if occupied < budget:
            if self._validation_due(now, window):
                # The first reuse of a slot of the wave sent after the last learning: alone.
                if self._flight:
                    return None, None
                return self._admit(now, "validate", self._cohort_first), 0.0
            return self._admit(now), 0.0
        if occupied == budget and first < len(keys) and self._probe_due(now, keys[first]):
            if self._flight:  # a probe must not overtake requests on their way
                return None, None
            return self._admit(now, "probe", keys[first]), 0.0
        need = first + occupied - budget  # the slot that frees next enough of them
        if need < len(keys):  # (at least a tick: "now - W" and "+ W" round differently)
            return None, max(keys[need].counted_at + window - now, _TICK)
        return None, None  # held by requests in flight: after an answer

    def _try_fixed(
        self, now: float, budget: int, grid: _Grid, probing: bool
    ) -> tuple[Ticket | None, float | None]:
        """A fixed window: a request goes if every window it may land in has room; the next
        window's budget goes from the moment it surely began."""
        full = self._full_window(now, budget, grid)
        if full is None:
            if probing:
                return None, None
            ticket = self._admit(now)
            n = grid.window_of(now) + 1
            while n > grid.window_of(now) - 2 and grid.bounds(n)[1] > now:
                n -= 1
            if grid.bounds(n)[1] <= now:
                ticket.window = n
            return ticket, 0.0
        lo, hi = grid.bounds(full + 1)
        # Only where the window surely holds the whole budget does a probe or a test tell
        # anything: a 429 then says it was full (and when the next one begins), an answer
        # beyond it that the budget grew, or that the next one began.
        if self._count_window(full) >= budget and self._episode is None:
            probe_at = self._fixed_probe_at(now, lo, hi)
            if probe_at is not None:
                if now < probe_at:
                    return None, max(probe_at - now, _TICK)
                if not probing and self._flight:
                    return None, None  # (a probe must not overtake requests on their way)
                ticket = self._admit_in(now, "probe", full)
                ticket.boundary = full + 1
                return ticket, 0.0
            if not probing and not self._flight and self._edge_worth(lo, hi):
                # Where exactly does the next window begin? Its first request, alone,
                # halfway: accepted, it began before; refused, after.
                test_at = lo + EDGE_AT * (hi - lo)
                if now < test_at:
                    return None, max(test_at - now, _TICK)
                ticket = self._admit(now, "edge")
                ticket.boundary = full + 1
                return ticket, 0.0
        if probing:
            return None, None
        return None, max(hi - now, _TICK)

    def _fixed_probe_at(self, now: float, lo: float, hi: float) -> float | None:
        """When a probe is due in a full fixed window whose next boundary lies in (lo, hi]:
        as late as it still surely lands in this window, and where Retry-After's whole
        seconds, counted from it, cut (lo, hi] in halves. None: no probe due, or too late."""
        if not self._probe or (self._probe_left <= 0 and not self._probe_scheduled(now)):
            return None
        latest = lo - self._spread() - _TICK
        if latest < now:
            return None
        middle = (lo + hi) / 2
        return max(now, middle - math.ceil(middle - latest))

    def _edge_worth(self, lo: float, hi: float) -> bool:
        """Is a boundary known too loosely, and would a test of it tell? (An answer beyond
        the budget says the next window began only if the budget is exactly known.)"""
        if self._episode is not None or not self._sure:
            return False
        return hi - lo > max(self._spread(), MIN_EDGE_S, EDGE_SHARE * (self.window_s or 0.0))

    def _admit_in(self, now: float, kind: str, window: int) -> Ticket:
        ticket = self._admit(now, kind)
        ticket.window = window
        return ticket

    def _admit(self, now: float, kind: str = "send", owner: Ticket | None = None) -> Ticket:
        self._seq += 1
        ticket = Ticket(self._seq, now, self._epoch, kind, reuses=owner)
        if kind == "validate":
            self._test = None
        elif kind == "probe":
            self._probe_left -= 1
            if not self._probing(now):
                self._round = []
            self._round.append(ticket)
            self._round_open = True
        if kind in ("validate", "edge"):
            self._solo = ticket
        self._log.append(ticket)
        self._flight[ticket.seq] = ticket
        self._last_admit = now
        return ticket

    def _probing(self, now: float) -> bool:
        """Is a round of probes on its way?"""
        return any(t.state == "flight" and now - t.sent < self._solo_block() for t in self._round)

    def _validation_due(self, now: float, window: float) -> bool:
        """Is the slot about to be reused that of a request sent after the last learning?"""
        first = self._cohort_first
        return self._test == "validate" and first is not None and now >= first.counted_at + window

    def _probe_due(self, now: float, owner: Ticket) -> bool:
        """A growth probe only measures the budget where the server's window surely holds all
        of the mirror's B: before the oldest of them can have left it."""
        if not self._probe or self._episode is not None:
            return False
        if self._test is not None and self._probe_left <= 0:
            return False
        if now + 2 * (self._trips.average or 0.0) >= owner.sent + self.window_lo:
            return False
        return self._probe_scheduled(now)

    def _probe_scheduled(self, now: float) -> bool:
        if self._probe_left > 0:
            return True
        if not self._sure and self._episode is None:
            # The budget is a lower bound until a probe beyond it is refused: one more.
            self._probe_left, self._probe_growth = 1, False
            return True
        assert self.window_s is not None
        if now - self._calm_since < self._probe_every * self.window_s:
            return False
        self._probe_left, self._probe_growth = self._probe_step, True
        return True
