"""The languages step end to end, as the proof that a step is one module: ingest (with the
header names admins write), check, run, report, --update-existing and kill -9 between
steps, through the real SDK against the emulator."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from emulated import finish, kill_9_during
from test_onboarding import emulator, team
from test_second_hour import jobrunner

__all__ = ["emulator"]  # a pytest fixture used by name
RUN = ("run", "--no-progress", "--max-attempts", "30")
LANGUAGES = ["English", "Spanish", "French", "German", "Portuguese"]


def with_languages(people: list[dict[str, str]], seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    for person in people:
        chosen = rng.sample(LANGUAGES, 2)
        person["languages"] = ", ".join(f"{lang}:{rng.randint(0, 5)}" for lang in chosen)
    return people


def write(tmp_path: Path, name: str, people: list[dict[str, str]], header: str) -> Path:
    """The admin UI's columns, and the languages column under the header `header`."""
    from test_onboarding import COLUMNS, admin_file

    text = admin_file(people).splitlines()
    lines = [text[0] + f",{header}"]
    for person, line in zip(people, text[1:], strict=True):
        lines.append(line + f',"{person.get("languages", "")}"')
    assert COLUMNS
    f = tmp_path / name
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f


def languages_of(emu: Any, email: str) -> dict[str, float]:
    return dict(emu.stats()["onboarding"][email]["languages"])


def wanted(person: dict[str, str]) -> dict[str, float]:
    return {
        item.split(":")[0].strip(): float(item.split(":")[1])
        for item in person["languages"].split(",")
    }


def test_languages_are_ingested_checked_sent_and_reported(emulator: Any, tmp_path: Path) -> None:
    people = with_languages(team(12, leads=2, seed=41), seed=41)
    people[0]["languages"] = "Klingon:3"
    emu = emulator()
    db = tmp_path / "l.db"
    f = write(tmp_path, "f.csv", people, "Sprachen")  # the German header
    ingested = jobrunner(db, None, "ingest", str(f))
    assert ingested.exit_code == 0 and "ignored column" not in ingested.output
    checked = jobrunner(db, emu, "check")
    assert checked.exit_code == 1
    assert "language  'Klingon': not in the org; f.csv line 2" in checked.output
    assert "language assignments:" in checked.output
    run = jobrunner(db, emu, *RUN)
    assert run.exit_code == 1 and "for languages" in run.output
    for person in people[1:]:
        assert languages_of(emu, person["email"]) == wanted(person), person["email"]
    report = json.loads(jobrunner(db, None, "report", "--format", "json").output)
    by_email = {r["email"]: r for r in report["rows"]}
    assert by_email[people[1]["email"]]["steps"]["languages"]["status"] == "done"
    assert by_email[people[1]["email"]]["languages"] == people[1]["languages"]
    assert by_email[people[0]["email"]]["status"] == "failed"
    # A language the file gives wrong is refused at ingest, with the line.
    people[2]["languages"] = "English:9"
    fresh = tmp_path / "fresh.db"
    bad = jobrunner(fresh, None, "ingest", str(write(tmp_path, "g.csv", people, "Languages")))
    assert "languages_invalid" in bad.output and "'English:9'" in bad.output


def test_update_existing_sets_only_the_languages_that_differ(emulator: Any, tmp_path: Path) -> None:
    people = with_languages(team(3, leads=1, seed=42), seed=42)
    there = people[0]
    there["languages"] = "English:5, Spanish:2, German:4"
    emu = emulator()
    emu.directory.add_existing({"name": there["name"], "email": there["email"]})
    user_id = next(u["id"] for u in emu.users() if u["email"] == there["email"])
    org = emu.directory.org
    emu.directory.set_languages(
        user_id,
        [
            {"id": org.named("languages", "English")["id"], "proficiency": 3},
            {"id": org.named("languages", "German")["id"], "proficiency": 4},
        ],
    )
    db = tmp_path / "l.db"
    jobrunner(db, None, "ingest", str(write(tmp_path, "f.csv", people, "languages")))
    assert jobrunner(db, emu, *RUN, "--update-existing").exit_code == 0
    assert languages_of(emu, there["email"]) == {"English": 5.0, "Spanish": 2.0, "German": 4.0}
    report = json.loads(jobrunner(db, None, "report", "--format", "json").output)
    changes = next(r for r in report["rows"] if r["email"] == there["email"])["changes"]
    assert [c for c in changes.split("; ") if c.startswith("languages")] == [
        "languages: set English 5, Spanish 2"  # German was at 4 already: not sent
    ]


@pytest.mark.slow
def test_kill_9_between_language_steps_sends_each_once(emulator: Any, tmp_path: Path) -> None:
    people = with_languages(team(40, leads=2, seed=43), seed=43)
    emu = emulator(latency_ms=30, latency_jitter_ms=20, seed=9)
    db = tmp_path / "l.db"
    jobrunner(db, None, "ingest", str(write(tmp_path, "f.csv", people, "Idiomas")))
    kills = kill_9_during(db, emu, RUN, (0.4, 0.8, 0.3))
    assert kills >= 2
    finish(db, emu, *RUN)
    for person in people:
        assert languages_of(emu, person["email"]) == wanted(person), person["email"]
    assert set(emu.stats()["creations_by_email"].values()) == {1}
    with sqlite3.connect(db) as conn:
        assert {s for (s,) in conn.execute("SELECT status FROM steps")} == {"done"}
