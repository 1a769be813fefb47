"""`jobrunner emulator`: a real process for start-up, requests and signals; CliRunner for
option errors."""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jobrunner.emulator.command import emulator as emulator_command

SECRET = "cli-secret-do-not-print"


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GENESYS_CLOUD_", "JOBRUNNER_"))
    }
    env.update(extra)
    return env


class Running:
    def __init__(self, proc: subprocess.Popen[str], lines: list[str]) -> None:
        self.proc = proc
        self.lines = lines
        env = dict(line.split("=", 1) for line in lines)
        self.url = env["GENESYS_CLOUD_ENVIRONMENT"]
        self.port = int(self.url.rsplit(":", 1)[1])

    def token(self, client_id: str, secret: str) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        auth = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        conn.request(
            "POST",
            "/oauth/token",
            "grant_type=client_credentials",
            {"Authorization": "Basic " + auth, "Content-Type": "application/x-www-form-urlencoded"},
        )
        response = conn.getresponse()
        assert response.status == 200
        return json.loads(response.read())["access_token"]

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        return self.call("GET", path, token)

    def call(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        payload = json.dumps(body) if body is not None else None
        conn.request(method, path, payload, headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else None

    def stop(self, sig: int) -> tuple[int, str, str]:
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, out, err


def start(args: list[str], env: dict[str, str], expect_lines: int = 2) -> Running:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobrunner", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    fd = proc.stdout.fileno()  # type: ignore[union-attr]
    buffer = b""
    deadline = time.monotonic() + 15
    while buffer.count(b"\n") < expect_lines:
        ready, _, _ = select.select([fd], [], [], max(deadline - time.monotonic(), 0))
        chunk = os.read(fd, 4096) if ready else b""
        if not chunk:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"emulator printed only {buffer!r}; stderr: {err}")
        buffer += chunk
    lines = buffer.decode().splitlines()
    return Running(proc, lines)


@pytest.fixture
def processes() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        if running.proc.poll() is None:
            running.proc.kill()
            running.proc.wait()


def test_prints_the_real_port_serves_and_stops_on_sigint(processes: list[Running]) -> None:
    running = start(
        ["--log-level", "debug", "emulator", "--port", "0", "--client-id", "cli-id"],
        _env(GENESYS_CLOUD_CLIENT_SECRET=SECRET),
    )
    processes.append(running)
    assert running.lines == [
        f"GENESYS_CLOUD_ENVIRONMENT=http://127.0.0.1:{running.port}",
        "GENESYS_CLOUD_CLIENT_ID=cli-id",
    ]
    assert running.port > 0
    token = running.token("cli-id", SECRET)
    status, body = running.get("/api/v2/authorization/divisions/home", token)
    assert (status, body["name"]) == (200, "Home")

    code, out, err = running.stop(signal.SIGINT)
    assert code == 0
    assert "Traceback" not in err
    assert SECRET not in out + err and token not in out + err
    assert '"path": "/api/v2/authorization/divisions/home"' in err  # debug request log (JSON)


def test_demo_defaults_seed_users_state_file_and_sigterm(
    tmp_path: Path, processes: list[Running]
) -> None:
    seeds = tmp_path / "existing.csv"
    seeds.write_text("name,email,title\nOld Timer,old@example.com,Agent\n", encoding="utf-8")
    state = tmp_path / "org.json"
    running = start(
        [
            "emulator",
            "--port",
            "0",
            "--existing-users",
            str(seeds),
            "--existing-email",
            "extra@example.com",
            "--division",
            "Sales=5a1e5000-0000-4000-8000-000000000001",
            "--state-file",
            str(state),
            "--rate-per-minute",
            "7",
        ],
        _env(),
        expect_lines=3,
    )
    processes.append(running)
    assert running.lines[1:] == [
        "GENESYS_CLOUD_CLIENT_ID=jobrunner-demo",
        "GENESYS_CLOUD_CLIENT_SECRET=jobrunner-demo-secret",  # the public demo secret only
    ]
    token = running.token("jobrunner-demo", "jobrunner-demo-secret")
    status, body = running.get("/api/v2/authorization/divisions?name=sales", token)
    assert [d["name"] for d in body["entities"]] == ["Sales"]
    assert sorted(u["email"] for u in running.get("/emulator/users")[1]) == [
        "extra@example.com",
        "old@example.com",
    ]

    code, _, err = running.stop(signal.SIGTERM)
    assert code == 0 and "Traceback" not in err
    saved = json.loads(state.read_text())
    assert sorted(u["email"] for u in saved["users"]) == ["extra@example.com", "old@example.com"]


def test_org_file_refused_permission_and_fresh_user_delay(processes: list[Running]) -> None:
    org_file = Path(__file__).resolve().parents[1] / "examples" / "org.json"
    running = start(
        [
            "emulator",
            "--port",
            "0",
            "--org-file",
            str(org_file),
            "--refuse-permission",
            "routing:queue:edit",
            "--refuse-permission",
            "authorization:grant:add@d0000000-0000-4000-8000-000000000001",
            "--fresh-user-delay",
            "600",
        ],
        _env(),
        expect_lines=3,
    )
    processes.append(running)
    token = running.token("jobrunner-demo", "jobrunner-demo-secret")
    status, roles = running.get("/api/v2/authorization/roles?name=Quality", token)
    assert [r["name"] for r in roles["entities"]] == ["Quality Evaluator"]
    status, queues = running.get("/api/v2/routing/queues?name=VIP%20Care", token)
    queue = queues["entities"][0]["id"]
    maria = "e0000000-0000-4000-8000-000000000002"
    assert running.get(f"/api/v2/users/{maria}", token)[1]["name"] == "Maria Gonzalez"

    status, body = running.call("POST", f"/api/v2/routing/queues/{queue}/members", token, [])
    assert (status, body["code"]) == (403, "missing.permissions")
    bulkadd = f"/api/v2/authorization/subjects/{maria}/bulkadd"
    grant = {"roleId": "a0000000-0000-4000-8000-000000000003"}
    sales = {"grants": [{**grant, "divisionId": "d0000000-0000-4000-8000-000000000001"}]}
    support = {"grants": [{**grant, "divisionId": "d0000000-0000-4000-8000-000000000002"}]}
    assert running.call("POST", bulkadd, token, sales)[0] == 403
    assert running.call("POST", bulkadd, token, support)[0] == 204

    status, user = running.call(
        "POST", "/api/v2/users", token, {"name": "New", "email": "new@example.com"}
    )
    assert status == 200
    assert running.get(f"/api/v2/authorization/subjects/{user['id']}", token)[0] == 404
    stats = running.get("/emulator/stats")[1]
    assert stats["onboarding"]["maria.gonzalez@example.com"]["grants"] == [
        ["Employee", "Home"],  # every user holds it, as in Genesys
        ["Supervisor", "Support"],
    ]
    code, _, err = running.stop(signal.SIGTERM)
    assert code == 0 and "Traceback" not in err


def test_bad_org_file_is_a_one_line_error(tmp_path: Path) -> None:
    org = tmp_path / "org.json"
    org.write_text('{"roles": [{"name": "Agent"}, {"name": "Agent"}]}', encoding="utf-8")
    result = CliRunner().invoke(emulator_command, ["--port", "0", "--org-file", str(org)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {org}: roles: the name 'Agent' is given twice"
    ]


def test_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(emulator_command, ["--port", str(port)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["--fault-5xx-rate", "1.5"],
        ["--drop-after-create-rate", "-0.1"],
        ["--rate-per-minute", "0"],
        ["--latency-ms", "-1"],
        ["--port", "70000"],
        ["--division", "Sales"],
        ["--division", "Sales=not-a-uuid"],
        ["--revoke-tokens-after", "0"],
        ["--rate-window", "rolling"],
        ["--rate-window-seconds", "0"],
        ["--existing-users", "/no/such/file.csv"],
        ["--org-file", "/no/such/org.json"],
        ["--fresh-user-delay", "-1"],
    ],
)
def test_bad_option_values_are_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(emulator_command, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_rate_window_options_reach_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobrunner.emulator import server

    seen: list[Any] = []

    class Unstartable(server.Emulator):
        def start(self) -> server.Emulator:
            seen.append(self.config)
            raise OSError("not today")

    monkeypatch.setattr(server, "Emulator", Unstartable)
    args = ["--rate-per-minute", "60", "--rate-window-seconds", "6", "--rate-window", "fixed"]
    result = CliRunner().invoke(emulator_command, args)
    assert result.exit_code == 1
    config = seen[0]
    assert (config.rate_per_minute, config.rate_window_s, config.rate_window_mode) == (
        60,
        6.0,
        "fixed",
    )
    default = CliRunner().invoke(emulator_command, ["--rate-window-seconds", "1.5"])
    assert default.exit_code == 1
    assert (seen[1].rate_window_s, seen[1].rate_window_mode) == (1.5, "sliding")


def test_bad_seed_file_is_a_one_line_error(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("name,mail\nA,a@example.com\n", encoding="utf-8")
    result = CliRunner().invoke(emulator_command, ["--port", "0", "--existing-users", str(seeds)])
    assert result.exit_code == 1
    assert "email column" in result.output


def test_module_imports_stay_light() -> None:
    code = (
        "import sys, jobrunner.emulator.command; "
        "heavy = [m for m in ('jobrunner.emulator.server', 'PureCloudPlatformClientV2') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
