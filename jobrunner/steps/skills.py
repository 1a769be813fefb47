"""skills: every skill a row asks for, with its proficiency.

Sends: PATCH /api/v2/users/{userId}/routingskills/bulk, 50 skills a call (the API's limit).
For a person brought in line with the file, the user's skills are read first and only those
missing or at another proficiency are sent. Done: every call succeeded. Safe to repeat: it
adds or updates, never removes. (What it shares with languages: steps/proficiency.py.)
"""

from __future__ import annotations

from jobrunner.steps.proficiency import PER_CALL, levels_step

KIND = "skills"
__all__ = ["KIND", "PER_CALL", "STEP"]

STEP = levels_step(
    KIND,
    want="skill",
    add="add_skills",
    read="user_skills",
    column="skills",
    permission="routing:skill:assign",
    levels_of=lambda row: row.skill_levels,
)
