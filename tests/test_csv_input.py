"""Field validation details that the CLI tests do not pin down."""

from __future__ import annotations

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
