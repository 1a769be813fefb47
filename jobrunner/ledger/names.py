"""Names: every division, role, queue, skill, location and manager the rows use, with where
they are used (resolved against the org by jobrunner/resolve.py), and the rows of managers
who are people of this ledger."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from jobrunner.ledger.model import HEALABLE, marks
from jobrunner.ledger.store import Store


class Names(Store):
    def healable(self) -> tuple[list[int], list[tuple[int, str, str, str, str | None]]]:
        """Failures the org can fix: rows failed before their create because a name did not
        resolve, and steps failed for a name or for their manager's missing user. Returns
        (row ids, [(row id, kind, target, error code, the row's manager)])."""
        rows = [
            r
            for (r,) in self.execute(
                f"SELECT id FROM rows WHERE status = 'failed' AND error_code IN {HEALABLE} "
                "AND user_id IS NULL"
            )
        ]
        steps = self.execute(
            "SELECT s.row_id, s.kind, s.target, s.error_code, r.email_manager FROM steps AS s "
            f"JOIN rows AS r ON r.id = s.row_id WHERE s.status = 'failed' AND s.error_code IN "
            f"{HEALABLE} AND r.user_id IS NOT NULL"
        ).fetchall()
        return rows, [tuple(s) for s in steps]

    def names_in_use(self, row_ids: Sequence[int] | None = None) -> list[tuple[Any, ...]]:
        """Every name the rows with work left (or these rows) use: (kind, name as written,
        row id, source, line). Kinds: division, role, queue, skill, location, manager. Keys
        are made by the caller (SQLite's lower() knows only ASCII)."""
        if row_ids is None:
            # Work left, and failures a name found in the org since would heal.
            which = (
                "(rows.status IN ('pending', 'in_progress') OR rows.id IN (SELECT row_id FROM "
                "steps WHERE status IN ('pending', 'in_progress', 'waiting') "
                f"OR (status = 'failed' AND error_code IN {HEALABLE})) "
                f"OR (rows.status = 'failed' AND rows.error_code IN {HEALABLE}))"
            )
            params: list[Any] = []
        else:
            which = f"rows.id IN ({marks(row_ids)})"
            params = list(row_ids)
        base = "FROM rows JOIN sources ON sources.id = rows.source_id"
        found = self.execute(
            f"SELECT 'division', division, rows.id, sources.name, rows.line {base} "
            f"WHERE division IS NOT NULL AND {which} "
            "UNION ALL "
            f"SELECT 'location', location_work, rows.id, sources.name, rows.line {base} "
            f"WHERE location_work IS NOT NULL AND {which} "
            "UNION ALL "
            f"SELECT 'manager', email_manager, rows.id, sources.name, rows.line {base} "
            f"WHERE email_manager IS NOT NULL AND {which} "
            "UNION ALL "
            f"SELECT wants.kind, wants.name, rows.id, sources.name, rows.line {base} "
            f"JOIN wants ON wants.row_id = rows.id WHERE {which} "
            "UNION ALL "
            f"SELECT 'division', wants.division, rows.id, sources.name, rows.line {base} "
            f"JOIN wants ON wants.row_id = rows.id WHERE wants.division IS NOT NULL AND {which}",
            params * 5,
        ).fetchall()
        return [tuple(f) for f in found]

    def manager_row(self, email: str) -> dict[str, Any] | None:
        """The row of a manager who is a person of this ledger, if one is: the live one, else
        an invalid one (whose reason the manager's reports are told)."""
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = sqlite3.Row
            found = cur.execute(
                "SELECT rows.id, rows.line, rows.status, rows.user_id, rows.error_code, "
                "rows.error_message, sources.name AS source FROM rows JOIN sources "
                "ON sources.id = rows.source_id WHERE email_norm = ? "
                "ORDER BY rows.status = 'invalid', rows.id DESC LIMIT 1",
                (email.strip().lower(),),
            ).fetchone()
        return dict(found) if found else None
