"""What README.md promises that can be checked mechanically."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_and_env_example_name_the_same_permissions() -> None:
    pattern = re.compile(r"\b[a-z]+:[a-z]+:[a-z]+\b")
    readme = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("Other settings:", 1)[0]
    example = ROOT.joinpath(".env.example").read_text(encoding="utf-8")
    assert set(pattern.findall(section)) == set(pattern.findall(example))
    assert len(set(pattern.findall(example))) >= 9


def test_every_permission_a_step_names_is_in_the_readme() -> None:
    from jobrunner.steps import PERMISSIONS

    readme = ROOT.joinpath("README.md").read_text(encoding="utf-8")
    for permission in PERMISSIONS.values():
        assert f"`{permission}`" in readme, permission
