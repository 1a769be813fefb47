"""The step contract: what a step module is, what it may use, and how it answers.

A step module (one per kind of work: create, roles, skills, queues, ...) declares a
`STEP = StepKind(...)`: its kind, how its work is claimed from the ledger, what the summary
and report call it, the permission its calls need, and which steps a row plans for it. Its
`perform(ctx, work)` sends what the step sends (through `ctx.call` and `ctx.read`) and says
what happened with one of the outcomes below: `done`, `failed`, `retry_later`, `give_back`;
raising `StopRun` stops the whole run. What a call raises (an `ApiError`, a
`TransportError`) a step may simply let go: the scheduler applies the rules every step
shares to it (jobrunner/record.py), and records every outcome in the ledger. A step never
writes to the ledger itself.

`ctx` is a `Context`: the run's services, typed here, so a step can be run alone against a
stand-in (tests/stepkit.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from jobrunner.errors import JobrunnerError

if TYPE_CHECKING:
    from jobrunner.ledger.model import Row, StepClaim
    from jobrunner.validation import InputRow

# A user fresh from its create may be unknown to the other services for a few seconds: a 404
# this soon after it is retried, not failed.
FRESH_WINDOW_S = 60.0


# -- outcomes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settled:
    """What a create makes of its row: created (by create, look-up or restore) or exists."""

    status: Literal["created", "exists"]
    user_id: str | None = None
    user_version: int | None = None
    settled_by: str | None = None
    settled_at: float | None = None
    user_state: str | None = None
    note: str | None = None
    # What happens to the row's steps: "pending" (due a few seconds after settled_at),
    # "skipped", or None (left as they are). `extra_steps`: a person brought in line with
    # the file; every step is due, and these are added.
    steps: str | None = None
    extra_steps: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class Outcome:
    """What became of a piece of work. Build one with the functions below."""

    what: Literal["done", "failed", "retry", "wait", "give_back", "recorded"]
    code: str | None = None
    message: str | None = None
    detail: str | None = None  # done: what the step changed, in words
    fresh: bool = False  # retry: a new user's id is not known yet (no attempt limit)
    # retry: the code and message to fail with once the attempts are used up
    exhausted: tuple[str, str] | None = None
    settled: Settled | None = None  # done, for a create: what the row becomes
    row_status: str | None = None  # done: the rows become this too (a rollback)
    user_version: int | None = None  # done: the user's version after the step's write
    # The claimed steps this is about; None: every claim no other outcome names.
    claims: tuple[StepClaim, ...] | None = None


def done(
    detail: str | None = None,
    *,
    claims: Sequence[StepClaim] | None = None,
    settled: Settled | None = None,
    row_status: str | None = None,
    user_version: int | None = None,
) -> Outcome:
    return Outcome(
        "done",
        detail=detail,
        settled=settled,
        row_status=row_status,
        user_version=user_version,
        claims=None if claims is None else tuple(claims),
    )


def failed(code: str, message: str, *, claims: Sequence[StepClaim] | None = None) -> Outcome:
    """Cannot be done for this row (not worth retrying)."""
    return Outcome("failed", code, message, claims=None if claims is None else tuple(claims))


def retry_later(
    code: str,
    message: str,
    *,
    fresh: bool = False,
    exhausted: tuple[str, str] | None = None,
    claims: Sequence[StepClaim] | None = None,
) -> Outcome:
    """Send it again after a backoff; an attempt counts (and the attempts can run out)."""
    return Outcome(
        "retry",
        code,
        message,
        fresh=fresh,
        exhausted=exhausted,
        claims=None if claims is None else tuple(claims),
    )


def wait_for(
    code: str, message: str, detail: str, *, claims: Sequence[StepClaim] | None = None
) -> Outcome:
    """Held back until something else happens (the manager's own row is fixed and made):
    the step waits, no attempt counts, and the run does not wait for it. `detail`: the
    short form ("waits for its manager x@example.com")."""
    return Outcome(
        "wait", code, message, detail=detail, claims=None if claims is None else tuple(claims)
    )


def give_back(code: str | None = None, message: str | None = None) -> Outcome:
    """Nothing was done (the run is stopping, nothing reached the API): the work goes back
    as it was, and no attempt counts."""
    return Outcome("give_back", code, message)


RECORDED = Outcome("recorded")  # the create recorded its outcome itself (RowWork.settle_now)

Outcomes = Outcome | Sequence[Outcome]


class StopRun(Exception):
    """The run cannot go on (configuration, permission, unreachable API)."""

    def __init__(self, error: JobrunnerError) -> None:
        super().__init__(str(error))
        self.error = error


class Stopping(Exception):
    """The run is stopping: a call was not sent; give the work back as it was."""


# -- what a step may use ------------------------------------------------------------------------


class Names(Protocol):
    """The names of the file, resolved against the org (jobrunner/resolve.py)."""

    def id_of(self, kind: str, name: str) -> str | None: ...

    def name_of(self, kind: str, name: str) -> str:
        """The name as the org spells it (as written, when it was not found)."""
        ...

    def home_division_id(self) -> str: ...

    def problems(self, row: Row) -> list[str]:
        """What the row names that the org does not have (looked up now if it is new)."""
        ...


class Context(Protocol):
    """The run's services, as a step sees them."""

    client: Any  # a GenesysClient (jobrunner/genesys): the calls a step sends
    names: Names
    update_existing: bool  # --update-existing
    restore_deleted: bool  # --restore-deleted
    step_delay_s: float  # a new user's steps wait this long after its create
    dry_run: bool  # `check`: writes are only recorded, so nothing is read back after one

    def now(self) -> float: ...

    def call(
        self,
        kind: str,
        fn: Callable[..., Any],
        *args: Any,
        before_send: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> Any:
        """One request, when the rate limit allows; raises what the call raised, Stopping
        when the run stopped first (or `before_send` said no), StopRun when the run cannot
        go on."""
        ...

    def read(self, kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A read (safe to repeat): 429s and passing failures are tried again here."""
        ...

    def wait(self, seconds: float) -> None:
        """Wait (another service catching up); raises Stopping when the run stops first."""
        ...

    def wants(self, row: Row, kind: str) -> list[tuple[str, str, str | None, float | None]]:
        """(name, name key, division, proficiency) of what a row asks for, in file order."""
        ...

    def manager_row(self, email: str) -> dict[str, Any] | None:
        """The live ledger row of a manager who is a person of this ledger."""
        ...

    def memo(self, kind: str) -> dict[str, Any]:
        """A step's own state for this run (a queue's members, read once)."""
        ...

    def brought_in_line_steps(self, row: Row) -> tuple[tuple[str, str], ...]:
        """The (kind, target) steps a person brought in line with the file needs beyond its
        plan (a division move, a profile of every field the file gives)."""
        ...


class RowWork(Protocol):
    """A claimed row, as the create sees it: the row, how sure we are it was never sent,
    and the writes the create's exactly-once rules commit before and while it sends."""

    row: Row
    doubt: int  # 0 clean; 1 a create may have been sent; 2 ... and a 409 was seen since
    answered: bool  # the create sent this round was answered (its attempt stands)

    def mark_sent(self, division_id: str | None) -> bool:
        """Commit, before the create goes out, that it may have been sent."""
        ...

    def mark_restoring(self, user_id: str) -> bool:
        """Commit, before a restore goes out, which user the row is restoring."""
        ...

    def settle_now(self, settled: Settled, *, quiet: bool = False) -> bool:
        """Record the row's outcome now, before the create goes on to look something up."""
        ...

    def add_found(self, user_id: str | None, note: str | None, state: str | None) -> None:
        """Add what a look-up found to the row settled with `settle_now`."""
        ...


# -- what a step module declares ----------------------------------------------------------------


@dataclass(frozen=True)
class StepKind:
    """One kind of work, as the scheduler, the ledger, ingest and the report need to know it."""

    kind: str  # the ledger's name for it
    perform: Callable[..., Outcomes]
    label: str = ""  # what a report calls it (queues: "queues"); default: the kind
    calls: tuple[str, str] = ("", "")  # the summary's words for its calls (one, many)
    permission: str | None = None  # what its calls need (named when the API refuses)
    # How its work is claimed: a row (the create), one step at a time, or a batch of one
    # target across people (batch_size at most).
    claim: Literal["row", "one", "batch"] = "one"
    batch_size: int = 1
    after_manager: bool = False  # waits while the row's manager is still to be created
    # The kinds of names (division, role, ...) that, unknown, make this step impossible.
    names: tuple[str, ...] = ()
    # Which steps a valid row plans for this kind at ingest: its targets ("" for one step
    # per row, a queue's key for queues); None: never planned at ingest.
    plan: Callable[[InputRow], list[str]] | None = None
    # The targets a person brought in line with the file needs beyond the plan.
    in_line: Callable[[Row], list[str]] | None = None
    run_step: bool = True  # done by `run` (a rollback has its own command)
    # The row's columns this step sends: a file that changes one of them for a person the
    # job created (or found) makes the step due again.
    fields: tuple[str, ...] = ()

    @property
    def shown_as(self) -> str:
        return self.label or self.kind


# -- small rules every step shares ------------------------------------------------------------


def brings_in_line(row: object) -> bool:
    """A person who was there before the job (or restored by it, or created by it before the
    file changed) is compared with the file: each step reads what the user has and sends
    only what differs."""
    return (
        getattr(row, "status", None) == "exists"
        or getattr(row, "settled_by", None) == "restore"
        or bool(getattr(row, "follows_file", 0))
    )


def is_fresh(row: Row, now: float) -> bool:
    """Is the row's user new enough that other services may not know its id yet?"""
    return row.settled_at is not None and now - row.settled_at < FRESH_WINDOW_S


# How long a write refused for a stale version keeps reading the user again and resending: a
# new user's version moves several times in its first seconds as other services attach to
# it (the Terraform provider retries these for as long as its timeout allows).
VERSION_WINDOW_S = 30.0
VERSION_WAIT_S = (0.2, 0.5, 1.0, 2.0, 4.0)  # the waits between tries (the last one repeats)


def with_current_version(
    ctx: Context,
    kind: str,
    user_id: str,
    version: int | None,
    write: Callable[[int], Any],
    read: Callable[[], int] | None = None,
) -> Any:
    """`write(version)`, and while the API answers that the version is stale (a 409, or a
    400 "does not match the current version"): wait a little, read the user's version again
    and write again, for up to VERSION_WINDOW_S. Then it is the step's to retry later (an
    outcome, never a failure: the race resolves itself). `read`: how to read the version
    (a deleted user is read with state=deleted)."""
    from jobrunner.genesys import ApiError
    from jobrunner.log import get_logger

    def current() -> int:
        if read is not None:
            return read()
        return int(ctx.read(kind, ctx.client.get_user, user_id).version)

    deadline = ctx.now() + VERSION_WINDOW_S
    tries = 0
    if version is None:
        version = current()
    while True:
        try:
            return write(version)
        except ApiError as err:
            if not err.version_conflict:
                raise
            if ctx.now() >= deadline:
                return retry_later(
                    err.code, f"the user's version kept changing ({err}); tried {tries + 1}x"
                )
            wait = VERSION_WAIT_S[min(tries, len(VERSION_WAIT_S) - 1)]
            tries += 1
            get_logger("jobrunner.steps").debug(
                "version.retry",
                step=kind,
                user_id=user_id,
                attempt=tries,
                status=err.status,
                sent_version=version,
                retry_in_s=wait,
            )
            ctx.wait(wait)
            version = current()


def refused_for_an_unknown_id(err: Any) -> bool:
    """How the API refuses a batch (a role for many people, a queue's new members) for one
    id it does not know: Genesys does not say. A 404 for the whole batch, or a 400 naming
    an id (`invalid.id`, `invalid.value`): each is split to find the one at fault (a 400
    about the batch as a whole fails every one alone the same way, and they all fail)."""
    return err.status == 404 or (err.status == 400 and err.code in ("invalid.id", "invalid.value"))


def send_splitting(
    ctx: Context,
    claims: list[StepClaim],
    send: Callable[[list[StepClaim]], Any],
    sent: Callable[[list[StepClaim]], Outcome],
    *,
    not_known_yet: str,
    not_known: str,
    holds: Callable[[StepClaim], bool] | None = None,
) -> list[Outcome]:
    """`send(claims)` as one call, then `sent(claims)`. A batch refused for an unknown id
    is retried later while one of its people is fresh (the other services learn new ids in
    seconds: `not_known_yet` says so), else split in halves until the one at fault fails
    alone (`not_known`), the others going on.

    Genesys does not document what such a batch answers; it may also grant the others and
    skip the id it does not know yet, with a success. So an answered batch with fresh people
    in it is checked: `holds(claim)` reads whether its newest person has what was sent (the
    services learn ids in the order they were made: if the newest is known, all are). If not,
    the whole batch goes again later (what is held already is no change to the API)."""
    from jobrunner.genesys import ApiError

    try:
        send(claims)
    except ApiError as err:
        if not refused_for_an_unknown_id(err):
            raise
        if any(is_fresh(c.row, ctx.now()) for c in claims):
            return [retry_later(err.code, f"{not_known_yet} ({err})", fresh=True, claims=claims)]
        if len(claims) == 1:
            return [failed(err.code, f"{not_known}: {err}", claims=claims)]
        half = len(claims) // 2
        return [
            *send_splitting(
                ctx,
                claims[:half],
                send,
                sent,
                not_known_yet=not_known_yet,
                not_known=not_known,
                holds=holds,
            ),
            *send_splitting(
                ctx,
                claims[half:],
                send,
                sent,
                not_known_yet=not_known_yet,
                not_known=not_known,
                holds=holds,
            ),
        ]
    # New ids: made by this job's creates (answered, or found by a look-up) in the last
    # minute; a restored or found-there id is old.
    new = [
        c
        for c in claims
        if getattr(c.row, "settled_by", None) in ("create", "lookup") and is_fresh(c.row, ctx.now())
    ]
    if holds is not None and new and not ctx.dry_run:
        newest = max(new, key=lambda c: c.row.settled_at or 0.0)
        if not _holds(holds, newest):
            return [
                retry_later(
                    "not_applied_yet",
                    f"{not_known_yet}: the API answered, but {newest.row.email} does not "
                    "have it yet (a new id skipped); sent again later",
                    fresh=True,
                    claims=claims,
                )
            ]
    return [sent(claims)]


def _holds(holds: Callable[[StepClaim], bool], claim: StepClaim) -> bool:
    """`holds(claim)`; an id the service does not know yet holds nothing. A read back that
    fails otherwise (no permission to read, a server error its retries did not clear) cannot
    say: the batch's success stands, and a warning says it went unchecked."""
    from jobrunner.genesys import ApiError, TransportError
    from jobrunner.log import get_logger

    try:
        return holds(claim)
    except ApiError as err:
        if refused_for_an_unknown_id(err):
            return False
        problem = str(err)
    except TransportError as err:
        problem = str(err)
    get_logger("jobrunner.steps").warning(
        "batch.unchecked", step=claim.kind, user_id=claim.row.user_id, error=problem
    )
    return True


def one_if(wanted: bool) -> list[str]:
    """A plan of one step (target "") when `wanted`."""
    return [""] if wanted else []


def unknown(kind: str, name: str) -> Outcome:
    """A name the org does not have: the step cannot be done."""
    return failed("unknown_name", f"{kind} {name!r}: not in the org (see `jobrunner check`)")
