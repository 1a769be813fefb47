"""One role for many people, POST /api/v2/authorization/roles/{roleId}?subjectType=PC_USER,
through the official SDK (AuthorizationApi.post_authorization_role): every subject gets the role
in every division listed; what Genesys does not document (an unknown subject in the batch, a
cap on subjectIds) is an option."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobrunner.emulator.org import read_org_file
from jobrunner.emulator.server import Emulator, EmulatorConfig

CLIENT_ID = "role-batch-client"
CLIENT_SECRET = "role-batch-secret"
ORG = read_org_file(Path(__file__).resolve().parents[1] / "examples" / "org.json")
DIVISION = {d["name"]: d["id"] for d in ORG["divisions"]}
ROLE = {r["name"]: r["id"] for r in ORG["roles"]}
MARIA = next(u["id"] for u in ORG["users"] if u["name"] == "Maria Gonzalez")
TOM = next(u["id"] for u in ORG["users"] if u["name"] == "Tom Becker")
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
    # About the grants the calls make: no Employee role from creation (test_emulator_dialect).
    settings.setdefault("employee_role", False)
    return EmulatorConfig(**{**settings, **overrides})


class Org:
    """A running emulator and the SDK's APIs on it."""

    def __init__(self, sdk: Any, emu: Emulator) -> None:
        self.sdk = sdk
        self.emu = emu
        client = sdk.client(emu.port, CLIENT_ID, CLIENT_SECRET)
        self.users = sdk.pc.UsersApi(client)
        self.auth = sdk.pc.AuthorizationApi(client)

    def new_user(self, email: str) -> str:
        body = self.sdk.model("CreateUser", name="Batch Person", email=email)
        return str(self.users.post_users(body).id)

    def grant(self, role: str, subjects: list[str], divisions: list[str], **kw: Any) -> None:
        body = self.sdk.model(
            "SubjectDivisions",
            subject_ids=subjects,
            division_ids=[DIVISION.get(d, d) for d in divisions],
        )
        self.auth.post_authorization_role(ROLE.get(role, role), body, **kw)

    def grants(self, user_id: str) -> list[tuple[str, str]]:
        """The user's grants by name, from the stats (no fresh-user 404 there)."""
        email = next(u["email"].lower() for u in self.emu.users() if u["id"] == user_id)
        return [tuple(g) for g in self.emu.stats()["onboarding"][email]["grants"]]

    def refusal(self, *args: Any, **kw: Any) -> tuple[int, dict[str, Any]]:
        with pytest.raises(self.sdk.ApiException) as excinfo:
            self.grant(*args, **kw)
        return excinfo.value.status, json.loads(excinfo.value.body)


@pytest.fixture
def start(sdk: Any) -> Iterator[Any]:
    started: list[Emulator] = []

    def make(**overrides: Any) -> Org:
        emu = Emulator(config(**overrides)).start()
        started.append(emu)
        return Org(sdk, emu)

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture(scope="module")
def shared(sdk: Any) -> Iterator[Org]:
    with Emulator(config()) as emu:
        yield Org(sdk, emu)


def test_every_subject_gets_the_role_in_every_division(shared: Org, unique_email: Any) -> None:
    ann, bob = shared.new_user(unique_email("ann")), shared.new_user(unique_email("bob"))
    shared.grant("Agent", [ann, bob], ["Sales", "Support"], subject_type="PC_USER")
    for user_id in (ann, bob):
        assert shared.grants(user_id) == [("Agent", "Sales"), ("Agent", "Support")]
    subject = shared.auth.get_authorization_subject(ann)
    assert sorted((g.role.name, g.division.name) for g in subject.grants) == [
        ("Agent", "Sales"),
        ("Agent", "Support"),
    ]


def test_a_grant_already_held_is_fine_and_kept(shared: Org, unique_email: Any) -> None:
    ann = shared.new_user(unique_email("ann"))
    shared.grant("Supervisor", [ann], ["Sales"])
    made_at = shared.auth.get_authorization_subject(ann).grants[0].grant_made_at
    shared.grant("Supervisor", [ann, ann], ["Sales", "EMEA Support"])  # no subject_type: PC_USER
    subject = shared.auth.get_authorization_subject(ann)
    by_division = {g.division.name: g.grant_made_at for g in subject.grants}
    assert by_division.keys() == {"Sales", "EMEA Support"}
    assert by_division["Sales"] == made_at


def test_a_non_uuid_subject_is_invalid_id_and_grants_nobody(shared: Org, unique_email: Any) -> None:
    ann = shared.new_user(unique_email("ann"))
    status, body = shared.refusal("Agent", [ann, "not-a-uuid"], ["Sales"])
    assert (status, body["code"]) == (400, "invalid.id")
    assert body["message"] == "A non-UUID value was specified for an ID field"
    assert body["details"][0]["fieldName"] == "subjectIds[1]"
    assert shared.grants(ann) == []


def test_body_and_path_refusals(shared: Org, unique_email: Any) -> None:
    ann = shared.new_user(unique_email("ann"))
    assert shared.refusal(UNKNOWN, [ann], ["Sales"])[0] == 404  # no such role
    status, body = shared.refusal("Agent", [ann], [UNKNOWN])
    assert (status, body["details"][0]["fieldName"]) == (400, "divisionIds[0]")
    assert shared.refusal("Agent", [], ["Sales"])[0] == 400
    assert shared.refusal("Agent", [ann], [])[0] == 400
    status, body = shared.refusal("Agent", [ann], ["Sales"], subject_type="PC_ROBOT")
    assert (status, body["code"]) == (400, "invalid.query.param.value")
    assert shared.grants(ann) == []


@pytest.mark.parametrize(
    ("answer", "status", "code"),
    [("404-batch", 404, "not.found"), ("400-batch", 400, "invalid.value")],
)
def test_an_unknown_subject_refuses_the_whole_batch(
    start: Any, unique_email: Any, answer: str, status: int, code: str
) -> None:
    org = start(role_batch_unknown_subject=answer)
    ann = org.new_user(unique_email("ann"))
    assert org.refusal("Agent", [ann, UNKNOWN], ["Sales"])[:1] == (status,)
    assert org.refusal("Agent", [ann, UNKNOWN], ["Sales"])[1]["code"] == code
    assert org.grants(ann) == []


def test_the_default_for_an_unknown_subject_is_a_404_for_the_batch(
    shared: Org, unique_email: Any
) -> None:
    assert EmulatorConfig().role_batch_unknown_subject == "404-batch"
    ann = shared.new_user(unique_email("ann"))
    assert shared.refusal("Agent", [ann, UNKNOWN], ["Sales"])[0] == 404
    assert shared.grants(ann) == []


def test_skip_grants_the_known_subjects_and_ignores_the_others(
    start: Any, unique_email: Any
) -> None:
    org = start(role_batch_unknown_subject="skip")
    ann = org.new_user(unique_email("ann"))
    org.grant("Agent", [UNKNOWN, ann], ["Sales"])
    assert org.grants(ann) == [("Agent", "Sales")]
    org.grant("Agent", [MARIA], ["Sales"], subject_type="PC_GROUP")  # no groups: nobody
    assert org.grants(MARIA) == []


@pytest.mark.parametrize(("answer", "refused"), [("404-batch", True), ("skip", False)])
def test_a_new_user_is_unknown_until_the_authorization_service_knows_it(
    start: Any, unique_email: Any, answer: str, refused: bool
) -> None:
    clock = FakeClock()
    org = start(fresh_user_404_s=5, clock=clock, role_batch_unknown_subject=answer)
    fresh = org.new_user(unique_email("fresh"))
    if refused:
        assert org.refusal("Agent", [MARIA, fresh], ["Sales"])[0] == 404
        assert org.grants(MARIA) == []
    else:  # the hazard: a 204, and the new user silently without the role
        org.grant("Agent", [MARIA, fresh], ["Sales"])
        assert (org.grants(MARIA), org.grants(fresh)) == ([("Agent", "Sales")], [])
    clock.now += 5
    org.grant("Agent", [MARIA, fresh], ["Sales"])
    assert org.grants(fresh) == [("Agent", "Sales")]


def test_a_deleted_subject_is_unknown(start: Any, unique_email: Any) -> None:
    org = start()
    gone = org.new_user(unique_email("gone"))
    org.users.delete_user(gone)
    assert org.refusal("Agent", [MARIA, gone], ["Sales"])[0] == 404


def test_no_cap_by_default_and_a_cap_as_an_option(start: Any) -> None:
    many = [u["id"] for u in start().emu.users()]
    org = start(existing_emails=[f"p{i}@example.com" for i in range(150)])
    everyone = [u["id"] for u in org.emu.users()]
    assert len(everyone) > 150 > len(many)
    org.grant("Reporting Viewer", everyone, ["Sales"])
    assert all(org.grants(u) == [("Reporting Viewer", "Sales")] for u in everyone)

    capped = start(role_batch_max_subjects=2)
    status, body = capped.refusal("Agent", [MARIA, TOM, MARIA], ["Sales"])
    assert (status, body["code"]) == (400, "bad.request")
    assert capped.grants(MARIA) == []
    capped.grant("Agent", [MARIA, TOM], ["Sales"])
    assert capped.grants(TOM) == [("Agent", "Sales")]


def test_grant_add_is_needed_in_every_division_listed(start: Any) -> None:
    org = start(refused_permissions={"authorization:grant:add"})
    status, body = org.refusal("Agent", [MARIA], ["Support"])
    assert (status, body["code"]) == (403, "missing.permissions")

    org = start(refused_permissions={f"authorization:grant:add@{DIVISION['Sales']}"})
    assert org.refusal("Agent", [MARIA], ["Support", "Sales"])[0] == 403
    assert org.grants(MARIA) == []
    org.grant("Agent", [MARIA], ["Support"])
    assert org.grants(MARIA) == [("Agent", "Support")]
