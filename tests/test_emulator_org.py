"""The emulated org beyond users: the org file, and look-ups of divisions, roles, queues,
skills and locations by name with paging, through raw HTTP and the official SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.emulator.directory import Directory
from jobrunner.emulator.org import read_org_file
from jobrunner.emulator.server import Emulator, EmulatorConfig

CLIENT_ID = "org-client"
CLIENT_SECRET = "org-secret"
ORG_FILE = Path(__file__).resolve().parents[1] / "examples" / "org.json"
HOME_ID = "00000000-0000-4000-8000-0000000000aa"
# Two roles whose names differ only in case: real orgs have them, clients must say "ambiguous".
TWIN_ROLES = [
    {"id": "a0000000-0000-4000-8000-0000000000f1", "name": "Team Lead"},
    {"id": "a0000000-0000-4000-8000-0000000000f2", "name": "TEAM LEAD"},
]


def example_org() -> dict[str, Any]:
    return read_org_file(ORG_FILE)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    org = example_org()
    org["roles"] = org["roles"] + TWIN_ROLES
    config = EmulatorConfig(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, rate_per_minute=100_000, org=org
    )
    with Emulator(config) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator, http_client: Any) -> Any:
    c = http_client(emu.port, CLIENT_ID, CLIENT_SECRET)
    assert c.login()[0] == 200
    return c


def names(client: Any, path: str) -> list[str]:
    status, _, body = client.api("GET", path)
    assert status == 200, body
    return [e["name"] for e in body["entities"]]


# ---- the org file --------------------------------------------------------------------------


def test_example_org_file_holds_the_documented_org() -> None:
    org = example_org()
    listed = {key: [e["name"] for e in org[key]] for key in org if key != "users"}
    assert listed == {
        "divisions": ["Sales", "Support", "EMEA Support"],
        "roles": ["Employee", "Agent", "Supervisor", "Quality Evaluator", "Reporting Viewer"],
        "queues": [
            "Billing",
            "Billing Escalations",
            "Technical Support",
            "Tech Support Tier 2",
            "Retention",
            "Sales Inbound",
            "Sales Outbound",
            "General Inquiries",
            "VIP Care",
            "Spanish Line",
        ],
        "skills": [
            "English",
            "Spanish",
            "French",
            "German",
            "Billing",
            "Troubleshooting",
            "Networking",
            "Retention Offers",
            "Sales",
            "Escalations",
            "Chat",
            "Email",
        ],
        "languages": ["English", "Spanish", "French", "German", "Portuguese"],
        "locations": ["Indianapolis HQ", "Dublin Office", "Austin Office", "Remote"],
    }
    assert [(u["name"], u["email"]) for u in org["users"]] == [
        ("Org Admin", "admin@example.com"),
        ("Maria Gonzalez", "maria.gonzalez@example.com"),
        ("Tom Becker", "tom.becker@example.com"),
    ]
    assert all(e.get("id") for key in org for e in org[key])  # fixed ids, not generated


def test_org_users_exist_active_in_home(emu: Emulator) -> None:
    seeded = {u["email"]: u for u in emu.users()}
    for email in ("admin@example.com", "maria.gonzalez@example.com", "tom.becker@example.com"):
        assert (seeded[email]["state"], seeded[email]["division"]["name"]) == ("active", "Home")


def test_ids_are_optional_and_derived_from_the_seed() -> None:
    org = {"queues": [{"name": "Billing"}, {"name": "Retention"}], "skills": [{"name": "Billing"}]}

    def ids(seed: int | None) -> list[str]:
        directory = Directory(HOME_ID)
        directory.load_org(org, seed=seed)
        return [q["id"] for q in directory.org.matching("queues")] + [
            s["id"] for s in directory.org.matching("skills")
        ]

    first = ids(1)
    assert first == ids(1)
    assert len(set(first)) == 3  # a queue and a skill of one name get different ids
    assert set(first).isdisjoint(ids(2))
    assert ids(None) != ids(None)


@pytest.mark.parametrize(
    ("org", "message"),
    [
        ({"roles": [{"name": "Agent"}, {"name": "Agent"}]}, "given twice"),
        ({"queues": [{"id": "nope", "name": "Billing"}]}, "not a UUID"),
        ({"skills": [{"name": ""}]}, "needs a name"),
        ({"divisions": [{"name": "Home"}]}, "Home"),
        ({"teams": []}, "unknown key"),
        ({"roles": {"name": "Agent"}}, "list of objects"),
        (["not", "an", "object"], "JSON object"),
    ],
)
def test_bad_org_data_is_refused(org: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Directory(HOME_ID).load_org(org)


def test_read_org_file_refuses_what_is_not_an_org(tmp_path: Path) -> None:
    path = tmp_path / "org.json"
    path.write_text(json.dumps([{"name": "x"}]), encoding="utf-8")
    with pytest.raises(ValueError, match="JSON object"):
        read_org_file(path)
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError):
        read_org_file(path)
    path.write_text(json.dumps({"skills": [{"name": "Chat"}, {"name": "Chat"}]}), "utf-8")
    with pytest.raises(ValueError, match=r"org\.json: skills: the name 'Chat' is given twice"):
        read_org_file(path)


# ---- look-ups by name, as each real endpoint matches names --------------------------------


def test_roles_name_is_a_case_insensitive_search_term(client: Any) -> None:
    assert names(client, "/api/v2/authorization/roles?name=agent") == ["Agent"]
    assert names(client, "/api/v2/authorization/roles?name=VIEW") == ["Reporting Viewer"]
    assert names(client, "/api/v2/authorization/roles?name=OR") == [
        "Quality Evaluator",
        "Reporting Viewer",
        "Supervisor",
    ]
    # Both twins come back: a client comparing names exactly must see the ambiguity itself.
    assert sorted(names(client, "/api/v2/authorization/roles?name=team%20lead")) == [
        "TEAM LEAD",
        "Team Lead",
    ]
    assert names(client, "/api/v2/authorization/roles?name=nobody") == []


def test_queues_name_matches_the_whole_name_with_star_wildcards(client: Any) -> None:
    path = "/api/v2/routing/queues?name="
    assert names(client, path + "billing") == ["Billing"]  # not "Billing Escalations"
    assert names(client, path + "Billing*") == ["Billing", "Billing Escalations"]
    assert names(client, path + "*support") == ["Technical Support"]
    assert names(client, path + "*SUPPORT*") == ["Tech Support Tier 2", "Technical Support"]
    assert names(client, path + "Bill") == []
    assert len(names(client, path + "*")) == 10


def test_skills_name_matches_names_that_start_with_it(client: Any) -> None:
    path = "/api/v2/routing/skills?name="
    assert names(client, path + "s") == ["Sales", "Spanish"]
    assert names(client, path + "SALES") == ["Sales"]
    assert names(client, path + "offers") == []  # "Retention Offers" does not start with it


def test_locations_have_no_name_filter(client: Any) -> None:
    everything = ["Austin Office", "Dublin Office", "Indianapolis HQ", "Remote"]
    assert names(client, "/api/v2/locations") == everything
    assert names(client, "/api/v2/locations?name=Remote") == everything  # ignored, as for real


def test_divisions_name_is_a_search_term(client: Any) -> None:
    assert names(client, "/api/v2/authorization/divisions?name=support") == [
        "EMEA Support",
        "Support",
    ]


def test_entity_shapes(client: Any, emu: Emulator) -> None:
    _, _, queues = client.api("GET", "/api/v2/routing/queues?name=VIP%20Care")
    queue = queues["entities"][0]
    assert queue["selfUri"] == f"/api/v2/routing/queues/{queue['id']}"
    assert queue["division"]["id"] == emu.home_division_id
    assert (queue["memberCount"], queue["userMemberCount"], queue["joinedMemberCount"]) == (0, 0, 0)
    _, _, roles = client.api("GET", "/api/v2/authorization/roles?name=Supervisor")
    assert roles["entities"][0]["selfUri"].startswith("/api/v2/authorization/roles/")
    _, _, skills = client.api("GET", "/api/v2/routing/skills?name=Chat")
    assert skills["entities"][0]["state"] == "active"
    _, _, locations = client.api("GET", "/api/v2/locations")
    assert locations["entities"][0]["selfUri"].startswith("/api/v2/locations/")


# ---- paging --------------------------------------------------------------------------------

LISTS = [
    ("/api/v2/authorization/divisions", 4),
    ("/api/v2/authorization/roles", 7),
    ("/api/v2/routing/queues", 10),
    ("/api/v2/routing/skills", 12),
    ("/api/v2/locations", 4),
]


@pytest.mark.parametrize(("path", "total"), LISTS)
def test_every_list_pages(client: Any, path: str, total: int) -> None:
    seen: list[str] = []
    page_count = -(-total // 3)
    for number in range(1, page_count + 1):
        status, _, page = client.api("GET", f"{path}?pageSize=3&pageNumber={number}")
        assert status == 200
        assert (page["pageSize"], page["pageNumber"], page["total"], page["pageCount"]) == (
            3,
            number,
            total,
            page_count,
        )
        seen += [e["id"] for e in page["entities"]]
        assert page["selfUri"] == f"{path}?pageSize=3&pageNumber={number}"
        assert page["firstUri"] == f"{path}?pageSize=3&pageNumber=1"
        assert page["lastUri"] == f"{path}?pageSize=3&pageNumber={page_count}"
        assert ("nextUri" in page) == (number < page_count)
        assert ("previousUri" in page) == (number > 1)
    assert len(seen) == len(set(seen)) == total
    status, _, past = client.api("GET", f"{path}?pageSize=3&pageNumber={page_count + 1}")
    assert (status, past["entities"], past["total"]) == (200, [], total)


@pytest.mark.parametrize("query", ["pageSize=0", "pageSize=501", "pageNumber=0", "pageSize=x"])
@pytest.mark.parametrize("path", [p for p, _ in LISTS])
def test_bad_paging_is_400_naming_the_parameter(client: Any, path: str, query: str) -> None:
    status, _, body = client.api("GET", f"{path}?{query}")
    assert (status, body["details"][0]["fieldName"]) == (400, query.split("=")[0])


def test_next_uri_keeps_the_name_term(client: Any) -> None:
    _, _, page = client.api("GET", "/api/v2/routing/queues?name=*s*&pageSize=2")
    assert page["nextUri"] == "/api/v2/routing/queues?pageSize=2&pageNumber=2&name=%2As%2A"
    status, _, second = client.api("GET", page["nextUri"])
    assert status == 200 and second["pageNumber"] == 2


def test_queues_sort_order(client: Any) -> None:
    assert names(client, "/api/v2/routing/queues?name=Billing*&sortOrder=desc") == [
        "Billing Escalations",
        "Billing",
    ]
    status, _, body = client.api("GET", "/api/v2/routing/queues?sortOrder=sideways")
    assert (status, body["code"]) == (400, "invalid.query.param.value")


# ---- through the SDK -----------------------------------------------------------------------


def test_sdk_reads_every_list(sdk: Any, emu: Emulator) -> None:
    api_client = sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET)
    roles = sdk.pc.AuthorizationApi(api_client).get_authorization_roles(name="agent")
    assert [(r.name, r.self_uri) for r in roles.entities] == [
        ("Agent", f"/api/v2/authorization/roles/{roles.entities[0].id}")
    ]
    assert (roles.total, roles.page_count, roles.page_number) == (1, 1, 1)

    routing = sdk.pc.RoutingApi(api_client)
    queues = routing.get_routing_queues(name="Billing*", page_size=1, page_number=2)
    assert [q.name for q in queues.entities] == ["Billing Escalations"]
    assert (queues.total, queues.page_count, queues.previous_uri) == (
        2,
        2,
        "/api/v2/routing/queues?pageSize=1&pageNumber=1&name=Billing%2A",
    )
    assert queues.entities[0].division.name == "Home"
    assert queues.entities[0].member_count == 0

    skills = routing.get_routing_skills(name="span")
    assert [(s.name, s.state) for s in skills.entities] == [("Spanish", "active")]

    locations = sdk.pc.LocationsApi(api_client).get_locations(page_size=2)
    assert [loc.name for loc in locations.entities] == ["Austin Office", "Dublin Office"]
    assert locations.next_uri == "/api/v2/locations?pageSize=2&pageNumber=2"
