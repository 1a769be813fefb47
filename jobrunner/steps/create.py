"""create: POST /api/v2/users, exactly once, whatever fails and whenever the process dies.

Sends: name, email, division, title, department, and the work phone and extension, in one
create. Done: `created` with the user's id (its steps become due a few seconds later), or
`exists` when the person was there before the job (their steps are skipped).

The rules that make a create happen exactly once:

* A row's attempt is committed (`in_doubt = 1`) after the limiter lets the request go and
  before it is sent.
* A create that was never answered (timeout, dropped connection, 5xx, a crash mid-request)
  leaves the row in doubt. Before creating it again the email is looked up: a user who
  matches every field we sent is ours (`created`, settled by look-up), one who differs was
  there before (`exists`), nobody means create again. Email is unique, so even a stale
  search index can at worst produce a 409, which for a row in doubt is resolved by another
  look-up, and never by another create (`in_doubt = 2`).
* A 409 for a row that was never in doubt means the person was there before the job.
* The row's values are checked again with ingest's own rules before they are sent: a ledger
  damaged on disk never sends what ingest would have refused.
"""

from __future__ import annotations

from typing import Any

from jobrunner.csv_input import recheck
from jobrunner.errors import ConfigError, JobrunnerError
from jobrunner.genesys import ApiError, CallError, FoundUser, NewUser, TransportError
from jobrunner.ledger import Row
from jobrunner.log import get_logger
from jobrunner.steps import Stopping, StopRun

KIND = "create"
# Doubt levels of a row (the ledger's in_doubt column).
MAYBE_SENT = 1  # a create was sent and never answered: look the email up before creating
CONFLICT_SEEN = 2  # ... and a later create got 409: only look up, never create again
_LAGGING_INDEX = "a create got 409 (email in use) but the search does not show the user yet"
# How far our clock and the API's may disagree when a user's dateModified is compared with
# the time our first create was sent.
CLOCK_SKEW_S = 120.0

log = get_logger("jobrunner.create")


def perform(ctx: Any, row: Row) -> None:
    _Create(ctx, row).run()


def new_user(ctx: Any, row: Row) -> NewUser | None:
    """What the create sends for `row`; None when its division has no id (unknown name)."""
    division_id = row.division_id
    if row.division and not division_id:
        division_id = ctx.resolution.id_of("division", row.division)
        if division_id is None:
            return None
    return NewUser(
        name=row.name,
        email=row.email,
        phone=row.phone_number,
        division_id=division_id,
        title=row.title,
        department=row.department,
        extension=row.extension,
    )


class _Create:
    """One claimed row: look it up if in doubt, create it, record the outcome."""

    def __init__(self, ctx: Any, row: Row) -> None:
        self.ctx = ctx
        self.ledger = ctx.ledger
        self.owner = ctx.owner
        self.row = row
        self.doubt = row.in_doubt

    def run(self) -> None:
        row = self.row
        problem = recheck(row)
        if problem:
            self._finish(
                "failed",
                in_doubt=self.doubt,
                error_code="ledger_row_invalid",
                error_message=f"the ledger row no longer passes ingest's checks ({problem}): "
                "the ledger file may be damaged; nothing was sent",
            )
            return
        new = new_user(self.ctx, row)
        if new is None:
            self._finish(
                "failed",
                in_doubt=self.doubt,
                error_code="unknown_name",
                error_message=f"division {row.division!r}: not in the org (see `jobrunner check`)",
            )
            return
        self.new = new
        if row.settled_by == "restoring" and row.user_id:
            self._resume_restore(row.user_id)
            return
        if self.doubt:
            if self._settle_by_lookup(self.doubt):
                return
            if self.doubt == CONFLICT_SEEN:
                # A 409 showed a user with this email exists, and the search does not show it
                # yet (its index lags): never create again, only look again later.
                self._retry_later("conflict.unresolved", _LAGGING_INDEX, self.doubt, count=True)
                return
        self._send()

    # -- the create --------------------------------------------------------------------------

    def _send(self) -> None:
        problems = self.ctx.names_problems(self.row)
        if problems:  # never sent: a row that names something unknown is not created at all
            message = "; ".join(problems[:3]) + (
                f" and {len(problems) - 3} more" * (len(problems) > 3)
            )
            self._finish(
                "failed",
                in_doubt=self.doubt,
                error_code="unknown_name",
                error_message=f"{message} (see `jobrunner check`)",
            )
            return

        def mark() -> bool:
            return self.ledger.mark_attempt(self.row.id, self.owner, self.new.division_id)

        try:
            created = self.ctx.call(KIND, self.ctx.client.create_user, self.new, before_send=mark)
        except Stopping:  # not sent (stopped, or the claim was taken back)
            self.ledger.release(self.row.id, self.owner, next_attempt_at=0, in_doubt=self.doubt)
            return
        except StopRun:  # a refused token, or an API that stays unreachable
            self._give_back(undo_attempt=True)
            raise
        except ApiError as err:
            self._on_error(err)
            return
        except TransportError as err:
            if err.kind == "connect":  # nothing reached the API: no attempt used
                self._give_back(undo_attempt=True, error=err)
            else:
                self._retry_later(err.code, str(err), max(self.doubt, int(err.maybe_acted)))
            return
        now = self.ctx.clock()
        self._finish(
            "created",
            user_id=created.id,
            user_version=created.version,
            settled_by="create",
            settled_at=now,
        )

    def _on_error(self, err: ApiError) -> None:
        row, doubt = self.row, self.doubt
        if err.status == 409:
            if doubt:
                # Our own unanswered create may be the one holding this email.
                if not self._settle_by_lookup(CONFLICT_SEEN, counted=True):
                    self._retry_later(err.code, str(err), CONFLICT_SEEN)
                return
            self._record_exists()
            return
        if err.status == 429:  # not acted on; never uses up the row's attempts
            self._give_back(undo_attempt=True)
            return
        if err.status == 403 and not row.division:
            self._give_back(undo_attempt=True)
            raise StopRun(
                ConfigError(
                    f"the API refused to create users ({err.code}: {err.message}); give the "
                    "OAuth client a role with the directory:user:add permission. Every row is "
                    "still pending"
                )
            )
        if err.status == 403:
            message = (
                f"{err} (the OAuth client may lack access to division "
                f"{row.division} {self.new.division_id})"
            )
            self._finish("failed", in_doubt=doubt, error_code=err.code, error_message=message)
            return
        if err.retryable:  # 5xx (a gateway may have passed it on), 408
            self._retry_later(err.code, str(err), max(doubt, int(err.maybe_acted)))
            return
        self._finish("failed", in_doubt=doubt, error_code=err.code, error_message=str(err))

    # -- look-ups ----------------------------------------------------------------------------

    def _lookup(self) -> FoundUser | None:
        """Search by email (a read: 429s and passing failures are tried again)."""
        try:
            return self.ctx.call_reading(
                "search", self.ctx.client.find_user_by_email, self.row.email
            )
        except ApiError as err:
            if err.status in (401, 403):
                raise StopRun(
                    ConfigError(
                        f"the API refused a user search ({err}); the OAuth client needs "
                        "directory:user:view to check unanswered creates. Every unfinished row "
                        "is still pending"
                    )
                ) from None
            raise

    def _settle_by_lookup(self, doubt: int, counted: bool = False) -> bool:
        """For a row in doubt: True if the look-up settled it (or put it back in the queue).

        False: nobody has this email (as far as the search shows). `counted`: this round
        already counted an attempt (a create was sent), so a failed look-up adds none.
        """
        try:
            found = self._lookup()
        except (Stopping, StopRun, CallError) as exc:
            self._call_failed(exc, doubt=doubt, count=not counted)
            return True
        if found is None:
            return False
        if found.state == "deleted" and self._may_restore(found):
            self._restore(found.id, found.version)
            return True
        if self.new.matches(found) and self._not_older_than_our_create(found):
            self._finish(
                "created",
                user_id=found.id,
                settled_by="lookup",
                settled_at=self.ctx.clock(),
                user_state=found.state,
            )
            return True
        if found.state == "deleted":
            note = _deleted_note()
        elif self.new.matches(found):
            note = (
                "a user matching every field, last changed before this job's first create was "
                "sent, was already there"
            )
        else:
            note = f"a different user with this email was already there (state {found.state})"
        self._finish(
            "exists",
            user_id=found.id,
            settled_by="conflict",
            user_state=found.state,
            error_message=note,
        )
        return True

    def _record_exists(self) -> None:
        """409 on a clean row: the person was there before the job. One search for the id.

        Without --update-existing or --restore-deleted the outcome is committed first and
        the id added when the search brings it (the row's one log event is written then).
        With either flag the search comes first: a deleted user is restored, a live one is
        brought in line with the file.
        """
        if (
            self.ctx.restore_deleted
            or self.ctx.update_existing
            or self.row.settled_by == ("rolled_back")
        ):
            self._exists_by_lookup()
            return
        if not self._finish("exists", settled_by="conflict", quiet=True):
            return
        user_id: str | None
        note: str | None
        state: str | None = None
        try:
            found = self._lookup()
        except Stopping:
            self._log("exists", None, "the id is looked up by the next run")
            return
        except StopRun:
            self._log("exists", None, "the id is looked up by the next run")
            raise
        except CallError as err:
            if err.retryable:
                note = f"the id is looked up by the next run ({err})"
                self.ledger.set_user_id(self.row.id, None, note)  # reports stop waiting
                self._log("exists", None, note)
                return
            user_id, note = None, lookup_failed(err)
        except JobrunnerError as err:
            user_id, note = None, lookup_failed(err)
        else:
            user_id, note = existing_user(found)
            state = found.state if found is not None else None
        self.ledger.set_user_id(self.row.id, user_id, note, state)
        self._log("exists", user_id, note)

    def _exists_by_lookup(self) -> None:
        """The 409's user, found before anything is committed: restored when deleted (and
        asked for), else `exists` (brought in line with the file when asked for)."""
        try:
            found = self._lookup()
        except (Stopping, StopRun, CallError) as exc:
            self._call_failed(exc)
            return
        if found is None:  # the index lags behind the 409: look again later
            self._retry_later("conflict.unresolved", _LAGGING_INDEX, self.doubt)
            return
        if found.state == "deleted" and self._may_restore(found):
            self._restore(found.id, found.version)
            return
        user_id, note = existing_user(found)
        self._finish(
            "exists",
            user_id=user_id,
            settled_by="conflict",
            user_state=found.state,
            error_message=note if found.state != "deleted" else _deleted_note(),
        )

    def _not_older_than_our_create(self, found: FoundUser) -> bool:
        """A user last modified well before our first create was sent was there before the
        job, however alike: not ours. (Unknown times cannot tell: then it counts as ours.)"""
        sent = self.row.first_sent_at
        if found.modified is None or sent is None:
            return True
        return found.modified >= sent - CLOCK_SKEW_S

    # -- restoring a deleted user --------------------------------------------------------------

    def _may_restore(self, found: FoundUser) -> bool:
        """--restore-deleted, or the very user a rollback of this ledger deleted."""
        ours = self.row.settled_by == "rolled_back" and found.id == self.row.user_id
        return bool(self.ctx.restore_deleted or ours)

    def _restore(self, user_id: str, version: int | None) -> None:
        """PATCH {state: active, version} (the API takes nothing else with it); then the row
        is a new person: every field and step of the file is applied again."""
        if not self.ledger.mark_restoring(self.row.id, self.owner, user_id):
            return
        try:
            if version is None:
                version = self.ctx.call_reading(
                    "restore", self.ctx.client.get_user, user_id, state="deleted"
                ).version
            new_version = self.ctx.call("restore", self.ctx.client.restore_user, user_id, version)
        except ApiError as err:
            if err.status in (404, 409) or err.retryable:
                # 404: no longer deleted (restored meanwhile?); 409: another version. The
                # next attempt reads the user again and finishes or repeats the restore.
                self._retry_later(err.code, f"restoring the user: {err}", self.doubt)
            else:
                self._finish(
                    "failed",
                    in_doubt=self.doubt,
                    error_code=err.code,
                    error_message=f"could not restore the deleted user {user_id}: {err}",
                )
            return
        except (Stopping, StopRun, CallError) as exc:
            self._call_failed(exc, "restoring the user: ")
            return
        self._restored(user_id, new_version)

    def _resume_restore(self, user_id: str) -> None:
        """A restore a crash (or a failure) cut short: finish it, or send it again."""
        try:
            user = self.ctx.call_reading("restore", self.ctx.client.get_user, user_id)
        except ApiError as err:
            if err.status == 404:
                self._restore(user_id, None)  # still deleted
            else:
                self._call_failed(err, "restoring the user: ")
            return
        except (Stopping, StopRun, CallError) as exc:
            self._call_failed(exc, "restoring the user: ")
            return
        self._restored(user_id, user.version)

    # -- recording -----------------------------------------------------------------------------

    def _restored(self, user_id: str, version: int | None) -> None:
        """The deleted user is active again: the row is created by restore, steps to come."""
        self._finish(
            "created",
            user_id=user_id,
            user_version=version,
            settled_by="restore",
            settled_at=self.ctx.clock(),
            user_state="active",
        )

    def _give_back(
        self, undo_attempt: bool, error: TransportError | None = None, doubt: int | None = None
    ) -> None:
        """The row goes back to pending as it was before this attempt."""
        self.ledger.release(
            self.row.id,
            self.owner,
            next_attempt_at=0,
            in_doubt=self.doubt if doubt is None else doubt,
            undo_attempt=undo_attempt,
            error_code=error.code if error else None,
            error_message=str(error) if error else None,
        )

    def _call_failed(
        self, exc: Exception, what: str = "", doubt: int | None = None, count: bool = False
    ) -> None:
        """What every look-up and restore here does when its call did not succeed: stopping
        or nothing reached the API: the row goes back as it was; a refused token or an API
        that stays unreachable: the same, and the run stops; otherwise: try again after a
        backoff (`count`: this round sent no create, count an attempt here)."""
        doubt = self.doubt if doubt is None else doubt
        if isinstance(exc, StopRun):
            self._give_back(undo_attempt=False, doubt=doubt)
            raise exc
        if isinstance(exc, Stopping) or (isinstance(exc, TransportError) and exc.kind == "connect"):
            self._give_back(undo_attempt=False, doubt=doubt)
            return
        if isinstance(exc, CallError):
            code = getattr(exc, "code", "call.failed")
            self._retry_later(code, f"{what}{exc}", doubt, count=count)
            return
        raise exc

    def _retry_later(self, code: str, message: str, doubt: int, count: bool = False) -> None:
        """Back in the queue after a backoff, or failed once the attempts are used up.

        `count`: this round made no create (a look-up only), count it here.
        """
        row, policy = self.row, self.ctx.policy
        attempts = self.ledger.attempts_of(row.id) + (1 if count else 0)
        if attempts >= policy.max_attempts:
            if doubt == CONFLICT_SEEN:
                code = "conflict.unresolved"
                message = (
                    "a user with this email exists but the search has not shown it; it may be "
                    "the one this job created: `jobrunner run --retry-failed` looks it up "
                    "again and never creates it twice"
                )
            self._finish(
                "failed",
                in_doubt=doubt,
                error_code=code,
                error_message=f"{message} (gave up after {attempts} attempts)",
                count_attempt=count,
            )
            return
        delay = policy.delay(attempts, self.ctx.rand)
        log.info(
            "row.retry",
            line=row.line,
            email=row.email,
            attempts=attempts,
            error=message,
            in_doubt=doubt,
            retry_in_s=round(delay, 2),
        )
        self.ledger.release(
            row.id,
            self.owner,
            next_attempt_at=self.ctx.clock() + delay,
            in_doubt=doubt,
            count_attempt=count,
            error_code=code,
            error_message=message,
        )

    def _finish(
        self,
        status: str,
        *,
        user_id: str | None = None,
        user_version: int | None = None,
        settled_by: str | None = None,
        settled_at: float | None = None,
        user_state: str | None = None,
        in_doubt: int = 0,
        error_code: str | None = None,
        error_message: str | None = None,
        count_attempt: bool = False,
        quiet: bool = False,
    ) -> bool:
        """Commit the outcome, and what it means for the row's steps; then one log event."""
        steps, full = None, False
        if status == "created":
            steps, full = "pending", settled_by == "restore"
        elif status == "exists":
            live = user_state != "deleted" and user_id is not None
            steps = "pending" if self.ctx.update_existing and live else "skipped"
            full = steps == "pending"
        if not self.ledger.finish(
            self.row.id,
            self.owner,
            status,
            user_id=user_id,
            user_version=user_version,
            settled_by=settled_by,
            settled_at=settled_at,
            user_state=user_state,
            in_doubt=in_doubt,
            error_code=error_code,
            error_message=error_message,
            count_attempt=count_attempt,
            steps=steps,
            steps_due_at=(settled_at or 0.0) + self.ctx.step_delay_s,
            full=full,
        ):
            return False
        self.ctx.stats.outcome(status)
        if not quiet:
            self._log(status, user_id, error_message, error_code, settled_by)
        return True

    def _log(
        self,
        status: str,
        user_id: str | None,
        message: str | None,
        code: str | None = None,
        settled_by: str | None = None,
    ) -> None:
        fields: dict[str, Any] = {
            "line": self.row.line,
            "email": self.row.email,
            "user_id": user_id,
        }
        if settled_by == "lookup":
            fields["by_lookup"] = True
        if status == "failed":
            log.warning("row.failed", **fields, error_code=code, error=message)
        else:
            log.info(f"row.{status}", **fields, **({"note": message} if message else {}))


def existing_user(found: FoundUser | None) -> tuple[str | None, str | None]:
    """What a look-up for an `exists` row gives the ledger: (user id, note)."""
    if found is None:
        return None, "the search did not return the existing user"
    if found.state == "deleted":
        return found.id, _deleted_note()
    inactive = found.state not in (None, "active")
    return found.id, f"the existing user is {found.state}" if inactive else None


def _deleted_note() -> str:
    return "the user with this email is deleted: `jobrunner run --restore-deleted` restores them"


def lookup_failed(err: JobrunnerError) -> str:
    return f"could not look up the existing user's id ({err})"
