"""The ledger's file: open it (only a path where nothing exists becomes a new ledger), check
it, copy it, wait for another command holding it, and run every write in a transaction.

A SQLite file in WAL mode with synchronous=FULL, so an outcome that was committed survives a
crash or a power cut. Every multi-step write goes through `Store.transaction()`; claims take
the write lock up front (BEGIN IMMEDIATE) and use one UPDATE ... RETURNING. Every SQLite
failure leaves here as a LedgerError that names the ledger and what to do.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from jobrunner.errors import LedgerError
from jobrunner.ledger import migrations

BUSY_TIMEOUT_MS = 10_000
WAIT_LOG_S = 10.0  # while another command holds the ledger: say so this often
T = TypeVar("T")
S = TypeVar("S", bound="Store")


def _log() -> Any:
    from jobrunner.log import get_logger

    return get_logger("jobrunner.ledger")


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Store:
    """An open ledger file. Safe to share between threads: statements are serialised by a lock.

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
    def open(cls: type[S], path: Path | str, *, create: bool = True) -> S:
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
            create_new(path, lambda tmp: cls._connect(tmp, new=True))
        check_is_ledger_file(path)
        return cls._connect(path)

    @classmethod
    def _connect(cls: type[S], path: Path, new: bool = False) -> S:
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

    def __enter__(self: S) -> S:
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
        return migrations.applied(self.conn)

    def migrate(self, folder: Path | None = None) -> list[str]:
        """Apply pending migrations in order, each with its bookkeeping in one transaction."""
        with self._lock:
            return migrations.apply(self.conn, self.path, folder)

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


def check_is_ledger_file(path: Path) -> None:
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


def create_new(path: Path, connect: Callable[[Path], Any]) -> None:
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
