"""A live status line on a terminal: people and steps done, pace, ETA, pauses."""

from __future__ import annotations

import threading
import time
from typing import Any, TextIO

from jobrunner.steps import RUN_KINDS, calls_for

STEPS_EVERY_S = 2.0  # how often the line asks the ledger how many steps are left


class Progress:
    def __init__(self, stream: TextIO, interval_s: float = 0.5) -> None:
        self.stream = stream
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ctx: Any = None
        self._steps_left: dict[str, int] = {}
        self._open: list[tuple[str, str, int]] = []
        self._steps_at = 0.0

    def start(self, ctx: Any) -> None:
        """Draw the line of this run (a jobrunner.context.RunContext) until `stop`."""
        self._ctx = ctx
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(1.0)
        self._draw(final=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._draw()

    def calls_left(self) -> int:
        """Every request still to send, counted as `check` counts them (steps.calls_for):
        creates, steps, and the batches of the steps sent in batches."""
        ctx = self._ctx
        if time.monotonic() - self._steps_at >= STEPS_EVERY_S:
            self._open = ctx.ledger.open_by_target(RUN_KINDS)
            self._steps_left = {}
            for kind, _target, n in self._open:
                self._steps_left[kind] = self._steps_left.get(kind, 0) + n
            self._steps_at = time.monotonic()
        stats = ctx.stats
        creates = max(0, stats.total - stats.done)
        return sum(calls_for(creates, self._open).values())

    def line(self) -> str:
        """This run's work against this run's plan: people settled of those to create, steps
        done of those done plus those left now (a person found or restored adds steps)."""
        ctx = self._ctx
        stats = ctx.stats
        elapsed = max(0.001, time.monotonic() - stats.started_at)
        done, total = stats.done, stats.total
        wait, why = ctx.limiter.wait_remaining()
        pause = wait if why == "held" else 0.0  # a full window is part of the pace below
        per_s = ctx.limiter.rate_per_s()
        calls = sum(stats.calls.values())
        per_s = per_s or (calls / elapsed if calls else None)
        left = self.calls_left()
        eta = pause + left / per_s if per_s else None
        parts = []
        if total:
            parts += [f"{done:,}/{total:,} people", f"{done / elapsed * 60:,.0f}/min"]
        steps_done = stats.steps["done"] + stats.steps["failed"]
        steps_left = sum(self._steps_left.values())
        if steps_done or steps_left:
            parts.append(f"steps {stats.steps['done']:,}/{steps_done + steps_left:,}")
        parts.append(f"ETA {_duration(eta)}" if eta is not None else "ETA --")
        outcomes = {**stats.outcomes, **{f"steps {k}": v for k, v in stats.steps.items()}}
        parts.append(" ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()) if v) or "")
        if wait > 0:
            parts.append(f"{ctx.caller.wait_reason(why).split(':')[0]}: waiting {wait:.0f}s")
        if ctx.stop.is_set():
            parts.append("stopping")
        return " | ".join(p for p in parts if p)

    def _draw(self, final: bool = False) -> None:
        if self._ctx is None:
            return
        self.stream.write("\r\033[K" + self.line() + ("\n" if final else ""))
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"
