"""`jobrunner check`: the plan of an import, like `terraform plan`.

Resolves every name the rows with work left use (jobrunner/resolve.py, exactly as `run`
does), and counts what `run` would do. Reads the org, never writes to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jobrunner.context import RunContext
from jobrunner.ledger import Ledger
from jobrunner.resolve import NOT_FOUND, Found
from jobrunner.steps import RUN_KINDS
from jobrunner.steps.contract import StopRun


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

    ctx = RunContext(ledger, client, limiter or WindowLimiter(), owner="check")
    result = Plan()
    if ledger.work_left(RUN_KINDS)[0]:
        client.authenticate()
        try:
            resolution = ctx.names.resolve()
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
    result.calls = sum(ctx.stats.calls.values())
    return result


def _unknown(found: Found, uses: list[tuple[int, str, int]]) -> tuple[str, str, str, Any]:
    problem = found.problem or NOT_FOUND
    return (found.kind, found.name, problem, [(s, line) for _r, s, line in uses])


def _count(ledger: Ledger, result: Plan, blocked: set[int]) -> None:
    """What the remaining work is, leaving out the rows that name something unknown."""
    creating = ledger.rows_to_create()
    result.creates = len(creating - blocked)
    result.blocked = len(creating & blocked)
    wants = ledger.wants_by_row()
    queues: set[str] = set()
    profiles: set[int] = set()
    for row_id, kind, target in ledger.open_steps():
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
    for row_id, manager, location in ledger.profile_fields():
        if row_id in profiles:
            result.managers += manager
            result.locations += location
