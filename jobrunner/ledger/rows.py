"""A row's life: claimed for its create, settled (created, exists, failed), released to try
again, recovered after a crash, brought back by --retry-failed, --restore-deleted,
--update-existing and --recreate-rolled-back, and rolled back.

Every write to a claimed row is checked against its owner: a row another runner took over is
left alone (the write says False).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from jobrunner.ledger.intake import filters
from jobrunner.ledger.model import NEVER_SENT, ROW_COLUMNS, Row, StepClaim, row_of
from jobrunner.ledger.store import Store, utc_now_iso

# A step of a person brought in line with the file: (kind, target).
Extra = tuple[str, str]


class RowLife(Store):
    # -- the create: claim, mark, settle, release ------------------------------------------

    def claim_next(self, owner: str, now: float) -> Row | None:
        """Atomically take the next due pending row (BEGIN IMMEDIATE + UPDATE ... RETURNING).

        Managers first (rank), and a row never while its manager's row is being created or
        is due to be: a report follows its manager unless the manager's create is waiting
        out a backoff.
        """
        with self.transaction():
            found = self.execute(
                "UPDATE rows SET status = 'in_progress', claim_owner = ?, updated_at = ? "
                "WHERE id = (SELECT r.id FROM rows AS r WHERE r.status = 'pending' "
                "AND r.next_attempt_at <= ? AND NOT EXISTS (SELECT 1 FROM rows AS m "
                "WHERE r.email_manager IS NOT NULL AND m.email_norm = r.email_manager "
                "AND m.rank < r.rank AND (m.status = 'in_progress' OR (m.status = 'pending' "
                "AND m.next_attempt_at <= ?))) ORDER BY r.rank, r.next_attempt_at, r.id LIMIT 1) "
                f"RETURNING {ROW_COLUMNS}",
                (owner, utc_now_iso(), now, now),
            ).fetchone()
        return row_of(found) if found else None

    def mark_attempt(self, row_id: int, owner: str, division_id: str | None = None) -> bool:
        """Committed before a create is sent: from now on the person may exist. The division
        id sent is kept with it (a look-up compares against what was sent)."""
        cur = self.execute(
            "UPDATE rows SET attempts = attempts + 1, in_doubt = 1, division_id = ?, "
            "first_sent_at = coalesce(first_sent_at, ?), updated_at = ? "
            "WHERE id = ? AND claim_owner = ? AND status = 'in_progress'",
            (division_id, time.time(), utc_now_iso(), row_id, owner),
        )
        return cur.rowcount == 1

    def mark_restoring(self, row_id: int, owner: str, user_id: str) -> bool:
        """Committed before a deleted user is restored: the row now names that user, so a
        crash mid-restore is finished (or repeated) by the next run, never a new create."""
        cur = self.execute(
            "UPDATE rows SET user_id = ?, settled_by = 'restoring', user_state = 'deleted', "
            "updated_at = ? WHERE id = ? AND claim_owner = ? AND status = 'in_progress'",
            (user_id, utc_now_iso(), row_id, owner),
        )
        return cur.rowcount == 1

    def finish(
        self,
        row_id: int,
        owner: str,
        status: str,
        *,
        user_id: str | None = None,
        user_version: int | None = None,
        settled_by: str | None = None,
        user_state: str | None = None,
        in_doubt: int = 0,
        error_code: str | None = None,
        error_message: str | None = None,
        count_attempt: bool = False,
        steps: str | None = None,
        steps_due_at: float = 0.0,
        settled_at: float | None = None,
        extra_steps: Sequence[Extra] | None = None,
        wake: Sequence[str] = (),
    ) -> bool:
        """Record a final outcome (created, exists, failed) the moment it is known; in the
        same transaction the row's waiting steps become `steps` (pending, due at
        `steps_due_at`, or skipped). `extra_steps`: a person brought in line with the file
        (already there, or restored): every step of the row is due, and these too. `wake`:
        the kinds of step of this person's reports held back for want of their user."""
        now = utc_now_iso()
        with self.transaction():
            cur = self.execute(
                "UPDATE rows SET status = ?, user_id = coalesce(?, user_id), "
                "user_version = coalesce(?, user_version), settled_by = coalesce(?, settled_by), "
                "user_state = coalesce(?, user_state), settled_at = coalesce(?, settled_at), "
                "in_doubt = ?, attempts = attempts + ?, error_code = ?, error_message = ?, "
                "claim_owner = NULL, updated_at = ? "
                "WHERE id = ? AND claim_owner = ? AND status = 'in_progress'",
                (
                    status,
                    user_id,
                    user_version,
                    settled_by,
                    user_state,
                    settled_at,
                    int(in_doubt),
                    int(count_attempt),
                    error_code,
                    error_message,
                    now,
                    row_id,
                    owner,
                ),
            )
            if cur.rowcount != 1:
                return False
            if user_id and wake:
                (norm,) = self.execute(
                    "SELECT email_norm FROM rows WHERE id = ?", (row_id,)
                ).fetchone()
                self.wake_reports(norm, wake, steps_due_at)
            if steps == "pending" and extra_steps is not None:
                self.activate_steps(row_id, extra_steps, steps_due_at)
            elif steps is not None:
                self.execute(
                    "UPDATE steps SET status = ?, next_attempt_at = ?, updated_at = ? "
                    "WHERE row_id = ? AND status = 'waiting'",
                    (steps, steps_due_at, now, row_id),
                )
        return True

    def activate_steps(self, row_id: int, extra: Sequence[Extra], due: float) -> None:
        """Bring a person who was already there (or restored) in line with the file: every
        step of the row becomes due, and the `extra` steps such a person needs (a division
        move; a profile of every field the file gives) are added."""
        now = utc_now_iso()
        with self.transaction():
            self.conn.executemany(
                "INSERT OR IGNORE INTO steps (row_id, kind, target, status, next_attempt_at, "
                "updated_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                [(row_id, kind, target, due, now) for kind, target in extra],
            )
            self.execute(
                "UPDATE steps SET status = 'pending', next_attempt_at = ?, updated_at = ? "
                "WHERE row_id = ? AND status IN ('waiting', 'skipped')",
                (due, now, row_id),
            )

    def release(
        self,
        row_id: int,
        owner: str,
        *,
        next_attempt_at: float,
        in_doubt: int,
        undo_attempt: bool = False,
        count_attempt: bool = False,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> bool:
        """Put a claimed row back in the queue, due at `next_attempt_at`."""
        delta = (-1 if undo_attempt else 0) + (1 if count_attempt else 0)
        cur = self.execute(
            "UPDATE rows SET status = 'pending', next_attempt_at = ?, in_doubt = ?, "
            "attempts = max(0, attempts + ?), error_code = coalesce(?, error_code), "
            "error_message = coalesce(?, error_message), claim_owner = NULL, updated_at = ? "
            "WHERE id = ? AND claim_owner = ? AND status = 'in_progress'",
            (
                next_attempt_at,
                int(in_doubt),
                delta,
                error_code,
                error_message,
                utc_now_iso(),
                row_id,
                owner,
            ),
        )
        return cur.rowcount == 1

    def attempts_of(self, row_id: int) -> int:
        return int(self.execute("SELECT attempts FROM rows WHERE id = ?", (row_id,)).fetchone()[0])

    def set_user_version(self, row_id: int, version: int) -> None:
        self.execute("UPDATE rows SET user_version = ? WHERE id = ?", (version, row_id))

    # -- people found there before ---------------------------------------------------------

    def exists_without_id(self, limit: int = 10_000) -> list[Row]:
        """`exists` rows without the id of the person who was there: a stopped run never
        looked it up, or the search did not show the person (yet)."""
        cur = self.execute(
            f"SELECT {ROW_COLUMNS} FROM rows WHERE status = 'exists' AND user_id IS NULL "
            "ORDER BY id LIMIT ?",
            (limit,),
        )
        return [row_of(r) for r in cur.fetchall()]

    def set_user_id(
        self, row_id: int, user_id: str | None, note: str | None, user_state: str | None = None
    ) -> None:
        """Add what a look-up found to a row that is already settled."""
        self.execute(
            "UPDATE rows SET user_id = coalesce(?, user_id), error_message = ?, "
            "user_state = coalesce(?, user_state), updated_at = ? "
            "WHERE id = ? AND status = 'exists'",
            (user_id, note, user_state, utc_now_iso(), row_id),
        )

    # -- a run's start and end -------------------------------------------------------------

    def recover_abandoned(self) -> tuple[int, int, int]:
        """Rows and steps a dead runner left in_progress go back to pending.

        A row's in_doubt flag is kept: a row whose create may have been sent is looked up
        before it is created again (steps are safe to repeat). Returns (rows recovered, of
        which in doubt, steps recovered). Only call this while holding the run lock, when no
        other runner can be alive.
        """
        with self.transaction():
            rows = self.execute(
                "UPDATE rows SET status = 'pending', claim_owner = NULL, next_attempt_at = 0, "
                "updated_at = ? WHERE status = 'in_progress' RETURNING in_doubt",
                (utc_now_iso(),),
            ).fetchall()
            steps = self.execute(
                "UPDATE steps SET status = 'pending', claim_owner = NULL, updated_at = ? "
                "WHERE status = 'in_progress'",
                (utc_now_iso(),),
            ).rowcount
            # A new run starts afresh: backoffs scheduled by an earlier run are not waited out.
            self.execute("UPDATE rows SET next_attempt_at = 0 WHERE status = 'pending'")
            self.execute("UPDATE steps SET next_attempt_at = 0 WHERE status = 'pending'")
        return len(rows), sum(1 for (d,) in rows if d), steps

    def release_all(self, owner: str) -> int:
        """On shutdown: whatever this owner still holds goes back to pending (doubt kept)."""
        now = utc_now_iso()
        with self.transaction():
            rows = self.execute(
                "UPDATE rows SET status = 'pending', claim_owner = NULL, updated_at = ? "
                "WHERE status = 'in_progress' AND claim_owner = ?",
                (now, owner),
            ).rowcount
            steps = self.execute(
                "UPDATE steps SET status = 'pending', claim_owner = NULL, updated_at = ? "
                "WHERE status = 'in_progress' AND claim_owner = ?",
                (now, owner),
            ).rowcount
        return rows + steps

    def set_ranks(self, rounds: int = 30) -> None:
        """Create order: a row whose manager is a row still to create ranks after it (its
        manager's rank + 1), so managers are created before their reports. Cycles stop at
        `rounds`."""
        with self.transaction():
            self.execute("UPDATE rows SET rank = 0 WHERE rank != 0")
            for _ in range(rounds):
                changed = self.execute(
                    "UPDATE rows SET rank = m.rank + 1 FROM rows AS m "
                    "WHERE rows.status = 'pending' AND rows.email_manager IS NOT NULL "
                    "AND m.email_norm = rows.email_manager "
                    "AND m.status IN ('pending', 'in_progress') AND rows.rank <= m.rank"
                ).rowcount
                if not changed:
                    break

    def fail_rows(self, problems: dict[int, tuple[str, str]]) -> int:
        """Fail pending rows before their create (e.g. a name the org does not know).
        `problems`: row id -> (error code, message). A row whose create may have been sent
        (or a restore begun) is left for its look-up: the create step checks its names
        again before it sends anything."""
        now = utc_now_iso()
        with self.transaction():
            return sum(
                self.execute(
                    "UPDATE rows SET status = 'failed', error_code = ?, error_message = ?, "
                    f"updated_at = ? WHERE id = ? AND status = 'pending' AND {NEVER_SENT}",
                    (code, message, now, row_id),
                ).rowcount
                for row_id, (code, message) in problems.items()
            )

    def revive(
        self, row_ids: Sequence[int], steps: Sequence[tuple[int, str, str]]
    ) -> tuple[int, int]:
        """Failures the org has fixed since (a name made there, a manager created) go back
        to the queue with fresh attempts: no --retry-failed needed. (rows, steps) revived."""
        now = utc_now_iso()
        with self.transaction():
            rows = sum(
                self.execute(
                    "UPDATE rows SET status = 'pending', attempts = 0, next_attempt_at = 0, "
                    "error_code = NULL, error_message = NULL, updated_at = ? "
                    "WHERE id = ? AND status = 'failed'",
                    (now, row_id),
                ).rowcount
                for row_id in row_ids
            )
            revived = sum(
                self.execute(
                    "UPDATE steps SET status = 'pending', attempts = 0, next_attempt_at = 0, "
                    "error_code = NULL, error_message = NULL, updated_at = ? "
                    "WHERE row_id = ? AND kind = ? AND target = ? AND status = 'failed'",
                    (now, *key),
                ).rowcount
                for key in steps
            )
        return rows, revived

    def wake_all_reports(self, kinds: Sequence[str]) -> int:
        """Every report's step held back for a manager who has a user by now (a run that
        stopped before it could say so): due."""
        if not kinds:
            return 0
        return self.execute(
            "UPDATE steps SET status = 'pending', next_attempt_at = 0, error_code = NULL, "
            f"error_message = NULL, updated_at = ? WHERE status = 'waiting' AND kind IN "
            f"({', '.join('?' * len(kinds))}) AND row_id IN (SELECT r.id FROM rows AS r "
            "JOIN rows AS m ON m.email_norm = r.email_manager WHERE r.user_id IS NOT NULL "
            "AND r.status IN ('created', 'exists') AND m.user_id IS NOT NULL "
            "AND m.status IN ('created', 'exists'))",
            (utc_now_iso(), *kinds),
        ).rowcount

    def wake_reports(self, email_norm: str, kinds: Sequence[str], due: float = 0.0) -> int:
        """A manager has a user now: the steps of their reports held back waiting for it
        (their manager's own row was invalid or failed) are due."""
        if not kinds:
            return 0
        return self.execute(
            "UPDATE steps SET status = 'pending', next_attempt_at = ?, error_code = NULL, "
            f"error_message = NULL, updated_at = ? WHERE status = 'waiting' AND kind IN "
            f"({', '.join('?' * len(kinds))}) AND row_id IN (SELECT id FROM rows WHERE "
            "email_manager = ? AND user_id IS NOT NULL AND status IN ('created', 'exists'))",
            (due, utc_now_iso(), *kinds, email_norm),
        ).rowcount

    # -- what the run's flags ask of rows an earlier run settled ---------------------------

    def requeue_failed(self) -> tuple[int, int]:
        """--retry-failed: failed rows and steps go back to the queue with fresh attempts.
        Returns (rows, steps)."""
        now = utc_now_iso()
        with self.transaction():
            rows = self.execute(
                "UPDATE rows SET status = 'pending', attempts = 0, next_attempt_at = 0, "
                "updated_at = ? WHERE status = 'failed'",
                (now,),
            ).rowcount
            steps = self.execute(
                "UPDATE steps SET status = CASE WHEN (SELECT user_id FROM rows "
                "WHERE rows.id = steps.row_id) IS NULL THEN 'waiting' ELSE 'pending' END, "
                "attempts = 0, next_attempt_at = 0, updated_at = ? WHERE status = 'failed'",
                (now,),
            ).rowcount
        return rows, steps

    def plan_restores(self) -> int:
        """--restore-deleted: people found deleted by an earlier run are to be restored (the
        create step does it, without another create)."""
        return self.execute(
            "UPDATE rows SET status = 'pending', settled_by = 'restoring', attempts = 0, "
            "next_attempt_at = 0, error_message = NULL, updated_at = ? "
            "WHERE status = 'exists' AND user_state = 'deleted' AND user_id IS NOT NULL",
            (utc_now_iso(),),
        ).rowcount

    def to_bring_in_line(self) -> list[Row]:
        """--update-existing: the people found already there (not deleted) whose steps were
        skipped, or who never had the steps that bring them in line planned."""
        cur = self.execute(
            f"SELECT {ROW_COLUMNS} FROM rows WHERE status = 'exists' AND user_id IS NOT NULL "
            "AND coalesce(user_state, 'active') != 'deleted' AND id IN (SELECT row_id FROM "
            "steps WHERE status = 'skipped' UNION SELECT id FROM rows AS r WHERE "
            "NOT EXISTS (SELECT 1 FROM steps WHERE row_id = r.id AND kind IN "
            "('division', 'profile'))) ORDER BY id"
        )
        return [row_of(r) for r in cur.fetchall()]

    def recreate_rolled_back(self) -> int:
        """--recreate-rolled-back: those rows are to be created again (their former user,
        deleted by the rollback, is restored when the create finds it)."""
        now = utc_now_iso()
        with self.transaction():
            n = self.execute(
                "UPDATE rows SET status = 'pending', attempts = 0, next_attempt_at = 0, "
                "in_doubt = 0, settled_by = 'rolled_back', error_code = NULL, "
                "error_message = NULL, updated_at = ? WHERE status = 'rolled_back'",
                (now,),
            ).rowcount
            self.execute(
                "UPDATE steps SET status = 'waiting', attempts = 0, error_message = NULL, "
                "updated_at = ? WHERE kind != 'rollback' AND row_id IN "
                "(SELECT id FROM rows WHERE settled_by = 'rolled_back' AND status = 'pending')",
                (now,),
            )
            self.execute(
                "DELETE FROM steps WHERE kind = 'rollback' AND row_id IN "
                "(SELECT id FROM rows WHERE settled_by = 'rolled_back' AND status = 'pending')"
            )
        return n

    # -- rollback --------------------------------------------------------------------------

    def rollback_candidates(
        self, sources: Sequence[str], emails: Sequence[str], failed_steps_only: bool
    ) -> list[dict[str, Any]]:
        """Rows whose user this ledger created (with how: create, lookup, restore)."""
        where, params = filters(emails, (), sources)
        where += (" AND " if where else " WHERE ") + (
            "rows.status = 'created' AND rows.user_id IS NOT NULL"
        )
        if failed_steps_only:
            where += " AND rows.id IN (SELECT row_id FROM steps WHERE status = 'failed')"
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = sqlite3.Row
            cur.execute(
                "SELECT rows.id, rows.line, rows.email, rows.settled_by, sources.name AS source "
                f"FROM rows JOIN sources ON sources.id = rows.source_id{where} ORDER BY rows.id",
                params,
            )
            return [dict(r) for r in cur.fetchall()]

    def plan_rollback(self, row_ids: Sequence[int], kind: str = "rollback") -> int:
        """A `rollback` step (or another of the rollback's kinds) for each of these rows (a
        crash mid-rollback resumes them); one that failed before is due again."""
        now = utc_now_iso()
        with self.transaction():
            return sum(
                self.execute(
                    "INSERT INTO steps (row_id, kind, target, status, updated_at) "
                    "VALUES (?, ?, '', 'pending', ?) ON CONFLICT DO UPDATE SET "
                    "status = 'pending', attempts = 0, next_attempt_at = 0 "
                    "WHERE status = 'failed'",
                    (row_id, kind, now),
                ).rowcount
                for row_id in row_ids
            )

    def reports_outside(self, row_ids: Sequence[int]) -> list[dict[str, Any]]:
        """People with a user, outside these rows, whose manager (in the file) is one of
        these rows' people: a rollback of these leaves them reporting to a deleted user."""
        if not row_ids:
            return []
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = sqlite3.Row
            cur.execute(
                "SELECT r.id, r.line, r.email, r.email_manager, s.name AS source FROM rows AS r "
                "JOIN sources AS s ON s.id = r.source_id JOIN rows AS m "
                "ON m.email_norm = r.email_manager WHERE m.id IN "
                f"({', '.join('?' * len(row_ids))}) AND r.id NOT IN "
                f"({', '.join('?' * len(row_ids))}) AND r.user_id IS NOT NULL "
                "AND r.status IN ('created', 'exists') ORDER BY r.id",
                [*row_ids, *row_ids],
            )
            return [dict(r) for r in cur.fetchall()]

    def rolled_back(self, claims: Sequence[StepClaim]) -> None:
        """The users of these claimed rollback steps are gone: the rows become rolled_back
        and their other steps stop. (The steps themselves are finished by the caller, in
        the same transaction.)"""
        now = utc_now_iso()
        with self.transaction():
            for c in claims:
                self.execute(
                    "UPDATE rows SET status = 'rolled_back', updated_at = ? "
                    "WHERE id = ? AND status = 'created'",
                    (now, c.row.id),
                )
                self.execute(
                    "UPDATE steps SET status = 'skipped', error_message = 'rolled back', "
                    "updated_at = ? WHERE row_id = ? AND kind != 'rollback' AND status IN "
                    "('waiting', 'pending', 'failed')",
                    (now, c.row.id),
                )
