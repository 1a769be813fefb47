"""roles: every role grant a row asks for, in one call.

Sends: POST /api/v2/authorization/subjects/{userId}/bulkadd with all the row's grants
(a role without [division] is granted in the division the user was created in, Home when
none). For a person who was there before the job, the user's grants are read first and only
the missing ones are sent (never removes one). Done: the call succeeded (or nothing was
missing). Safe to repeat: a grant the user holds already is success.
"""

from __future__ import annotations

from typing import Any

from jobrunner.ledger import StepClaim
from jobrunner.steps import StepFailed, brings_in_line

KIND = "roles"


def claim(ctx: Any) -> list[StepClaim]:
    return ctx.ledger.claim_steps(KIND, ctx.owner, ctx.clock(), ctx.lease_s)


def grants_of(
    ctx: Any, claim: StepClaim, own_division: str | None = None
) -> dict[tuple[str, str], str]:
    """(role id, division id) -> "Role in Division", for every role the row asks for. A role
    without [division] goes in the row's division: the file's, else `own_division` (where a
    person who was there before is), else Home (where a new user without one is created)."""
    grants: dict[tuple[str, str], str] = {}
    for name, _key, division, _level in ctx.ledger.wants_of(claim.row.id, "role"):
        role_id = ctx.resolution.id_of("role", name)
        if division:
            division_id = ctx.resolution.id_of("division", division)
        else:
            division_id = claim.row.division_id or own_division or ctx.home_division_id()
        if role_id is None or division_id is None:
            missing = f"role {name!r}" if role_id is None else f"division {division!r}"
            raise StepFailed("unknown_name", f"{missing}: not in the org (see `jobrunner check`)")
        where = division or claim.row.division or "the user's division"
        grants.setdefault((role_id, division_id), f"{name} in {where}")
    return grants


def perform(ctx: Any, claims: list[StepClaim]) -> None:
    (claim,) = claims
    user_id = claim.row.user_id
    own_division = None
    if brings_in_line(claim.row) and not claim.row.division_id:
        own_division = ctx.call_reading(KIND, ctx.client.get_user, user_id).division_id
    grants = grants_of(ctx, claim, own_division)
    detail = f"{len(grants)} grants"
    if brings_in_line(claim.row):
        held = ctx.call_reading(KIND, ctx.client.user_grants, user_id)
        grants = {g: label for g, label in grants.items() if g not in held}
        if not grants:
            ctx.done(claims, "no change")
            return
        detail = "added " + ", ".join(grants.values())
    ctx.call(KIND, ctx.client.grant_roles, user_id, list(grants))
    ctx.done(claims, detail)
