"""The ledger: the only module that talks SQL.

A SQLite file in WAL mode with synchronous=FULL, so an outcome that was committed survives a
crash or a power cut. Every multi-step write goes through `Ledger.transaction()`; claims take
the write lock up front (BEGIN IMMEDIATE) and use one UPDATE ... RETURNING.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jobrunner.errors import LedgerError
from jobrunner.resources import migrations_dir

STATUSES = ("pending", "in_progress", "created", "exists", "failed", "invalid")

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
BUSY_TIMEOUT_MS = 10_000


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
    first_name: str
    last_name: str
    email: str
    phone_number: str | None
    division_id: str | None
    title: str | None
    department: str | None
    status: str
    attempts: int
    in_doubt: int  # 0 clean; 1 a create may have been sent; 2 ... and a 409 was seen since
    user_id: str | None

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}"


_ROW_COLUMNS = (
    "id, line, first_name, last_name, email, phone_number, division_id, title, department, "
    "status, attempts, in_doubt, user_id"
)


def _row(values: Sequence[Any]) -> Row:
    return Row(*values)


class Ledger:
    """An open ledger. Safe to share between threads: statements are serialised by a lock."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self._lock = threading.RLock()
        self._depth = 0

    # -- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path | str, *, create: bool = True) -> Ledger:
        """Open (and create, and migrate) the ledger at `path`."""
        path = Path(path)
        if not path.exists():
            if not create:
                raise LedgerError(
                    f"no ledger at {path}: run `jobrunner ingest FILE` first "
                    "(or point --db / JOBRUNNER_DB at your ledger)"
                )
            _create_private_file(path)
        elif path.is_dir():
            raise LedgerError(f"{path} is a folder, not a ledger file")
        try:
            conn = sqlite3.connect(
                str(path),
                isolation_level=None,
                check_same_thread=False,
                timeout=BUSY_TIMEOUT_MS / 1000,
            )
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from None
        ledger = cls(path, conn)
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            ledger._refuse_foreign_database()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise LedgerError(f"cannot switch ledger {path} to WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            ledger.migrate()
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise LedgerError(
                    f"{path} is not a jobrunner ledger (not a SQLite database)"
                ) from None
            raise LedgerError(f"cannot open ledger {path}: {exc}") from None
        except LedgerError:
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
        if tables and "schema_migrations" not in tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise LedgerError(
                f"{self.path} is not a jobrunner ledger (it is a SQLite file holding "
                f"{shown}); point --db at another file"
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
            self.conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            self._depth = 1
            try:
                yield self.conn
            except BaseException:
                self._depth = 0
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise
            else:
                self._depth = 0
                self.conn.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.conn.execute(sql, params)

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
    ) -> dict[str, tuple[int, str, int, str]]:
        """The rows of earlier ingests holding these people: email_norm -> (row id, status,
        line, source name); a live row wins over an invalid one, then the oldest."""
        found: dict[str, tuple[int, str, int, str]] = {}
        if not emails:
            return found
        marks = ", ".join("?" * len(emails))
        cur = self.execute(
            "SELECT rows.email_norm, rows.id, rows.status, rows.line, sources.name FROM rows "
            "JOIN sources ON sources.id = rows.source_id "
            f"WHERE email_norm IN ({marks}) AND rows.source_id != ? "
            "ORDER BY rows.status = 'invalid' DESC, rows.id DESC",
            (*emails, exclude_source),
        )
        # Ordered so that the row that wins comes last and overwrites the others.
        for email_norm, *rest in cur:
            found[email_norm] = tuple(rest)  # type: ignore[assignment]
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
    ) -> tuple[int, str, int, str] | None:
        """The row read from this line of a file with these exact bytes, in an earlier ingest."""
        return self.execute(
            "SELECT rows.id, rows.status, rows.line, sources.name FROM rows "
            "JOIN sources ON sources.id = rows.source_id "
            "WHERE sources.sha256 = ? AND rows.line = ? AND rows.source_id != ? LIMIT 1",
            (sha256, line, exclude_source),
        ).fetchone()

    def insert_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        now = utc_now_iso()
        self.conn.executemany(
            "INSERT INTO rows (source_id, line, first_name, last_name, email, email_norm, "
            "phone_number, division_id, title, department, status, error_code, error_message, "
            "created_at, updated_at) VALUES (:source_id, :line, :first_name, :last_name, :email, "
            ":email_norm, :phone_number, :division_id, :title, :department, :status, "
            ":error_code, :error_message, '" + now + "', '" + now + "')",
            rows,
        )

    def replace_invalid_row(self, row_id: int, values: dict[str, Any]) -> None:
        """A corrected file brings a valid version of a row that was invalid: it takes its place."""
        self.execute(
            "UPDATE rows SET source_id = :source_id, line = :line, first_name = :first_name, "
            "last_name = :last_name, email = :email, email_norm = :email_norm, "
            "phone_number = :phone_number, division_id = :division_id, title = :title, "
            "department = :department, status = 'pending', error_code = NULL, "
            "error_message = NULL, attempts = 0, next_attempt_at = 0, in_doubt = 0, "
            "updated_at = :now WHERE id = :row_id AND status = 'invalid'",
            {**values, "row_id": row_id, "now": utc_now_iso()},
        )

    # -- runner --------------------------------------------------------------------------

    def recover_abandoned(self) -> tuple[int, int]:
        """Rows a dead runner left in_progress go back to pending.

        Their in_doubt flag is kept: a row whose create may have been sent is looked up
        before it is created again. Returns (rows recovered, of which in doubt). Only call
        this while holding the run lock, when no other runner can be alive.
        """
        with self.transaction():
            rows = self.execute(
                "UPDATE rows SET status = 'pending', claim_owner = NULL, lease_expires_at = NULL, "
                "next_attempt_at = 0, updated_at = ? WHERE status = 'in_progress' "
                "RETURNING in_doubt",
                (utc_now_iso(),),
            ).fetchall()
            # A new run starts afresh: backoffs scheduled by an earlier run are not waited out.
            self.execute("UPDATE rows SET next_attempt_at = 0 WHERE status = 'pending'")
        return len(rows), sum(1 for (d,) in rows if d)

    def requeue_failed(self) -> int:
        """--retry-failed: failed rows go back to the queue with fresh attempts."""
        cur = self.execute(
            "UPDATE rows SET status = 'pending', attempts = 0, next_attempt_at = 0, "
            "updated_at = ? WHERE status = 'failed'",
            (utc_now_iso(),),
        )
        return cur.rowcount

    def claim_next(self, owner: str, now: float, lease_s: float) -> Row | None:
        """Atomically take the next due pending row (BEGIN IMMEDIATE + UPDATE ... RETURNING)."""
        with self.transaction():
            found = self.execute(
                "UPDATE rows SET status = 'in_progress', claim_owner = ?, lease_expires_at = ?, "
                "updated_at = ? WHERE id = (SELECT id FROM rows WHERE status = 'pending' "
                "AND next_attempt_at <= ? ORDER BY next_attempt_at, id LIMIT 1) "
                f"RETURNING {_ROW_COLUMNS}",
                (owner, now + lease_s, utc_now_iso(), now),
            ).fetchone()
        return _row(found) if found else None

    def queue_state(self, owner: str) -> tuple[int, float | None, int]:
        """(pending rows, earliest next_attempt_at among them, rows this owner holds)."""
        pending, due = self.execute(
            "SELECT count(*), min(next_attempt_at) FROM rows WHERE status = 'pending'"
        ).fetchone()
        (held,) = self.execute(
            "SELECT count(*) FROM rows WHERE status = 'in_progress' AND claim_owner = ?", (owner,)
        ).fetchone()
        return pending, due, held

    def mark_attempt(self, row_id: int, owner: str) -> bool:
        """Committed before a create is sent: from now on the person may exist."""
        cur = self.execute(
            "UPDATE rows SET attempts = attempts + 1, in_doubt = 1, updated_at = ? "
            "WHERE id = ? AND claim_owner = ? AND status = 'in_progress'",
            (utc_now_iso(), row_id, owner),
        )
        return cur.rowcount == 1

    def finish(
        self,
        row_id: int,
        owner: str,
        status: str,
        *,
        user_id: str | None = None,
        in_doubt: int = 0,
        error_code: str | None = None,
        error_message: str | None = None,
        count_attempt: bool = False,
    ) -> bool:
        """Record a final outcome (created, exists, failed) the moment it is known."""
        cur = self.execute(
            "UPDATE rows SET status = ?, user_id = coalesce(?, user_id), in_doubt = ?, "
            "attempts = attempts + ?, error_code = ?, error_message = ?, claim_owner = NULL, "
            "lease_expires_at = NULL, updated_at = ? "
            "WHERE id = ? AND claim_owner = ? AND status = 'in_progress'",
            (
                status,
                user_id,
                int(in_doubt),
                int(count_attempt),
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
        """`exists` rows whose id look-up a stopped run never finished (it leaves a note when
        it does, found or not)."""
        cur = self.execute(
            f"SELECT {_ROW_COLUMNS} FROM rows WHERE status = 'exists' AND user_id IS NULL "
            "AND error_message IS NULL ORDER BY id LIMIT ?",
            (limit,),
        )
        return [_row(r) for r in cur.fetchall()]

    def set_user_id(self, row_id: int, user_id: str | None, note: str | None) -> None:
        """Add what a look-up found to a row that is already settled."""
        self.execute(
            "UPDATE rows SET user_id = coalesce(?, user_id), error_message = ?, updated_at = ? "
            "WHERE id = ? AND status = 'exists'",
            (user_id, note, utc_now_iso(), row_id),
        )

    def release_all(self, owner: str) -> int:
        """On shutdown: whatever this owner still holds goes back to pending (doubt kept)."""
        cur = self.execute(
            "UPDATE rows SET status = 'pending', claim_owner = NULL, lease_expires_at = NULL, "
            "updated_at = ? WHERE status = 'in_progress' AND claim_owner = ?",
            (utc_now_iso(), owner),
        )
        return cur.rowcount

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

    def iter_report_rows(self, statuses: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        sql = (
            "SELECT sources.name AS source, rows.line, rows.email, rows.first_name, "
            "rows.last_name, rows.phone_number, rows.division_id, rows.title, rows.department, "
            "rows.status, rows.user_id, rows.attempts, rows.error_code, rows.error_message, "
            "rows.updated_at FROM rows JOIN sources ON sources.id = rows.source_id"
        )
        params: list[Any] = []
        if statuses:
            sql += f" WHERE rows.status IN ({', '.join('?' * len(statuses))})"
            params.extend(statuses)
        sql += " ORDER BY rows.source_id, rows.line, rows.id"
        with self._lock:
            cur = self.conn.cursor()
            cur.row_factory = sqlite3.Row
            cur.execute(sql, params)
            rows = cur.fetchmany(1000)
        while rows:
            for r in rows:
                yield dict(r)
            with self._lock:
                rows = cur.fetchmany(1000)

    def sources(self) -> list[dict[str, Any]]:
        cur = self.conn.cursor()
        cur.row_factory = sqlite3.Row
        return [dict(r) for r in cur.execute("SELECT * FROM sources ORDER BY id")]


def _create_private_file(path: Path) -> None:
    """Create the ledger file 0600, and any folder we create for it 0700: it holds PII."""
    parent = path.parent
    missing = []
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise LedgerError(f"cannot create ledger folder {folder}: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        pass
    except OSError as exc:
        raise LedgerError(f"cannot create ledger {path}: {exc.strerror}") from None
