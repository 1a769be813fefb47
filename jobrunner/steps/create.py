"""create: POST /api/v2/users, exactly once, whatever fails and whenever the process dies.

Sends: name, email, division, title, department, and the work phone and extension, in one
create. Done: `created` with the user's id (its steps become due a few seconds later), or
`exists` when the person was there before the job (their steps are skipped, or brought in
line with --update-existing).

The doubt rules, which make a create happen exactly once, live here and nowhere else:

* A row's attempt is committed (`in_doubt = 1`, `work.mark_sent`) after the limiter lets
  the request go and before it is sent.
* A create that was never answered (timeout, dropped connection, 5xx, a crash mid-request)
  leaves the row in doubt. Before creating it again the email is looked up: a user who
  matches every field we sent (`is_ours`) is ours (`created`, settled by look-up), one who
  differs was there before (`exists`), nobody means create again. Email is unique, so even
  a stale search index can at worst produce a 409, which for a row in doubt is resolved by
  another look-up, and never by another create (`in_doubt = 2`).
* A 409 for a row that was never in doubt means the person was there before the job.
* The row's values are checked again with ingest's own rules before they are sent: a ledger
  damaged on disk never sends what ingest would have refused.

Everything else (429s, network failures, backoff, attempts, recording) is the rule every
step shares (jobrunner/record.py).
"""

from __future__ import annotations

from jobrunner.errors import ConfigError, JobrunnerError
from jobrunner.genesys import ApiError, CallError, FoundUser, NewUser, digits_of
from jobrunner.ledger.model import Row
from jobrunner.log import get_logger
from jobrunner.steps.contract import (
    RECORDED,
    Context,
    Outcome,
    RowWork,
    Settled,
    StepKind,
    Stopping,
    StopRun,
    done,
    failed,
    give_back,
    retry_later,
    with_current_version,
)
from jobrunner.validation import recheck

KIND = "create"
# Doubt levels of a row (the ledger's in_doubt column).
MAYBE_SENT = 1  # a create was sent and never answered: look the email up before creating
CONFLICT_SEEN = 2  # ... and a later create got 409: only look up, never create again
_LAGGING_INDEX = "a create got 409 (email in use) but the search does not show the user yet"
_UNRESOLVED = (
    "conflict.unresolved",
    "a user with this email exists but the search has not shown it; it may be the one this "
    "job created: `jobrunner run --retry-failed` looks it up again and never creates it twice",
)
# How far our clock and the API's may disagree when a user's dateModified is compared with
# the time our first create was sent.
CLOCK_SKEW_S = 120.0

log = get_logger("jobrunner.create")


def perform(ctx: Context, work: RowWork) -> Outcome:
    outcome = _perform(ctx, work)
    if outcome.what == "retry" and work.doubt == CONFLICT_SEEN and outcome.exhausted is None:
        # A user holds this email and may be ours: never failed as if nobody were there.
        outcome = retry_later(outcome.code or "", outcome.message or "", exhausted=_UNRESOLVED)
    return outcome


def _perform(ctx: Context, work: RowWork) -> Outcome:
    row = work.row
    problem = recheck(row)
    if problem:
        return failed(
            "ledger_row_invalid",
            f"the ledger row no longer passes ingest's checks ({problem}): the ledger file "
            "may be damaged; nothing was sent",
        )
    new = new_user(ctx, row)
    if new is None:
        return failed(
            "unknown_name", f"division {row.division!r}: not in the org (see `jobrunner check`)"
        )
    if row.settled_by == "restoring" and row.user_id:
        return _resume_restore(ctx, work, row.user_id)
    if row.settled_by == "rolled_back" and row.user_id:
        # --recreate-rolled-back: the user this ledger deleted is known by its id, so it is
        # read and restored directly, never searched for (the search index lags behind a
        # delete) and never created again.
        if not work.mark_restoring(row.user_id):
            return give_back()
        return _resume_restore(ctx, work, row.user_id)
    if work.doubt:
        settled = _settle_by_lookup(ctx, work, new)
        if settled is not None:
            return settled
        if work.doubt == CONFLICT_SEEN:
            # A 409 showed a user with this email exists, and the search does not show it
            # yet (its index lags): never create again, only look again later.
            return retry_later("conflict.unresolved", _LAGGING_INDEX)
    return _send(ctx, work, new)


def new_user(ctx: Context, row: Row) -> NewUser | None:
    """What the create sends for `row`; None when its division has no id (unknown name)."""
    division_id = row.division_id
    if row.division and not division_id:
        division_id = ctx.names.id_of("division", row.division)
        if division_id is None:
            return None
    return NewUser(
        name=row.name,
        email=row.email,
        phone=row.phone_number,
        division_id=division_id,
        title=row.title,
        department=row.department,
        extension=row.extension,
    )


# -- the create ------------------------------------------------------------------------------


def _send(ctx: Context, work: RowWork, new: NewUser) -> Outcome:
    problems = ctx.names.problems(work.row)
    if problems:  # never sent: a row that names something unknown is not created at all
        message = "; ".join(problems[:3]) + (f" and {len(problems) - 3} more" * (len(problems) > 3))
        return failed("unknown_name", f"{message} (see `jobrunner check`)")
    try:
        created = ctx.call(
            KIND,
            ctx.client.create_user,
            new,
            before_send=lambda: work.mark_sent(new.division_id),
        )
    except ApiError as err:
        if err.status == 409:
            return _conflict(ctx, work, new, err)
        if err.status == 403:
            return _refused(work.row, new, err)
        work.doubt = max(work.doubt, int(err.maybe_acted))  # a 5xx may have acted
        raise
    except CallError as err:
        work.doubt = max(work.doubt, int(err.maybe_acted))  # the request may have arrived
        raise
    return done(
        settled=Settled(
            "created",
            user_id=created.id,
            user_version=created.version,
            settled_by="create",
            settled_at=ctx.now(),
            steps="pending",
        )
    )


def _conflict(ctx: Context, work: RowWork, new: NewUser, err: ApiError) -> Outcome:
    work.answered = True  # the create was sent and answered: its attempt stands
    if work.doubt:
        # Our own unanswered create may be the one holding this email.
        work.doubt = CONFLICT_SEEN
        settled = _settle_by_lookup(ctx, work, new)
        if settled is not None:
            return settled
        return retry_later(err.code, str(err))
    return _record_exists(ctx, work)


def _refused(row: Row, new: NewUser, err: ApiError) -> Outcome:
    if not row.division:
        raise StopRun(
            ConfigError(
                f"the API refused to create users ({err.code}: {err.message}); give the "
                "OAuth client a role with the directory:user:add permission. Every row is "
                "still pending"
            )
        )
    return failed(
        err.code,
        f"{err} (the OAuth client may lack access to division {row.division} {new.division_id})",
    )


# -- look-ups ---------------------------------------------------------------------------------


def _lookup(ctx: Context, email: str) -> FoundUser | None:
    """Search by email (a read: 429s and passing failures are tried again)."""
    try:
        found: FoundUser | None = ctx.read("search", ctx.client.find_user_by_email, email)
        return found
    except ApiError as err:
        if err.status in (401, 403):
            raise StopRun(
                ConfigError(
                    f"the API refused a user search ({err}); the OAuth client needs "
                    "directory:user:view to check unanswered creates. Every unfinished row "
                    "is still pending"
                )
            ) from None
        raise


def _look_again(err: CallError, what: str = "") -> Outcome:
    """A look-up (or restore) that failed: a row in doubt never fails on it at once; it is
    tried again after a backoff (network trouble that reached nothing gives the row back)."""
    if getattr(err, "kind", None) == "connect":
        raise err
    return retry_later(getattr(err, "code", "call.failed"), f"{what}{err}")


def _settle_by_lookup(ctx: Context, work: RowWork, new: NewUser) -> Outcome | None:
    """For a row in doubt: the outcome the look-up settles it with (or a retry); None when
    nobody has this email (as far as the search shows)."""
    try:
        found = _lookup(ctx, work.row.email)
    except CallError as err:
        return _look_again(err)
    if found is None:
        return None
    if found.state == "deleted" and _may_restore(ctx, work.row, found):
        return _restore(ctx, work, found.id, found.version)
    if is_ours(new, found) and _not_older_than_our_create(work.row, found):
        return done(
            settled=Settled(
                "created",
                user_id=found.id,
                settled_by="lookup",
                settled_at=ctx.now(),
                user_state=found.state,
                steps="pending",
            )
        )
    if found.state == "deleted":
        note = _deleted_note()
    elif is_ours(new, found):
        note = (
            "a user matching every field, last changed before this job's first create was "
            "sent, was already there"
        )
    else:
        note = f"a different user with this email was already there (state {found.state})"
    return done(settled=_exists(ctx, work.row, found.id, found.state, note))


def _record_exists(ctx: Context, work: RowWork) -> Outcome:
    """409 on a clean row: the person was there before the job. One search for the id.

    Without --update-existing or --restore-deleted the outcome is recorded first and the id
    added when the search brings it (the row's one log event is written then). With either
    flag the search comes first: a deleted user is restored, a live one is brought in line
    with the file.
    """
    if ctx.restore_deleted or ctx.update_existing or work.row.settled_by == "rolled_back":
        return _exists_by_lookup(ctx, work)
    if not work.settle_now(_exists(ctx, work.row, None, None, None), quiet=True):
        return RECORDED
    state: str | None = None
    user_id: str | None
    note: str | None
    try:
        found = _lookup(ctx, work.row.email)
    except (Stopping, StopRun):
        # Left without a note: the reports' profiles wait for the next run's look-up.
        log.info(
            "row.exists",
            line=work.row.line,
            email=work.row.email,
            user_id=None,
            note="the id is looked up by the next run",
        )
        raise
    except CallError as err:
        if err.retryable:
            work.add_found(None, f"the id is looked up by the next run ({err})", None)
            return RECORDED
        user_id, note = None, lookup_failed(err)
    except JobrunnerError as err:
        user_id, note = None, lookup_failed(err)
    else:
        user_id, note = existing_user(found)
        state = found.state if found is not None else None
    work.add_found(user_id, note, state)
    return RECORDED


def _exists_by_lookup(ctx: Context, work: RowWork) -> Outcome:
    """The 409's user, found before anything is recorded: restored when deleted (and asked
    for), else `exists` (brought in line with the file when asked for)."""
    try:
        found = _lookup(ctx, work.row.email)
    except CallError as err:
        return _look_again(err)
    if found is None:  # the index lags behind the 409: look again later
        return retry_later("conflict.unresolved", _LAGGING_INDEX)
    if found.state == "deleted" and _may_restore(ctx, work.row, found):
        return _restore(ctx, work, found.id, found.version)
    user_id, note = existing_user(found)
    if found.state == "deleted":
        note = _deleted_note()
    return done(settled=_exists(ctx, work.row, user_id, found.state, note))


def _not_older_than_our_create(row: Row, found: FoundUser) -> bool:
    """A user last modified well before our first create was sent was there before the
    job, however alike: not ours. (Unknown times cannot tell: then it counts as ours.)"""
    sent = row.first_sent_at
    if found.modified is None or sent is None:
        return True
    return found.modified >= sent - CLOCK_SKEW_S


def is_ours(new: NewUser, user: FoundUser) -> bool:
    """Is `user` the one we (may have) created? Every field we sent must agree.

    Name, email, title and department must be equal (the API leaves empty fields out of
    its JSON, so a missing title is an empty one). A division or an address list the
    search result does not show at all does not count against it.

    Phones are compared as the client reads them back (`read_phone`, `work_phone`: the
    four shapes Genesys answers in), so a number sent with an extension and given back
    only in the display still agrees. The number sent must be among the user's phone
    numbers, compared by their digits since the API may format them, and the user has
    none if we sent none; the extension must be the work phone's, and the user has none
    if we sent none.
    """

    def agrees(sent: str | None, found: str | None) -> bool:
        return (sent or "").strip() == (found or "").strip()

    if user.state == "deleted":  # a deleted user is never the one we just created
        return False
    if (user.email or "").lower() != new.email.lower():
        return False
    if not user.name or user.name.strip() != new.name.strip():
        return False
    if new.division_id and user.division_id not in (None, new.division_id):
        return False
    if not (agrees(new.title, user.title) and agrees(new.department, user.department)):
        return False
    if user.phones is not None:
        digits = {digits_of(p) for p in user.phones}
        if new.phone and digits_of(new.phone) not in digits:
            return False
        if not new.phone and digits:
            return False
        if not agrees(new.extension, user.extension):
            return False
    return True


# -- restoring a deleted user -------------------------------------------------------------------


def _may_restore(ctx: Context, row: Row, found: FoundUser) -> bool:
    """--restore-deleted, or the very user a rollback of this ledger deleted."""
    ours = row.settled_by == "rolled_back" and found.id == row.user_id
    return bool(ctx.restore_deleted or ours)


def _restore(ctx: Context, work: RowWork, user_id: str, version: int | None) -> Outcome:
    """PATCH {state: active, version} (the API takes nothing else with it); then the row is a
    new person: every field and step of the file is applied again."""
    if not work.mark_restoring(user_id):
        return give_back()

    def deleted_version() -> int:
        return int(ctx.read("restore", ctx.client.get_user, user_id, state="deleted").version)

    def restore(version: int) -> int:
        return int(ctx.call("restore", ctx.client.restore_user, user_id, version))

    try:
        new_version = with_current_version(
            ctx, "restore", user_id, version, restore, read=deleted_version
        )
        if isinstance(new_version, Outcome):
            return new_version
    except ApiError as err:
        if err.status in (404, 409) or err.retryable:
            # 404: no longer deleted (restored meanwhile?); 409: another version. The next
            # attempt reads the user again and finishes or repeats the restore.
            return retry_later(err.code, f"restoring the user: {err}")
        return failed(err.code, f"could not restore the deleted user {user_id}: {err}")
    except CallError as err:
        return _look_again(err, "restoring the user: ")
    return _restored(ctx, work.row, user_id, new_version)


def _resume_restore(ctx: Context, work: RowWork, user_id: str) -> Outcome:
    """A restore a crash (or a failure) cut short: finish it, or send it again."""
    try:
        user = ctx.read("restore", ctx.client.get_user, user_id)
    except ApiError as err:
        if err.status == 404:
            return _restore(ctx, work, user_id, None)  # still deleted
        return _look_again(err, "restoring the user: ")
    except CallError as err:
        return _look_again(err, "restoring the user: ")
    return _restored(ctx, work.row, user_id, user.version)


# -- what a row becomes ---------------------------------------------------------------------------


def _restored(ctx: Context, row: Row, user_id: str, version: int | None) -> Outcome:
    """The deleted user is active again: the row is created by restore, and brought in line
    with the file like a person who was there (every field and step applied again)."""
    return done(
        settled=Settled(
            "created",
            user_id=user_id,
            user_version=version,
            settled_by="restore",
            settled_at=ctx.now(),
            user_state="active",
            steps="pending",
            extra_steps=ctx.brought_in_line_steps(row),
        )
    )


def _exists(
    ctx: Context, row: Row, user_id: str | None, state: str | None, note: str | None
) -> Settled:
    """The person was there before the job: their steps are skipped, or brought in line with
    the file under --update-existing (a live user whose id is known)."""
    live = state != "deleted" and user_id is not None
    in_line = ctx.update_existing and live
    return Settled(
        "exists",
        user_id=user_id,
        settled_by="conflict",
        user_state=state,
        note=note,
        steps="pending" if in_line else "skipped",
        extra_steps=ctx.brought_in_line_steps(row) if in_line else None,
    )


def existing_user(found: FoundUser | None) -> tuple[str | None, str | None]:
    """What a look-up for an `exists` row gives the ledger: (user id, note)."""
    if found is None:
        return None, "the search did not return the existing user"
    if found.state == "deleted":
        return found.id, _deleted_note()
    inactive = found.state not in (None, "active")
    return found.id, f"the existing user is {found.state}" if inactive else None


def _deleted_note() -> str:
    return "the user with this email is deleted: `jobrunner run --restore-deleted` restores them"


def lookup_failed(err: JobrunnerError) -> str:
    return f"could not look up the existing user's id ({err})"


STEP = StepKind(
    KIND,
    perform,
    calls=("create", "creates"),
    permission="directory:user:add",
    claim="row",
    names=("division",),
)
