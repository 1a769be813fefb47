"""The emulator's users and divisions without HTTP: validation rules, conflicts, search,
seed files, state files, configuration checks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobrunner.emulator.access import RateLimiter
from jobrunner.emulator.directory import (
    Directory,
    load_state,
    read_existing_users,
    save_state,
    validate_addresses,
)
from jobrunner.emulator.errors import ApiError
from jobrunner.emulator.server import EmulatorConfig

HOME_ID = "00000000-0000-4000-8000-0000000000aa"


def directory(**divisions: str) -> Directory:
    return Directory(HOME_ID, divisions)


emails = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,5})?@[a-z]{1,8}\.[a-z]{2,4}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(email=emails, flips=st.lists(st.booleans(), min_size=1, max_size=40))
def test_an_email_is_taken_in_any_case(email: str, flips: list[bool]) -> None:
    d = directory()
    d.create({"name": "First", "email": email})
    recased = "".join(c.upper() if flips[i % len(flips)] else c for i, c in enumerate(email))
    with pytest.raises(ApiError) as excinfo:
        d.create({"name": "Second", "email": recased})
    assert (excinfo.value.status, excinfo.value.code) == (409, "general.conflict")
    found = d.search({"query": [{"type": "EXACT", "fields": ["email"], "value": recased}]})
    assert found["total"] == 1


@settings(max_examples=80, deadline=None)
@given(number=st.text(alphabet="+0123456789 -()", min_size=0, max_size=18))
def test_phone_numbers_must_be_e164(number: str) -> None:
    contact = [{"address": number, "mediaType": "PHONE", "type": "WORK"}]
    if re.fullmatch(r"\+\d{7,15}", number):
        assert validate_addresses(contact) == contact
    else:
        with pytest.raises(ApiError) as excinfo:
            validate_addresses(contact)
        assert excinfo.value.status == 400
        assert excinfo.value.details[0]["fieldName"] == "addresses[0].address"


def test_extension_instead_of_a_number_and_email_contacts() -> None:
    contacts = [
        {"extension": "4321", "mediaType": "PHONE", "type": "WORK", "unknown": "dropped"},
        {"address": "home@example.com", "mediaType": "EMAIL", "type": "HOME"},
    ]
    assert validate_addresses(contacts) == [
        {"extension": "4321", "mediaType": "PHONE", "type": "WORK"},
        {"address": "home@example.com", "mediaType": "EMAIL", "type": "HOME"},
    ]
    with pytest.raises(ApiError) as excinfo:
        validate_addresses([{"mediaType": "PHONE", "type": "WORK"}])
    assert excinfo.value.code == "required.field.missing"


def test_error_body_fills_message_params() -> None:
    d = directory()
    with pytest.raises(ApiError) as excinfo:
        d.create({"name": "X", "email": "nope"})
    body = excinfo.value.body("ctx")
    assert body["message"] == (
        "Value [nope] is not valid for field [email]: not a valid email address"
    )
    assert body["messageWithParams"].startswith("Value [{value}] is not valid for field [{field}]")
    assert body["messageParams"] == {"field": "email", "value": "nope"}
    assert body["details"][0]["errorMessage"] == body["message"]
    assert (body["contextId"], body["errors"]) == ("ctx", [])


def test_division_ids_must_be_uuids_and_distinct() -> None:
    with pytest.raises(ValueError, match="not a UUID"):
        directory(Sales="sales")
    with pytest.raises(ValueError, match="Home"):
        directory(Other=HOME_ID)


def test_existing_users_validated_and_deduplicated() -> None:
    d = directory()
    assert d.add_existing({"email": "A@Example.com"})
    assert d.get(d.users()[0]["id"])["name"] == "A"
    assert not d.add_existing({"email": "a@example.com"}, skip_taken=True)
    with pytest.raises(ValueError, match="given twice"):
        d.add_existing({"email": "a@EXAMPLE.com"})
    with pytest.raises(ValueError, match="valid email"):
        d.add_existing({"name": "No Email"})
    with pytest.raises(ValueError, match="state"):
        d.add_existing({"email": "b@example.com", "state": "gone"})


def test_read_existing_users_from_csv_and_json(tmp_path: Path) -> None:
    csv_file = tmp_path / "users.csv"
    csv_file.write_text(
        "\ufeffname,email,title,department\nAna Lima,ana@example.com,Agent,\nBo,bo@example.com,,\n",
        encoding="utf-8",
    )
    assert read_existing_users(csv_file) == [
        {"name": "Ana Lima", "email": "ana@example.com", "title": "Agent"},
        {"name": "Bo", "email": "bo@example.com"},
    ]
    json_file = tmp_path / "users.json"
    json_file.write_text(json.dumps([{"name": "C", "email": "c@example.com"}]), encoding="utf-8")
    assert read_existing_users(json_file) == [{"name": "C", "email": "c@example.com"}]
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}', encoding="utf-8")
    with pytest.raises(ValueError):
        read_existing_users(bad)


def test_state_file_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state.json"
    assert load_state(path) is None
    save_state(path, {"users": [{"email": "a@example.com"}], "homeDivisionId": HOME_ID})
    save_state(path, {"users": [], "homeDivisionId": HOME_ID})
    assert load_state(path) == {"users": [], "homeDivisionId": HOME_ID}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError):
        load_state(path)


def test_rate_limiter_never_admits_more_than_the_limit_in_any_window() -> None:
    now = [0.0]
    limiter = RateLimiter(lambda: now[0])
    admitted: list[float] = []
    for step in range(600):
        now[0] = step * 0.37
        if limiter.admit("token", 10) == 0:
            admitted.append(now[0])
    for i, t in enumerate(admitted):
        assert sum(1 for u in admitted[i:] if u < t + 60) <= 10
    assert len(admitted) >= 10 * (600 * 0.37 // 60)


@pytest.mark.parametrize(
    "bad",
    [
        {"rate_per_minute": 0},
        {"fault_5xx_rate": 1.5},
        {"drop_after_create_rate": -0.1},
        {"latency_ms": -1},
        {"token_lifetime_s": 0},
        {"revoke_tokens_after": 0},
        {"port": 70000},
    ],
)
def test_config_rejects_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(**bad)
