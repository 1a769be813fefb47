"""roles: every role grant a row asks for, granted to many people per call.

A row's grants are planned one step each (target: `role|division`, the names' keys, the
division the row's own when the file gives none). Steps of one target are claimed together
across people, up to PER_CALL (Genesys documents no cap; 100, like queue members), and a
batch goes out when it is full or when no more of that target can come in this run.

Sends: POST /api/v2/authorization/roles/{roleId}?subjectType=PC_USER with
{"subjectIds": [...], "divisionIds": [division]}: every person in it gets the role in the
division. A role without [division] is granted in the division the person was created in
(Home when none). For a person brought in line with the file (there before, restored,
corrected), the user's grants are read once per run and only the missing ones join the
batches (nothing is ever removed). Done: the call succeeded (a grant held already is
success). A batch refused for an id the authorization service does not know (a 404, or a 400
naming the id) is sent again after a backoff while a member is fresh from its create, then
split in halves to find the member at fault; only that member's step fails.

A step planned by an earlier jobrunner (target "": every grant of its row) is sent with one
bulkadd per person, as it was then.
"""

from __future__ import annotations

import threading
from dataclasses import replace

from jobrunner.ledger.model import Row, StepClaim
from jobrunner.steps.contract import (
    Context,
    Outcome,
    StepKind,
    brings_in_line,
    done,
    failed,
    send_splitting,
    unknown,
)
from jobrunner.validation import name_key

KIND = "roles"
PER_CALL = 100
SEP = "|"
_held_lock = threading.Lock()


def targets(row: object) -> list[str]:
    """The row's grants as step targets: `role|division` (name keys; the division the row's
    own when the file names none)."""
    roles = getattr(row, "roles", ())
    if not roles:
        return []
    own = name_key(getattr(row, "division", None) or "")
    found: list[str] = []
    for role, division in roles:
        target = f"{name_key(role)}{SEP}{name_key(division) if division else own}"
        if target not in found:
            found.append(target)
    return found


def perform(ctx: Context, claims: list[StepClaim]) -> list[Outcome]:
    if claims[0].target == "":
        return [_one_call_per_person(ctx, c) for c in claims]
    outcomes: list[Outcome] = []
    batches: dict[tuple[str, str, str], list[StepClaim]] = {}
    for claim in claims:
        grant = _grant(ctx, claim)
        if isinstance(grant, Outcome):
            outcomes.append(_for(grant, [claim]))
            continue
        role_id, division_id, label = grant
        if brings_in_line(claim.row) and (role_id, division_id) in _held(ctx, claim.row):
            outcomes.append(done(f"already holds {label}", claims=[claim]))
            continue
        batches.setdefault((role_id, division_id, label), []).append(claim)
    for (role_id, division_id, label), batch in batches.items():
        for start in range(0, len(batch), PER_CALL):
            outcomes += _send(ctx, role_id, division_id, label, batch[start : start + PER_CALL])
    return outcomes


def _grant(ctx: Context, claim: StepClaim) -> tuple[str, str, str] | Outcome:
    """(role id, division id, "Role in Division") of the claim's target, as the org spells
    them; an outcome when a name is not in the org."""
    role_key, _, division_key = claim.target.partition(SEP)
    row = claim.row
    for name, key, division, _level in ctx.wants(row, "role"):
        if key != role_key or name_key(division or row.division or "") != division_key:
            continue
        role_id = ctx.names.id_of("role", name)
        if role_id is None:
            return unknown("role", name)
        if division:
            division_id = ctx.names.id_of("division", division)
            if division_id is None:
                return unknown("division", division)
        else:
            division_id = _grant_division(ctx, row)
        where = division or row.division
        place = ctx.names.name_of("division", where) if where else "the user's division"
        return role_id, division_id, f"{ctx.names.name_of('role', name)} in {place}"
    return failed("plan_changed", f"the row no longer asks for {claim.target!r}")


def _grant_division(ctx: Context, row: Row) -> str:
    """The division of a grant the file gives without one: the row's (where the create puts
    the person, and where a person brought in line is moved), known by its name even before
    a create has recorded its id; else where the person is."""
    if row.division_id:
        return row.division_id
    named = ctx.names.id_of("division", row.division) if row.division else None
    return named or _own_division(ctx, row)


def _own_division(ctx: Context, row: Row) -> str:
    """Where a grant without a division goes: a person brought in line is where they are
    (read once per run), a new user where it was created (Home)."""
    if not brings_in_line(row):
        return ctx.names.home_division_id()
    memo = ctx.memo(KIND)
    key = f"division:{row.user_id}"
    with _held_lock:
        known = memo.get(key)
    if known is None:
        known = str(ctx.read(KIND, ctx.client.get_user, row.user_id).division_id)
        with _held_lock:
            memo[key] = known
    return str(known)


def _held(ctx: Context, row: Row) -> set[tuple[str, str]]:
    """The grants a person brought in line holds, read once per run."""
    memo = ctx.memo(KIND)
    with _held_lock:
        held = memo.get(str(row.user_id))
    if held is None:
        held = set(ctx.read(KIND, ctx.client.user_grants, row.user_id))
        with _held_lock:
            held = memo.setdefault(str(row.user_id), held)
    return held


def _send(
    ctx: Context, role_id: str, division_id: str, label: str, claims: list[StepClaim]
) -> list[Outcome]:
    def send(batch: list[StepClaim]) -> None:
        users = [str(c.row.user_id) for c in batch]
        ctx.call(KIND, ctx.client.grant_role_to_many, role_id, division_id, users)

    def sent(batch: list[StepClaim]) -> Outcome:
        held = ctx.memo(KIND)
        with _held_lock:
            for c in batch:
                if str(c.row.user_id) in held:
                    held[str(c.row.user_id)].add((role_id, division_id))
        return done(f"added {label}", claims=batch)

    def holds(claim: StepClaim) -> bool:
        grants = ctx.read(KIND, ctx.client.user_grants, claim.row.user_id)
        return (role_id, division_id) in grants

    return send_splitting(
        ctx,
        claims,
        send,
        sent,
        not_known_yet="a new user is not known to the authorization service yet",
        not_known=f"{label}: the API does not know this user",
        holds=holds,
    )


def _for(outcome: Outcome, claims: list[StepClaim]) -> Outcome:
    """The same outcome, about these claims only."""
    return replace(outcome, claims=tuple(claims))


# -- steps planned by an earlier jobrunner: one bulkadd per person -------------------------


def _one_call_per_person(ctx: Context, claim: StepClaim) -> Outcome:
    """Every grant of the claim's row in one bulkadd (target "")."""
    row = claim.row
    grants: dict[tuple[str, str], str] = {}
    for name, _key, division, _level in ctx.wants(row, "role"):
        role_id = ctx.names.id_of("role", name)
        if role_id is None:
            return _for(unknown("role", name), [claim])
        if division:
            division_id = ctx.names.id_of("division", division)
            if division_id is None:
                return _for(unknown("division", division), [claim])
        else:
            division_id = _grant_division(ctx, row)
        where = division or row.division or "the user's division"
        grants.setdefault((role_id, division_id), f"{name} in {where}")
    detail = f"{len(grants)} grants"
    if brings_in_line(row):
        held = _held(ctx, row)
        grants = {g: label for g, label in grants.items() if g not in held}
        if not grants:
            return done("no change", claims=[claim])
        detail = "added " + ", ".join(grants.values())
    ctx.call(KIND, ctx.client.grant_roles, row.user_id, list(grants))
    if brings_in_line(row):
        held = _held(ctx, row)
        with _held_lock:
            held.update(grants)
    return done(detail, claims=[claim])


STEP = StepKind(
    KIND,
    perform,
    calls=("for roles", "for roles"),
    permission="authorization:grant:add",
    claim="batch",
    batch_size=PER_CALL,
    names=("role", "division"),
    plan=targets,
    fields=("roles_divisions", "division"),
)
