"""What skills and languages share: routing assignments with a proficiency, sent with a
bulk PATCH of the user, 50 a call (the API's limit), which adds or updates and never
removes. For a person brought in line with the file the user's own are read first and only
those missing or at another proficiency are sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

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

PER_CALL = 50


def levels_step(
    kind: str,
    want: str,
    add: str,
    read: str,
    column: str,
    permission: str,
    levels_of: Callable[[Any], Any],
) -> StepKind:
    """A step of one kind of assignment: `want` is its kind in the ledger's wants and its
    names (skill, language), `add`/`read` the client's calls, `column` the row's cell,
    `levels_of(row)` the parsed (name, proficiency) pairs a row of the file gives."""

    def wanted(ctx: Context, claim: StepClaim) -> dict[str, tuple[str, float]] | Outcome:
        """id -> (name, proficiency); an outcome instead when a name is not in the org."""
        found = {}
        for name, _key, _division, level in ctx.wants(claim.row, want):
            object_id = ctx.names.id_of(want, name)
            if object_id is None:
                return unknown(want, name)
            found[object_id] = (name, float(level or 0))
        return found

    def perform(ctx: Context, claims: list[StepClaim]) -> Outcome:
        (claim,) = claims
        levels = wanted(ctx, claim)
        if isinstance(levels, Outcome):
            return levels
        user_id = claim.row.user_id
        detail = f"{len(levels)} {kind}"
        if brings_in_line(claim.row):
            held = ctx.read(kind, getattr(ctx.client, read), user_id)
            levels = {i: lv for i, lv in levels.items() if held.get(i) != lv[1]}
            if not levels:
                return done("no change")
            detail = "set " + ", ".join(f"{name} {level:g}" for name, level in levels.values())
        pairs = [(object_id, level) for object_id, (_name, level) in levels.items()]
        for start in range(0, len(pairs), PER_CALL):
            ctx.call(kind, getattr(ctx.client, add), user_id, pairs[start : start + PER_CALL])
        return done(detail)

    return StepKind(
        kind,
        perform,
        calls=(f"for {kind}", f"for {kind}"),
        permission=permission,
        names=(want,),
        plan=lambda row: one_if(bool(levels_of(row))),
        fields=(column,),
    )
