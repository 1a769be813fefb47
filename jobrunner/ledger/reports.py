"""What `report`, `check` and the run's summary read: counts, rows with their steps, the
work a plan counts. Reads only."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from jobrunner.ledger.model import (
    HELD_STEP,
    OPEN_STEP,
    PLANNED_STEP,
    ROW_COLUMNS,
    STATUSES,
    TO_CREATE,
    Row,
    marks,
    row_of,
)
from jobrunner.ledger.store import Store, utc_now_iso

# A row with a failed step, or with a step held back (its person waits for a manager whose
# own row is invalid or failed): the table lists both with the reason.
_FAILED_STEP = (
    "rows.id IN (SELECT s.row_id FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
    f"WHERE s.status = 'failed' OR {HELD_STEP})"
)


class Reports(Store):
    def counts(self) -> dict[str, int]:
        """Rows by status (every status, 0 where none)."""
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self.execute("SELECT status, count(*) FROM rows GROUP BY status"):
            counts[status] = n
        return counts

    def step_totals(self, kinds: Sequence[str]) -> dict[str, int]:
        """Steps of these kinds in the whole ledger: done, failed, open (still to do), waiting
        (held back for a manager)."""
        done, failed, open_, waiting = self.execute(
            "SELECT count(*) FILTER (WHERE s.status = 'done'), "
            "count(*) FILTER (WHERE s.status = 'failed'), "
            f"count(*) FILTER (WHERE {OPEN_STEP}), count(*) FILTER (WHERE {HELD_STEP}) "
            f"FROM steps AS s JOIN rows AS r ON r.id = s.row_id WHERE s.kind IN ({marks(kinds)})",
            list(kinds),
        ).fetchone()
        return {"done": done, "failed": failed, "open": open_, "waiting": waiting}

    def exists_kinds(self) -> dict[str, int]:
        """The `exists` rows by kind: there (before the job), of which in_line (steps due or
        done: --update-existing), deleted, unknown (the user's id not found yet)."""
        there, in_line, deleted, unknown = self.execute(
            "SELECT count(*) FILTER (WHERE user_id IS NOT NULL AND coalesce(user_state, '') "
            "!= 'deleted'), count(*) FILTER (WHERE user_id IS NOT NULL AND coalesce("
            "user_state, '') != 'deleted' AND EXISTS (SELECT 1 FROM steps WHERE row_id = "
            "rows.id AND status != 'skipped')), count(*) FILTER (WHERE user_state = "
            "'deleted'), count(*) FILTER (WHERE user_id IS NULL AND coalesce(user_state, '') "
            "!= 'deleted') FROM rows WHERE status = 'exists'"
        ).fetchone()
        return {"there": there, "in_line": in_line, "deleted": deleted, "unknown": unknown}

    def org(self) -> dict[str, Any] | None:
        """The org this ledger belongs to: {org_id, name, region, bound_at}, or None."""
        found = self.execute("SELECT org_id, name, region, bound_at FROM org").fetchone()
        return (
            dict(zip(("org_id", "name", "region", "bound_at"), found, strict=True))
            if found
            else None
        )

    def bind_org(self, org_id: str, name: str | None, region: str) -> None:
        """Record the org a command reached first (once: later ones are compared with it)."""
        self.execute(
            "INSERT INTO org (id, org_id, name, region, bound_at) VALUES (1, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO NOTHING",
            (org_id, name, region, utc_now_iso()),
        )

    def settled_counts(self) -> dict[tuple[str, str], int]:
        """(status, settled_by) -> rows: how created and exists rows were settled."""
        return {
            (status, by): n
            for status, by, n in self.execute(
                "SELECT status, settled_by, count(*) FROM rows WHERE settled_by IS NOT NULL "
                "GROUP BY status, settled_by"
            )
        }

    def step_counts(self) -> list[tuple[str, str, int]]:
        """(kind, status, steps) of the steps a report shows."""
        return self.execute(
            "SELECT s.kind, s.status, count(*) FROM steps AS s JOIN rows AS r "
            f"ON r.id = s.row_id WHERE {PLANNED_STEP} GROUP BY s.kind, s.status ORDER BY s.kind"
        ).fetchall()

    def sources(self) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = sqlite3.Row
            return [dict(r) for r in cur.execute("SELECT * FROM sources ORDER BY id")]

    # -- the rows ------------------------------------------------------------------------------

    def iter_report_rows(
        self, statuses: Sequence[str] | None = None, failed_steps: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Every row (or those with these statuses, and with `failed_steps` those with a
        failed step too) with its source's name and its steps as (kind, target, status,
        error, detail) tuples, streamed a thousand at a time."""
        sql = (
            "SELECT sources.name AS source, rows.* FROM rows "
            "JOIN sources ON sources.id = rows.source_id"
        )
        params: list[Any] = []
        if statuses:
            sql += f" WHERE (rows.status IN ({marks(statuses)})"
            params.extend(statuses)
            if failed_steps:
                sql += f" OR {_FAILED_STEP}"
            sql += ")"
        sql += " ORDER BY rows.source_id, rows.line, rows.id"
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = sqlite3.Row
            cur.execute(sql, params)
            rows = cur.fetchmany(1000)
        while rows:
            steps = self._steps_of([r["id"] for r in rows])
            for r in rows:
                yield {**dict(r), "steps": steps.get(r["id"], [])}
            with self._lock:
                rows = cur.fetchmany(1000)

    def _steps_of(self, row_ids: Sequence[int]) -> dict[int, list[tuple[Any, ...]]]:
        found: dict[int, list[tuple[Any, ...]]] = {}
        for row_id, *step in self.execute(
            "SELECT s.row_id, s.kind, s.target, s.status, s.error_message, s.detail "
            f"FROM steps AS s JOIN rows AS r ON r.id = s.row_id WHERE s.row_id IN "
            f"({marks(row_ids)}) AND {PLANNED_STEP} ORDER BY s.row_id, s.rowid",
            row_ids,
        ).fetchall():
            found.setdefault(row_id, []).append(tuple(step))
        return found

    def widest_email(self, statuses: Sequence[str], failed_steps: bool = False) -> int:
        """The longest email among the rows a table will show (it shows them whole)."""
        extra = f" OR {_FAILED_STEP}" if failed_steps else ""
        (width,) = self.execute(
            "SELECT coalesce(max(length(email)), 0) FROM rows WHERE status IN "
            f"({marks(statuses)}){extra}",
            list(statuses),
        ).fetchone()
        return int(width)

    # -- what a plan counts ------------------------------------------------------------------

    def rows_to_create_list(self) -> list[Row]:
        return [
            row_of(r)
            for r in self.execute(f"SELECT {ROW_COLUMNS} FROM rows WHERE {TO_CREATE} ORDER BY id")
        ]

    def has_exists_rows(self) -> bool:
        (found,) = self.execute(
            "SELECT EXISTS (SELECT 1 FROM rows WHERE status = 'exists' AND user_id IS NOT NULL)"
        ).fetchone()
        return bool(found)

    def exists_deleted(self) -> list[Row]:
        """People found deleted (a create answered 409; their user is deleted)."""
        return [
            row_of(r)
            for r in self.execute(
                f"SELECT {ROW_COLUMNS} FROM rows WHERE status = 'exists' "
                "AND user_state = 'deleted' ORDER BY id"
            )
        ]

    def following_file(self) -> list[Row]:
        """People the job created whose row changed since, with steps still to do."""
        return [
            row_of(r)
            for r in self.execute(
                f"SELECT {ROW_COLUMNS} FROM rows AS r WHERE r.status = 'created' "
                "AND r.follows_file = 1 AND EXISTS (SELECT 1 FROM steps AS s "
                f"WHERE s.row_id = r.id AND {OPEN_STEP}) ORDER BY r.id"
            )
        ]

    def steps_of_row(self, row_id: int, open_only: bool = False) -> list[tuple[str, str]]:
        """(kind, target) of a row's steps (still to do only, with `open_only`)."""
        where = f" AND {OPEN_STEP}" if open_only else " AND s.kind != 'rollback'"
        return [
            (kind, target)
            for kind, target in self.execute(
                "SELECT s.kind, s.target FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
                f"WHERE s.row_id = ?{where} ORDER BY s.rowid",
                (row_id,),
            )
        ]

    def sources_of_rows(self, row_ids: Sequence[int]) -> dict[int, str]:
        if not row_ids:
            return {}
        return dict(
            self.execute(
                "SELECT rows.id, sources.name FROM rows JOIN sources "
                f"ON sources.id = rows.source_id WHERE rows.id IN ({marks(row_ids)})",
                list(row_ids),
            ).fetchall()
        )

    def rows_to_create(self) -> set[int]:
        return {r for (r,) in self.execute(f"SELECT id FROM rows WHERE {TO_CREATE}")}

    def wants_by_row(self) -> Counter[tuple[int, str]]:
        """(row id, kind) -> how many assignments of that kind the row asks for."""
        return Counter(
            {
                (row_id, kind): n
                for row_id, kind, n in self.execute(
                    "SELECT row_id, kind, count(*) FROM wants GROUP BY row_id, kind"
                )
            }
        )

    def open_steps(self) -> list[tuple[int, str, str]]:
        """(row id, kind, target) of every step still to do."""
        return self.execute(
            "SELECT s.row_id, s.kind, s.target FROM steps AS s JOIN rows AS r "
            f"ON r.id = s.row_id WHERE {OPEN_STEP}"
        ).fetchall()

    def profile_fields(self) -> list[tuple[int, bool, bool]]:
        """(row id, names a manager, names a location) of the rows that name either."""
        return [
            (row_id, bool(manager), bool(location))
            for row_id, manager, location in self.execute(
                "SELECT id, email_manager IS NOT NULL, location_work IS NOT NULL FROM rows "
                "WHERE email_manager IS NOT NULL OR location_work IS NOT NULL"
            )
        ]
