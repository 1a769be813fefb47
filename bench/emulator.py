"""Benchmark: how many requests a second the bundled emulator serves on loopback.

    .venv/bin/python bench/emulator.py [--connections 50] [--seconds 10]

The emulator runs as its own process (`jobrunner emulator --port 0`, rate limit out of the
way). Load comes from 2 client processes holding --connections keep-alive connections in
all, with no retries: half create users (POST /api/v2/users), half read the home division.
Both share the machine's 2 cores with the server, so the figures are a floor. A second run
adds 300 ms of latency to show that latency, not the server, then sets the pace
(50 connections / 0.3 s = 167 requests/s at best).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import threading
import time
import uuid


def _client(port: int, conns: int, seconds: float, queue: multiprocessing.Queue) -> None:
    auth = base64.b64encode(b"bench:bench-secret").decode()
    login = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    login.request(
        "POST",
        "/oauth/token",
        body="grant_type=client_credentials",
        headers={
            "Authorization": f"Basic {auth}",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    token = json.loads(login.getresponse().read())["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    counts = []
    deadline = time.monotonic() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        n = 0
        while time.monotonic() < deadline:
            if i % 2:
                body = json.dumps(
                    {"name": "Bench User", "email": f"{uuid.uuid4().hex}@example.com"}
                )
                conn.request("POST", "/api/v2/users", body=body, headers=headers)
            else:
                conn.request("GET", "/api/v2/authorization/divisions/home", headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise SystemExit(f"unexpected {response.status}")
            n += 1
        counts.append(n)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    queue.put(sum(counts))


def measure(connections: int, seconds: float, latency_ms: float) -> float:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobrunner",
            "--log-level",
            "warning",
            "emulator",
            "--port",
            "0",
            "--client-id",
            "bench",
            "--client-secret",
            "bench-secret",
            "--rate-per-minute",
            "100000000",
            "--latency-ms",
            str(latency_ms),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()  # GENESYS_CLOUD_ENVIRONMENT=http://127.0.0.1:PORT
        port = int(line.strip().rsplit(":", 1)[1])
        queue: multiprocessing.Queue = multiprocessing.Queue()
        procs = [
            multiprocessing.Process(target=_client, args=(port, connections // 2, seconds, queue))
            for _ in range(2)
        ]
        start = time.monotonic()
        for p in procs:
            p.start()
        total = sum(queue.get() for _ in procs)
        for p in procs:
            p.join()
        return total / (time.monotonic() - start)
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(
        f"# emulator benchmark, {time.strftime('%Y-%m-%d')}, {platform.node()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print("| connections | latency | requests/s |")
    print("|---|---|---|")
    for latency in (0.0, 300.0):
        rate = measure(args.connections, args.seconds, latency)
        print(f"| {args.connections} | {latency:.0f} ms | {rate:,.0f} |")


if __name__ == "__main__":
    main()
