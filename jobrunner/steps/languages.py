"""languages: every routing language a row asks for, with its proficiency (`English:5`).

Sends: PATCH /api/v2/users/{userId}/routinglanguages/bulk, 50 languages a call. For a person
brought in line with the file, the user's languages are read first and only those missing
or at another proficiency are sent. Done: every call succeeded. Safe to repeat: it adds or
updates, never removes. (What it shares with skills: steps/proficiency.py.)
"""

from __future__ import annotations

from jobrunner.steps.proficiency import levels_step

KIND = "languages"

STEP = levels_step(
    KIND,
    want="language",
    add="add_languages",
    read="user_languages",
    column="languages",
    permission="routing:language:assign",
    levels_of=lambda row: row.language_levels,
)
