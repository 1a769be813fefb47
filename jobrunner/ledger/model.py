"""What the ledger holds, as Python sees it: statuses, a row, a claimed step, and the named
conditions the queries share (each written once, here).

The SQL conditions name their tables `r` (rows) and `s` (steps) unless they say otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any


class Status(str, Enum):
    """A row's status: the life of one person of the file."""

    PENDING = "pending"  # a create (or restore) still to do
    IN_PROGRESS = "in_progress"  # claimed by a runner
    CREATED = "created"  # this job made (or restored) the user
    EXISTS = "exists"  # the person was there before the job
    FAILED = "failed"  # no user: the API refused, or a name is unknown
    INVALID = "invalid"  # refused at ingest; never sent
    ROLLED_BACK = "rolled_back"  # `jobrunner rollback` deleted the user

    def __str__(self) -> str:
        return self.value


class StepStatus(str, Enum):
    """A step's status: one piece of work after the create."""

    WAITING = "waiting"  # the user does not exist yet
    PENDING = "pending"  # due at next_attempt_at
    IN_PROGRESS = "in_progress"  # claimed
    DONE = "done"
    FAILED = "failed"  # attempts used up, or refused
    SKIPPED = "skipped"  # the person was there before the job (or was rolled back)

    def __str__(self) -> str:
        return self.value


STATUSES = tuple(s.value for s in Status)

# How a row's user id became known (rows.settled_by).
BY_CREATE = "create"  # the create's answer
BY_LOOKUP = "lookup"  # an unanswered create, found by a search
BY_CONFLICT = "conflict"  # a 409: the person was there before
BY_RESTORE = "restore"  # a deleted user, restored
RESTORING = "restoring"  # a restore was begun (recorded before it is sent)
ROLLED_BACK_ONCE = "rolled_back"  # --recreate-rolled-back: the former user is restored

# -- the named conditions -------------------------------------------------------------------

# A row whose create is still to do (or under way).
TO_CREATE = "status IN ('pending', 'in_progress')"
# A row no create was ever sent for, and no user is known: ingest and forget may change it.
NEVER_SENT = "in_doubt = 0 AND user_id IS NULL"
# A step still to do in this run: pending or claimed, or waiting for a row still to create.
OPEN_STEP = (
    "(s.status IN ('pending', 'in_progress') OR "
    "(s.status = 'waiting' AND r.status IN ('pending', 'in_progress')))"
)
# What a failure for a name looks like: the org can fix it (the name made there, the manager
# created), and the next `check` or `run` that finds it revives the row or step.
HEALABLE = "('unknown_name', 'manager_missing')"
# A step held back (waiting, with the reason in error_message) though its person exists: a
# report whose manager's own row is invalid or failed waits for that row to be fixed.
HELD_STEP = "(s.status = 'waiting' AND r.user_id IS NOT NULL AND r.status IN ('created', 'exists'))"
# A step a report shows: a waiting step of a row that will not be created (failed or invalid
# before its create, rolled back) is no work to do and is left out; it stays in the ledger,
# so the row has its plan again when `run --retry-failed` or an ingest revives it. (A waiting
# step of a person who exists is held back: shown.)
PLANNED_STEP = (
    "NOT (s.status = 'waiting' AND r.status NOT IN ('pending', 'in_progress', 'created', 'exists'))"
)


@dataclass
class Row:
    """One ledger row as the runner sees it."""

    id: int
    line: int
    name: str
    first_name: str
    last_name: str
    email: str
    phone_number: str | None
    extension: str | None
    division: str | None
    division_id: str | None
    title: str | None
    department: str | None
    email_manager: str | None
    location_work: str | None
    status: str
    attempts: int
    in_doubt: int  # 0 clean; 1 a create may have been sent; 2 ... and a 409 was seen since
    user_id: str | None
    user_version: int | None
    settled_by: str | None
    settled_at: float | None
    user_state: str | None
    first_sent_at: float | None
    follows_file: int = 0  # 1: the file changed after the job created the person


ROW_COLUMNS = ", ".join(f.name for f in fields(Row))

# What a file says about a person: the columns a re-ingest compares and may update.
INPUT_FIELDS = (
    "name",
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "extension",
    "division",
    "title",
    "department",
    "email_manager",
    "location_work",
    "roles_divisions",
    "queues",
    "skills",
    "languages",
)
# What comes after the create: the INPUT_FIELDS a create never sends.
PLAN_FIELDS = (
    "email_manager",
    "location_work",
    "roles_divisions",
    "queues",
    "skills",
    "languages",
)


def row_of(values: Sequence[Any]) -> Row:
    return Row(*values)


@dataclass
class StepClaim:
    """One claimed step of one row: a role grant, a queue membership (target: the queue)."""

    row: Row
    kind: str
    target: str
    attempts: int


def marks(values: Sequence[Any]) -> str:
    """`?, ?, ?` for an IN (...) of these values."""
    return ", ".join("?" * len(values))
