"""One row's values checked and normalised. Pure: no file, no database, no network.

`InputRow` is one person as the file gives them. `validate(row)` applies ingest's rules to it
(lengths, control characters, names, the email with its fast path, phone numbers to E.164,
the division id, the manager) and parses its list cells (roles with divisions, queues,
skills and languages with proficiencies), or marks it invalid with the reason; `recheck`
applies them again to a ledger row before its create is sent. Reading the file is
csv_input.py's.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import uuid
from dataclasses import dataclass
from typing import Any

from jobrunner.columns import COLUMNS, NAME_COLUMNS
from jobrunner.errors import InputFileError

KNOWN_COLUMNS = COLUMNS
# Cells holding lists: `Role:[Division], Role`, `Queue, Queue`, `Skill:5, Skill`.
LIST_COLUMNS = ("roles_divisions", "queues", "skills", "languages")
# The list cells whose items carry a proficiency (`Name:N`, N from 0 to 5): column -> noun.
LEVEL_COLUMNS = {"skills": "skill", "languages": "language"}

# Genesys has no published limits for these; beyond them a value is a mistake, not a name.
MAX_LENGTH = {
    "first_name": 100,
    "last_name": 100,
    "name": 255,
    "email": 254,  # RFC 5321 path limit
    "phone_number": 40,
    "extension": 20,
    "division": 255,
    "title": 255,
    "department": 255,
    "email_manager": 254,
    "location_work": 255,
    "roles_divisions": 20_000,
    "queues": 20_000,
    "skills": 20_000,
    "languages": 20_000,
}

# The common shape of an address, which email-validator always accepts; anything else goes
# through email-validator itself (tests/test_csv_input.py checks the two agree).
_SIMPLE_EMAIL = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}"
)
# A domain label with "--" in its 3rd and 4th characters: IDNA (RFC 5891 4.2.3.1) reserves
# that shape for A-labels ("xn--" Punycode). email-validator refuses the others and decodes
# those, so none of them takes the fast path.
_RESERVED_LABEL = re.compile(r"(?:^|\.)[A-Za-z0-9]{2}--")
_SPECIAL_TLDS = frozenset({"arpa", "invalid", "local", "localhost", "onion", "test"})
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass
class InputRow:
    line: int
    first_name: str = ""
    last_name: str = ""
    name: str = ""  # the full name, as the admin UI's template has it
    email: str = ""
    phone_number: str | None = None
    extension: str | None = None
    title: str | None = None
    department: str | None = None
    division: str | None = None  # a division name, or an id (a UUID, written canonically)
    email_manager: str | None = None
    location_work: str | None = None
    roles_divisions: str | None = None
    queues: str | None = None
    skills: str | None = None
    languages: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    # The list cells, parsed (filled by validation):
    roles: tuple[tuple[str, str | None], ...] = ()  # (role, division or None: the row's)
    queue_names: tuple[str, ...] = ()
    skill_levels: tuple[tuple[str, float], ...] = ()  # (skill, proficiency 0..5)
    language_levels: tuple[tuple[str, float], ...] = ()  # (language, proficiency 0..5)

    @property
    def valid(self) -> bool:
        return self.error_code is None

    @property
    def email_norm(self) -> str:
        return self.email.strip().lower()

    @property
    def full_name(self) -> str:
        """What the create sends as `name`: the name column, else first and last name."""
        if self.name:
            return self.name
        return f"{self.first_name} {self.last_name}".strip()

    @property
    def division_id(self) -> str | None:
        """The division when the file gives its id (else it is resolved by name at run time)."""
        return self.division if self.division and is_uuid(self.division) else None

    def invalidate(self, code: str, message: str) -> None:
        if self.error_code is None:
            self.error_code, self.error_message = code, message


# Every column but the email and the names may be left empty.
_OPTIONAL = frozenset(KNOWN_COLUMNS) - {"email", *NAME_COLUMNS}
# The single values of a row (the rest are the LIST_COLUMNS).
_SCALARS = tuple(c for c in KNOWN_COLUMNS if c not in LIST_COLUMNS)
# Values that never hold a line break: every single value Genesys shows on one line (a name
# with a line break in it is damage, not data). Only the list cells may, as a spreadsheet
# cell written with Alt+Enter does: there it separates items.
_ONE_LINE = frozenset(_SCALARS)


def validate(
    row: InputRow,
    *,
    split_names: bool = True,
    country: str | None = None,
    columns: tuple[str, ...] = KNOWN_COLUMNS,
) -> None:
    """Ingest's rules for one row: normalises its values, or marks it invalid with a reason.

    `split_names`: the file has first_name/last_name columns (needed unless `name` is
    given). `country`: ISO code for phone numbers written without their country code.
    `columns`: the ones the file has (the others are empty). The runner applies the same
    rules again to a ledger row before sending it.
    """
    for col in columns:
        value = getattr(row, col)
        if not value:
            if value == "" and col in _OPTIONAL:
                setattr(row, col, None)
            continue
        if len(value) > MAX_LENGTH[col]:
            row.invalidate(
                "too_long", f"{col} is {len(value):,} characters long (at most {MAX_LENGTH[col]})"
            )
        bad = _control_character(value)
        if bad:
            row.invalidate("control_character", f"{col} contains a control character ({bad})")
        if col in _ONE_LINE and ("\n" in value or "\r" in value):
            row.invalidate("line_break", f"{col} contains a line break: write it on one line")
    if not _visible(row.name):
        if not split_names:
            row.invalidate("name_missing", "name is empty")
        if not _visible(row.first_name):
            row.invalidate("first_name_missing", "first_name is empty")
        if not _visible(row.last_name):
            row.invalidate("last_name_missing", "last_name is empty")
    if not row.email:
        row.invalidate("email_missing", "email is empty")
    elif row.valid:
        problem = email_problem(row.email)
        if problem:
            row.invalidate("email_invalid", f"email {row.email!r} is not valid: {problem}")
    if row.phone_number and row.valid:
        e164, problem = normalise_phone(row.phone_number, country)
        if problem:
            row.invalidate(
                "phone_invalid", f"phone_number {row.phone_number!r} is not valid: {problem}"
            )
        else:
            row.phone_number = e164
    if row.extension and row.valid and not row.extension.isdigit():
        row.invalidate("extension_invalid", f"extension {row.extension!r} is not only digits")
    if row.division and row.valid:
        canonical = _canonical_uuid(row.division)
        if canonical:
            row.division = canonical
        elif not _visible(row.division):
            row.division = None
    if row.email_manager and row.valid:
        problem = email_problem(row.email_manager)
        if problem:
            row.invalidate(
                "manager_invalid", f"email_manager {row.email_manager!r} is not valid: {problem}"
            )
        elif row.email_manager.lower() == row.email_norm:
            row.invalidate("manager_invalid", "email_manager is the person's own email")
        else:
            # Kept as people are known: lower-cased, so SQL can match it to a row's email.
            row.email_manager = row.email_manager.lower()
    if row.valid:
        _parse_lists(row)


# What a stored row holds of the file, checked again before its create is sent (its list
# cells live on as its plan: wants and steps).
_STORED = _SCALARS


def recheck(stored: object) -> str | None:
    """Ingest's rules applied again to a ledger row (anything with the _STORED attributes):
    None if it still passes them unchanged, else what is wrong. A ledger damaged on disk can
    hold values that never passed ingest; they must never be sent."""
    values = {col: getattr(stored, col) for col in _STORED}
    row = InputRow(line=0)
    for col, value in values.items():
        setattr(row, col, "" if value is None else value)
    validate(row, split_names=not values["name"])
    if not row.valid:
        return f"{row.error_code}: {row.error_message}"
    for col in _STORED:
        if (getattr(row, col) or None) != (values[col] or None):
            return f"{col} {values[col]!r} is not what ingest stores"
    return None


def _canonical_uuid(value: str) -> str | None:
    """`{0B9A...}`, `urn:uuid:...` and plain UUIDs, written the one way Genesys does."""
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        return None
    return canonical if len(value) >= 32 else None


def is_uuid(value: str) -> bool:
    return len(value) == 36 and _canonical_uuid(value) == value


@functools.lru_cache(maxsize=4096)
def name_key(name: str) -> str:
    """How names are compared with the org's: ignoring case and outer spaces."""
    return name.strip().casefold()


def key_of(kind: str, name: str) -> str:
    """The key a name of this kind is known by: a manager by email (as people are)."""
    return name.strip().lower() if kind == "manager" else name_key(name)


_ROLE_ITEM = re.compile(r"([^:\[\]]*?)\s*(?::\s*\[([^\[\]]*)\]\s*)?")


_ITEM_SEPARATOR = re.compile(r"[,\r\n]")


def _items(cell: str | None) -> list[str]:
    """A list cell's items: separated by commas, or by line breaks (one item a line, as a
    spreadsheet cell written with Alt+Enter holds them)."""
    return [item.strip() for item in _ITEM_SEPARATOR.split(cell or "") if item.strip()]


def _semicolon(column: str, item: str) -> str:
    """Why an item holding `;` is refused: the admin UI's import separates items with
    commas (a `;` is no separator there, and splitting on it could name other queues or
    roles than meant), so it is refused here, not found first by `check`."""
    fixed = ", ".join(part.strip() for part in item.split(";") if part.strip())
    return (
        f"{column} item {item!r} holds a ';': items are separated by commas (or line breaks), "
        f"as in the admin UI's import: write {fixed!r} (a name cannot hold a ';')"
    )


# What a list cell failed on: (error code, message).
Problem = tuple[str, str]


def _parse_lists(row: InputRow) -> None:
    """`Role:[Division; Division], Role` / `Queue, Queue` / `Skill:5, Skill` (no
    proficiency: 0). Inside a role's brackets a `;` separates divisions, as the admin UI's
    import writes a role granted in several; anywhere else it is refused. The first cell
    refused (in that order) invalidates the row, and its lists stay empty."""
    if not (row.roles_divisions or row.queues or row.skills or row.languages):
        return
    parsed: dict[str, tuple[Any, ...]] = {}
    for column in ("roles_divisions", "queues", *LEVEL_COLUMNS):
        cell = getattr(row, column)
        value, problem = _parse_cell(column, cell) if cell else ((), None)
        if problem:
            row.invalidate(*problem)
            return
        parsed[column] = value
    row.roles = parsed["roles_divisions"]
    row.queue_names = parsed["queues"]
    row.skill_levels = parsed["skills"]
    row.language_levels = parsed["languages"]


# A team's rows repeat the same list cells: each distinct cell is parsed once.
@functools.lru_cache(maxsize=4096)
def _parse_cell(column: str, cell: str) -> tuple[tuple[Any, ...], Problem | None]:
    if column == "roles_divisions":
        return _roles(cell)
    if column == "queues":
        return _queues(cell)
    return _levels(cell, column, LEVEL_COLUMNS[column])


def _roles(cell: str) -> tuple[tuple[tuple[str, str | None], ...], Problem | None]:
    roles: dict[tuple[str, str], tuple[str, str | None]] = {}
    for item in _items(cell):
        match = _ROLE_ITEM.fullmatch(item)
        role, divisions = (match.group(1), match.group(2)) if match else ("", None)
        if match and ";" in role:
            return (), ("roles_invalid", _semicolon("roles_divisions", item))
        names = [d.strip() for d in divisions.split(";")] if divisions is not None else [None]
        if not match or not _visible(role) or not all(d is None or _visible(d) for d in names):
            return (), (
                "roles_invalid",
                f"roles_divisions item {item!r} is not 'Role' or 'Role:[Division]' (a role name "
                "holds no , or :; several divisions: 'Role:[Division; Division]')",
            )
        for division in names:
            roles.setdefault((name_key(role), name_key(division or "")), (role, division))
    return tuple(roles.values()), None


def _queues(cell: str) -> tuple[tuple[str, ...], Problem | None]:
    queues: dict[str, str] = {}
    for item in _items(cell):
        if ";" in item:
            return (), ("queues_invalid", _semicolon("queues", item))
        queues.setdefault(name_key(item), item)
    return tuple(queues.values()), None


def _levels(
    cell: str, column: str, noun: str
) -> tuple[tuple[tuple[str, float], ...], Problem | None]:
    """`Name:5, Other:3` (no proficiency: 0) of a skills or languages cell, or why the cell
    is refused."""
    code = f"{column}_invalid"
    found: dict[str, tuple[str, float]] = {}
    for item in _items(cell):
        if ";" in item:
            return (), (code, _semicolon(column, item))
        name, colon, level_text = item.partition(":")
        name, level_text = name.strip(), level_text.strip()
        level = _proficiency(level_text) if colon else 0.0
        if not _visible(name) or level is None or ":" in level_text:
            return (), (
                code,
                f"{column} item {item!r} is not '{noun.title()}' or '{noun.title()}:N' with N "
                f"from 0 to 5 (a {noun} name holds no , or :)",
            )
        earlier = found.setdefault(name_key(name), (name, level))
        if earlier[1] != level:
            return (), (
                code,
                f"{noun} {name!r} is given twice with different proficiencies "
                f"({_level_text(earlier[1])} and {_level_text(level)})",
            )
    return tuple(found.values()), None


def _proficiency(text: str) -> float | None:
    try:
        level = float(text)
    except ValueError:
        return None
    return level if 0.0 <= level <= 5.0 else None


def _level_text(level: float) -> str:
    return f"{level:g}"


def _control_character(value: str) -> str | None:
    """The first control character other than tabs and line breaks (FileMaker writes
    vertical tabs for them), as U+XXXX."""
    if value.isprintable():
        return None
    for char in value:
        if char not in "\t\n\r\x0b\x0c" and unicodedata.category(char) == "Cc":
            return f"U+{ord(char):04X}"
    return None


def _visible(value: str) -> bool:
    """Has a character that shows: not only spaces and invisible format characters."""
    if not value:
        return False
    if value[0].isalnum():
        return True
    return any(not c.isspace() and unicodedata.category(c) != "Cf" for c in value)


def email_problem(email: str) -> str | None:
    """None when `email` is a deliverable-looking address (syntax only, no DNS)."""
    if len(email) <= 254 and _SIMPLE_EMAIL.fullmatch(email):
        local, _, domain = email.rpartition("@")
        if (
            len(local) <= 64
            and domain.rsplit(".", 1)[-1].lower() not in _SPECIAL_TLDS
            and ("--" not in domain or not _RESERVED_LABEL.search(domain))
        ):
            return None
    from email_validator import EmailNotValidError, validate_email

    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    return None


_PHONE_PUNCTUATION = str.maketrans("", "", " -.()\u00a0")
_PLAIN_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def normalise_phone(raw: str, country: str | None = None) -> tuple[str | None, str | None]:
    """(E.164, None) or (None, problem). Numbers must carry their country code (+1 ...),
    unless `country` (ISO code, e.g. US) says whose local numbers the file holds.

    Most files hold numbers already in international form, and the full parser costs
    ~9 µs a number; a plain +digits number takes a short path that gives the same verdict
    (a hypothesis test holds the two together), anything else the full parser.
    """
    compact = raw.translate(_PHONE_PUNCTUATION)
    if _PLAIN_E164.fullmatch(compact) and _possible_e164(compact):
        return compact, None
    return _normalise_phone_fully(raw, country)


def check_country(code: str) -> str:
    """An ISO 3166 region code phonenumbers knows (`us` -> `US`), else InputFileError."""
    import phonenumbers

    region = code.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise InputFileError(
            f"--default-country {code!r} is not a country code such as US, GB, DE or FR"
        )
    return region


def _possible_e164(number: str) -> bool:
    """True only when the full parser would surely keep `number` as it is and accept it."""
    import phonenumbers

    digits = number[1:]
    for size in (1, 2, 3):  # country codes are prefix-free: the first known one is it
        code = int(digits[:size])
        if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            if national.startswith("0"):
                return False  # leading zeros (Italy, ...): the full parser knows those
            known, prefix = _national_prefix(code)
            if not known:
                return False  # non-geographic codes: leave them to the full parser
            if prefix is not None and prefix.match(national):
                return False  # the parser may strip or rewrite a national prefix here
            number_ = phonenumbers.PhoneNumber(country_code=code, national_number=int(national))
            return bool(phonenumbers.is_possible_number(number_))
    return False


@functools.lru_cache(maxsize=512)
def _national_prefix(code: int) -> tuple[bool, re.Pattern[str] | None]:
    """(has region metadata, the region's national-prefix-for-parsing pattern)."""
    import phonenumbers
    from phonenumbers.phonemetadata import PhoneMetadata

    region = phonenumbers.region_code_for_country_code(code)
    metadata = PhoneMetadata.metadata_for_region(region, None)
    if metadata is None:
        return False, None
    prefix = metadata.national_prefix_for_parsing
    return True, re.compile(prefix) if prefix else None


def _normalise_phone_fully(raw: str, country: str | None = None) -> tuple[str | None, str | None]:
    import phonenumbers
    from phonenumbers import CountryCodeSource

    try:
        number = phonenumbers.parse(raw, country, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        if country:
            return None, f"not a phone number of {country} nor one in international form"
        return None, (
            "write it in international form with the country code, e.g. +13175550101, or "
            "give `ingest --default-country US` (your country's code) for local numbers"
        )
    # A number in international form (+, or the country's international prefix) has its
    # length and country code checked, not the per-range validity tables: they lag behind
    # new allocations, and Genesys itself only requires E.164.
    if not phonenumbers.is_possible_number(number):
        return None, "wrong number of digits for its country"
    if number.extension:
        return None, "has an extension, which E.164 cannot hold: give the number without it"
    # A number written without its country code is only taken as the default country's when
    # it is a valid number there (or of a country sharing its code: +1 covers the US and
    # Canada): the right length alone would turn another country's local number (an Irish
    # 087 ...) into a wrong one of this country (+1 087 ...).
    written_locally = number.country_code_source in (
        CountryCodeSource.FROM_DEFAULT_COUNTRY,
        CountryCodeSource.FROM_NUMBER_WITHOUT_PLUS_SIGN,  # "1 317 555 0142" read with US
    )
    if country and written_locally and not phonenumbers.is_valid_number(number):
        return None, (
            f"not a valid number of {country} (written without a country code, it is read as "
            f"{country}'s: --default-country {country}): check it, or write it in international "
            "form with its country code"
        )
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not _E164.fullmatch(e164):
        return None, "cannot be written in E.164 form"
    return e164, None
