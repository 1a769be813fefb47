"""`jobrunner check`: the plan of an import, like `terraform plan`.

Resolves every name the rows with work left use (jobrunner/resolve.py, exactly as `run`
does), and counts what `run` would do. Reads the org, never writes to it; the names found
are cached in the ledger.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from jobrunner.ledger import Ledger
from jobrunner.resolve import NOT_FOUND, Found, Resolver
from jobrunner.scheduler import RetryPolicy, RunStats, Scheduler
from jobrunner.steps import StopRun


@dataclass
class Plan:
    creates: int = 0  # users run would create
    blocked: int = 0  # rows to create that name something unknown: not created
    role_grants: int = 0
    memberships: int = 0
    queues: int = 0
    skills: int = 0
    managers: int = 0
    locations: int = 0
    resolved: dict[str, int] = field(default_factory=dict)  # kind -> names resolved
    # (kind, name as written, problem, [(source, line)])
    unknown: list[tuple[str, str, str, list[tuple[str, int]]]] = field(default_factory=list)
    calls: int = 0


def plan(ledger: Ledger, client: Any, limiter: Any = None) -> Plan:
    from jobrunner.limiter import WindowLimiter
    from jobrunner.resolve import Resolution

    limiter = limiter or WindowLimiter()
    stats = RunStats()
    caller = Scheduler(
        ledger,
        client,
        limiter,
        owner="check",
        concurrency=1,
        policy=RetryPolicy(),
        resolution=Resolution(),
        stats=stats,
    )
    result = Plan()
    if ledger.work_left()[0]:
        client.authenticate()
        try:
            resolution = Resolver(ledger, client, caller.call_reading).resolve()
        except StopRun as stop:
            raise stop.error from None
        blocked = set(resolution.problems_by_row())
        _count(ledger, result, blocked)
        for found in resolution.found.values():
            if found.id is not None:
                result.resolved[found.kind] = result.resolved.get(found.kind, 0) + 1
        result.unknown = [
            _unknown(found, resolution.uses[(found.kind, found.key)])
            for found in sorted(resolution.unknown(), key=lambda f: (f.kind, f.key))
        ]
    result.calls = sum(stats.calls.values())
    return result


def _unknown(found: Found, uses: list[tuple[int, str, int]]) -> tuple[str, str, str, Any]:
    problem = found.problem or NOT_FOUND
    return (found.kind, found.name, problem, [(s, line) for _r, s, line in uses])


def _count(ledger: Ledger, result: Plan, blocked: set[int]) -> None:
    """What the remaining work is, leaving out the rows that name something unknown."""
    creating = {
        r
        for (r,) in ledger.execute("SELECT id FROM rows WHERE status IN ('pending', 'in_progress')")
    }
    result.creates = len(creating - blocked)
    result.blocked = len(creating & blocked)
    wants = Counter(ledger.execute("SELECT row_id, kind FROM wants").fetchall())
    queues: set[str] = set()
    profiles: set[int] = set()
    for row_id, kind, target in ledger.execute(
        "SELECT s.row_id, s.kind, s.target FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
        "WHERE s.status IN ('pending', 'in_progress') OR (s.status = 'waiting' AND "
        "r.status IN ('pending', 'in_progress'))"
    ).fetchall():
        if row_id in blocked:
            continue
        if kind == "roles":
            result.role_grants += wants[(row_id, "role")]
        elif kind == "skills":
            result.skills += wants[(row_id, "skill")]
        elif kind == "queue":
            result.memberships += 1
            queues.add(target)
        elif kind == "profile":
            profiles.add(row_id)
    result.queues = len(queues)
    for row_id, manager, location in ledger.execute(
        "SELECT id, email_manager IS NOT NULL, location_work IS NOT NULL FROM rows "
        "WHERE email_manager IS NOT NULL OR location_work IS NOT NULL"
    ).fetchall():
        if row_id in profiles:
            result.managers += manager
            result.locations += location
