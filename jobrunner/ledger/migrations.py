"""The ledger's schema: migrations/NNNN_*.sql, applied in order when a ledger is opened.

Forward-only: each file is applied with its bookkeeping in one transaction, so a failed one
stays pending; a file is never edited once released. A ledger written by a newer jobrunner
(one that has a migration this version does not know) is refused.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from jobrunner.errors import LedgerError
from jobrunner.resources import migrations_dir

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


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


def applied(conn: sqlite3.Connection) -> list[str]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        return []
    return [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]


def apply(conn: sqlite3.Connection, path: Path, folder: Path | None = None) -> list[str]:
    """Apply the pending migrations in order; the names of those applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    known = available_migrations(folder)
    known_names = {m.name for m in known}
    done_before = set(applied(conn))
    newer = sorted(done_before - known_names)
    if newer:
        raise LedgerError(
            f"ledger {path} was written by a newer jobrunner (it has migration "
            f"{newer[-1]}, this version knows up to {known[-1].name}): upgrade jobrunner"
        )
    done = []
    for migration in known:
        if migration.name in done_before:
            continue
        # executescript() commits any open transaction first, so the transaction is part of
        # the script; on failure it is rolled back and the migration stays pending.
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        script = (
            "BEGIN IMMEDIATE;\n"
            f"{migration.sql}\n;\n"
            "INSERT INTO schema_migrations (name, applied_at) "
            f"VALUES ('{migration.name}', '{now.replace('+00:00', 'Z')}');\n"
            "COMMIT;"
        )
        try:
            conn.executescript(script)
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise LedgerError(f"migration {migration.name} failed: {exc}") from None
        done.append(migration.name)
    return done
