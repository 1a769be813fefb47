"""division: a person who was there before the job (or restored) moves to the file's division.

Sends: POST /api/v2/authorization/divisions/{divisionId}/objects/USER, only when the user
is in another division (read first). New users are created in their division: they need
no move, so the step is only planned for people brought in line with the file. Done: the
user is in the file's division. Safe to repeat.
"""

from __future__ import annotations

from jobrunner.ledger.model import StepClaim
from jobrunner.steps.contract import Context, Outcome, StepKind, done, failed, one_if

KIND = "division"


def perform(ctx: Context, claims: list[StepClaim]) -> Outcome:
    (claim,) = claims
    row = claim.row
    division_id = row.division_id or ctx.names.id_of("division", row.division or "")
    if division_id is None:
        return failed("unknown_name", f"division {row.division!r}: not in the org")
    user = ctx.read(KIND, ctx.client.get_user, row.user_id)
    if user.division_id == division_id:
        return done("no change")
    ctx.call(KIND, ctx.client.move_to_division, division_id, [row.user_id])
    return done(f"moved to {row.division}")


STEP = StepKind(
    KIND,
    perform,
    calls=("for divisions", "for divisions"),
    permission="authorization:division:edit",
    in_line=lambda row: one_if(row.division is not None),
    fields=("division",),
)
