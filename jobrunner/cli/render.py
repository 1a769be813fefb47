"""Everything the commands print: the report as a table, JSON or CSV; the plan of `check`;
the summaries of `ingest`, `run` and `rollback`. Data to stdout; logs go to stderr."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
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
    out: TextIO,
    counts: Mapping[str, int],
    rows: Iterable[dict[str, Any]],
    org: Mapping[str, Any] | None = None,
) -> None:
    """Streams {"counts": {...}, "org": {...}, "rows": [...]} without holding every row in
    memory (`org`: the org the ledger belongs to, null before any command reached one)."""
    out.write('{"counts": ')
    out.write(json.dumps({s: counts.get(s, 0) for s in STATUSES}))
    out.write(', "org": ' + json.dumps(dict(org) if org else None))
    out.write(', "rows": [')
    first = True
    for row in rows:
        out.write("\n  " if first else ",\n  ")
        out.write(json.dumps(row, ensure_ascii=False))
        first = False
    out.write("\n]}\n" if not first else "]}\n")


def write_csv_report(out: TextIO, rows: Iterable[dict[str, Any]]) -> None:
    """Every report field, then `steps` as one cell ("roles done; queues failed: ...").

    It starts with a UTF-8 byte-order mark: Excel opens a CSV without one as the system's
    8-bit code page (Zoë becomes ZoÃ«), and this file is made to be fixed in a spreadsheet
    and fed back to `ingest`, which reads it with or without the mark.
    """
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow((*REPORT_FIELDS, "steps"))
    for row in rows:
        cells = [neutralise(row[f]) if row[f] is not None else "" for f in REPORT_FIELDS]
        writer.writerow((*cells, neutralise(steps_text(row["steps"]))))


def steps_text(steps: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{name} {step['status']}" + (f": {step['error']}" if step["error"] else "")
        for name, step in steps.items()
    )


def _one_line(text: str | None, width: int = 100) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def write_table_report(
    out: TextIO,
    counts: Mapping[str, int],
    rows: Iterable[dict[str, Any]],
    heading: str = "failed and invalid rows",
    *,
    email_width: int = 32,
    steps: Mapping[str, Mapping[str, int]] | None = None,
    settled: Mapping[tuple[str, str], int] | None = None,
    org: Mapping[str, Any] | None = None,
) -> None:
    """The org, counts per status (and per step), then the rows given, emails shown whole."""
    if org:
        out.write(f"org: {org['name'] or '(no name)'} ({org['org_id']}) at {org['region']}\n\n")
    total = sum(counts.values())
    width = max(len(s) for s in STATUSES)
    out.write(f"{'status':<{width}}  {'rows':>8}\n")
    for status in STATUSES:
        note = ""
        if status == "created" and settled and settled.get(("created", "lookup")):
            note = f"  ({settled[('created', 'lookup')]:,} by look-up after a lost answer)"
        out.write(f"{status:<{width}}  {counts.get(status, 0):>8,}{note}\n")
    out.write(f"{'total':<{width}}  {total:>8,}\n")
    if steps:
        out.write(
            f"\n{'step':<{width}}  {'done':>8}  {'pending':>8}  {'failed':>8}  {'skipped':>8}\n"
        )
        for name, n in steps.items():
            out.write(
                f"{name:<{width}}  {n['done']:>8,}  {n['pending']:>8,}  {n['failed']:>8,}  "
                f"{n['skipped']:>8,}\n"
            )
    email_width = max(len("email"), email_width)
    shown = 0
    for row in rows:
        if shown == 0:
            out.write(f"\n{heading}:\n")
            out.write(f"{'source:line':<24} {'status':<11} {'email':<{email_width}} detail\n")
        where = f"{row['source']}:{row['line']}"
        out.write(
            f"{_one_line(where, 24):<24} {row['status']:<11} {row['email']:<{email_width}} "
            f"{_one_line(_detail(row), 160)}\n"
        )
        shown += 1


def _detail(row: Mapping[str, Any]) -> str:
    if row["error"]:
        detail = f"[{row['error_code']}] {row['error']}" if row["error_code"] else row["error"]
    elif row["user_id"]:
        detail = f"user {row['user_id']}"
        if row.get("settled_by") == "lookup":
            detail += " (created by look-up: the create's answer was lost)"
    else:
        detail = ""
    if row["status"] == "exists" and row.get("user_state") not in (None, "active"):
        detail = f"[{row['user_state']}] {detail}"
    if row["status"] == "exists" and row.get("user_state") != "deleted" and not row["changes"]:
        steps = row.get("steps") or {}
        if not steps or all(s["status"] == "skipped" for s in steps.values()):
            detail += (
                "; there before the job: left as it is (`run --update-existing` brings it in line)"
            )
    if row.get("changes"):
        detail = (detail + "; " if detail else "") + f"changes: {row['changes']}"
    failed = {
        n: s for n, s in (row.get("steps") or {}).items() if s["status"] in ("failed", "waiting")
    }
    if failed:
        detail = (detail + "; " if detail else "") + steps_text(failed)
    return detail


def write_plan(out: TextIO, plan: Any, where: str) -> None:
    """`jobrunner check`: what `run` would do, who is in the org already, what the next run
    changes for people the job created, who waits for a manager, and every name that does
    not resolve."""
    out.write(f"checked against {where} (reads only, {plan.calls:,} API calls)\n")
    queues = f" in {plan.queues:,} queues" if plan.queues else ""
    for label, n, extra in (
        ("users to create", plan.creates, ""),
        ("role grants", plan.role_grants, ""),
        ("queue memberships", plan.memberships, queues),
        ("skill assignments", plan.skills, ""),
        ("language assignments", plan.languages, ""),
        ("managers to set", plan.managers, ""),
        ("locations to set", plan.locations, ""),
    ):
        if n or label != "language assignments":  # a file without languages: not a line
            out.write(f"  {label + ':':<22}{n:>8,}{extra}\n")
    if plan.resolved:
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(plan.resolved.items()))
        out.write(f"  {'names resolved:':<22}{sum(plan.resolved.values()):>8,} ({kinds})\n")
    if plan.run_calls:
        total = sum(plan.run_calls.values())
        minutes = total / plan.per_minute
        by_kind = calls_text(plan.run_calls)
        took = _duration(minutes * 60)
        reads = ", and the reads of people brought in line" if plan.changed else ""
        out.write(
            f"  {'run takes:':<22}{'' if took.startswith('under') else 'about '}{took} at "
            f"{plan.per_minute:,.0f} requests a minute ({plan.budget_from}): {total:,} calls "
            f"({by_kind}){reads}\n"
        )
    if plan.revived_rows or plan.revived_steps:
        out.write(
            f"  {'revived:':<22}{plan.revived_rows:>8,} rows, {plan.revived_steps:,} steps "
            "(failed for a name the org has now: due again, no --retry-failed needed)\n"
        )
    if plan.there:
        out.write(
            f"\n{_people(len(plan.there))} of the file {_are(len(plan.there))} in the org "
            "already (there before the job): left as they are; `jobrunner run "
            "--update-existing` would:\n"
        )
        _write_people(out, plan.there)
    if plan.deleted:
        out.write(
            f"\n{_people(len(plan.deleted))} of the file {_are(len(plan.deleted))} deleted "
            "users: left as they are; `jobrunner run --restore-deleted` restores them:\n"
        )
        _write_people(out, plan.deleted)
    if plan.changed:
        out.write(
            f"\n{_people(len(plan.changed))} this job created {_have(len(plan.changed))} "
            "other values in the file now: the next `jobrunner run` will:\n"
        )
        _write_people(out, plan.changed)
    if plan.not_shown:
        out.write(f"  ({plan.not_shown:,} more whose changes are worked out when they are sent)\n")
    for manager, why, uses in plan.held:
        reports = "1 report waits" if len(uses) == 1 else f"{len(uses):,} reports wait"
        out.write(
            f"\n{reports} for their manager {manager} ({why}): they are created, their "
            f"manager is set once that row is fixed and ingested again; {_lines(uses)}\n"
        )
    if not plan.unknown:
        out.write("every name resolves\n")
        return
    names = "1 name does not" if len(plan.unknown) == 1 else f"{len(plan.unknown):,} names do not"
    rows = "the row that uses" if plan.blocked == 1 else f"the {plan.blocked:,} rows that use"
    them = "it" if len(plan.unknown) == 1 else "them"
    out.write(
        f"\n{names} resolve; {rows} {them} {'is' if plan.blocked == 1 else 'are'} not created:\n"
    )
    for kind, name, problem, uses in plan.unknown:
        out.write(f"  {kind:<9} {name!r}: {problem}; {_lines(uses)}\n")


def _duration(seconds: float) -> str:
    """`2 h 10 min`, `35 min`, `under a minute`."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _write_people(out: TextIO, people: Iterable[Any]) -> None:
    for person in people:
        where = f"{person.source}:{person.line}"
        changes = "; ".join(person.changes) if person.changes else ""
        if person.state not in (None, "active", "deleted"):
            changes = f"[{person.state}] {changes}".strip()
        out.write(f"  {where:<24} {person.email}" + (f": {changes}" if changes else "") + "\n")


def _are(n: int) -> str:
    return "is" if n == 1 else "are"


def _have(n: int) -> str:
    return "has" if n == 1 else "have"


def _lines(uses: Iterable[tuple[str, int]]) -> str:
    """users.csv lines 4, 17, 88 (and other files the same way)."""
    by_source: dict[str, list[int]] = {}
    for source, line in uses:
        by_source.setdefault(source, []).append(line)
    parts = []
    for source, lines in by_source.items():
        shown = ", ".join(str(n) for n in sorted(lines)[:12])
        more = f" and {len(lines) - 12:,} more" if len(lines) > 12 else ""
        parts.append(f"{source} line{'s' if len(lines) > 1 else ''} {shown}{more}")
    return "; ".join(parts)


# -- summaries ----------------------------------------------------------------------------


def write_ingest_summary(stream: TextIO, summary: Any, db: Path) -> None:
    """`jobrunner ingest`: what the file brought, what was refused, what was left alone."""

    def out(line: str = "") -> None:
        stream.write(line + "\n")

    out(f"{summary.file}: {summary.rows_read:,} rows read")
    if not summary.rows_read:
        out("  (the file has a header and no rows)")
    out(f"  added:            {summary.added_pending:,} to create")
    if summary.updated:
        n = summary.requeued
        again = f"; {n:,} failed {'row is' if n == 1 else 'rows are'} pending again" if n else ""
        out(f"  updated:          {summary.updated:,} (never sent: new values taken{again})")
    if summary.corrected:
        out(
            f"  corrected:        {summary.corrected:,} (replace invalid rows of an earlier ingest)"
        )
    if summary.follow:
        out(
            f"  to update:        {_people(summary.follow)} this job created: the next `jobrunner "
            "run` brings them in line with the file (adds and sets what differs, never removes)"
        )
    if summary.follow_existing:
        out(
            f"  to update:        {_people(summary.follow_existing)} there before the job: "
            "`jobrunner run --update-existing` brings them in line with the file"
        )
    if summary.follow_rolled_back:
        out(
            f"  updated:          {_people(summary.follow_rolled_back)} rolled back: "
            "`jobrunner run --recreate-rolled-back` onboards them as the file now says"
        )
    again = (
        f" ({summary.invalid_again:,} invalid in an earlier ingest too: the ledger now holds "
        "this file's values and reasons)"
        if summary.invalid_again
        else ""
    )
    out(f"  invalid:          {summary.added_invalid + summary.invalid_again:,}{again}")
    for reason, n in summary.invalid_by_reason.most_common():
        out(f"    {reason:<20} {n:>7,}   e.g. {summary.invalid_examples[reason]}")
    already = ", ".join(f"{n:,} from {src}" for src, n in summary.already_from.most_common())
    out(f"  already present:  {summary.already_present:,}" + (f" ({already})" if already else ""))
    if summary.kept:
        out(f"  not updated:      {sum(summary.kept.values()):,} (the file gives other values)")
        for reason, n in summary.kept.most_common():
            named = ", ".join(summary.kept_named[reason])
            more = n - len(summary.kept_named[reason])
            out(f"    {n:,}: {reason}: {named}" + (f" and {more:,} more" if more else ""))
    if summary.unknown_columns:
        shown = [
            f"{c} (did you mean {summary.suggestions[c]}?)" if c in summary.suggestions else c
            for c in summary.unknown_columns[:12]
        ]
        more = len(summary.unknown_columns) - len(shown)
        out(f"  ignored columns:  {', '.join(shown)}" + (f" and {more:,} more" if more else ""))
    for ignored, used in summary.shadowed.items():
        out(f"  ignored column:   {ignored} (the file's {used} column is used instead)")
    if summary.delimiter != ",":
        names = {";": "semicolon", "\t": "tab", "|": "pipe"}
        out(f"  delimiter:        {names.get(summary.delimiter, summary.delimiter)}")
    out(f"ledger: {db}")


def _people(n: int) -> str:
    return "1 person" if n == 1 else f"{n:,} people"


def write_run_summary(stream: TextIO, result: Any) -> None:
    """`jobrunner run`: the ledger's totals (rows, then steps), then what this run did."""
    counts, stats = result.counts, result.stats

    def out(line: str) -> None:
        stream.write(line + "\n")

    if result.recovered:
        out(
            f"recovered {result.recovered:,} rows a stopped run left in progress "
            f"({result.recovered_in_doubt:,} looked up before any new create)"
        )
    rolled_back = f" | rolled back {counts['rolled_back']:,}" if counts["rolled_back"] else ""
    out(
        f"created {counts['created']:,} | exists {counts['exists']:,} | "
        f"failed {counts['failed']:,} | pending {counts['pending']:,} | "
        f"invalid {counts['invalid']:,} (from ingest){rolled_back}"
    )
    kinds = result.exists_kinds
    if counts["exists"]:
        parts = []
        if kinds.get("there"):
            parts.append(
                f"{kinds['there']:,} there before the job"
                + ("" if kinds.get("in_line") else " (`run --update-existing` brings them in line)")
            )
        if kinds.get("deleted"):
            parts.append(f"{kinds['deleted']:,} deleted (`run --restore-deleted` restores them)")
        if kinds.get("unknown"):
            parts.append(f"{kinds['unknown']:,} whose user is still being looked up")
        out("  exists: " + "; ".join(parts))
    steps = result.step_totals
    if steps:
        waiting = f" | waiting for a manager {steps['waiting']:,}" if steps.get("waiting") else ""
        out(
            f"steps: done {steps.get('done', 0):,} | failed {steps.get('failed', 0):,} | "
            f"still open {steps.get('open', 0):,}{waiting}"
        )
    settled = stats.outcomes
    made = ", ".join(
        f"{settled[k]:,} {w}"
        for k, w in (("created", "created"), ("exists", "found there before"), ("failed", "failed"))
        if settled[k]
    )
    out(
        f"this run: {stats.done:,} people settled"
        + (f" ({made})" if made else "")
        + f", {stats.steps['done']:,} steps done"
        + (f", {stats.steps['failed']:,} failed" if stats.steps["failed"] else "")
        + f"; API calls: {calls_text(stats.calls)}; {result.limited:,} answered 429"
    )
    if counts["failed"] or steps.get("failed"):
        out(
            "failed rows and steps: `jobrunner report` says why; a name fixed in the org "
            "or in the file (ingest it again) is picked up by the next run, other failures "
            "with `jobrunner run --retry-failed`"
        )


def write_rollback_choice(stream: TextIO, choice: Any) -> None:
    """What a rollback would delete, and who it leaves out (and how to include them)."""
    resuming = choice.resuming
    stream.write(
        f"{len(choice.chosen):,} users this ledger created will be deleted"
        + (f" ({resuming:,} of an earlier rollback still to finish)" if resuming else "")
        + "\n"
    )
    left_out = choice.left_out
    if left_out["lookup"]:
        stream.write(
            f"  left out: {left_out['lookup']:,} created by look-up after an unanswered "
            "create (a person who was there before looks the same): --include-looked-up\n"
        )
    if left_out[None]:
        stream.write(
            f"  left out: {left_out[None]:,} created by an earlier jobrunner, which did not "
            "record whether a look-up settled them: --include-looked-up\n"
        )
    if left_out["restore"]:
        stream.write(f"  left out: {left_out['restore']:,} restored: --include-restored\n")
    if choice.orphans:
        n = len(choice.orphans)
        who = "1 person" if n == 1 else f"{n:,} people"
        stream.write(
            f"  {who} outside the rollback report to someone it deletes (their manager would "
            "be a deleted user; --clear-managers clears it):\n"
        )
        for r in choice.orphans[:20]:
            stream.write(
                f"    {r['source']}:{r['line']} {r['email']} (manager {r['email_manager']})\n"
            )
        if n > 20:
            stream.write(f"    ... and {n - 20:,} more\n")


def write_rollback_summary(stream: TextIO, result: Any) -> None:
    stats = result.stats
    stream.write(
        f"rolled back {result.counts['rolled_back']:,} rows in all; this run: "
        f"{stats.steps['done']:,} done (deleted or already gone; managers cleared), "
        f"{stats.steps['failed']:,} failed; API calls: {calls_text(stats.calls)}\n"
    )


def calls_text(calls: Mapping[str, int]) -> str:
    """API calls by what they were for (a step's reads count with its writes)."""
    from jobrunner import steps

    names = {  # kind -> (one, many)
        steps.CREATE.kind: steps.CREATE.calls,
        "search": ("search", "searches"),
        "lookup": ("name look-up", "name look-ups"),
        **{step.kind: step.calls for step in steps.RUN_STEPS},
        "restore": ("for restores", "for restores"),
        steps.ROLLBACK.kind: steps.ROLLBACK.calls,
        steps.CLEAR_MANAGER.kind: steps.CLEAR_MANAGER.calls,
        "token": ("token", "tokens"),
    }
    shown = [f"{calls[k]:,} {names[k][calls[k] != 1]}" for k in names if calls.get(k)]
    shown += [f"{n:,} {k}" for k, n in calls.items() if k not in names and n]
    return ", ".join(shown) or "none"
