"""The ledger: the only module that talks SQL.

A SQLite file in WAL mode with synchronous=FULL, so an outcome that was committed survives a
crash or a power cut. Every multi-step write goes through `Ledger.transaction()`; claims take
the write lock up front (BEGIN IMMEDIATE) and use one UPDATE ... RETURNING.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from jobrunner.errors import LedgerError
from jobrunner.resources import migrations_dir

# The step kinds a run does (a rollback has its own command).
RUN_STEPS = ("roles", "skills", "queue", "profile", "division")
STATUSES = ("pending", "in_progress", "created", "exists", "failed", "invalid", "rolled_back")

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
BUSY_TIMEOUT_MS = 10_000
WAIT_LOG_S = 10.0  # while another command holds the ledger: say so this often
T = TypeVar("T")


def _log() -> Any:
    from jobrunner.log import get_logger

    return get_logger("jobrunner.ledger")


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Migration:
    number: int
    name: str
    sql: str


def available_migrations(folder: Path | None = None) -> list[Migration]:
    folder = folder or migrations_dir()
    found = []
    for path in sorted(folder.iterdir()):
        match = _MIGRATION_NAME.match(path.name)
        if match:
            found.append(Migration(int(match.group(1)), path.stem, path.read_text("utf-8")))
    numbers = [m.number for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise LedgerError(f"migrations in {folder} are not numbered 0001, 0002, ...: {numbers}")
    return found


@dataclass
class Row:
    """One ledger row as the runner sees it."""

    id: int
    line: int
    name: str
    first_name: str
    last_name: str
    email: str
    phone_number: str | None
    extension: str | None
    division: str | None
    division_id: str | None
    title: str | None
    department: str | None
    email_manager: str | None
    location_work: str | None
    status: str
    attempts: int
    in_doubt: int  # 0 clean; 1 a create may have been sent; 2 ... and a 409 was seen since
    user_id: str | None
    user_version: int | None
    settled_by: str | None
    settled_at: float | None
    user_state: str | None
    first_sent_at: float | None


_ROW_COLUMNS = ", ".join(f.name for f in fields(Row))
# What a file says about a person: the columns a re-ingest compares and may update.
INPUT_FIELDS = (
    "name",
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "extension",
    "division",
    "title",
    "department",
    "email_manager",
    "location_work",
    "roles_divisions",
    "queues",
    "skills",
)


# What comes after the create: the INPUT_FIELDS a create never sends.
PLAN_FIELDS = ("email_manager", "location_work", "roles_divisions", "queues", "skills")


def _row(values: Sequence[Any]) -> Row:
    return Row(*values)


@dataclass
class StepClaim:
    """One claimed step of one row: a role grant, a queue membership (target: the queue)."""

    row: Row
    kind: str
    target: str
    attempts: int


class Ledger:
    """An open ledger. Safe to share between threads: statements are serialised by a lock.

    Every SQLite failure leaves this class as a LedgerError that names the ledger and what
    to do (`describe_failure`); a ledger that another command holds (an ingest's one long
    transaction, say) is waited for, with a log line every WAIT_LOG_S, never given up on.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._lock = threading.RLock()
        self._depth = 0
        self._waiting_since: float | None = None

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> Ledger:
        """Open (and migrate) the ledger at `path`; create it there only if nothing is there.

        Anything at `path` that is not a jobrunner ledger (an empty file, another program's
        file or database) is refused and left exactly as it is.
        """
        path = Path(path)
        if not path.exists() and not path.is_symlink():
            if not create:
                raise LedgerError(
                    f"no ledger at {path}: run `jobrunner ingest FILE` first "
                    "(or point --db / JOBRUNNER_DB at your ledger)"
                )
            _create_new(path, lambda tmp: cls._connect(tmp, new=True))
        _check_is_ledger_file(path)
        return cls._connect(path)

    @classmethod
    def _connect(cls, path: Path, new: bool = False) -> Ledger:
        try:
            conn = sqlite3.connect(
                str(path),
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise describe_failure(path, exc, "open") from None
        ledger = cls(path, conn)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if not new:
                ledger._refuse_foreign_database()
            mode = ledger._wait_if_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
            mode = mode.fetchone()[0]
            if mode.lower() != "wal":
                raise LedgerError(f"cannot switch ledger {path} to WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            ledger.migrate()
        except sqlite3.Error as exc:
            conn.close()
            raise describe_failure(path, exc, "open") from None
        except BaseException:
            conn.close()
            raise
        return ledger

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _refuse_foreign_database(self) -> None:
        """Another program's SQLite file is left exactly as it is."""
        tables = [
            r[0]
            for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        if "schema_migrations" in tables:
            return
        if not tables:
            raise LedgerError(
                f"{self.path} is not a jobrunner ledger (an empty SQLite database); only a "
                "path where no file exists becomes a new ledger: point --db at one"
            )
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise LedgerError(
            f"{self.path} is not a jobrunner ledger (it is a SQLite file holding "
            f"{shown}); point --db at another file"
        )

    def quick_check(self) -> None:
        """SQLite's quick_check of the whole file: a damaged ledger is refused, not used."""
        with self._lock:
            try:
                found = [r[0] for r in self.conn.execute("PRAGMA quick_check(5)")]
            except sqlite3.Error as exc:
                raise describe_failure(self.path, exc) from None
        if found != ["ok"]:
            raise LedgerError(
                f"ledger {self.path} is damaged ({' '.join('; '.join(found).split())[:200]}): "
                "nothing was sent. "
                "Restore your last copy (`jobrunner backup` makes one), or ask for help before "
                "you run again"
            )

    def backup(self, dest: Path) -> None:
        """A self-contained copy (SQLite's backup API; safe while a run writes)."""
        try:
            target = sqlite3.connect(str(dest))
            try:
                with self._lock:
                    self.conn.backup(target)
                target.execute("PRAGMA journal_mode = DELETE")  # no -wal needed beside it
            finally:
                target.close()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot copy ledger {self.path} to {dest}: {exc}") from None

    # -- waiting and failing ---------------------------------------------------------------

    def _wait_if_busy(self, action: Callable[[], T]) -> T:
        """Run `action`; while another connection holds the write lock, wait and say so."""
        while True:
            try:
                result = action()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                self._note_waiting()
                continue
            if self._waiting_since is not None:
                waited = time.monotonic() - self._waiting_since
                self._waiting_since = None
                _log().info("ledger.available", ledger=str(self.path), waited_s=round(waited, 1))
            return result

    def _note_waiting(self) -> None:
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
            self._last_wait_log = now - WAIT_LOG_S
        if now - self._last_wait_log >= WAIT_LOG_S:
            self._last_wait_log = now
            _log().info(
                "ledger.waiting",
                ledger=str(self.path),
                waited_s=round(now - self._waiting_since, 1),
                detail="another jobrunner command (an ingest, say) is writing to the ledger; "
                "waiting for it",
            )

    # -- migrations ----------------------------------------------------------------------

    def applied_migrations(self) -> list[str]:
        exists = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        if not exists:
            return []
        return [r[0] for r in self.conn.execute("SELECT name FROM schema_migrations ORDER BY name")]

    def migrate(self, folder: Path | None = None) -> list[str]:
        """Apply pending migrations in order, each with its bookkeeping in one transaction."""
        with self._lock:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            known = available_migrations(folder)
            known_names = {m.name for m in known}
            applied = set(self.applied_migrations())
            newer = sorted(applied - known_names)
            if newer:
                raise LedgerError(
                    f"ledger {self.path} was written by a newer jobrunner (it has migration "
                    f"{newer[-1]}, this version knows up to {known[-1].name}): upgrade jobrunner"
                )
            done = []
            for migration in known:
                if migration.name in applied:
                    continue
                # executescript() commits any open transaction first, so the transaction is
                # part of the script; on failure it is rolled back and the step stays pending.
                script = (
                    "BEGIN IMMEDIATE;\n"
                    f"{migration.sql}\n;\n"
                    "INSERT INTO schema_migrations (name, applied_at) "
                    f"VALUES ('{migration.name}', '{utc_now_iso()}');\n"
                    "COMMIT;"
                )
                try:
                    self.conn.executescript(script)
                except sqlite3.Error as exc:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise LedgerError(f"migration {migration.name} failed: {exc}") from None
                done.append(migration.name)
            return done

    # -- transactions --------------------------------------------------------------------

    @contextmanager
    def transaction(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """Run a block in one transaction (nested calls join the outer one)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self.conn
                finally:
                    self._depth -= 1
                return
            begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"
            try:
                self._wait_if_busy(lambda: self.conn.execute(begin))
            except sqlite3.Error as exc:
                raise describe_failure(self.path, exc) from None
            self._depth = 1
            try:
                yield self.conn
                self.conn.execute("COMMIT")
            except BaseException as exc:
                if self.conn.in_transaction:
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the connection is gone; SQLite rolls back on the next open
                if isinstance(exc, sqlite3.Error):
                    raise describe_failure(self.path, exc) from None
                raise
            finally:
                self._depth = 0

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                if self._depth:
                    return self.conn.execute(sql, params)
                return self._wait_if_busy(lambda: self.conn.execute(sql, params))
            except sqlite3.Error as exc:
                raise describe_failure(self.path, exc) from None

    # -- ingest --------------------------------------------------------------------------

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
        marks = ", ".join("?" * len(emails))
        columns = ", ".join(f"rows.{c}" for c in INPUT_FIELDS)
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = sqlite3.Row
            cur.execute(
                "SELECT rows.email_norm, rows.id, rows.status, rows.line, sources.name AS source, "
                f"rows.in_doubt, rows.user_id, {columns} FROM rows "
                "JOIN sources ON sources.id = rows.source_id "
                f"WHERE email_norm IN ({marks}) AND rows.source_id != ? "
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
        marks = ", ".join("?" * len(emails))
        cur = self.execute(
            f"SELECT email_norm, min(line) FROM rows WHERE email_norm IN ({marks}) "
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
            marks = ", ".join("?" * len(emails))
            ids = dict(
                self.conn.execute(
                    f"SELECT email_norm, id FROM rows WHERE email_norm IN ({marks}) "
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
                "WHERE id = :row_id AND in_doubt = 0 AND user_id IS NULL AND status IN "
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

    # -- forget --------------------------------------------------------------------------

    def select_rows(
        self,
        emails: Sequence[str] = (),
        statuses: Sequence[str] = (),
        sources: Sequence[str] = (),
    ) -> list[dict[str, Any]]:
        """Rows matching every given filter (an empty filter matches all)."""
        where, params = _filters(emails, statuses, sources)
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
                marks = ", ".join("?" * len(chunk))
                removed += self.conn.execute(
                    f"DELETE FROM rows WHERE id IN ({marks}) AND in_doubt = 0 AND "
                    "user_id IS NULL AND status IN ('pending', 'failed', 'invalid')",
                    chunk,
                ).rowcount
        return removed

    # -- runner: recovery and set-up ---------------------------------------------------------

    def recover_abandoned(self) -> tuple[int, int, int]:
        """Rows and steps a dead runner left in_progress go back to pending.

        A row's in_doubt flag is kept: a row whose create may have been sent is looked up
        before it is created again (steps are safe to repeat). Returns (rows recovered, of
        which in doubt, steps recovered). Only call this while holding the run lock, when no
        other runner can be alive.
        """
        with self.transaction():
            rows = self.execute(
                "UPDATE rows SET status = 'pending', claim_owner = NULL, lease_expires_at = NULL, "
                "next_attempt_at = 0, updated_at = ? WHERE status = 'in_progress' "
                "RETURNING in_doubt",
                (utc_now_iso(),),
            ).fetchall()
            steps = self.execute(
                "UPDATE steps SET status = 'pending', claim_owner = NULL, lease_expires_at = NULL, "
                "updated_at = ? WHERE status = 'in_progress'",
                (utc_now_iso(),),
            ).rowcount
            # A new run starts afresh: backoffs scheduled by an earlier run are not waited out.
            self.execute("UPDATE rows SET next_attempt_at = 0 WHERE status = 'pending'")
            self.execute("UPDATE steps SET next_attempt_at = 0 WHERE status = 'pending'")
        return len(rows), sum(1 for (d,) in rows if d), steps

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
                    "updated_at = ? WHERE id = ? AND status = 'pending' AND in_doubt = 0 "
                    "AND user_id IS NULL",
                    (code, message, now, row_id),
                ).rowcount
                for row_id, (code, message) in problems.items()
            )

    def fail_steps(self, problems: dict[tuple[int, str, str], tuple[str, str]]) -> int:
        """Fail pending steps of people who exist that cannot be done (a name the org no
        longer knows). Steps of a row not created yet keep waiting with their row."""
        now = utc_now_iso()
        with self.transaction():
            return sum(
                self.execute(
                    "UPDATE steps SET status = 'failed', error_code = ?, error_message = ?, "
                    "updated_at = ? WHERE row_id = ? AND kind = ? AND target = ? "
                    "AND status = 'pending'",
                    (code, message, now, *key),
                ).rowcount
                for key, (code, message) in problems.items()
            )

    # -- runner: creates ---------------------------------------------------------------------

    def claim_next(self, owner: str, now: float, lease_s: float) -> Row | None:
        """Atomically take the next due pending row (BEGIN IMMEDIATE + UPDATE ... RETURNING).

        Managers first (rank), and a row never while its manager's row is being created or
        is due to be: a report follows its manager unless the manager's create is waiting
        out a backoff.
        """
        with self.transaction():
            found = self.execute(
                "UPDATE rows SET status = 'in_progress', claim_owner = ?, lease_expires_at = ?, "
                "updated_at = ? WHERE id = (SELECT r.id FROM rows AS r WHERE r.status = 'pending' "
                "AND r.next_attempt_at <= ? AND NOT EXISTS (SELECT 1 FROM rows AS m "
                "WHERE r.email_manager IS NOT NULL AND m.email_norm = r.email_manager "
                "AND m.rank < r.rank AND (m.status = 'in_progress' OR (m.status = 'pending' "
                "AND m.next_attempt_at <= ?))) ORDER BY r.rank, r.next_attempt_at, r.id LIMIT 1) "
                f"RETURNING {_ROW_COLUMNS}",
                (owner, now + lease_s, utc_now_iso(), now, now),
            ).fetchone()
        return _row(found) if found else None

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
        full: bool = False,
    ) -> bool:
        """Record a final outcome (created, exists, failed) the moment it is known; in the
        same transaction the row's waiting steps become `steps` (pending, due at
        `steps_due_at`, or skipped). `full`: a person brought in line with the file (already
        there, or restored): every field is a step too."""
        now = utc_now_iso()
        with self.transaction():
            cur = self.execute(
                "UPDATE rows SET status = ?, user_id = coalesce(?, user_id), "
                "user_version = coalesce(?, user_version), settled_by = coalesce(?, settled_by), "
                "user_state = coalesce(?, user_state), settled_at = coalesce(?, settled_at), "
                "in_doubt = ?, attempts = attempts + ?, error_code = ?, error_message = ?, "
                "claim_owner = NULL, lease_expires_at = NULL, updated_at = ? "
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
            if steps == "pending" and full:
                self._activate_steps(row_id, steps_due_at, now)
            elif steps is not None:
                self.execute(
                    "UPDATE steps SET status = ?, next_attempt_at = ?, updated_at = ? "
                    "WHERE row_id = ? AND status = 'waiting'",
                    (steps, steps_due_at, now, row_id),
                )
        return True

    def _activate_steps(self, row_id: int, due: float, now: str) -> None:
        """Bring a person who was already there (or restored) in line with the file: every
        step of the row becomes due, plus a division move and a profile of every field the
        file gives (title, department, phone, extension, manager, location)."""
        self.execute(
            "INSERT OR IGNORE INTO steps (row_id, kind, target, status, next_attempt_at, "
            "updated_at) SELECT id, 'division', '', 'pending', ?, ? FROM rows "
            "WHERE id = ? AND division IS NOT NULL",
            (due, now, row_id),
        )
        self.execute(
            "INSERT OR IGNORE INTO steps (row_id, kind, target, status, next_attempt_at, "
            "updated_at) SELECT id, 'profile', '', 'pending', ?, ? FROM rows WHERE id = ? AND "
            "coalesce(email_manager, location_work, title, department, phone_number, "
            "extension) IS NOT NULL",
            (due, now, row_id),
        )
        self.execute(
            "UPDATE steps SET status = 'pending', next_attempt_at = ?, updated_at = ? "
            "WHERE row_id = ? AND status IN ('waiting', 'skipped')",
            (due, now, row_id),
        )

    def plan_restores(self) -> int:
        """--restore-deleted: people found deleted by an earlier run are to be restored (the
        create step does it, without another create)."""
        return self.execute(
            "UPDATE rows SET status = 'pending', settled_by = 'restoring', attempts = 0, "
            "next_attempt_at = 0, error_message = NULL, updated_at = ? "
            "WHERE status = 'exists' AND user_state = 'deleted' AND user_id IS NOT NULL",
            (utc_now_iso(),),
        ).rowcount

    def plan_updates(self) -> int:
        """--update-existing: every person found already there (not deleted) gets the steps
        that bring them in line with the file. Steps already done stay done."""
        now = utc_now_iso()
        with self.transaction():
            ids = [
                r
                for (r,) in self.execute(
                    "SELECT id FROM rows WHERE status = 'exists' AND user_id IS NOT NULL AND "
                    "coalesce(user_state, 'active') != 'deleted' AND id IN (SELECT row_id FROM "
                    "steps WHERE status = 'skipped' UNION SELECT id FROM rows AS r WHERE "
                    "NOT EXISTS (SELECT 1 FROM steps WHERE row_id = r.id AND kind IN "
                    "('division', 'profile')))"
                ).fetchall()
            ]
            for row_id in ids:
                self._activate_steps(row_id, 0.0, now)
        return len(ids)

    def mark_restoring(self, row_id: int, owner: str, user_id: str) -> bool:
        """Committed before a deleted user is restored: the row now names that user, so a
        crash mid-restore is finished (or repeated) by the next run, never a new create."""
        cur = self.execute(
            "UPDATE rows SET user_id = ?, settled_by = 'restoring', user_state = 'deleted', "
            "updated_at = ? WHERE id = ? AND claim_owner = ? AND status = 'in_progress'",
            (user_id, utc_now_iso(), row_id, owner),
        )
        return cur.rowcount == 1

    # -- rollback ------------------------------------------------------------------------

    def rollback_candidates(
        self, sources: Sequence[str], emails: Sequence[str], failed_steps_only: bool
    ) -> list[dict[str, Any]]:
        """Rows whose user this ledger created (with how: create, lookup, restore)."""
        where, params = _filters(emails, (), sources)
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

    def plan_rollback(self, row_ids: Sequence[int]) -> int:
        """A `rollback` step for each of these rows (a crash mid-rollback resumes them)."""
        now = utc_now_iso()
        with self.transaction():
            return sum(
                self.execute(
                    "INSERT INTO steps (row_id, kind, target, status, updated_at) "
                    "VALUES (?, 'rollback', '', 'pending', ?) ON CONFLICT DO UPDATE SET "
                    "status = 'pending', attempts = 0, next_attempt_at = 0 "
                    "WHERE status = 'failed'",
                    (row_id, now),
                ).rowcount
                for row_id in row_ids
            )

    def pending_rollbacks(self) -> int:
        (n,) = self.execute(
            "SELECT count(*) FROM steps WHERE kind = 'rollback' AND status IN "
            "('pending', 'in_progress')"
        ).fetchone()
        return int(n)

    def finish_rollback(self, claims: Sequence[StepClaim], owner: str, detail: str) -> int:
        """The users are gone: the rows become rolled_back and their other steps stop."""
        now = utc_now_iso()
        with self.transaction():
            done = self.finish_steps(claims, owner, "done", detail=detail)
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
        return done

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

    def attempts_of(self, row_id: int) -> int:
        return int(self.execute("SELECT attempts FROM rows WHERE id = ?", (row_id,)).fetchone()[0])

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
            "error_message = coalesce(?, error_message), claim_owner = NULL, "
            "lease_expires_at = NULL, updated_at = ? "
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

    def exists_without_id(self, limit: int = 10_000) -> list[Row]:
        """`exists` rows without the id of the person who was there: a stopped run never
        looked it up, or the search did not show the person (yet)."""
        cur = self.execute(
            f"SELECT {_ROW_COLUMNS} FROM rows WHERE status = 'exists' AND user_id IS NULL "
            "ORDER BY id LIMIT ?",
            (limit,),
        )
        return [_row(r) for r in cur.fetchall()]

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

    def release_all(self, owner: str) -> int:
        """On shutdown: whatever this owner still holds goes back to pending (doubt kept)."""
        now = utc_now_iso()
        with self.transaction():
            rows = self.execute(
                "UPDATE rows SET status = 'pending', claim_owner = NULL, lease_expires_at = NULL, "
                "updated_at = ? WHERE status = 'in_progress' AND claim_owner = ?",
                (now, owner),
            ).rowcount
            steps = self.execute(
                "UPDATE steps SET status = 'pending', claim_owner = NULL, "
                "lease_expires_at = NULL, updated_at = ? "
                "WHERE status = 'in_progress' AND claim_owner = ?",
                (now, owner),
            ).rowcount
        return rows + steps

    # -- runner: steps -----------------------------------------------------------------------

    def claim_steps(
        self, kind: str, owner: str, now: float, lease_s: float, limit: int = 1
    ) -> list[StepClaim]:
        """Take up to `limit` due steps of one kind whose user exists. A profile step waits
        while its manager's row is still to be created."""
        # A manager still to be created, or found there before with the id look-up under
        # way (no id, no note yet): the report's profile waits.
        waits_for_manager = (
            " AND NOT EXISTS (SELECT 1 FROM rows AS m WHERE r.email_manager IS NOT NULL "
            "AND m.email_norm = r.email_manager AND (m.status IN ('pending', 'in_progress') "
            "OR (m.status = 'exists' AND m.user_id IS NULL AND m.error_message IS NULL)))"
            if kind == "profile"
            else ""
        )
        with self.transaction():
            claimed = self.execute(
                "UPDATE steps SET status = 'in_progress', claim_owner = ?, lease_expires_at = ?, "
                "updated_at = ? WHERE rowid IN (SELECT s.rowid FROM steps AS s "
                "JOIN rows AS r ON r.id = s.row_id WHERE s.kind = ? AND s.status = 'pending' "
                f"AND s.next_attempt_at <= ? AND r.user_id IS NOT NULL{waits_for_manager} "
                "ORDER BY s.next_attempt_at, s.row_id LIMIT ?) "
                "RETURNING row_id, kind, target, attempts",
                (owner, now + lease_s, utc_now_iso(), kind, now, limit),
            ).fetchall()
            return self._step_claims(claimed)

    def claim_queue_batch(
        self, owner: str, now: float, lease_s: float, size: int
    ) -> list[StepClaim]:
        """Up to `size` due members of one queue, across rows: a full batch when one is
        ready, else the last of a queue once no more members can come (no row that wants it
        is still to be created, none of its members is waiting out a delay)."""
        with self.transaction():
            ready = self.execute(
                "SELECT s.target, count(*) FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
                "WHERE s.kind = 'queue' AND s.status = 'pending' AND s.next_attempt_at <= ? "
                "AND r.user_id IS NOT NULL GROUP BY s.target ORDER BY count(*) DESC",
                (now,),
            ).fetchall()
            for target, count in ready:
                if count < size and self._more_members_coming(target, now):
                    continue
                claimed = self.execute(
                    "UPDATE steps SET status = 'in_progress', claim_owner = ?, "
                    "lease_expires_at = ?, updated_at = ? WHERE rowid IN (SELECT s.rowid "
                    "FROM steps AS s JOIN rows AS r ON r.id = s.row_id WHERE s.kind = 'queue' "
                    "AND s.target = ? AND s.status = 'pending' AND s.next_attempt_at <= ? "
                    "AND r.user_id IS NOT NULL ORDER BY s.next_attempt_at, s.row_id LIMIT ?) "
                    "RETURNING row_id, kind, target, attempts",
                    (owner, now + lease_s, utc_now_iso(), target, now, size),
                ).fetchall()
                return self._step_claims(claimed)
        return []

    def _more_members_coming(self, target: str, now: float) -> bool:
        (later,) = self.execute(
            "SELECT EXISTS (SELECT 1 FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
            "WHERE s.kind = 'queue' AND s.target = ? AND ((s.status = 'pending' "
            "AND s.next_attempt_at > ?) OR (s.status = 'waiting' AND r.status IN "
            "('pending', 'in_progress'))))",
            (target, now),
        ).fetchone()
        return bool(later)

    def _step_claims(self, claimed: list[tuple[Any, ...]]) -> list[StepClaim]:
        if not claimed:
            return []
        ids = sorted({c[0] for c in claimed})
        marks = ", ".join("?" * len(ids))
        rows = {
            r[0]: _row(r)
            for r in self.execute(f"SELECT {_ROW_COLUMNS} FROM rows WHERE id IN ({marks})", ids)
        }
        return [
            StepClaim(rows[row_id], kind, target, attempts)
            for row_id, kind, target, attempts in claimed
        ]

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
                f"UPDATE steps SET {assignments}, claim_owner = NULL, lease_expires_at = NULL, "
                "updated_at = ? WHERE row_id = ? AND kind = ? AND target = ? "
                "AND claim_owner = ? AND status = 'in_progress'",
                [(*values, now, c.row.id, c.kind, c.target, owner) for c in claims],
            ).rowcount

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

    def set_user_version(self, row_id: int, version: int) -> None:
        self.execute("UPDATE rows SET user_version = ? WHERE id = ?", (version, row_id))

    def wants_of(self, row_id: int, kind: str) -> list[tuple[str, str, str | None, float | None]]:
        """(name, name key, division, proficiency) of what a row asks for, in file order."""
        return self.execute(
            "SELECT name, name_key, division, proficiency FROM wants "
            "WHERE row_id = ? AND kind = ? ORDER BY position",
            (row_id, kind),
        ).fetchall()

    def manager_row(self, email: str) -> dict[str, Any] | None:
        """The live row of a manager who is a person of this ledger, if one is."""
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = sqlite3.Row
            found = cur.execute(
                "SELECT rows.id, rows.line, rows.status, rows.user_id, rows.error_message, "
                "sources.name AS source FROM rows JOIN sources ON sources.id = rows.source_id "
                "WHERE email_norm = ? AND status != 'invalid'",
                (email.strip().lower(),),
            ).fetchone()
        return dict(found) if found else None

    def work_left(
        self, kinds: Sequence[str] = RUN_STEPS, rows: bool = True
    ) -> tuple[int, float | None]:
        """(rows and steps of these kinds still to do, earliest time one of them is due).

        Steps of a row whose create failed are not work (they wait for --retry-failed)."""
        left, due = 0, []
        if rows:
            left, rows_due = self.execute(
                "SELECT count(*), min(CASE WHEN status = 'pending' THEN next_attempt_at END) "
                "FROM rows WHERE status IN ('pending', 'in_progress')"
            ).fetchone()
            due.append(rows_due)
        marks = ", ".join("?" * len(kinds))
        steps, steps_due = self.execute(
            "SELECT count(*), min(CASE WHEN s.status = 'pending' THEN s.next_attempt_at END) "
            f"FROM steps AS s JOIN rows AS r ON r.id = s.row_id WHERE s.kind IN ({marks}) AND "
            "(s.status IN ('pending', 'in_progress') OR (s.status = 'waiting' AND r.status IN "
            "('pending', 'in_progress')))",
            list(kinds),
        ).fetchone()
        due.append(steps_due)
        known = [d for d in due if d is not None]
        return left + steps, (min(known) if known else None)

    def steps_left(self) -> dict[str, int]:
        """Steps still to do, by kind (for the progress line and the ETA)."""
        return dict(
            self.execute(
                "SELECT s.kind, count(*) FROM steps AS s JOIN rows AS r ON r.id = s.row_id "
                "WHERE s.kind != 'rollback' AND (s.status IN ('pending', 'in_progress') OR "
                "(s.status = 'waiting' AND r.status IN ('pending', 'in_progress'))) "
                "GROUP BY s.kind"
            ).fetchall()
        )

    # -- runner: names -------------------------------------------------------------------------

    def names_in_use(self, row_ids: Sequence[int] | None = None) -> list[tuple[Any, ...]]:
        """Every name the rows with work left (or these rows) use: (kind, name as written,
        row id, source, line). Kinds: division, role, queue, skill, location, manager. Keys
        are made by the caller (SQLite's lower() knows only ASCII)."""
        if row_ids is None:
            which = (
                "(rows.status IN ('pending', 'in_progress') OR rows.id IN (SELECT row_id FROM "
                "steps WHERE status IN ('pending', 'in_progress', 'waiting')))"
            )
            params: list[Any] = []
        else:
            which = f"rows.id IN ({', '.join('?' * len(row_ids))})"
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

    def save_names(self, entries: Sequence[tuple[str, str, str, str | None, str | None]]) -> None:
        """Cache what a resolution found: (kind, key, name, object id, problem)."""
        now = utc_now_iso()
        with self.transaction():
            self.conn.executemany(
                "INSERT INTO names (kind, name_key, name, object_id, problem, resolved_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (kind, name_key) DO UPDATE SET "
                "name = excluded.name, object_id = excluded.object_id, "
                "problem = excluded.problem, resolved_at = excluded.resolved_at",
                [(*e, now) for e in entries],
            )

    def record_run_start(self, owner: str, pid: int, host: str, now: float) -> None:
        self.execute(
            "INSERT INTO runners (id, pid, host, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)",
            (owner, pid, host, utc_now_iso(), now),
        )

    def record_run_heartbeat(self, owner: str, now: float) -> None:
        self.execute("UPDATE runners SET heartbeat_at = ? WHERE id = ?", (now, owner))

    # -- report --------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self.execute("SELECT status, count(*) FROM rows GROUP BY status"):
            counts[status] = n
        return counts

    def iter_report_rows(
        self, statuses: Sequence[str] | None = None, failed_steps: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Every row (or those with these statuses, and with `failed_steps` those with a
        failed step too) with its source's name and its steps as (kind, target, status,
        error) tuples, streamed a thousand at a time."""
        sql = (
            "SELECT sources.name AS source, rows.* FROM rows "
            "JOIN sources ON sources.id = rows.source_id"
        )
        params: list[Any] = []
        if statuses:
            sql += f" WHERE (rows.status IN ({', '.join('?' * len(statuses))})"
            params.extend(statuses)
            if failed_steps:
                sql += " OR rows.id IN (SELECT row_id FROM steps WHERE status = 'failed')"
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
        marks = ", ".join("?" * len(row_ids))
        for row_id, *step in self.execute(
            "SELECT row_id, kind, target, status, error_message, detail FROM steps "
            f"WHERE row_id IN ({marks}) AND {_PLANNED} ORDER BY row_id, rowid",
            row_ids,
        ).fetchall():
            found.setdefault(row_id, []).append(tuple(step))
        return found

    def widest_email(self, statuses: Sequence[str], failed_steps: bool = False) -> int:
        """The longest email among the rows a table will show (it shows them whole)."""
        marks = ", ".join("?" * len(statuses))
        extra = " OR id IN (SELECT row_id FROM steps WHERE status = 'failed')"
        (width,) = self.execute(
            "SELECT coalesce(max(length(email)), 0) FROM rows WHERE status IN "
            f"({marks}){extra if failed_steps else ''}",
            list(statuses),
        ).fetchone()
        return int(width)

    def step_counts(self) -> list[tuple[str, str, int]]:
        return self.execute(
            f"SELECT kind, status, count(*) FROM steps WHERE {_PLANNED} "
            "GROUP BY kind, status ORDER BY kind"
        ).fetchall()

    def settled_counts(self) -> dict[tuple[str, str], int]:
        """(status, settled_by) -> rows: how created and exists rows were settled."""
        return {
            (status, by): n
            for status, by, n in self.execute(
                "SELECT status, settled_by, count(*) FROM rows WHERE settled_by IS NOT NULL "
                "GROUP BY status, settled_by"
            )
        }

    def sources(self) -> list[dict[str, Any]]:
        cur = self.conn.cursor()
        cur.row_factory = sqlite3.Row
        return [dict(r) for r in cur.execute("SELECT * FROM sources ORDER BY id")]


# The steps a report shows. A waiting step of a row that will not be created (failed or
# invalid before its create, rolled back) is no work to do and is left out; it stays in the
# ledger, so the row has its plan again when `run --retry-failed` or an ingest revives it.
_PLANNED = (
    "NOT (steps.status = 'waiting' AND (SELECT status FROM rows WHERE rows.id = steps.row_id) "
    "NOT IN ('pending', 'in_progress'))"
)


def _filters(
    emails: Sequence[str], statuses: Sequence[str], sources: Sequence[str]
) -> tuple[str, list[Any]]:
    clauses, params = [], []
    for column, values in (
        ("rows.email_norm", [e.strip().lower() for e in emails]),
        ("rows.status", list(statuses)),
        ("sources.name", list(sources)),
    ):
        if values:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text


def describe_failure(path: Path | str, exc: BaseException, action: str = "") -> LedgerError:
    """One line naming the ledger, what went wrong, and what to do; never "internal error"."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    err = getattr(exc, "errno", None)
    where = f"ledger {path}"
    if name.startswith("SQLITE_FULL") or "is full" in text or err == errno.ENOSPC:
        free = _free_space(Path(path))
        return LedgerError(
            f"{where}: the disk is full{free}: free some space and run the command again "
            "(every outcome recorded so far is kept)"
        )
    if (
        name.startswith(("SQLITE_READONLY",))
        or "readonly" in text
        or err
        in (
            errno.EROFS,
            errno.EACCES,
            errno.EPERM,
        )
    ):
        return LedgerError(
            f"{where} cannot be written ({text}): the file and its folder must be writable "
            "(SQLite writes a -wal and a -shm file beside it), on a file system mounted "
            "read-write"
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text:
        return LedgerError(
            f"{where} is damaged ({text}): restore your last copy (`jobrunner backup` makes "
            "one) and run again"
        )
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text or err == errno.EIO:
        return LedgerError(
            f"{where}: disk I/O error ({text}): check the disk and that the ledger's folder is "
            "still there, then run again (outcomes committed before this are kept)"
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return LedgerError(
            f"cannot {action or 'open'} {where} ({text}): check that its folder exists and is "
            "writable"
        )
    if _is_busy(exc) if isinstance(exc, sqlite3.OperationalError) else False:
        return LedgerError(
            f"{where} is locked by another program: close it (a database browser?) and run again"
        )
    return LedgerError(f"{where}: {text}")


def _free_space(path: Path) -> str:
    try:
        free = shutil.disk_usage(path.parent if path.parent.exists() else ".").free
    except OSError:
        return ""
    return f" ({free / 1e6:,.1f} MB free on its disk)"


def free_bytes(path: Path) -> int | None:
    """Free space on the ledger's disk, or None when it cannot be told."""
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return None


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_is_ledger_file(path: Path) -> None:
    """Refuse what cannot be a ledger before SQLite touches it (it would write into an empty
    file, and recover or discard a -wal beside it)."""
    if path.is_dir():
        raise LedgerError(f"{path} is a folder, not a ledger file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc.strerror}") from None
    if not head:
        wal = Path(f"{path}-wal")
        beside = (
            f"; {wal.name} beside it holds data: the ledger's main file was lost or emptied, "
            "so restore your last copy"
            if wal.exists() and wal.stat().st_size
            else ""
        )
        raise LedgerError(
            f"{path} is an empty file, not a jobrunner ledger{beside}; only a path where no "
            "file exists becomes a new ledger (it was left as it is)"
        )
    if head != _SQLITE_MAGIC:
        raise LedgerError(f"{path} is not a jobrunner ledger (not a SQLite database)")


def _create_new(path: Path, connect: Callable[[Path], Ledger]) -> None:
    """Build a new ledger beside `path` and move it into place in one step, so `path` is
    never an empty or half-made ledger, and a failure leaves nothing behind."""
    made = _make_folders(path.parent)
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _create_private_file(tmp)
        connect(tmp).close()  # migrated, checkpointed: the -wal is gone on close
        try:
            os.link(tmp, path)  # fails if another command made a ledger there meanwhile
        except FileExistsError:
            pass
        except OSError as exc:
            raise describe_failure(path, exc, "create") from None
    except BaseException:
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    finally:
        remove_ledger_files(tmp)


def remove_ledger_files(path: Path | None, folders: Sequence[Path] = ()) -> None:
    """A ledger this command itself created: the file, its -wal and -shm, and the `folders`
    made for it (innermost first, each only if empty)."""
    if path is None:
        return
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            Path(f"{path}{suffix}").unlink()
        except OSError:
            pass  # gone already, or nothing more we can do: the caller reports the failure
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


def missing_folders(folder: Path) -> list[Path]:
    """The folders from `folder` up that do not exist yet, innermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    return missing


def _make_folders(folder: Path) -> list[Path]:
    """Create the missing folders up to `folder`, 0700 (a ledger holds personal data)."""
    made = []
    for each in reversed(missing_folders(folder)):
        try:
            each.mkdir(mode=0o700)
            made.append(each)
        except FileExistsError:
            pass
        except OSError as exc:
            raise LedgerError(f"cannot create ledger folder {each}: {exc.strerror}") from None
    return made


def _create_private_file(path: Path) -> None:
    """Create the ledger file 0600: it holds personal data."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except OSError as exc:
        raise describe_failure(path, exc, "create") from None
