"""rollback: delete a user this ledger created (`jobrunner rollback`).

Sends: DELETE /api/v2/users/{userId}. Done: the user is deleted, or already gone (404):
the row becomes `rolled_back` and its other steps stop. Safe to repeat.
"""

from __future__ import annotations

from jobrunner.genesys import ApiError
from jobrunner.ledger.model import StepClaim
from jobrunner.steps.contract import Context, Outcome, StepKind, done, with_current_version

KIND = "rollback"


def perform(ctx: Context, claims: list[StepClaim]) -> Outcome:
    (claim,) = claims
    user_id = str(claim.row.user_id)
    try:
        # A delete can be refused for a version the user had a moment ago: sent again.
        deleted = with_current_version(
            ctx,
            KIND,
            user_id,
            0,
            lambda _version: ctx.call(KIND, ctx.client.delete_user, user_id),
            read=lambda: 0,
        )
        if isinstance(deleted, Outcome):
            return deleted
        detail = "deleted"
    except ApiError as err:
        if err.status != 404:
            raise
        detail = "already gone"
    return done(detail, row_status="rolled_back")


STEP = StepKind(
    KIND,
    perform,
    calls=("delete", "deletes"),
    permission="directory:user:delete",
    run_step=False,
)
