"""profile: the user's manager and work location.

Sends: PATCH /api/v2/users/{userId} with the user's version and only `manager` and/or
`locations`. A report's profile waits until its manager (a row of the same ledger) has a
user id; a manager whose create failed fails this step. On a version mismatch (409) the
user is read and the PATCH sent again with its version. Done: the PATCH succeeded. Safe to
repeat: it sets values, it adds nothing.
"""

from __future__ import annotations

from typing import Any

from jobrunner.genesys import ApiError
from jobrunner.ledger import StepClaim
from jobrunner.resolve import MANAGER_IN_LEDGER
from jobrunner.steps import StepFailed

KIND = "profile"


def claim(ctx: Any) -> list[StepClaim]:
    return ctx.ledger.claim_steps(KIND, ctx.owner, ctx.clock(), ctx.lease_s)


def manager_id(ctx: Any, email: str) -> str:
    found = ctx.resolution.id_of("manager", email)
    if found is None:
        raise StepFailed("unknown_name", f"unknown manager {email!r} (see `jobrunner check`)")
    if found != MANAGER_IN_LEDGER:
        return str(found)
    row = ctx.ledger.manager_row(email)
    if row is None or not row["user_id"]:
        where = f"line {row['line']} of {row['source']}" if row else "no row"
        why = (row or {}).get("error_message") or (row or {}).get("status") or "gone"
        raise StepFailed("manager_missing", f"the manager {email} ({where}) has no user: {why}")
    return str(row["user_id"])


def changes(ctx: Any, claim: StepClaim) -> dict[str, str]:
    row = claim.row
    wanted: dict[str, str] = {}
    if row.email_manager:
        wanted["manager_id"] = manager_id(ctx, row.email_manager)
    if row.location_work:
        location = ctx.resolution.id_of("location", row.location_work)
        if location is None:
            raise StepFailed("unknown_name", f"unknown location {row.location_work!r}")
        wanted["location_id"] = location
    return wanted


def perform(ctx: Any, claims: list[StepClaim]) -> None:
    (claim,) = claims
    row = claim.row
    wanted = changes(ctx, claim)
    version = row.user_version
    if version is None:
        version = ctx.call_reading(KIND, ctx.client.get_user, row.user_id).version
    try:
        version = ctx.call(KIND, ctx.client.update_user, row.user_id, version, **wanted)
    except ApiError as err:
        if err.status != 409:
            raise
        current = ctx.call_reading(KIND, ctx.client.get_user, row.user_id)
        version = ctx.call(KIND, ctx.client.update_user, row.user_id, current.version, **wanted)
    ctx.ledger.set_user_version(row.id, version)
    ctx.done(claims, ", ".join(k.removesuffix("_id") for k in wanted))
