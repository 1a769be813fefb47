"""The run lock: one jobrunner command (`run`, `rollback`, `forget`) works on a ledger at a
time. An exclusive OS lock next to the ledger; it dies with its process, even under kill -9.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobrunner.errors import LedgerBusy, LedgerError


class RunLock:
    """An exclusive OS lock next to the ledger; it dies with its process, even under kill -9.

    The holder writes who it is into the lock file right after taking the lock; one who
    finds it taken reads that, and waits a moment for it if the holder has only just got
    the lock, so the refusal always names the holder.
    """

    NAME_WAIT_S = 2.0

    def __init__(self, db: Path) -> None:
        real = db.resolve()  # one lock per ledger file, whatever path or link names it
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None

    def acquire(self, owner: str, command: str = "run") -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LedgerError(
                f"cannot create the run lock {self.path}: {exc.strerror} (its folder must be "
                "writable)"
            ) from None
        deadline = time.monotonic() + self.NAME_WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _read_holder(fd)
                if holder is None and time.monotonic() < deadline:
                    time.sleep(0.02)  # the holder has the lock and is writing its name
                    continue
                os.close(fd)
                raise LedgerBusy(
                    f"another jobrunner command is working on this ledger "
                    f"({holder or 'its process did not say who it is'}); wait for it to finish "
                    "or stop it, then run again"
                ) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "owner": owner,
            "command": command,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        data = json.dumps(info).encode()
        try:
            os.pwrite(fd, data, 0)  # write, then cut: a reader never sees it empty
            os.ftruncate(fd, len(data))
        except OSError as exc:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise LedgerError(f"cannot write the run lock {self.path}: {exc.strerror}") from None
        self._fd = fd

    @contextmanager
    def held(self, owner: str, command: str = "run") -> Iterator[None]:
        """The lock, for the time of a block."""
        self.acquire(owner, command)
        try:
            yield
        finally:
            self.release()

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            except OSError:
                pass  # the lock goes with the descriptor either way
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str | None:
    """Who holds the lock, from what it wrote; None while that is not (yet) there."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"null")
        pid = int(info["pid"])
        if info["host"] == socket.gethostname():
            os.kill(pid, 0)  # a stale name from a holder that died: not this one
        return (
            f"`jobrunner {info.get('command', 'run')}`, pid {pid} on {info['host']}, "
            f"started {info['started']}"
        )
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return f"pid {info['pid']} on {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError, OSError):
        return None
