"""skills: every skill a row asks for, with its proficiency.

Sends: PATCH /api/v2/users/{userId}/routingskills/bulk, 50 skills a call (the API's limit).
For a person who was there before the job, the user's skills are read first and only those
missing or at another proficiency are sent. Done: every call succeeded. Safe to repeat: it
adds or updates, never removes.
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

KIND = "skills"
PER_CALL = 50


def skills_of(ctx: Context, claim: StepClaim) -> dict[str, tuple[str, float]] | Outcome:
    """skill id -> (name, proficiency); an outcome instead when a skill is not in the org."""
    skills = {}
    for name, _key, _division, level in ctx.wants(claim.row, "skill"):
        skill_id = ctx.names.id_of("skill", name)
        if skill_id is None:
            return unknown("skill", name)
        skills[skill_id] = (name, float(level or 0))
    return skills


def perform(ctx: Context, claims: list[StepClaim]) -> Outcome:
    (claim,) = claims
    skills = skills_of(ctx, claim)
    if isinstance(skills, Outcome):
        return skills
    user_id = claim.row.user_id
    detail = f"{len(skills)} skills"
    if brings_in_line(claim.row):
        held = ctx.read(KIND, ctx.client.user_skills, user_id)
        skills = {i: s for i, s in skills.items() if held.get(i) != s[1]}
        if not skills:
            return done("no change")
        detail = "set " + ", ".join(f"{name} {level:g}" for name, level in skills.values())
    wanted = [(skill_id, level) for skill_id, (_name, level) in skills.items()]
    for start in range(0, len(wanted), PER_CALL):
        ctx.call(KIND, ctx.client.add_skills, user_id, wanted[start : start + PER_CALL])
    return done(detail)


STEP = StepKind(
    KIND,
    perform,
    calls=("for skills", "for skills"),
    permission="routing:skill:assign",
    names=("skill",),
    fields=("skills",),
    plan=lambda row: one_if(bool(row.skill_levels)),
)
