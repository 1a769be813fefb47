"""Two test sessions on one machine (a developer's second terminal, two CI jobs on one host)
must not delete each other's temporary folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_another_session_ending_leaves_this_sessions_folders(tmp_path: Path) -> None:
    mine = tmp_path / "kept.txt"
    mine.write_text("still here")
    other = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_ledger.py::test_migrations_on_an_empty_ledger_then_again",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 0, other.stdout[-2000:] + other.stderr[-2000:]
    assert mine.read_text() == "still here"
