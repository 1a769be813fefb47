"""Benchmark: `jobrunner run` at a binding rate limit, beside a tutorial-style sequential loop.

    .venv/bin/python bench/run.py [--users 3000] [--rate 600] [--latency-ms 300] [--loop-s 120]

Both talk to the bundled emulator through the real SDK, with ~300 ms of latency per request
and a per-token limit low enough to bind. Reported, for each:
  * throughput as a share of the limit (created users per minute / limit per minute),
  * the share of API requests answered 429,
  * API requests per created user (the token request not counted).
The sequential loop is what the tutorial does: one `post_users` after another on the SDK's
default transport (which retries 429s silently). It runs for --loop-s seconds.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from jobrunner.config import Settings, parse_environment
from jobrunner.emulator.server import Emulator, EmulatorConfig
from jobrunner.genesys import GenesysClient
from jobrunner.ingest import ingest_file
from jobrunner.ledger import Ledger
from jobrunner.runner import Runner

HEADER = "first_name,last_name,email,phone_number,division_id,title,department\n"


def api_requests(stats: dict) -> int:
    return sum(n for route, n in stats["requests_by_route"].items() if "/api/v2/" in route)


def emulator(args: argparse.Namespace) -> Emulator:
    return Emulator(
        EmulatorConfig(
            client_id="bench",
            client_secret="bench-secret",
            rate_per_minute=args.rate,
            latency_ms=args.latency_ms,
            latency_jitter_ms=args.latency_ms / 6,
            seed=1,
        )
    ).start()


def bench_jobrunner(args: argparse.Namespace, work: Path) -> dict:
    csv_path = work / "users.csv"
    csv_path.write_text(
        HEADER
        + "".join(
            f"First{i},Last{i},bench{i}@example.com,+1317555{i % 10000:04d},,Agent,Support\n"
            for i in range(args.users)
        )
    )
    ledger = Ledger.open(work / "bench.db")
    ingest_file(ledger, csv_path)
    emu = emulator(args)
    try:
        settings = Settings("bench", "bench-secret", parse_environment(emu.url))
        client = GenesysClient(settings, pool_size=args.concurrency)
        runner = Runner(ledger, client, concurrency=args.concurrency)
        start = time.monotonic()
        result = runner.run()
        elapsed = time.monotonic() - start
        stats = emu.stats()
    finally:
        emu.stop()
        ledger.close()
    created = result.counts["created"]
    requests = api_requests(stats)
    duplicates = sum(1 for n in stats["creations_by_email"].values() if n > 1)
    return {
        "name": f"jobrunner run (concurrency {args.concurrency})",
        "created": created,
        "elapsed": elapsed,
        "requests": requests,
        "limited": stats["rate_limited"],
        "duplicates": duplicates,
    }


def bench_tutorial_loop(args: argparse.Namespace) -> dict:
    import PureCloudPlatformClientV2 as sdk
    from PureCloudPlatformClientV2.rest import ApiException

    emu = emulator(args)
    try:
        client = sdk.ApiClient()
        client.set_gateway("127.0.0.1", "http", emu.port, "", "")
        client.get_client_credentials_token("bench", "bench-secret")
        users = sdk.UsersApi(client)
        start = time.monotonic()
        created = i = 0
        while time.monotonic() - start < args.loop_s and i < args.users:
            body = sdk.CreateUser()
            body.name, body.email = f"First{i} Last{i}", f"loop{i}@example.com"
            try:
                users.post_users(body)
                created += 1
            except ApiException as exc:
                print(f"loop: {exc.status} for row {i}")
            i += 1
        elapsed = time.monotonic() - start
        stats = emu.stats()
    finally:
        emu.stop()
    return {
        "name": "sequential loop (tutorial), SDK default transport",
        "created": created,
        "elapsed": elapsed,
        "requests": api_requests(stats),
        "limited": stats["rate_limited"],
        "duplicates": sum(1 for n in stats["creations_by_email"].values() if n > 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--rate", type=int, default=600, help="limit per token per minute")
    parser.add_argument("--latency-ms", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--loop-s", type=float, default=120)
    args = parser.parse_args()
    os.environ.setdefault("JOBRUNNER_LOG_LEVEL", "warning")
    from jobrunner import log

    log.configure(level="warning")
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench_jobrunner(args, Path(tmp)), bench_tutorial_loop(args)]
    print(
        f"# run benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} "
        f"cores, Python {platform.python_version()}"
    )
    print(
        f"emulator: limit {args.rate}/min per token, latency {args.latency_ms:.0f} ms "
        f"(±{args.latency_ms / 6:.0f}); {args.users:,} users"
    )
    print(
        "| client | created | time (s) | created/min | share of limit | 429 share | "
        "calls per user | created twice |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        per_min = r["created"] / r["elapsed"] * 60
        print(
            f"| {r['name']} | {r['created']:,} | {r['elapsed']:.1f} | {per_min:,.0f} | "
            f"{per_min / args.rate:.3f} | {r['limited'] / max(1, r['requests']):.3%} | "
            f"{r['requests'] / max(1, r['created']):.3f} | {r['duplicates']} |"
        )


if __name__ == "__main__":
    main()
