"""Today's WindowLimiter, as jobrunner shipped it at 08251dc (before fixed windows were paced
on their boundaries), kept for the side-by-side comparisons of bench/run.py and
`python tests/limiter_sim.py` only: jobrunner itself uses jobrunner/limiter.py.

A client-side mirror of the API's rate-limit window: send exactly when the window has room.

The API counts requests per token in a window of W seconds and allows B of them (300 per
60 s today; other limits have other windows, and B shrinks when another integration starts
sharing the token). It shows neither number, only 429s with `Retry-After` in whole seconds,
rounded up. This module learns B and W from those 429s and then sends each request when the
window has room for it: the steady state is at the limit and free of 429s.

The mirror (conservative)
    The server counts a request when it arrives, somewhere between our send and our answer.
    So a request holds one of B slots from its send (in flight counts) until W seconds after
    its answer; a new request may go while fewer than B slots are held. Reusing a slot thus
    takes W plus a round trip, so two requests on one slot arrive more than W apart, and no
    W seconds ever hold more than B of ours, whether the server's window slides or resets on
    fixed boundaries. A rejected request costs the server nothing: a 429 frees its slot at
    once. The price of the round trip is 0.5% at 60 s and 300 ms, 5% at 6 s.

The first 429 (nothing known yet)
    Until then everything goes through: the burst the window allows. The first 429 comes when
    the window is full, and a burst that fills it does so before its first request leaves,
    so B = our requests accepted before the window could free. Retry-After points at the
    moment T it frees: in a sliding window the expiry of the oldest request in it, our first,
    so W = T - (our first send), T being the 429's send time + Retry-After. Send times are
    compared (the forward trip is about the same for every request; answers would shorten W
    by a create's processing time). Rounding up makes T up to a second late: the 429s of the
    requests still in flight (one per worker) carry other fractions, and intersecting their
    bounds narrows T. The mirror uses the upper end, the safe side. (A first 429 without
    Retry-After: the documented 60 s.)

Fixed windows
    A window that resets on boundaries points Retry-After at the next boundary and counts the
    requests since the last one. A first burst that began p seconds into such a window gives
    W - p: too short. After T both kinds free a window's worth (sliding: the first burst's
    slots; fixed: a fresh window); they part after that (sliding frees the next wave's slots
    W after they were used, fixed only at its next boundary). So after each learning, the
    first reuse of a slot of the new wave is a *validation test*: sent alone, the other
    workers waiting for its answer. A sliding window never refuses it (our W is an upper
    bound), so a 429 means boundaries: W is the distance between that boundary and the last
    (mode "fixed"). This costs one 429 in fixed mode and nothing in sliding mode. A first
    burst that straddled a boundary counted two windows' worth; that shows as a budget that
    seems to halve at the next 429, which a fixed window one boundary distance long explains
    with an unchanged budget: then that is learned. In fixed mode the same mirror is used: it
    is safe there too (see above). A fixed window shorter than ~10 round trips can pass validation
    with a W slightly short and then drift into a 429; that is learned as a smaller budget
    and won back by probes: safe, but below the limit.

Later 429s (a budget that changes)
    With W known, a 429 tells the budget: Retry-After points at the moment the window drops
    below B again, so B = our requests sent from (T - W) up to the rejected one (another
    integration's requests, invisible here, are not in that count: B is what is left for us).
    Counting from the latest moment the window can have begun may miss up to a second's
    worth; probes at the next full window win those back. A 429 whose window holds nothing
    of ours (Retry-After longer than W, say) comes from some other limit: honoured (every
    worker waits) but not learned from; a Retry-After over 300 s is never taken for a window.
    Without a Retry-After the budget drops by a tenth.

    A budget that grows shows nothing. So after two calm windows, at a full window, the
    limiter *probes*: one request beyond B, alone, where the server's window surely holds
    all B (at a wave's end, nothing else in flight; in fixed mode within one known window).
    Accepted: B + 1, and the next round probes twice as many; a 429: the next round waits
    twice as many windows (at most 16).

Robustness
    Every request `wait()` admits should be reported once: `answered()` with the HTTP status,
    or `unanswered(reached)`. Reports are matched to the calling thread's admitted request
    (the runner's workers wait, send and report in one thread), else to the oldest request
    in flight. A thread that calls `wait()` again without reporting has its earlier request
    counted as answered then; one unreported for `forget_after_s` counts as accepted at its
    send time. A missing report can never wedge the limiter nor speed it up. A new token
    starts with an empty window; B and W carry over.

    `rate_per_minute` is a ceiling: requests at least 60/rate_per_minute seconds apart,
    whatever was learned. `pause()` (the API is unreachable) holds every worker.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
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
_LOG_KEEP_S = 2 * MAX_WINDOW_S + 10
_TICK = 1e-6


@dataclass(eq=False)
class Ticket:
    """One admitted request, as the mirror sees it."""

    seq: int
    sent: float
    epoch: int  # token generation it was sent with
    kind: str = "send"  # send | validate (a test) | probe
    state: str = "flight"  # flight | ok (counted) | rejected (429) | lost (never arrived)
    counted_at: float = 0.0  # ok: the slot is occupied until counted_at + W
    reuses: Ticket | None = None  # a validation test's: the new wave's request it follows

    @property
    def counted(self) -> bool:
        return self.state in ("flight", "ok")


@dataclass
class _Episode:
    """The 429s answering requests that were sent before the first of them came back."""

    kind: str  # first | relearn | wrong
    opened_at: float
    s_ref: float  # earliest send of a rejected request
    lo: float | None  # the moment the window frees, in send time: lo < T <= hi
    hi: float | None
    prior: tuple[int | None, float | None, float, str]
    ref_sent: float = 0.0  # "wrong": the send of the new wave's request the test followed
    external: bool = False
    unsure: int = 0  # requests the budget may be short of

    def add(self, sent: float, lo: float | None, hi: float | None) -> None:
        self.s_ref = min(self.s_ref, sent)
        if lo is None or hi is None or self.lo is None or self.hi is None:
            return
        if max(self.lo, lo) <= min(self.hi, hi):  # narrow; disjoint bounds: keep the first
            self.lo, self.hi = max(self.lo, lo), min(self.hi, hi)


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
        self._solo: Ticket | None = None  # a test or probe in flight: nobody else goes
        self._calm_since = 0.0
        self._probe_every = PROBE_FIRST
        self._probe_step = 1
        self._probe_left = 0

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
        request leaves it: said only while a worker is waiting in wait()); or (0, "")."""
        with self._lock:
            now = self._clock()
            hold = max(self._paused_until, self._held_until) - now
            if hold > 0:
                return hold, "held"
            budget, window = self.budget, self.window_s
            if not self._waiters or budget is None or window is None:
                return 0.0, ""
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
            self._held_until = -math.inf
            self._calm_since = self._clock()

    def rate_per_s(self) -> float | None:
        """The sustainable pace it believes (requests per second), None while unknown."""
        with self._lock:
            learned = None
            if self.budget is not None and self.window_s is not None:
                learned = self.budget / (self.window_s + (self._rtt or 0.0))
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
        hold = max(self._paused_until, self._held_until)
        if now < hold:
            return None, max(hold - now, _TICK)
        solo = self._solo
        if solo is not None:
            if solo.state == "flight" and now - solo.sent < self._solo_block():
                return None, None
            self._solo = None
        if now < self._last_admit + self._min_gap:
            return None, max(self._last_admit + self._min_gap - now, _TICK)
        budget, window = self.budget, self.window_s
        if budget is None or window is None:
            return self._admit(now), 0.0
        self._prune(now)
        keys = self._keys
        first = bisect.bisect_right(keys, now - window, key=_counted_at)
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
            return self._admit(now, "probe"), 0.0
        need = first + occupied - budget  # the slot that frees next enough of them
        if need < len(keys):  # (at least a tick: "now - W" and "+ W" round differently)
            return None, max(keys[need].counted_at + window - now, _TICK)
        return None, None  # held by requests in flight: after an answer

    def _admit(self, now: float, kind: str = "send", owner: Ticket | None = None) -> Ticket:
        self._seq += 1
        ticket = Ticket(self._seq, now, self._epoch, kind, reuses=owner)
        if kind == "validate":
            self._test = None
        elif kind == "probe":
            self._probe_left -= 1
        if kind != "send":
            self._solo = ticket
        self._log.append(ticket)
        self._flight[ticket.seq] = ticket
        self._last_admit = now
        return ticket

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
        if self.mode == "fixed" and not self._within_one_fixed_window(now, owner):
            return False
        if self._probe_left > 0:
            return True
        assert self.window_s is not None
        if now - self._calm_since < self._probe_every * self.window_s:
            return False
        self._probe_left = self._probe_step
        return True

    def _within_one_fixed_window(self, now: float, owner: Ticket) -> bool:
        """Do the B requests from `owner` on, and a probe sent now, surely fall in one fixed
        window, with nothing of ours before them in it? (Else the window has room anyway.)"""
        if self._prev is None or self.window_s is None:
            return False
        last_lo, last_hi, _ = self._prev
        k = math.floor((owner.sent - last_lo) / self.window_lo) if self.window_lo > 0 else 0
        if k < 0:
            return False
        begins_by = last_hi + k * self.window_s  # the latest this window can have begun
        begins_after = last_lo + k * self.window_lo
        ends_after = last_lo + (k + 1) * self.window_lo  # the earliest it can end
        i = bisect.bisect_left(self._log, owner.sent, key=_sent)
        before = self._log[i - 1] if i > 0 else None
        quiet = before is None or (before.state != "flight" and before.counted_at < begins_after)
        return quiet and owner.sent >= begins_by and now + 2 * (self._rtt or 0.0) < ends_after

    def _solo_block(self) -> float:
        return max(1.0, 4 * (self._rtt or 0.25))

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
        if status is not None:
            rtt = now - ticket.sent
            self._rtt = rtt if self._rtt is None else 0.9 * self._rtt + 0.1 * rtt
        if status == 429:
            ticket.state = "rejected"
            self._on_429(ticket, now, retry_after)
        elif lost:
            ticket.state = "lost"
            self._after_neutral(ticket)
        else:
            ticket.state = "ok"
            ticket.counted_at = now
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
            if self._probe_left <= 0:
                self._probe_step = min(self._probe_step * 2, 64)
                self._probe_every = 1
                self._calm_since = ticket.sent

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
        self._held_until = max(self._held_until, now + _hold_for(retry_after))
        lo = hi = None
        if retry_after is not None:
            lo = ticket.sent + max(retry_after - 1.0, 0.0)
            hi = ticket.sent + max(retry_after, 1.0)
        episode = self._episode
        if episode is not None and ticket.sent < episode.opened_at:
            episode.add(ticket.sent, lo, hi)
            self._recompute()
            return
        if ticket.kind == "probe" and (lo is None or lo <= ticket.sent + (self.window_s or 0)):
            self._probe_refused(ticket)  # the window was full, as expected
            return
        if episode is not None:
            self._close_episode(now)
        prior = (self.budget, self.window_s, self.window_lo, self.mode)
        if self.budget is None:
            kind = "first"
        elif ticket.kind == "validate" and self._prev is not None and lo is not None:
            # A sliding window no longer than our W (an upper bound) never refuses the first
            # reuse of the new wave's slot, a round trip after our W says it is free.
            kind = "wrong"
        else:
            kind = "relearn"
        self._episode = _Episode(kind, now, ticket.sent, lo, hi, prior)
        if ticket.reuses is not None:
            self._episode.ref_sent = ticket.reuses.sent
        self._test = None
        self._probe_left = 0
        self._recompute()

    def _probe_refused(self, ticket: Ticket) -> None:
        """The budget has not grown: probe less often."""
        self._probe_left = 0
        self._probe_step = 1
        self._probe_every = min(self._probe_every * 2, PROBE_MAX)
        self._calm_since = ticket.sent

    def _recompute(self) -> None:
        episode = self._episode
        if episode is None:
            return
        budget, window, window_lo, mode = episode.prior
        lo, hi, ref = episode.lo, episode.hi, episode.s_ref
        if episode.kind == "first":
            start = (hi if hi is not None else ref) - MAX_WINDOW_S
            first = next((t.sent for t in self._log if t.sent >= start and t.counted), ref)
            # Accepted before the window could free: all of the burst, including requests
            # sent just after the first rejected one that overtook it on the way.
            end = max(ref, min(lo, episode.opened_at)) if lo is not None else ref
            self.budget = max(1, self._count(first, end))
            if lo is None or hi is None:
                self.window_s = self.window_lo = DEFAULT_WINDOW_S
            else:
                self.window_s = max(hi - first, 0.001)
                self.window_lo = min(max(lo - first, 0.0), self.window_s)
            self.mode = "unknown"
            return
        assert budget is not None and window is not None
        if lo is None or hi is None:
            seen = self._count(ref - window, ref)
            self.budget = max(1, min(seen, budget) - max(1, budget // 10))
            return
        if episode.kind == "wrong" and self._prev is not None:
            prev_lo, prev_hi, _ = self._prev
            self.window_s = min(MAX_WINDOW_S, max(hi - prev_lo, hi - episode.ref_sent, window))
            self.window_lo = min(max(lo - prev_hi, window_lo), self.window_s)
            self.budget = max(1, self._count(prev_lo, ref))
            self.mode = "fixed"
            return
        seen = self._count(hi - window, ref)
        self.budget, self.window_s, self.window_lo, self.mode = budget, window, window_lo, mode
        if mode != "fixed" and self._after_first and seen < budget - _tolerance(budget):
            # Right after the first learning, a budget that seems to shrink at once is more
            # likely a first burst that straddled a fixed window's boundary.
            fixed = self._fixed_fit(lo, hi, ref, budget)
            if fixed is not None:
                self.window_lo, self.window_s, self.budget = fixed
                self.mode = "fixed"
                return
        most = self._count(lo - window, ref)  # from the earliest the window can have begun
        if most == 0:
            # Nothing of ours is in the window this 429 implies: some other limit answered.
            episode.external = True
            return
        # Counted from the latest moment the window can have begun: up to a second's worth
        # too few. Probes at the next full window win those back, one answer at a time.
        self.budget = max(1, seen)
        episode.unsure = most - self.budget

    def _fixed_fit(
        self, lo: float, hi: float, ref: float, budget: int
    ) -> tuple[float, float, int] | None:
        """Are this T and the first episode's the boundaries of one fixed window, which
        explains both counts with one budget (the first one two windows' worth at most)?
        Then (W lo, W hi, requests since that window began)."""
        if self._prev is None:
            return None
        prev_lo, prev_hi, prev_ref = self._prev
        w_lo, w_hi = lo - prev_hi, hi - prev_lo
        if w_lo < 0.5 or w_hi > MAX_WINDOW_S:
            return None
        seen = self._count(prev_lo, ref)  # nothing was sent from that boundary to the hold's end
        before_min = self._count(prev_hi - w_lo, prev_ref)
        before_max = self._count(prev_lo - w_hi, prev_ref)
        if seen == 0 or seen * 2 + 2 < budget or not before_min - 1 <= seen <= before_max + 1:
            return None
        return w_lo, w_hi, seen

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
        if episode.external:
            return
        if episode.lo is not None and episode.hi is not None and self.budget is not None:
            self._prev = (episode.lo, episode.hi, episode.s_ref)
        self._after_first = episode.kind == "first"
        self._test = "validate"
        self._cohort_start = max(now, self._held_until)
        self._cohort_first = None
        self._calm_since = self._cohort_start
        self._probe_every = PROBE_FIRST
        self._probe_step = 1
        self._probe_left = episode.unsure


def _counted_at(ticket: Ticket) -> float:
    return ticket.counted_at


def _sent(ticket: Ticket) -> float:
    return ticket.sent


def _hold_for(retry_after: float | None) -> float:
    return 1.0 if retry_after is None else retry_after


def _tolerance(budget: int) -> int:
    return max(2, budget // 10)
