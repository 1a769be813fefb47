"""The wheel works on its own, from any folder: migrations and examples ship inside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("jobrunner-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "jobrunner/_data/migrations/0001_initial.sql" in names
    assert "jobrunner/_data/examples/users.csv" in names
    site = out / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    return site


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("JOBRUNNER_DB", None)
    return subprocess.run(
        [sys.executable, "-m", "jobrunner", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_installed_wheel_runs_from_another_folder(installed: Path, tmp_path: Path) -> None:
    where = _run(installed, tmp_path, "--help")
    assert where.returncode == 0 and "ingest" in where.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import jobrunner, sys; print(jobrunner.__file__)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(installed)},
        capture_output=True,
        text=True,
    )
    assert probe.stdout.startswith(str(installed)), probe.stdout  # not the source checkout
    (tmp_path / "users.csv").write_text(
        "first_name,last_name,email\nAda,Lovelace,ada@example.com\n"
    )
    done = _run(installed, tmp_path, "--log-level", "error", "ingest", "users.csv")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "state" / "jobrunner.db").exists()  # default ledger under the cwd
    done = _run(installed, tmp_path, "report", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"]["pending"] == 1
