"""Run one step module alone, with no ledger, no scheduler and no network (River's
`rivertest` idea): a stand-in for the run's context (`FakeContext`, the contract's
`Context`), a scripted client, and claims built from plain rows. `perform` returns the
step's outcomes, or what a call raised, exactly as the scheduler would receive them."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobrunner.ledger.model import Row, StepClaim
from jobrunner.steps import brought_in_line_steps
from jobrunner.steps.contract import Outcome, Settled, StepKind, Stopping

_ids = itertools.count(1)


def row(email: str = "ada@example.com", **fields: Any) -> Row:
    """A ledger row as a step sees it: a person the job created, unless `fields` say other."""
    values: dict[str, Any] = {
        "id": next(_ids),
        "line": 2,
        "name": "Ada Lovelace",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": email,
        "phone_number": None,
        "extension": None,
        "division": None,
        "division_id": None,
        "title": None,
        "department": None,
        "email_manager": None,
        "location_work": None,
        "status": "created",
        "attempts": 0,
        "in_doubt": 0,
        "user_id": f"user-{email}",
        "user_version": 1,
        "settled_by": "create",
        "settled_at": 0.0,
        "user_state": None,
        "first_sent_at": None,
    }
    values.update(fields)
    return Row(**values)


def claim(r: Row, kind: str, target: str = "", attempts: int = 0) -> StepClaim:
    return StepClaim(r, kind, target, attempts)


class ScriptedClient:
    """Answers each call from `answers[name]`: a value, a callable of the call's arguments,
    or an exception to raise; a list is used up one answer a call. Records every call."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            if name not in self.answers:
                return None
            answer = self.answers[name]
            if isinstance(answer, list):
                answer = answer.pop(0)
            if isinstance(answer, BaseException):
                raise answer
            if callable(answer):
                return answer(*args, **kwargs)
            return answer

        return call

    def sent(self, name: str) -> list[tuple[Any, ...]]:
        """The arguments of every call of `name`, in order."""
        return [args for n, args, _kw in self.calls if n == name]


@dataclass
class FakeNames:
    ids: dict[tuple[str, str], str] = field(default_factory=dict)
    home: str = "home-division"
    unknown: list[str] = field(default_factory=list)

    def id_of(self, kind: str, name: str) -> str | None:
        return self.ids.get((kind, name.strip().lower()))

    def name_of(self, kind: str, name: str) -> str:
        return name.strip().title()

    def home_division_id(self) -> str:
        return self.home

    def problems(self, row: Row) -> list[str]:
        return list(self.unknown)


@dataclass
class FakeContext:
    """The contract's Context with nothing behind it: calls go straight to `client`."""

    client: Any
    names: FakeNames = field(default_factory=FakeNames)
    update_existing: bool = False
    restore_deleted: bool = False
    step_delay_s: float = 0.0
    dry_run: bool = False
    clock: float = 1000.0
    wanted: dict[tuple[int, str], list[tuple[str, str, str | None, float | None]]] = field(
        default_factory=dict
    )
    managers: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopping: bool = False
    memos: dict[str, dict[str, Any]] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)  # the kind of every call, in order
    waited: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.clock

    def call(
        self,
        kind: str,
        fn: Callable[..., Any],
        *args: Any,
        before_send: Callable[[], bool] | None = None,
        **kwargs: Any,
    ) -> Any:
        if self.stopping or (before_send is not None and not before_send()):
            raise Stopping
        self.kinds.append(kind)
        return fn(*args, **kwargs)

    def read(self, kind: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.call(kind, fn, *args, **kwargs)

    def wait(self, seconds: float) -> None:
        self.waited.append(seconds)
        self.clock += seconds

    def wants(self, row: Row, kind: str) -> list[tuple[str, str, str | None, float | None]]:
        return self.wanted.get((row.id, kind), [])

    def manager_row(self, email: str) -> dict[str, Any] | None:
        return self.managers.get(email.strip().lower())

    def memo(self, kind: str) -> dict[str, Any]:
        return self.memos.setdefault(kind, {})

    def brought_in_line_steps(self, row: Row) -> tuple[tuple[str, str], ...]:
        return brought_in_line_steps(row)


@dataclass
class FakeRowWork:
    """The create's RowWork with nothing behind it: records what the create committed."""

    row: Row
    doubt: int = 0
    answered: bool = False
    sent: list[str | None] = field(default_factory=list)  # division ids of marked sends
    restoring: list[str] = field(default_factory=list)
    settled_now: list[Settled] = field(default_factory=list)
    found: list[tuple[str | None, str | None, str | None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.doubt = self.row.in_doubt

    def mark_sent(self, division_id: str | None) -> bool:
        self.sent.append(division_id)
        return True

    def mark_restoring(self, user_id: str) -> bool:
        self.restoring.append(user_id)
        return True

    def settle_now(self, settled: Settled, *, quiet: bool = False) -> bool:
        self.settled_now.append(settled)
        return True

    def add_found(self, user_id: str | None, note: str | None, state: str | None) -> None:
        self.found.append((user_id, note, state))


def perform(step: StepKind, ctx: FakeContext, work: Any) -> list[Outcome]:
    """The step's outcomes for `work` (claims, or a FakeRowWork for the create), as a list."""
    result = step.perform(ctx, work)
    return [result] if isinstance(result, Outcome) else list(result)
