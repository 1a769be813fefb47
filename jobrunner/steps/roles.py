"""roles: every role grant a row asks for, in one call.

Sends: POST /api/v2/authorization/subjects/{userId}/bulkadd with all the row's grants
(a role without [division] is granted in the division the user was created in, Home when
none). Done: the call succeeded. Safe to repeat: a grant the user holds already is success.
"""

from __future__ import annotations

from typing import Any

from jobrunner.ledger import StepClaim
from jobrunner.steps import StepFailed

KIND = "roles"


def claim(ctx: Any) -> list[StepClaim]:
    return ctx.ledger.claim_steps(KIND, ctx.owner, ctx.clock(), ctx.lease_s)


def grants_of(ctx: Any, claim: StepClaim) -> list[tuple[str, str]]:
    """(role id, division id) for every role the row asks for."""
    grants = []
    for name, _key, division, _level in ctx.ledger.wants_of(claim.row.id, "role"):
        role_id = ctx.resolution.id_of("role", name)
        if division:
            division_id = ctx.resolution.id_of("division", division)
        else:
            division_id = claim.row.division_id or ctx.home_division_id()
        if role_id is None or division_id is None:
            missing = f"role {name!r}" if role_id is None else f"division {division!r}"
            raise StepFailed("unknown_name", f"unknown {missing} (see `jobrunner check`)")
        if (role_id, division_id) not in grants:
            grants.append((role_id, division_id))
    return grants


def perform(ctx: Any, claims: list[StepClaim]) -> None:
    (claim,) = claims
    grants = grants_of(ctx, claim)
    ctx.call(KIND, ctx.client.grant_roles, claim.row.user_id, grants)
    ctx.done(claims, f"{len(grants)} grants")
