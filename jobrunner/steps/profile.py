"""profile: the user's manager and work location (and, for people who were there before
the job or were restored, every field the file gives: title, department, phone, extension).

Sends: PATCH /api/v2/users/{userId} with the user's version and only the fields to set. A
report's profile waits until its manager (a row of the same ledger) has a user id: while the
run is still to create the manager, or until a manager's invalid or failed row is fixed; a
manager with no user otherwise (rolled back, not found again) fails this step. For people
already there the user is read first and only what differs is sent (an empty cell changes
nothing); the other contacts the user has are sent back as they were, since `addresses`
replaces them all. On a version mismatch (409, or 400 "does not match") the user is read and
the PATCH sent again. A new user's version moves on its own in its first seconds (other
services attaching to it): once the create's version has been stale for one person, the rest
of the run reads each user's version before its PATCH (two calls) instead of trying the
create's first (one call when it holds, three when it does not). Done: the PATCH succeeded
(or nothing differed). Safe to repeat: it sets values, it adds nothing (a location is set
too: the user's locations become the file's one).
"""

from __future__ import annotations

from typing import Any

from jobrunner.genesys import ApiError, UserDetail, digits_of
from jobrunner.ledger.model import Row, StepClaim
from jobrunner.resolve import MANAGER_IN_LEDGER, held_reason
from jobrunner.steps.contract import (
    Context,
    Outcome,
    StepKind,
    brings_in_line,
    done,
    failed,
    one_if,
    wait_for,
    with_current_version,
)

KIND = "profile"
VERSIONS_MOVE = "versions move"  # the run's memo: a create's version went stale before its PATCH
WORK_PHONE = ("PHONE", "WORK")


def manager_id(ctx: Context, email: str) -> str | Outcome:
    found = ctx.names.id_of("manager", email)
    if found is None:
        return failed("unknown_name", f"manager {email!r}: not found (see `jobrunner check`)")
    if found != MANAGER_IN_LEDGER:
        return str(found)
    row = ctx.manager_row(email)
    if row is None:
        return failed("manager_missing", f"the manager {email} (no row) has no user: gone")
    if row["user_id"]:
        return str(row["user_id"])
    where = f"line {row['line']} of {row['source']}"
    status = row["status"]
    if status in ("invalid", "failed"):
        # The manager's own row can be fixed (a corrected file): the report waits for it.
        return wait_for(
            "manager_held",
            f"waits for its manager {email}: {held_reason(row)}; fix that row and ingest "
            "the file again",
            f"waits for its manager {email}",
        )
    if status in ("pending", "in_progress"):
        # The run creates the manager first (a report's profile is claimed after that):
        # `check` meets this in its plan, a run only if a `check` beside it revived the row.
        return wait_for(
            "manager_pending",
            f"waits for its manager {email} ({where}), whom the run creates first",
            f"manager {email} set once the run creates them ({where})",
        )
    why = row.get("error_message") or status or "gone"
    if status == "exists":
        why += " (each run looks the id up again; then `jobrunner run --retry-failed`)"
    return failed("manager_missing", f"the manager {email} ({where}) has no user: {why}")


def wanted(ctx: Context, row: Row) -> dict[str, Any] | Outcome:
    """The fields this step sets: manager and location; for people brought in line with
    the file also title, department and the work phone. An outcome instead when one of
    them cannot be set."""
    fields: dict[str, Any] = {}
    if row.email_manager:
        manager = manager_id(ctx, row.email_manager)
        if isinstance(manager, Outcome):
            return manager
        fields["manager_id"] = manager
    if row.location_work:
        location = ctx.names.id_of("location", row.location_work)
        if location is None:
            return failed("unknown_name", f"location {row.location_work!r}: not in the org")
        fields["location_id"] = location
    if brings_in_line(row):
        for name in ("title", "department"):
            if getattr(row, name):
                fields[name] = getattr(row, name)
    return fields


def differences(row: Row, fields: dict[str, Any], user: UserDetail) -> dict[str, Any]:
    """What must be sent for the user to be as the file says. Each field the file gives is
    set: the file's location becomes the user's one location (its notes kept when the user
    had it already), as it is for the people this job creates; the other contacts are sent
    back as they are, since `addresses` replaces them all."""
    have = {"manager_id": user.manager_id, "title": user.title, "department": user.department}
    changed = {k: v for k, v in fields.items() if k != "location_id" and have[k] != v}
    location = fields.get("location_id")
    if location and tuple(user.location_ids) != (location,):
        had = [entry for entry in user.locations if str(entry.get("id")) == location]
        changed["locations"] = had[:1] or [{"id": location}]
    # The work phone as Genesys reads it back (any of its four shapes: jobrunner/genesys/
    # contacts.py), so a number that comes back only in the display is not sent again.
    work = [c for c in user.contacts if (c.get("mediaType"), c.get("type")) == WORK_PHONE]
    old = work[0] if work else {}
    phone = row.phone_number or user.phone
    extension = row.extension or user.extension
    if (row.phone_number or row.extension) and (
        not work or (digits_of(user.phone), user.extension) != (digits_of(phone), extension)
    ):
        others = [c for c in user.contacts if c is not old]
        mine = {k: v for k, v in old.items() if k not in ("address", "display", "extension")}
        mine.update({"mediaType": "PHONE", "type": "WORK"})
        if phone:
            mine["address"] = phone
        if extension:
            mine["extension"] = extension
        changed["contacts"] = [*others, mine]
    return changed


def _names(changed: dict[str, Any]) -> str:
    names = {
        "manager_id": "manager",
        "location_id": "location",
        "locations": "location",
        "contacts": "phone",
    }
    return ", ".join(names.get(k, k) for k in changed)


def perform(ctx: Context, claims: list[StepClaim]) -> Outcome:
    (claim,) = claims
    row = claim.row
    fields = wanted(ctx, row)
    if isinstance(fields, Outcome):
        return fields
    user_id = str(row.user_id)  # claimed only once the person has a user
    learnt = ctx.memo(KIND)
    # The create's version, unless this run has seen new users' versions move (then None:
    # read it first).
    version = None if learnt.get(VERSIONS_MOVE) else row.user_version
    if brings_in_line(row):
        user = read_user(ctx, user_id)
        fields = differences(row, fields, user)
        if not fields:
            return done("no change")
        version = user.version
    created_with = version if not brings_in_line(row) else None

    def write(version: int) -> int:
        try:
            return int(ctx.call(KIND, ctx.client.update_user, user_id, version, **fields))
        except ApiError as err:
            if err.version_conflict and created_with is not None and version == created_with:
                learnt[VERSIONS_MOVE] = True
            raise

    written = with_current_version(ctx, KIND, user_id, version, write)
    if isinstance(written, Outcome):
        return written
    detail = ("set " if brings_in_line(row) else "") + _names(fields)
    return done(detail, user_version=written)


EXPAND_TRIES = 3  # reads of a user whose locations the API left out (`expand` is best effort)


def read_user(ctx: Context, user_id: str) -> UserDetail:
    """The user, with the locations expansion when the API gives it: a user read without
    `locations` is read again a few times, since an expansion left out is unknown, not
    empty (treating it as no location would send the location again and lose its notes).
    A user still read without it has no locations, as far as anyone can tell."""
    user: UserDetail = ctx.read(KIND, ctx.client.get_user, user_id)
    for _ in range(EXPAND_TRIES - 1):
        if user.locations_known:
            break
        user = ctx.read(KIND, ctx.client.get_user, user_id)
    return user


def _in_line(row: Row) -> list[str]:
    """A person brought in line gets a profile for every field the file gives."""
    given = (row.email_manager, row.location_work, row.title, row.department)
    return one_if(any(v is not None for v in (*given, row.phone_number, row.extension)))


STEP = StepKind(
    KIND,
    perform,
    calls=("for profiles", "for profiles"),
    permission="directory:user:edit",
    after_manager=True,
    names=("manager", "location"),
    fields=(
        "email_manager",
        "location_work",
        "title",
        "department",
        "phone_number",
        "extension",
    ),
    plan=lambda row: one_if(bool(row.email_manager or row.location_work)),
    in_line=_in_line,
)
