"""Intake: the sources (files ingested) and the rows and plans they bring; `forget`.

Ingest adds rows (each with its assignments, `wants`, and the steps after its create, all
`waiting`), and updates rows no user was made for when a file gives other values. `forget`
removes rows no user was ever made for.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobrunner.ledger.model import INPUT_FIELDS, NEVER_SENT, PLAN_FIELDS, marks
from jobrunner.ledger.store import Store, utc_now_iso

# The name a person was created or found with stays theirs: a file does not rename people.
_NAMES = ("name", "first_name", "last_name", "email")


class Intake(Store):
    def add_source(self, name: str) -> int:
        cur = self.execute(
            "INSERT INTO sources (name, sha256, ingested_at) VALUES (?, '', ?)",
            (name, utc_now_iso()),
        )
        return int(cur.lastrowid or 0)

    def finish_source(self, source_id: int, sha256: str, rows_read: int, rows_added: int) -> None:
        self.execute(
            "UPDATE sources SET sha256 = ?, rows_read = ?, rows_added = ? WHERE id = ?",
            (sha256, rows_read, rows_added, source_id),
        )

    def has_rows(self) -> bool:
        return self.execute("SELECT EXISTS (SELECT 1 FROM rows)").fetchone()[0] == 1

    def find_by_emails(
        self, emails: Sequence[str], exclude_source: int
    ) -> dict[str, dict[str, Any]]:
        """The rows of earlier ingests holding these people, by email_norm: a live row wins
        over an invalid one, then the newest. Each: id, status, line, source, in_doubt,
        user_id and the INPUT_FIELDS."""
        found: dict[str, dict[str, Any]] = {}
        if not emails:
            return found
        columns = ", ".join(f"rows.{c}" for c in INPUT_FIELDS)
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = sqlite3.Row
            cur.execute(
                "SELECT rows.email_norm, rows.id, rows.status, rows.line, sources.name AS source, "
                f"rows.in_doubt, rows.user_id, {columns} FROM rows "
                "JOIN sources ON sources.id = rows.source_id "
                f"WHERE email_norm IN ({marks(emails)}) AND rows.source_id != ? "
                "ORDER BY rows.status = 'invalid' DESC, rows.id DESC",
                (*emails, exclude_source),
            )
            # Ordered so that the row that wins comes last and overwrites the others.
            for r in cur.fetchall():
                found[r["email_norm"]] = dict(r)
        return found

    def lines_in_source(self, emails: Sequence[str], source_id: int) -> dict[str, int]:
        """email_norm -> line of the valid row that already holds it in this source."""
        if not emails:
            return {}
        cur = self.execute(
            f"SELECT email_norm, min(line) FROM rows WHERE email_norm IN ({marks(emails)}) "
            "AND +source_id = ? AND +status != 'invalid' GROUP BY email_norm",
            (*emails, source_id),
        )
        return dict(cur.fetchall())

    def source_line_known(
        self, sha256: str, line: int, exclude_source: int = 0
    ) -> dict[str, Any] | None:
        """The row read from this line of a file with these exact bytes, in an earlier ingest."""
        found = self.execute(
            "SELECT rows.id, rows.status, rows.line, sources.name FROM rows "
            "JOIN sources ON sources.id = rows.source_id "
            "WHERE sources.sha256 = ? AND rows.line = ? AND rows.source_id != ? LIMIT 1",
            (sha256, line, exclude_source),
        ).fetchone()
        if found is None:
            return None
        return dict(zip(("id", "status", "line", "source"), found, strict=True))

    _INSERT = (
        "INSERT INTO rows (source_id, line, status, error_code, error_message, email_norm, "
        f"division_id, created_at, updated_at, {', '.join(INPUT_FIELDS)}) VALUES (:source_id, "
        ":line, :status, :error_code, :error_message, :email_norm, :division_id, '{now}', "
        "'{now}', " + ", ".join(f":{c}" for c in INPUT_FIELDS) + ")"
    )

    def insert_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """New rows, each a dict of columns plus `wants` [(kind, name, name_key, division,
        proficiency)] and `steps` [(kind, target)]: the work after its create."""
        now = utc_now_iso()
        with self.transaction():
            # The time is our own ISO text (no quotes in it): written into the statement, so
            # the rows' dicts need no copy.
            self.conn.executemany(self._INSERT.replace("{now}", now), rows)
            planned = [r for r in rows if r["wants"] or r["steps"]]
            if not planned:
                return
            emails = [r["email_norm"] for r in planned]
            ids = dict(
                self.conn.execute(
                    f"SELECT email_norm, id FROM rows WHERE email_norm IN ({marks(emails)}) "
                    "AND status != 'invalid'",
                    emails,
                ).fetchall()
            )
            self._add_plans([(ids[r["email_norm"]], r) for r in planned], now)

    def _replace_plan(self, row_id: int, values: dict[str, Any], now: str) -> None:
        """A row's assignments and waiting steps, instead of those it had."""
        self.conn.execute("DELETE FROM wants WHERE row_id = ?", (row_id,))
        self.conn.execute("DELETE FROM steps WHERE row_id = ?", (row_id,))
        self._add_plans([(row_id, values)], now)

    def _add_plans(self, plans: Sequence[tuple[int, dict[str, Any]]], now: str) -> None:
        """Every requested assignment and the waiting steps of these rows."""
        self.conn.executemany(
            "INSERT INTO wants (row_id, kind, position, name, name_key, division, proficiency) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (row_id, w[0], i, *w[1:])
                for row_id, values in plans
                for i, w in enumerate(values["wants"])
            ],
        )
        self.conn.executemany(
            "INSERT INTO steps (row_id, kind, target, status, updated_at) "
            "VALUES (?, ?, ?, 'waiting', ?)",
            [
                (row_id, kind, target, now)
                for row_id, values in plans
                for kind, target in values["steps"]
            ],
        )

    def update_row(self, row_id: int, values: dict[str, Any], *, restart: bool) -> bool:
        """A re-ingested file gives other values for a row no user was made for yet: they
        replace the old ones, and its plan. `restart`: a failed or invalid row goes back to
        pending with fresh attempts. False if the row was not in a state to change."""
        now = utc_now_iso()
        sets = ", ".join(f"{c} = :{c}" for c in INPUT_FIELDS)
        reset = (
            ", status = 'pending', attempts = 0, next_attempt_at = 0, in_doubt = 0, "
            "error_code = NULL, error_message = NULL"
            if restart
            else ""
        )
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE rows SET source_id = :source_id, line = :line, email_norm = :email_norm, "
                f"division_id = :division_id, {sets}{reset}, updated_at = :now "
                f"WHERE id = :row_id AND {NEVER_SENT} AND status IN "
                "('pending', 'failed', 'invalid')",
                {**values, "row_id": row_id, "now": now},
            )
            if cur.rowcount != 1:
                return False
            self._replace_plan(row_id, values, now)
        return True

    def update_invalid(self, row_id: int, values: dict[str, Any]) -> bool:
        """An invalid row read again from a file where it is still invalid: it takes that
        file's values, line and reason (it has no plan to replace)."""
        sets = ", ".join(f"{c} = :{c}" for c in INPUT_FIELDS)
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE rows SET source_id = :source_id, line = :line, email_norm = :email_norm, "
                f"division_id = :division_id, {sets}, error_code = :error_code, "
                "error_message = :error_message, updated_at = :now "
                "WHERE id = :row_id AND status = 'invalid'",
                {**values, "row_id": row_id, "now": utc_now_iso()},
            )
        return cur.rowcount == 1

    def update_plan(self, row_id: int, values: dict[str, Any]) -> bool:
        """A row whose create may have been sent keeps what the create sent, but what comes
        after the create (manager, location, roles, queues, skills) may still change."""
        now = utc_now_iso()
        sets = ", ".join(f"{c} = :{c}" for c in PLAN_FIELDS)
        with self.transaction():
            cur = self.conn.execute(
                f"UPDATE rows SET {sets}, updated_at = :now WHERE id = :row_id "
                "AND user_id IS NULL AND status IN ('pending', 'failed')",
                {**values, "row_id": row_id, "now": now},
            )
            if cur.rowcount != 1:
                return False
            self._replace_plan(row_id, values, now)
        return True

    def follow_file(
        self,
        row_id: int,
        values: dict[str, Any],
        steps: Sequence[tuple[str, str]],
        step_status: str,
    ) -> bool:
        """A file gives other values for a person who has a user (created by the job, found
        there before, or rolled back): the row takes them (not the name: the person keeps
        the one they were created or found with) and its assignments, and the steps that
        bring the person in line with them are due again, as `step_status` (pending; skipped
        for people who were there before, until --update-existing). A step with a target (a
        queue) is added when new; one without is due again. A person the job created
        follows the file from now on: each step compares first."""
        now = utc_now_iso()
        columns = [c for c in INPUT_FIELDS if c not in _NAMES]
        sets = ", ".join(f"{c} = :{c}" for c in columns)
        with self.transaction():
            cur = self.conn.execute(
                "UPDATE rows SET source_id = :source_id, line = :line, "
                # The id the create used stays while the division does (a name's id is
                # resolved again when it changes).
                "division_id = CASE WHEN division IS :division THEN division_id "
                f"ELSE :division_id END, {sets}, "
                "follows_file = CASE WHEN status = 'created' THEN 1 ELSE follows_file END, "
                "updated_at = :now WHERE id = :row_id AND user_id IS NOT NULL "
                "AND status IN ('created', 'exists', 'rolled_back')",
                {**values, "row_id": row_id, "now": now},
            )
            if cur.rowcount != 1:
                return False
            self.conn.execute("DELETE FROM wants WHERE row_id = ?", (row_id,))
            self._add_plans([(row_id, {**values, "steps": []})], now)
            # What the steps did before the file changed is no change of the file's: from
            # now on a step's detail is what bringing the person in line changed.
            self.conn.execute(
                "UPDATE steps SET detail = NULL WHERE row_id = ? AND status IN ('done', 'skipped')",
                (row_id,),
            )
            self.conn.executemany(
                "INSERT INTO steps (row_id, kind, target, status, updated_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (row_id, kind, target) DO UPDATE SET "
                "status = excluded.status, attempts = 0, next_attempt_at = 0, "
                "error_code = NULL, error_message = NULL, updated_at = excluded.updated_at "
                "WHERE excluded.target = '' AND status != 'in_progress'",
                [(row_id, kind, target, step_status, now) for kind, target in steps],
            )
        return True

    # -- forget ------------------------------------------------------------------------------

    def select_rows(
        self,
        emails: Sequence[str] = (),
        statuses: Sequence[str] = (),
        sources: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Rows matching every given filter (an empty filter matches all)."""
        where, params = filters(emails, statuses, sources)
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = sqlite3.Row
            cur.execute(
                "SELECT rows.id, rows.line, rows.email, rows.status, rows.in_doubt, "
                "rows.user_id, sources.name AS source FROM rows "
                f"JOIN sources ON sources.id = rows.source_id{where} ORDER BY rows.id",
                params,
            )
            return [dict(r) for r in cur.fetchall()]

    def forget_rows(self, row_ids: Sequence[int]) -> int:
        """Remove rows no user was ever made for (and their plans); others are kept."""
        removed = 0
        with self.transaction():
            for start in range(0, len(row_ids), 500):
                chunk = row_ids[start : start + 500]
                removed += self.conn.execute(
                    f"DELETE FROM rows WHERE id IN ({marks(chunk)}) AND {NEVER_SENT} AND "
                    "status IN ('pending', 'failed', 'invalid')",
                    chunk,
                ).rowcount
        return removed


def filters(
    emails: Sequence[str], statuses: Sequence[str], sources: Sequence[str]
) -> tuple[str, list[Any]]:
    """A WHERE clause (rows joined with sources) matching every filter given."""
    clauses, params = [], []
    for column, values in (
        ("rows.email_norm", [e.strip().lower() for e in emails]),
        ("rows.status", list(statuses)),
        # A source is known by its file's name: `./users.csv`, `/data/users.csv` and
        # `users.csv` are the one ingested as users.csv.
        ("sources.name", [Path(s).name for s in sources]),
    ):
        if values:
            clauses.append(f"{column} IN ({marks(values)})")
            params.extend(values)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params
