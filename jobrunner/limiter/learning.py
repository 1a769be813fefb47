"""What answers teach a WindowLimiter: the reports of admitted requests, and the 429s from
which B, W and the kind of window are learned (see "The first 429", "Fixed windows" and
"Later 429s" in the package docstring).

`_Learning` settles each reported request (its slot, its round trip, a test's or a probe's
verdict). A 429 opens an episode (`_Episode`, in state.py: the 429s answering requests sent
before the first of them came back); what the limiter believes is recomputed from it as each
of its 429s comes in, and settled when the last request it may concern is answered.
"""

from __future__ import annotations

import bisect
import math
import threading

from jobrunner.limiter.arrivals import Ticket, _counted_at
from jobrunner.limiter.constants import DEFAULT_WINDOW_S, MAX_WINDOW_S, PROBE_FIRST, PROBE_MAX
from jobrunner.limiter.grid import _grid_from
from jobrunner.limiter.state import _Episode, _LimiterState


class _Learning(_LimiterState):
    """A WindowLimiter's answers and what it learns from them."""

    # -- answers ---------------------------------------------------------------------------

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
            self._trips.add(now - ticket.sent)
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

    # -- what an episode of 429s says --------------------------------------------------------

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
        grid = _grid_from((prev_lo, prev_hi), (lo, hi))
        if grid is None:
            return False
        self._grid = grid
        self.window_lo, self.window_s, self.budget = grid.w_lo, grid.w_hi, least
        self.mode = "fixed"
        episode.unsure = most - least
        return True

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


def _hold_for(retry_after: float | None) -> float:
    return 1.0 if retry_after is None else retry_after


def _tolerance(budget: int) -> int:
    return max(2, budget // 10)
