"""What a real org refuses besides bad input: permissions the caller's roles lack (403, in
every division or in one), and users too new for the onboarding services (404 for a while).
Time moves by an injected clock, never by sleeping."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.emulator.org import read_org_file
from jobrunner.emulator.server import Emulator, EmulatorConfig

CLIENT_ID = "refusal-client"
CLIENT_SECRET = "refusal-secret"
ORG = read_org_file(Path(__file__).resolve().parents[1] / "examples" / "org.json")
DIVISION = {d["name"]: d["id"] for d in ORG["divisions"]}
ROLE = {r["name"]: r["id"] for r in ORG["roles"]}
QUEUE = {q["name"]: q["id"] for q in ORG["queues"]}
SKILL = {s["name"]: s["id"] for s in ORG["skills"]}
MARIA = next(u["id"] for u in ORG["users"] if u["name"] == "Maria Gonzalez")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def emu(clock: FakeClock) -> Iterator[Emulator]:
    config = EmulatorConfig(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        rate_per_minute=100_000,
        token_lifetime_s=10**9,  # the clock jumps; tokens must outlive it
        org=ORG,
        clock=clock,
        employee_role=False,  # the grants the calls make (test_emulator_dialect has it)
    )
    with Emulator(config) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def restore_config(emu: Emulator) -> Iterator[None]:
    yield
    emu.config.refused_permissions = set()
    emu.config.fresh_user_404_s = 0.0


@pytest.fixture
def client(emu: Emulator, http_client: Any) -> Any:
    c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
    assert c.login()[0] == 200
    return c


@pytest.fixture
def new_user(client: Any, unique_email: Any) -> Callable[..., dict[str, Any]]:
    def make(**fields: Any) -> dict[str, Any]:
        body = {"name": "Refused Person", "email": unique_email("refusal"), **fields}
        status, _, user = client.api("POST", "/api/v2/users", body)
        assert status == 200, user
        return user

    return make


def grants(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"grants": [{"roleId": ROLE[r], "divisionId": DIVISION.get(d, d)} for r, d in pairs]}


def bulkadd_path(user_id: str) -> str:
    return f"/api/v2/authorization/subjects/{user_id}/bulkadd?subjectType=PC_USER"


def assert_missing(answer: tuple[int, Any, Any], permission: str) -> None:
    status, _, body = answer
    assert status == 403, body
    assert (body["code"], body["status"]) == ("missing.permissions", 403)
    assert body["message"] == (
        "Unable to perform the requested action. You are missing the following permission(s): "
        f"[{permission}]"
    )


# ---- permissions ---------------------------------------------------------------------------

# permission, method, path and body ({user} is a fresh user's id), and the success status.
NEEDS = [
    ("directory:user:add", "POST", "/api/v2/users", {"name": "X", "email": "{email}"}, 200),
    ("directory:user:view", "GET", "/api/v2/users/{user}", None, 200),
    (
        "directory:user:view",
        "POST",
        "/api/v2/users/search",
        {"query": [{"type": "EXACT", "fields": ["email"], "value": "{email}"}]},
        200,
    ),
    ("directory:user:edit", "PATCH", "/api/v2/users/{user}", {"version": 1, "title": "T"}, 200),
    ("directory:user:delete", "DELETE", "/api/v2/users/{user}", None, 200),
    (
        "authorization:grant:add",
        "POST",
        "/api/v2/authorization/subjects/{user}/bulkadd?subjectType=PC_USER",
        grants(("Agent", "Sales")),
        204,
    ),
    (
        "routing:skill:assign",
        "PATCH",
        "/api/v2/users/{user}/routingskills/bulk",
        [{"id": SKILL["Chat"], "proficiency": 3}],
        200,
    ),
    (
        "routing:queue:edit",
        "POST",
        f"/api/v2/routing/queues/{QUEUE['Billing']}/members",
        [{"id": "{user}"}],
        204,
    ),
    (
        "authorization:division:edit",
        "POST",
        f"/api/v2/authorization/divisions/{DIVISION['Sales']}/objects/USER",
        ["{user}"],
        204,
    ),
    ("authorization:role:view", "GET", "/api/v2/authorization/roles?name=Agent", None, 200),
    ("routing:queue:view", "GET", "/api/v2/routing/queues", None, 200),
    ("routing:queue:view", "GET", f"/api/v2/routing/queues/{QUEUE['Billing']}/members", None, 200),
    ("routing:queue:view", "GET", "/api/v2/users/{user}/queues", None, 200),
]


def fill(template: Any, user: dict[str, Any], email: str) -> Any:
    if isinstance(template, str):
        return template.replace("{user}", user["id"]).replace("{email}", email)
    if isinstance(template, list):
        return [fill(item, user, email) for item in template]
    if isinstance(template, dict):
        return {key: fill(value, user, email) for key, value in template.items()}
    return template


@pytest.mark.parametrize(
    ("permission", "method", "path", "body", "ok"),
    NEEDS,
    ids=[f"{method} {path.split('?')[0]}" for _, method, path, _, _ in NEEDS],
)
def test_a_refused_permission_is_403_and_changes_nothing(
    emu: Emulator,
    client: Any,
    new_user: Any,
    unique_email: Any,
    permission: str,
    method: str,
    path: str,
    body: Any,
    ok: int,
) -> None:
    user = new_user()
    email = unique_email("made")
    path, body = fill(path, user, email), fill(body, user, email)
    before = (emu.users(), emu.stats()["onboarding"])
    emu.config.refused_permissions = {permission}
    assert_missing(client.api(method, path, body), permission)
    assert (emu.users(), emu.stats()["onboarding"]) == before

    emu.config.refused_permissions = {"some:other:permission", f"{permission}@{MARIA}"}
    status, _, answer = client.api(method, path, body)
    assert status == ok, answer


def test_other_permissions_do_not_get_in_the_way(client: Any, emu: Emulator, new_user: Any) -> None:
    user = new_user()
    emu.config.refused_permissions = {"routing:queue:edit", "directory:user:delete"}
    assert client.api("POST", bulkadd_path(user["id"]), grants(("Agent", "Sales")))[0] == 204


def test_grant_refused_in_one_division_only(client: Any, emu: Emulator, new_user: Any) -> None:
    ann, bob = new_user(), new_user()
    emu.config.refused_permissions = {f"authorization:grant:add@{DIVISION['Sales']}"}
    home = emu.home_division_id
    refused = client.api(
        "POST", bulkadd_path(ann["id"]), grants(("Agent", home), ("Agent", "Sales"))
    )
    assert_missing(refused, "authorization:grant:add")
    assert emu.stats()["onboarding"][ann["email"].lower()]["grants"] == []  # not even Home

    assert client.api("POST", bulkadd_path(ann["id"]), grants(("Agent", home)))[0] == 204
    assert client.api("POST", bulkadd_path(ann["id"]), grants(("Agent", "Support")))[0] == 204
    assert client.api("POST", bulkadd_path(bob["id"]), grants(("Supervisor", home)))[0] == 204
    onboarding = emu.stats()["onboarding"]
    assert onboarding[ann["email"].lower()]["grants"] == [["Agent", "Home"], ["Agent", "Support"]]
    assert onboarding[bob["email"].lower()]["grants"] == [["Supervisor", "Home"]]


def test_user_view_refused_in_one_division(client: Any, emu: Emulator, new_user: Any) -> None:
    seller, other = new_user(divisionId=DIVISION["Sales"]), new_user()
    emu.config.refused_permissions = {f"directory:user:view@{DIVISION['Sales']}"}
    assert_missing(client.api("GET", f"/api/v2/users/{seller['id']}"), "directory:user:view")
    assert client.api("GET", f"/api/v2/users/{other['id']}")[0] == 200

    def found(email: str) -> int:
        query = {"query": [{"type": "EXACT", "fields": ["email"], "value": email}]}
        status, _, body = client.api("POST", "/api/v2/users/search", query)
        assert status == 200
        return int(body["total"])

    assert (found(seller["email"]), found(other["email"])) == (0, 1)


def test_user_add_and_skill_assign_refused_in_one_division(
    client: Any, emu: Emulator, new_user: Any, unique_email: Any
) -> None:
    seller, other = new_user(divisionId=DIVISION["Sales"]), new_user()
    emu.config.refused_permissions = {
        f"directory:user:add@{DIVISION['Sales']}",
        f"routing:skill:assign@{DIVISION['Sales']}",
    }
    body = {"name": "S", "email": unique_email(), "divisionId": DIVISION["Sales"]}
    assert_missing(client.api("POST", "/api/v2/users", body), "directory:user:add")
    body = {"name": "H", "email": unique_email()}
    assert client.api("POST", "/api/v2/users", body)[0] == 200
    skills = [{"id": SKILL["Chat"], "proficiency": 1}]
    path = "/api/v2/users/{}/routingskills/bulk"
    assert_missing(client.api("PATCH", path.format(seller["id"]), skills), "routing:skill:assign")
    assert client.api("PATCH", path.format(other["id"]), skills)[0] == 200


def test_division_move_refused_into_one_division(client: Any, emu: Emulator, new_user: Any) -> None:
    user = new_user()
    emu.config.refused_permissions = {f"authorization:division:edit@{DIVISION['Sales']}"}
    into = "/api/v2/authorization/divisions/{}/objects/USER"
    refused = client.api("POST", into.format(DIVISION["Sales"]), [user["id"]])
    assert_missing(refused, "authorization:division:edit")
    assert client.api("POST", into.format(DIVISION["Support"]), [user["id"]])[0] == 204
    # ... and out of it: the user is in Support now, refused there next.
    emu.config.refused_permissions = {f"authorization:division:edit@{DIVISION['Support']}"}
    refused = client.api("POST", into.format(emu.home_division_id), [user["id"]])
    assert_missing(refused, "authorization:division:edit")


# ---- users too new for the onboarding services ---------------------------------------------


def test_a_fresh_user_is_404_to_onboarding_until_the_delay_passes(
    client: Any, emu: Emulator, clock: FakeClock, new_user: Any
) -> None:
    emu.config.fresh_user_404_s = 30
    user = new_user()
    uid = user["id"]
    calls = [
        ("POST", bulkadd_path(uid), grants(("Agent", "Sales")), 204),
        ("GET", f"/api/v2/authorization/subjects/{uid}", None, 200),
        (
            "PATCH",
            f"/api/v2/users/{uid}/routingskills/bulk",
            [{"id": SKILL["Chat"], "proficiency": 2}],
            200,
        ),
        ("GET", f"/api/v2/users/{uid}/routingskills", None, 200),
        ("POST", f"/api/v2/routing/queues/{QUEUE['Retention']}/members", [{"id": uid}], 204),
        ("GET", f"/api/v2/users/{uid}/queues", None, 200),
    ]

    def statuses() -> list[int]:
        return [client.api(method, path, body)[0] for method, path, body, _ in calls]

    assert statuses() == [404] * len(calls)
    # The directory itself knows the user at once.
    assert client.api("GET", f"/api/v2/users/{uid}")[0] == 200
    assert client.api("PATCH", f"/api/v2/users/{uid}", {"version": 1, "manager": MARIA})[0] == 200
    clock.now += 29.9
    assert statuses() == [404] * len(calls)
    assert emu.stats()["onboarding"][user["email"].lower()]["grants"] == []
    clock.now += 0.1
    assert statuses() == [ok for _, _, _, ok in calls]
    onboarded = emu.stats()["onboarding"][user["email"].lower()]
    assert (onboarded["grants"], onboarded["queues"]) == ([["Agent", "Sales"]], ["Retention"])


def test_a_fresh_user_refuses_the_whole_member_batch(
    client: Any, emu: Emulator, new_user: Any
) -> None:
    emu.config.fresh_user_404_s = 30
    fresh = new_user()
    path = f"/api/v2/routing/queues/{QUEUE['Sales Outbound']}/members"
    status, _, body = client.api("POST", path, [{"id": MARIA}, {"id": fresh["id"]}])
    assert (status, body["code"]) == (404, "not.found")
    assert emu.stats()["onboarding"]["maria.gonzalez@example.com"]["queues"] == []


def test_users_that_existed_before_are_never_fresh(client: Any, emu: Emulator) -> None:
    emu.config.fresh_user_404_s = 10**6
    assert client.api("POST", bulkadd_path(MARIA), grants(("Supervisor", "Support")))[0] == 204


def test_the_delay_can_change_at_run_time(client: Any, emu: Emulator, new_user: Any) -> None:
    emu.config.fresh_user_404_s = 60
    user = new_user()
    assert client.api("GET", f"/api/v2/authorization/subjects/{user['id']}")[0] == 404
    emu.config.fresh_user_404_s = 0
    assert client.api("GET", f"/api/v2/authorization/subjects/{user['id']}")[0] == 200


@pytest.mark.parametrize(
    "bad", [{"fresh_user_404_s": -1}, {"refused_permissions": "routing:queue:edit"}]
)
def test_config_rejects_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(**bad)
