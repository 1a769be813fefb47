"""ApiError as the steps read it: which answers say that a version sent was stale."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from jobrunner.config import Settings, parse_environment
from jobrunner.emulator.server import Emulator, EmulatorConfig
from jobrunner.genesys import ApiError, GenesysClient, NewUser, _api_error

STALE = "The version supplied [3] does not match the current version of the user [5]."


def answer(status: int, code: str | None, message: str | None) -> ApiError:
    """The ApiError the client raises for this answer (the SDK's ApiException, mapped)."""
    body: dict[str, Any] = {"status": status}
    if code is not None:
        body["code"] = code
    if message is not None:
        body["message"] = message
    return _api_error(status, json.dumps(body), {})


@pytest.mark.parametrize(
    ("status", "code", "message", "conflict"),
    [
        (409, "general.conflict", STALE, True),
        (409, "general.conflict", "Conflict", True),
        (409, None, None, True),  # a 409 without the code is one too
        (409, "conflict", "Conflict", True),
        (400, "bad.request", STALE, True),
        (400, None, STALE, True),
        (400, "bad.request", STALE.upper(), True),
        (400, "invalid.value", "Value [x] is not valid for field type [version].", False),
        (400, "bad.request", "The request could not be understood by the server", False),
        (400, None, None, False),
        # The same words with another status are not a version conflict.
        (404, "not.found", STALE, False),
        (500, "internal.server.error", STALE, False),
        (408, "request.timeout", "Request timed out", False),
        (429, "too.many.requests.retry.after", "Rate limit exceeded", False),
    ],
)
def test_what_counts_as_a_version_conflict(
    status: int, code: str | None, message: str | None, conflict: bool
) -> None:
    assert answer(status, code, message).version_conflict is conflict


def test_a_stale_version_message_spread_over_lines_is_one() -> None:
    body = json.dumps(
        {
            "code": "bad.request",
            "message": "The version supplied [3] does not\n"
            "  match the current   version of the user [5].",
        }
    )
    assert _api_error(400, body, {}).version_conflict


def test_an_error_built_directly_says_so_too() -> None:
    assert ApiError(409, "general.conflict", "Conflict").version_conflict
    assert ApiError(400, "bad.request", STALE).version_conflict
    assert not ApiError(400, "bad.request", "Bad request").version_conflict


@pytest.fixture
def client(sdk: Any) -> Iterator[GenesysClient]:
    emu = Emulator(EmulatorConfig(client_id="id", client_secret="s3cret-for-tests")).start()
    settings = Settings("id", "s3cret-for-tests", parse_environment(emu.url))
    client = GenesysClient(settings, pool_size=2)
    client.authenticate()
    yield client
    emu.stop()


def test_a_patch_with_a_stale_version_raises_a_version_conflict(client: GenesysClient) -> None:
    created = client.create_user(NewUser("Pat Doe", "pat@example.com"))
    version = client.update_user(created.id, created.version, title="Engineer")
    with pytest.raises(ApiError) as raised:
        client.update_user(created.id, created.version, title="Lead")  # the version before
    assert raised.value.version_conflict
    assert client.get_user(created.id).version == version  # the stale PATCH changed nothing
