"""The work of an import, one module per kind of step, each on the contract of
jobrunner/steps/contract.py; this registry is the one list of them, in one order.

The scheduler claims due work in the order of `RUN_STEPS` (the steps of people who exist
first, then the creates); ingest plans each row's steps from the same list; the report, the
summaries and the permission messages read their names from it. Adding a step is its module,
its line here, and a migration if the ledger needs one.

Importing this package is cheap: `ingest` uses it to plan, without the SDK.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from jobrunner.steps import (
    create,
    division,
    languages,
    profile,
    queues,
    roles,
    rollback,
    skills,
    unmanage,
)
from jobrunner.steps.contract import StepKind

if TYPE_CHECKING:
    from jobrunner.ledger.model import Row
    from jobrunner.validation import InputRow

# The steps after a create that `run` does, in the order they are claimed and shown.
RUN_STEPS: tuple[StepKind, ...] = (
    division.STEP,
    roles.STEP,
    skills.STEP,
    languages.STEP,
    queues.STEP,
    profile.STEP,
)
CREATE: StepKind = create.STEP
ROLLBACK: StepKind = rollback.STEP
CLEAR_MANAGER: StepKind = unmanage.STEP  # rollback --clear-managers
ALL: tuple[StepKind, ...] = (*RUN_STEPS, CREATE, ROLLBACK, CLEAR_MANAGER)
BY_KIND: dict[str, StepKind] = {step.kind: step for step in ALL}

RUN_KINDS: tuple[str, ...] = tuple(step.kind for step in RUN_STEPS)
# The kinds of step that wait for the row's manager to have a user (the profile).
AFTER_MANAGER: tuple[str, ...] = tuple(step.kind for step in RUN_STEPS if step.after_manager)
# The permission each kind's calls need (named when the API refuses a step for every row).
PERMISSIONS: dict[str, str] = {s.kind: s.permission for s in ALL if s.permission}
# What a report calls each kind (queue instances are shown together as "queues").
LABELS: dict[str, str] = {s.kind: s.shown_as for s in ALL}


_PLANS = tuple((step.kind, step.plan) for step in RUN_STEPS if step.plan)


def planned_steps(row: InputRow) -> list[tuple[str, str]]:
    """The (kind, target) steps a valid row needs after its create."""
    return [(kind, target) for kind, plan in _PLANS for target in plan(row)]


def brought_in_line_steps(row: Row) -> tuple[tuple[str, str], ...]:
    """The (kind, target) steps a person brought in line with the file needs beyond its
    plan: a division move, a profile of every field the file gives."""
    return tuple(
        (step.kind, target) for step in RUN_STEPS if step.in_line for target in step.in_line(row)
    )


def steps_for_change(row: Any, changed: set[str]) -> list[tuple[str, str]]:
    """The (kind, target) steps that bring a person in line with a file that changed these
    row columns: each step whose columns changed, with every target its plan or the rules
    for people brought in line give it. `row` is the row as the file now has it."""
    found: list[tuple[str, str]] = []
    for step in RUN_STEPS:
        if not changed & set(step.fields):
            continue
        targets = list(step.plan(row)) if step.plan else []
        targets += [t for t in (step.in_line(row) if step.in_line else []) if t not in targets]
        found += [(step.kind, target) for target in targets]
    return found


def calls_for(creates: int, open_steps: Iterable[tuple[str, str, int]]) -> dict[str, int]:
    """The requests the remaining work takes, by kind: a create a row, a call a step, and a
    call per batch (per target, per batch_size people) for the steps claimed in batches.
    `open_steps`: (kind, target, steps still to do). Reads come on top: look-ups, people
    brought in line, and a batch's newest person read back (one or two reads a batch, about
    one in a hundred people). `check` says how long the run takes with it; the progress
    line's ETA counts the same way."""
    calls: dict[str, int] = {}
    if creates:
        calls[CREATE.kind] = creates
    for kind, _target, n in open_steps:
        step = BY_KIND.get(kind)
        size = step.batch_size if step is not None and step.claim == "batch" else 1
        calls[kind] = calls.get(kind, 0) + -(-n // size)
    return calls


def step_of_name(name_kind: str) -> str | None:
    """The step kind a name of this kind (role, queue, manager, ...) is needed by."""
    for step in RUN_STEPS:
        if name_kind in step.names:
            return step.kind
    return None
