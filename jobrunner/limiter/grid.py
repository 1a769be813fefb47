"""A fixed window's boundaries: `_Grid`, the (phase, length) pairs that every observation
of a boundary allows (a convex region: `_corners`), and `_grid_from`, a grid from two
consecutive boundaries (see "Fixed windows" in the package docstring)."""

from __future__ import annotations

import math

from jobrunner.limiter.constants import MAX_WINDOW_S


class _Grid:
    """A fixed window's boundaries, in send time (when a request must leave to arrive on
    one): boundary n is x + n * w for some (x, w) that every observation allows. Each
    observation says where one boundary lies; together they pin both the phase and the
    length, the more closely the further apart they are."""

    def __init__(self, w_lo: float, w_hi: float) -> None:
        self._limits = (w_lo, w_hi)
        self.w_lo, self.w_hi = w_lo, w_hi  # the lengths the observations allow
        # (n, lo, hi, soft): lo <= boundary n <= hi. Soft: inferred from an answer beyond
        # the budget, which a budget that grew explains too; hard: from a Retry-After.
        self._obs: list[_Observation] = []
        self._corners: list[tuple[float, float]] = []  # (x, w) of the region they allow

    def observe(self, n: int, lo: float, hi: float, soft: bool = False) -> bool:
        """Boundary n lies in [lo, hi]. If that contradicts the earlier observations, the
        soft ones give way to a hard one; False if it still does (then nothing changes)."""
        obs = [*self._obs, (n, lo, hi, soft)]
        corners = _corners(obs, self._limits)
        if not corners and not soft:
            obs = [o for o in obs if not o[3]]
            corners = _corners(obs, self._limits)
        if not corners:
            return False
        hard = [o for o in obs if not o[3]]
        hard_corners = _corners(hard, self._limits) if len(hard) < len(obs) else corners
        self._obs = [o for o in obs if _binding(o, corners) or _binding(o, hard_corners)]
        self._corners = corners
        self.w_lo = min(w for _, w in corners)
        self.w_hi = max(w for _, w in corners)
        return True

    def bounds(self, n: int) -> tuple[float, float]:
        at = [x + n * w for x, w in self._corners]
        return min(at), max(at)

    def window_of(self, t: float) -> int:
        """The window a request sent at t most likely lands in (the last boundary before)."""
        x, w = self._centre()
        return math.floor((t - x) / w)

    def nearest(self, t: float) -> int:
        """The boundary nearest to t."""
        x, w = self._centre()
        return round((t - x) / w)

    def _centre(self) -> tuple[float, float]:
        k = len(self._corners)
        return sum(x for x, _ in self._corners) / k, sum(w for _, w in self._corners) / k


_Observation = tuple[int, float, float, bool]


def _corners(obs: list[_Observation], limits: tuple[float, float]) -> list[tuple[float, float]]:
    """The corners of the region of (x, w) with lo <= x + n * w <= hi for every observation
    and w within limits (a convex polygon; empty: none)."""
    lines: list[tuple[float, float, float]] = []  # a * x + b * w = c
    for n, lo, hi, _ in obs:
        lines += [(1.0, float(n), c) for c in (lo, hi) if math.isfinite(c)]
    lines += [(0.0, 1.0, limits[0]), (0.0, 1.0, limits[1])]
    corners = []
    for i, (a1, b1, c1) in enumerate(lines):
        for a2, b2, c2 in lines[i + 1 :]:
            det = a1 * b2 - a2 * b1
            if abs(det) < 1e-12:
                continue
            x = (c1 * b2 - c2 * b1) / det
            w = (a1 * c2 - a2 * c1) / det
            tol = 1e-9 * max(1.0, abs(x))
            if not limits[0] - tol <= w <= limits[1] + tol:
                continue
            if all(lo - tol <= x + n * w <= hi + tol for n, lo, hi, _ in obs):
                corners.append((x, w))
    return corners


def _binding(ob: _Observation, corners: list[tuple[float, float]]) -> bool:
    """Does this observation bound the region (a corner lies on one of its edges)?"""
    n, lo, hi, _ = ob
    return any(
        min(abs(x + n * w - lo), abs(x + n * w - hi)) <= 1e-9 * max(1.0, abs(x)) for x, w in corners
    )


def _grid_from(b0: tuple[float, float], b1: tuple[float, float]) -> _Grid | None:
    """The boundaries of a fixed window, two consecutive ones being known this closely
    (in send time, within the margin); None if they cannot be."""
    grid = _Grid(0.5, MAX_WINDOW_S)
    if grid.observe(0, *b0) and grid.observe(1, *b1):
        return grid
    return None
