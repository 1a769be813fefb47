"""A simulated rate-limited server and workers driving a WindowLimiter on a fake clock.

Discrete events, no threads, no sleeps: a 10-minute run takes a fraction of a second.
The server counts a request when it arrives (after `fwd` seconds) and answers `back`
seconds later, like the emulator (which sleeps its latency before the rate-limit check).
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobrunner.limiter import WindowLimiter


class FakeClock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class SimServer:
    """B requests per W seconds, sliding or fixed (resets on multiples of W), as the emulator.

    Rejected requests cost nothing. Retry-After is whole seconds rounded up, at least 1.
    `budget` and `window` may change at any time.
    """

    def __init__(self, budget: int, window: float, mode: str = "sliding") -> None:
        self.budget = budget
        self.window = window
        self.mode = mode
        self.admitted: deque[float] = deque()
        self.fixed_index: int | None = None
        self.fixed_count = 0
        # Drills: what a 429 says instead of the true Retry-After (None: no header at all),
        # and 429s (with these Retry-After values) for the next requests, whatever the count.
        self.retry_after: Callable[[int], int | None] | None = None
        self.refuse: list[int] = []

    def admit(self, now: float) -> tuple[bool, int | None]:
        """(True, None) if admitted, else (False, the Retry-After in whole seconds or None)."""
        if self.refuse:
            return False, self.refuse.pop(0)
        wait = self._admit(now)
        if not wait:
            return True, None
        return False, self.retry_after(wait) if self.retry_after is not None else wait

    def _admit(self, now: float) -> int:
        if self.mode == "fixed":
            index = math.floor(now / self.window)
            if index != self.fixed_index:
                self.fixed_index, self.fixed_count = index, 0
            if self.fixed_count < self.budget:
                self.fixed_count += 1
                return 0
            return max(1, math.ceil((index + 1) * self.window - now))
        window = self.admitted
        while window and window[0] <= now - self.window:
            window.popleft()
        if len(window) < self.budget:
            window.append(now)
            return 0
        oldest = window[len(window) - self.budget]
        return max(1, math.ceil(oldest + self.window - now))


@dataclass
class Request:
    sent: float
    kind: str = "send"
    arrived: float = 0.0
    answered: float = 0.0
    status: int = 0


@dataclass
class Result:
    requests: list[Request] = field(default_factory=list)
    created: int = 0
    limiter: Any = None
    foreign: int = 0  # another integration's requests the server accepted

    @property
    def rejected(self) -> int:
        return sum(1 for r in self.requests if r.status == 429)

    @property
    def accepted(self) -> list[Request]:
        return [r for r in self.requests if r.status == 200]

    @property
    def elapsed(self) -> float:
        return max(r.answered for r in self.requests) - min(r.sent for r in self.requests)

    def strict_ratio(self, budget: int, window: float) -> float:
        ideal = max(0, self.created - budget) / budget * window
        return ideal / self.elapsed

    def max_in_window(self, window: float, start: float = -math.inf) -> int:
        """Most requests the server accepted in any `window` seconds (by arrival) after start."""
        times = sorted(r.arrived for r in self.accepted if r.arrived >= start)
        best, i = 0, 0
        for j, t in enumerate(times):
            while times[i] <= t - window:
                i += 1
            best = max(best, j - i + 1)
        return best


def simulate(
    server: SimServer,
    users: int,
    *,
    workers: int = 8,
    fwd: tuple[float, float] = (0.25, 0.35),
    back: tuple[float, float] = (0.0, 0.002),
    start: float = 1000.0,
    seed: int = 1,
    limiter: Callable[[FakeClock], Any] | None = None,
    at: list[tuple[float, Callable[[], None]]] | None = None,
    until: float | None = None,
    foreign: tuple[float, float] | None = None,
    report: bool | Callable[[Request], bool] = True,
    slow: tuple[float, tuple[float, float]] | None = None,
) -> Result:
    """`users` requests to get accepted by `workers` workers through the limiter.

    `at`: (seconds after start, action) pairs, e.g. halving the server's budget mid-run.
    `until`: stop sending this many seconds after start even if users remain.
    `foreign`: (seconds after start, requests per second): another integration on the same
    token, from then on, evenly spaced; invisible to the limiter, counted by the server.
    `report`: False (or a predicate on the request): answers the caller forgets to report.
    `slow`: (seconds after start, fwd): until then the way there takes `fwd` instead (a
    client starved of CPU at its start, say).
    """
    rng = random.Random(seed)
    clock = FakeClock(start)
    lim = limiter(clock) if limiter else WindowLimiter(clock=clock)
    result = Result(limiter=lim)
    events: list[tuple[float, int, str, Any]] = []
    seq = 0

    def push(when: float, kind: str, data: Any) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (when, seq, kind, data))

    for when, action in at or []:
        push(start + when, "action", action)
    generation = [0] * workers
    waiting: set[int] = set()
    in_flight = 0

    def try_send(worker: int, now: float) -> None:
        nonlocal in_flight
        if result.created + in_flight >= users or (until is not None and now >= start + until):
            return
        ticket, delay = lim.try_acquire()
        if ticket is None:
            generation[worker] += 1
            if delay is None:
                waiting.add(worker)
            else:
                push(now + max(delay, 1e-6), "wake", (worker, generation[worker]))
            return
        in_flight += 1
        request = Request(now, ticket.kind)
        result.requests.append(request)
        way = slow[1] if slow is not None and now < start + slow[0] else fwd
        push(now + rng.uniform(*way), "arrive", (worker, ticket, request))

    for w in range(workers):
        push(start, "wake", (w, 0))
    if foreign is not None:
        push(start + foreign[0], "foreign", 1.0 / foreign[1])
    result.foreign = 0
    while events:
        now, _, kind, data = heapq.heappop(events)
        clock.now = now
        if kind == "action":
            data()
        elif kind == "foreign":
            if server.admit(now)[0]:
                result.foreign += 1
            if result.created < users:
                push(now + data, "foreign", data)
        elif kind == "wake":
            worker, gen = data
            if gen == generation[worker]:
                try_send(worker, now)
        elif kind == "arrive":
            worker, ticket, request = data
            request.arrived = now
            accepted, wait = server.admit(now)
            request.status = 200 if accepted else 429
            push(now + rng.uniform(*back), "answer", (worker, ticket, request, wait))
        elif kind == "answer":
            worker, ticket, request, wait = data
            request.answered = now
            in_flight -= 1
            if request.status == 200:
                result.created += 1
            if report is True or (report is not False and report(request)):
                lim.report(ticket, request.status, wait)
            woken, waiting_now = [worker], sorted(waiting)
            waiting.clear()
            for w in [*woken, *waiting_now]:
                generation[w] += 1
                push(now, "wake", (w, generation[w]))
    return result


# The goal cases, today's limiter (bench/pacer_v2.py) beside this one:
#     .venv/bin/python tests/limiter_sim.py [--seeds 5] [--phases 8]
CASES = [  # (name, users, budget, window, mode)
    ("1,500 people, 300 per 60 s, sliding", 1500, 300, 60.0, "sliding"),
    ("600 people, 300 per 60 s, sliding", 600, 300, 60.0, "sliding"),
    ("600 people, 60 per 6 s, sliding", 600, 60, 6.0, "sliding"),
    ("600 people, 60 per 6 s, fixed", 600, 60, 6.0, "fixed"),
]


def _main() -> None:
    import argparse
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(description="the goal cases in the simulation")
    parser.add_argument("--seeds", type=int, default=5, help="latency draws per case")
    parser.add_argument("--phases", type=int, default=8, help="starts across a fixed window")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import pacer_v2  # today's limiter, kept for this comparison

    limiters = [("before (v2)", pacer_v2.WindowLimiter), ("now", WindowLimiter)]
    print(
        f"8 workers, 250-350 ms to the server; {args.seeds} seeds, fixed windows started at "
        f"{args.phases} phases each"
    )
    print("| case | limiter | strict mean | strict min | strict max | 429s mean | 429 share max |")
    print("|---|---|---|---|---|---|---|")
    for name, users, budget, window, mode in CASES:
        phases = [i * window / args.phases for i in range(args.phases)] if mode == "fixed" else [0]
        for label, make in limiters:
            ratios, rejected, shares = [], [], []
            for seed in range(1, args.seeds + 1):
                for phase in phases:
                    result = simulate(
                        SimServer(budget, window, mode),
                        users,
                        seed=seed,
                        start=1000 * window + phase,
                        limiter=lambda clock, make=make: make(clock=clock),
                    )
                    ratios.append(result.strict_ratio(budget, window))
                    rejected.append(result.rejected)
                    shares.append(result.rejected / len(result.requests))
            print(
                f"| {name} | {label} | {sum(ratios) / len(ratios):.3f} | {min(ratios):.3f} | "
                f"{max(ratios):.3f} | {sum(rejected) / len(rejected):.1f} | {max(shares):.2%} |"
            )


if __name__ == "__main__":
    _main()
