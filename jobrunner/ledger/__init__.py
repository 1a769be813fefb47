"""The ledger: the only place that talks SQL. One SQLite file, cut here by table:

    store.py       the file: open, check, copy, wait for another command, transactions
    migrations.py  the schema, from migrations/NNNN_*.sql
    model.py       statuses, a row, a claimed step, the named conditions the queries share
    intake.py      sources and the rows and plans an ingest brings; forget
    rows.py        a row's life: claim, settle, release, recover, the run's flags, rollback
    steps.py       the steps after a create, and the assignments they send
    names.py       the names the rows use, and managers who are rows of the ledger
    reports.py     what report, check and the summaries read

`Ledger` is all of them on one connection.
"""

from __future__ import annotations

from jobrunner.ledger.intake import Intake
from jobrunner.ledger.migrations import Migration, available_migrations
from jobrunner.ledger.model import (
    INPUT_FIELDS,
    PLAN_FIELDS,
    STATUSES,
    Row,
    Status,
    StepClaim,
    StepStatus,
)
from jobrunner.ledger.names import Names
from jobrunner.ledger.reports import Reports
from jobrunner.ledger.rows import RowLife
from jobrunner.ledger.steps import StepWork
from jobrunner.ledger.store import (
    describe_failure,
    free_bytes,
    missing_folders,
    remove_ledger_files,
    utc_now_iso,
)

__all__ = [
    "INPUT_FIELDS",
    "PLAN_FIELDS",
    "STATUSES",
    "Ledger",
    "Migration",
    "Row",
    "StepClaim",
    "StepStatus",
    "Status",
    "available_migrations",
    "describe_failure",
    "free_bytes",
    "missing_folders",
    "remove_ledger_files",
    "utc_now_iso",
]


class Ledger(Intake, RowLife, StepWork, Names, Reports):
    """An open ledger. Safe to share between threads: statements are serialised by a lock."""
