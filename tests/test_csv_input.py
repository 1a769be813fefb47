"""Field validation details that the CLI tests do not pin down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jobrunner.csv_input import _SIMPLE_EMAIL, email_problem, normalise_phone

# Domain labels of every shape the two could disagree on: plain ones, ones with "--" in the
# 3rd and 4th places (reserved by IDNA for A-labels: email-validator refuses them) and
# Punycode-looking ones ("xn--...", which email-validator decodes, and may refuse).
_label = st.one_of(
    st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9]{2}--([A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True),
    st.from_regex(r"(xn|XN|Xn)--[a-z0-9-]{0,12}[a-z0-9]", fullmatch=True),
)
_tld = st.one_of(
    st.from_regex(r"[A-Za-z]{2,12}", fullmatch=True),
    st.sampled_from(["test", "local", "localhost", "onion", "invalid", "arpa", "xn--p1ai"]),
)
_emails = st.one_of(
    st.from_regex(
        r"[A-Za-z0-9_+-]{1,70}(\.[A-Za-z0-9_+-]{1,9}){0,2}@([A-Za-z0-9-]{1,64}\.){1,3}[A-Za-z]{2,12}",
        fullmatch=True,
    ),
    st.builds(
        lambda local, labels, tld: f"{local}@{'.'.join([*labels, tld])}",
        st.from_regex(r"[A-Za-z0-9_+-]{1,20}(\.[A-Za-z0-9_+-]{1,9}){0,1}", fullmatch=True),
        st.lists(_label, min_size=1, max_size=3),
        _tld,
    ),
)


# Derandomized: the same draws on every run (until this test, Hypothesis or Python change),
# so CI cannot turn red on a rare draw. The strategy above aims at the shapes where the
# fast path and email-validator could disagree, and every disagreement found is pinned
# below. To look for new ones, run it once with derandomize=False and many more examples.
@settings(max_examples=500, deadline=None, derandomize=True)
@given(_emails)
@example("ab@ab--cd.com")  # found by this test: "--" in a label's 3rd and 4th places
@example("ab@cd.ab--x.com")
@example("ab@xn--cd.com")  # an A-label that is not valid Punycode
@example("a@XN--abc.com")
@example("x@xn--bcher-kva.com")  # valid Punycode (bücher): accepted by both
@example("a@b.c--d.com")  # "--" elsewhere in a label is fine
@example("ab--cd@example.com")  # ... and in the local part
def test_fast_path_never_accepts_what_email_validator_rejects(email: str) -> None:
    """The regex fast path and email-validator give the same verdict on every address."""
    try:
        validate_email(email, check_deliverability=False)
        reference_ok = True
    except EmailNotValidError:
        reference_ok = False
    assert (email_problem(email) is None) == reference_ok, email


@pytest.mark.parametrize("email", ["a@b.test", "x@localhost", "a..b@example.com", "a@-example.com"])
def test_rejected_emails(email: str) -> None:
    assert email_problem(email) is not None


def test_international_addresses_go_through_email_validator() -> None:
    assert not _SIMPLE_EMAIL.fullmatch("josé@example.com")
    assert email_problem("josé@example.com") is None


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("+1 (317) 555-0101", "+13175550101"),
        ("+44 20 7946 0958", "+442079460958"),
        ("+13175550101", "+13175550101"),
        ("00 44 20 7946 0958", None),
        ("3175550101", None),
        ("+1 317 555", None),
        ("call me", None),
    ],
)
def test_phone_numbers_must_carry_a_country_code(raw: str, e164: str | None) -> None:
    got, problem = normalise_phone(raw)
    assert got == e164
    assert (problem is None) == (e164 is not None)


@settings(max_examples=1500, deadline=None)
@given(st.from_regex(r"\+[1-9][0-9 ()\-.]{6,20}", fullmatch=True))
@example("+261 22 123 45")  # Madagascar: the parser adds a prefix
@example("+2612000000")
@example("+375 8 017 123 45 67")  # Belarus: national prefix 8
@example("+672 12345")  # Norfolk Island: rewritten
@example("+378 912345")  # San Marino: 0549 added
@example("+86 12 1234 5678")
@example("+55 90 11 91234 5678")
@example("+54 11 15 1234 5678")
@example("+352 621 123 456")
def test_the_short_path_for_phones_agrees_with_the_full_parser(raw: str) -> None:
    from jobrunner.csv_input import _normalise_phone_fully

    assert normalise_phone(raw) == _normalise_phone_fully(raw), raw


@pytest.mark.parametrize(
    "raw", ["+390612345678", "+44 20 7946 0958", "+1 (317) 555-0101", "+86 10 1234 5678"]
)
def test_the_short_path_on_real_shapes(raw: str) -> None:
    from jobrunner.csv_input import _normalise_phone_fully

    assert normalise_phone(raw) == _normalise_phone_fully(raw)


# -- a local number read with --default-country ------------------------------------------------


def test_a_local_number_that_is_no_number_of_the_default_country_is_invalid() -> None:
    """The Irish mobile 087 123 4567 has as many digits as a US number, but no US number
    starts 087: read with US it is not +1 087 123 4567."""
    got, problem = normalise_phone("087 123 4567", "US")
    assert got is None
    assert problem and "not a valid number of US" in problem and "international form" in problem
    assert normalise_phone("087 123 4567", "IE") == ("+353871234567", None)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("(317) 555-0142", "+13175550142"),
        ("202-456-1111", "+12024561111"),
        ("1 202 456 1111", "+12024561111"),  # the country code without a +
        ("(416) 363-1234", "+14163631234"),  # Toronto: +1 is the US's and Canada's code
    ],
)
def test_a_real_local_number_of_the_default_country_is_read(raw: str, e164: str) -> None:
    assert normalise_phone(raw, "US") == (e164, None)


def test_a_number_in_international_form_in_a_range_phonenumbers_does_not_know_is_accepted() -> None:
    """Validity tables lag behind new allocations: in international form only the length
    and country code are checked, with or without a default country. Written locally, the
    same number is refused (it could be another country's)."""
    import phonenumbers

    raw = "+44 20 5000 0000"
    assert not phonenumbers.is_valid_number(phonenumbers.parse(raw))  # unknown to the tables
    for country in (None, "US", "GB"):
        assert normalise_phone(raw, country) == ("+442050000000", None), country
    assert normalise_phone("00 44 20 5000 0000", "DE") == ("+442050000000", None)  # 00: IDD
    got, problem = normalise_phone("020 5000 0000", "GB")
    assert got is None and problem and "not a valid number of GB" in problem


def test_ingest_with_a_default_country_names_it_for_a_number_that_is_not_of_it(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from jobrunner.cli import cli

    f = tmp_path / "u.csv"
    f.write_text(
        "name,email,phone_work\nAoife Byrne,aoife@example.com,087 123 4567\n"
        "Ann Lee,ann@example.com,(317) 555-0142\n",
        encoding="utf-8",
    )
    db = tmp_path / "l.db"
    result = CliRunner().invoke(cli, ["--db", str(db), "ingest", "--default-country", "US", str(f)])
    assert result.exit_code == 0, result.output
    report = CliRunner().invoke(cli, ["--db", str(db), "report", "--format", "json"])
    rows = {r["email"]: r for r in json.loads(report.output)["rows"]}
    aoife = rows["aoife@example.com"]
    assert (aoife["status"], aoife["error_code"]) == ("invalid", "phone_invalid")
    assert "'087 123 4567' is not valid: not a valid number of US" in aoife["error"]
    assert rows["ann@example.com"]["phone_number"] == "+13175550142"
