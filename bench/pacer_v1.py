"""The pacer jobrunner used before the WindowLimiter, kept for bench/run.py's side-by-side
comparison only (jobrunner itself uses jobrunner/limiter.py)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Pacer:
    """One pace for every worker: honours Retry-After, then paces from what the API showed.

    The limit is per token over a sliding minute. Until the first 429 the runner goes as fast
    as its workers allow (or at `rate_per_minute` if given). On a 429, every worker pauses
    until Retry-After has passed, and the pace is set from the number of requests the API
    accepted on this token in the minute before: one every 60 s / that number, so 429s stay
    rare. Fewer than LEARN_MIN accepted means some other limit answered (the org-wide one, say):
    then it only pauses. After each whole minute without a 429 the pace loosens by a tenth,
    so one unlucky measurement does not slow the rest of a long run.
    """

    WINDOW_S = 60.0
    MARGIN = 1.02
    LEARN_MIN = 10
    LOOSEN = 0.9

    def __init__(
        self,
        rate_per_minute: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        window_s: float = WINDOW_S,
    ) -> None:
        self.window_s = window_s  # the API's is a minute; the emulator's drills may be shorter
        self._clock = clock
        self._lock = threading.Lock()
        # --rate-per-minute is a ceiling the pace never goes above; learning only slows down.
        self.min_interval = window_s / rate_per_minute if rate_per_minute else 0.0
        self.interval = self.min_interval
        self._learned = False
        self._next_slot = 0.0
        self.paused_until = 0.0
        self._accepted: deque[float] = deque()
        self._calm_since = clock()  # last 429, or last loosening
        self.limited = 0  # 429s seen

    def new_token(self) -> None:
        """The limit is per token: a new token starts with an empty window."""
        with self._lock:
            self._accepted.clear()

    def _reserve(self) -> float:
        with self._lock:
            now = self._clock()
            if self._learned and now - self._calm_since >= self.window_s:
                self.interval = max(self.min_interval, self.interval * self.LOOSEN)
                self._calm_since = now
            at = max(now, self.paused_until, self._next_slot)
            self._next_slot = at + self.interval
            return at

    def wait(self, stop: threading.Event) -> bool:
        """Block until this caller may send. False if `stop` was set meanwhile."""
        at = self._reserve()
        while True:
            delay = at - self._clock()
            if delay > 0 and stop.wait(delay):
                return False
            with self._lock:
                paused = self.paused_until
            if self._clock() >= paused:
                return not stop.is_set()
            at = self._reserve()  # a 429 arrived while we waited: queue up again

    def answered(self, status: int, retry_after: float | None = None) -> None:
        with self._lock:
            now = self._clock()
            while self._accepted and self._accepted[0] < now - self.window_s:
                self._accepted.popleft()
            if status != 429:
                self._accepted.append(now)
                return
            self.limited += 1
            self._calm_since = now
            self.paused_until = max(self.paused_until, now + (retry_after or 1.0))
            seen = len(self._accepted)
            if seen >= self.LEARN_MIN:
                self.interval = max(self.min_interval, self.window_s / seen * self.MARGIN)
                self._learned = True

    def pause(self, seconds: float) -> None:
        """Every worker waits (the API is unreachable, say)."""
        with self._lock:
            self.paused_until = max(self.paused_until, self._clock() + seconds)

    def pause_remaining(self) -> float:
        return max(0.0, self.paused_until - self._clock())

    def wait_remaining(self) -> tuple[float, str]:
        left = self.pause_remaining()
        return (left, "held") if left > 0 else (0.0, "")

    def unanswered(self, reached: bool) -> None:
        """A request got no answer: counted as accepted if it may have reached the API."""
        if reached:
            self.answered(200)

    def rate_per_s(self) -> float | None:
        return 1 / self.interval if self.interval else None
