"""When a request arrives: the `Ticket` kept for each admitted request, and the round
trips (`RoundTrips`) that bound when the server can have counted it.

The server counts a request somewhere between its send and its answer. The fastest round
trip seen (X) is the least both ways take; times of arrival are kept less the shortest way
there, so a request arrives, in those terms, no earlier than its send and no later than its
answer less X, and one on its way as late as its send plus the spread of recent round trips.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from jobrunner.limiter.constants import RTT_SAMPLES, RTT_SAMPLES_MIN


@dataclass(eq=False)
class Ticket:
    """One admitted request, as the mirror sees it."""

    seq: int
    sent: float
    epoch: int  # token generation it was sent with
    kind: str = "send"  # send | validate (a test) | edge (a boundary's test) | probe
    state: str = "flight"  # flight | ok (counted) | rejected (429) | lost (never arrived)
    counted_at: float = 0.0  # ok: the latest it can have arrived (see RoundTrips); its slot
    # is occupied until counted_at + W
    answered: float | None = None
    reuses: Ticket | None = None  # validate: the new wave's request it follows; probe: the
    # oldest request of the full window it was sent into
    boundary: int | None = None  # edge: the fixed window boundary it tests
    window: int | None = None  # fixed: the latest boundary it was surely sent after

    @property
    def counted(self) -> bool:
        return self.state in ("flight", "ok")


class RoundTrips:
    """The round trips of answered requests: their moving average, the recent ones (their
    spread) and the fastest seen (X)."""

    def __init__(self) -> None:
        self.average: float | None = None
        self.recent: deque[float] = deque(maxlen=RTT_SAMPLES)
        self.fastest = math.inf

    def add(self, rtt: float) -> None:
        self.average = rtt if self.average is None else 0.9 * self.average + 0.1 * rtt
        self.recent.append(rtt)
        self.fastest = min(self.fastest, rtt)

    def offset(self, window_assumed: bool) -> float:
        """The fastest round trip seen: the shortest way there plus the shortest way back,
        the part of every round trip that is not spent waiting. Times of arrival are kept
        less the shortest way there, so a request arrives, in those terms, no earlier than
        its send and no later than its answer less this. (0 while too few answers are
        known, or while W is only assumed: then a slot is held until the answer.)"""
        if len(self.recent) < RTT_SAMPLES_MIN or window_assumed:
            return 0.0
        return self.fastest

    def spread(self, window_assumed: bool) -> float:
        """How much later than its send a request on its way may arrive, in those terms."""
        if len(self.recent) < RTT_SAMPLES_MIN:
            return self.average or 1.0
        return max(self.recent) - self.offset(window_assumed)

    def arrives_by(self, ticket: Ticket, window_assumed: bool) -> float:
        """The latest a request can have arrived, in those terms."""
        if ticket.answered is not None:
            return max(ticket.sent, ticket.answered - self.offset(window_assumed))
        return ticket.sent + self.spread(window_assumed)


def _counted_at(ticket: Ticket) -> float:
    return ticket.counted_at


def _sent(ticket: Ticket) -> float:
    return ticket.sent
