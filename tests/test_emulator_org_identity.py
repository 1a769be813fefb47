"""The org the caller belongs to, through the official SDK: GET /api/v2/organizations/me and
GET /api/v2/tokens/me. Two emulators with different org ids are two orgs."""

from __future__ import annotations

import uuid
from typing import Any

from jobrunner.emulator.server import Emulator, EmulatorConfig

EAST = "0e000000-0000-4000-8000-00000000ea57"


def org_apis(sdk: Any, emu: Emulator) -> tuple[Any, Any]:
    client = sdk.client(emu.port, emu.config.client_id, emu.config.client_secret)
    return sdk.pc.OrganizationApi(client), sdk.pc.TokensApi(client)


def test_two_emulators_are_two_orgs(sdk: Any) -> None:
    east = EmulatorConfig(org_id=EAST, org_name="Acme East", client_id="east-client")
    west = EmulatorConfig(org_name="Acme West", seed=9)
    with Emulator(east) as first, Emulator(west) as second:
        seen = {}
        for emu in (first, second):
            organizations, tokens = org_apis(sdk, emu)
            org = organizations.get_organizations_me()
            token = tokens.get_tokens_me()
            assert (token.organization.id, token.organization.name) == (org.id, org.name)
            assert (token.home_organization.id, token.home_organization.name) == (
                org.id,
                org.name,
            )
            assert token.o_auth_client.id == emu.config.client_id
            assert token.o_auth_client.organization.id == org.id
            assert org.self_uri == f"/api/v2/organizations/{org.id}"
            assert org.state == "active"
            seen[org.name] = org
    assert seen["Acme East"].id == EAST
    assert seen["Acme West"].id == west.org_id != EAST
    assert uuid.UUID(seen["Acme West"].id).version == 4
    assert (seen["Acme East"].third_party_org_name, seen["Acme East"].domain) == (
        "acme-east",
        "acme-east",
    )


def test_the_default_org_is_named_and_derived_from_the_seed() -> None:
    org = EmulatorConfig()
    assert org.org_name == "Emulated Org"
    assert uuid.UUID(org.org_id or "").version == 4
    assert EmulatorConfig(seed=0).org_id == org.org_id  # the same seed, the same org
    assert EmulatorConfig(seed=1).org_id != org.org_id
    assert EmulatorConfig(seed=None).org_id != EmulatorConfig(seed=None).org_id
