"""queue: membership of one queue, batched across rows.

Sends: POST /api/v2/routing/queues/{queueId}/members with up to 100 new members of one queue
(the API's limit): one call per queue per 100 people, not one per person. A batch goes out
when it is full, or when no more members of that queue can come in this run.
Done: the call succeeded, for every member in it. Safe to repeat: a member already there is
success. For people who were there before the job, the queue's members are read once per
run (a few pages) and those already in it are done without a write.
A batch refused with 404 names an id the queue service does not know: while a member is
fresh from its create (ids take a few seconds to reach other services) the whole batch is
sent again after a backoff; after that it is split in halves until the member at fault is
found, and only that member's step fails.
"""

from __future__ import annotations

from typing import Any

from jobrunner.genesys import ApiError
from jobrunner.ledger import StepClaim
from jobrunner.steps import RetryLater, StepFailed, brings_in_line

KIND = "queue"
PER_CALL = 100


def claim(ctx: Any) -> list[StepClaim]:
    return ctx.ledger.claim_queue_batch(ctx.owner, ctx.clock(), ctx.lease_s, PER_CALL)


def perform(ctx: Any, claims: list[StepClaim]) -> None:
    target = claims[0].target
    queue_id = ctx.resolution.id_of(KIND, target)
    if queue_id is None:
        raise StepFailed(
            "unknown_name", f"queue {target!r}: not in the org (see `jobrunner check`)"
        )
    if any(brings_in_line(c.row) for c in claims):
        members = ctx.queue_members(queue_id)
        held = [c for c in claims if brings_in_line(c.row) and c.row.user_id in members]
        if held:
            ctx.done(held, "already a member")
            claims = [c for c in claims if c not in held]
        if not claims:
            return
    _send(ctx, queue_id, claims)


def _send(ctx: Any, queue_id: str, claims: list[StepClaim]) -> None:
    try:
        ctx.call(KIND, ctx.client.add_queue_members, queue_id, [c.row.user_id for c in claims])
    except ApiError as err:
        if err.status != 404:
            raise
        if any(ctx.fresh(c.row) for c in claims):
            raise RetryLater(
                err.code, f"a new member is not known to the queue yet ({err})"
            ) from None
        if len(claims) == 1:
            ctx.failed(claims, err.code, f"the queue does not know this user: {err}")
            return
        half = len(claims) // 2
        _send(ctx, queue_id, claims[:half])
        _send(ctx, queue_id, claims[half:])
        return
    ctx.added_to_queue(queue_id, [c.row.user_id for c in claims])
    ctx.done(claims, "added")
