"""The real API's timing, each an EmulatorConfig option, off by default: the search index lags
behind every change of a user (not only its creation), a new user's version moves on its own
for a while, and an expansion may be left out of GET /api/v2/users/{id}."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.emulator.org import read_org_file
from jobrunner.emulator.server import Emulator, EmulatorConfig

CLIENT_ID = "timing-client"
CLIENT_SECRET = "timing-secret"
ORG = read_org_file(Path(__file__).resolve().parents[1] / "examples" / "org.json")
LOCATION = {loc["name"]: loc["id"] for loc in ORG["locations"]}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def start(http_client: Any) -> Iterator[Any]:
    """`start(**config)`: an emulator on a fake clock and a logged-in bare HTTP client."""
    started: list[Emulator] = []

    def make(**overrides: Any) -> tuple[Emulator, Any, FakeClock]:
        clock = FakeClock()
        settings: dict[str, Any] = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "rate_per_minute": 100_000,
            "org": ORG,
            "clock": clock,
        }
        emu = Emulator(EmulatorConfig(**{**settings, **overrides})).start()
        started.append(emu)
        client = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        assert client.login()[0] == 200
        return emu, client, clock

    yield make
    for emu in started:
        emu.stop()


def create(client: Any, email: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "Tim Ing", "email": email, **fields}
    status, _, user = client.api("POST", "/api/v2/users", body)
    assert status == 200, user
    return user


def found(client: Any, field: str, value: str, *states: str) -> list[tuple[str, str]]:
    """(state, title) of each user the search finds by one field."""
    query = [{"type": "EXACT", "fields": [field], "value": value}]
    if states:
        query.append({"type": "EXACT", "fields": ["state"], "values": list(states)})
    status, _, body = client.api("POST", "/api/v2/users/search", {"query": query})
    assert status == 200, body
    return [(u["state"], u.get("title", "")) for u in body["results"]]


# ---- f. the search index lags behind every change ------------------------------------------


def test_every_change_reaches_the_search_late(start: Any, unique_email: Any) -> None:
    _, client, clock = start(search_index_delay_s=5, search_index_lags_changes=True)
    email = unique_email("lag")
    user = create(client, email, title="First")
    path = f"/api/v2/users/{user['id']}"
    assert found(client, "email", email) == []  # the create, as before
    clock.now += 5
    assert found(client, "email", email) == [("active", "First")]

    assert client.api("PATCH", path, {"title": "Second", "version": 1})[0] == 200
    assert found(client, "email", email) == [("active", "First")]
    assert found(client, "title", "Second") == []
    clock.now += 5
    assert found(client, "email", email) == [("active", "Second")]

    assert client.api("DELETE", path)[0] == 200
    assert found(client, "email", email) == [("active", "Second")]  # still there, as active
    assert found(client, "email", email, "deleted") == []
    clock.now += 5
    assert found(client, "email", email) == []
    assert found(client, "email", email, "deleted") == [("deleted", "Second")]

    assert client.api("PATCH", path, {"state": "active", "version": 3})[0] == 200  # restore
    clock.now += 4.9
    assert found(client, "email", email) == []
    clock.now += 0.1
    assert found(client, "email", email) == [("active", "Second")]


def test_without_the_option_only_the_creation_lags(start: Any, unique_email: Any) -> None:
    assert EmulatorConfig().search_index_lags_changes is False
    _, client, clock = start(search_index_delay_s=5)
    email = unique_email("nolag")
    user = create(client, email, title="First")
    clock.now += 5
    assert client.api("DELETE", f"/api/v2/users/{user['id']}")[0] == 200
    assert found(client, "email", email) == []
    assert found(client, "email", email, "deleted") == [("deleted", "First")]


def test_existing_users_are_found_at_once(start: Any) -> None:
    _, client, _ = start(search_index_delay_s=5, search_index_lags_changes=True)
    assert found(client, "email", "maria.gonzalez@example.com") == [("active", "Supervisor")]


# ---- g. a new user's version moves on its own ----------------------------------------------


def test_a_new_users_version_moves_and_the_creates_version_conflicts(
    start: Any, unique_email: Any
) -> None:
    emu, client, clock = start(new_user_version_churn_s=10, seed=11, version_conflict_status="409")
    user = create(client, unique_email("churn"))
    assert user["version"] == 1
    path = f"/api/v2/users/{user['id']}"
    clock.now += 10
    status, _, now = client.api("GET", path)
    assert 3 <= now["version"] <= 5  # two to four moves
    status, _, body = client.api("PATCH", path, {"title": "Agent", "version": 1})
    assert (status, body["code"]) == (409, "general.conflict")
    status, _, body = client.api("PATCH", path, {"title": "Agent", "version": now["version"]})
    assert (status, body["version"]) == (200, now["version"] + 1)
    clock.now += 100  # the churn is over
    assert client.api("GET", path)[2]["version"] == now["version"] + 1


def test_moves_happen_at_their_time_and_search_shows_them(start: Any, unique_email: Any) -> None:
    emu, client, clock = start(new_user_version_churn_s=10, seed=11)
    email = unique_email("churn-seen")
    user = create(client, email)
    versions = []
    for _ in range(20):
        clock.now += 0.5
        versions.append(client.api("GET", f"/api/v2/users/{user['id']}")[2]["version"])
    assert versions == sorted(versions) and versions[0] < versions[-1]  # one by one, in time

    email = unique_email("churn-searched")
    other = create(client, email)
    clock.now += 10  # every move due, none seen by a GET: the search shows them
    query = {"query": [{"type": "EXACT", "fields": ["email"], "value": email}]}
    moved = client.api("POST", "/api/v2/users/search", query)[2]["results"][0]["version"]
    assert moved > 1
    assert next(u for u in emu.users() if u["id"] == other["id"])["version"] == moved


def test_a_delete_meeting_a_version_move_conflicts_and_deletes_nothing(
    start: Any, unique_email: Any
) -> None:
    emu, client, clock = start(new_user_version_churn_s=10, seed=11, version_conflict_status="400")
    user = create(client, unique_email("churn-delete"))
    path = f"/api/v2/users/{user['id']}"
    clock.now += 10  # every move is due, none seen yet
    status, _, body = client.api("DELETE", path)
    assert status == 400
    assert "does not match the current version" in body["message"]
    assert client.api("GET", path)[2]["state"] == "active"
    assert client.api("DELETE", path)[0] == 200  # again: nothing moved meanwhile


def test_without_the_option_the_version_stays(start: Any, unique_email: Any) -> None:
    assert EmulatorConfig().new_user_version_churn_s == 0
    _, client, clock = start()
    user = create(client, unique_email("still"))
    clock.now += 60
    assert client.api("GET", f"/api/v2/users/{user['id']}")[2]["version"] == 1


# ---- h. a dropped expansion ----------------------------------------------------------------


def with_location(client: Any, email: str) -> str:
    user = create(client, email)
    body = {"version": 1, "locations": [{"id": LOCATION["Remote"]}]}
    assert client.api("PATCH", f"/api/v2/users/{user['id']}", body)[0] == 200
    return str(user["id"])


def test_an_expansion_may_be_left_out(sdk: Any, unique_email: Any) -> None:
    settings = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "org": ORG}
    with Emulator(EmulatorConfig(**settings, expand_drop_rate=1.0)) as emu:
        users = sdk.pc.UsersApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))
        body = sdk.model("CreateUser", name="Lost Expansion", email=unique_email("dropped"))
        user = users.post_users(body)
        location = sdk.model("Location", id=LOCATION["Remote"])
        users.patch_user(user.id, sdk.model("UpdateUser", version=1, locations=[location]))
        assert users.get_user(user.id, expand=["locations"]).locations is None  # not []
    with Emulator(EmulatorConfig(**settings)) as emu:
        users = sdk.pc.UsersApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))
        user = users.post_users(body)
        users.patch_user(user.id, sdk.model("UpdateUser", version=1, locations=[location]))
        shown = users.get_user(user.id, expand=["locations"])
        assert [loc.id for loc in shown.locations] == [LOCATION["Remote"]]


def test_a_share_of_expansions_is_dropped_reproducibly(start: Any, unique_email: Any) -> None:
    def answers(seed: int) -> list[bool]:
        _, client, _ = start(expand_drop_rate=0.5, seed=seed)
        user_id = with_location(client, unique_email("half"))
        path = f"/api/v2/users/{user_id}?expand=locations"
        return ["locations" in client.api("GET", path)[2] for _ in range(30)]

    first = answers(3)
    assert 5 <= sum(first) <= 25
    assert answers(3) == first
    assert EmulatorConfig().expand_drop_rate == 0


def test_dialect_randomness_moves_no_fault(start: Any, unique_email: Any) -> None:
    """Turning the seeded dialect options on leaves the seeded 5xx faults where they were."""

    def faults(**dialect: Any) -> list[bool]:
        emu, client, _ = start(seed=21, **dialect)
        user_id = with_location(client, unique_email("faults"))
        emu.config.fault_5xx_rate = 0.3
        faulted = []
        for _ in range(15):
            for method, path, body in (
                ("GET", f"/api/v2/users/{user_id}?expand=locations", None),
                ("PATCH", f"/api/v2/users/{user_id}", {"version": 99, "title": "X"}),
            ):
                faulted.append(client.api(method, path, body)[0] >= 500)
        return faulted

    plain = faults()
    assert 3 <= sum(plain) <= 27
    assert faults(expand_drop_rate=0.5, version_conflict_status="either") == plain
