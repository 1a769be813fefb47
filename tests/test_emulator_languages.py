"""Routing languages through the official SDK: the org's list (paging, the name filter), a
user's languages (PATCH .../routinglanguages/bulk adds and updates, never removes; GET lists
them; expand=languages shows them), their refusals, the fresh-user 404 and permissions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.emulator.org import read_org_file
from jobrunner.emulator.server import Emulator, EmulatorConfig

CLIENT_ID = "languages-client"
CLIENT_SECRET = "languages-secret"
ORG = read_org_file(Path(__file__).resolve().parents[1] / "examples" / "org.json")
LANGUAGE = {lang["name"]: lang["id"] for lang in ORG["languages"]}
DIVISION = {d["name"]: d["id"] for d in ORG["divisions"]}
UNKNOWN = "00000000-0000-4000-8000-00000000dead"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(**overrides: Any) -> EmulatorConfig:
    settings: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "rate_per_minute": 100_000,
        "org": ORG,
    }
    return EmulatorConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(config()) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def apis(sdk: Any, emu: Emulator) -> tuple[Any, Any]:
    client = sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET)
    return sdk.pc.UsersApi(client), sdk.pc.RoutingApi(client)


def new_user(sdk: Any, users: Any, unique_email: Any, **attrs: Any) -> Any:
    body = sdk.model("CreateUser", name="Lingua Agent", email=unique_email("lingua"), **attrs)
    return users.post_users(body)


def posts(sdk: Any, **proficiency: float) -> list[Any]:
    return [
        sdk.model("UserRoutingLanguagePost", id=LANGUAGE[name], proficiency=value)
        for name, value in proficiency.items()
    ]


def held(users: Any, user_id: str) -> dict[str, float]:
    listing = users.get_user_routinglanguages(user_id)
    return {entity.name: entity.proficiency for entity in listing.entities}


def error_of(excinfo: pytest.ExceptionInfo[Any]) -> tuple[int, dict[str, Any]]:
    return excinfo.value.status, json.loads(excinfo.value.body)


def test_the_org_lists_its_languages_page_by_page(apis: tuple[Any, Any]) -> None:
    _, routing = apis
    first = routing.get_routing_languages(page_size=2, page_number=1)
    assert (first.total, first.page_count, first.page_size) == (5, 3, 2)
    assert [lang.name for lang in first.entities] == ["English", "French"]
    assert first.next_uri and first.previous_uri is None
    names = []
    for number in range(1, first.page_count + 1):
        page = routing.get_routing_languages(page_size=2, page_number=number)
        names += [lang.name for lang in page.entities]
    assert names == ["English", "French", "German", "Portuguese", "Spanish"]
    language = first.entities[0]
    assert (language.id, language.state) == (LANGUAGE["English"], "active")
    assert language.self_uri == f"/api/v2/routing/languages/{LANGUAGE['English']}"
    descending = routing.get_routing_languages(sort_order="desc")
    assert [lang.name for lang in descending.entities][:2] == ["Spanish", "Portuguese"]
    by_id = routing.get_routing_languages(id=[LANGUAGE["German"], LANGUAGE["French"]])
    assert [lang.name for lang in by_id.entities] == ["French", "German"]


@pytest.mark.parametrize(
    ("term", "found"),
    [
        ("Spanish", ["Spanish"]),
        ("span", ["Spanish"]),  # any case, the start of the name (as skills)
        ("P", ["Portuguese"]),
        ("ish", []),  # not the middle
        ("Klingon", []),
    ],
)
def test_the_name_filter_matches_the_start_of_a_name(
    apis: tuple[Any, Any], term: str, found: list[str]
) -> None:
    _, routing = apis
    listing = routing.get_routing_languages(name=term)
    assert [lang.name for lang in listing.entities] == found


def test_bulk_adds_and_updates_and_never_removes(
    sdk: Any, apis: tuple[Any, Any], unique_email: Any
) -> None:
    users, _ = apis
    user = new_user(sdk, users, unique_email)
    answer = users.patch_user_routinglanguages_bulk(user.id, posts(sdk, Spanish=5, English=2))
    assert sorted((e.name, e.proficiency) for e in answer.entities) == [
        ("English", 2.0),
        ("Spanish", 5.0),
    ]
    entity = next(e for e in answer.entities if e.name == "Spanish")
    assert entity.language_uri == f"/api/v2/routing/languages/{LANGUAGE['Spanish']}"
    assert entity.self_uri == f"/api/v2/users/{user.id}/routinglanguages/{LANGUAGE['Spanish']}"

    answer = users.patch_user_routinglanguages_bulk(user.id, posts(sdk, English=4, German=1))
    assert held(users, user.id) == {"English": 4.0, "German": 1.0, "Spanish": 5.0}
    assert len(answer.entities) == 3  # the answer lists all of them, not only those sent

    shown = users.get_user(user.id, expand=["languages"])
    assert sorted((lang.name, lang.proficiency) for lang in shown.languages) == [
        ("English", 4.0),
        ("German", 1.0),
        ("Spanish", 5.0),
    ]
    assert users.get_user(user.id).languages is None  # only when expanded


def test_a_users_languages_page(sdk: Any, apis: tuple[Any, Any], unique_email: Any) -> None:
    users, _ = apis
    user = new_user(sdk, users, unique_email)
    users.patch_user_routinglanguages_bulk(
        user.id, posts(sdk, English=1, French=2, German=3, Portuguese=4, Spanish=5)
    )
    page = users.get_user_routinglanguages(user.id, page_size=2, page_number=3)
    assert (page.total, page.page_count, [e.name for e in page.entities]) == (5, 3, ["Spanish"])
    page = users.get_user_routinglanguages(user.id, page_size=2, sort_order="DESC")
    assert [e.name for e in page.entities] == ["Spanish", "Portuguese"]


def test_50_per_call_and_51_refused(sdk: Any, apis: tuple[Any, Any], unique_email: Any) -> None:
    users, _ = apis
    user = new_user(sdk, users, unique_email)
    fifty = posts(sdk, English=1) * 50
    assert len(users.patch_user_routinglanguages_bulk(user.id, fifty).entities) == 1
    with pytest.raises(sdk.ApiException) as excinfo:
        users.patch_user_routinglanguages_bulk(user.id, posts(sdk, French=1) * 51)
    status, body = error_of(excinfo)
    assert (status, body["code"]) == (400, "bad.request")
    assert "50" in body["message"]
    assert held(users, user.id) == {"English": 1.0}


def test_an_unknown_language_or_a_bad_proficiency_applies_nothing(
    sdk: Any, apis: tuple[Any, Any], unique_email: Any
) -> None:
    users, _ = apis
    user = new_user(sdk, users, unique_email)
    unknown = [
        *posts(sdk, French=3),
        sdk.model("UserRoutingLanguagePost", id=UNKNOWN, proficiency=1),
    ]
    with pytest.raises(sdk.ApiException) as excinfo:
        users.patch_user_routinglanguages_bulk(user.id, unknown)
    status, body = error_of(excinfo)
    assert (status, body["code"]) == (400, "invalid.value")  # as an unknown skill
    assert body["details"][0]["fieldName"] == "body[1].id"
    with pytest.raises(sdk.ApiException) as excinfo:
        users.patch_user_routinglanguages_bulk(user.id, posts(sdk, French=6))
    assert error_of(excinfo)[1]["details"][0]["fieldName"] == "body[0].proficiency"
    assert held(users, user.id) == {}


def test_an_unknown_user_is_404(sdk: Any, apis: tuple[Any, Any]) -> None:
    users, _ = apis
    with pytest.raises(sdk.ApiException) as excinfo:
        users.patch_user_routinglanguages_bulk(UNKNOWN, posts(sdk, English=1))
    assert excinfo.value.status == 404
    with pytest.raises(sdk.ApiException) as excinfo:
        users.get_user_routinglanguages(UNKNOWN)
    assert excinfo.value.status == 404


def test_a_new_user_is_404_until_the_routing_service_knows_it(sdk: Any, unique_email: Any) -> None:
    clock = FakeClock()
    with Emulator(config(fresh_user_404_s=5, clock=clock)) as emu:
        users = sdk.pc.UsersApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))
        user = new_user(sdk, users, unique_email)
        for call in (
            lambda: users.patch_user_routinglanguages_bulk(user.id, posts(sdk, English=3)),
            lambda: users.get_user_routinglanguages(user.id),
        ):
            with pytest.raises(sdk.ApiException) as excinfo:
                call()
            assert excinfo.value.status == 404
        clock.now += 5
        users.patch_user_routinglanguages_bulk(user.id, posts(sdk, English=3))
        assert held(users, user.id) == {"English": 3.0}


@pytest.mark.parametrize(
    ("refused", "allowed"),
    [
        (["routing:skill:assign"], True),  # "Requires ANY": routing:language:assign will do
        (["routing:language:assign"], True),
        (["routing:skill:assign", "routing:language:assign"], False),
        ([f"routing:skill:assign@{DIVISION['Sales']}", "routing:language:assign"], False),
        ([f"routing:skill:assign@{DIVISION['Support']}", "routing:language:assign"], True),
    ],
)
def test_either_assign_permission_will_do(
    sdk: Any, unique_email: Any, refused: list[str], allowed: bool
) -> None:
    with Emulator(config(refused_permissions=set(refused))) as emu:
        users = sdk.pc.UsersApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))
        user = new_user(sdk, users, unique_email, division_id=DIVISION["Sales"])
        if allowed:
            users.patch_user_routinglanguages_bulk(user.id, posts(sdk, German=2))
            assert held(users, user.id) == {"German": 2.0}
            return
        with pytest.raises(sdk.ApiException) as excinfo:
            users.patch_user_routinglanguages_bulk(user.id, posts(sdk, German=2))
        status, body = error_of(excinfo)
        assert (status, body["code"]) == (403, "missing.permissions")
        assert "routing:language:assign" in body["message"]
        assert held(users, user.id) == {}
