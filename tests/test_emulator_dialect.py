"""The real API's dialect, each an EmulatorConfig option: phones read back in Genesys' four
shapes, the Employee role every user holds, a version conflict as 409 or 400, a PATCH carrying
state, and queue members' invalid.id and unknown-member answers. Driven through the official
SDK where what a client reads matters, through bare HTTP elsewhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jobrunner.emulator.command import emulator as emulator_command
from jobrunner.emulator.org import read_org_file
from jobrunner.emulator.server import Emulator, EmulatorConfig

CLIENT_ID = "dialect-client"
CLIENT_SECRET = "dialect-secret"
ORG = read_org_file(Path(__file__).resolve().parents[1] / "examples" / "org.json")
DIVISION = {d["name"]: d["id"] for d in ORG["divisions"]}
ROLE = {r["name"]: r["id"] for r in ORG["roles"]}
QUEUE = {q["name"]: q["id"] for q in ORG["queues"]}
MARIA = next(u["id"] for u in ORG["users"] if u["name"] == "Maria Gonzalez")
UNKNOWN = "00000000-0000-4000-8000-00000000dead"


def config(**overrides: Any) -> EmulatorConfig:
    settings: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "rate_per_minute": 100_000,
        "org": ORG,
    }
    return EmulatorConfig(**{**settings, **overrides})


@pytest.fixture
def start(http_client: Any) -> Iterator[Any]:
    """`start(**config)`: an emulator and a logged-in bare HTTP client on it."""
    started: list[Emulator] = []

    def make(**overrides: Any) -> tuple[Emulator, Any]:
        emu = Emulator(config(**overrides)).start()
        started.append(emu)
        client = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        assert client.login()[0] == 200
        return emu, client

    yield make
    for emu in started:
        emu.stop()


def create(client: Any, email: str, **fields: Any) -> dict[str, Any]:
    status, _, user = client.api(
        "POST", "/api/v2/users", {"name": "Dia Lect", "email": email, **fields}
    )
    assert status == 200, user
    return user


# ---- a. phones as Genesys reads them -------------------------------------------------------

PHONES = [
    {"address": "+13175550101", "mediaType": "PHONE", "type": "WORK"},
    {"address": "+13175550102", "extension": "42", "mediaType": "PHONE", "type": "WORK2"},
    {"extension": "1234", "mediaType": "PHONE", "type": "WORK3"},  # in the pool 1000-1999
    {"extension": "777", "mediaType": "PHONE", "type": "WORK4"},  # in no pool
]
READ_BACK = {
    # Terraform's flattenUserAddresses: 1. a number alone is in address
    "WORK": {"address": "+13175550101"},
    # 3. a number with an extension: the number only in display, the extension beside it
    "WORK2": {"display": "+13175550102", "extension": "42"},
    # 2. an extension in a pool: extension equal to display
    "WORK3": {"extension": "1234", "display": "1234"},
    # 4. an extension outside every pool: display alone
    "WORK4": {"display": "777"},
}


def phones_of(user: Any) -> dict[str, dict[str, str]]:
    """SDK Contacts by type, with only the fields that are set."""
    return {
        c.type: {
            k: v
            for k, v in (("address", c.address), ("display", c.display), ("extension", c.extension))
            if v is not None
        }
        for c in user.addresses
        if c.media_type == "PHONE"
    }


@pytest.mark.parametrize("pools", ["org file", "option"])
def test_phones_read_back_in_genesys_four_shapes(sdk: Any, unique_email: Any, pools: str) -> None:
    if pools == "org file":
        settings = {
            "org": {**ORG, "extensionPools": [{"startNumber": "1000", "endNumber": "1999"}]}
        }
    else:
        settings = {"extension_pools": ["1000-1999"]}
    with Emulator(config(phone_shapes=True, **settings)) as emu:
        users = sdk.pc.UsersApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))
        contacts = [
            sdk.model(
                "Contact",
                address=p.get("address"),
                extension=p.get("extension"),
                media_type=p["mediaType"],
                type=p["type"],
            )
            for p in PHONES
        ]
        body = sdk.model("CreateUser", name="Four Shapes", email=unique_email("shapes"))
        body.addresses = contacts
        created = users.post_users(body)
        assert phones_of(created) == READ_BACK
        assert phones_of(users.get_user(created.id)) == READ_BACK
        patched = users.patch_user(
            created.id, sdk.model("UpdateUser", version=created.version, title="Agent")
        )
        assert phones_of(patched) == READ_BACK
        query = sdk.model("UserSearchCriteria", type="EXACT", fields=["email"], value=created.email)
        found = users.post_users_search(sdk.model("UserSearchRequest", query=[query]))
        assert phones_of(found.results[0]) == READ_BACK
        stored = next(u for u in emu.users() if u["id"] == created.id)
        assert stored["addresses"] == PHONES  # the emulator keeps what was sent


def test_without_phone_shapes_phones_read_back_as_sent(start: Any, unique_email: Any) -> None:
    assert EmulatorConfig().phone_shapes is True  # Genesys' way is the default
    _, client = start(extension_pools=["1000-1999"], phone_shapes=False)
    user = create(client, unique_email("as-sent"), addresses=PHONES)
    assert user["addresses"] == PHONES
    assert client.api("GET", f"/api/v2/users/{user['id']}")[2]["addresses"] == PHONES


def test_extension_pools_are_checked(tmp_path: Path) -> None:
    org = tmp_path / "org.json"
    org.write_text(json.dumps({"extensionPools": [{"startNumber": "19", "endNumber": "10"}]}))
    with pytest.raises(ValueError, match="extension pool"):
        read_org_file(org)
    result = CliRunner().invoke(emulator_command, ["--extension-pool", "1000-99"])
    assert result.exit_code == 2
    assert "START-END" in result.output


# ---- b. the Employee role ------------------------------------------------------------------


def grants_of(emu: Emulator, email: str) -> list[list[str]]:
    return emu.stats()["onboarding"][email.lower()]["grants"]


def test_every_new_user_holds_the_employee_role(start: Any, unique_email: Any) -> None:
    emu, client = start(employee_role=True)
    email = unique_email("employee")
    user = create(client, email)
    assert grants_of(emu, email) == [["Employee", "Home"]]
    status, _, subject = client.api("GET", f"/api/v2/authorization/subjects/{user['id']}")
    assert status == 200
    assert [(g["role"]["name"], g["division"]["name"]) for g in subject["grants"]] == [
        ("Employee", "Home")
    ]
    body = {"grants": [{"roleId": ROLE["Agent"], "divisionId": DIVISION["Sales"]}]}
    path = f"/api/v2/authorization/subjects/{user['id']}/bulkadd"
    assert client.api("POST", path, body)[0] == 204
    assert grants_of(emu, email) == [["Agent", "Sales"], ["Employee", "Home"]]
    assert grants_of(emu, "maria.gonzalez@example.com") == [["Employee", "Home"]]  # existing


def test_a_restored_user_holds_the_employee_role_again(start: Any, unique_email: Any) -> None:
    emu, client = start(employee_role=True)
    email = unique_email("restored")
    user = create(client, email)
    assert client.api("DELETE", f"/api/v2/users/{user['id']}")[0] == 200
    assert grants_of(emu, email) == []
    status, _, restored = client.api(
        "PATCH", f"/api/v2/users/{user['id']}", {"state": "active", "version": 2}
    )
    assert status == 200, restored
    assert grants_of(emu, email) == [["Employee", "Home"]]


def test_an_org_without_the_employee_role_gets_one(start: Any, unique_email: Any) -> None:
    emu, client = start(employee_role=True, org={"roles": [{"name": "Agent"}]}, seed=3)
    status, _, roles = client.api("GET", "/api/v2/authorization/roles?name=Employee")
    assert [r["name"] for r in roles["entities"]] == ["Employee"]
    email = unique_email("no-role-yet")
    create(client, email)
    assert grants_of(emu, email) == [["Employee", "Home"]]
    _, plain = start(org={"roles": [{"name": "Agent"}]}, employee_role=False)
    assert plain.api("GET", "/api/v2/authorization/roles?name=Employee")[2]["entities"] == []


def test_without_the_option_a_new_user_holds_no_role(start: Any, unique_email: Any) -> None:
    assert EmulatorConfig().employee_role is True  # Genesys' way is the default
    emu, client = start(employee_role=False)
    email = unique_email("no-role")
    create(client, email)
    assert grants_of(emu, email) == []


# ---- c. a stale version: 409 or 400 ---------------------------------------------------------


def stale_patch(client: Any, user: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _, body = client.api(
        "PATCH", f"/api/v2/users/{user['id']}", {"version": user["version"] + 7, "title": "X"}
    )
    return status, body


def test_a_stale_version_is_a_409_when_asked(start: Any, unique_email: Any) -> None:
    assert EmulatorConfig().version_conflict_status == "either"  # Genesys answers both
    _, client = start(version_conflict_status="409")
    status, body = stale_patch(client, create(client, unique_email("stale")))
    assert (status, body["code"]) == (409, "general.conflict")
    assert "does not match the current version" in body["message"]


def test_a_stale_version_as_a_400(start: Any, unique_email: Any) -> None:
    emu, client = start(version_conflict_status="400")
    user = create(client, unique_email("stale400"))
    status, body = stale_patch(client, user)
    assert status == 400
    assert "does not match the current version" in body["message"]  # what Terraform looks for
    assert next(u for u in emu.users() if u["id"] == user["id"])["version"] == 1


def test_either_answers_both_ways_reproducibly(start: Any, unique_email: Any) -> None:
    def statuses(seed: int) -> list[int]:
        _, client = start(version_conflict_status="either", seed=seed)
        user = create(client, unique_email("either"))
        return [stale_patch(client, user)[0] for _ in range(24)]

    first = statuses(5)
    assert set(first) == {409, 400}
    assert statuses(5) == first


def test_the_sdk_sees_the_400_conflict(sdk: Any, unique_email: Any) -> None:
    with Emulator(config(version_conflict_status="400")) as emu:
        users = sdk.pc.UsersApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))
        user = users.post_users(sdk.model("CreateUser", name="S", email=unique_email("sdk")))
        with pytest.raises(sdk.ApiException) as excinfo:
            users.patch_user(user.id, sdk.model("UpdateUser", version=9, title="T"))
        assert excinfo.value.status == 400
        assert "does not match the current version" in json.loads(excinfo.value.body)["message"]


# ---- d. a PATCH carrying state -------------------------------------------------------------


def test_state_with_other_fields_is_refused_naming_the_field(start: Any, unique_email: Any) -> None:
    emu, client = start(patch_state_with_others="400")
    user = create(client, unique_email("state400"), title="Before")
    path = f"/api/v2/users/{user['id']}"
    status, _, body = client.api(
        "PATCH", path, {"state": "inactive", "title": "After", "version": 1}
    )
    assert (status, body["details"][0]["fieldName"]) == (400, "title")
    assert "state" in body["message"]
    stored = next(u for u in emu.users() if u["id"] == user["id"])
    assert (stored["state"], stored["title"], stored["version"]) == ("active", "Before", 1)
    status, _, body = client.api("PATCH", path, {"state": "inactive", "version": 1})
    assert (status, body["state"]) == (200, "inactive")  # state alone is fine
    status, _, body = client.api("PATCH", path, {"title": "After", "version": 2})
    assert (status, body["title"]) == (200, "After")  # and so are the others without state


def test_state_with_other_fields_ignores_them(start: Any, unique_email: Any) -> None:
    _, client = start(patch_state_with_others="ignore")
    user = create(client, unique_email("stateignore"), title="Before")
    status, _, body = client.api(
        "PATCH",
        f"/api/v2/users/{user['id']}",
        {"state": "inactive", "title": "After", "version": 1},
    )
    assert (status, body["state"], body["title"]) == (200, "inactive", "Before")


def test_state_with_other_fields_refused_by_default(start: Any, unique_email: Any) -> None:
    assert EmulatorConfig().patch_state_with_others == "400"
    _, client = start()
    user = create(client, unique_email("statedefault"))
    body = {"state": "inactive", "department": "X", "version": 1}
    status, _, answer = client.api("PATCH", f"/api/v2/users/{user['id']}", body)
    assert (status, answer["details"][0]["fieldName"]) == (400, "department")


def test_state_with_other_fields_applies_them_all(start: Any, unique_email: Any) -> None:
    _, client = start(patch_state_with_others="apply")
    user = create(client, unique_email("stateapply"), title="Before")
    status, _, body = client.api(
        "PATCH",
        f"/api/v2/users/{user['id']}",
        {"state": "inactive", "title": "After", "version": 1},
    )
    assert (status, body["state"], body["title"]) == (200, "inactive", "After")


# ---- e. queue members ----------------------------------------------------------------------


def members_of(emu: Emulator, email: str) -> list[str]:
    return emu.stats()["onboarding"][email.lower()]["queues"]


def test_a_non_uuid_member_is_invalid_id(sdk: Any, unique_email: Any) -> None:
    with Emulator(config()) as emu:
        routing = sdk.pc.RoutingApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))
        batch = [sdk.model("WritableEntity", id=MARIA), sdk.model("WritableEntity", id="bob")]
        with pytest.raises(sdk.ApiException) as excinfo:
            routing.post_routing_queue_members(QUEUE["Billing"], batch)
        body = json.loads(excinfo.value.body)
        assert (excinfo.value.status, body["code"]) == (400, "invalid.id")
        assert body["message"] == "A non-UUID value was specified for an ID field"
        assert members_of(emu, "maria.gonzalez@example.com") == []


def test_a_non_uuid_member_is_invalid_id_by_default_and_unknown_without(start: Any) -> None:
    assert EmulatorConfig().queue_member_invalid_id is True
    path = f"/api/v2/routing/queues/{QUEUE['Billing']}/members"
    _, client = start()
    status, _, body = client.api("POST", path, [{"id": "bob"}])
    assert (status, body["code"]) == (400, "invalid.id")
    _, client = start(queue_member_invalid_id=False)
    assert client.api("POST", path, [{"id": "bob"}])[0] == 404


@pytest.mark.parametrize(
    ("answer", "status"), [("404-batch", 404), ("400-batch", 400), ("skip", 204)]
)
def test_what_one_unknown_member_does_to_the_batch(
    start: Any, unique_email: Any, answer: str, status: int
) -> None:
    emu, client = start(queue_unknown_member=answer)
    email = unique_email("member")
    user = create(client, email)
    path = f"/api/v2/routing/queues/{QUEUE['Billing']}/members"
    got, _, body = client.api("POST", path, [{"id": user["id"]}, {"id": UNKNOWN}])
    assert got == status, body
    assert members_of(emu, email) == (["Billing"] if answer == "skip" else [])
    if answer == "400-batch":
        assert body["details"][0]["fieldName"] == "body[1].id"
    if answer == "skip":  # the same for removals
        got, _, _ = client.api("POST", path + "?delete=true", [{"id": UNKNOWN}, {"id": user["id"]}])
        assert (got, members_of(emu, email)) == (204, [])
