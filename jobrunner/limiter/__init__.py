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
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[threading.Event, float], bool]  # True: stop was set

MAX_WINDOW_S = 300.0  # a Retry-After beyond this is never taken for a window
DEFAULT_WINDOW_S = 60.0  # the documented per-token window, when a 429 has no Retry-After
FORGET_AFTER_S = 60.0  # > the runner's connect + read timeouts (10 + 30 s)
POLL_S = 0.05  # longest sleep while waiting for an answer (a test's, a probe's)
TIMED_POLL_S = 0.25  # longest sleep while waiting for a slot to expire
PROBE_FIRST = 2  # calm windows before the first growth probe
PROBE_MAX = 16
RTT_SAMPLES = 64  # the answers the spread of round trips is measured over
RTT_SAMPLES_MIN = 8  # with fewer, a slot is held until its answer
EDGE_AT = 0.5  # where in a boundary's interval its test goes (0: at once, 1: at the end)
EDGE_SHARE = 0.0  # a boundary known to this share of W is not tested further
MIN_EDGE_S = 0.05  # ... nor one known to this many seconds
_LOG_KEEP_S = 2 * MAX_WINDOW_S + 10
_TICK = 1e-6


@dataclass(eq=False)
class Ticket:
    """One admitted request, as the mirror sees it."""

    seq: int
    sent: float
    epoch: int  # token generation it was sent with
    kind: str = "send"  # send | validate (a test) | edge (a boundary's test) | probe
    state: str = "flight"  # flight | ok (counted) | rejected (429) | lost (never arrived)
    counted_at: float = 0.0  # ok: the latest it can have arrived (see _offset); its slot
    # is occupied until counted_at + W
    answered: float | None = None
    reuses: Ticket | None = None  # validate: the new wave's request it follows; probe: the
    # oldest request of the full window it was sent into
    boundary: int | None = None  # edge: the fixed window boundary it tests
    window: int | None = None  # fixed: the latest boundary it was surely sent after

    @property
    def counted(self) -> bool:
        return self.state in ("flight", "ok")


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


class _Grid:
    """A fixed window's boundaries, in send time (when a request must leave to arrive on
    one): boundary n is x + n * w for some (x, w) that every observation allows. Each
    observation says where one boundary lies; together they pin both the phase and the
    length, the more closely the further apart they are."""

    def __init__(self, w_lo: float, w_hi: float) -> None:
        self._limits = (w_lo, w_hi)
        self.w_lo, self.w_hi = w_lo, w_hi  # the lengths the observations allow
        # (n, lo, hi, soft): lo <= boundary n <= hi. Soft: inferred from an answer beyond
        # the budget, which a budget that grew explains too; hard: from a Retry-After.
        self._obs: list[_Observation] = []
        self._corners: list[tuple[float, float]] = []  # (x, w) of the region they allow

    def observe(self, n: int, lo: float, hi: float, soft: bool = False) -> bool:
        """Boundary n lies in [lo, hi]. If that contradicts the earlier observations, the
        soft ones give way to a hard one; False if it still does (then nothing changes)."""
        obs = [*self._obs, (n, lo, hi, soft)]
        corners = _corners(obs, self._limits)
        if not corners and not soft:
            obs = [o for o in obs if not o[3]]
            corners = _corners(obs, self._limits)
        if not corners:
            return False
        hard = [o for o in obs if not o[3]]
        hard_corners = _corners(hard, self._limits) if len(hard) < len(obs) else corners
        self._obs = [o for o in obs if _binding(o, corners) or _binding(o, hard_corners)]
        self._corners = corners
        self.w_lo = min(w for _, w in corners)
        self.w_hi = max(w for _, w in corners)
        return True

    def bounds(self, n: int) -> tuple[float, float]:
        at = [x + n * w for x, w in self._corners]
        return min(at), max(at)

    def window_of(self, t: float) -> int:
        """The window a request sent at t most likely lands in (the last boundary before)."""
        x, w = self._centre()
        return math.floor((t - x) / w)

    def nearest(self, t: float) -> int:
        """The boundary nearest to t."""
        x, w = self._centre()
        return round((t - x) / w)

    def _centre(self) -> tuple[float, float]:
        k = len(self._corners)
        return sum(x for x, _ in self._corners) / k, sum(w for _, w in self._corners) / k


_Observation = tuple[int, float, float, bool]


def _corners(obs: list[_Observation], limits: tuple[float, float]) -> list[tuple[float, float]]:
    """The corners of the region of (x, w) with lo <= x + n * w <= hi for every observation
    and w within limits (a convex polygon; empty: none)."""
    lines: list[tuple[float, float, float]] = []  # a * x + b * w = c
    for n, lo, hi, _ in obs:
        lines += [(1.0, float(n), c) for c in (lo, hi) if math.isfinite(c)]
    lines += [(0.0, 1.0, limits[0]), (0.0, 1.0, limits[1])]
    corners = []
    for i, (a1, b1, c1) in enumerate(lines):
        for a2, b2, c2 in lines[i + 1 :]:
            det = a1 * b2 - a2 * b1
            if abs(det) < 1e-12:
                continue
            x = (c1 * b2 - c2 * b1) / det
            w = (a1 * c2 - a2 * c1) / det
            tol = 1e-9 * max(1.0, abs(x))
            if not limits[0] - tol <= w <= limits[1] + tol:
                continue
            if all(lo - tol <= x + n * w <= hi + tol for n, lo, hi, _ in obs):
                corners.append((x, w))
    return corners


def _binding(ob: _Observation, corners: list[tuple[float, float]]) -> bool:
    """Does this observation bound the region (a corner lies on one of its edges)?"""
    n, lo, hi, _ = ob
    return any(
        min(abs(x + n * w - lo), abs(x + n * w - hi)) <= 1e-9 * max(1.0, abs(x)) for x, w in corners
    )


class WindowLimiter:
    """Mirrors the API's rate-limit window for every worker. See the module docstring.

    Thread-safe: any number of workers share one. `clock` is monotonic seconds; `sleep(stop,
    seconds)` waits and returns True if `stop` was set (tests inject both).
    """

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
        self._rtt: float | None = None
        self._rtts: deque[float] = deque(maxlen=RTT_SAMPLES)
        self._rtt_min = math.inf
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
                    0.0 if self._grid is not None else max(0.0, (self._rtt or 0.0) - self._offset())
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
            if owner is not None and now + 2 * (self._rtt or 0.0) < owner.sent + self.window_lo:
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

    def _count_landing(self, lo: float, hi: float) -> int:
        """Our requests that may count and may have arrived in [lo, hi)."""
        log = self._log
        i = bisect.bisect_left(log, lo - self._spread(), key=_sent)
        j = bisect.bisect_left(log, hi, key=_sent)
        return sum(1 for t in log[i:j] if t.counted and self._arrives_by(t) >= lo)

    def _edge_worth(self, lo: float, hi: float) -> bool:
        """Is a boundary known too loosely, and would a test of it tell? (An answer beyond
        the budget says the next window began only if the budget is exactly known.)"""
        if self._episode is not None or not self._sure:
            return False
        return hi - lo > max(self._spread(), MIN_EDGE_S, EDGE_SHARE * (self.window_s or 0.0))

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
        if now + 2 * (self._rtt or 0.0) >= owner.sent + self.window_lo:
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

    def _solo_block(self) -> float:
        return max(1.0, 4 * (self._rtt or 0.25))

    def _offset(self) -> float:
        """The fastest round trip seen: the shortest way there plus the shortest way back,
        the part of every round trip that is not spent waiting. Times of arrival are kept
        less the shortest way there, so a request arrives, in those terms, no earlier than
        its send and no later than its answer less this. (0 while too few answers are
        known, or while W is only assumed: then a slot is held until the answer.)"""
        if len(self._rtts) < RTT_SAMPLES_MIN or self._window_assumed:
            return 0.0
        return self._rtt_min

    def _spread(self) -> float:
        """How much later than its send a request on its way may arrive, in those terms."""
        if len(self._rtts) < RTT_SAMPLES_MIN:
            return self._rtt or 1.0
        return max(self._rtts) - self._offset()

    def _arrives_by(self, ticket: Ticket) -> float:
        if ticket.answered is not None:
            return max(ticket.sent, ticket.answered - self._offset())
        return ticket.sent + self._spread()

    def _hold(self) -> float:
        hold = max(self._paused_until, self._held_until)
        episode = self._episode
        if episode is not None and episode.hold is not None:
            hold = max(hold, episode.hold)
        return hold

    # -- answers --------------------------------------------------------------------------

    def _own_ticket(self) -> Ticket | None:
        """The calling thread's admitted request, else the oldest one in flight."""
        ticket = self._by_thread.pop(threading.get_ident(), None)
        if ticket is not None:
            return ticket
        pending = [*self._flight.values(), *self._old.values()]
        if not pending:
            return None
        ticket = min(pending, key=lambda t: t.seq)
        for thread, held in list(self._by_thread.items()):
            if held is ticket:
                del self._by_thread[thread]
        return ticket

    def _orphan_answer(self, now: float, status: int, retry_after: float | None) -> None:
        """A report with no admitted request to match: learn nothing, lose nothing."""
        if status == 429:
            self.limited += 1
            self._held_until = max(self._held_until, now + _hold_for(retry_after))
            return
        self._seq += 1
        ticket = Ticket(self._seq, now, self._epoch, state="ok", counted_at=now)
        self._log.append(ticket)
        bisect.insort(self._keys, ticket, key=_counted_at)

    def _report(
        self,
        ticket: Ticket,
        now: float,
        status: int | None,
        retry_after: float | None,
        lost: bool = False,
    ) -> None:
        if ticket.state != "flight":
            return  # reported twice, or forgotten meanwhile
        if status == 429:
            self.limited += 1
        if self._old.pop(ticket.seq, None) is not None:
            ticket.state = "lost"  # an old token's request: its window is gone
            return
        self._flight.pop(ticket.seq, None)
        if self._solo is ticket:
            self._solo = None
        if ticket.kind == "probe":
            self._round_open = False
        ticket.answered = now
        if status is not None:
            rtt = now - ticket.sent
            self._rtt = rtt if self._rtt is None else 0.9 * self._rtt + 0.1 * rtt
            self._rtts.append(rtt)
            self._rtt_min = min(self._rtt_min, rtt)
        if status == 429:
            ticket.state = "rejected"
            self._on_429(ticket, now, retry_after)
        elif lost:
            ticket.state = "lost"
            self._after_neutral(ticket)
        else:
            ticket.state = "ok"
            ticket.counted_at = self._arrives_by(ticket)
            bisect.insort(self._keys, ticket, key=_counted_at)
            if self._cohort_first is None and ticket.sent >= self._cohort_start:
                self._cohort_first = ticket  # the first slot of the new wave to free
            if status is None:
                self._after_neutral(ticket)
            else:
                self._on_accepted(ticket)
        self._maybe_close_episode(now)

    def _after_neutral(self, ticket: Ticket) -> None:
        """A test or probe that told nothing (no HTTP answer): try again later."""
        if ticket.kind == "validate":
            self._test = "validate"
        elif ticket.kind == "probe":
            self._probe_left = 0

    def _on_accepted(self, ticket: Ticket) -> None:
        if ticket.kind == "probe" and self.budget is not None:
            self.budget += 1
            self._sure = False
            if self._probe_growth and self._probe_left <= 0:
                self._probe_step = min(self._probe_step * 2, 64)
                self._probe_every = 1
                self._calm_since = ticket.sent
        elif ticket.kind == "edge" and ticket.boundary is not None:
            # The window began before this request arrived: it counts in that window.
            self._observe(ticket.boundary, -math.inf, self._arrives_by(ticket), soft=True)
            ticket.window = ticket.boundary

    def _forget_stale(self, now: float) -> None:
        for ticket in [t for t in self._flight.values() if now - t.sent > self.forget_after_s]:
            # Never reported: counted as accepted when it was sent.
            self._flight.pop(ticket.seq)
            ticket.state, ticket.counted_at = "ok", ticket.sent
            bisect.insort(self._keys, ticket, key=_counted_at)
            if self._solo is ticket:
                self._solo = None
        for ticket in [t for t in self._old.values() if now - t.sent > self.forget_after_s]:
            self._old.pop(ticket.seq)
            ticket.state = "lost"

    def _prune(self, now: float) -> None:
        keys = self._keys
        if keys and keys[0].counted_at < now - MAX_WINDOW_S - 30:
            del keys[: bisect.bisect_left(keys, now - MAX_WINDOW_S - 1, key=_counted_at)]
        log = self._log
        if log and log[0].sent < now - _LOG_KEEP_S - 30:
            del log[: bisect.bisect_left(log, now - _LOG_KEEP_S, key=_sent)]

    # -- learning from 429s ------------------------------------------------------------------

    def _on_429(self, ticket: Ticket, now: float, retry_after: float | None) -> None:
        if retry_after is not None and retry_after > MAX_WINDOW_S:
            # Some other limit: honoured, never mirrored.
            self._held_until = max(self._held_until, now + retry_after)
            return
        lo = hi = hold = None
        if retry_after is None:
            self._held_until = max(self._held_until, now + _hold_for(retry_after))
        else:
            # Retry-After counts from the moment the server refused it, between its send
            # and its answer (less the way back): the window frees in (lo, hi], and a
            # request sent from hi on arrives after that.
            lo = ticket.sent + max(retry_after - 1.0, 0.0)
            hi = self._arrives_by(ticket) + max(retry_after, 1.0)
            hold = self._arrives_by(ticket) + retry_after
        episode = self._episode
        if episode is not None and ticket.sent < episode.opened_at:
            episode.add(ticket.sent, lo, hi)
            if hold is not None:
                episode.hold = hold if episode.hold is None else min(episode.hold, hold)
            self._recompute()
            return
        if ticket.kind == "edge" and self._edge_refused(ticket, lo, hi):
            self._sure = True  # (it surely had the whole budget)
            return  # the window began later than halfway, as may be: no one waits
        if ticket.kind == "probe" and self._probe_expected(ticket, lo, hi):
            self._probe_refused(ticket)  # the window was full, as expected: no one waits
            return
        if hold is not None:
            hold = max(hold, self._held_until)
        if episode is not None:
            self._close_episode(now)
        prior = (self.budget, self.window_s, self.window_lo, self.mode)
        kind = "first" if self.budget is None else "relearn"
        self._episode = _Episode(kind, now, ticket.sent, lo, hi, prior, hold=hold)
        self._test = None
        self._probe_left = 0
        self._recompute()

    def _edge_refused(self, ticket: Ticket, lo: float | None, hi: float | None) -> bool:
        """A boundary's test refused: the window begins after it left (and by Retry-After).
        False if that contradicts what is known of the boundaries."""
        n = ticket.boundary
        if self._grid is None or n is None or lo is None or hi is None:
            return False
        return self._observe(n, max(ticket.sent, lo), hi)

    def _probe_expected(self, ticket: Ticket, lo: float | None, hi: float | None) -> bool:
        """Does a probe's 429 say what a full window says: free when its oldest request
        leaves it (or, in a fixed window, at its next boundary)?"""
        window = self.window_s
        if lo is None or hi is None:
            return True  # no Retry-After: nothing says otherwise (and everyone waits 1 s)
        if window is None:
            return False
        grid = self._grid
        if grid is not None:  # it was sent where it surely landed before the next boundary
            n = ticket.boundary if ticket.boundary is not None else grid.nearest((lo + hi) / 2)
            return self._observe(n, max(ticket.sent, lo), hi)
        owner = ticket.reuses
        return owner is not None and lo <= owner.counted_at + window

    def _probe_refused(self, ticket: Ticket) -> None:
        """The budget is known exactly; it has not grown: probe for growth less often."""
        self._sure = True
        self._probe_left = 0
        if self._probe_growth:
            self._probe_step = 1
            self._probe_every = min(self._probe_every * 2, PROBE_MAX)
        self._calm_since = ticket.sent

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

    def _recompute(self) -> None:
        episode = self._episode
        if episode is None:
            return
        budget, window, window_lo, mode = episode.prior
        lo, hi, ref = episode.lo, episode.hi, episode.s_ref
        if episode.kind == "first":
            start = (lo if lo is not None else ref) - MAX_WINDOW_S - self._spread()
            oldest = next((t for t in self._log if t.sent >= start and t.counted), None)
            first = oldest.sent if oldest is not None else ref
            # Accepted before the window could free: all of the burst, including requests
            # sent just after the first rejected one that overtook it on the way.
            end = max(ref, min(lo, episode.opened_at)) if lo is not None else ref
            self.budget = max(1, self._count(first, end))
            if lo is None or hi is None:
                self.window_s = self.window_lo = DEFAULT_WINDOW_S
                self._window_assumed = True
            else:
                # T less the first request's arrival: at most T's upper end less its send,
                # at least T's lower end less the latest it can have arrived.
                self.window_s = max(hi - first, 0.001)
                latest = self._arrives_by(oldest) if oldest is not None else first
                self.window_lo = min(max(lo - latest, 0.0), self.window_s)
                self._window_assumed = False
            self.mode = "unknown"
            return
        assert budget is not None and window is not None
        if lo is None or hi is None:
            seen = self._count(ref - window, ref)
            self.budget = max(1, min(seen, budget) - max(1, budget // 10))
            return
        if self._grid is not None:
            if self._relearn_fixed(episode, lo, hi, ref, budget):
                return
            self._leave_fixed()
        seen = self._count(hi - window, ref)
        self.budget, self.window_s, self.window_lo, self.mode = budget, window, window_lo, mode
        if self._grid is None:
            self.mode = "unknown"
        if self._after_first and seen < budget - _tolerance(budget):
            # Right after the first learning, a budget that seems to shrink at once: more
            # likely a fixed window (the validation test's 429, which a sliding window no
            # longer than our W, an upper bound, never gives; or a first burst across a
            # boundary, which counted two windows' worth).
            if self._fixed_fit(episode, lo, hi, ref, budget):
                return
        most = self._count(lo - window, ref)  # from the earliest the window can have begun
        if most == 0:
            # Nothing of ours is in the window this 429 implies: some other limit answered.
            episode.external = True
            return
        # Counted from the latest moment the window can have begun: up to a second's worth
        # too few. Probes at the next full window win those back.
        self.budget = max(1, seen)
        episode.unsure = most - self.budget

    def _relearn_fixed(
        self, episode: _Episode, lo: float, hi: float, ref: float, budget: int
    ) -> bool:
        """A 429 in a fixed window: if it points at the boundary after the window it was
        sent in, the budget is what we sent in that window before it. False if it does not."""
        grid = self._grid
        assert grid is not None
        n = grid.nearest((lo + hi) / 2)
        if not grid.observe(n, lo, hi):
            return False
        self.window_s, self.window_lo, self.mode = grid.w_hi, grid.w_lo, "fixed"
        start_lo, start_hi = grid.bounds(n - 1)
        seen = self._count(start_hi, ref)
        most = self._count_landing(start_lo, ref + self._spread())
        self.budget = max(1, seen)
        episode.unsure = max(0, most - seen)
        return True

    def _fixed_fit(self, episode: _Episode, lo: float, hi: float, ref: float, budget: int) -> bool:
        """Are this T and the first episode's the boundaries of one fixed window, which
        explains both counts with one budget (the first burst, which may have begun in an
        earlier window, held as many windows' worth at most as it spanned)? Then that is
        what is learned."""
        if self._prev is None:
            return False
        prev_lo, prev_hi, prev_ref = self._prev
        w_lo, w_hi = lo - prev_hi, hi - prev_lo
        if w_lo < 0.5 or w_lo > MAX_WINDOW_S:
            return False
        slack = _tolerance(budget)
        # In the window from that boundary to this 429: surely the new wave (it went after
        # the hold), perhaps requests of the first burst still on their way at the boundary
        # and requests sent with the refused one that overtook it.
        least = self._count(prev_hi, ref)
        most = self._count(prev_ref, ref + self._spread())
        before_least = self._count(prev_hi - w_lo, prev_ref)  # the window before the boundary
        before_most = self._count(prev_lo - w_hi, prev_ref)
        began = self._log[0].sent if self._log else prev_ref
        spanned = 1 + math.ceil(max(0.0, prev_ref - began) / w_lo)
        if least == 0 or budget > spanned * most + slack:
            return False
        if before_most < least - slack or before_least > most + slack:
            return False
        grid = self._grid_from((prev_lo, prev_hi), (lo, hi))
        if grid is None:
            return False
        self._grid = grid
        self.window_lo, self.window_s, self.budget = grid.w_lo, grid.w_hi, least
        self.mode = "fixed"
        episode.unsure = most - least
        return True

    def _grid_from(self, b0: tuple[float, float], b1: tuple[float, float]) -> _Grid | None:
        """The boundaries of a fixed window, two consecutive ones being known this closely
        (in send time, within the margin); None if they cannot be."""
        grid = _Grid(0.5, MAX_WINDOW_S)
        if grid.observe(0, *b0) and grid.observe(1, *b1):
            return grid
        return None

    def _count(self, start: float, end: float) -> int:
        """Our requests sent in [start, end] that the server may have counted (a rejected
        request does not count; those sent with it in the same instant may)."""
        log = self._log
        i = bisect.bisect_left(log, start, key=_sent)
        j = bisect.bisect_right(log, end, key=_sent)
        return sum(1 for t in log[i:j] if t.counted)

    def _maybe_close_episode(self, now: float) -> None:
        episode = self._episode
        if episode is None:
            return
        if any(t.sent < episode.opened_at for t in self._flight.values()):
            return
        self._close_episode(now)

    def _close_episode(self, now: float) -> None:
        episode = self._episode
        assert episode is not None
        self._recompute()
        self._episode = None
        if episode.hold is not None:
            self._held_until = max(self._held_until, episode.hold)
        if episode.external:
            return
        if episode.lo is not None and episode.hi is not None and self.budget is not None:
            self._prev = (episode.lo, episode.hi, episode.s_ref)
        self._after_first = episode.kind == "first"
        self._test = None if self._grid is not None else "validate"
        self._cohort_start = max(now, self._held_until)
        self._cohort_first = None
        self._calm_since = self._cohort_start
        self._probe_every = PROBE_FIRST
        self._probe_step = 1
        self._probe_left, self._probe_growth = episode.unsure, False
        self._sure = episode.unsure == 0


def _counted_at(ticket: Ticket) -> float:
    return ticket.counted_at


def _sent(ticket: Ticket) -> float:
    return ticket.sent


def _hold_for(retry_after: float | None) -> float:
    return 1.0 if retry_after is None else retry_after


def _tolerance(budget: int) -> int:
    return max(2, budget // 10)
