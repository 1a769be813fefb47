"""The work after a user exists, one module per step.

Each step module says what it sends, what counts as done and what may be repeated; the
scheduler (jobrunner/scheduler.py) claims due work from the ledger, paces every call and
records each answer, and knows nothing of what a step does. A step is planned at ingest,
waits in the ledger until the row's user exists, and is done, failed or skipped from then
on. Adding a step (languages, stations, ...) means one module here and one migration.

Importing this package is cheap: `ingest` uses it to plan, without the SDK.
"""

from __future__ import annotations

from typing import Protocol

from jobrunner.csv_input import InputRow, name_key
from jobrunner.errors import JobrunnerError


class Planned(Protocol):
    def __call__(self, row: InputRow) -> list[str]: ...


def _one_if(wanted: bool) -> list[str]:
    return [""] if wanted else []


# kind -> which instances a row needs (targets: "" for one per row, a queue's key for queues).
# The order is the order a person's steps are shown in.
PLANS: dict[str, Planned] = {
    "roles": lambda row: _one_if(bool(row.roles)),
    "skills": lambda row: _one_if(bool(row.skill_levels)),
    "queue": lambda row: [name_key(queue) for queue in row.queue_names],
    "profile": lambda row: _one_if(bool(row.email_manager or row.location_work)),
}


def planned_steps(row: InputRow) -> list[tuple[str, str]]:
    """The (kind, target) steps a valid row needs after its create."""
    return [(kind, target) for kind, plan in PLANS.items() for target in plan(row)]


class StopRun(Exception):
    """The run cannot go on (configuration, permission, unreachable API)."""

    def __init__(self, error: JobrunnerError) -> None:
        super().__init__(str(error))
        self.error = error


class Stopping(Exception):
    """The run is stopping: a call was not sent; give the work back as it was."""


class StepFailed(Exception):
    """A step that cannot be done for this row (not worth retrying): it is failed with this."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RetryLater(Exception):
    """Send it again after a backoff (an attempt counts), e.g. a fresh user id not known yet."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def brings_in_line(row: object) -> bool:
    """A person who was there before the job (or restored by it) is compared with the file:
    each step reads what the user has and sends only what differs."""
    return getattr(row, "status", None) == "exists" or getattr(row, "settled_by", None) == "restore"


# The permission each step's calls need (named when the API refuses a step for every row).
PERMISSIONS = {
    "roles": "authorization:grant:add",
    "skills": "routing:skill:assign",
    "queue": "routing:queue:edit",
    "profile": "directory:user:edit",
    "division": "authorization:division:edit",
    "rollback": "directory:user:delete",
}
