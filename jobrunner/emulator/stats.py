"""Counters for GET /emulator/stats."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class Stats:
    """Counters for GET /emulator/stats."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests_total = 0
            self.by_route: Counter[str] = Counter()
            self.by_status: Counter[str] = Counter()
            self.creations: Counter[str] = Counter()
            self.faults: Counter[str] = Counter(
                {"http_5xx": 0, "drop_after_create": 0, "token_revocation": 0}
            )
            self.rate_limited = 0
            self.tokens_issued = 0
            self.token_requests_rejected = 0

    def record(self, route: str, status: int | str) -> None:
        with self._lock:
            self.requests_total += 1
            self.by_route[route] += 1
            self.by_status[str(status)] += 1
            if status == 429:
                self.rate_limited += 1

    def bump(self, what: str, key: str | None = None) -> None:
        with self._lock:
            if what == "creation" and key is not None:
                self.creations[key] += 1
            elif what == "fault" and key is not None:
                self.faults[key] += 1
            elif what == "token":
                self.tokens_issued += 1
            elif what == "token_rejected":
                self.token_requests_rejected += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests_total": self.requests_total,
                "requests_by_route": dict(self.by_route),
                "responses_by_status": dict(self.by_status),
                "creations_by_email": dict(self.creations),
                "rate_limited": self.rate_limited,
                "faults": dict(self.faults),
                "tokens_issued": self.tokens_issued,
                "token_requests_rejected": self.token_requests_rejected,
            }
