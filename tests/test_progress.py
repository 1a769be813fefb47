"""The live progress line counts this run's work against this run's plan."""

from __future__ import annotations

import io
import threading
from types import SimpleNamespace
from typing import Any

from jobrunner.caller import RunStats
from jobrunner.progress import Progress


class _Limiter:
    def wait_remaining(self) -> tuple[float, str]:
        return 0.0, ""

    def rate_per_s(self) -> float:
        return 5.0


def line(stats: RunStats, steps_left: dict[str, int]) -> str:
    ledger = SimpleNamespace(
        open_by_target=lambda kinds: [(kind, "", n) for kind, n in steps_left.items()]
    )
    ctx: Any = SimpleNamespace(
        stats=stats,
        ledger=ledger,
        limiter=_Limiter(),
        caller=SimpleNamespace(wait_reason=lambda why: "waiting"),
        stop=threading.Event(),
    )
    progress = Progress(io.StringIO())
    progress._ctx = ctx
    return progress.line()


def test_a_resumed_run_with_no_one_to_create_shows_only_its_steps() -> None:
    stats = RunStats(total=0)
    stats.steps["done"] = 297
    text = line(stats, {"roles": 150, "profile": 54})
    assert "people" not in text
    assert "steps 297/501" in text


def test_steps_added_during_the_run_never_show_more_done_than_planned() -> None:
    """A restore adds steps (division, profile) as it goes: the plan grows with them."""
    stats = RunStats(total=10)
    stats.outcomes["created"] = 4
    stats.steps["done"] = 43
    text = line(stats, {"roles": 2})
    assert "4/10 people" in text and "steps 43/45" in text


def test_the_eta_counts_a_call_per_batch_for_batched_steps() -> None:
    """250 queue members of one queue are 3 calls, 120 of another 2; 5 profiles are 5."""
    stats = RunStats(total=0)
    progress = Progress(io.StringIO())
    progress._ctx = SimpleNamespace(
        stats=stats,
        ledger=SimpleNamespace(
            open_by_target=lambda kinds: [
                ("queue", "billing", 250),
                ("queue", "sales", 120),
                ("profile", "", 5),
            ]
        ),
    )
    assert progress.calls_left() == 3 + 2 + 5
