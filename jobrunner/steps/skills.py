"""skills: every skill a row asks for, with its proficiency.

Sends: PATCH /api/v2/users/{userId}/routingskills/bulk, 50 skills a call (the API's limit).
For a person who was there before the job, the user's skills are read first and only those
missing or at another proficiency are sent. Done: every call succeeded. Safe to repeat: it
adds or updates, never removes.
"""

from __future__ import annotations

from typing import Any

from jobrunner.ledger import StepClaim
from jobrunner.steps import StepFailed, brings_in_line

KIND = "skills"
PER_CALL = 50


def claim(ctx: Any) -> list[StepClaim]:
    return ctx.ledger.claim_steps(KIND, ctx.owner, ctx.clock(), ctx.lease_s)


def skills_of(ctx: Any, claim: StepClaim) -> dict[str, tuple[str, float]]:
    """skill id -> (name, proficiency)."""
    skills = {}
    for name, _key, _division, level in ctx.ledger.wants_of(claim.row.id, "skill"):
        skill_id = ctx.resolution.id_of("skill", name)
        if skill_id is None:
            raise StepFailed(
                "unknown_name", f"skill {name!r}: not in the org (see `jobrunner check`)"
            )
        skills[skill_id] = (name, float(level or 0))
    return skills


def perform(ctx: Any, claims: list[StepClaim]) -> None:
    (claim,) = claims
    skills = skills_of(ctx, claim)
    user_id = claim.row.user_id
    detail = f"{len(skills)} skills"
    if brings_in_line(claim.row):
        held = ctx.call_reading(KIND, ctx.client.user_skills, user_id)
        skills = {i: s for i, s in skills.items() if held.get(i) != s[1]}
        if not skills:
            ctx.done(claims, "no change")
            return
        detail = "set " + ", ".join(f"{name} {level:g}" for name, level in skills.values())
    wanted = [(skill_id, level) for skill_id, (_name, level) in skills.items()]
    for start in range(0, len(wanted), PER_CALL):
        ctx.call(KIND, ctx.client.add_skills, user_id, wanted[start : start + PER_CALL])
    ctx.done(claims, detail)
