"""jobrunner.log: what reaches stderr, in both formats."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from jobrunner import log

SECRET = "s3cr3t-in-a-local-variable-4711"


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def crash_and_log() -> None:
    client_secret = SECRET  # a local a traceback formatter with locals would print
    try:
        raise RuntimeError(f"bug near {len(client_secret)} characters")
    except RuntimeError as exc:
        log.get_logger("jobrunner.test").exception("worker.crash", error=repr(exc))


def test_a_bugs_traceback_reaches_the_json_log() -> None:
    out = io.StringIO()
    log.configure(level="info", fmt="json", stream=out)
    crash_and_log()
    event = json.loads(out.getvalue())
    assert event["event"] == "worker.crash" and event["level"] == "error"
    assert "exc_info" not in event
    assert event["exception"].startswith("Traceback (most recent call last):")
    assert "in crash_and_log" in event["exception"]
    assert "RuntimeError: bug near" in event["exception"]
    assert SECRET not in out.getvalue()


def test_a_bugs_traceback_reaches_the_console_log() -> None:
    out = io.StringIO()
    log.configure(level="info", fmt="console", stream=out)
    crash_and_log()
    text = out.getvalue()
    assert "worker.crash" in text
    assert "Traceback (most recent call last):" in text and "RuntimeError: bug near" in text
    assert SECRET not in text
