"""Each step module alone, against a stand-in context (tests/stepkit.py): what it sends, and
the outcome it answers with. No ledger, no scheduler, no network."""

from __future__ import annotations

import pytest
from stepkit import (
    FakeContext,
    FakeNames,
    FakeRowWork,
    ScriptedClient,
    claim,
    perform,
    row,
)

from jobrunner.genesys import (
    ApiError,
    Created,
    FoundUser,
    TransportError,
    UserDetail,
    work_phone,
)
from jobrunner.ledger.model import Row
from jobrunner.steps import create, division, profile, queues, roles, rollback, skills
from jobrunner.steps.contract import Stopping, StopRun


def user(**fields: object) -> UserDetail:
    values: dict[str, object] = {
        "id": "user-ada@example.com",
        "version": 7,
        "state": "active",
        "division_id": "div-home",
        "manager_id": None,
        "location_ids": (),
        "title": None,
        "department": None,
        "phones": (),
        "extensions": (),
    }
    values.update(fields)
    if "phone" not in fields and "extension" not in fields:  # as the client reads them
        values["phone"], values["extension"] = work_phone(values.get("contacts", ()))  # type: ignore[arg-type]
    return UserDetail(**values)  # type: ignore[arg-type]


# -- roles ---------------------------------------------------------------------------------


def test_roles_grants_every_role_in_one_call_each_in_its_division() -> None:
    r = row(division="Sales", division_id="div-sales")
    names = FakeNames({("role", "agent"): "role-a", ("role", "lead"): "role-l"})
    names.ids[("division", "support")] = "div-support"
    ctx = FakeContext(ScriptedClient(), names)
    ctx.wanted[(r.id, "role")] = [("Agent", "agent", None, None), ("Lead", "lead", "Support", None)]
    (outcome,) = perform(roles.STEP, ctx, [claim(r, "roles")])
    assert (outcome.what, outcome.detail) == ("done", "2 grants")
    assert ctx.client.sent("grant_roles") == [
        ("user-ada@example.com", [("role-a", "div-sales"), ("role-l", "div-support")])
    ]


def test_roles_without_a_division_go_to_home_for_a_row_without_one() -> None:
    r = row()
    ctx = FakeContext(ScriptedClient(), FakeNames({("role", "agent"): "role-a"}, home="div-h"))
    ctx.wanted[(r.id, "role")] = [("Agent", "agent", None, None)]
    perform(roles.STEP, ctx, [claim(r, "roles")])
    assert ctx.client.sent("grant_roles") == [("user-ada@example.com", [("role-a", "div-h")])]


def test_roles_naming_an_unknown_role_fail_without_a_call() -> None:
    r = row()
    ctx = FakeContext(ScriptedClient())
    ctx.wanted[(r.id, "role")] = [("Ghost", "ghost", None, None)]
    (outcome,) = perform(roles.STEP, ctx, [claim(r, "roles")])
    assert (outcome.what, outcome.code) == ("failed", "unknown_name")
    assert "role 'Ghost'" in (outcome.message or "")
    assert ctx.client.calls == []


def test_roles_of_a_person_brought_in_line_send_only_what_is_missing() -> None:
    r = row(status="exists", settled_by="conflict", division_id="div-s")
    names = FakeNames({("role", "agent"): "role-a", ("role", "lead"): "role-l"})
    client = ScriptedClient(user_grants={("role-a", "div-s")})
    ctx = FakeContext(client, names)
    ctx.wanted[(r.id, "role")] = [("Agent", "agent", None, None), ("Lead", "lead", None, None)]
    (outcome,) = perform(roles.STEP, ctx, [claim(r, "roles")])
    assert client.sent("grant_roles") == [("user-ada@example.com", [("role-l", "div-s")])]
    assert outcome.detail == "added Lead in the user's division"
    client.answers["user_grants"] = {("role-a", "div-s"), ("role-l", "div-s")}
    (again,) = perform(roles.STEP, ctx, [claim(r, "roles")])
    assert again.detail == "no change" and len(client.sent("grant_roles")) == 1


# -- skills --------------------------------------------------------------------------------


def test_skills_go_fifty_a_call() -> None:
    r = row()
    many = [(f"S{i}", f"s{i}", None, float(i % 6)) for i in range(120)]
    names = FakeNames({("skill", f"s{i}"): f"id-{i}" for i in range(120)})
    ctx = FakeContext(ScriptedClient(), names)
    ctx.wanted[(r.id, "skill")] = many
    (outcome,) = perform(skills.STEP, ctx, [claim(r, "skills")])
    sizes = [len(args[1]) for args in ctx.client.sent("add_skills")]
    assert sizes == [50, 50, 20] and outcome.detail == "120 skills"


def test_skills_of_a_person_brought_in_line_send_a_new_proficiency() -> None:
    """A skill the person has at another proficiency is sent with the file's."""
    r = row(status="exists", settled_by="conflict")
    names = FakeNames({("skill", "english"): "sk-en", ("skill", "french"): "sk-fr"})
    client = ScriptedClient(user_skills={"sk-en": 2.0, "sk-fr": 3.0})
    ctx = FakeContext(client, names)
    ctx.wanted[(r.id, "skill")] = [("English", "english", None, 5.0), ("French", "french", None, 3)]
    (outcome,) = perform(skills.STEP, ctx, [claim(r, "skills")])
    assert client.sent("add_skills") == [("user-ada@example.com", [("sk-en", 5.0)])]
    assert outcome.detail == "set English 5"


# -- queues --------------------------------------------------------------------------------


def _queue_ctx(client: ScriptedClient) -> FakeContext:
    return FakeContext(client, FakeNames({("queue", "support"): "q-1"}), clock=10_000.0)


def test_a_queue_batch_goes_out_in_one_call() -> None:
    people = [row(f"p{i}@example.com") for i in range(3)]
    ctx = _queue_ctx(ScriptedClient())
    outcomes = perform(queues.STEP, ctx, [claim(p, "queue", "support") for p in people])
    assert ctx.client.sent("add_queue_members") == [
        ("q-1", [f"user-p{i}@example.com" for i in range(3)])
    ]
    assert [(o.what, o.detail, len(o.claims or ())) for o in outcomes] == [
        ("done", "added to Support", 3)
    ]


def test_a_queue_batch_refused_with_404_is_split_to_find_the_member_at_fault() -> None:
    people = [row(f"p{i}@example.com") for i in range(5)]

    def add(queue_id: str, ids: list[str]) -> None:
        if "user-p3@example.com" in ids:
            raise ApiError(404, "not.found", "user not found")

    client = ScriptedClient(add_queue_members=add)
    outcomes = perform(
        queues.STEP, _queue_ctx(client), [claim(p, "queue", "support") for p in people]
    )
    failed = [c.row.email for o in outcomes if o.what == "failed" for c in o.claims or ()]
    added = sorted(c.row.email for o in outcomes if o.what == "done" for c in o.claims or ())
    assert failed == ["p3@example.com"]
    assert added == ["p0@example.com", "p1@example.com", "p2@example.com", "p4@example.com"]


def test_a_queue_batch_with_a_fresh_member_is_retried_whole() -> None:
    people = [row("old@example.com"), row("new@example.com", settled_at=9_990.0)]
    client = ScriptedClient(add_queue_members=ApiError(404, "not.found", "unknown user"))
    (outcome,) = perform(
        queues.STEP, _queue_ctx(client), [claim(p, "queue", "support") for p in people]
    )
    assert (outcome.what, outcome.fresh, len(outcome.claims or ())) == ("retry", True, 2)
    assert len(client.sent("add_queue_members")) == 1


def test_an_answered_queue_batch_with_fresh_members_is_checked_on_its_newest() -> None:
    # Genesys does not say what a batch with an id it does not know yet answers: it may add
    # the others and skip that one with a success. The newest member is read back.
    people = [
        row("old@example.com"),
        row("newer@example.com", settled_at=9_980.0),
        row("newest@example.com", settled_at=9_990.0),
    ]
    client = ScriptedClient(user_queue_ids=set())  # skipped: in no queue, joined or not
    (outcome,) = perform(
        queues.STEP, _queue_ctx(client), [claim(p, "queue", "support") for p in people]
    )
    assert (outcome.what, outcome.fresh, len(outcome.claims or ())) == ("retry", True, 3)
    assert "newest@example.com does not have it yet" in (outcome.message or "")
    assert [args for args in client.sent("user_queue_ids")] == [
        ("user-newest@example.com",),
        ("user-newest@example.com", False),
    ]
    client = ScriptedClient(user_queue_ids=[set(), {"q-1"}])  # a member, not joined
    (outcome,) = perform(
        queues.STEP, _queue_ctx(client), [claim(p, "queue", "support") for p in people]
    )
    assert (outcome.what, len(outcome.claims or ())) == ("done", 3)
    # Nobody fresh: nothing to read back.
    client = ScriptedClient(user_queue_ids=set())
    (outcome,) = perform(
        queues.STEP, _queue_ctx(client), [claim(row("old@example.com"), "queue", "support")]
    )
    assert outcome.what == "done" and client.sent("user_queue_ids") == []


def test_members_already_in_the_queue_need_no_write() -> None:
    there = row("there@example.com", status="exists", settled_by="conflict")
    new = row("new@example.com")
    client = ScriptedClient(queue_members_page=({"user-there@example.com"}, False))
    outcomes = perform(
        queues.STEP,
        _queue_ctx(client),
        [claim(there, "queue", "support"), claim(new, "queue", "support")],
    )
    assert client.sent("add_queue_members") == [("q-1", ["user-new@example.com"])]
    assert sorted((o.detail, len(o.claims or ())) for o in outcomes) == [
        ("added to Support", 1),
        ("already in Support", 1),
    ]


# -- profile -------------------------------------------------------------------------------


def test_a_profile_sets_the_manager_made_by_this_job_and_the_location() -> None:
    r = row(email_manager="boss@example.com", location_work="Dublin")
    names = FakeNames({("manager", "boss@example.com"): "row", ("location", "dublin"): "loc-1"})
    client = ScriptedClient(update_user=8)
    ctx = FakeContext(client, names)
    ctx.managers["boss@example.com"] = {
        "line": 3,
        "source": "f.csv",
        "status": "created",
        "user_id": "user-boss",
        "error_message": None,
    }
    (outcome,) = perform(profile.STEP, ctx, [claim(r, "profile")])
    assert client.calls == [
        (
            "update_user",
            ("user-ada@example.com", 1),
            {"manager_id": "user-boss", "location_id": "loc-1"},
        )
    ]
    assert (outcome.detail, outcome.user_version) == ("manager, location", 8)


def test_a_profile_whose_managers_own_row_failed_waits_naming_that_row() -> None:
    r = row(email_manager="boss@example.com")
    ctx = FakeContext(ScriptedClient(), FakeNames({("manager", "boss@example.com"): "row"}))
    ctx.managers["boss@example.com"] = {
        "line": 9,
        "source": "f.csv",
        "status": "failed",
        "user_id": None,
        "error_message": "HTTP 400 bad phone",
    }
    (outcome,) = perform(profile.STEP, ctx, [claim(r, "profile")])
    assert (outcome.what, outcome.code) == ("wait", "manager_held")
    assert "their own row, line 9 of f.csv, is failed: HTTP 400 bad phone" in (
        outcome.message or ""
    )
    assert ctx.client.calls == []


def test_a_profile_whose_manager_the_run_creates_first_waits_for_it() -> None:
    r = row(email_manager="boss@example.com")
    ctx = FakeContext(ScriptedClient(), FakeNames({("manager", "boss@example.com"): "row"}))
    ctx.managers["boss@example.com"] = {
        "line": 4,
        "source": "f.csv",
        "status": "pending",
        "user_id": None,
        "error_message": None,
    }
    (outcome,) = perform(profile.STEP, ctx, [claim(r, "profile")])
    assert (outcome.what, outcome.code) == ("wait", "manager_pending")
    assert outcome.detail == (
        "manager boss@example.com set once the run creates them (line 4 of f.csv)"
    )
    assert ctx.client.calls == []


def test_a_profile_whose_manager_was_rolled_back_fails() -> None:
    r = row(email_manager="boss@example.com")
    ctx = FakeContext(ScriptedClient(), FakeNames({("manager", "boss@example.com"): "row"}))
    ctx.managers["boss@example.com"] = {
        "line": 9,
        "source": "f.csv",
        "status": "rolled_back",
        "user_id": None,
        "error_message": None,
    }
    (outcome,) = perform(profile.STEP, ctx, [claim(r, "profile")])
    assert (outcome.what, outcome.code) == ("failed", "manager_missing")
    assert "line 9 of f.csv" in (outcome.message or "")


def test_a_profile_refused_for_a_stale_version_reads_the_user_and_sends_again() -> None:
    r = row(location_work="Dublin")
    conflict = ApiError(409, "general.conflict", "The version supplied (1) does not match")
    client = ScriptedClient(update_user=[conflict, 12], get_user=user(version=11))
    ctx = FakeContext(client, FakeNames({("location", "dublin"): "loc-1"}))
    (outcome,) = perform(profile.STEP, ctx, [claim(r, "profile")])
    assert [args[1] for args in client.sent("update_user")] == [1, 11]
    assert outcome.user_version == 12


def test_once_a_create_version_went_stale_the_run_reads_versions_first() -> None:
    """Genesys moves a new user's version in its first seconds: after one stale create
    version, the next person's PATCH goes with a version read first (2 calls, not 3)."""
    conflict = ApiError(409, "general.conflict", "The version supplied (1) does not match")
    client = ScriptedClient(update_user=[conflict, 12, 22], get_user=user(version=21))
    ctx = FakeContext(client, FakeNames({("location", "dublin"): "loc-1"}))
    first, second = row(location_work="Dublin"), row("bo@example.com", location_work="Dublin")
    perform(profile.STEP, ctx, [claim(first, "profile")])
    client.calls.clear()
    (outcome,) = perform(profile.STEP, ctx, [claim(second, "profile")])
    assert [name for name, _a, _k in client.calls] == ["get_user", "update_user"]
    assert client.sent("update_user")[0][1] == 21 and outcome.user_version == 22
    # A run that never saw a stale version sends the create's version, one call.
    fresh = ScriptedClient(update_user=5)
    perform(
        profile.STEP,
        FakeContext(fresh, FakeNames({("location", "dublin"): "loc-1"})),
        [claim(second, "profile")],
    )
    assert [name for name, _a, _k in fresh.calls] == ["update_user"]


def test_an_extension_alone_keeps_the_persons_work_number() -> None:
    """An empty phone cell changes nothing: the number stays, the extension is set."""
    r = row(status="exists", settled_by="conflict", extension="204")
    number = {"address": "+13175550101", "mediaType": "PHONE", "type": "WORK"}
    client = ScriptedClient(get_user=user(contacts=(number,)), update_user=8)
    (outcome,) = perform(profile.STEP, FakeContext(client), [claim(r, "profile")])
    (sent,) = client.calls[1:]
    assert sent[2]["contacts"] == [{**number, "extension": "204"}]
    assert outcome.detail == "set phone"


# -- division and rollback -----------------------------------------------------------------


def test_a_division_move_only_when_the_user_is_elsewhere() -> None:
    r = row(status="exists", settled_by="conflict", division="Sales", division_id="div-s")
    client = ScriptedClient(get_user=user(division_id="div-s"))
    (same,) = perform(division.STEP, FakeContext(client), [claim(r, "division")])
    assert same.detail == "no change" and client.sent("move_to_division") == []
    client.answers["get_user"] = user(division_id="div-home")
    (moved_out,) = perform(division.STEP, FakeContext(client), [claim(r, "division")])
    assert client.sent("move_to_division") == [("div-s", ["user-ada@example.com"])]
    assert moved_out.detail == "moved to Sales"


def test_a_rollback_of_a_user_already_gone_is_done() -> None:
    client = ScriptedClient(delete_user=ApiError(404, "not.found", "no such user"))
    (outcome,) = perform(rollback.STEP, FakeContext(client), [claim(row(), "rollback")])
    assert (outcome.what, outcome.detail, outcome.row_status) == (
        "done",
        "already gone",
        "rolled_back",
    )


def test_a_rollback_refused_otherwise_is_left_to_the_shared_rules() -> None:
    client = ScriptedClient(delete_user=ApiError(503, "service.unavailable", "later"))
    with pytest.raises(ApiError):
        perform(rollback.STEP, FakeContext(client), [claim(row(), "rollback")])


# -- create --------------------------------------------------------------------------------


def _pending(email: str = "ada@example.com", **fields: object) -> FakeRowWork:
    values = {
        "status": "in_progress",
        "user_id": None,
        "user_version": None,
        "settled_by": None,
        "settled_at": None,
    }
    values.update(fields)
    return FakeRowWork(row(email, **values))


def found(**fields: object) -> FoundUser:
    values: dict[str, object] = {
        "id": "there",
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "state": "active",
        "division_id": None,
        "title": None,
        "department": None,
        "phones": (),
    }
    values.update(fields)
    return FoundUser(**values)  # type: ignore[arg-type]


def test_a_create_is_marked_sent_before_it_goes_and_settles_created() -> None:
    work = _pending()
    marked_when_sent: list[list[str | None]] = []

    def create_user(new: object) -> Created:
        marked_when_sent.append(list(work.sent))
        return Created("new-id", 1)

    ctx = FakeContext(ScriptedClient(create_user=create_user))
    (outcome,) = perform(create.STEP, ctx, work)
    assert marked_when_sent == [[None]]
    settled = outcome.settled
    assert settled is not None
    assert (settled.status, settled.user_id, settled.settled_by, settled.steps) == (
        "created",
        "new-id",
        "create",
        "pending",
    )


def test_a_409_on_a_clean_row_is_someone_who_was_there() -> None:
    work = _pending()
    client = ScriptedClient(
        create_user=ApiError(409, "general.conflict", "email in use"),
        find_user_by_email=found(id="someone"),
    )
    (outcome,) = perform(create.STEP, FakeContext(client), work)
    assert outcome.what == "recorded"
    assert [s.status for s in work.settled_now] == ["exists"]
    assert work.found == [("someone", None, "active")]


def test_a_row_in_doubt_is_looked_up_and_its_own_user_is_never_created_again() -> None:
    work = _pending(in_doubt=1, first_sent_at=None)
    client = ScriptedClient(find_user_by_email=found(id="ours"))
    (outcome,) = perform(create.STEP, FakeContext(client), work)
    assert outcome.settled is not None
    assert (outcome.settled.status, outcome.settled.settled_by) == ("created", "lookup")
    assert client.sent("create_user") == [] and work.sent == []


def test_a_row_in_doubt_whose_user_differs_is_exists() -> None:
    work = _pending(in_doubt=1)
    client = ScriptedClient(find_user_by_email=found(id="other", name="Somebody Else"))
    (outcome,) = perform(create.STEP, FakeContext(client), work)
    assert outcome.settled is not None and outcome.settled.status == "exists"
    assert client.sent("create_user") == []


def test_a_conflict_seen_is_only_ever_looked_up_again() -> None:
    """A 409 after an unanswered create, the search still empty: never create, look again;
    when the attempts run out the row says why it is not failed as if nobody were there."""
    work = _pending(in_doubt=create.CONFLICT_SEEN)
    client = ScriptedClient(find_user_by_email=None)
    (outcome,) = perform(create.STEP, FakeContext(client), work)
    assert outcome.what == "retry" and client.sent("create_user") == []
    assert outcome.exhausted is not None and outcome.exhausted[0] == "conflict.unresolved"


def test_a_5xx_on_the_create_leaves_the_row_in_doubt() -> None:
    work = _pending()
    client = ScriptedClient(create_user=ApiError(503, "service.unavailable", "later"))
    with pytest.raises(ApiError):
        perform(create.STEP, FakeContext(client), work)
    assert work.doubt == create.MAYBE_SENT and work.sent == [None]


def test_a_refused_connection_leaves_the_row_clean() -> None:
    work = _pending()
    client = ScriptedClient(create_user=TransportError("connect", "refused", maybe_acted=False))
    with pytest.raises(TransportError):
        perform(create.STEP, FakeContext(client), work)
    assert work.doubt == 0


def test_a_damaged_ledger_row_is_never_sent() -> None:
    work = _pending(email="ADA@example.com ")  # ingest stores it trimmed
    client = ScriptedClient()
    (outcome,) = perform(create.STEP, FakeContext(client), work)
    assert (outcome.what, outcome.code) == ("failed", "ledger_row_invalid")
    assert client.calls == [] and work.sent == []


def test_a_403_without_a_division_stops_the_run() -> None:
    work = _pending()
    client = ScriptedClient(create_user=ApiError(403, "missing.permissions", "no"))
    with pytest.raises(StopRun, match="directory:user:add"):
        perform(create.STEP, FakeContext(client), work)


def test_a_stopping_run_sends_nothing() -> None:
    work = _pending()
    ctx = FakeContext(ScriptedClient(), stopping=True)
    with pytest.raises(Stopping):
        perform(create.STEP, ctx, work)
    assert ctx.client.sent("create_user") == [] and work.sent == []


def test_a_restore_is_committed_before_it_is_sent() -> None:
    work = _pending(in_doubt=0)
    ctx = FakeContext(
        ScriptedClient(
            create_user=ApiError(409, "general.conflict", "email in use"),
            find_user_by_email=found(id="gone", state="deleted", version=4),
            restore_user=lambda user_id, version: (work.restoring == ["gone"] and 5) or 0,
        ),
        restore_deleted=True,
    )
    (outcome,) = perform(create.STEP, ctx, work)
    assert outcome.settled is not None
    assert (outcome.settled.settled_by, outcome.settled.user_version) == ("restore", 5)


def test_every_step_module_is_on_the_contract() -> None:
    """The registry lists each step with its kind, a perform and a way to be claimed."""
    from jobrunner import steps

    kinds = [s.kind for s in steps.ALL]
    assert len(kinds) == len(set(kinds))
    for step in steps.ALL:
        assert callable(step.perform) and step.claim in ("row", "one", "batch")
        assert step.calls[0] and step.permission


# -- the real API's dialect ------------------------------------------------------------------


def _stale(status: int) -> ApiError:
    if status == 409:
        return ApiError(409, "general.conflict", "The version supplied (1) does not match")
    return ApiError(400, "bad.request", "The version 1 does not match the current version (2)")


@pytest.mark.parametrize("status", [409, 400])
def test_five_stale_versions_in_a_row_end_with_the_profile_done(status: int) -> None:
    r = row(location_work="Dublin")
    client = ScriptedClient(
        update_user=[_stale(status)] * 5 + [13],
        get_user=[user(version=v) for v in range(2, 7)],
    )
    ctx = FakeContext(client, FakeNames({("location", "dublin"): "loc-1"}))
    (outcome,) = perform(profile.STEP, ctx, [claim(r, "profile")])
    assert (outcome.what, outcome.user_version) == ("done", 13)
    assert [args[1] for args in client.sent("update_user")] == [1, 2, 3, 4, 5, 6]
    assert len(ctx.waited) == 5


def test_a_version_that_never_settles_is_retried_later_not_failed() -> None:
    r = row(location_work="Dublin")
    client = ScriptedClient(
        update_user=lambda *a, **k: (_ for _ in ()).throw(_stale(400)),
        get_user=lambda *a, **k: user(version=2),
    )
    ctx = FakeContext(client, FakeNames({("location", "dublin"): "loc-1"}))
    (outcome,) = perform(profile.STEP, ctx, [claim(r, "profile")])
    assert outcome.what == "retry" and "version kept changing" in (outcome.message or "")


def test_a_400_that_is_not_about_the_version_is_not_retried() -> None:
    r = row(location_work="Dublin")
    client = ScriptedClient(update_user=ApiError(400, "bad.request", "locations: no such id"))
    ctx = FakeContext(client, FakeNames({("location", "dublin"): "loc-1"}))
    with pytest.raises(ApiError):
        perform(profile.STEP, ctx, [claim(r, "profile")])
    assert len(client.sent("update_user")) == 1


def test_a_number_read_back_only_in_the_display_is_not_sent_again() -> None:
    """Shape 3: a number with an extension comes back with the number in `display`."""
    r = row(status="exists", settled_by="conflict", phone_number="+13175550101", extension="204")
    shape3 = {
        "display": "+1 317-555-0101",
        "extension": "204",
        "mediaType": "PHONE",
        "type": "WORK",
    }
    client = ScriptedClient(
        get_user=user(contacts=(shape3,), phone="+13175550101", extension="204")
    )
    (outcome,) = perform(profile.STEP, FakeContext(client), [claim(r, "profile")])
    assert outcome.detail == "no change" and client.sent("update_user") == []


def test_an_extension_alone_keeps_a_number_read_back_only_in_the_display() -> None:
    r = row(status="exists", settled_by="conflict", extension="205")
    shape3 = {"display": "+13175550101", "extension": "204", "mediaType": "PHONE", "type": "WORK"}
    client = ScriptedClient(
        get_user=user(contacts=(shape3,), phone="+13175550101", extension="204"), update_user=3
    )
    perform(profile.STEP, FakeContext(client), [claim(r, "profile")])
    ((_, _version), kwargs) = [(a, k) for n, a, k in client.calls if n == "update_user"][0]
    assert kwargs["contacts"] == [
        {"mediaType": "PHONE", "type": "WORK", "address": "+13175550101", "extension": "205"}
    ]


def test_a_user_read_without_its_locations_is_read_again_before_anything_is_sent() -> None:
    """`expand` is best effort: a left-out expansion is unknown, not 'no location'."""
    r = row(status="exists", settled_by="conflict", location_work="Dublin")
    noted = {"id": "loc-1", "notes": "desk 4"}
    client = ScriptedClient(
        get_user=[
            user(locations_known=False),
            user(location_ids=("loc-1",), locations=(noted,)),
        ]
    )
    ctx = FakeContext(client, FakeNames({("location", "dublin"): "loc-1"}))
    (outcome,) = perform(profile.STEP, ctx, [claim(r, "profile")])
    assert outcome.detail == "no change" and client.sent("update_user") == []


def test_a_delete_refused_for_a_version_is_sent_again() -> None:
    client = ScriptedClient(delete_user=[_stale(400), _stale(409), None])
    ctx = FakeContext(client)
    (outcome,) = perform(rollback.STEP, ctx, [claim(row(), "rollback")])
    assert (outcome.what, outcome.detail) == ("done", "deleted")
    assert len(client.sent("delete_user")) == 3


# -- roles granted to many people per call ----------------------------------------------------


def _roles_ctx(client: ScriptedClient, people: list[Row]) -> FakeContext:
    names = FakeNames({("role", "agent"): "role-a", ("division", "support"): "div-s"})
    ctx = FakeContext(client, names, clock=10_000.0)
    for r in people:
        ctx.wanted[(r.id, "role")] = [("Agent", "agent", "Support", None)]
    return ctx


def test_one_role_is_granted_to_a_whole_batch_in_one_call() -> None:
    people = [row(f"p{i}@example.com") for i in range(5)]
    client = ScriptedClient()
    ctx = _roles_ctx(client, people)
    outcomes = perform(roles.STEP, ctx, [claim(p, "roles", "agent|support") for p in people])
    assert client.sent("grant_role_to_many") == [
        ("role-a", "div-s", [f"user-p{i}@example.com" for i in range(5)])
    ]
    assert [(o.what, len(o.claims or ())) for o in outcomes] == [("done", 5)]


@pytest.mark.parametrize(
    "refusal", [ApiError(404, "not.found", "no"), ApiError(400, "invalid.id", "x")]
)
def test_a_role_batch_refused_for_one_id_is_split_to_find_it(refusal: ApiError) -> None:
    people = [row(f"p{i}@example.com") for i in range(6)]

    def grant(role_id: str, division_id: str, ids: list[str]) -> None:
        if "user-p4@example.com" in ids:
            raise refusal

    client = ScriptedClient(grant_role_to_many=grant)
    outcomes = perform(
        roles.STEP, _roles_ctx(client, people), [claim(p, "roles", "agent|support") for p in people]
    )
    failed = [c.row.email for o in outcomes if o.what == "failed" for c in o.claims or ()]
    done_ = sorted(c.row.email for o in outcomes if o.what == "done" for c in o.claims or ())
    assert failed == ["p4@example.com"] and len(done_) == 5


def test_a_role_batch_with_a_user_fresh_from_its_create_is_retried_whole() -> None:
    people = [row("old@example.com"), row("new@example.com", settled_at=9_995.0)]
    client = ScriptedClient(grant_role_to_many=ApiError(404, "not.found", "unknown subject"))
    (outcome,) = perform(
        roles.STEP, _roles_ctx(client, people), [claim(p, "roles", "agent|support") for p in people]
    )
    assert (outcome.what, outcome.fresh, len(outcome.claims or ())) == ("retry", True, 2)


def test_an_answered_role_batch_with_fresh_people_is_checked_on_its_newest() -> None:
    people = [row("old@example.com"), row("new@example.com", settled_at=9_995.0)]
    client = ScriptedClient(user_grants=[set(), {("role-a", "div-s")}])
    ctx = _roles_ctx(client, people)
    claims = [claim(p, "roles", "agent|support") for p in people]
    (outcome,) = perform(roles.STEP, ctx, claims)
    assert (outcome.what, outcome.fresh, len(outcome.claims or ())) == ("retry", True, 2)
    assert client.sent("user_grants") == [("user-new@example.com",)]
    (outcome,) = perform(roles.STEP, ctx, claims)  # sent again; now the newest holds it
    assert (outcome.what, len(outcome.claims or ())) == ("done", 2)
    assert len(client.sent("grant_role_to_many")) == 2
    # A read back that 404s (the service does not know the id yet) is "not yet".
    client = ScriptedClient(user_grants=ApiError(404, "not.found", "no such subject"))
    (outcome,) = perform(roles.STEP, _roles_ctx(client, people), claims)
    assert (outcome.what, outcome.fresh) == ("retry", True)


def test_a_read_back_that_cannot_say_leaves_the_answered_batch_done() -> None:
    people = [row("old@example.com"), row("new@example.com", settled_at=9_995.0)]
    client = ScriptedClient(user_grants=ApiError(403, "missing.permissions", "no"))
    (outcome,) = perform(
        roles.STEP, _roles_ctx(client, people), [claim(p, "roles", "agent|support") for p in people]
    )
    assert (outcome.what, len(outcome.claims or ())) == ("done", 2)


def test_the_read_back_is_of_the_newest_id_not_of_a_restored_one() -> None:
    # A person restored a moment ago has an old id every service knows: it stands for nothing.
    made = row("made@example.com", settled_at=9_990.0)
    restored = row("restored@example.com", settled_at=9_998.0, settled_by="restore")
    client = ScriptedClient(user_grants=set())
    ctx = _roles_ctx(client, [made, restored])
    (outcome,) = perform(
        roles.STEP, ctx, [claim(p, "roles", "agent|support") for p in (made, restored)]
    )
    # (the restored person's grants are read first, as for everyone brought in line)
    assert client.sent("user_grants")[-1] == ("user-made@example.com",)
    assert outcome.what == "retry"
    # Nobody made by a create: nothing read back.
    client = ScriptedClient(user_grants=set())
    (outcome,) = perform(
        roles.STEP, _roles_ctx(client, [restored]), [claim(restored, "roles", "agent|support")]
    )
    assert outcome.what == "done"
    assert client.sent("user_grants") == [("user-restored@example.com",)]  # in line, only


def test_people_brought_in_line_join_the_batch_with_only_what_they_miss() -> None:
    holds = row("holds@example.com", status="exists", settled_by="conflict")
    misses = row("misses@example.com", status="exists", settled_by="conflict")
    new = row("new@example.com")
    client = ScriptedClient(
        user_grants=lambda user_id: {("role-a", "div-s")} if "holds" in user_id else set()
    )
    ctx = _roles_ctx(client, [holds, misses, new])
    outcomes = perform(
        roles.STEP, ctx, [claim(p, "roles", "agent|support") for p in (holds, misses, new)]
    )
    assert client.sent("grant_role_to_many") == [
        ("role-a", "div-s", ["user-misses@example.com", "user-new@example.com"])
    ]
    assert sorted(o.detail or "" for o in outcomes) == [
        "added Agent in Support",
        "already holds Agent in Support",
    ]
