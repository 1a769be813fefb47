"""WindowLimiter on an injected clock: no sleeps, no wall-clock margins.

Most tests drive the limiter with a simulated rate-limited server (tests/limiter_sim.py):
8 workers, 250-350 ms to the server and an instant answer, as the emulator does.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest
from limiter_sim import FakeClock, Result, SimServer, simulate

from jobrunner import limiter
from jobrunner.limiter import MAX_WINDOW_S, WindowLimiter, _Grid

START = 1000.0


def per_window(result: Result, start: float, window: float, count: int) -> list[tuple[int, int]]:
    """(accepted, answered 429) for `count` windows from `start`, by arrival."""
    rows = []
    for k in range(count):
        a, b = start + k * window, start + (k + 1) * window
        got = [r for r in result.requests if a <= r.arrived < b]
        rows.append((sum(r.status == 200 for r in got), sum(r.status == 429 for r in got)))
    return rows


def after_learning(result: Result) -> list[Any]:
    """Requests sent after the first 429 came back."""
    first = min(r.answered for r in result.requests if r.status == 429)
    return [r for r in result.requests if r.sent > first]


# ---- learning from the first 429 ----------------------------------------------------------


def test_the_first_429_teaches_budget_and_window_of_a_sliding_window() -> None:
    result = simulate(SimServer(300, 60.0), 3000)
    lim = result.limiter
    assert lim.budget == 300
    assert 60.0 <= lim.window_s <= 61.0  # Retry-After is rounded up: never shorter
    assert lim.mode == "unknown"
    # One 429 per worker in flight when the first came back, then at most a few probes.
    assert result.rejected <= 8 + 4
    assert all(r.kind == "probe" for r in after_learning(result) if r.status == 429)
    assert result.strict_ratio(300, 60.0) >= 0.95


def test_the_second_window_follows_the_first_burst() -> None:
    """600 people at 300/min: the second 300 go as the first 300 leave the window."""
    result = simulate(SimServer(300, 60.0), 600)
    assert result.strict_ratio(300, 60.0) >= 0.8
    assert result.elapsed < 60.0 + 11.5 + 1.0  # window + the first burst + a round trip
    assert result.rejected == 8


def test_a_six_second_window() -> None:
    result = simulate(SimServer(60, 6.0), 3000)
    assert result.limiter.budget == 60
    assert 6.0 <= result.limiter.window_s <= 6.5
    assert result.strict_ratio(60, 6.0) >= 0.9
    assert result.rejected <= 0.01 * 3000


@pytest.mark.parametrize(("budget", "window"), [(5, 1.0), (30, 10.0), (600, 300.0)])
def test_windows_from_one_second_to_five_minutes(budget: int, window: float) -> None:
    result = simulate(SimServer(budget, window), 8 * budget + 10)
    lim = result.limiter
    assert lim.budget == budget
    assert window - 0.1 <= lim.window_s <= window + 1.0  # (0.1: the jitter of the way there)
    late = [r for r in after_learning(result) if r.status == 429]
    assert all(r.kind == "probe" for r in late)
    assert result.max_in_window(window) <= budget


def test_requests_overtaking_each_other_still_count_in_the_first_budget() -> None:
    """8 requests sent at the same instant, 5 accepted: the budget is 5, not fewer."""
    result = simulate(SimServer(5, 1.0), 60, start=START + 0.6)
    assert result.limiter.budget == 5


# ---- fixed windows ----------------------------------------------------------------------


@pytest.mark.parametrize("phase", [0.0, 13.0, 30.0, 50.0, 55.0])
def test_a_fixed_window_whatever_the_phase_of_the_first_burst(phase: float) -> None:
    """Boundaries on multiples of 60 s; the run starts `phase` s into a window (at 50 s and
    55 s its first burst straddles a boundary and counts requests of two windows)."""
    server = SimServer(300, 60.0, mode="fixed")
    result = simulate(server, 3000, start=60.0 * 20 + phase)
    lim = result.limiter
    assert lim.budget == 300
    assert 59.7 <= lim.window_s <= 62.0  # (at phase 0 a sliding estimate is as good)
    assert result.strict_ratio(300, 60.0) >= 0.9
    assert result.rejected <= 0.01 * len(result.requests)


def test_a_fixed_window_is_recognised_by_the_validation_test() -> None:
    """Started 40 s into a 60 s window: the first 429 says 'free in 20 s'. The first request
    that reuses a slot of the next wave goes alone; its 429 points at the next boundary, one
    window after the first 429s pointed: the window is fixed, learned with that one 429."""
    result = simulate(SimServer(300, 60.0, mode="fixed"), 1200, start=60.0 * 20 + 40.0)
    lim = result.limiter
    assert lim.mode == "fixed"
    assert 59.0 <= lim.window_lo <= 60.0 <= lim.window_s <= 61.0
    validations = [r for r in result.requests if r.kind == "validate"]
    assert [r.status for r in validations] == [429]  # (once fixed, no more of them)
    test = validations[0]  # alone: nothing else on the way to overtake or be overtaken
    assert not [
        r
        for r in result.requests
        if r.sent < test.answered and r.answered > test.sent and r != test
    ]
    first_wave = min(r.answered for r in result.requests if r.status == 429) + 1.0
    assert [r.kind for r in result.requests if r.status == 429 and r.sent > first_wave] == [
        "validate"
    ]


def test_a_fixed_window_s_boundaries_from_where_some_of_them_lie() -> None:
    """Each observation says where one boundary lies (in send time); together they give the
    phase and the length, the more closely the further apart they are."""
    grid = _Grid(0.5, MAX_WINDOW_S)
    assert grid.observe(0, 100.0, 101.0) and grid.observe(1, 160.2, 161.0)
    assert (grid.w_lo, grid.w_hi) == pytest.approx((59.2, 61.0))
    assert grid.bounds(2) == pytest.approx((219.4, 222.0))  # 2 x boundary 1 - boundary 0
    assert grid.observe(5, 400.0, 400.3)  # four windows on: the length to 0.25 s
    assert (grid.w_lo, grid.w_hi) == pytest.approx((59.8, 60.025))
    assert grid.bounds(6) == pytest.approx((459.8, 460.325))
    assert (grid.window_of(470.0), grid.nearest(519.0)) == (6, 7)
    # An answer beyond the budget (soft: a budget that grew would explain it too) gives way
    # to a Retry-After that contradicts it; a Retry-After that contradicts the others is
    # refused, and changes nothing.
    assert grid.observe(6, -math.inf, 459.9, soft=True)
    assert grid.bounds(6) == pytest.approx((459.8, 459.9))
    assert grid.observe(6, 460.0, 460.4)
    assert grid.bounds(6) == pytest.approx((460.0, 460.325))
    before = (grid.w_lo, grid.w_hi, grid.bounds(7))
    assert not grid.observe(7, 600.0, 601.0)
    assert (grid.w_lo, grid.w_hi, grid.bounds(7)) == before


def window_starts(result: Result, budget: int, window: float, start: float) -> list[tuple]:
    """For each fixed window (boundaries on multiples of `window`) after `start` that got
    the whole budget: (its index, first arrival, last arrival), both from its boundary."""
    rows = []
    k = math.ceil(start / window)
    while k * window < max(r.arrived for r in result.requests):
        arrived = sorted(
            r.arrived - k * window for r in result.accepted if k <= r.arrived / window < k + 1
        )
        if len(arrived) == budget:
            rows.append((k, arrived[0], arrived[-1]))
        k += 1
    return rows


@pytest.mark.parametrize("phase", [0.8, 2.0, 3.5, 4.7])
def test_each_fixed_window_s_budget_goes_the_moment_it_opens(phase: float) -> None:
    """60 per 6 s, fixed: once learned, each window's 60 go at once, from its boundary (as
    fast as 8 workers at ~300 ms go: ~2.3 s), instead of following the last window's pace."""
    start = 6.0 * 1000 + phase
    result = simulate(SimServer(60, 6.0, mode="fixed"), 900, start=start)
    assert result.limiter.mode == "fixed"
    rows = window_starts(result, 60, 6.0, start + 4 * 6.0)  # from the fifth window on
    assert len(rows) >= 8
    for _, first, last in rows:
        assert first <= 0.6 and last <= 3.3
    assert result.strict_ratio(60, 6.0) >= 0.95


@pytest.mark.parametrize("phase", [50.0, 55.0])
def test_a_first_burst_across_a_boundary_is_read_as_one_fixed_window(phase: float) -> None:
    """Started 50 or 55 s into a 60 s window: the first burst gets the end of that window
    and the whole next one (the budget looks like 300 and more); the next wave is refused
    after 300, its Retry-After pointing one window after the first 429s': fixed, 300."""
    result = simulate(SimServer(300, 60.0, mode="fixed"), 3000, start=60.0 * 20 + phase)
    lim = result.limiter
    assert (lim.mode, lim.budget) == ("fixed", 300)
    assert 59.5 <= lim.window_lo <= 60.0 <= lim.window_s <= 60.5
    first_burst = min(r.answered for r in result.requests if r.status == 429) + 1.0
    second = min(r.answered for r in result.requests if r.status == 429 and r.sent > first_burst)
    late = [r for r in result.requests if r.status == 429 and r.sent > second + 1.0]
    assert len(late) <= 8  # tests of the boundaries, growth probes
    assert result.strict_ratio(300, 60.0) >= 0.95


def test_a_refused_boundary_test_holds_no_one() -> None:
    """A boundary's test sent before the window began is refused, Retry-After pointing at
    the boundary: expected, so the window's budget still goes at the boundary, not a
    rounded-up second after the refusal."""
    start = 6.0 * 1000 + 2.0
    result = simulate(SimServer(60, 6.0, mode="fixed"), 900, start=start)
    refused = [r for r in result.requests if r.kind == "edge" and r.status == 429]
    assert refused
    for test in refused:
        boundary = math.ceil(test.arrived / 6.0) * 6.0
        after = min(r.arrived for r in result.accepted if r.arrived >= boundary)
        assert after < test.arrived + 1.0 and after - boundary <= 0.6


@pytest.mark.parametrize("phase", [0.75, 3.0])
def test_boundaries_known_too_loosely_are_given_up(
    phase: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Boundary tests sent late in their intervals are almost always accepted: they lower
    the upper ends, never raise the lower ones, and the intervals widen window by window
    until a window's requests could land in two. Before that stalls the run, the limiter
    goes back to the sliding mirror (safe in a fixed window too)."""
    monkeypatch.setattr(limiter, "EDGE_AT", 0.9)
    result = simulate(SimServer(60, 6.0, mode="fixed"), 600, start=6.0 * 1000 + phase)
    assert result.limiter.mode == "unknown"
    assert result.strict_ratio(60, 6.0) >= 0.8


def test_a_window_taken_for_fixed_that_slides_after_all_is_given_up() -> None:
    """Learned as fixed; then the server's window slides: sending each window's budget at
    its boundary is refused (the last window's requests still count), those 429s point at
    no boundary: back to the sliding mirror, at the limit, with a few 429s."""
    server = SimServer(60, 6.0, mode="fixed")

    def slide() -> None:
        server.mode = "sliding"

    result = simulate(server, 1500, start=6.0 * 1000 + 2.0, at=[(60.0, slide)])
    assert result.limiter.mode == "unknown"
    late = [r for r in result.requests if r.sent > 6.0 * 1000 + 2.0 + 60.0 and r.status == 429]
    assert len(late) <= 12
    assert result.strict_ratio(60, 6.0) >= 0.9


def test_a_sliding_window_passes_the_validation_test() -> None:
    result = simulate(SimServer(300, 60.0), 1200)
    validations = [r for r in result.requests if r.kind == "validate"]
    assert validations and all(r.status == 200 for r in validations)
    assert result.limiter.mode == "unknown"


@pytest.mark.parametrize(("budget", "window"), [(30, 10.0), (600, 300.0)])
def test_fixed_windows_of_other_lengths(budget: int, window: float) -> None:
    result = simulate(SimServer(budget, window, mode="fixed"), 8 * budget, start=window * 7.4)
    assert result.rejected <= 8 + 8 + 4
    assert result.strict_ratio(budget, window) >= 0.85


# ---- a budget that changes ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sliding", "fixed"])
def test_a_halved_budget_is_followed_within_two_windows(mode: str) -> None:
    server = SimServer(300, 60.0, mode=mode)
    change = 4.5 * 60.0 + 7.0

    def halve() -> None:
        server.budget = 150

    result = simulate(server, 3600, start=60.0 * 20, at=[(change, halve)])
    assert result.limiter.budget == 150
    windows = per_window(result, 60.0 * 20 + change, 60.0, 6)
    assert sum(rejected for _, rejected in windows[:1]) <= 10  # the requests in flight
    for accepted, rejected in windows[1:]:  # from the second window on: at the new limit
        assert accepted >= 0.9 * 150 and rejected <= 1  # (a probe)


def test_a_halved_six_second_budget_is_followed_within_two_windows() -> None:
    """From the second window after the change on: at 90% of the new budget or more, and
    at most a 429 a window. (Each window's 30 go in one burst of about a second, and the
    bursts come a little more than 6 s apart: a 6 s span cut through two bursts holds less
    than 30, the next one more. So the pace is measured from there to the end of the run.)"""
    server = SimServer(60, 6.0)

    def halve() -> None:
        server.budget = 30

    result = simulate(server, 900, at=[(28.4, halve)])
    assert result.limiter.budget == 30
    since = START + 28.4 + 2 * 6.0
    arrived = [r.arrived for r in result.accepted if r.arrived >= since]
    assert len(arrived) / (max(arrived) - since) >= 0.9 * 30 / 6.0
    windows = per_window(result, since, 6.0, math.floor((max(arrived) - since) / 6.0))
    for accepted, rejected in windows:
        assert accepted >= 0.75 * 30 and rejected <= 1


@pytest.mark.parametrize("seed", range(1, 11))
def test_a_halved_budget_whose_retry_after_spans_the_whole_window(seed: int) -> None:
    """30 per 6 s halved: each wave's 16th request is refused with Retry-After ~6 s (until its
    first leaves). Rounded up, T - W may fall after the whole wave: counted from the earliest
    moment the window can have begun, it is the budget, not some other limit."""
    for when in (19.0, 20.0, 21.3, 22.7):
        server = SimServer(30, 6.0)

        def halve(server: SimServer = server) -> None:
            server.budget = 15

        result = simulate(server, 400, at=[(when, halve)], seed=seed)
        assert result.limiter.budget == 15
        late = [r for r in result.requests if r.sent > START + when + 12.0 and r.status == 429]
        assert all(r.kind == "probe" for r in late)


def test_another_integration_sharing_the_token_leaves_a_smaller_budget() -> None:
    """From 100 s on, someone else sends 20 requests per 6 s window on our token, evenly
    spaced, invisible to us: we settle near the 40 left, and their requests, landing where
    our mirror cannot see them, cost us a 429 now and then (under one per two windows)."""
    result = simulate(SimServer(60, 6.0), 3000, foreign=(100.0, 20 / 6.0))
    assert 30 <= result.limiter.budget <= 45
    late = [r for r in result.requests if r.sent > START + 160 and r.status == 429]
    windows = (result.elapsed - 160) / 6.0
    assert len(late) <= windows / 2
    accepted = [n for n, _ in per_window(result, START + 130, 6.0, 30)]
    assert 35 <= sum(accepted) / len(accepted) <= 45 and min(accepted) >= 25


def test_a_budget_that_grows_is_found_by_probes() -> None:
    server = SimServer(150, 60.0)

    def grow() -> None:
        server.budget = 300

    result = simulate(server, 6000, at=[(210.0, grow)])
    assert result.limiter.budget >= 290
    probes = [r for r in result.requests if r.kind == "probe"]
    assert sum(r.status == 200 for r in probes) >= 140
    assert sum(r.status == 429 for r in probes) <= 8


def test_probes_stay_rare_when_the_budget_does_not_grow() -> None:
    result = simulate(SimServer(300, 60.0), 9000)  # 30 windows
    probes = [r for r in result.requests if r.kind == "probe"]
    assert 1 <= len(probes) <= 6
    assert result.limiter.budget == 300


def test_no_probes_when_disabled() -> None:
    result = simulate(
        SimServer(300, 60.0), 3000, limiter=lambda c: WindowLimiter(clock=c, probe=False)
    )
    assert not [r for r in result.requests if r.kind == "probe"]
    assert result.rejected == 8


# ---- Retry-After: 0, absent, longer than the window ---------------------------------------


def test_retry_after_zero() -> None:
    """A server that says 'retry in 0 s' (it rounds down): learned all the same."""
    server = SimServer(10, 1.0, mode="fixed")
    server.retry_after = lambda wait: 0
    result = simulate(server, 300)
    assert result.limiter.budget == 10
    assert 1.0 <= result.limiter.window_s <= 2.0
    assert result.rejected <= 8 + 8


def test_retry_after_longer_than_the_window_is_waited_out_not_learned() -> None:
    """Learned 60 per 6 s; then one 429 says 20 s (some other limit): every worker waits
    20 s (nothing reaches the server until 20 s after it refused that request), and the pace
    after it is the learned one."""
    server = SimServer(60, 6.0)
    result = simulate(server, 1500, at=[(40.0, lambda: server.refuse.append(20))])
    lim = result.limiter
    assert (lim.budget, lim.mode) == (60, "unknown") and lim.window_s <= 6.5
    stray = next(r for r in result.requests if r.answered > START + 40.0 and r.status == 429)
    assert stray.kind == "send"
    after = [r for r in result.requests if r.sent > stray.answered]
    assert min(r.arrived for r in after) >= stray.arrived + 20.0
    assert per_window(result, stray.arrived + 20.0, 6.0, 5)[1:] == [(60, 0)] * 4


def test_retry_after_beyond_five_minutes_is_honoured_but_never_a_window() -> None:
    server = SimServer(300, 60.0)
    server.refuse.append(int(MAX_WINDOW_S) + 600)  # the very first request
    result = simulate(server, 900)
    first = result.requests[0]
    assert first.status == 429
    later = [r for r in result.requests if r.sent > first.sent]
    assert min(r.sent for r in later) >= first.answered + 900.0
    assert result.limiter.budget == 300 and result.limiter.window_s <= 61.0


def test_a_429_without_retry_after_assumes_the_documented_minute() -> None:
    server = SimServer(300, 60.0)
    server.retry_after = lambda wait: None
    result = simulate(server, 1500)
    assert result.limiter.budget == 300
    assert result.limiter.window_s == 60.0
    assert result.rejected <= 8 + 10


# ---- the ceiling, pauses, tokens, forgotten reports ---------------------------------------


def test_rate_per_minute_is_a_ceiling_even_above_what_was_learned() -> None:
    result = simulate(SimServer(300, 60.0), 600, limiter=lambda c: WindowLimiter(120, clock=c))
    sends = sorted(r.sent for r in result.requests)
    assert min(b - a for a, b in zip(sends, sends[1:], strict=False)) >= 0.5 - 1e-9
    assert result.rejected == 0
    assert result.limiter.rate_per_s() == pytest.approx(2.0)


def test_learning_never_goes_above_the_ceiling() -> None:
    result = simulate(SimServer(300, 60.0), 1200, limiter=lambda c: WindowLimiter(200, clock=c))
    assert result.limiter.rate_per_s() <= 200 / 60
    assert result.max_in_window(60.0) <= 200 + 1


def test_pause_holds_every_worker_and_says_how_long() -> None:
    clock = FakeClock(START)
    lim = WindowLimiter(clock=clock)
    lim.pause(5.0)
    assert lim.wait_remaining() == (pytest.approx(5.0), "held")
    assert lim.try_acquire() == (None, pytest.approx(5.0))
    clock.now += 5.0
    assert lim.try_acquire()[0] is not None
    assert lim.wait_remaining() == (0.0, "")


def learned(budget: int = 3, window: float = 10.0) -> tuple[FakeClock, WindowLimiter]:
    """A limiter that has learned `budget` per `window` s from a 429 (Retry-After = window)."""
    clock = FakeClock(START)
    lim = WindowLimiter(clock=clock, probe=False)
    tickets = [lim.try_acquire()[0] for _ in range(budget + 1)]
    for ticket in tickets[:-1]:
        lim.report(ticket, 200)
    lim.report(tickets[-1], 429, window)
    assert (lim.budget, lim.window_s) == (budget, window)
    return clock, lim


def test_a_full_window_waits_for_its_oldest_request_to_leave() -> None:
    clock, lim = learned(3, 10.0)  # 3 accepted at START, answered at once
    clock.now += 9.9
    assert lim.try_acquire() == (None, pytest.approx(0.1))  # Retry-After
    clock.now += 0.1
    wave = [lim.try_acquire()[0] for _ in range(3)]  # their slots free at START + 10
    assert all(wave) and lim.try_acquire() == (None, None)  # held by requests in flight
    clock.now += 0.3
    for ticket in wave:
        lim.report(ticket, 200)
    assert lim.try_acquire() == (None, pytest.approx(10.0))  # W after their answers
    clock.now += 10.0
    test, _ = lim.try_acquire()  # the first reuse of this wave's slot goes alone...
    assert test is not None and test.kind == "validate"
    assert lim.try_acquire() == (None, None)  # ...until it is answered
    clock.now += 0.3
    lim.report(test, 200)
    assert lim.try_acquire()[0] and lim.try_acquire()[0]  # the wave's other two slots
    assert lim.try_acquire() == (None, pytest.approx(10.0))  # then W after the test's answer


def test_the_validation_test_waits_for_requests_on_their_way() -> None:
    clock, lim = learned(3, 10.0)
    clock.now += 10.0
    wave = [lim.try_acquire()[0] for _ in range(3)]
    clock.now += 0.3
    lim.report(wave[0], 200)
    lim.report(wave[1], 200)
    clock.now += 10.0  # the first slot of the new wave is free; wave[2] is still on its way
    assert lim.try_acquire() == (None, None)
    lim.report(wave[2], 200)
    test, _ = lim.try_acquire()
    assert test is not None and test.kind == "validate"


def test_a_new_token_starts_with_an_empty_window() -> None:
    clock, lim = learned(3, 10.0)
    clock.now += 10.0
    wave = [lim.try_acquire()[0] for _ in range(3)]
    for ticket in wave[:2]:
        lim.report(ticket, 200)
    old = wave[2]  # still on its way when the token changes
    assert lim.try_acquire()[0] is None  # the window is full
    lim.new_token()
    tickets = [lim.try_acquire()[0] for _ in range(3)]
    assert all(tickets)
    assert lim.try_acquire()[0] is None  # B carried over
    lim.report(old, 429, 50)  # the old token's answer: neither learned nor held
    assert (lim.budget, lim.window_s, lim.wait_remaining()) == (3, 10.0, (0.0, ""))
    assert lim.limited == 2


def test_unanswered_requests_that_never_arrived_cost_nothing() -> None:
    clock, lim = learned(2, 10.0)
    clock.now += 10.001
    lost, _ = lim.try_acquire()
    lim.report_unanswered(lost, reached=False)
    timed_out, _ = lim.try_acquire()
    assert timed_out is not None
    lim.report_unanswered(timed_out, reached=True)  # counted: it may have arrived
    clock.now += 1.0
    assert lim.try_acquire()[0] is not None  # the other slot
    assert lim.try_acquire()[0] is None


def test_a_request_never_reported_is_counted_at_its_send_time() -> None:
    clock, lim = learned(1, 10.0)
    clock.now += 10.001
    forgotten, _ = lim.try_acquire()
    assert forgotten is not None
    clock.now += 30.0
    assert lim.try_acquire() == (None, None)  # maybe still in flight
    clock.now += lim.forget_after_s
    assert lim.try_acquire()[0] is not None  # counted at its send, long out of the window


def test_a_thread_that_waits_again_without_reporting_has_its_request_counted() -> None:
    clock = FakeClock(START)
    lim = WindowLimiter(
        clock=clock, sleep=lambda stop, s: bool(setattr(clock, "now", clock.now + s))
    )
    stop = threading.Event()
    assert lim.wait(stop)
    lim.answered(429, 10.0)  # learns 0 accepted... at least 1
    assert lim.budget == 1
    clock.now += 10.001
    assert lim.wait(stop)  # sent, never reported
    started = clock.now
    assert lim.wait(stop)  # the forgotten one was counted when this call began
    assert clock.now == pytest.approx(started + 10.0, abs=0.3)


def test_stop_while_waiting_takes_no_slot() -> None:
    clock, lim = learned(3, 10.0)
    stop = threading.Event()
    naps: list[float] = []

    def sleep(event: threading.Event, seconds: float) -> bool:
        naps.append(seconds)
        event.set()
        return True

    lim._sleep = sleep
    assert lim.wait(stop) is False
    assert naps and lim._flight == {}


def test_answers_are_matched_to_the_thread_that_waited() -> None:
    clock = FakeClock(START)
    lim = WindowLimiter(clock=clock)
    stop = threading.Event()
    admitted = threading.Barrier(2)
    results: dict[str, Any] = {}

    def worker(name: str, status: int) -> None:
        assert lim.wait(stop)
        results[name] = lim._by_thread[threading.get_ident()]
        admitted.wait()
        lim.answered(status, 5.0 if status == 429 else None)

    threads = [
        threading.Thread(target=worker, args=("ok", 200)),
        threading.Thread(target=worker, args=("limited", 429)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["ok"].state == "ok" and results["limited"].state == "rejected"


def test_an_answer_from_another_thread_goes_to_the_oldest_request() -> None:
    clock = FakeClock(START)
    lim = WindowLimiter(clock=clock)
    stop = threading.Event()
    first = threading.Thread(target=lambda: lim.wait(stop))
    first.start()
    first.join()
    lim.answered(200)  # this thread never waited
    assert lim.limited == 0 and not lim._flight and not lim._by_thread


def test_the_pace_it_believes() -> None:
    clock, lim = learned(3, 10.0)
    assert lim.rate_per_s() == pytest.approx(3 / 10.0)  # answers came at once: no round trip
    assert lim.interval == pytest.approx(10.0 / 3)
    assert WindowLimiter(clock=FakeClock()).rate_per_s() is None
    assert WindowLimiter(clock=FakeClock()).interval == 0.0


# ---- many threads ---------------------------------------------------------------------------


def test_many_threads_never_send_more_than_the_budget_in_any_window_once_learned() -> None:
    """12 threads share one limiter and one sliding server (20 per 2 s) on a fake clock that
    every sleep moves forward. Once learned, no 2 s span holds more than 20 admissions."""
    lock = threading.Lock()
    clock = FakeClock(START)

    def sleep(stop: threading.Event, seconds: float) -> bool:
        with lock:
            clock.now += seconds
        return stop.is_set()

    lim = WindowLimiter(clock=clock, sleep=sleep, probe=False)
    server = SimServer(20, 2.0)
    stop = threading.Event()
    sent: list[tuple[float, str]] = []
    accepted = [0]

    def worker() -> None:
        while not stop.is_set():
            if not lim.wait(stop):
                return
            with lock:
                t = clock.now
                clock.now += 0.003  # on the way
                ok, retry_after = server.admit(clock.now)
                sent.append((t, lim._by_thread[threading.get_ident()].kind))
                accepted[0] += ok
                if accepted[0] >= 400:
                    stop.set()
            lim.answered(200 if ok else 429, retry_after)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert lim.budget == 20 and 2.0 <= lim.window_s <= 3.0
    learned_at = sent[lim.budget + 12][0]
    times = sorted(t for t, _ in sent if t > learned_at)
    window = lim.window_s
    most = max(sum(1 for u in times if t - window < u <= t) for t in times)
    assert most <= 20
    assert math.isclose(accepted[0], 400, abs_tol=12)


def test_a_full_window_is_a_wait_while_a_worker_waits_for_room() -> None:
    clock = FakeClock(START)
    napping, stop = threading.Event(), threading.Event()

    def sleep(stop: threading.Event, seconds: float) -> bool:
        napping.set()
        return stop.wait(5.0)

    lim = WindowLimiter(clock=clock, sleep=sleep, probe=False)
    lim.budget, lim.window_s = 1, 10.0  # as if learned
    ticket, _ = lim.try_acquire()
    assert ticket is not None
    lim.report(ticket, 200)
    clock.now += 4.0
    assert lim.wait_remaining() == (0.0, "")  # full, but nobody wants to send
    worker = threading.Thread(target=lim.wait, args=(stop,))
    worker.start()
    assert napping.wait(5.0)
    assert lim.wait_remaining() == (pytest.approx(6.0), "window")
    stop.set()
    worker.join(5.0)
    assert lim.wait_remaining() == (0.0, "")
    lim.pause(3.0)
    assert lim.wait_remaining() == (pytest.approx(3.0), "held")
