"""The emulator driven end to end by the official Genesys SDK (PureCloudPlatformClientV2)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.emulator.server import Emulator, EmulatorConfig

CLIENT_ID = "sdk-client"
CLIENT_SECRET = "sdk-secret"
SALES_ID = "5a1e5000-0000-4000-8000-000000000001"
SUPPORT_ID = "5a1e5000-0000-4000-8000-000000000002"
EXISTING_EMAIL = "Existing.Person@Example.com"
VALIDATION_CODES = {"bad.request", "invalid.value", "required.field.missing"}


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_config(**overrides: Any) -> EmulatorConfig:
    settings: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "rate_per_minute": 100_000,  # the SDK would sleep through 429s silently
        "divisions": {"Sales": SALES_ID, "Support": SUPPORT_ID},
        "existing_users": [{"name": "Existing Person", "email": EXISTING_EMAIL, "title": "Agent"}],
    }
    settings.update(overrides)
    return EmulatorConfig(**settings)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator(make_config()) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def users_api(sdk: Any, emu: Emulator) -> Any:
    return sdk.pc.UsersApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))


def error_of(excinfo: pytest.ExceptionInfo[Any]) -> dict[str, Any]:
    return json.loads(excinfo.value.body)


def create(sdk: Any, api: Any, **attrs: Any) -> Any:
    return api.post_users(sdk.model("CreateUser", **attrs))


def phone(sdk: Any, number: str = "+12025550101", kind: str = "WORK", media: str = "PHONE") -> Any:
    return sdk.model("Contact", address=number, media_type=media, type=kind)


def email_query(sdk: Any, email: str, states: list[str] | None = None) -> Any:
    criteria = [sdk.model("UserSearchCriteria", type="EXACT", fields=["email"], value=email)]
    if states is not None:
        criteria.append(
            sdk.model("UserSearchCriteria", type="EXACT", fields=["state"], values=states)
        )
    return sdk.model("UserSearchRequest", query=criteria, page_size=25, page_number=1)


# ---- OAuth -------------------------------------------------------------------------------


def test_client_credentials_token(sdk: Any, emu: Emulator) -> None:
    before = emu.stats()["tokens_issued"]
    client = sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET)
    assert isinstance(client.access_token, str) and len(client.access_token) >= 32
    assert emu.stats()["tokens_issued"] == before + 1


@pytest.mark.parametrize(
    ("client_id", "secret", "description"),
    [("nobody", CLIENT_SECRET, "client not found"), (CLIENT_ID, "wrong", "authentication failed")],
)
def test_wrong_client_gets_400_invalid_client(
    sdk: Any, emu: Emulator, client_id: str, secret: str, description: str
) -> None:
    client = sdk.client(emu.port, "", "", login=False)
    with pytest.raises(sdk.ApiException) as excinfo:
        client.get_client_credentials_token(client_id, secret)
    assert excinfo.value.status == 400
    assert error_of(excinfo) == {
        "error": "invalid_client",
        "description": description,
        "error_description": description,
    }


# ---- create ------------------------------------------------------------------------------


def test_create_returns_the_user(
    sdk: Any, emu: Emulator, users_api: Any, unique_email: Any
) -> None:
    email = unique_email("create")
    user = create(
        sdk,
        users_api,
        name="Ada Lovelace",
        email=email,
        department="R&D",
        title="Engineer",
        addresses=[phone(sdk)],
        password="Sup3r-secret!",
    )
    assert uuid.UUID(user.id).version == 4
    assert (user.name, user.email, user.department, user.title) == (
        "Ada Lovelace",
        email,
        "R&D",
        "Engineer",
    )
    assert (user.state, user.version, user.username) == ("active", 1, email)
    assert user.self_uri == f"/api/v2/users/{user.id}"
    assert user.division.id == emu.home_division_id
    assert user.division.name == "Home"
    assert user.division.self_uri == f"/api/v2/authorization/divisions/{emu.home_division_id}"
    assert [(a.address, a.media_type, a.type) for a in user.addresses] == [
        ("+12025550101", "PHONE", "WORK")
    ]
    assert [(c.address, c.media_type, c.type) for c in user.primary_contact_info] == [
        (email, "EMAIL", "PRIMARY")
    ]
    stored = next(u for u in emu.users() if u["id"] == user.id)
    assert stored["dateModified"].endswith("Z")
    assert "password" not in json.dumps(stored)
    assert emu.stats()["creations_by_email"][email.lower()] == 1


def test_create_in_a_named_division_and_inactive(
    sdk: Any, users_api: Any, unique_email: Any
) -> None:
    user = create(
        sdk,
        users_api,
        name="Sales Person",
        email=unique_email(),
        division_id=SALES_ID,
        state="inactive",
    )
    assert (user.division.id, user.division.name, user.state) == (SALES_ID, "Sales", "inactive")


@pytest.mark.parametrize(
    ("attrs", "field", "code"),
    [
        ({"email": "x@example.com"}, "name", "required.field.missing"),
        ({"name": "   ", "email": "x@example.com"}, "name", "required.field.missing"),
        ({"name": "No Email"}, "email", "required.field.missing"),
        ({"name": "Bad", "email": "not-an-email"}, "email", "invalid.value"),
        ({"name": "Bad", "email": "two@@example.com"}, "email", "invalid.value"),
        (
            {"name": "Bad", "divisionId": "00000000-0000-4000-8000-00000000dead"},
            "divisionId",
            "invalid.value",
        ),
        (
            {"name": "Bad", "state": "retired"},
            "state",
            "invalid.value",
        ),  # SDK sends outdated_sdk_version
        (
            {"name": "Bad", "phone": ("555-0101", "WORK", "PHONE")},
            "addresses[0].address",
            "invalid.value",
        ),
        (
            {"name": "Bad", "phone": ("+1202", "WORK", "PHONE")},
            "addresses[0].address",
            "invalid.value",
        ),
        (
            {"name": "Bad", "phone": ("+12025550101", "CELL", "PHONE")},
            "addresses[0].type",
            "invalid.value",
        ),
        (
            {"name": "Bad", "phone": ("+12025550101", "WORK", "FAX")},
            "addresses[0].mediaType",
            "invalid.value",
        ),
        (
            {"name": "Bad", "phone": ("nope", "WORK", "EMAIL")},
            "addresses[0].address",
            "invalid.value",
        ),
    ],
)
def test_invalid_create_is_400_naming_the_field(
    sdk: Any,
    emu: Emulator,
    users_api: Any,
    unique_email: Any,
    attrs: dict[str, Any],
    field: str,
    code: str,
) -> None:
    attrs = dict(attrs)
    if "email" not in attrs and field != "email":
        attrs["email"] = unique_email("invalid")
    if "divisionId" in attrs:
        attrs["division_id"] = attrs.pop("divisionId")
    if "phone" in attrs:
        number, kind, media = attrs.pop("phone")
        attrs["addresses"] = [phone(sdk, number, kind, media)]
    users_before = len(emu.users())
    with pytest.raises(sdk.ApiException) as excinfo:
        create(sdk, users_api, **attrs)
    assert excinfo.value.status == 400
    body = error_of(excinfo)
    assert body["code"] == code and body["code"] in VALIDATION_CODES
    assert body["status"] == 400
    assert body["details"][0]["fieldName"] == field
    assert field in body["message"]
    assert set(body) >= {
        "message",
        "code",
        "status",
        "messageWithParams",
        "messageParams",
        "contextId",
        "details",
        "errors",
    }
    assert len(emu.users()) == users_before


def test_email_conflict_ignores_case(sdk: Any, users_api: Any, unique_email: Any) -> None:
    email = unique_email("conflict")
    create(sdk, users_api, name="First", email=email)
    with pytest.raises(sdk.ApiException) as excinfo:
        create(sdk, users_api, name="Second", email=email.upper())
    assert excinfo.value.status == 409
    body = error_of(excinfo)
    assert body["code"] == "general.conflict"
    assert "already in use" in body["message"]


def test_deleted_user_keeps_its_email(sdk: Any, users_api: Any, unique_email: Any) -> None:
    email = unique_email("deleted")
    user = create(sdk, users_api, name="Gone", email=email)
    users_api.delete_user(user.id)
    with pytest.raises(sdk.ApiException) as excinfo:
        create(sdk, users_api, name="Again", email=email)
    assert excinfo.value.status == 409
    assert error_of(excinfo)["code"] == "general.conflict"


def test_existing_users_are_there_and_conflict(sdk: Any, users_api: Any) -> None:
    found = users_api.post_users_search(email_query(sdk, EXISTING_EMAIL.lower()))
    assert found.total == 1
    assert (found.results[0].name, found.results[0].title) == ("Existing Person", "Agent")
    with pytest.raises(sdk.ApiException) as excinfo:
        create(sdk, users_api, name="Dup", email="existing.person@example.com")
    assert excinfo.value.status == 409


# ---- search ------------------------------------------------------------------------------


def test_search_request_serialises_as_the_emulator_expects(sdk: Any) -> None:
    client = sdk.pc.ApiClient()
    assert client.sanitize_for_serialization(email_query(sdk, "a@b.co", ["deleted"])) == {
        "pageSize": 25,
        "pageNumber": 1,
        "query": [
            {"type": "EXACT", "fields": ["email"], "value": "a@b.co"},
            {"type": "EXACT", "fields": ["state"], "values": ["deleted"]},
        ],
    }


def test_search_by_email_ignores_case_and_hides_deleted_users(
    sdk: Any, users_api: Any, unique_email: Any
) -> None:
    email = unique_email("search")
    user = create(sdk, users_api, name="Findable", email=email)
    found = users_api.post_users_search(email_query(sdk, email.upper()))
    assert (found.total, found.page_count, found.page_size, found.page_number) == (1, 1, 25, 1)
    assert [u.id for u in found.results] == [user.id]

    users_api.delete_user(user.id)
    assert users_api.post_users_search(email_query(sdk, email)).total == 0
    with_states = users_api.post_users_search(
        email_query(sdk, email, ["active", "inactive", "deleted"])
    )
    assert [(u.id, u.state) for u in with_states.results] == [(user.id, "deleted")]
    only_active = users_api.post_users_search(email_query(sdk, email, ["active"]))
    assert only_active.total == 0


def test_search_for_nobody(sdk: Any, users_api: Any) -> None:
    found = users_api.post_users_search(email_query(sdk, "nobody@nowhere.example.com"))
    assert found.total == 0 and not found.results


def test_search_rejects_an_unknown_criteria_type(sdk: Any, users_api: Any) -> None:
    query = email_query(sdk, "a@b.co")
    query.query[0].type = "FUZZY"  # the SDK sends "outdated_sdk_version"
    with pytest.raises(sdk.ApiException) as excinfo:
        users_api.post_users_search(query)
    assert excinfo.value.status == 400
    assert error_of(excinfo)["details"][0]["fieldName"] == "query[0].type"


# ---- get, patch, delete ------------------------------------------------------------------


def test_get_patch_with_version_and_soft_delete(
    sdk: Any, users_api: Any, unique_email: Any
) -> None:
    email = unique_email("patch")
    user = create(sdk, users_api, name="Before", email=email)
    assert users_api.get_user(user.id).version == 1

    patched = users_api.patch_user(
        user.id,
        sdk.model(
            "UpdateUser",
            version=1,
            name="After",
            title="Lead",
            department="Ops",
            addresses=[phone(sdk, "+442071838750", "MOBILE", "SMS")],
        ),
    )
    assert (patched.name, patched.title, patched.department, patched.version) == (
        "After",
        "Lead",
        "Ops",
        2,
    )
    assert patched.addresses[0].address == "+442071838750"

    with pytest.raises(sdk.ApiException) as excinfo:
        users_api.patch_user(user.id, sdk.model("UpdateUser", version=1, title="Stale"))
    assert excinfo.value.status == 409
    assert error_of(excinfo)["code"] == "general.conflict"
    assert error_of(excinfo)["details"][0]["fieldName"] == "version"
    assert users_api.get_user(user.id).title == "Lead"

    with pytest.raises(sdk.ApiException) as excinfo:
        users_api.patch_user(user.id, sdk.model("UpdateUser", title="No version"))
    assert excinfo.value.status == 400
    assert error_of(excinfo)["details"][0]["fieldName"] == "version"

    users_api.delete_user(user.id)
    with pytest.raises(sdk.ApiException) as excinfo:
        users_api.get_user(user.id)  # a deleted user is only found when asked for
    assert excinfo.value.status == 404
    gone = users_api.get_user(user.id, state="deleted")
    assert (gone.state, gone.email, gone.version) == ("deleted", email, 3)

    # Terraform's restore: PATCH with only state and version.
    restored = users_api.patch_user(user.id, sdk.model("UpdateUser", state="active", version=3))
    assert (restored.state, restored.version) == ("active", 4)


def test_patch_email_to_a_taken_one_conflicts(sdk: Any, users_api: Any, unique_email: Any) -> None:
    taken = unique_email("taken")
    create(sdk, users_api, name="Owner", email=taken)
    other = create(sdk, users_api, name="Other", email=unique_email())
    with pytest.raises(sdk.ApiException) as excinfo:
        users_api.patch_user(other.id, sdk.model("UpdateUser", version=1, email=taken.upper()))
    assert excinfo.value.status == 409


def test_unknown_user_is_404(sdk: Any, users_api: Any) -> None:
    for call in (
        lambda: users_api.get_user(str(uuid.uuid4())),
        lambda: users_api.delete_user(str(uuid.uuid4())),
    ):
        with pytest.raises(sdk.ApiException) as excinfo:
            call()
        assert excinfo.value.status == 404
        assert error_of(excinfo)["code"] == "not.found"


# ---- divisions ---------------------------------------------------------------------------


def test_divisions_home_and_search(sdk: Any, emu: Emulator) -> None:
    api = sdk.pc.AuthorizationApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))
    home = api.get_authorization_divisions_home()
    assert (home.id, home.name, home.home_division) == (emu.home_division_id, "Home", True)
    assert home.self_uri == f"/api/v2/authorization/divisions/{home.id}"

    everything = api.get_authorization_divisions()
    assert [d.name for d in everything.entities] == ["Home", "Sales", "Support"]
    assert (everything.total, everything.page_count, everything.page_number) == (3, 1, 1)

    sales = api.get_authorization_divisions(name="SAL")
    assert [(d.id, d.name, d.home_division) for d in sales.entities] == [(SALES_ID, "Sales", False)]
    assert api.get_authorization_divisions(name="nothing").total == 0
    assert api.get_authorization_divisions(page_size=2, page_number=2).entities[0].name == "Support"


# ---- 401s --------------------------------------------------------------------------------


def test_unknown_token_is_401(sdk: Any, emu: Emulator) -> None:
    client = sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET, login=False)
    client.access_token = "not-a-token"
    with pytest.raises(sdk.ApiException) as excinfo:
        sdk.pc.UsersApi(client).get_user(str(uuid.uuid4()))
    assert excinfo.value.status == 401
    assert error_of(excinfo)["code"] == "bad.credentials"


def test_expired_token_is_401(sdk: Any) -> None:
    clock = FakeClock()
    with Emulator(make_config(clock=clock, token_lifetime_s=600)) as emu:
        client = sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET)
        api = sdk.pc.AuthorizationApi(client)
        clock.now += 599
        api.get_authorization_divisions_home()
        clock.now += 1
        with pytest.raises(sdk.ApiException) as excinfo:
            api.get_authorization_divisions_home()
        assert excinfo.value.status == 401
        client.get_client_credentials_token(CLIENT_ID, CLIENT_SECRET)
        assert api.get_authorization_divisions_home().name == "Home"


def test_revoked_tokens_are_401_until_a_new_token(sdk: Any) -> None:
    with Emulator(make_config()) as emu:
        client = sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET)
        api = sdk.pc.AuthorizationApi(client)
        api.get_authorization_divisions_home()
        assert emu.revoke_tokens() == 1
        with pytest.raises(sdk.ApiException) as excinfo:
            api.get_authorization_divisions_home()
        assert excinfo.value.status == 401
        assert error_of(excinfo)["code"] == "bad.credentials"
        client.get_client_credentials_token(CLIENT_ID, CLIENT_SECRET)
        api.get_authorization_divisions_home()


def test_revoke_tokens_after_n_requests_fires_once(sdk: Any) -> None:
    with Emulator(make_config(revoke_tokens_after=3)) as emu:
        client = sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET)
        api = sdk.pc.AuthorizationApi(client)
        for _ in range(3):
            api.get_authorization_divisions_home()
        with pytest.raises(sdk.ApiException) as excinfo:
            api.get_authorization_divisions_home()
        assert excinfo.value.status == 401
        client.get_client_credentials_token(CLIENT_ID, CLIENT_SECRET)
        for _ in range(10):
            api.get_authorization_divisions_home()
        assert emu.stats()["faults"]["token_revocation"] == 1


# ---- faults seen through the SDK ---------------------------------------------------------


def test_sdk_resends_a_create_whose_connection_dropped(sdk: Any, unique_email: Any) -> None:
    """HAZARD 1 from the API facts, reproduced: the user is created once, the SDK's urllib3
    silently re-sends the POST, and the caller sees the echo of its own first attempt: 409."""
    with Emulator(make_config(drop_after_create_rate=1.0)) as emu:
        api = sdk.pc.UsersApi(sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET))
        email = unique_email("dropped")
        with pytest.raises(sdk.ApiException) as excinfo:
            create(sdk, api, name="Dropped", email=email)
        assert excinfo.value.status == 409
        stats = emu.stats()
        assert stats["creations_by_email"] == {email: 1}
        assert stats["faults"]["drop_after_create"] == 1
        assert stats["responses_by_status"] == {"200": 1, "dropped": 1, "409": 1}
        assert [u["email"] for u in emu.users() if u["email"] == email] == [email]


# ---- persistence -------------------------------------------------------------------------


def test_state_file_survives_a_restart(sdk: Any, tmp_path: Path, unique_email: Any) -> None:
    state = tmp_path / "state" / "org.json"
    email = unique_email("persist")
    with Emulator(make_config(state_file=state, seed=1)) as first:
        api = sdk.pc.UsersApi(sdk.client(first.port, CLIENT_ID, CLIENT_SECRET))
        user = create(sdk, api, name="Persistent", email=email, division_id=SUPPORT_ID)
        api.patch_user(user.id, sdk.model("UpdateUser", version=1, title="Kept"))
        home = first.home_division_id
    assert state.exists()
    assert [p.name for p in state.parent.iterdir()] == ["org.json"]  # no temp files left

    with Emulator(make_config(state_file=state, seed=2)) as second:
        assert second.home_division_id == home
        api = sdk.pc.UsersApi(sdk.client(second.port, CLIENT_ID, CLIENT_SECRET))
        again = api.get_user(user.id)
        assert (again.email, again.title, again.version, again.division.name) == (
            email,
            "Kept",
            2,
            "Support",
        )
        with pytest.raises(sdk.ApiException) as excinfo:
            create(sdk, api, name="Twin", email=email)
        assert excinfo.value.status == 409
        # The seed users are not added twice on restart.
        assert sum(u["email"] == EXISTING_EMAIL for u in second.users()) == 1
