"""rollback: delete a user this ledger created (`jobrunner rollback`).

Sends: DELETE /api/v2/users/{userId}. Done: the user is deleted, or already gone (404):
the row becomes `rolled_back` and its other steps stop. Safe to repeat.
"""

from __future__ import annotations

from typing import Any

from jobrunner.genesys import ApiError
from jobrunner.ledger import StepClaim

KIND = "rollback"


def claim(ctx: Any) -> list[StepClaim]:
    return ctx.ledger.claim_steps(KIND, ctx.owner, ctx.clock(), ctx.lease_s)


def perform(ctx: Any, claims: list[StepClaim]) -> None:
    (claim,) = claims
    try:
        ctx.call(KIND, ctx.client.delete_user, claim.row.user_id)
        detail = "deleted"
    except ApiError as err:
        if err.status != 404:
            raise
        detail = "already gone"
    done = ctx.ledger.finish_rollback(claims, ctx.owner, detail)
    ctx.said(claims, "done", done, detail=detail)
