"""Shared fixtures: the Genesys SDK (imported once per session) and a plain HTTP client.

Importing PureCloudPlatformClientV2 costs ~3 s and ~220 MB, so only the session-scoped `sdk`
fixture does it, and only for tests that ask for it.
"""

from __future__ import annotations

import base64
import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest


class Sdk:
    """The official SDK module plus helpers: its models take no constructor arguments."""

    def __init__(self, module: Any) -> None:
        self.pc = module
        self.ApiException = module.rest.ApiException

    def model(self, class_name: str, /, **attrs: Any) -> Any:
        """`model("CreateUser", name="A", email="a@example.com")`, attributes in snake_case."""
        instance = getattr(self.pc, class_name)()
        for key, value in attrs.items():
            setattr(instance, key, value)
        return instance

    def client(self, port: int, client_id: str, client_secret: str, *, login: bool = True) -> Any:
        """An ApiClient pointed at a local emulator (one port for login and API hosts)."""
        api_client = self.pc.ApiClient()
        api_client.set_gateway("127.0.0.1", "http", port, "", "")
        if login:
            api_client.get_client_credentials_token(client_id, client_secret)
        return api_client


@pytest.fixture(scope="session")
def sdk() -> Sdk:
    import PureCloudPlatformClientV2

    return Sdk(PureCloudPlatformClientV2)


class Http:
    """A bare keep-alive HTTP/1.1 client with no retries: sees every 429, 5xx and drop."""

    def __init__(self, port: int, client_id: str = "", client_secret: str = "") -> None:
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.token: str | None = None
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def close(self) -> None:
        self.conn.close()

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        data = response.read()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return response.status, {k.lower(): v for k, v in response.getheaders()}, parsed

    def login(
        self, client_id: str | None = None, client_secret: str | None = None
    ) -> tuple[int, Any]:
        pair = f"{client_id or self.client_id}:{client_secret or self.client_secret}"
        status, _, body = self.raw(
            "POST",
            "/oauth/token",
            b"grant_type=client_credentials",
            {
                "Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        if status == 200:
            self.token = body["access_token"]
        return status, body

    def api(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, dict[str, str], Any]:
        headers = {"Content-Type": "application/json"}
        token = token if token is not None else self.token
        if token:
            headers["Authorization"] = "Bearer " + token
        payload = json.dumps(body).encode() if body is not None else None
        return self.raw(method, path, payload, headers)


@pytest.fixture
def http_client() -> Iterator[Any]:
    """Factory: `http_client(port, client_id, client_secret)`; connections closed afterwards."""
    made: list[Http] = []

    def make(port: int, client_id: str = "", client_secret: str = "") -> Http:
        client = Http(port, client_id, client_secret)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def unique_email() -> Any:
    """Factory of emails no other test uses (emulators are shared per module)."""

    def make(prefix: str = "user") -> str:
        return f"{prefix}.{uuid.uuid4().hex[:12]}@example.com"

    return make


_OWN_BASETEMP = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Each session gets a folder of its own under the system's temporary folder (unless
    --basetemp names one). pytest's shared numbered folders are not safe here: with
    tmp_path_retention_policy "none" they carry no lock, so any other session on the
    machine that ends meanwhile deletes this one's folders under its running tests."""
    if config.option.basetemp is None:
        import tempfile

        config.option.basetemp = tempfile.mkdtemp(prefix="jobrunner-tests-")
        config.stash[_OWN_BASETEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave nothing in the temporary folder: the folder this session made goes, whatever
    the outcome."""
    import shutil

    own = config.stash.get(_OWN_BASETEMP, None)
    if own is not None:
        shutil.rmtree(own, ignore_errors=True)
