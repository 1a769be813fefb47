"""The one path every step's answer takes: the rules every step shares, then the ledger.

What a call raised becomes an outcome here, the same way for every step, the create too:

* 429: every worker waits (the limiter); the work goes back without using an attempt;
* no connection: every worker pauses (jobrunner/caller.py); no attempt used;
* 5xx, timeouts, dropped connections: back off (exponential, full jitter), then fail;
* 404 while the user is fresh from its create: back off (other services learn new ids a
  few seconds late), for as long as the user is fresh;
* 403: the run stops (exit 3) naming the permission, the work left pending, unless the same
  call succeeded for another row (a grant refused in one division only): then only this
  work fails (every other row's step is tried before a refusal stops the run);
* anything else: failed, with the API's code and message.

Then every outcome is committed the moment it is known, on the work it is about: a claimed
row (the create: `ClaimedRow`) or claimed steps (`ClaimedSteps`), each write checked
against the claim's owner. A round that ends in a retry or a failure counts one attempt; a
round given back counts none.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jobrunner.caller import RetryPolicy, RunStats
from jobrunner.errors import ConfigError
from jobrunner.genesys import ApiError, CallError, TransportError
from jobrunner.ledger import Ledger
from jobrunner.ledger.model import Row, StepClaim
from jobrunner.log import get_logger
from jobrunner.steps.contract import (
    RECORDED,
    Outcome,
    Settled,
    StepKind,
    StopRun,
    failed,
    give_back,
    is_fresh,
    retry_later,
)

log = get_logger("jobrunner.scheduler")
row_log = get_logger("jobrunner.create")

# A step refused (403) before the same call worked for anyone goes back this much later, so
# the other rows' steps are tried first.
REFUSED_RETRY_S = 2.0
FRESH_RETRY_S = (1.0, 3.0)  # a step refused for a new id: tried again this long after


@dataclass
class ClaimedRow:
    """A row claimed for its create (the create step's RowWork)."""

    ledger: Ledger
    owner: str
    row: Row
    stats: RunStats
    step_delay_s: float = 0.0  # its steps are due this long after it is settled
    wake: tuple[str, ...] = ()  # kinds of step of its reports that wait for its user
    doubt: int = 0
    sent: bool = False  # mark_sent committed an attempt in this round
    answered: bool = False  # ... and the API answered it (the attempt stands)

    def __post_init__(self) -> None:
        self.doubt = self.row.in_doubt

    def mark_sent(self, division_id: str | None) -> bool:
        self.sent = self.ledger.mark_attempt(self.row.id, self.owner, division_id)
        return self.sent

    def mark_restoring(self, user_id: str) -> bool:
        return self.ledger.mark_restoring(self.row.id, self.owner, user_id)

    def settle_now(self, settled: Settled, *, quiet: bool = False) -> bool:
        return self.settle(settled, quiet=quiet)

    def add_found(self, user_id: str | None, note: str | None, state: str | None) -> None:
        self.ledger.set_user_id(self.row.id, user_id, note, state)
        _log_row("exists", self.row, user_id, note)

    def settle(self, settled: Settled, *, quiet: bool = False) -> bool:
        """Record what the row became, and what that means for its steps."""
        if not self.ledger.finish(
            self.row.id,
            self.owner,
            settled.status,
            user_id=settled.user_id,
            user_version=settled.user_version,
            settled_by=settled.settled_by,
            settled_at=settled.settled_at,
            user_state=settled.user_state,
            error_message=settled.note,
            steps=settled.steps,
            steps_due_at=(settled.settled_at or 0.0) + self.step_delay_s,
            extra_steps=settled.extra_steps,
            wake=self.wake,
        ):
            return False
        self.stats.outcome(settled.status)
        if not quiet:
            _log_row(settled.status, self.row, settled.user_id, settled.note, by=settled.settled_by)
        return True


@dataclass
class ClaimedSteps:
    """Steps claimed together: one step of a row, or a batch of one target across rows."""

    claims: list[StepClaim]


class Recorder:
    """Turns what a step's perform gave (outcomes, or what a call raised) into ledger writes."""

    def __init__(
        self,
        ledger: Ledger,
        owner: str,
        stats: RunStats,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float],
        rand: Callable[[], float] = random.random,
        succeeded: set[str] | None = None,
    ) -> None:
        self.ledger = ledger
        self.owner = owner
        self.stats = stats
        self.policy = policy
        self.clock = clock
        self.rand = rand
        self.succeeded = succeeded if succeeded is not None else set()
        self._refused: set[tuple[int, str, str]] = set()  # 403s before any success

    # -- the shared rules --------------------------------------------------------------------

    def outcome_of(
        self, step: StepKind, work: ClaimedRow | ClaimedSteps, err: CallError
    ) -> Outcome:
        """What a call's failure means, the same for every step."""
        if isinstance(err, TransportError):
            if err.kind == "connect":  # nothing reached the API: no attempt used
                return give_back(err.code, str(err))
            return retry_later(err.code, str(err))
        assert isinstance(err, ApiError)
        if err.status == 429:
            return give_back()
        if err.status == 403 and isinstance(work, ClaimedSteps):
            return self._refused_outcome(step, work, err)
        rows = [work.row] if isinstance(work, ClaimedRow) else [c.row for c in work.claims]
        if err.status == 404 and any(is_fresh(row, self.clock()) for row in rows):
            return retry_later(err.code, str(err), fresh=True)
        if err.retryable:
            return retry_later(err.code, str(err))
        return failed(err.code, str(err))

    def _refused_outcome(self, step: StepKind, work: ClaimedSteps, err: ApiError) -> Outcome:
        """A 403: missing for everyone (stop, exit 3), or for some rows only (fail them).

        The same call succeeding for another row (in this run, or an earlier one of this
        ledger) shows it is this row's (a grant refused in one division only). Until then a
        refused step goes back, later than the others, and the run stops only once every
        step of this kind still to do has been refused: the permission is missing for all
        of them, and they stay pending.
        """
        kind = step.kind
        if kind in self.succeeded or self.ledger.any_step_done(kind):
            return failed(err.code, f"{err} (refused for this person only)")
        self._refused.update((c.row.id, c.kind, c.target) for c in work.claims)
        others = [key for key in self.ledger.open_steps_of(kind) if key not in self._refused]
        if others:
            self.ledger.release_steps(
                work.claims, self.owner, next_attempt_at=self.clock() + REFUSED_RETRY_S
            )
            return RECORDED
        self.record(step, work, give_back())
        raise StopRun(
            ConfigError(
                f"the API refused the {kind} step ({err.code}: {err.message}); give the OAuth "
                f"client a role with the {step.permission or 'needed'} permission. The "
                "steps are still pending: run again after that"
            )
        )

    # -- recording ---------------------------------------------------------------------------

    def record(
        self, step: StepKind, work: ClaimedRow | ClaimedSteps, outcomes: Outcome | Sequence[Outcome]
    ) -> None:
        if isinstance(outcomes, Outcome):
            outcomes = [outcomes]
        if isinstance(work, ClaimedRow):
            for outcome in outcomes:
                self._record_row(work, outcome)
            return
        rest = list(work.claims)
        for outcome in outcomes:
            if outcome.claims is not None:
                rest = [c for c in rest if c not in outcome.claims]
        for outcome in outcomes:
            claims = list(outcome.claims) if outcome.claims is not None else rest
            if claims:
                self._record_steps(claims, outcome)

    def _record_row(self, work: ClaimedRow, outcome: Outcome) -> None:
        row, ledger = work.row, self.ledger
        if outcome.what == "recorded":
            return
        if outcome.what == "done":
            assert outcome.settled is not None, "a create is done with what the row became"
            work.settle(outcome.settled)
        elif outcome.what == "failed":
            self._fail_row(work, outcome.code, outcome.message, count=False)
        elif outcome.what == "give_back":
            ledger.release(
                row.id,
                self.owner,
                next_attempt_at=0,
                in_doubt=work.doubt,
                undo_attempt=work.sent and not work.answered,
                error_code=outcome.code,
                error_message=outcome.message,
            )
        else:  # retry: this round counts one attempt (a sent create counted it already)
            attempts = row.attempts + 1
            if attempts >= self.policy.max_attempts and not outcome.fresh:
                code, message = outcome.exhausted or (outcome.code, outcome.message)
                self._fail_row(
                    work,
                    code,
                    f"{message} (gave up after {attempts} attempts)",
                    count=not work.sent,
                )
                return
            delay = self.policy.delay(attempts, self.rand)
            row_log.info(
                "row.retry",
                line=row.line,
                email=row.email,
                attempts=attempts,
                error=outcome.message,
                in_doubt=work.doubt,
                retry_in_s=round(delay, 2),
            )
            ledger.release(
                row.id,
                self.owner,
                next_attempt_at=self.clock() + delay,
                in_doubt=work.doubt,
                count_attempt=not work.sent,
                error_code=outcome.code,
                error_message=outcome.message,
            )

    def _fail_row(
        self, work: ClaimedRow, code: str | None, message: str | None, count: bool
    ) -> None:
        if self.ledger.finish(
            work.row.id,
            self.owner,
            "failed",
            in_doubt=work.doubt,
            error_code=code,
            error_message=message,
            count_attempt=count,
        ):
            self.stats.outcome("failed")
            _log_row("failed", work.row, None, message, code=code)

    def _record_steps(self, claims: list[StepClaim], outcome: Outcome) -> None:
        ledger, owner = self.ledger, self.owner
        if outcome.what == "recorded":
            return
        if outcome.what == "done":
            with ledger.transaction():
                n = ledger.finish_steps(claims, owner, "done", detail=outcome.detail)
                if outcome.row_status == "rolled_back":
                    ledger.rolled_back(claims)
                if outcome.user_version is not None:
                    for c in claims:
                        ledger.set_user_version(c.row.id, outcome.user_version)
            self._said(claims, "done", n, detail=outcome.detail)
        elif outcome.what == "failed":
            self._fail_steps(claims, outcome.code, outcome.message)
        elif outcome.what == "wait":
            n = ledger.finish_steps(
                claims,
                owner,
                "waiting",
                error_code=outcome.code,
                error_message=outcome.message,
                count_attempt=False,
            )
            self._said(claims, "held", n, error_code=outcome.code, error=outcome.message)
        elif outcome.what == "give_back":
            ledger.release_steps(claims, owner, next_attempt_at=0)
        else:  # retry
            attempts = max(c.attempts for c in claims) + 1
            if attempts >= self.policy.max_attempts and not outcome.fresh:
                code, message = outcome.exhausted or (outcome.code, outcome.message)
                self._fail_steps(claims, code, f"{message} (gave up after {attempts} attempts)")
                return
            # A new id the other services do not know yet is no failure: no attempt counts
            # (a later server error still has all its tries), and it is tried again in a
            # second or three, as long as the id is new.
            delay = (
                FRESH_RETRY_S[0] + self.rand() * (FRESH_RETRY_S[1] - FRESH_RETRY_S[0])
                if outcome.fresh
                else self.policy.delay(attempts, self.rand)
            )
            log.info(
                "step.retry",
                step=claims[0].kind,
                members=len(claims),
                error=outcome.message,
                attempts=attempts,
                retry_in_s=round(delay, 2),
            )
            ledger.release_steps(
                claims,
                owner,
                next_attempt_at=self.clock() + delay,
                count_attempt=not outcome.fresh,
                error_code=outcome.code,
                error_message=outcome.message,
            )

    def _fail_steps(self, claims: list[StepClaim], code: str | None, message: str | None) -> None:
        n = self.ledger.finish_steps(
            claims, self.owner, "failed", error_code=code, error_message=message
        )
        self._said(claims, "failed", n, error_code=code, error=message)

    def _said(self, claims: Sequence[StepClaim], status: str, n: int, **fields: Any) -> None:
        """Count `n` recorded steps and log one event per step."""
        self.stats.step(status, n)
        emit = log.warning if status in ("failed", "held") else log.info
        for c in claims:
            emit(
                f"step.{status}",
                step=c.kind,
                target=c.target or None,
                line=c.row.line,
                email=c.row.email,
                **fields,
            )


def _log_row(
    status: str,
    row: Row,
    user_id: str | None,
    message: str | None,
    code: str | None = None,
    by: str | None = None,
) -> None:
    fields: dict[str, Any] = {"line": row.line, "email": row.email, "user_id": user_id}
    if by == "lookup":
        fields["by_lookup"] = True
    if status == "failed":
        row_log.warning("row.failed", **fields, error_code=code, error=message)
    else:
        row_log.info(f"row.{status}", **fields, **({"note": message} if message else {}))
