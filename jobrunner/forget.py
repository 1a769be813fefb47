"""`jobrunner forget`: which rows may be removed from the ledger, and why the others may not.

Only rows no user was ever made for go: pending, failed or invalid, with no create that may
have been sent. A row whose person was created or found in the org, or whose create may have
been sent, is kept and named with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from jobrunner.ledger import Ledger


@dataclass
class ForgetPlan:
    matched: int = 0
    removable: list[dict[str, Any]] = field(default_factory=list)
    kept: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (row, why kept)


def plan_forget(
    ledger: Ledger, emails: Sequence[str], statuses: Sequence[str], sources: Sequence[str]
) -> ForgetPlan:
    """The rows matching every filter given, split into those that may go and those kept."""
    plan = ForgetPlan()
    for row in ledger.select_rows(emails, statuses, sources):
        plan.matched += 1
        why = why_kept(row)
        if why is None:
            plan.removable.append(row)
        else:
            plan.kept.append((row, why))
    return plan


def why_kept(row: dict[str, Any]) -> str | None:
    """None if the row may be forgotten, else why not."""
    if row["status"] in ("created", "exists", "rolled_back") or row["user_id"]:
        return f"{row['status']}: the person is in Genesys"
    if row["in_doubt"]:
        return "a create may have been sent (a run looks it up first)"
    if row["status"] not in ("pending", "failed", "invalid"):
        return f"{row['status']}: a run is working on it"
    return None
