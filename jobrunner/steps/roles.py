"""roles: every role grant a row asks for, in one call.

Sends: POST /api/v2/authorization/subjects/{userId}/bulkadd with all the row's grants
(a role without [division] is granted in the division the user was created in, Home when
none). For a person who was there before the job, the user's grants are read first and only
the missing ones are sent (never removes one). Done: the call succeeded (or nothing was
missing). Safe to repeat: a grant the user holds already is success.
"""

from __future__ import annotations

from jobrunner.ledger.model import StepClaim
from jobrunner.steps.contract import (
    Context,
    Outcome,
    StepKind,
    brings_in_line,
    done,
    one_if,
    unknown,
)

KIND = "roles"


def grants_of(
    ctx: Context, claim: StepClaim, own_division: str | None = None
) -> dict[tuple[str, str], str] | Outcome:
    """(role id, division id) -> "Role in Division", for every role the row asks for. A role
    without [division] goes in the row's division: the file's, else `own_division` (where a
    person who was there before is), else Home (where a new user without one is created).
    An outcome instead when a name is not in the org."""
    grants: dict[tuple[str, str], str] = {}
    for name, _key, division, _level in ctx.wants(claim.row, "role"):
        role_id = ctx.names.id_of("role", name)
        if role_id is None:
            return unknown("role", name)
        if division:
            division_id = ctx.names.id_of("division", division)
            if division_id is None:
                return unknown("division", division)
        else:
            division_id = claim.row.division_id or own_division or ctx.names.home_division_id()
        where = division or claim.row.division or "the user's division"
        grants.setdefault((role_id, division_id), f"{name} in {where}")
    return grants


def perform(ctx: Context, claims: list[StepClaim]) -> Outcome:
    (claim,) = claims
    user_id = claim.row.user_id
    own_division = None
    if brings_in_line(claim.row) and not claim.row.division_id:
        own_division = ctx.read(KIND, ctx.client.get_user, user_id).division_id
    grants = grants_of(ctx, claim, own_division)
    if isinstance(grants, Outcome):
        return grants
    detail = f"{len(grants)} grants"
    if brings_in_line(claim.row):
        held = ctx.read(KIND, ctx.client.user_grants, user_id)
        grants = {g: label for g, label in grants.items() if g not in held}
        if not grants:
            return done("no change")
        detail = "added " + ", ".join(grants.values())
    ctx.call(KIND, ctx.client.grant_roles, user_id, list(grants))
    return done(detail)


STEP = StepKind(
    KIND,
    perform,
    calls=("for roles", "for roles"),
    permission="authorization:grant:add",
    names=("role", "division"),
    fields=("roles_divisions", "division"),
    plan=lambda row: one_if(bool(row.roles)),
)
