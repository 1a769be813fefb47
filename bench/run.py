"""Benchmark: `jobrunner run` at a binding rate limit, pacers side by side.

    .venv/bin/python bench/run.py SCENARIO [--pacers v2,new] [--phase F] [--latency-ms 300]
                                           [--concurrency 8]

Scenarios (each runs the pacers named, one after the other, each against a fresh emulator
that adds ~300 ms (±50) of latency before its rate-limit check, through the real SDK and
today's `Runner(ledger, client, limiter=...)`):

    main        3,000 users, 300 per 60 s sliding window (the API's default)
    sliding     1,500 users, 300 per 60 s sliding window
    small       600 users, 300 per 60 s
    short       600 users, 60 per 6 s sliding window
    fixed       1,500 users, 300 per 60 s, fixed window (resets on multiples of 60 s)
    fixed-short 600 users, 60 per 6 s, fixed window (resets on multiples of 6 s)
    halve       1,650 users, 300 per 60 s, halved to 150 about 150 s into the run
    loop        the tutorial's sequential loop (SDK default transport) for --loop-s seconds

Pacers: v1 the Pacer before the WindowLimiter (bench/pacer_v1.py), v2 the WindowLimiter
before fixed windows were paced on their boundaries (bench/pacer_v2.py), new the one in
jobrunner/limiter.py. A fixed window's outcome depends on where in it the run starts:
`--phase F` starts each run so that its first request falls about F (0..1) of the way into
a window (the column "phase" says where it fell). The SDK is imported before the first run,
so no run's time includes the import.

Reported for each pacer:
  * share of limit: created users per minute over the Runner's whole run (token and SDK
    import included) / the limit per minute (today's figure),
  * strict ratio: the ideal time (the first window's burst, then the budget per window:
    (created - B) / B * W) / the real time from the first request to the last answer,
  * the share of API requests answered 429, API requests per created user, users created
    twice (must be 0),
  * halve: for each window after the halving, accepted creates / 429s, and the window from
    which every later one ran at >= 90% of the new budget (less one) with at most one 429
    (a growth probe) (1 = the first).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pacer_v2  # today's WindowLimiter, kept for this comparison
from pacer_v1 import Pacer  # the pacer before the WindowLimiter, kept for this comparison

from jobrunner.config import Settings, parse_environment
from jobrunner.emulator.server import Emulator, EmulatorConfig
from jobrunner.genesys import ApiError, GenesysClient
from jobrunner.ingest import ingest_file
from jobrunner.ledger import Ledger
from jobrunner.limiter import WindowLimiter
from jobrunner.runner import Runner

HEADER = "first_name,last_name,email,phone_number,division_id,title,department\n"


@dataclass(frozen=True)
class Scenario:
    users: int
    budget: int
    window_s: float
    mode: str = "sliding"
    halve_after_s: float | None = None


SCENARIOS = {
    "main": Scenario(3000, 300, 60.0),
    "sliding": Scenario(1500, 300, 60.0),
    "small": Scenario(600, 300, 60.0),
    "short": Scenario(600, 60, 6.0),
    "fixed": Scenario(1500, 300, 60.0, mode="fixed"),
    "fixed-short": Scenario(600, 60, 6.0, mode="fixed"),
    "halve": Scenario(1650, 300, 60.0, halve_after_s=150.0),
}


@dataclass
class Call:
    sent: float
    answered: float = 0.0
    status: int | str = 0


@dataclass
class Recording:
    """The Runner's client, with the time and outcome of every API call it makes."""

    client: GenesysClient
    calls: list[Call] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "on_new_token":
            setattr(self.client, name, value)
        else:
            object.__setattr__(self, name, value)

    def _timed(self, fn: Any, *args: Any) -> Any:
        call = Call(time.monotonic())
        try:
            result = fn(*args)
            call.status = 200
            return result
        except ApiError as err:
            call.status = err.status
            raise
        except Exception as err:
            call.status = type(err).__name__
            raise
        finally:
            call.answered = time.monotonic()
            with self.lock:
                self.calls.append(call)

    def create_user(self, new: Any) -> Any:
        return self._timed(self.client.create_user, new)

    def find_user_by_email(self, email: str) -> Any:
        return self._timed(self.client.find_user_by_email, email)


def api_requests(stats: dict) -> int:
    return sum(n for route, n in stats["requests_by_route"].items() if "/api/v2/" in route)


def make_emulator(scenario: Scenario, latency_ms: float) -> Emulator:
    return Emulator(
        EmulatorConfig(
            client_id="bench",
            client_secret="bench-secret",
            rate_per_minute=scenario.budget,
            rate_window_s=scenario.window_s,
            rate_window_mode=scenario.mode,
            latency_ms=latency_ms,
            latency_jitter_ms=latency_ms / 6,
            seed=1,
        )
    ).start()


def bench_runner(name: str, pacer: Any, scenario: Scenario, args: Any, work: Path) -> dict:
    csv_path = work / "users.csv"
    csv_path.write_text(
        HEADER
        + "".join(
            f"First{i},Last{i},bench{i}@example.com,+1317555{i % 10000:04d},,Agent,Support\n"
            for i in range(scenario.users)
        )
    )
    ledger = Ledger.open(work / f"{name}.db")
    ingest_file(ledger, csv_path)
    emu = make_emulator(scenario, args.latency_ms)
    halved_at: list[float] = []
    timer = None
    try:
        settings = Settings("bench", "bench-secret", parse_environment(emu.url))
        client = Recording(GenesysClient(settings, pool_size=args.concurrency))
        runner = Runner(ledger, client, concurrency=args.concurrency, limiter=pacer)
        if scenario.halve_after_s is not None:

            def halve() -> None:
                emu.config.rate_per_minute = scenario.budget // 2
                halved_at.append(time.monotonic())

            timer = threading.Timer(scenario.halve_after_s, halve)
            timer.daemon = True
            timer.start()
        if args.phase is not None:
            wait_for_phase(args.phase * scenario.window_s, scenario.window_s)
        start = time.monotonic()
        result = runner.run()
        elapsed = time.monotonic() - start
        stats = emu.stats()
    finally:
        if timer is not None:
            timer.cancel()
        emu.stop()
        ledger.close()
    calls = client.calls
    first, last = min(c.sent for c in calls), max(c.answered for c in calls)
    LEAD[0] = first - start
    return {
        "name": name,
        "phase": (first % scenario.window_s) / scenario.window_s,
        "created": result.counts["created"],
        "elapsed": elapsed,
        "span": last - first,
        "requests": api_requests(stats),
        "limited": stats["rate_limited"],
        "duplicates": sum(1 for n in stats["creations_by_email"].values() if n > 1),
        "calls": calls,
        "halved_at": halved_at[0] if halved_at else None,
        "learned": describe(pacer),
    }


LEAD = [0.05]  # seconds from runner.run() to its first API request, as the last run took


def wait_for_phase(offset: float, window: float) -> None:
    """Sleep until the emulator's clock (monotonic; fixed windows start on multiples of
    `window`) is `offset` seconds into a window, less the lead time of the run's start."""
    now = time.monotonic()
    target = (now // window) * window + offset - LEAD[0]
    while target < now + 0.5:
        target += window
    time.sleep(target - now)


def write_timeline(folder: Path, scenario: str, pacer: str, r: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    first = min(c.sent for c in r["calls"])
    with open(folder / f"{scenario}-{pacer.strip()}.csv", "w") as out:
        out.write(f"# first request at monotonic {first:.3f}\nsent,answered,status\n")
        for c in sorted(r["calls"], key=lambda c: c.sent):
            out.write(f"{c.sent - first:.4f},{c.answered - first:.4f},{c.status}\n")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu unknown"


def describe(pacer: Any) -> str:
    if isinstance(pacer, (WindowLimiter, pacer_v2.WindowLimiter)):
        if pacer.window_s is None:
            return "nothing (no 429)"
        return f"B={pacer.budget} W={pacer.window_s:.2f}s mode={pacer.mode}"
    return f"interval={pacer.interval:.3f}s"


def windows_after(r: dict, scenario: Scenario) -> tuple[list[tuple[int, int]], int | None]:
    """(accepted creates, 429s) per window after the halving, by answer time, and the first
    window (1-based) from which every complete one ran at >= 90% of the new budget, no 429."""
    start, w = r["halved_at"], scenario.window_s
    end = max(c.answered for c in r["calls"])
    rows = []
    k = 0
    while start + (k + 1) * w <= end:
        got = [c for c in r["calls"] if start + k * w <= c.answered < start + (k + 1) * w]
        rows.append((sum(c.status == 200 for c in got), sum(c.status == 429 for c in got)))
        k += 1
    target = 0.9 * (scenario.budget // 2) - 1  # (-1: windows by answer time, give or take one)
    followed = None
    for i in range(len(rows)):
        if all(a >= target and z <= 1 for a, z in rows[i:]):  # (1: a probe for growth)
            followed = i + 1
            break
    return rows, followed


def bench_tutorial_loop(args: argparse.Namespace) -> dict:
    import PureCloudPlatformClientV2 as sdk
    from PureCloudPlatformClientV2.rest import ApiException

    emu = make_emulator(Scenario(3000, 300, 60.0), args.latency_ms)
    try:
        client = sdk.ApiClient()
        client.set_gateway("127.0.0.1", "http", emu.port, "", "")
        client.get_client_credentials_token("bench", "bench-secret")
        users = sdk.UsersApi(client)
        start = time.monotonic()
        created = i = 0
        while time.monotonic() - start < args.loop_s:
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
    per_min = created / elapsed * 60
    print(f"sequential loop: {created} created in {elapsed:.1f} s ({per_min:.0f}/min)")
    return {"created": created, "elapsed": elapsed, "requests": api_requests(stats)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=[*SCENARIOS, "loop"])
    parser.add_argument("--latency-ms", type=float, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--users", type=int, default=None, help="instead of the scenario's")
    parser.add_argument("--loop-s", type=float, default=120)
    parser.add_argument(
        "--pacers",
        default="v2,new",
        help="comma-separated, run in this order: v1 (bench/pacer_v1.py), v2 (bench/pacer_v2.py), "
        "new (jobrunner/limiter/)",
    )
    parser.add_argument(
        "--timeline",
        type=Path,
        default=None,
        help="write each pacer's API calls (seconds from its first request, status) to "
        "DIR/SCENARIO-PACER.csv",
    )
    parser.add_argument(
        "--phase",
        type=float,
        default=None,
        help="start each run this far (0..1) into a window of the emulator's clock",
    )
    args = parser.parse_args()
    os.environ.setdefault("JOBRUNNER_LOG_LEVEL", "warning")
    from jobrunner import log

    log.configure(level="warning")
    print(
        f"# run benchmark, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
        f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}"
    )
    import jobrunner

    print(f"jobrunner: {jobrunner.__file__}")
    if args.scenario == "loop":
        bench_tutorial_loop(args)
        return
    scenario = SCENARIOS[args.scenario]
    if args.users:
        scenario = Scenario(
            args.users, scenario.budget, scenario.window_s, scenario.mode, scenario.halve_after_s
        )
    print(
        f"scenario {args.scenario}: {scenario.users:,} users, {scenario.budget} per "
        f"{scenario.window_s:g} s {scenario.mode} window"
        + (f", halved after {scenario.halve_after_s:g} s" if scenario.halve_after_s else "")
        + f"; latency {args.latency_ms:.0f} ms (±{args.latency_ms / 6:.0f}), "
        f"concurrency {args.concurrency}"
    )
    makers = {
        "v1": ("Pacer (v1)", lambda: Pacer()),
        "v2": ("WindowLimiter before (v2)", lambda: pacer_v2.WindowLimiter()),
        "new": ("WindowLimiter now", lambda: WindowLimiter()),
    }
    pacers = [makers[name.strip()] for name in args.pacers.split(",")]
    import PureCloudPlatformClientV2  # noqa: F401  (once, before any run is timed)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, make) in enumerate(pacers):
            results.append(bench_runner(f"p{i}", make(), scenario, args, Path(tmp)))
            results[-1]["name"] = name
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"  {name}: done in {results[-1]['elapsed']:.1f} s (load {load})", flush=True)
            if args.timeline is not None:
                write_timeline(args.timeline, args.scenario, args.pacers.split(",")[i], results[-1])
    limit_per_min = scenario.budget / scenario.window_s * 60
    print(
        "| pacer | phase | created | time (s) | share of limit | first request to last answer (s) "
        "| ideal (s) | strict ratio | 429s | 429 share | calls per user | created twice "
        "| learned |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        per_min = r["created"] / r["elapsed"] * 60
        ideal = max(0, r["created"] - scenario.budget) / scenario.budget * scenario.window_s
        print(
            f"| {r['name']} | {r['phase']:.2f} | {r['created']:,} | {r['elapsed']:.1f} | "
            f"{per_min / limit_per_min:.3f} | {r['span']:.1f} | {ideal:.1f} | "
            f"{ideal / r['span']:.3f} | {r['limited']} | "
            f"{r['limited'] / max(1, r['requests']):.2%} | "
            f"{r['requests'] / max(1, r['created']):.3f} | {r['duplicates']} | {r['learned']} |"
        )
    if scenario.halve_after_s is not None:
        for r in results:
            if r["halved_at"] is None:
                print(f"{r['name']}: the run ended before the halving")
                continue
            rows, followed = windows_after(r, scenario)
            shown = " ".join(f"{a}/{z}" for a, z in rows)
            print(
                f"{r['name']}: per window after the halving (created/429): {shown}; "
                f"at >= 90% of {scenario.budget // 2} with at most one 429 from window "
                f"{followed if followed is not None else 'never'}"
            )


if __name__ == "__main__":
    main()
