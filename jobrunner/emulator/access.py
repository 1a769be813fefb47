"""OAuth client-credentials tokens and the per-token rate limit.

Both take the time from an injected clock (seconds, monotonic) so tests can move time forward
instead of waiting for it.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]


class TokenRegistry:
    """Issued bearer tokens and their expiry times."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def issue(self, lifetime_s: float) -> str:
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._expiry[token] = self._clock() + lifetime_s
        return token

    def check(self, token: str) -> bool:
        """True if `token` was issued, is not revoked and has not expired."""
        with self._lock:
            expires = self._expiry.get(token)
            if expires is None:
                return False
            if self._clock() >= expires:
                del self._expiry[token]
                return False
            return True

    def revoke_all(self) -> int:
        """Invalidate every token issued so far. Returns how many were live."""
        with self._lock:
            count = len(self._expiry)
            self._expiry.clear()
        return count

    def __len__(self) -> int:
        return len(self._expiry)


class RateLimiter:
    """N requests per window, per key (the bearer token); only admitted requests count.

    "sliding": at most N in any `window_s` seconds; Retry-After is the time until the oldest
    request that keeps the window full leaves it. "fixed": at most N per window, the windows
    starting on multiples of `window_s` (of the injected clock); Retry-After is the time to
    the next boundary. Both are whole seconds rounded up, at least 1, as the API's.
    """

    WINDOW_S = 60.0

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._admitted: dict[str, deque[float]] = {}
        self._fixed: dict[str, tuple[int, int]] = {}  # key -> (window index, admitted in it)

    def admit(self, key: str, limit: int, window_s: float = WINDOW_S, mode: str = "sliding") -> int:
        """0 if the request may proceed (and takes a slot), else the whole seconds to wait
        (at least 1)."""
        if limit <= 0:
            return max(1, math.ceil(window_s))
        now = self._clock()
        with self._lock:
            if mode == "fixed":
                return self._admit_fixed(key, limit, window_s, now)
            window = self._admitted.get(key)
            if window is None:
                window = self._admitted[key] = deque()
            horizon = now - window_s
            while window and window[0] <= horizon:
                window.popleft()
            if len(window) < limit:
                window.append(now)
                return 0
            oldest = window[len(window) - limit]
            return max(1, math.ceil(oldest + window_s - now))

    def _admit_fixed(self, key: str, limit: int, window_s: float, now: float) -> int:
        index = math.floor(now / window_s)
        current, count = self._fixed.get(key, (index, 0))
        if current != index:
            count = 0
        if count < limit:
            self._fixed[key] = (index, count + 1)
            return 0
        return max(1, math.ceil((index + 1) * window_s - now))

    def forget(self, keys_alive: Callable[[str], bool]) -> None:
        """Drop the windows of tokens that no longer exist (keeps memory bounded)."""
        with self._lock:
            for key in [k for k in self._admitted if not keys_alive(k)]:
                del self._admitted[key]
            for key in [k for k in self._fixed if not keys_alive(k)]:
                del self._fixed[key]
