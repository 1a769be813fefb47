"""Steps: the work after a row's create, one ledger row per step of a person (per target for
the steps that have one, such as a queue), and the assignments (`wants`) they send.

A step is `waiting` until its person exists, then `pending` (due at next_attempt_at),
`in_progress` while a runner holds it, and `done`, `failed` or `skipped`. Claims take one
step of a kind, or a batch of one target across people; every write to a claimed step is
checked against its owner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobrunner.ledger.model import HELD_STEP, OPEN_STEP, ROW_COLUMNS, StepClaim, marks, row_of
from jobrunner.ledger.store import Store, utc_now_iso

# A report's profile waits while its manager is still to be created, or was found there
# before with the id look-up under way (no id, no note yet).
_MANAGER_SETTLED = (
    " AND NOT EXISTS (SELECT 1 FROM rows AS m WHERE r.email_manager IS NOT NULL "
    "AND m.email_norm = r.email_manager AND (m.status IN ('pending', 'in_progress') "
    "OR (m.status = 'exists' AND m.user_id IS NULL AND m.error_message IS NULL)))"
)
# A step that can be claimed now: pending, due, and its person exists.
_DUE = "s.kind = ? AND s.status = 'pending' AND s.next_attempt_at <= ? AND r.user_id IS NOT NULL"


class StepWork(Store):
    # -- claiming ----------------------------------------------------------------------------

    def claim_steps(
        self, kind: str, owner: str, now: float, limit: int = 1, after_manager: bool = False
    ) -> list[StepClaim]:
        """Take up to `limit` due steps of one kind whose user exists. `after_manager`: a
        step waits while the row's manager is still to be created (the profile)."""
        with self.transaction():
            claimed = self.execute(
                "UPDATE steps SET status = 'in_progress', claim_owner = ?, updated_at = ? "
                "WHERE rowid IN (SELECT s.rowid FROM steps AS s JOIN rows AS r "
                f"ON r.id = s.row_id WHERE {_DUE}{_MANAGER_SETTLED if after_manager else ''} "
                "ORDER BY s.next_attempt_at, s.row_id LIMIT ?) "
                "RETURNING row_id, kind, target, attempts",
                (owner, utc_now_iso(), kind, now, limit),
            ).fetchall()
            return self._step_claims(claimed)

    def claim_batch(self, kind: str, owner: str, now: float, size: int) -> list[StepClaim]:
        """Up to `size` due steps of one kind and one target, across rows: a full batch when
        one is ready, else the last of a target once no more can come (no row that wants it
        is still to be created, none of its steps is waiting out a delay)."""
        with self.transaction():
            ready = self.execute(
                "SELECT s.target, count(*) FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
                f"WHERE {_DUE} GROUP BY s.target ORDER BY count(*) DESC",
                (kind, now),
            ).fetchall()
            for target, count in ready:
                if count < size and self._more_coming(kind, target, now):
                    continue
                claimed = self.execute(
                    "UPDATE steps SET status = 'in_progress', claim_owner = ?, updated_at = ? "
                    "WHERE rowid IN (SELECT s.rowid FROM steps AS s JOIN rows AS r "
                    f"ON r.id = s.row_id WHERE {_DUE} AND s.target = ? "
                    "ORDER BY s.next_attempt_at, s.row_id LIMIT ?) "
                    "RETURNING row_id, kind, target, attempts",
                    (owner, utc_now_iso(), kind, now, target, size),
                ).fetchall()
                return self._step_claims(claimed)
        return []

    def _more_coming(self, kind: str, target: str, now: float) -> bool:
        (later,) = self.execute(
            "SELECT EXISTS (SELECT 1 FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
            "WHERE s.kind = ? AND s.target = ? AND ((s.status = 'pending' "
            "AND s.next_attempt_at > ?) OR (s.status = 'waiting' AND r.status IN "
            "('pending', 'in_progress'))))",
            (kind, target, now),
        ).fetchone()
        return bool(later)

    def _step_claims(self, claimed: list[tuple[Any, ...]]) -> list[StepClaim]:
        if not claimed:
            return []
        ids = sorted({c[0] for c in claimed})
        rows = {
            r[0]: row_of(r)
            for r in self.execute(f"SELECT {ROW_COLUMNS} FROM rows WHERE id IN ({marks(ids)})", ids)
        }
        return [
            StepClaim(rows[row_id], kind, target, attempts)
            for row_id, kind, target, attempts in claimed
        ]

    # -- recording ---------------------------------------------------------------------------

    def finish_steps(
        self,
        claims: Sequence[StepClaim],
        owner: str,
        status: str,
        *,
        error_code: str | None = None,
        error_message: str | None = None,
        detail: str | None = None,
        count_attempt: bool = True,
    ) -> int:
        """Record the answer for claimed steps (done or failed) the moment it is known."""
        return self._update_claimed_steps(
            claims,
            owner,
            "status = ?, error_code = ?, error_message = ?, detail = coalesce(?, detail), "
            "attempts = attempts + ?",
            (status, error_code, error_message, detail, int(count_attempt)),
        )

    def release_steps(
        self,
        claims: Sequence[StepClaim],
        owner: str,
        *,
        next_attempt_at: float,
        count_attempt: bool = False,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> int:
        """Claimed steps back to pending, due at `next_attempt_at`."""
        return self._update_claimed_steps(
            claims,
            owner,
            "status = 'pending', next_attempt_at = ?, attempts = attempts + ?, "
            "error_code = coalesce(?, error_code), error_message = coalesce(?, error_message)",
            (next_attempt_at, int(count_attempt), error_code, error_message),
        )

    def _update_claimed_steps(
        self, claims: Sequence[StepClaim], owner: str, assignments: str, values: tuple[Any, ...]
    ) -> int:
        """SET `assignments` on each of these steps that `owner` still holds, and give the
        claim up; how many it changed (a step another runner took over is left alone)."""
        now = utc_now_iso()
        with self.transaction():
            return self.conn.executemany(
                f"UPDATE steps SET {assignments}, claim_owner = NULL, updated_at = ? "
                "WHERE row_id = ? AND kind = ? AND target = ? "
                "AND claim_owner = ? AND status = 'in_progress'",
                [(*values, now, c.row.id, c.kind, c.target, owner) for c in claims],
            ).rowcount

    def fail_steps(self, problems: dict[tuple[int, str, str | None], tuple[str, str]]) -> int:
        """Fail pending steps of people who exist that cannot be done (a name the org no
        longer knows); a target None: every step of that kind of the row. Steps of a row
        not created yet keep waiting with their row."""
        now = utc_now_iso()
        with self.transaction():
            return sum(
                self.execute(
                    "UPDATE steps SET status = 'failed', error_code = ?, error_message = ?, "
                    "updated_at = ? WHERE row_id = ? AND kind = ? AND (? IS NULL OR target = ?) "
                    "AND status = 'pending'",
                    (code, message, now, row_id, kind, target, target),
                ).rowcount
                for (row_id, kind, target), (code, message) in problems.items()
            )

    # -- what a step reads -------------------------------------------------------------------

    def wants_of(self, row_id: int, kind: str) -> list[tuple[str, str, str | None, float | None]]:
        """(name, name key, division, proficiency) of what a row asks for, in file order."""
        return self.execute(
            "SELECT name, name_key, division, proficiency FROM wants "
            "WHERE row_id = ? AND kind = ? ORDER BY position",
            (row_id, kind),
        ).fetchall()

    def any_step_done(self, kind: str) -> bool:
        (done,) = self.execute(
            "SELECT EXISTS (SELECT 1 FROM steps WHERE kind = ? AND status = 'done')", (kind,)
        ).fetchone()
        return bool(done)

    def open_steps_of(self, kind: str) -> list[tuple[int, str, str]]:
        """(row id, kind, target) of the steps of this kind still to do (of people who exist)."""
        return self.execute(
            "SELECT s.row_id, s.kind, s.target FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
            "WHERE s.kind = ? AND s.status IN ('pending', 'in_progress') "
            "AND r.user_id IS NOT NULL",
            (kind,),
        ).fetchall()

    # -- what is left --------------------------------------------------------------------------

    def work_left(self, kinds: Sequence[str], rows: bool = True) -> tuple[int, float | None]:
        """(rows and steps of these kinds still to do, earliest time one of them is due).

        Steps of a row whose create failed are not work (they wait for --retry-failed)."""
        left, due = 0, []
        if rows:
            left, rows_due = self.execute(
                "SELECT count(*), min(CASE WHEN status = 'pending' THEN next_attempt_at END) "
                "FROM rows WHERE status IN ('pending', 'in_progress')"
            ).fetchone()
            due.append(rows_due)
        steps, steps_due = self.execute(
            "SELECT count(*), min(CASE WHEN s.status = 'pending' THEN s.next_attempt_at END) "
            f"FROM steps AS s JOIN rows AS r ON r.id = s.row_id WHERE s.kind IN ({marks(kinds)}) "
            f"AND {OPEN_STEP}",
            list(kinds),
        ).fetchone()
        due.append(steps_due)
        known = [d for d in due if d is not None]
        return left + steps, (min(known) if known else None)

    def steps_left(self, kinds: Sequence[str]) -> dict[str, int]:
        """Steps of these kinds still to do, by kind (for the progress line and the ETA)."""
        return dict(
            self.execute(
                "SELECT s.kind, count(*) FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
                f"WHERE s.kind IN ({marks(kinds)}) AND {OPEN_STEP} GROUP BY s.kind",
                list(kinds),
            ).fetchall()
        )

    def open_by_target(self, kinds: Sequence[str]) -> list[tuple[str, str, int]]:
        """(kind, target, steps still to do) of these kinds: what the calls left are."""
        return [
            tuple(r)  # type: ignore[misc]
            for r in self.execute(
                "SELECT s.kind, s.target, count(*) FROM steps AS s JOIN rows AS r "
                f"ON r.id = s.row_id WHERE s.kind IN ({marks(kinds)}) AND {OPEN_STEP} "
                "GROUP BY s.kind, s.target",
                list(kinds),
            )
        ]

    def steps_not_done(self, kinds: Sequence[str]) -> int:
        """Steps of these kinds open, failed or held back: what keeps a run's exit code
        from 0."""
        (n,) = self.execute(
            "SELECT count(*) FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
            f"WHERE s.kind IN ({marks(kinds)}) AND ({OPEN_STEP} OR s.status = 'failed' "
            f"OR {HELD_STEP})",
            list(kinds),
        ).fetchone()
        return int(n)
