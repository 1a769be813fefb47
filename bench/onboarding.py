"""Benchmark: a whole onboarding from the admin UI's file, beside a naive script.

    .venv/bin/python bench/onboarding.py [--users 2000] [--rate 300] [--latency-ms 300]
                                         [--naive-s 300] [--skip-naive] [--shape even|admin]

The file (--shape even, the default): every person has 2 roles, 2 of 10 queues, 3 skills, a
manager (a team lead of the same file, written after most of their reports) and a location.
--shape admin: each person has 1-2 roles, 1-3 of 10 queues, 0-3 skills, a manager and a
location (the spread of a real admin UI file). Both clients talk to the
bundled emulator (the org of examples/org.json) through the real SDK, with ~300 ms of
latency per request and a per-token limit that binds. Reported, for each:

  * API calls per person created (the token request not counted; look-ups of names
    included). jobrunner's target: at most 1 create + 1 roles + 1 skills + 1 profile + its
    share of the queue batches, <= 4.1;
  * people fully onboarded: the emulator holds every grant, queue, skill, the manager and
    the location the file asks for;
  * share of the limit: API requests per minute over the limit (all calls count);
  * the share of requests answered 429;
  * calls per person by kind (create, roles, skills, languages, queues, profile PATCH,
    look-ups, other), from the emulator's request counts by route (429s included).

The script prints which jobrunner package ran (`jobrunner.__file__`, and the commit of its
tree when it is a git checkout), so it can be run against another checkout with PYTHONPATH.

The naive script is what an admin writes after the tutorial: for each person, one create,
then one call per assignment (a grant, a skill, a queue membership, the manager and the
location each on their own), sequentially, on the SDK's default transport (which sleeps
through 429s itself). It runs for --naive-s seconds.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import random
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import jobrunner
from jobrunner.config import Settings, parse_environment
from jobrunner.emulator.org import read_org_file
from jobrunner.emulator.server import Emulator, EmulatorConfig
from jobrunner.genesys import GenesysClient
from jobrunner.ingest import ingest_file
from jobrunner.ledger import Ledger
from jobrunner.resources import examples_dir
from jobrunner.runner import Runner

ORG = read_org_file(examples_dir() / "org.json")
QUEUES = [q["name"] for q in ORG["queues"]]
SKILLS = [s["name"] for s in ORG["skills"]]
LOCATIONS = [loc["name"] for loc in ORG["locations"]]
COLUMNS = (
    "name,email,phone_work,extension,title,department,email_manager,location_work,"
    "roles_divisions,queues,division,skills"
).split(",")


def people(n: int, seed: int = 1, shape: str = "even") -> list[dict[str, str]]:
    """`even`: 2 roles, 2 queues, 3 skills each. `admin`: 1-2 roles, 1-3 queues, 0-3 skills."""
    rng = random.Random(seed)
    leads = max(1, n // 20)
    lead_emails = [f"lead{i}@example.com" for i in range(leads)]
    agent_roles = [
        "Employee",
        "Agent:[Support]",
        "Quality Evaluator:[Support]",
        "Reporting Viewer:[Sales]",
    ]

    def roles(first: str) -> str:
        if shape == "even":
            return f"Employee, {first}:[Support]"
        if first == "Agent":
            return ", ".join(rng.sample(agent_roles, rng.randint(1, 2)))
        return ", ".join([f"{first}:[Support]", "Employee"][: rng.randint(1, 2)])

    def queues() -> str:
        return ", ".join(rng.sample(QUEUES, 2 if shape == "even" else rng.randint(1, 3)))

    def skills(level: int | None) -> str:
        count = 3 if shape == "even" else rng.randint(0, 3)
        return ", ".join(
            f"{s}:{level if level else rng.randint(1, 5)}" for s in rng.sample(SKILLS, count)
        )

    rows = []
    for i in range(n - leads):
        rows.append(
            {
                "name": f"Agent {i}",
                "email": f"agent{i}@example.com",
                "email_manager": rng.choice(lead_emails),
                "location_work": rng.choice(LOCATIONS),
                "roles_divisions": roles("Agent"),
                "queues": queues(),
                "division": "Support",
                "skills": skills(None),
            }
        )
    for i, email in enumerate(lead_emails):
        rows.append(
            {
                "name": f"Lead {i}",
                "email": email,
                "email_manager": "maria.gonzalez@example.com",
                "location_work": rng.choice(LOCATIONS),
                "roles_divisions": roles("Supervisor"),
                "queues": queues(),
                "division": "Support",
                "skills": skills(5),
            }
        )
    return rows


def wanted_grants(row: dict[str, str]) -> list[list[str]]:
    grants = []
    for item in row["roles_divisions"].split(","):
        role, _, division = item.strip().partition(":")
        grants.append([role, division.strip("[]") or row["division"]])
    return grants


def split(cell: str) -> list[str]:
    return [item.strip() for item in cell.split(",") if item.strip()]


def emulator(args: argparse.Namespace) -> Emulator:
    return Emulator(
        EmulatorConfig(
            client_id="bench",
            client_secret="bench-secret",
            rate_per_minute=args.rate,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_ms / 6,
            fresh_user_404_s=args.fresh_s,
            org=ORG,
            seed=1,
        )
    ).start()


def outcome(
    name: str,
    stats: dict[str, Any],
    rows: list[dict[str, str]],
    elapsed: float,
    exit_code: int | None,
) -> dict[str, Any]:
    """What the table shows of one client's run, from what the emulator recorded."""
    return {
        "name": name,
        "people": complete(stats, rows),
        "created": len(stats["creations_by_email"]),
        "elapsed": elapsed,
        "requests": api_requests(stats),
        "by_kind": by_kind(stats),
        "routes": {k: v for k, v in stats["requests_by_route"].items() if "/api/v2/" in k},
        "limited": stats["rate_limited"],
        "duplicates": sum(1 for n in stats["creations_by_email"].values() if n > 1),
        "exit": exit_code,
    }


def api_requests(stats: dict[str, Any]) -> int:
    return sum(n for route, n in stats["requests_by_route"].items() if "/api/v2/" in route)


KINDS = ("create", "roles", "skills", "languages", "queues", "profile", "look-ups", "other")


def kind_of(route: str) -> str:
    """An emulator route label ("POST /api/v2/users/{id}/...") as a kind of call."""
    method, _, path = route.partition(" ")
    if route == "POST /api/v2/users":
        return "create"
    if path.startswith("/api/v2/authorization/subjects/{id}/bulkadd") or (
        method == "POST" and path == "/api/v2/authorization/roles/{id}"
    ):
        return "roles"
    if path.endswith("/routingskills/bulk"):
        return "skills"
    if path.endswith("/routinglanguages/bulk"):
        return "languages"
    if method == "POST" and path == "/api/v2/routing/queues/{id}/members":
        return "queues"
    if method == "PATCH" and path == "/api/v2/users/{id}":
        return "profile"
    if method == "GET" or route == "POST /api/v2/users/search":
        return "look-ups"
    return "other"


def by_kind(stats: dict[str, Any]) -> dict[str, int]:
    counts = dict.fromkeys(KINDS, 0)
    for route, n in stats["requests_by_route"].items():
        if "/api/v2/" in route:
            counts[kind_of(route)] += n
    return counts


def complete(stats: dict[str, Any], rows: list[dict[str, str]]) -> int:
    """People whose every assignment the file asks for the emulator holds (grants the
    emulator adds itself, such as Employee in Home, are not held against them)."""
    done = 0
    for row in rows:
        user = stats["onboarding"].get(row["email"])
        if (
            user
            and all(grant in user["grants"] for grant in wanted_grants(row))
            and set(split(row["queues"])) <= set(user["queues"])
            and {item.partition(":")[0] for item in split(row["skills"])} <= set(user["skills"])
            and user["manager"] == row["email_manager"]
            and user["location"] == row["location_work"]
        ):
            done += 1
    return done


def bench_jobrunner(args: argparse.Namespace, work: Path, rows: list[dict[str, str]]) -> dict:
    path = work / "admin.csv"
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    ledger = Ledger.open(work / "bench.db")
    ingest_file(ledger, path)
    emu = emulator(args)
    try:
        settings = Settings("bench", "bench-secret", parse_environment(emu.url))
        client = GenesysClient(settings, pool_size=args.concurrency)
        client.authenticate()  # the SDK import (~2 s) stays out of the timing
        start = time.monotonic()
        result = Runner(ledger, client, concurrency=args.concurrency).run()
        elapsed = time.monotonic() - start
        stats = emu.stats()
    finally:
        emu.stop()
        ledger.close()
    return outcome(
        f"jobrunner run (concurrency {args.concurrency})", stats, rows, elapsed, result.exit_code
    )


def bench_naive(args: argparse.Namespace, rows: list[dict[str, str]]) -> dict:
    import PureCloudPlatformClientV2 as sdk

    emu = emulator(args)
    try:
        client = sdk.ApiClient()
        client.set_gateway("127.0.0.1", "http", emu.port, "", "")
        client.get_client_credentials_token("bench", "bench-secret")
        users, auth = sdk.UsersApi(client), sdk.AuthorizationApi(client)
        routing = sdk.RoutingApi(client)
        ids = {kind: {o["name"]: o["id"] for o in ORG[kind]} for kind in ORG if kind != "users"}
        by_email = {u["email"]: u["id"] for u in emu.users()}

        def again_on_404(call: Any, *a: Any, **kw: Any) -> Any:
            """A new user is unknown to other services for a moment: wait and try again."""
            for _ in range(20):
                try:
                    return call(*a, **kw)
                except sdk.rest.ApiException as exc:
                    if exc.status != 404:
                        raise
                    time.sleep(0.5)
            return call(*a, **kw)

        start = time.monotonic()
        for row in rows:
            if time.monotonic() - start > args.naive_s:
                break
            body = sdk.CreateUser()
            body.name, body.email = row["name"], row["email"]
            body.division_id = ids["divisions"][row["division"]]
            user = users.post_users(body)
            by_email[row["email"]] = user.id
            for item in row["roles_divisions"].split(","):
                role, _, division = item.strip().partition(":")
                grants = sdk.RoleDivisionGrants()
                grant = sdk.RoleDivision()
                grant.role_id = ids["roles"][role]
                grant.division_id = ids["divisions"][division.strip("[]") or row["division"]]
                grants.grants = [grant]
                again_on_404(
                    auth.post_authorization_subject_bulkadd,
                    user.id,
                    grants,
                    subject_type="PC_USER",
                )
            for item in split(row["skills"]):
                skill, _, level = item.strip().partition(":")
                post = sdk.UserRoutingSkillPost()
                post.id, post.proficiency = ids["skills"][skill], float(level)
                again_on_404(users.patch_user_routingskills_bulk, user.id, [post])
            for queue in split(row["queues"]):
                member = sdk.WritableEntity()
                member.id = user.id
                again_on_404(
                    routing.post_routing_queue_members, ids["queues"][queue.strip()], [member]
                )
            manager = by_email.get(row["email_manager"])
            version = user.version
            for field in ("manager", "location"):
                update = sdk.UpdateUser()
                update.version = version
                if field == "manager" and manager:
                    update.manager = manager
                elif field == "location":
                    location = sdk.Location()
                    location.id = ids["locations"][row["location_work"]]
                    update.locations = [location]
                version = users.patch_user(user.id, update).version
        elapsed = time.monotonic() - start
        stats = emu.stats()
    finally:
        emu.stop()
    return outcome(
        "naive script: one call per assignment, sequential, SDK default transport",
        stats,
        rows,
        elapsed,
        None,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=300, help="limit per token per minute")
    parser.add_argument("--latency-ms", type=float, default=300)
    parser.add_argument("--fresh-s", type=float, default=2.0, help="fresh-id 404 window")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--naive-s", type=float, default=300)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument(
        "--shape",
        choices=["even", "admin"],
        default="even",
        help="even: 2 roles, 2 queues, 3 skills each; admin: 1-2 roles, 1-3 queues, 0-3 skills",
    )
    args = parser.parse_args()
    os.environ.setdefault("JOBRUNNER_LOG_LEVEL", "warning")
    from jobrunner import log

    log.configure(level="warning")
    rows = people(args.users, shape=args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_jobrunner(args, Path(tmp), rows)]
    if not args.skip_naive:
        results.append(bench_naive(args, rows))
    print(
        f"# onboarding benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"jobrunner: {jobrunner.__file__} ({tree_commit()})")
    shape = (
        "each 2 roles, 2 of 10 queues, 3 skills"
        if args.shape == "even"
        else "admin shape: each 1-2 roles, 1-3 of 10 queues, 0-3 skills"
    )
    print(
        f"emulator: limit {args.rate}/min per token, latency {args.latency_ms:.0f} ms "
        f"(±{args.latency_ms / 6:.0f}), new ids unknown to other services for "
        f"{args.fresh_s:g} s; {args.users:,} people, {shape}, a manager, a location "
        f"(file: {sum(len(wanted_grants(r)) for r in rows):,} grants, "
        f"{sum(len(split(r['queues'])) for r in rows):,} queue memberships, "
        f"{sum(1 for r in rows if split(r['skills'])):,} people with skills)"
    )
    print(
        "| client | created | fully onboarded | time (s) | calls per person | people/min | "
        "share of limit | 429 share | created twice |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        per_min = r["requests"] / r["elapsed"] * 60
        print(
            f"| {r['name']} | {r['created']:,} | {r['people']:,} | {r['elapsed']:.1f} | "
            f"{r['requests'] / max(1, r['created']):.3f} | "
            f"{r['created'] / r['elapsed'] * 60:,.1f} | {per_min / args.rate:.3f} | "
            f"{r['limited'] / max(1, r['requests']):.2%} | {r['duplicates']} |"
        )
    print()
    print("calls per person created, by kind (429s included):")
    print("| client | " + " | ".join(KINDS) + " | all |")
    print("|---|" + "---|" * (len(KINDS) + 1))
    for r in results:
        people_made = max(1, r["created"])
        cells = " | ".join(f"{r['by_kind'][k] / people_made:.3f}" for k in KINDS)
        print(f"| {r['name']} | {cells} | {r['requests'] / people_made:.3f} |")
    print()
    print("requests by route:")
    for r in results:
        print(f"  {r['name']}:")
        for route, n in sorted(r["routes"].items(), key=lambda kv: -kv[1]):
            print(f"    {n:7d}  {route}")


def tree_commit() -> str:
    """The commit of the checkout the jobrunner package was imported from, if any."""
    try:
        out = subprocess.run(
            ["git", "-C", os.path.dirname(jobrunner.__file__), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {out.stdout.strip()}"


if __name__ == "__main__":
    main()
