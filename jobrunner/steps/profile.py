"""profile: the user's manager and work location (and, for people who were there before
the job or were restored, every field the file gives: title, department, phone, extension).

Sends: PATCH /api/v2/users/{userId} with the user's version and only the fields to set. A
report's profile waits until its manager (a row of the same ledger) has a user id; a
manager whose create failed fails this step. For people already there the user is read
first and only what differs is sent (an empty cell changes nothing); the other contacts
the user has are sent back as they were, since `addresses` replaces them all. On a version
mismatch (409) the user is read and the PATCH sent again. Done: the PATCH succeeded (or
nothing differed). Safe to repeat: it sets values, it adds nothing (a location is set too:
the user's locations become the file's one).
"""

from __future__ import annotations

from typing import Any

from jobrunner.genesys import ApiError, UserDetail, digits_of
from jobrunner.ledger import Row, StepClaim
from jobrunner.resolve import MANAGER_IN_LEDGER
from jobrunner.steps import StepFailed, brings_in_line

KIND = "profile"
WORK_PHONE = ("PHONE", "WORK")


def claim(ctx: Any) -> list[StepClaim]:
    return ctx.ledger.claim_steps(KIND, ctx.owner, ctx.clock(), ctx.lease_s)


def manager_id(ctx: Any, email: str) -> str:
    found = ctx.resolution.id_of("manager", email)
    if found is None:
        raise StepFailed("unknown_name", f"manager {email!r}: not found (see `jobrunner check`)")
    if found != MANAGER_IN_LEDGER:
        return str(found)
    row = ctx.ledger.manager_row(email)
    if row is None or not row["user_id"]:
        where = f"line {row['line']} of {row['source']}" if row else "no row"
        why = (row or {}).get("error_message") or (row or {}).get("status") or "gone"
        if row and row["status"] == "exists":
            why += " (each run looks the id up again; then `jobrunner run --retry-failed`)"
        raise StepFailed("manager_missing", f"the manager {email} ({where}) has no user: {why}")
    return str(row["user_id"])


def wanted(ctx: Any, row: Row) -> dict[str, Any]:
    """The fields this step sets: manager and location; for people brought in line with
    the file also title, department and the work phone."""
    fields: dict[str, Any] = {}
    if row.email_manager:
        fields["manager_id"] = manager_id(ctx, row.email_manager)
    if row.location_work:
        location = ctx.resolution.id_of("location", row.location_work)
        if location is None:
            raise StepFailed("unknown_name", f"location {row.location_work!r}: not in the org")
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
    work = [c for c in user.contacts if (c.get("mediaType"), c.get("type")) == WORK_PHONE]
    old = work[0] if work else {}
    phone = row.phone_number or old.get("address")
    extension = row.extension or old.get("extension")
    if (row.phone_number or row.extension) and (
        not work
        or (digits_of(old.get("address")), old.get("extension")) != (digits_of(phone), extension)
    ):
        others = [c for c in user.contacts if c is not old]
        mine = {**old, "mediaType": "PHONE", "type": "WORK", "address": phone}
        mine["extension"] = extension
        if row.phone_number:
            mine.pop("display", None)  # the old number's display would describe the old number
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


def perform(ctx: Any, claims: list[StepClaim]) -> None:
    (claim,) = claims
    row = claim.row
    fields = wanted(ctx, row)
    if brings_in_line(row):
        user = ctx.call_reading(KIND, ctx.client.get_user, row.user_id)
        fields = differences(row, fields, user)
        if not fields:
            ctx.done(claims, "no change")
            return
        version = user.version
    else:
        version = row.user_version
        if version is None:
            version = ctx.call_reading(KIND, ctx.client.get_user, row.user_id).version
    try:
        version = ctx.call(KIND, ctx.client.update_user, row.user_id, version, **fields)
    except ApiError as err:
        if err.status != 409:
            raise
        current = ctx.call_reading(KIND, ctx.client.get_user, row.user_id)
        version = ctx.call(KIND, ctx.client.update_user, row.user_id, current.version, **fields)
    ctx.ledger.set_user_version(row.id, version)
    ctx.done(claims, ("set " if brings_in_line(row) else "") + _names(fields))
