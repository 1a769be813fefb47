"""The columns `ingest` knows, and the header names admins really write for them.

One table, one place (README's "Columns" section is written from it). A header cell is
matched by its *key*: lower case, with everything but letters and digits dropped, so
`E-mail`, `e_mail`, `Email` and ` EMAIL ` are all `email`, and `Work Phone` is `workphone`.

Two shapes are accepted, and may be mixed:

* jobrunner's own: first_name, last_name, email, phone_number, division_id, title, department;
* the Genesys admin UI's import template ("Add people with .csv file import"): name, email,
  phone_work, extension, title, department, email_manager, location_work, roles_divisions,
  queues, division, skills.

Where a file has two columns for one field, the canonical name wins over an alias
(`report --format csv` writes both `division` and `division_id`; the first is used).
"""

from __future__ import annotations

import difflib
import re

# Canonical column -> the header names that mean it (besides the canonical name itself),
# in the order a human would look for them. German, French and Spanish Excel templates
# are common enough that their obvious words are here too.
ALIASES: dict[str, tuple[str, ...]] = {
    "email": (
        "e-mail",
        "email address",
        "e-mail address",
        "mail",
        "work email",
        "e-mail-adresse",
        "courriel",
        "correo electronico",
        "correo",
    ),
    "first_name": ("given name", "first", "forename", "firstname", "vorname", "prénom", "prenom"),
    "last_name": ("surname", "family name", "last", "lastname", "nachname", "nom de famille"),
    "name": ("full name", "display name", "nom complet", "nombre completo"),
    "phone_number": (
        "phone_work",
        "phone",
        "work phone",
        "phone number",
        "mobile",
        "mobile phone",
        "mobile number",
        "telephone",
        "tel",
        "telefon",
        "téléphone",
        "teléfono",
        "telefono",
    ),
    "extension": ("ext", "phone extension", "durchwahl"),
    "title": ("job title", "position", "jobtitle", "berufsbezeichnung", "titre", "cargo"),
    "department": ("dept", "department name", "abteilung", "département", "departamento"),
    "division": ("division_id", "division name"),
    "email_manager": ("manager email", "manager", "manager's email", "reports to"),
    "location_work": ("location", "work location", "office"),
    "roles_divisions": ("roles", "role"),
    "queues": ("queue",),
    "skills": ("skill",),
    "languages": ("language", "sprachen", "langues", "idiomas"),
}

COLUMNS = tuple(ALIASES)
# A file needs an email, and a name: `name`, or `first_name` and `last_name`.
NAME_COLUMNS = ("name", "first_name", "last_name")


def header_key(cell: str) -> str:
    """`E-mail ` -> `email`; `Work Phone` -> `workphone`; `Prénom` -> `prénom`."""
    return re.sub(r"[\W_]+", "", cell.casefold())


def _build_index() -> dict[str, tuple[str, int]]:
    """key -> (canonical column, rank): rank 0 for the canonical name, then the aliases."""
    index: dict[str, tuple[str, int]] = {}
    for column, aliases in ALIASES.items():
        for rank, name in enumerate((column, *aliases)):
            key = header_key(name)
            if key in index and index[key][0] != column:
                raise AssertionError(f"header {name!r} is given to two columns")
            index.setdefault(key, (column, rank))
    return index


_INDEX = _build_index()


def column_for(cell: str) -> tuple[str, int] | None:
    """(canonical column, rank) for a header cell, or None when it is not one of ours."""
    return _INDEX.get(header_key(cell))


def suggestion(cell: str) -> str | None:
    """For a column we ignore: the known column whose name is close to it, if one is."""
    key = header_key(cell)
    if len(key) < 3:
        return None
    close = difflib.get_close_matches(key, _INDEX, n=1, cutoff=0.8)
    return _INDEX[close[0]][0] if close else None
