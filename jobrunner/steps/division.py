"""division: a person who was there before the job (or restored) moves to the file's division.

Sends: POST /api/v2/authorization/divisions/{divisionId}/objects/USER, only when the user
is in another division (read first). New users are created in their division: they need
no move. Done: the user is in the file's division. Safe to repeat.
"""

from __future__ import annotations

from typing import Any

from jobrunner.ledger import StepClaim
from jobrunner.steps import StepFailed

KIND = "division"


def claim(ctx: Any) -> list[StepClaim]:
    return ctx.ledger.claim_steps(KIND, ctx.owner, ctx.clock(), ctx.lease_s)


def perform(ctx: Any, claims: list[StepClaim]) -> None:
    (claim,) = claims
    row = claim.row
    division_id = row.division_id or ctx.resolution.id_of("division", row.division or "")
    if division_id is None:
        raise StepFailed("unknown_name", f"division {row.division!r}: not in the org")
    user = ctx.call_reading(KIND, ctx.client.get_user, row.user_id)
    if user.division_id == division_id:
        ctx.done(claims, "no change")
        return
    ctx.call(KIND, ctx.client.move_to_division, division_id, [row.user_id])
    ctx.done(claims, f"moved to {row.division}")
