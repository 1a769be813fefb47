"""Ledger -> plain report rows. Rendering lives in the CLI layer (render.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from jobrunner.ledger import Ledger

# The JSON/CSV contract: the first eight keys are promised to outside tools.
REPORT_FIELDS = (
    "line",
    "email",
    "first_name",
    "last_name",
    "status",
    "user_id",
    "attempts",
    "error",
    "error_code",
    "source",
    "phone_number",
    "division_id",
    "title",
    "department",
    "updated_at",
)


def report_rows(ledger: Ledger, statuses: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
    for r in ledger.iter_report_rows(statuses):
        yield {
            "line": r["line"],
            "email": r["email"],
            "first_name": r["first_name"],
            "last_name": r["last_name"],
            "status": r["status"],
            "user_id": r["user_id"],
            "attempts": r["attempts"],
            "error": r["error_message"],
            "error_code": r["error_code"],
            "source": r["source"],
            "phone_number": r["phone_number"],
            "division_id": r["division_id"],
            "title": r["title"],
            "department": r["department"],
            "updated_at": r["updated_at"],
        }


def counts(ledger: Ledger) -> dict[str, int]:
    return ledger.counts()
