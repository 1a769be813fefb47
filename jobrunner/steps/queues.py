"""queue: membership of one queue, batched across rows.

Sends: POST /api/v2/routing/queues/{queueId}/members with up to 100 new members of one queue
(the API's limit): one call per queue per 100 people, not one per person. A batch goes out
when it is full, or when no more members of that queue can come in this run.
Done: the call succeeded, for every member in it. Safe to repeat: a member already there is
success. For people who were there before the job, the queue's members are read once per
run (a few pages) and those already in it are done without a write.
A batch refused with 404 (or 400 `invalid.id`: Genesys does not document which) names an
id the queue service does not know: while a member is
fresh from its create (ids take a few seconds to reach other services) the whole batch is
sent again after a backoff; after that it is split in halves until the member at fault is
found, and only that member's step fails.
"""

from __future__ import annotations

import threading

from jobrunner.ledger.model import StepClaim
from jobrunner.steps.contract import (
    Context,
    Outcome,
    StepKind,
    brings_in_line,
    done,
    send_splitting,
    unknown,
)
from jobrunner.validation import name_key

KIND = "queue"
PER_CALL = 100
_members_lock = threading.Lock()


def perform(ctx: Context, claims: list[StepClaim]) -> list[Outcome]:
    target = claims[0].target
    queue_id = ctx.names.id_of(KIND, target)
    if queue_id is None:
        return [unknown(KIND, target)]
    outcomes = []
    if any(brings_in_line(c.row) for c in claims):
        members = queue_members(ctx, queue_id)
        held = [c for c in claims if brings_in_line(c.row) and c.row.user_id in members]
        if held:
            outcomes.append(done(f"already in {ctx.names.name_of(KIND, target)}", claims=held))
            claims = [c for c in claims if c not in held]
    if claims:
        outcomes += _send(ctx, queue_id, claims)
    return outcomes


def _send(ctx: Context, queue_id: str, claims: list[StepClaim]) -> list[Outcome]:
    def send(batch: list[StepClaim]) -> None:
        ctx.call(KIND, ctx.client.add_queue_members, queue_id, [c.row.user_id for c in batch])

    def sent(batch: list[StepClaim]) -> Outcome:
        members = ctx.memo(KIND).get(queue_id)
        if members is not None:
            with _members_lock:
                members.update(c.row.user_id for c in batch)
        return done(f"added to {ctx.names.name_of(KIND, batch[0].target)}", claims=batch)

    def holds(claim: StepClaim) -> bool:
        """Is the person a member (joined, else not joined: Genesys lists them apart)?"""
        user_id = claim.row.user_id
        return queue_id in ctx.read(KIND, ctx.client.user_queue_ids, user_id) or (
            queue_id in ctx.read(KIND, ctx.client.user_queue_ids, user_id, False)
        )

    return send_splitting(
        ctx,
        claims,
        send,
        sent,
        not_known_yet="a new member is not known to the queue yet",
        not_known="the queue does not know this user",
        holds=holds,
    )


def queue_members(ctx: Context, queue_id: str) -> set[str]:
    """A queue's members, read once per run (every page) and kept up to date with what
    this run adds: people already in it need no write."""
    memo = ctx.memo(KIND)
    with _members_lock:
        known = memo.get(queue_id)
    if known is None:
        known, page = set(), 1
        while True:
            ids, more = ctx.read(KIND, ctx.client.queue_members_page, queue_id, page)
            known |= ids
            if not more:
                break
            page += 1
        with _members_lock:
            known = memo.setdefault(queue_id, known)
    return known


STEP = StepKind(
    KIND,
    perform,
    label="queues",
    calls=("for queues", "for queues"),
    permission="routing:queue:edit",
    claim="batch",
    batch_size=PER_CALL,
    names=("queue",),
    fields=("queues",),
    plan=lambda row: [name_key(queue) for queue in row.queue_names],
)
