"""`jobrunner check`: the whole plan of an import, like `terraform plan`. Reads the org only.

It resolves every name the remaining work uses (jobrunner/resolve.py, exactly as `run`
does), revives failures the org has fixed since (a name made there), and counts what `run`
would do. It finds, with a few batched searches, the people of the file who are in the org
already (there before, or deleted), and runs the steps that would bring people in line with
the file in a dry mode, reads real and writes only recorded, so it can say what `run
--update-existing` would change for people who were there before and what the next `run`
will add or set for people the job created whose rows changed. It names the reports that
wait for a manager whose own row is invalid or failed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from jobrunner import steps
from jobrunner.context import RunContext
from jobrunner.genesys import ApiError, FoundUser
from jobrunner.ledger import Ledger
from jobrunner.ledger.model import Row, StepClaim
from jobrunner.resolve import NOT_FOUND, Found
from jobrunner.runner import revive_healed
from jobrunner.steps.contract import Outcome, StopRun

DEFAULT_PER_MINUTE = 300.0  # Genesys' default budget for a client-credentials token
SHOWN_AT_MOST = 25  # people whose changes are worked out one by one (3 or 4 reads each)
SEARCH_BATCH = 50  # emails a search asks for at once


@dataclass
class Person:
    """One person of the plan: where in the file, and what `run` would do for them."""

    row_id: int
    line: int
    email: str
    source: str = ""
    state: str | None = None
    changes: list[str] = field(default_factory=list)  # "roles: added Agent in Home", ...


@dataclass
class Plan:
    creates: int = 0  # users run would create
    blocked: int = 0  # rows to create that name something unknown: not created
    role_grants: int = 0
    memberships: int = 0
    queues: int = 0
    skills: int = 0
    languages: int = 0
    managers: int = 0
    locations: int = 0
    resolved: dict[str, int] = field(default_factory=dict)  # kind -> names resolved
    # (kind, name as written, problem, [(source, line)])
    unknown: list[tuple[str, str, str, list[tuple[str, int]]]] = field(default_factory=list)
    revived_rows: int = 0  # failures for names the org has now: due again
    revived_steps: int = 0
    there: list[Person] = field(default_factory=list)  # in the org already, not deleted
    deleted: list[Person] = field(default_factory=list)  # deleted users with these emails
    changed: list[Person] = field(default_factory=list)  # created by the job, row changed
    not_shown: int = 0  # people whose changes were not worked out one by one
    # (manager email, why they wait, [(source, line)] of the reports)
    held: list[tuple[str, str, list[tuple[str, int]]]] = field(default_factory=list)
    calls: int = 0
    # The requests `run` will send, by kind (steps.calls_for), and the budget they take
    # at: requests a minute, and where that figure comes from.
    run_calls: dict[str, int] = field(default_factory=dict)
    per_minute: float = DEFAULT_PER_MINUTE
    budget_from: str = "the API's default"


def plan(
    ledger: Ledger, client: Any, limiter: Any = None, rate_per_minute: float | None = None
) -> Plan:
    from jobrunner.limiter import WindowLimiter

    ctx = RunContext(ledger, client, limiter or WindowLimiter(rate_per_minute), owner="check")
    result = Plan()
    healable = any(ledger.healable())
    if ledger.work_left(steps.RUN_KINDS)[0] or healable or ledger.has_exists_rows():
        ctx.authenticate()
        try:
            _plan(ctx, ledger, result)
        except StopRun as stop:
            raise stop.error from None
    result.calls = sum(ctx.stats.calls.values())
    learnt = ctx.limiter.rate_per_s() if hasattr(ctx.limiter, "rate_per_s") else None
    if rate_per_minute:
        result.per_minute, result.budget_from = rate_per_minute, "--rate-per-minute"
    elif learnt:
        result.per_minute, result.budget_from = learnt * 60, "learnt from the API's 429s"
    return result


def _plan(ctx: RunContext, ledger: Ledger, result: Plan) -> None:
    resolution = ctx.names.resolve()
    result.revived_rows, result.revived_steps = revive_healed(ledger, resolution)
    blocked = set(resolution.problems_by_row())
    found = _people_there(ctx, ledger, blocked)
    _count(ledger, result, blocked, set(found))
    for f in resolution.found.values():
        if f.id is not None:
            result.resolved[f.kind] = result.resolved.get(f.kind, 0) + 1
    result.unknown = [
        _unknown(f, resolution.uses[(f.kind, f.key)])
        for f in sorted(resolution.unknown(), key=lambda f: (f.kind, f.key))
    ]
    result.held = [
        (f.name, f.held, [(s, line) for _r, s, line in resolution.uses[(f.kind, f.key)]])
        for f in sorted(resolution.found.values(), key=lambda f: f.key)
        if f.held
    ]
    # The names of people brought in line (`run --update-existing` plans their steps first,
    # and so resolves them): looked up too, so their changes name what the org has.
    if in_line := [row.id for row in ledger.to_bring_in_line()]:
        ctx.names.resolver.resolve_into(resolution, ledger.names_in_use(in_line))
    dry = DryRun(ctx)
    budget = [SHOWN_AT_MOST]
    for row, user in found.values():
        person = Person(row.id, row.line, row.email, state=user.state)
        if user.state == "deleted":
            result.deleted.append(person)
            continue
        result.there.append(person)
        there = replace(row, status="exists", user_id=user.id, settled_by="conflict")
        _changes(dry, ledger, there, person, budget, result, open_only=False)
    for row in ledger.exists_deleted():
        result.deleted.append(Person(row.id, row.line, row.email, state="deleted"))
    for row in ledger.to_bring_in_line():
        person = Person(row.id, row.line, row.email, state=row.user_state)
        result.there.append(person)
        _changes(dry, ledger, row, person, budget, result, open_only=False)
    for row in ledger.following_file():
        person = Person(row.id, row.line, row.email, state=row.user_state)
        result.changed.append(person)
        _changes(dry, ledger, row, person, budget, result, open_only=True)
    people = (*result.there, *result.deleted, *result.changed)
    sources = ledger.sources_of_rows([p.row_id for p in people])
    for person in people:
        person.source = sources.get(person.row_id, "")


def _people_there(
    ctx: RunContext, ledger: Ledger, blocked: set[int]
) -> dict[int, tuple[Row, FoundUser]]:
    """The rows still to create whose email a user of the org has already (any state):
    row id -> (row, user), found with a search per SEARCH_BATCH emails."""
    rows = {row.email.lower(): row for row in ledger.rows_to_create_list() if row.id not in blocked}
    if not rows:
        return {}
    found: dict[int, tuple[Row, FoundUser]] = {}
    emails = list(rows)
    for start in range(0, len(emails), SEARCH_BATCH):
        batch = emails[start : start + SEARCH_BATCH]
        for user in _search(ctx, batch):
            row = rows.get((user.email or "").lower())
            if row is not None:
                found[row.id] = (row, user)
    return found


def _search(ctx: RunContext, emails: list[str]) -> list[FoundUser]:
    """Every user with one of these emails: pages of one search, or (a gateway that does not
    take several emails in one search) a search each."""
    client = ctx.client
    users: list[FoundUser] = []
    if getattr(client, "find_users_by_emails", None) is not None:
        page = 1
        try:
            while True:
                found, more = ctx.read("search", client.find_users_by_emails, emails, page)
                users += found
                if not more:
                    return users
                page += 1
        except ApiError as err:
            if err.status != 400:
                raise
    for email in emails:
        user = ctx.read("search", client.find_user_by_email, email)
        if user is not None:
            users.append(user)
    return users


def _changes(
    dry: DryRun,
    ledger: Ledger,
    row: Row,
    person: Person,
    budget: list[int],
    result: Plan,
    *,
    open_only: bool,
) -> None:
    """What bringing `row`'s person in line would change, worked out with the steps
    themselves (reads real, writes recorded), while the budget of people lasts. `open_only`:
    the steps still to do (a row that changed); else every step of the row's plan and those
    of a person brought in line."""
    if budget[0] <= 0:
        result.not_shown += 1
        return
    budget[0] -= 1
    planned = ledger.steps_of_row(row.id, open_only=open_only)
    if not open_only:
        planned += [s for s in steps.brought_in_line_steps(row) if s not in planned]
    for kind, target in planned:
        step = steps.BY_KIND.get(kind)
        if step is None or not step.run_step:
            continue
        claim = StepClaim(row, kind, target, 0)
        try:
            outcomes = step.perform(dry, [claim])
        except ApiError as err:
            person.changes.append(f"{step.shown_as}: cannot tell ({err.code})")
            continue
        for outcome in [outcomes] if isinstance(outcomes, Outcome) else outcomes:
            text = outcome.detail if outcome.what in ("done", "wait") else outcome.message
            if text and text != "no change" and not text.startswith("already"):
                line = f"{step.shown_as}: {text}"
                if line not in person.changes:
                    person.changes.append(line)
    if not person.changes:
        person.changes.append("no change")


class DryRun:
    """The run's context for a step whose writes are only recorded: `check` asks the steps
    themselves what they would send, so the plan says what `run` does."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.names = ctx.names
        self.update_existing = True
        self.restore_deleted = False
        self.step_delay_s = 0.0
        self.dry_run = True
        self.sent: list[tuple[str, str]] = []

    def now(self) -> float:
        return self.ctx.now()

    def call(self, kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.sent.append((kind, getattr(fn, "__name__", "call")))
        version = args[1] if fn.__name__ == "update_user" and len(args) > 1 else 0
        return int(version) + 1 if isinstance(version, int) else None

    def read(self, kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.ctx.read(kind, fn, *args, **kwargs)

    def wait(self, seconds: float) -> None:
        self.ctx.wait(seconds)

    def wants(self, row: Row, kind: str) -> list[tuple[str, str, str | None, float | None]]:
        return self.ctx.wants(row, kind)

    def manager_row(self, email: str) -> dict[str, Any] | None:
        return self.ctx.manager_row(email)

    def memo(self, kind: str) -> dict[str, Any]:
        return self.ctx.memo(kind)

    def brought_in_line_steps(self, row: Row) -> tuple[tuple[str, str], ...]:
        return self.ctx.brought_in_line_steps(row)


def _unknown(found: Found, uses: list[tuple[int, str, int]]) -> tuple[str, str, str, Any]:
    problem = found.problem or NOT_FOUND
    return (found.kind, found.name, problem, [(s, line) for _r, s, line in uses])


def _count(ledger: Ledger, result: Plan, blocked: set[int], there: set[int]) -> None:
    """What the remaining work is, leaving out the rows that name something unknown (and
    those of people already in the org: counted apart)."""
    creating = ledger.rows_to_create()
    left_out = blocked | there
    result.creates = len(creating - left_out)
    result.blocked = len(creating & blocked)
    wants = ledger.wants_by_row()
    queues: set[str] = set()
    profiles: set[int] = set()
    batches: Counter[tuple[str, str]] = Counter()
    for row_id, kind, target in ledger.open_steps():
        if row_id in left_out:
            continue
        batches[(kind, target)] += 1
        if kind == "roles":  # a grant a step (one per row when an earlier jobrunner planned)
            result.role_grants += 1 if target else wants[(row_id, "role")]
        elif kind == "skills":
            result.skills += wants[(row_id, "skill")]
        elif kind == "languages":
            result.languages += wants[(row_id, "language")]
        elif kind == "queue":
            result.memberships += 1
            queues.add(target)
        elif kind == "profile":
            profiles.add(row_id)
    result.queues = len(queues)
    result.run_calls = steps.calls_for(
        result.creates, [(kind, target, n) for (kind, target), n in batches.items()]
    )
    for row_id, manager, location in ledger.profile_fields():
        if row_id in profiles:
            result.managers += manager
            result.locations += location
