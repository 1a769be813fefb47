"""The limiter's numbers: what is taken for a window, how long workers sleep, how often
the budget is probed and how closely a fixed window's boundaries are tested.

The package re-exports them. A test that patches one patches it where it is read: EDGE_AT
in jobrunner.limiter (admission), the others in the module that imports them."""

from __future__ import annotations

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
