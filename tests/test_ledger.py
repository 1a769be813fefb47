"""The ledger file: migrations, durability settings, refusals, file modes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from jobrunner.errors import LedgerError
from jobrunner.ledger import Ledger, available_migrations


def test_migrations_on_an_empty_ledger_then_again(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger.open(path) as ledger:
        names = [m.name for m in available_migrations()]
        assert ledger.applied_migrations() == names
        tables = {r[0] for r in ledger.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"rows", "sources", "wants", "steps", "schema_migrations"} <= tables
        assert not {"runners", "names"} & tables  # written and never read: dropped by 0003
    with Ledger.open(path) as ledger:  # already migrated: nothing to do, nothing breaks
        assert ledger.migrate() == []
        assert ledger.applied_migrations() == names


def test_durability_settings(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        assert ledger.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ledger.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert ledger.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_new_files_and_folders_are_private(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "l.db"
    Ledger.open(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "a" / "b").stat().st_mode & 0o777 == 0o700


def test_a_ledger_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    Ledger.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES ('9999_from_the_future', 'x')")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerError, match="newer jobrunner.*9999_from_the_future.*upgrade"):
        Ledger.open(path)


def test_a_failed_migration_stays_pending_and_changes_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_one.sql").write_text("CREATE TABLE one (x);")
    (folder / "0002_two.sql").write_text("CREATE TABLE two (x); INSERT INTO nope VALUES (1);")
    path = tmp_path / "l.db"
    ledger = Ledger.open(path)  # the real migrations
    ledger.conn.execute("DELETE FROM schema_migrations")
    with pytest.raises(LedgerError, match="migration 0002_two failed"):
        ledger.migrate(folder)
    applied = ledger.applied_migrations()
    assert "0001_one" in applied and "0002_two" not in applied
    tables = {r[0] for r in ledger.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "two" not in tables and "one" in tables
    assert not ledger.conn.in_transaction
    ledger.close()


def test_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    path.write_text("hello")
    with pytest.raises(LedgerError, match="not a jobrunner ledger"):
        Ledger.open(path)
    assert path.read_text() == "hello"


def test_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "l.db") as ledger:
        with pytest.raises(RuntimeError):
            with ledger.transaction():
                ledger.add_source("x.csv")
                raise RuntimeError("boom")
        assert ledger.sources() == []
