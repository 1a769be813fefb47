"""A ledger you can trust when the machine misbehaves: what is not a ledger is refused and
left alone, failures are one line naming the ledger, a busy ledger is waited for, and a copy
can be made safely."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from structlog.testing import capture_logs

import jobrunner.ledger.store as ledger_module
from jobrunner import log
from jobrunner.cli import cli
from jobrunner.errors import LedgerBusy, LedgerError
from jobrunner.ledger import Ledger, describe_failure
from jobrunner.runner import RunLock

HEADER = "first_name,last_name,email,phone_number,division_id,title,department\n"


def run(db: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db", str(db), "--log-level", "error", *args])


def people(tmp_path: Path, n: int = 3, name: str = "u.csv") -> Path:
    f = tmp_path / name
    f.write_text(HEADER + "".join(f"P,{i},p{i}@example.com,,,,\n" for i in range(n)))
    return f


# -- only a path where nothing is becomes a ledger ------------------------------------------


@pytest.mark.parametrize("command", [["report"], ["run"], ["ingest", "FILE"], ["backup", "x.db"]])
def test_a_zero_byte_file_is_refused_and_left_alone(tmp_path: Path, command: list[str]) -> None:
    db = tmp_path / "ledger.db"
    db.write_bytes(b"")
    wal = tmp_path / "ledger.db-wal"
    wal.write_bytes(b"\x37\x7f\x06\x82" + b"\x00" * 60)  # what a lost ledger's WAL starts with
    args = [str(people(tmp_path)) if a == "FILE" else a for a in command]
    env = {
        "GENESYS_CLOUD_CLIENT_ID": "x",
        "GENESYS_CLOUD_CLIENT_SECRET": "y",
        "GENESYS_CLOUD_ENVIRONMENT": "http://127.0.0.1:9",
    }
    result = CliRunner().invoke(cli, ["--db", str(db), *args], env=env)
    assert result.exit_code != 0
    assert "is an empty file, not a jobrunner ledger" in result.output
    assert "ledger.db-wal beside it holds data" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert db.read_bytes() == b"" and wal.stat().st_size == 64


def test_an_empty_sqlite_database_is_not_taken_for_a_ledger(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    sqlite3.connect(db).execute("PRAGMA user_version = 7").connection.close()
    before = db.read_bytes()
    result = run(db, "ingest", str(people(tmp_path)))
    assert result.exit_code == 1 and "an empty SQLite database" in result.output
    assert db.read_bytes() == before


def test_a_failed_ingest_into_a_new_ledger_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the cause: here the disk fills up while the rows go in."""
    db = tmp_path / "state" / "new" / "ledger.db"

    def full(*_a: object, **_k: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Ledger, "insert_rows", full)
    result = run(db, "ingest", str(people(tmp_path)))
    assert result.exit_code == 1
    assert f"ledger {db}: the disk is full" in result.output and "MB free" in result.output
    assert "internal error" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "state").exists()  # no ledger, no -wal, no folder made for it


def test_an_interrupted_ingest_into_a_new_ledger_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "ledger.db"

    def interrupted(*_a: object, **_k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Ledger, "insert_rows", interrupted)
    run(db, "ingest", str(people(tmp_path)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.csv"]


# -- failures are one line naming the ledger ------------------------------------------------


def test_sqlite_failures_name_the_ledger_and_what_to_do(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    Ledger.open(db).close()
    read_only = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as write:
        read_only.execute("CREATE TABLE t (x)")
    read_only.close()
    message = str(describe_failure(db, write.value))
    assert str(db) in message and "cannot be written" in message and "writable" in message
    (tmp_path / "junk.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    junk = sqlite3.connect(tmp_path / "junk.db")
    with pytest.raises(sqlite3.DatabaseError) as corrupt:
        junk.execute("SELECT * FROM sqlite_master").fetchall()
    junk.close()
    message = str(describe_failure(tmp_path / "junk.db", corrupt.value))
    assert "is damaged" in message and "jobrunner backup" in message
    full = describe_failure(db, OSError(28, "No space left on device"))
    assert f"ledger {db}: the disk is full" in str(full)


def test_a_damaged_ledger_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    """Damage where opening does not look (the rows' pages) is found by the quick check."""
    db = tmp_path / "ledger.db"
    assert run(db, "ingest", str(people(tmp_path, 400))).exit_code == 0
    with Ledger.open(db) as ledger:
        ledger.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (page_size,) = ledger.execute("PRAGMA page_size").fetchone()
        (pages,) = ledger.execute("PRAGMA page_count").fetchone()
        damaged = [
            page for (page,) in ledger.execute("SELECT pageno FROM dbstat WHERE name = 'rows'")
        ]
    assert len(damaged) > 2 and pages > len(damaged)
    data = bytearray(db.read_bytes())
    for page in damaged:  # scramble the pages of the rows table
        start = (page - 1) * page_size
        data[start + 8 : start + 40] = b"\xa5" * 32
    db.write_bytes(bytes(data))
    ledger = Ledger.open(db)
    try:
        with pytest.raises(LedgerError, match=r"is damaged .*nothing was sent"):
            ledger.quick_check()
    finally:
        ledger.close()


# -- a busy ledger is waited for ---------------------------------------------------------------


def test_a_write_waits_for_a_long_transaction_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ingest holds the write lock for its whole file: a run's writes wait, never fail."""
    monkeypatch.setattr(ledger_module, "BUSY_TIMEOUT_MS", 50)
    monkeypatch.setattr(ledger_module, "WAIT_LOG_S", 0.2)
    db = tmp_path / "ledger.db"
    assert run(db, "ingest", str(people(tmp_path))).exit_code == 0
    ledger = Ledger.open(db)
    holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE rows SET title = 'held' WHERE line = 2")
    released = threading.Event()
    log.configure(level="info")

    def release_later() -> None:
        time.sleep(1.0)
        holder.execute("COMMIT")
        released.set()

    threading.Thread(target=release_later).start()
    try:
        with capture_logs() as logs:
            ledger.execute("UPDATE rows SET department = 'ours' WHERE line = 3")
        assert released.is_set()
        events = [e["event"] for e in logs]
        assert events.count("ledger.waiting") >= 2 and events[-1] == "ledger.available"
        assert "another jobrunner command" in logs[0]["detail"]
        titles = dict(ledger.execute("SELECT line, coalesce(title, department) FROM rows"))
        assert titles[2] == "held" and titles[3] == "ours"
    finally:
        ledger.close()
        holder.close()


# -- a safe copy -------------------------------------------------------------------------------


def test_backup_is_self_contained_and_works_during_a_write(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    assert run(db, "ingest", str(people(tmp_path, 50))).exit_code == 0
    writer = sqlite3.connect(db, isolation_level=None)  # a run in the middle of a write
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE rows SET status = 'created', user_id = 'u' WHERE line = 2")
    dest = tmp_path / "copy.db"
    result = run(db, "backup", str(dest))
    writer.execute("COMMIT")
    writer.close()
    assert result.exit_code == 0, result.output
    assert f"copied to {dest} (50 rows" in result.output
    assert not Path(f"{dest}-wal").exists() and dest.stat().st_mode & 0o777 == 0o600
    moved = tmp_path / "elsewhere.db"
    dest.rename(moved)  # no -wal needed beside it
    with Ledger.open(moved, create=False) as copy:
        assert copy.counts()["pending"] == 50  # the uncommitted write is not in it
    again = run(db, "backup", str(moved))
    assert again.exit_code == 1 and "exists" in again.output and "--force" in again.output
    forced = run(db, "backup", "--force", str(moved))
    assert forced.exit_code == 0
    with Ledger.open(moved, create=False) as copy:
        assert copy.counts()["created"] == 1


# -- the run lock names its holder ---------------------------------------------------------------


def test_a_second_command_names_the_holder_even_right_after_it_took_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fcntl
    import json
    import os
    import socket

    db = tmp_path / "ledger.db"
    Ledger.open(db).close()
    lock = RunLock(db)
    fd = os.open(lock.path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # locked, nothing written yet

    def write_name_later() -> None:
        time.sleep(0.3)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": "then"}
        os.pwrite(fd, json.dumps({**info, "command": "run"}).encode(), 0)

    threading.Thread(target=write_name_later).start()
    try:
        with pytest.raises(LedgerBusy, match=rf"`jobrunner run`, pid {os.getpid()} on"):
            RunLock(db).acquire("second")
        os.ftruncate(fd, 0)
        monkeypatch.setattr(RunLock, "NAME_WAIT_S", 0.2)
        with pytest.raises(LedgerBusy, match="did not say who it is"):
            RunLock(db).acquire("third")
    finally:
        os.close(fd)


# -- a damaged row is never sent ----------------------------------------------------------------


def test_a_row_damaged_in_the_ledger_is_failed_and_never_sent(tmp_path: Path) -> None:
    """The issue's byte flips: an email with a control character, a name with a line break,
    a NUL in a department. Ingest's rules run again before each create."""
    from fakes import FakeClient

    from jobrunner.runner import Runner

    db = tmp_path / "l.db"
    assert run(db, "ingest", str(people(tmp_path, 4))).exit_code == 0
    with Ledger.open(db) as ledger:
        for line, column, value in (
            (2, "email", "p0@e\x13ample.com"),
            (3, "first_name", "P\nX"),
            (4, "department", "Sa\x00les"),
        ):
            ledger.execute(f"UPDATE rows SET {column} = ? WHERE line = ?", (value, line))
        client = FakeClient()
        assert Runner(ledger, client, concurrency=1).run().exit_code == 1
        sent = [email for kind, email in client.calls if kind == "create"]
        assert sent == ["p3@example.com"]
        rows = ledger.execute("SELECT line, status, error_code FROM rows ORDER BY line").fetchall()
    assert rows == [
        (2, "failed", "ledger_row_invalid"),
        (3, "failed", "ledger_row_invalid"),
        (4, "failed", "ledger_row_invalid"),
        (5, "created", None),
    ]


def test_rollback_names_a_running_command_before_it_counts_or_asks(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    assert run(db, "ingest", str(people(tmp_path, 2))).exit_code == 0
    with Ledger.open(db) as ledger:
        ledger.execute("UPDATE rows SET status = 'created', user_id = 'u', settled_by = 'create'")
    held = RunLock(db)
    held.acquire("test-runner", command="run")
    env = {
        "GENESYS_CLOUD_CLIENT_ID": "id",
        "GENESYS_CLOUD_CLIENT_SECRET": "secret",
        "GENESYS_CLOUD_ENVIRONMENT": "http://127.0.0.1:9",
    }
    try:
        result = CliRunner().invoke(cli, ["--db", str(db), "rollback", "--yes"], env=env)
    finally:
        held.release()
    assert result.exit_code == 4, result.output
    assert "another jobrunner command is working on this ledger" in result.output
    assert "will be deleted" not in result.output
