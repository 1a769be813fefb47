"""Deleted users as the real API keeps them: hidden from GET unless asked for, still holding
their email, stripped of division, roles, queues and extensions, gone for good to DELETE, and
restored only by a PATCH with exactly state and version."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.emulator.org import read_org_file
from jobrunner.emulator.server import Emulator, EmulatorConfig

CLIENT_ID = "deleted-client"
CLIENT_SECRET = "deleted-secret"
ORG = read_org_file(Path(__file__).resolve().parents[1] / "examples" / "org.json")
DIVISION = {d["name"]: d["id"] for d in ORG["divisions"]}
ROLE = {r["name"]: r["id"] for r in ORG["roles"]}
QUEUE = {q["name"]: q["id"] for q in ORG["queues"]}
SKILL = {s["name"]: s["id"] for s in ORG["skills"]}
MARIA = next(u["id"] for u in ORG["users"] if u["name"] == "Maria Gonzalez")


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    config = EmulatorConfig(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        rate_per_minute=100_000,
        org=ORG,
        employee_role=False,  # restored users lose their roles (test_emulator_dialect has it)
    )
    with Emulator(config) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator, http_client: Any) -> Any:
    c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
    assert c.login()[0] == 200
    return c


@pytest.fixture
def deleted(client: Any, unique_email: Any) -> Any:
    """Factory: a user made, then deleted; returns its User JSON as GET ?state=deleted shows."""

    def make(**fields: Any) -> dict[str, Any]:
        body = {"name": "Soon Gone", "email": unique_email("deleted"), **fields}
        status, _, user = client.api("POST", "/api/v2/users", body)
        assert status == 200, user
        status, _, answer = client.api("DELETE", f"/api/v2/users/{user['id']}")
        assert (status, answer) == (200, {})
        status, _, gone = client.api("GET", f"/api/v2/users/{user['id']}?state=deleted")
        assert status == 200 and gone["state"] == "deleted"
        return gone

    return make


def test_get_of_a_deleted_user_is_404_unless_asked_for(client: Any, deleted: Any) -> None:
    user = deleted()
    path = f"/api/v2/users/{user['id']}"
    status, _, body = client.api("GET", path)
    assert (status, body["code"]) == (404, "not.found")
    assert client.api("GET", path + "?state=active")[0] == 404
    status, _, shown = client.api("GET", path + "?state=deleted")
    assert (status, shown["id"], shown["state"]) == (200, user["id"], "deleted")
    status, _, body = client.api("GET", path + "?state=inactive")
    assert (status, body["code"]) == (400, "invalid.query.param.value")


def test_live_users_are_not_found_as_deleted(client: Any, unique_email: Any) -> None:
    status, _, user = client.api(
        "POST", "/api/v2/users", {"name": "I", "email": unique_email(), "state": "inactive"}
    )
    path = f"/api/v2/users/{user['id']}"
    assert client.api("GET", path)[2]["state"] == "inactive"  # not deleted: found
    assert client.api("GET", path + "?state=deleted")[0] == 404


def test_a_deleted_user_keeps_its_email(client: Any, deleted: Any) -> None:
    user = deleted()
    status, _, body = client.api("POST", "/api/v2/users", {"name": "New", "email": user["email"]})
    assert (status, body["code"]) == (409, "general.conflict")

    def search(*criteria: dict[str, Any]) -> int:
        query = [{"type": "EXACT", "fields": ["email"], "value": user["email"]}, *criteria]
        return int(client.api("POST", "/api/v2/users/search", {"query": query})[2]["total"])

    assert search() == 0
    assert search({"type": "EXACT", "fields": ["state"], "values": ["deleted"]}) == 1


def test_delete_resets_division_roles_queues_and_extensions(
    client: Any, emu: Emulator, unique_email: Any
) -> None:
    addresses = [
        {"address": "+12025550101", "extension": "4321", "mediaType": "PHONE", "type": "WORK"},
        {"extension": "8765", "mediaType": "PHONE", "type": "WORK2"},
        {"address": "+12025550199", "mediaType": "PHONE", "type": "MOBILE"},
    ]
    body = {"name": "Full Agent", "email": unique_email(), "addresses": addresses}
    _, _, user = client.api("POST", "/api/v2/users", body)
    uid = user["id"]
    grant = {"grants": [{"roleId": ROLE["Agent"], "divisionId": DIVISION["Sales"]}]}
    assert client.api("POST", f"/api/v2/authorization/subjects/{uid}/bulkadd", grant)[0] == 204
    members = f"/api/v2/routing/queues/{QUEUE['Billing Escalations']}/members"
    assert client.api("POST", members, [{"id": uid}])[0] == 204
    move = f"/api/v2/authorization/divisions/{DIVISION['Sales']}/objects/USER"
    assert client.api("POST", move, [uid])[0] == 204

    assert client.api("DELETE", f"/api/v2/users/{uid}")[0] == 200
    gone = client.api("GET", f"/api/v2/users/{uid}?state=deleted")[2]
    assert (gone["division"]["id"], gone["division"]["name"]) == (emu.home_division_id, "Home")
    assert gone["addresses"] == [
        {"address": "+12025550101", "mediaType": "PHONE", "type": "WORK"},
        {"address": "+12025550199", "mediaType": "PHONE", "type": "MOBILE"},
    ]
    summary = emu.stats()["onboarding"][user["email"].lower()]
    assert (summary["state"], summary["division"], summary["grants"], summary["queues"]) == (
        "deleted",
        "Home",
        [],
        [],
    )
    assert client.api("GET", members)[2]["entities"] == []


def test_onboarding_a_deleted_user_is_404(client: Any, deleted: Any) -> None:
    uid = deleted()["id"]
    grant = {"grants": [{"roleId": ROLE["Agent"], "divisionId": DIVISION["Sales"]}]}
    calls = [
        ("POST", f"/api/v2/authorization/subjects/{uid}/bulkadd", grant),
        ("GET", f"/api/v2/authorization/subjects/{uid}", None),
        (
            "PATCH",
            f"/api/v2/users/{uid}/routingskills/bulk",
            [{"id": SKILL["Chat"], "proficiency": 1}],
        ),
        ("GET", f"/api/v2/users/{uid}/routingskills", None),
        ("POST", f"/api/v2/routing/queues/{QUEUE['Billing']}/members", [{"id": uid}]),
        ("GET", f"/api/v2/users/{uid}/queues", None),
        ("POST", f"/api/v2/authorization/divisions/{DIVISION['Sales']}/objects/USER", [uid]),
    ]
    assert [client.api(method, path, body)[0] for method, path, body in calls] == [404] * 7


def test_delete_of_a_deleted_or_unknown_user_is_404(client: Any, deleted: Any) -> None:
    user = deleted()
    status, _, body = client.api("DELETE", f"/api/v2/users/{user['id']}")
    assert (status, body["code"]) == (404, "not.found")
    again = client.api("GET", f"/api/v2/users/{user['id']}?state=deleted")[2]
    assert again["version"] == user["version"]  # the second DELETE changed nothing
    assert client.api("DELETE", "/api/v2/users/00000000-0000-4000-8000-00000000dead")[0] == 404


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"version": "current"}, 404, None),  # no state: the user is not found
        ({"version": "current", "title": "Back"}, 404, None),
        ({"state": "active", "version": "current", "title": "Back"}, 400, "title"),
        ({"state": "active", "version": "current", "manager": MARIA}, 400, "manager"),
        ({"state": "inactive", "version": "current"}, 400, "state"),
        ({"state": "deleted", "version": "current"}, 400, "state"),
        ({"state": "active"}, 400, "version"),
        ({"state": "active", "version": "stale"}, 409, "version"),
    ],
)
def test_restore_refusals(
    client: Any, deleted: Any, body: dict[str, Any], status: int, field: str | None
) -> None:
    user = deleted()
    versions = {"current": user["version"], "stale": user["version"] - 1}
    body = {k: versions.get(v, v) if k == "version" else v for k, v in body.items()}
    answer = client.api("PATCH", f"/api/v2/users/{user['id']}", body)
    assert answer[0] == status, answer[2]
    if field is not None:
        assert answer[2]["details"][0]["fieldName"] == field
    still = client.api("GET", f"/api/v2/users/{user['id']}?state=deleted")[2]
    assert (still["state"], still["version"]) == ("deleted", user["version"])


def test_restore_with_exactly_state_and_version(client: Any, emu: Emulator, deleted: Any) -> None:
    user = deleted()
    path = f"/api/v2/users/{user['id']}"
    status, _, restored = client.api("PATCH", path, {"state": "active", "version": user["version"]})
    assert status == 200
    assert (restored["state"], restored["version"], restored["email"]) == (
        "active",
        user["version"] + 1,
        user["email"],
    )
    assert client.api("GET", path)[2]["division"]["name"] == "Home"
    assert client.api("GET", f"/api/v2/authorization/subjects/{user['id']}")[2]["grants"] == []
    # An ordinary user again: PATCHable with other fields, onboardable, deletable.
    assert client.api("PATCH", path, {"version": restored["version"], "title": "Back"})[0] == 200
    grant = {"grants": [{"roleId": ROLE["Agent"], "divisionId": DIVISION["Support"]}]}
    assert (
        client.api("POST", f"/api/v2/authorization/subjects/{user['id']}/bulkadd", grant)[0] == 204
    )
    assert client.api("DELETE", path)[0] == 200


def test_sdk_deletes_reads_and_restores(sdk: Any, emu: Emulator, unique_email: Any) -> None:
    users = sdk.pc.UsersApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))
    user = users.post_users(sdk.model("CreateUser", name="Sdk Gone", email=unique_email("sdk")))
    users.delete_user(user.id)
    with pytest.raises(sdk.ApiException) as excinfo:
        users.get_user(user.id)
    assert excinfo.value.status == 404
    gone = users.get_user(user.id, state="deleted")
    assert (gone.state, gone.version) == ("deleted", 2)
    with pytest.raises(sdk.ApiException) as excinfo:
        users.delete_user(user.id)
    assert excinfo.value.status == 404

    with pytest.raises(sdk.ApiException) as excinfo:
        users.patch_user(user.id, sdk.model("UpdateUser", state="active", version=2, name="X"))
    assert (excinfo.value.status, json.loads(excinfo.value.body)["details"][0]["fieldName"]) == (
        400,
        "name",
    )
    restored = users.patch_user(user.id, sdk.model("UpdateUser", state="active", version=2))
    assert (restored.state, restored.version) == ("active", 3)
    assert users.get_user(user.id).state == "active"
