"""Onboarding a user in the emulated org: role grants, routing skills, queue memberships,
manager and locations, division moves; through raw HTTP, then the official SDK; then the
stats and the state file that keep it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.emulator.org import read_org_file
from jobrunner.emulator.server import Emulator, EmulatorConfig

CLIENT_ID = "onboarding-client"
CLIENT_SECRET = "onboarding-secret"
ORG = read_org_file(Path(__file__).resolve().parents[1] / "examples" / "org.json")
DIVISION = {d["name"]: d["id"] for d in ORG["divisions"]}
ROLE = {r["name"]: r["id"] for r in ORG["roles"]}
QUEUE = {q["name"]: q["id"] for q in ORG["queues"]}
SKILL = {s["name"]: s["id"] for s in ORG["skills"]}
LANGUAGE = {lang["name"]: lang["id"] for lang in ORG["languages"]}
LOCATION = {loc["name"]: loc["id"] for loc in ORG["locations"]}
MARIA = next(u["id"] for u in ORG["users"] if u["name"] == "Maria Gonzalez")
UNKNOWN = "00000000-0000-4000-8000-00000000dead"


def config(**overrides: Any) -> EmulatorConfig:
    settings: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "rate_per_minute": 100_000,
        "org": ORG,
    }
    # About the grants the calls make: no Employee role from creation (test_emulator_dialect).
    settings.setdefault("employee_role", False)
    settings.update(overrides)
    return EmulatorConfig(**settings)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(config()) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator, http_client: Any) -> Any:
    c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
    assert c.login()[0] == 200
    return c


@pytest.fixture
def new_user(client: Any, unique_email: Any) -> Any:
    """Factory: a new user made through the API; returns its User JSON."""

    def make(name: str = "New Agent", **fields: Any) -> dict[str, Any]:
        body = {"name": name, "email": unique_email("onboard"), **fields}
        status, _, user = client.api("POST", "/api/v2/users", body)
        assert status == 200, user
        return user

    return make


def grants_of(client: Any, user_id: str) -> list[tuple[str, str]]:
    status, _, subject = client.api("GET", f"/api/v2/authorization/subjects/{user_id}")
    assert status == 200, subject
    return [(g["role"]["name"], g["division"]["name"]) for g in subject["grants"]]


def bulkadd(client: Any, user_id: str, *pairs: tuple[str, str]) -> tuple[int, Any]:
    body = {"grants": [{"roleId": role, "divisionId": division} for role, division in pairs]}
    path = f"/api/v2/authorization/subjects/{user_id}/bulkadd?subjectType=PC_USER"
    status, _, answer = client.api("POST", path, body)
    return status, answer


def skills_of(client: Any, user_id: str) -> dict[str, float]:
    status, _, listing = client.api("GET", f"/api/v2/users/{user_id}/routingskills")
    assert status == 200, listing
    return {s["name"]: s["proficiency"] for s in listing["entities"]}


def add_members(client: Any, queue_id: str, user_ids: list[str], delete: bool = False) -> Any:
    query = "?delete=true" if delete else ""
    body = [{"id": user_id} for user_id in user_ids]
    return client.api("POST", f"/api/v2/routing/queues/{queue_id}/members{query}", body)


def member_names(client: Any, queue_id: str) -> list[str]:
    status, _, listing = client.api("GET", f"/api/v2/routing/queues/{queue_id}/members")
    assert status == 200, listing
    return [m["name"] for m in listing["entities"]]


def queues_of(client: Any, user_id: str) -> list[str]:
    status, _, listing = client.api("GET", f"/api/v2/users/{user_id}/queues")
    assert status == 200, listing
    return [q["name"] for q in listing["entities"]]


# ---- roles ---------------------------------------------------------------------------------


def test_bulkadd_grants_roles_and_a_grant_held_is_fine(client: Any, new_user: Any) -> None:
    user = new_user()
    home = client.api("GET", "/api/v2/authorization/divisions/home")[2]["id"]
    status, headers, body = client.api(
        "POST",
        f"/api/v2/authorization/subjects/{user['id']}/bulkadd?subjectType=PC_USER",
        {
            "grants": [
                {"roleId": ROLE["Agent"], "divisionId": home},
                {"roleId": ROLE["Supervisor"], "divisionId": DIVISION["Sales"]},
            ]
        },
    )
    assert (status, body) == (204, None)
    assert "content-length" not in headers
    assert grants_of(client, user["id"]) == [("Agent", "Home"), ("Supervisor", "Sales")]
    first = client.api("GET", f"/api/v2/authorization/subjects/{user['id']}")[2]

    # Again, with one more: the one already held is not an error and is not doubled.
    assert bulkadd(client, user["id"], (ROLE["Agent"], home), (ROLE["Employee"], home))[0] == 204
    subject = client.api("GET", f"/api/v2/authorization/subjects/{user['id']}")[2]
    assert [(g["role"]["name"], g["division"]["name"]) for g in subject["grants"]] == [
        ("Agent", "Home"),
        ("Employee", "Home"),
        ("Supervisor", "Sales"),
    ]
    assert subject["grants"][0]["grantMadeAt"] == first["grants"][0]["grantMadeAt"]
    assert subject["grants"][0]["subjectId"] == user["id"]
    assert subject["grants"][0]["division"]["homeDivision"] is True
    assert (subject["id"], subject["name"]) == (user["id"], "New Agent")


def test_bulkadd_without_subject_type_is_for_a_user(client: Any, new_user: Any) -> None:
    user = new_user()
    body = {"grants": [{"roleId": ROLE["Agent"], "divisionId": DIVISION["Support"]}]}
    path = f"/api/v2/authorization/subjects/{user['id']}/bulkadd"
    assert client.api("POST", path, body)[0] == 204
    assert grants_of(client, user["id"]) == [("Agent", "Support")]


@pytest.mark.parametrize(
    ("grants", "field", "code"),
    [
        ([("Agent", "Sales"), (UNKNOWN, "Sales")], "grants[1].roleId", "invalid.value"),
        ([("Agent", "Sales"), ("Agent", UNKNOWN)], "grants[1].divisionId", "invalid.value"),
        ([(None, "Sales")], "grants[0].roleId", "required.field.missing"),
        ([("Agent", None)], "grants[0].divisionId", "required.field.missing"),
    ],
)
def test_bulkadd_refuses_unknown_ids_and_grants_nothing(
    client: Any, new_user: Any, grants: list[tuple[Any, Any]], field: str, code: str
) -> None:
    user = new_user()
    pairs = [(ROLE.get(role, role), DIVISION.get(division, division)) for role, division in grants]
    status, body = bulkadd(client, user["id"], *pairs)
    assert (status, body["code"], body["details"][0]["fieldName"]) == (400, code, field)
    assert grants_of(client, user["id"]) == []


def test_bulkadd_body_and_subject_refusals(client: Any, new_user: Any) -> None:
    user = new_user()
    path = f"/api/v2/authorization/subjects/{user['id']}/bulkadd"
    status, _, body = client.api("POST", path, {"roles": []})
    assert (status, body["details"][0]["fieldName"]) == (400, "grants")
    status, _, body = client.api("POST", path + "?subjectType=TEAM", {"grants": []})
    assert (status, body["code"]) == (400, "invalid.query.param.value")
    status, _, _ = client.api("POST", path + "?subjectType=PC_GROUP", {"grants": []})
    assert status == 404  # the emulated org has no groups
    assert bulkadd(client, UNKNOWN, (ROLE["Agent"], DIVISION["Sales"]))[0] == 404
    assert client.api("GET", f"/api/v2/authorization/subjects/{UNKNOWN}")[0] == 404


# ---- skills --------------------------------------------------------------------------------


def test_routingskills_bulk_adds_and_updates_and_never_removes(client: Any, new_user: Any) -> None:
    user = new_user()
    path = f"/api/v2/users/{user['id']}/routingskills/bulk"
    status, _, listing = client.api(
        "PATCH",
        path,
        [{"id": SKILL["English"], "proficiency": 5}, {"id": SKILL["Billing"], "proficiency": 3}],
    )
    assert status == 200
    assert [(s["name"], s["proficiency"]) for s in listing["entities"]] == [
        ("Billing", 3.0),
        ("English", 5.0),
    ]
    assert listing["total"] == 2
    skill = listing["entities"][0]
    assert skill["skillUri"] == f"/api/v2/routing/skills/{SKILL['Billing']}"
    assert skill["selfUri"] == f"/api/v2/users/{user['id']}/routingskills/{SKILL['Billing']}"

    status, _, listing = client.api(
        "PATCH",
        path,
        [{"id": SKILL["English"], "proficiency": 2}, {"id": SKILL["Chat"], "proficiency": 4.5}],
    )
    assert status == 200
    expected = {"Billing": 3.0, "Chat": 4.5, "English": 2.0}
    assert {s["name"]: s["proficiency"] for s in listing["entities"]} == expected
    assert skills_of(client, user["id"]) == expected


def test_routingskills_list_pages(client: Any, new_user: Any) -> None:
    user = new_user()
    body = [{"id": skill_id, "proficiency": 1} for skill_id in list(SKILL.values())[:5]]
    assert client.api("PATCH", f"/api/v2/users/{user['id']}/routingskills/bulk", body)[0] == 200
    path = f"/api/v2/users/{user['id']}/routingskills?pageSize=2"
    pages = [client.api("GET", f"{path}&pageNumber={n}")[2] for n in (1, 2, 3)]
    assert [len(p["entities"]) for p in pages] == [2, 2, 1]
    assert {(p["total"], p["pageCount"]) for p in pages} == {(5, 3)}
    assert "nextUri" in pages[1] and "nextUri" not in pages[2]


def test_routingskills_bulk_takes_50_and_refuses_51(client: Any, new_user: Any) -> None:
    user = new_user()
    path = f"/api/v2/users/{user['id']}/routingskills/bulk"
    many = [{"id": skill_id, "proficiency": 1} for skill_id in SKILL.values()] * 5
    status, _, body = client.api("PATCH", path, many[:51])
    assert (status, body["code"]) == (400, "bad.request")
    assert "50" in body["message"]
    assert skills_of(client, user["id"]) == {}
    assert client.api("PATCH", path, many[:50])[0] == 200
    assert len(skills_of(client, user["id"])) == 12


@pytest.mark.parametrize(
    ("entry", "field", "code"),
    [
        ({"id": SKILL["Chat"], "proficiency": 5.5}, "body[1].proficiency", "invalid.value"),
        ({"id": SKILL["Chat"], "proficiency": -1}, "body[1].proficiency", "invalid.value"),
        ({"id": SKILL["Chat"], "proficiency": "3"}, "body[1].proficiency", "invalid.value"),
        ({"id": SKILL["Chat"], "proficiency": True}, "body[1].proficiency", "invalid.value"),
        ({"id": SKILL["Chat"]}, "body[1].proficiency", "required.field.missing"),
        ({"id": UNKNOWN, "proficiency": 3}, "body[1].id", "invalid.value"),
        ({"proficiency": 3}, "body[1].id", "required.field.missing"),
    ],
)
def test_routingskills_bulk_refusals_apply_nothing(
    client: Any, new_user: Any, entry: dict[str, Any], field: str, code: str
) -> None:
    user = new_user()
    body = [{"id": SKILL["Email"], "proficiency": 0}, entry]
    status, _, answer = client.api("PATCH", f"/api/v2/users/{user['id']}/routingskills/bulk", body)
    assert (status, answer["code"], answer["details"][0]["fieldName"]) == (400, code, field)
    assert skills_of(client, user["id"]) == {}


def test_routingskills_of_an_unknown_user_is_404(client: Any) -> None:
    body = [{"id": SKILL["Chat"], "proficiency": 1}]
    assert client.api("PATCH", f"/api/v2/users/{UNKNOWN}/routingskills/bulk", body)[0] == 404
    assert client.api("GET", f"/api/v2/users/{UNKNOWN}/routingskills")[0] == 404


# ---- queues --------------------------------------------------------------------------------


def test_queue_members_add_read_and_remove(client: Any, new_user: Any) -> None:
    ann, bob = new_user("Ann Queue"), new_user("Bob Queue")
    queue = QUEUE["Retention"]
    status, headers, body = add_members(client, queue, [ann["id"], bob["id"]])
    assert (status, body) == (204, None)
    assert member_names(client, queue) == ["Ann Queue", "Bob Queue"]
    assert add_members(client, queue, [ann["id"], ann["id"]])[0] == 204  # already there: fine
    assert member_names(client, queue) == ["Ann Queue", "Bob Queue"]

    status, _, listing = client.api("GET", f"/api/v2/routing/queues/{queue}/members")
    member = listing["entities"][0]
    assert (member["id"], member["joined"], member["memberBy"]) == (ann["id"], True, "user")
    assert member["user"]["email"] == ann["email"]
    assert "total" not in listing and "pageCount" not in listing  # nor in the real listing

    status, _, mine = client.api("GET", f"/api/v2/users/{ann['id']}/queues")
    assert [(q["name"], q["memberCount"], q["joined"]) for q in mine["entities"]] == [
        ("Retention", 2, True)
    ]
    _, _, queues = client.api("GET", "/api/v2/routing/queues?name=Retention")
    assert queues["entities"][0]["memberCount"] == 2

    assert add_members(client, queue, [bob["id"]], delete=True)[0] == 204
    assert member_names(client, queue) == ["Ann Queue"]
    assert add_members(client, queue, [bob["id"]], delete=True)[0] == 204  # already gone: fine
    assert queues_of(client, bob["id"]) == []
    assert add_members(client, queue, [bob["id"]], delete=False)[0] == 204
    assert queues_of(client, bob["id"]) == ["Retention"]


def test_queue_members_take_100_and_refuse_101(client: Any, new_user: Any) -> None:
    user = new_user()
    queue = QUEUE["VIP Care"]
    status, _, body = add_members(client, queue, [user["id"]] * 101)
    assert (status, body["code"]) == (400, "bad.request")
    assert body["message"] == (
        "Invalid request data.  Make sure you submit a valid number of queue members."
    )
    assert queues_of(client, user["id"]) == []
    assert add_members(client, queue, [])[0] == 400
    assert add_members(client, queue, [user["id"]] * 100)[0] == 204
    assert queues_of(client, user["id"]) == ["VIP Care"]


def test_one_unknown_member_refuses_the_whole_batch(client: Any, new_user: Any) -> None:
    user = new_user()
    queue = QUEUE["Spanish Line"]
    status, _, body = add_members(client, queue, [user["id"], UNKNOWN])
    assert (status, body["code"]) == (404, "not.found")
    assert UNKNOWN in body["message"]
    assert queues_of(client, user["id"]) == []
    assert add_members(client, UNKNOWN, [user["id"]])[0] == 404  # unknown queue
    assert client.api("GET", f"/api/v2/routing/queues/{UNKNOWN}/members")[0] == 404
    status, _, body = client.api("POST", f"/api/v2/routing/queues/{queue}/members", [{"x": 1}])
    assert (status, body["details"][0]["fieldName"]) == (400, "body[0].id")
    status, _, body = add_members(client, queue, [user["id"]], delete=False)
    assert status == 204
    status, _, body = client.api(
        "POST", f"/api/v2/routing/queues/{queue}/members?delete=maybe", [{"id": user["id"]}]
    )
    assert (status, body["code"]) == (400, "invalid.query.param.value")


def test_queue_members_and_user_queues_page(client: Any, new_user: Any) -> None:
    users = [new_user(f"Pager {n}") for n in range(5)]
    queue = QUEUE["General Inquiries"]
    assert add_members(client, queue, [u["id"] for u in users])[0] == 204
    path = f"/api/v2/routing/queues/{queue}/members?pageSize=2"
    pages = [client.api("GET", f"{path}&pageNumber={n}")[2] for n in (1, 2, 3)]
    assert [[m["name"] for m in p["entities"]] for p in pages] == [
        ["Pager 0", "Pager 1"],
        ["Pager 2", "Pager 3"],
        ["Pager 4"],
    ]
    assert ["nextUri" in p for p in pages] == [True, True, False]
    status, _, body = client.api("GET", f"/api/v2/routing/queues/{queue}/members?pageSize=101")
    assert (status, body["details"][0]["fieldName"]) == (400, "pageSize")

    one = users[0]["id"]
    for name in ("Billing", "Sales Inbound"):
        assert add_members(client, QUEUE[name], [one])[0] == 204
    _, _, page = client.api("GET", f"/api/v2/users/{one}/queues?pageSize=2&pageNumber=2")
    assert ([q["name"] for q in page["entities"]], page["total"], page["pageCount"]) == (
        ["Sales Inbound"],
        3,
        2,
    )


# ---- manager and locations -----------------------------------------------------------------


def test_patch_sets_and_removes_a_manager(client: Any, new_user: Any) -> None:
    user = new_user()
    path = f"/api/v2/users/{user['id']}"
    status, _, patched = client.api("PATCH", path, {"version": 1, "manager": MARIA})
    assert status == 200
    assert patched["manager"] == {"id": MARIA, "selfUri": f"/api/v2/users/{MARIA}"}
    assert client.api("GET", path)[2]["manager"]["id"] == MARIA
    status, _, patched = client.api("PATCH", path, {"version": 2, "title": "Agent"})
    assert patched["manager"]["id"] == MARIA  # untouched when not sent
    status, _, patched = client.api("PATCH", path, {"version": 3, "manager": ""})
    assert (status, "manager" in patched) == (200, False)


@pytest.mark.parametrize("manager", [UNKNOWN, "self", 42])
def test_patch_refuses_a_manager_that_is_no_other_user(
    client: Any, new_user: Any, manager: Any
) -> None:
    user = new_user()
    manager = user["id"] if manager == "self" else manager
    path = f"/api/v2/users/{user['id']}"
    status, _, body = client.api("PATCH", path, {"version": 1, "manager": manager})
    assert (status, body["details"][0]["fieldName"]) == (400, "manager")
    assert client.api("GET", path)[2]["version"] == 1


def test_patch_refuses_a_deleted_manager(client: Any, new_user: Any) -> None:
    boss, user = new_user("Gone Boss"), new_user()
    assert client.api("DELETE", f"/api/v2/users/{boss['id']}")[0] == 200
    path = f"/api/v2/users/{user['id']}"
    assert client.api("PATCH", path, {"version": 1, "manager": boss["id"]})[0] == 400


def test_patch_sets_locations_shown_with_expand(client: Any, new_user: Any) -> None:
    user = new_user()
    path = f"/api/v2/users/{user['id']}"
    body = {"version": 1, "locations": [{"id": LOCATION["Remote"], "notes": "home office"}]}
    status, _, patched = client.api("PATCH", path, body)
    assert (status, patched["version"], "locations" in patched) == (200, 2, False)
    assert "locations" not in client.api("GET", path)[2]  # as for real: only when expanded
    shown = client.api("GET", path + "?expand=locations")[2]["locations"]
    assert [(loc["id"], loc["notes"]) for loc in shown] == [(LOCATION["Remote"], "home office")]
    assert shown[0]["locationDefinition"]["name"] == "Remote"
    assert shown[0]["locationDefinition"]["selfUri"] == f"/api/v2/locations/{LOCATION['Remote']}"

    # The shape a client copies from a GET is accepted too; the list is replaced.
    dublin = {"locationDefinition": {"id": LOCATION["Dublin Office"]}}
    assert client.api("PATCH", path, {"version": 2, "locations": [dublin]})[0] == 200
    shown = client.api("GET", path + "?expand=skills,locations")[2]["locations"]
    assert [loc["locationDefinition"]["name"] for loc in shown] == ["Dublin Office"]
    assert client.api("PATCH", path, {"version": 3, "locations": []})[0] == 200
    assert client.api("GET", path + "?expand=locations")[2]["locations"] == []


@pytest.mark.parametrize(
    ("locations", "field"),
    [
        ([{"id": UNKNOWN}], "locations[0].id"),
        ([{"id": LOCATION["Remote"]}, {"notes": "where?"}], "locations[1].id"),
        ({"id": LOCATION["Remote"]}, "locations"),
    ],
)
def test_patch_refuses_unknown_locations(
    client: Any, new_user: Any, locations: Any, field: str
) -> None:
    user = new_user()
    path = f"/api/v2/users/{user['id']}"
    status, _, body = client.api("PATCH", path, {"version": 1, "locations": locations})
    assert (status, body["details"][0]["fieldName"]) == (400, field)
    assert client.api("GET", path)[2]["version"] == 1


def test_patch_with_a_stale_version_changes_nothing(client: Any, new_user: Any) -> None:
    user = new_user()
    path = f"/api/v2/users/{user['id']}"
    assert client.api("PATCH", path, {"version": 1, "title": "Lead"})[0] == 200
    status, _, body = client.api(
        "PATCH",
        path,
        {"version": 1, "manager": MARIA, "locations": [{"id": LOCATION["Remote"]}]},
    )
    assert (status, body["code"], body["details"][0]["fieldName"]) == (
        409,
        "general.conflict",
        "version",
    )
    current = client.api("GET", path + "?expand=locations")[2]
    assert ("manager" in current, current["locations"], current["version"]) == (False, [], 2)


def test_patch_does_not_delete(client: Any, new_user: Any) -> None:
    user = new_user()
    path = f"/api/v2/users/{user['id']}"
    status, _, body = client.api("PATCH", path, {"version": 1, "state": "deleted"})
    assert (status, body["details"][0]["fieldName"]) == (400, "state")
    assert client.api("PATCH", path, {"version": 1, "state": "inactive"})[2]["state"] == "inactive"


# ---- divisions -----------------------------------------------------------------------------


def test_division_objects_moves_users(client: Any, new_user: Any) -> None:
    ann, bob = new_user(), new_user()
    path = f"/api/v2/authorization/divisions/{DIVISION['Support']}/objects/USER"
    status, headers, body = client.api("POST", path, [ann["id"], bob["id"]])
    assert (status, body) == (204, None)
    moved = client.api("GET", f"/api/v2/users/{ann['id']}")[2]
    assert (moved["division"]["id"], moved["division"]["name"], moved["version"]) == (
        DIVISION["Support"],
        "Support",
        2,
    )
    assert client.api("POST", path, [ann["id"]])[0] == 204  # already there: fine, no change
    assert client.api("GET", f"/api/v2/users/{ann['id']}")[2]["version"] == 2


def test_division_objects_refusals_move_nobody(client: Any, new_user: Any) -> None:
    user = new_user()
    sales = f"/api/v2/authorization/divisions/{DIVISION['Sales']}/objects"
    assert client.api("POST", f"{sales}/USER", [user["id"], UNKNOWN])[0] == 404
    status, _, body = client.api(
        "POST", f"/api/v2/authorization/divisions/{UNKNOWN}/objects/USER", [user["id"]]
    )
    assert (status, body["code"]) == (404, "not.found")
    assert client.api("POST", f"{sales}/QUEUE", [QUEUE["Billing"]])[0] == 400
    assert client.api("POST", f"{sales}/USER", {"id": user["id"]})[0] == 400
    assert client.api("GET", f"/api/v2/users/{user['id']}")[2]["division"]["name"] == "Home"


# ---- through the SDK -----------------------------------------------------------------------


def test_sdk_onboards_a_user_end_to_end(sdk: Any, emu: Emulator, unique_email: Any) -> None:
    api_client = sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET)
    users, auth = sdk.pc.UsersApi(api_client), sdk.pc.AuthorizationApi(api_client)
    routing = sdk.pc.RoutingApi(api_client)
    user = users.post_users(sdk.model("CreateUser", name="Sdk Agent", email=unique_email("sdk")))

    grants = sdk.model(
        "RoleDivisionGrants",
        grants=[
            sdk.model("RoleDivisionPair", role_id=ROLE["Agent"], division_id=DIVISION["Sales"]),
            sdk.model("RoleDivisionPair", role_id=ROLE["Employee"], division_id=DIVISION["Sales"]),
        ],
    )
    assert auth.post_authorization_subject_bulkadd(user.id, grants, subject_type="PC_USER") is None
    subject = auth.get_authorization_subject(user.id)
    assert [(g.role.name, g.division.name) for g in subject.grants] == [
        ("Agent", "Sales"),
        ("Employee", "Sales"),
    ]
    assert subject.grants[0].grant_made_at is not None  # parsed as a datetime

    skills = users.patch_user_routingskills_bulk(
        user.id,
        [
            sdk.model("UserRoutingSkillPost", id=SKILL["Spanish"], proficiency=4.0),
            sdk.model("UserRoutingSkillPost", id=SKILL["Sales"], proficiency=2.0),
        ],
    )
    assert [(s.name, s.proficiency, s.state) for s in skills.entities] == [
        ("Sales", 2.0, "active"),
        ("Spanish", 4.0, "active"),
    ]
    assert users.get_user_routingskills(user.id, page_size=1).page_count == 2

    member = sdk.model("WritableEntity", id=user.id)
    assert routing.post_routing_queue_members(QUEUE["Tech Support Tier 2"], [member]) is None
    members = routing.get_routing_queue_members(QUEUE["Tech Support Tier 2"])
    assert [(m.id, m.name, m.joined, m.user.email) for m in members.entities] == [
        (user.id, "Sdk Agent", True, user.email)
    ]
    assert [q.name for q in users.get_user_queues(user.id).entities] == ["Tech Support Tier 2"]
    assert (
        routing.post_routing_queue_members(QUEUE["Tech Support Tier 2"], [member], delete=True)
        is None
    )
    assert routing.get_user_queues(user.id).entities == []

    location = sdk.model("Location", id=LOCATION["Austin Office"], notes="3rd floor")
    patched = users.patch_user(
        user.id, sdk.model("UpdateUser", version=1, manager=MARIA, locations=[location])
    )
    assert (patched.manager.id, patched.version) == (MARIA, 2)
    again = users.get_user(user.id, expand=["locations"])
    assert [(loc.location_definition.name, loc.notes) for loc in again.locations] == [
        ("Austin Office", "3rd floor")
    ]

    assert (
        auth.post_authorization_division_object(DIVISION["EMEA Support"], "USER", [user.id]) is None
    )
    assert users.get_user(user.id).division.name == "EMEA Support"


def test_sdk_sees_onboarding_refusals(sdk: Any, emu: Emulator, unique_email: Any) -> None:
    api_client = sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET)
    users, routing = sdk.pc.UsersApi(api_client), sdk.pc.RoutingApi(api_client)
    user = users.post_users(sdk.model("CreateUser", name="Sdk Two", email=unique_email("sdk")))
    too_many = [sdk.model("UserRoutingSkillPost", id=SKILL["Chat"], proficiency=1.0)] * 51
    with pytest.raises(sdk.ApiException) as excinfo:
        users.patch_user_routingskills_bulk(user.id, too_many)
    assert excinfo.value.status == 400
    with pytest.raises(sdk.ApiException) as excinfo:
        routing.post_routing_queue_members(
            QUEUE["Billing"], [sdk.model("WritableEntity", id=UNKNOWN)]
        )
    assert excinfo.value.status == 404
    with pytest.raises(sdk.ApiException) as excinfo:
        users.patch_user(user.id, sdk.model("UpdateUser", version=1, manager=UNKNOWN))
    assert (excinfo.value.status, json.loads(excinfo.value.body)["code"]) == (400, "invalid.value")


# ---- stats and the state file --------------------------------------------------------------


def onboard(client: Any, user_id: str) -> None:
    """Agent in Sales, Spanish 4 and Billing 3, the languages Spanish 5 and English 2, Billing
    and Spanish Line queues, Maria as manager, the Dublin Office, moved to Support."""
    assert bulkadd(client, user_id, (ROLE["Agent"], DIVISION["Sales"]))[0] == 204
    body = [{"id": SKILL["Spanish"], "proficiency": 4}, {"id": SKILL["Billing"], "proficiency": 3}]
    assert client.api("PATCH", f"/api/v2/users/{user_id}/routingskills/bulk", body)[0] == 200
    body = [
        {"id": LANGUAGE["Spanish"], "proficiency": 5},
        {"id": LANGUAGE["English"], "proficiency": 2},
    ]
    assert client.api("PATCH", f"/api/v2/users/{user_id}/routinglanguages/bulk", body)[0] == 200
    for queue in ("Billing", "Spanish Line"):
        assert add_members(client, QUEUE[queue], [user_id])[0] == 204
    body = {"version": 1, "manager": MARIA, "locations": [{"id": LOCATION["Dublin Office"]}]}
    assert client.api("PATCH", f"/api/v2/users/{user_id}", body)[0] == 200
    path = f"/api/v2/authorization/divisions/{DIVISION['Support']}/objects/USER"
    assert client.api("POST", path, [user_id])[0] == 204


ONBOARDED = {
    "state": "active",
    "division": "Support",
    "grants": [["Agent", "Sales"]],
    "skills": {"Billing": 3.0, "Spanish": 4.0},
    "languages": {"English": 2.0, "Spanish": 5.0},
    "queues": ["Billing", "Spanish Line"],
    "manager": "maria.gonzalez@example.com",
    "location": "Dublin Office",
}


def test_stats_show_onboarding_per_email_and_templated_routes(http_client: Any) -> None:
    with Emulator(config()) as emu:
        client = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        client.login()
        status, _, user = client.api(
            "POST", "/api/v2/users", {"name": "Stat Agent", "email": "Stat.Agent@Example.com"}
        )
        onboard(client, user["id"])
        client.api("GET", f"/api/v2/authorization/subjects/{user['id']}")
        client.api("GET", f"/api/v2/users/{user['id']}/queues")

        status, _, stats = client.raw("GET", "/emulator/stats")
        assert stats == emu.stats()
        assert stats["onboarding"]["stat.agent@example.com"] == ONBOARDED
        assert stats["onboarding"]["tom.becker@example.com"] == {
            "state": "active",
            "division": "Home",
            "grants": [],
            "skills": {},
            "languages": {},
            "queues": [],
            "manager": None,
            "location": None,
        }
        assert stats["requests_by_route"] == {
            "POST /oauth/token": 1,
            "POST /api/v2/users": 1,
            "POST /api/v2/authorization/subjects/{id}/bulkadd": 1,
            "PATCH /api/v2/users/{id}/routingskills/bulk": 1,
            "PATCH /api/v2/users/{id}/routinglanguages/bulk": 1,
            "POST /api/v2/routing/queues/{id}/members": 2,
            "PATCH /api/v2/users/{id}": 1,
            "POST /api/v2/authorization/divisions/{id}/objects/{type}": 1,
            "GET /api/v2/authorization/subjects/{id}": 1,
            "GET /api/v2/users/{id}/queues": 1,
        }
        assert stats["responses_by_status"] == {"200": 7, "204": 4}


def test_state_file_keeps_onboarding(http_client: Any, tmp_path: Path) -> None:
    state = tmp_path / "org-state.json"
    with Emulator(config(state_file=state)) as first:
        client = http_client(first.port, CLIENT_ID, CLIENT_SECRET)
        client.login()
        _, _, user = client.api(
            "POST", "/api/v2/users", {"name": "Kept", "email": "kept@example.com"}
        )
        onboard(client, user["id"])
        before = first.stats()["onboarding"]
    saved = json.loads(state.read_text())
    assert (saved["format"], saved["version"]) == ("jobrunner-emulator-state", 3)

    with Emulator(config(state_file=state)) as second:
        assert second.stats()["onboarding"] == before
        assert before["kept@example.com"] == ONBOARDED
        client = http_client(second.port, CLIENT_ID, CLIENT_SECRET)
        client.login()
        shown = client.api("GET", f"/api/v2/users/{user['id']}?expand=locations")[2]
        assert shown["locations"][0]["locationDefinition"]["name"] == "Dublin Office"
        assert grants_of(client, user["id"]) == [("Agent", "Sales")]
        assert sum(u["email"] == "admin@example.com" for u in second.users()) == 1


def test_state_file_of_version_1_still_loads(http_client: Any, tmp_path: Path) -> None:
    state = tmp_path / "old.json"
    old = {
        "format": "jobrunner-emulator-state",
        "version": 1,
        "homeDivisionId": "00000000-0000-4000-8000-0000000000aa",
        "users": [{"id": UNKNOWN, "name": "Old", "email": "old@example.com", "state": "active"}],
    }
    state.write_text(json.dumps(old), encoding="utf-8")
    with Emulator(config(state_file=state)) as emu:
        assert emu.home_division_id == old["homeDivisionId"]
        assert emu.stats()["onboarding"]["old@example.com"]["grants"] == []
        client = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
        client.login()
        assert bulkadd(client, UNKNOWN, (ROLE["Agent"], DIVISION["Sales"]))[0] == 204


def test_state_file_references_to_a_changed_org_are_dropped(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    user = {"id": UNKNOWN, "name": "Old", "email": "old@example.com", "state": "active"}
    gone = "00000000-0000-4000-8000-00000000beef"
    saved = {
        "format": "jobrunner-emulator-state",
        "version": 2,
        "homeDivisionId": "00000000-0000-4000-8000-0000000000aa",
        "users": [user],
        "grants": {
            UNKNOWN: [[ROLE["Agent"], DIVISION["Sales"], "x"], [gone, DIVISION["Sales"], "x"]]
        },
        "skills": {UNKNOWN: {SKILL["Chat"]: 2, gone: 5}},
        "languages": {UNKNOWN: {LANGUAGE["French"]: 3, gone: 1}, gone: {LANGUAGE["French"]: 1}},
        "queueMembers": {QUEUE["Billing"]: [UNKNOWN, gone], gone: [UNKNOWN]},
        "userLocations": {UNKNOWN: [{"id": gone}], gone: [{"id": LOCATION["Remote"]}]},
    }
    state.write_text(json.dumps(saved), encoding="utf-8")
    with Emulator(config(state_file=state)) as emu:
        assert emu.stats()["onboarding"]["old@example.com"] == {
            "state": "active",
            "division": "Home",
            "grants": [["Agent", "Sales"]],
            "skills": {"Chat": 2.0},
            "languages": {"French": 3.0},
            "queues": ["Billing"],
            "manager": None,
            "location": None,
        }
