"""Helpers for the tests that run jobrunner against the bundled emulator: in this process
(a Runner with a real GenesysClient) or as a real `python -m jobrunner` process."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from jobrunner.config import Settings, parse_environment
from jobrunner.emulator.server import Emulator, EmulatorConfig
from jobrunner.genesys import GenesysClient
from jobrunner.ledger import Ledger
from jobrunner.runner import RetryPolicy, Runner, RunResult


@contextlib.contextmanager
def emulators(**defaults: Any) -> Iterator[Callable[..., Emulator]]:
    """`start(**config)` starts an emulator (these defaults, then the test's own); every
    one started is stopped at the end. For fixtures: `with emulators(...) as start: yield start`."""
    started: list[Emulator] = []

    def start(**kw: Any) -> Emulator:
        emu = Emulator(EmulatorConfig(**{**defaults, **kw})).start()
        started.append(emu)
        return emu

    try:
        yield start
    finally:
        for emu in started:
            emu.stop()


def settings_for(emu: Emulator) -> Settings:
    return Settings(emu.config.client_id, emu.config.client_secret, parse_environment(emu.url))


def env_for(emu: Emulator, secret: str | None = None) -> dict[str, str]:
    """The environment `jobrunner run` reads; `secret`: another than the emulator takes."""
    return {
        "GENESYS_CLOUD_CLIENT_ID": emu.config.client_id,
        "GENESYS_CLOUD_CLIENT_SECRET": emu.config.client_secret if secret is None else secret,
        "GENESYS_CLOUD_ENVIRONMENT": emu.url,
    }


def run_against(
    emu: Emulator, ledger: Ledger, *, policy: RetryPolicy, concurrency: int = 4, **kw: Any
) -> RunResult:
    client = GenesysClient(settings_for(emu), pool_size=concurrency, read_timeout=5)
    return Runner(ledger, client, policy=policy, concurrency=concurrency, **kw).run()


def spawn(db: Path, emu: Emulator, *args: str) -> subprocess.Popen[str]:
    """`python -m jobrunner --log-format json ARGS` on this ledger, JSON log lines on stderr."""
    return subprocess.Popen(
        [sys.executable, "-m", "jobrunner", "--log-format", "json", *args],
        env={**os.environ, **env_for(emu), "JOBRUNNER_DB": str(db)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_event(
    proc: subprocess.Popen[str], event: str, timeout: float = 30, *, required: bool = True
) -> list[str] | None:
    """Read stderr lines until a JSON log line with this event appears: the lines read. If
    none does (the process ended, or the time ran out): an AssertionError showing what was
    read, or None when not `required`."""
    assert proc.stderr is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        if f'"event": "{event}"' in line:
            return seen
    if required:
        raise AssertionError(f"no {event} event; stderr so far: {''.join(seen)[-2000:]}")
    return None


def kill_9_during(
    db: Path,
    emu: Emulator,
    args: Iterable[str],
    pauses: Iterable[float],
    *,
    event: str = "step.done",
    after_kill: Callable[[], None] | None = None,
) -> int:
    """For each pause: `jobrunner ARGS` on this ledger until its log says `event`, then the
    pause, then kill -9 (`after_kill` looks at the ledger each time). Stops early when a
    run ends first (or never says `event`). How many kills landed."""
    args = tuple(args)
    kills = 0
    for pause in pauses:
        proc = spawn(db, emu, *args)
        if not wait_for_event(proc, event, 60, required=False):
            proc.kill()
            proc.communicate(timeout=10)
            break
        time.sleep(pause)
        if proc.poll() is not None:
            proc.communicate(timeout=10)
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        kills += 1
        if after_kill is not None:
            after_kill()
    return kills


def finish(db: Path, emu: Emulator, *args: str, timeout: float = 180) -> None:
    """`jobrunner ARGS` on this ledger to its end, which must be exit 0."""
    final = spawn(db, emu, *args)
    _out, err = final.communicate(timeout=timeout)
    assert final.returncode == 0, err[-3000:]
