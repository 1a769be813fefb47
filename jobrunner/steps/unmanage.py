"""clear_manager: a person who reports to someone a rollback deletes loses that manager
(`jobrunner rollback --clear-managers`).

Sends: PATCH /api/v2/users/{userId} with the version and an empty `manager` (what clears it),
only when the user's manager is still the person rolled back (read first: someone may have
given them another since). Done: the manager is cleared, or was another. Safe to repeat.
"""

from __future__ import annotations

from jobrunner.ledger.model import StepClaim
from jobrunner.steps.contract import Context, Outcome, StepKind, done, with_current_version

KIND = "clear_manager"


def perform(ctx: Context, claims: list[StepClaim]) -> Outcome:
    (claim,) = claims
    row = claim.row
    manager = ctx.manager_row(row.email_manager or "")
    manager_id = manager["user_id"] if manager else None
    user = ctx.read(KIND, ctx.client.get_user, row.user_id)
    if not manager_id or user.manager_id != manager_id:
        return done("no change")
    written = with_current_version(
        ctx,
        KIND,
        user.id,
        user.version,
        lambda version: ctx.call(KIND, ctx.client.update_user, user.id, version, manager_id=""),
    )
    if isinstance(written, Outcome):
        return written
    return done(f"manager {row.email_manager} cleared", user_version=written)


STEP = StepKind(
    KIND,
    perform,
    label="clear manager",
    calls=("to clear a manager", "to clear managers"),
    permission="directory:user:edit",
    run_step=False,
)
