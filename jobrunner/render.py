"""Rendering shared by every command: data to stdout as a table, JSON or CSV."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from jobrunner.ledger import STATUSES
from jobrunner.report import REPORT_FIELDS

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    """OWASP CSV-injection advice: a cell that a spreadsheet would run gets a leading '."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def write_json_report(
    out: TextIO, counts: Mapping[str, int], rows: Iterable[dict[str, Any]]
) -> None:
    """Streams {"counts": {...}, "rows": [...]} without holding every row in memory."""
    out.write('{"counts": ')
    out.write(json.dumps({s: counts.get(s, 0) for s in STATUSES}))
    out.write(', "rows": [')
    first = True
    for row in rows:
        out.write("\n  " if first else ",\n  ")
        out.write(json.dumps(row, ensure_ascii=False))
        first = False
    out.write("\n]}\n" if not first else "]}\n")


def write_csv_report(out: TextIO, rows: Iterable[dict[str, Any]]) -> None:
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(REPORT_FIELDS)
    for row in rows:
        writer.writerow([neutralise(row[f]) if row[f] is not None else "" for f in REPORT_FIELDS])


def _one_line(text: str | None, width: int = 100) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def write_table_report(
    out: TextIO,
    counts: Mapping[str, int],
    rows: Iterable[dict[str, Any]],
    heading: str = "failed and invalid rows",
) -> None:
    total = sum(counts.values())
    width = max(len(s) for s in STATUSES)
    out.write(f"{'status':<{width}}  {'rows':>8}\n")
    for status in STATUSES:
        out.write(f"{status:<{width}}  {counts.get(status, 0):>8,}\n")
    out.write(f"{'total':<{width}}  {total:>8,}\n")
    shown = 0
    for row in rows:
        if shown == 0:
            out.write(f"\n{heading}:\n")
            out.write(f"{'source:line':<24} {'status':<11} {'email':<32} detail\n")
        where = f"{row['source']}:{row['line']}"
        detail = row["error"] or (f"user {row['user_id']}" if row["user_id"] else "")
        if row["error_code"] and row["error"]:
            detail = f"[{row['error_code']}] {row['error']}"
        out.write(
            f"{_one_line(where, 24):<24} {row['status']:<11} {_one_line(row['email'], 32):<32} "
            f"{_one_line(detail)}\n"
        )
        shown += 1
