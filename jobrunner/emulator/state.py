"""What outlives a request: the state file (users, grants, skills, queue members, locations;
saved atomically, loaded at start), the users that exist before the job, and the onboarding
summary GET /emulator/stats shows."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobrunner.emulator.store import Store


class Snapshots(Store):
    """The onboarding state in names (for the stats) and as data (for the state file)."""

    def onboarding(self) -> dict[str, dict[str, Any]]:
        """Every user's onboarding state keyed by lower-cased email, in names: grants as
        [role, division] pairs, skills and languages {name: proficiency}, queues, manager
        (email), location (the first one's name), division, state."""
        with self._lock:
            users = list(self._users.values())
            grants = {u: list(g) for u, g in self._grants.items()}
            skills = {u: dict(s) for u, s in self._skills.items()}
            languages = {u: dict(s) for u, s in self._languages.items()}
            locations = {u: list(loc) for u, loc in self._locations.items()}
            queues_of: dict[str, list[str]] = defaultdict(list)
            for queue_id, members in self._members.items():
                for user_id in members:
                    queues_of[user_id].append(self.org.name_of("queues", queue_id))
        emails = {u["id"]: u["email"].lower() for u in users}
        summary: dict[str, dict[str, Any]] = {}
        for user in users:
            user_id = user["id"]
            manager_id = (user.get("manager") or {}).get("id")
            held_locations = locations.get(user_id) or []
            first_location = held_locations[0] if held_locations else None
            summary[user["email"].lower()] = {
                "state": user["state"],
                "division": self._divisions.get(user["division"]["id"], {}).get("name", ""),
                "grants": sorted(
                    [self.org.name_of("roles", role_id), self._divisions[division_id]["name"]]
                    for role_id, division_id in grants.get(user_id, [])
                ),
                "skills": {
                    self.org.name_of("skills", skill_id): proficiency
                    for skill_id, proficiency in sorted(skills.get(user_id, {}).items())
                },
                "languages": {
                    self.org.name_of("languages", language_id): proficiency
                    for language_id, proficiency in sorted(languages.get(user_id, {}).items())
                },
                "queues": sorted(queues_of.get(user_id, [])),
                "manager": emails.get(manager_id) if manager_id else None,
                "location": (
                    self.org.name_of("locations", first_location["id"]) if first_location else None
                ),
            }
        return summary

    def export_onboarding(self) -> dict[str, Any]:
        """Grants, skills, languages, queue members and user locations, for the state file."""
        with self._lock:
            return {
                "grants": {
                    user_id: [[role, division, made_at] for (role, division), made_at in g.items()]
                    for user_id, g in self._grants.items()
                    if g
                },
                "skills": {user_id: dict(s) for user_id, s in self._skills.items() if s},
                "languages": {user_id: dict(s) for user_id, s in self._languages.items() if s},
                "queueMembers": {q: list(m) for q, m in self._members.items() if m},
                "userLocations": {u: list(loc) for u, loc in self._locations.items() if loc},
            }

    def load_onboarding(self, data: Mapping[str, Any]) -> int:
        """Restore export_onboarding()'s data after the users are loaded. References to users,
        roles, divisions, skills, languages, queues or locations that are no longer there are
        dropped; returns how many were."""
        dropped = 0
        with self._lock:
            for user_id, grants in (data.get("grants") or {}).items():
                for role_id, division_id, made_at in grants:
                    if (
                        user_id in self._users
                        and self.org.get("roles", role_id) is not None
                        and division_id in self._divisions
                    ):
                        self._grants.setdefault(user_id, {})[(role_id, division_id)] = made_at
                    else:
                        dropped += 1
            for kind, store in (("skills", self._skills), ("languages", self._languages)):
                for user_id, held in (data.get(kind) or {}).items():
                    for object_id, proficiency in held.items():
                        if user_id in self._users and self.org.get(kind, object_id) is not None:
                            store.setdefault(user_id, {})[object_id] = float(proficiency)
                        else:
                            dropped += 1
            for queue_id, members in (data.get("queueMembers") or {}).items():
                for user_id in members:
                    if user_id in self._users and self.org.get("queues", queue_id) is not None:
                        self._members.setdefault(queue_id, {})[user_id] = None
                    else:
                        dropped += 1
            for user_id, locations in (data.get("userLocations") or {}).items():
                kept = [
                    loc
                    for loc in locations
                    if user_id in self._users and self.org.get("locations", loc.get("id"))
                ]
                dropped += len(locations) - len(kept)
                if kept:
                    self._locations[user_id] = kept
        return dropped


# ---- files -------------------------------------------------------------------------------


def read_existing_users(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Users that exist before the job: a JSON list of user dicts, or a CSV whose header has
    name,email and optionally title,department,state,divisionId."""
    path = Path(path)
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("users"), list):
            data = data["users"]
        if not isinstance(data, list) or not all(isinstance(u, dict) for u in data):
            raise ValueError(f"{path}: expected a JSON list of user objects")
        return data
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "email" not in reader.fieldnames:
        raise ValueError(f"{path}: the CSV header must name an email column")
    return [
        {k: v.strip() for k, v in row.items() if k and v is not None and v.strip()}
        for row in reader
    ]


def load_state(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The saved state file, or None when it does not exist yet."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("users"), list):
        raise ValueError(f"{path}: not an emulator state file")
    return data


def save_state(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write atomically: a temporary file in the same directory, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
