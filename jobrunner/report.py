"""Ledger -> plain report rows. Rendering lives in the CLI layer (render.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from jobrunner.ledger import Ledger
from jobrunner.steps import LABELS

# The JSON/CSV contract: the first eight keys are promised to outside tools; later ones are
# added at the end. The admin UI's columns are here too, so a report fed back to `ingest`
# (after fixing rows in a spreadsheet) reads as the file it came from.
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
    "name",
    "extension",
    "division",
    "email_manager",
    "location_work",
    "roles_divisions",
    "queues",
    "skills",
    "settled_by",
    "user_state",
    "changes",
    "languages",
)
# How a row's user id became known, as people read it.
SETTLED = {
    "create": "created",
    "lookup": "created by look-up (the create's answer was lost; a user matching every "
    "field was found)",
    "conflict": "there before the job (409)",
    "restore": "restored (was deleted)",
}
_SHOWN = {"waiting": "pending", "in_progress": "pending"}


def report_rows(
    ledger: Ledger, statuses: Sequence[str] | None = None, failed_steps: bool = False
) -> Iterator[dict[str, Any]]:
    """Every row (or those with these statuses), each REPORT_FIELDS plus its `steps`."""
    for r in ledger.iter_report_rows(statuses, failed_steps=failed_steps):
        row = {f: r.get(f) for f in REPORT_FIELDS}
        row["error"] = r["error_message"]
        row["changes"] = _changes(r)
        row["steps"] = _steps(r["steps"])
        yield row


def _changes(r: dict[str, Any]) -> str | None:
    """For a person brought in line with the file (there before, restored, or created by the
    job before the file changed): what this job changed, or "no change" once every step is
    done; None for others and while steps are open."""
    if r["status"] != "exists" and r["settled_by"] != "restore" and not r["follows_file"]:
        return None
    steps = [s for s in r["steps"] if s[0] != "rollback"]
    if not steps or any(status not in ("done", "skipped") for _k, _t, status, _e, _d in steps):
        return None
    made = []
    for kind, _target, _status, _error, detail in steps:
        if detail and detail != "no change" and not detail.startswith("already"):
            made.append(f"{LABELS.get(kind, kind)}: {detail}")
    if all(status == "skipped" for _k, _t, status, _e, _d in steps):
        return None
    return "; ".join(made) or "no change"


def _steps(found: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """(kind, target, status, error, detail) of one row -> {"roles": {"status", "error"}}."""
    grouped: dict[str, list[tuple[str, str, str | None]]] = {}
    for kind, target, status, error, _detail in found:
        # A waiting step with a reason is held back (its manager's own row is invalid or
        # failed): shown as waiting, with why; one without waits for its person's create.
        shown = "waiting" if status == "waiting" and error else _SHOWN.get(status, status)
        grouped.setdefault(LABELS.get(kind, kind), []).append((target, shown, error))
    steps: dict[str, dict[str, Any]] = {}
    for name, parts in grouped.items():
        statuses = {status for _t, status, _e in parts}
        for status in ("failed", "waiting", "pending", "done", "skipped"):
            if status in statuses:
                break
        if statuses == {"done", "skipped"}:
            status = "done"
        # A queue's error names its queue; a role grant's error names its grant itself.
        errors = [
            f"{t}: {e}" if t and name == "queues" else e
            for t, s, e in parts
            if s in ("failed", "waiting") and e
        ]
        steps[name] = {"status": status, "error": "; ".join(errors) or None}
    return steps


def counts(ledger: Ledger) -> dict[str, int]:
    return ledger.counts()


def step_counts(ledger: Ledger) -> dict[str, dict[str, int]]:
    """{"roles": {"done": n, "pending": n, "failed": n, "skipped": n}, "queues": ...}."""
    table: dict[str, dict[str, int]] = {}
    for kind, status, n in ledger.step_counts():
        shown = table.setdefault(
            LABELS.get(kind, kind), dict.fromkeys(("done", "pending", "failed", "skipped"), 0)
        )
        shown[_SHOWN.get(status, status)] += n
    return table
