"""skills: every skill a row asks for, with its proficiency.

Sends: PATCH /api/v2/users/{userId}/routingskills/bulk, 50 skills a call (the API's limit).
Done: every call succeeded. Safe to repeat: it adds or updates, never removes.
"""

from __future__ import annotations

from typing import Any

from jobrunner.ledger import StepClaim
from jobrunner.steps import StepFailed

KIND = "skills"
PER_CALL = 50


def claim(ctx: Any) -> list[StepClaim]:
    return ctx.ledger.claim_steps(KIND, ctx.owner, ctx.clock(), ctx.lease_s)


def skills_of(ctx: Any, claim: StepClaim) -> list[tuple[str, float]]:
    skills = []
    for name, _key, _division, level in ctx.ledger.wants_of(claim.row.id, "skill"):
        skill_id = ctx.resolution.id_of("skill", name)
        if skill_id is None:
            raise StepFailed("unknown_name", f"unknown skill {name!r} (see `jobrunner check`)")
        skills.append((skill_id, float(level or 0)))
    return skills


def perform(ctx: Any, claims: list[StepClaim]) -> None:
    (claim,) = claims
    skills = skills_of(ctx, claim)
    for start in range(0, len(skills), PER_CALL):
        ctx.call(KIND, ctx.client.add_skills, claim.row.user_id, skills[start : start + PER_CALL])
    ctx.done(claims, f"{len(skills)} skills")
