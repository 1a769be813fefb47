"""Files that ship with the package: migrations/ and examples/.

In a wheel they live in jobrunner/_data/ (hatchling force-include); in a source checkout
(editable install, or tests run from the repo) they are the top-level folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"jobrunner is installed without its {name}/ folder")


def migrations_dir() -> Path:
    return data_dir("migrations")


def examples_dir() -> Path:
    return data_dir("examples")
