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


def test_the_architecture_walk_names_files_and_functions_that_exist() -> None:
    """docs/architecture.md walks one row through the code: every file it names exists and
    every function or class it names is defined, so a rename cannot leave it behind."""
    walk = ROOT.joinpath("docs", "architecture.md").read_text(encoding="utf-8")
    sources = "\n".join(
        p.read_text(encoding="utf-8") for p in ROOT.joinpath("jobrunner").rglob("*.py")
    )
    paths = set(re.findall(r"`((?:jobrunner|tests)/[\w/]+\.py)`", walk))
    paths |= {f"jobrunner/{p}" for p in re.findall(r"`((?:ledger|steps|cli)/\w+\.py)`", walk)}
    assert len(paths) >= 20
    for path in paths:
        assert ROOT.joinpath(path).is_file(), path
    names = set(re.findall(r"`([A-Za-z_]\w*(?:\.\w+)?)`", walk))
    defined = set(re.findall(r"^\s*(?:def|class) (\w+)", sources, re.MULTILINE))
    defined |= set(re.findall(r"^(\w+)\s*[:=]", sources, re.MULTILINE))
    words = {"pending", "in_progress", "created", "waiting", "users.csv", "before_send"}
    for name in names - words:
        last = name.split(".")[-1]
        assert last in defined, name
