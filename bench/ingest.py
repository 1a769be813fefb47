"""Benchmark: `jobrunner ingest` against `sqlite-utils insert --csv` on the same file.

    .venv/bin/pip install '.[bench]'      # sqlite-utils, the reference
    .venv/bin/python bench/ingest.py [--rows 200000] [--repeat 3]

sqlite-utils loads the CSV as-is (no validation); jobrunner validates every row (email
syntax, E.164 phones, UUID divisions, lengths, duplicates) and writes the ledger with
synchronous=FULL. Both run as fresh processes, alternating, on the same file; the figures
are medians and the comparison is a ratio, since these machines are noisy. Peak RSS comes
from wait4() of each process. A second part ingests files of growing size to show that
memory stays flat.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIRST = (
    "Amelia Ben Carlos Dana Elif Farah Gustavo Hana Ivan Jamal Keiko Liam Maya Noël Zoë José"
).split()
LAST = (
    "Okafor Schmidt García Nakamura Rossi Novak Haddad Silva Kowalski Müller O'Brien Dubois"
).split()
TITLES = ["Customer Service Agent", "Senior Agent", "Team Lead, Night Shift", "Billing Agent"]
DEPTS = ["Customer Care", "Sales", "Billing", "Technical Support"]
PHONES = ["+1 (317) 555-{:04d}", "+13175550{:03d}", "+44 20 7946 {:04d}", ""]


QUEUES = ["Billing", "Technical Support", "Retention", "Sales Inbound", "VIP Care"]
SKILLS = ["English", "Spanish", "Billing", "Chat", "Email", "Networking"]


def generate(path: Path, rows: int, seed: int = 1, shape: str = "plain") -> None:
    """`plain`: jobrunner's own columns. `admin`: the admin UI's template, every row with
    2 roles, 2 queues, 3 skills, a manager and a location (what onboarding stores)."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if shape == "admin":
            w.writerow(
                "name,email,phone_work,extension,title,department,email_manager,"
                "location_work,roles_divisions,queues,division,skills".split(",")
            )
        else:
            w.writerow(
                [
                    "first_name",
                    "last_name",
                    "email",
                    "phone_number",
                    "division_id",
                    "title",
                    "department",
                ]
            )
        for i in range(rows):
            phone = rng.choice(PHONES)
            phone = phone.format(i % 1000) if phone else ""
            email = f"agent{i}@example.com" if i % 500 else f"agent{i}@example"  # 0.2% invalid
            if shape == "admin":
                skills = ", ".join(f"{s}:{rng.randint(0, 5)}" for s in rng.sample(SKILLS, 3))
                w.writerow(
                    [
                        f"{rng.choice(FIRST)} {rng.choice(LAST)}",
                        email,
                        phone,
                        str(2000 + i % 8000),
                        rng.choice(TITLES),
                        rng.choice(DEPTS),
                        f"lead{i % 100}@example.com",
                        "Indianapolis HQ",
                        "Employee, Agent:[Support]",
                        ", ".join(rng.sample(QUEUES, 2)),
                        "Support",
                        skills,
                    ]
                )
                continue
            w.writerow(
                [
                    rng.choice(FIRST),
                    rng.choice(LAST),
                    email,
                    phone,
                    "",
                    rng.choice(TITLES),
                    rng.choice(DEPTS),
                ]
            )


def timed(cmd: list[str], cwd: Path) -> tuple[float, float, float]:
    """(seconds, peak RSS MB, CPU seconds: user + system) of one process. The CPU time
    barely moves when other work shares the cores; the wall time does."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(
            f"{cmd[0]} failed: {proc.stderr.read().decode()[-500:] if proc.stderr else ''}"
        )
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--shape",
        choices=["plain", "admin"],
        default="plain",
        help="plain: jobrunner's own columns; admin: the admin UI's template with roles, "
        "queues, skills, manager and location on every row",
    )
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    jobrunner = str(bindir / "jobrunner")
    sqlite_utils = shutil.which("sqlite-utils", path=str(bindir)) or shutil.which("sqlite-utils")
    if not sqlite_utils:
        raise SystemExit("sqlite-utils not found: pip install '.[bench]'")
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    data = work / "users.csv"
    generate(data, args.rows, shape=args.shape)
    size_mb = data.stat().st_size / 1e6
    ours, ref = [], []
    for i in range(args.repeat):
        for db in work.glob("*.db*"):
            db.unlink()
        ref.append(
            timed(
                [sqlite_utils, "insert", str(work / f"ref{i}.db"), "users", str(data), "--csv"],
                work,
            )
        )
        ours.append(
            timed(
                [
                    jobrunner,
                    "--log-level",
                    "error",
                    "--db",
                    str(work / f"ours{i}.db"),
                    "ingest",
                    str(data),
                ],
                work,
            )
        )
    t_ours = statistics.median(t for t, _, _ in ours)
    t_ref = statistics.median(t for t, _, _ in ref)
    cpu_ours = statistics.median(c for _, _, c in ours)
    cpu_ref = statistics.median(c for _, _, c in ref)
    print(
        f"# ingest benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    which = subprocess.run(
        [sys.executable, "-c", "import jobrunner; print(jobrunner.__file__)"],
        cwd=work,  # as the timed processes run: `-c` puts the current folder first
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"jobrunner: {which} (as the jobrunner processes import it)")
    print(
        f"file: {args.rows:,} rows ({args.shape} shape), {size_mb:.1f} MB; {args.repeat} "
        "alternating runs each, medians"
    )
    print("| command | time (s) | rows/s | CPU (s) | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    print(
        f"| sqlite-utils insert --csv (no validation) | {t_ref:.2f} | {args.rows / t_ref:,.0f} | "
        f"{cpu_ref:.2f} | {max(m for _, m, _ in ref):.0f} |"
    )
    print(
        f"| jobrunner ingest (validating) | {t_ours:.2f} | {args.rows / t_ours:,.0f} | "
        f"{cpu_ours:.2f} | {max(m for _, m, _ in ours):.0f} |"
    )
    print(
        f"ratio jobrunner / sqlite-utils time: {t_ours / t_ref:.2f}, CPU: {cpu_ours / cpu_ref:.2f} "
        "(below 1 is faster)"
    )
    print()
    print("| rows | jobrunner ingest time (s) | CPU (s) | peak RSS (MB) |")
    print("|---|---|---|---|")
    for rows in (args.rows // 4, args.rows, args.rows * 2):
        path = work / f"size{rows}.csv"
        generate(path, rows, seed=2, shape=args.shape)
        t, m, c = timed(
            [
                jobrunner,
                "--log-level",
                "error",
                "--db",
                str(work / f"size{rows}.db"),
                "ingest",
                str(path),
            ],
            work,
        )
        print(f"| {rows:,} | {t:.2f} | {c:.2f} | {m:.0f} |")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
