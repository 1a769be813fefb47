"""EmulatorConfig: what the emulated org looks like and how badly it behaves."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EmulatorConfig:
    """What the emulated org looks like and how badly it behaves.

    Fields are read on every request, so a test may change them on a running emulator
    (e.g. `emu.config.fault_5xx_rate = 0.5`). `clock` is monotonic seconds; tests inject a
    fake one to move the rate-limit window and token expiry without waiting.
    """

    client_id: str = "jobrunner-demo"
    client_secret: str = "jobrunner-demo-secret"
    rate_per_minute: int = 300
    # The real API's window is 60 s. A shorter one makes rate-limit drills (and tests) quick:
    # `rate_per_minute` requests are then allowed per `rate_window_s` seconds.
    rate_window_s: float = 60.0
    # "sliding": any `rate_window_s` seconds; "fixed": windows that reset on multiples of it.
    rate_window_mode: str = "sliding"
    token_lifetime_s: float = 86400
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    fault_5xx_rate: float = 0.0
    drop_after_create_rate: float = 0.0
    revoke_tokens_after: int | None = None
    seed: int | None = 0
    existing_users: list[dict[str, Any]] = field(default_factory=list)
    divisions: dict[str, str] = field(default_factory=dict)
    state_file: str | Path | None = None
    host: str = "127.0.0.1"
    port: int = 0
    clock: Callable[[], float] = time.monotonic
    search_index_delay_s: float = 0.0
    home_division_id: str | None = None
    save_interval_s: float = 2.0
    # Divisions, roles, queues, skills, locations and users, as in an org file (org.py).
    org: dict[str, Any] | None = None
    # For this long after a user's creation the onboarding endpoints (bulkadd, subjects,
    # routingskills, queue members, a user's queues) answer 404 for it.
    fresh_user_404_s: float = 0.0
    # Permissions the caller lacks ("routing:queue:edit"), or lacks in one division only
    # ("authorization:grant:add@<division id>"): the endpoints needing them answer 403.
    refused_permissions: Collection[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.rate_per_minute < 1:
            raise ValueError("rate_per_minute must be at least 1")
        if self.rate_window_s <= 0:
            raise ValueError("rate_window_s must be positive")
        if self.rate_window_mode not in ("sliding", "fixed"):
            raise ValueError("rate_window_mode must be 'sliding' or 'fixed'")
        if self.token_lifetime_s <= 0:
            raise ValueError("token_lifetime_s must be positive")
        for name in ("latency_ms", "latency_jitter_ms", "search_index_delay_s", "fresh_user_404_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        for name in ("fault_5xx_rate", "drop_after_create_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.revoke_tokens_after is not None and self.revoke_tokens_after < 1:
            raise ValueError("revoke_tokens_after must be at least 1")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be between 0 and 65535")
        if isinstance(self.refused_permissions, str) or not all(
            isinstance(p, str) and p for p in self.refused_permissions
        ):
            raise ValueError("refused_permissions must be a collection of permission names")
