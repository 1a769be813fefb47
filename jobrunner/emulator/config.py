"""EmulatorConfig: what the emulated org looks like and how badly it behaves, in one place.

Each field that `jobrunner emulator` offers carries an `Option` in its metadata: the flag, the
help, the bounds or choices. EmulatorConfig checks its values against them, and command.py
builds its click options from them, so adding an option is adding one field here:

    fault_5xx_rate: float = option(0.0, "--fault-5xx-rate", "Share of ...", low=0, high=1)

Only the standard library is imported here (the CLI imports this module at start-up).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()


@dataclass(frozen=True)
class Option:
    """How a field is given on the command line, and the values it takes.

    kind: "str", "uuid", "int", "float", "bool" (a --flag/--no-flag pair), "choice" or
    "path" (a file; `exists` says it must be there). low/high bound numbers (`low_open`: low
    itself is refused); choices list a choice's values. `multiple`: the flag may repeat and `parse`
    turns the tuple of values into the field's value (a ValueError from it is a usage error,
    exit 2). `load` turns the given path into the field's value when the emulator starts (an
    OSError or ValueError from it is a one-line error, exit 1). `cli_default`: the command's
    default where it differs from the field's.
    """

    flag: str
    help: str
    kind: str = "str"
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: Sequence[str] = ()
    metavar: str | None = None
    envvar: str | None = None
    multiple: bool = False
    parse: Callable[[tuple[str, ...]], Any] | None = None
    load: Callable[[Path], Any] | None = None
    exists: bool = False
    cli_default: Any = UNSET
    show_default: bool = True

    def check(self, name: str, value: Any) -> None:
        """ValueError naming the field when `value` is out of bounds or not a choice."""
        if value is None:
            return
        if self.kind == "uuid" and not _is_uuid(value):
            raise ValueError(f"{name} must be a UUID, not {value!r}")
        if self.kind == "choice" and value not in self.choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, self.choices))}")
        if self.kind in ("int", "float"):
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                bound = "greater than" if self.low_open else "at least"
                raise ValueError(f"{name} must be {bound} {self.low:g}")
            if self.high is not None and value > self.high:
                raise ValueError(f"{name} must be at most {self.high:g}")


def option(default: Any, flag: str, help: str, **kw: Any) -> Any:
    """A dataclass field with an Option: `option(default, flag, help, **Option fields)`. A
    list, dict or set default is copied for each config."""
    meta = {"option": Option(flag, help, **kw)}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def options() -> list[tuple[str, Option, Any]]:
    """(field name, Option, field default) for every field the command line offers, in the
    order of the fields."""
    found = []
    for f in fields(EmulatorConfig):
        opt = f.metadata.get("option")
        if opt is None:
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        found.append((f.name, opt, default))
    return found


def _is_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and len(value) == 36 and bool(uuid.UUID(value))
    except ValueError:
        return False


def _stable_uuid(seed: int | None, name: str) -> str:
    """The same version-4 UUID for the same seed and name (a random one without a seed)."""
    if seed is None:
        return str(uuid.uuid4())
    digest = hashlib.sha256(f"{seed}\0organization\0{name}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _pool(value: str) -> bool:
    """True for START-END, digit strings of one length, START not above END."""
    start, sep, end = value.partition("-")
    if not (
        sep
        and start.isdigit()
        and end.isdigit()
        and len(start) == len(end)
        and int(start) <= int(end)
    ):
        raise ValueError(f"{value!r} is not START-END (digits of one length, START <= END)")
    return True


def parse_divisions(values: tuple[str, ...]) -> dict[str, str]:
    """`--division NAME=UUID` values as a {name: id} dict."""
    divisions: dict[str, str] = {}
    for value in values:
        name, sep, division_id = value.partition("=")
        name, division_id = name.strip(), division_id.strip()
        if not sep or not name or not division_id:
            raise ValueError(f"{value!r} is not NAME=UUID")
        try:
            uuid.UUID(division_id)
        except ValueError:
            raise ValueError(f"{division_id!r} is not a UUID") from None
        if name in divisions or name == "Home":
            raise ValueError(f"division {name!r} given twice (or named Home)")
        divisions[name] = division_id
    return divisions


def _load_org(path: Path) -> dict[str, Any]:
    from jobrunner.emulator.org import read_org_file

    return read_org_file(path)


def _load_users(path: Path) -> list[dict[str, Any]]:
    from jobrunner.emulator.state import read_existing_users

    return read_existing_users(path)


DEMO_CLIENT_ID = "jobrunner-demo"
DEMO_CLIENT_SECRET = "jobrunner-demo-secret"


@dataclass
class EmulatorConfig:
    """What the emulated org looks like and how badly it behaves.

    Fields are read on every request, so a test may change them on a running emulator
    (e.g. `emu.config.fault_5xx_rate = 0.5`). `clock` is monotonic seconds; tests inject a
    fake one to move the rate-limit window and token expiry without waiting.
    """

    client_id: str = option(
        DEMO_CLIENT_ID,
        "--client-id",
        "OAuth client id to accept. Env: GENESYS_CLOUD_CLIENT_ID.",
        envvar="GENESYS_CLOUD_CLIENT_ID",
    )
    client_secret: str = option(
        DEMO_CLIENT_SECRET,
        "--client-secret",
        "OAuth client secret to accept. Env: GENESYS_CLOUD_CLIENT_SECRET.",
        envvar="GENESYS_CLOUD_CLIENT_SECRET",
        show_default=False,
    )
    rate_per_minute: int = option(
        300,
        "--rate-per-minute",
        "API requests per token per window; beyond it 429.",
        kind="int",
        low=1,
    )
    # The real API's window is 60 s. A shorter one makes rate-limit drills (and tests) quick:
    # `rate_per_minute` requests are then allowed per `rate_window_s` seconds.
    rate_window_s: float = option(
        60.0,
        "--rate-window-seconds",
        "Length of the rate-limit window (the API's is 60 s).",
        kind="float",
        low=0,
        low_open=True,
        metavar="SECONDS",
    )
    # "sliding": any `rate_window_s` seconds; "fixed": windows that reset on multiples of it.
    rate_window_mode: str = option(
        "sliding",
        "--rate-window",
        "sliding: any window of that length; fixed: windows that reset on its multiples.",
        kind="choice",
        choices=("sliding", "fixed"),
    )
    token_lifetime_s: float = option(
        86400,
        "--token-lifetime",
        "Access token lifetime.",
        kind="int",
        low=0,
        low_open=True,
        metavar="SECONDS",
    )
    latency_ms: float = option(
        0.0, "--latency-ms", "Base latency added to every /api/v2 request.", kind="float", low=0
    )
    latency_jitter_ms: float = option(
        0.0,
        "--latency-jitter-ms",
        "Uniform jitter: latency is base +/- this.",
        kind="float",
        low=0,
    )
    fault_5xx_rate: float = option(
        0.0,
        "--fault-5xx-rate",
        "Share of /api/v2 requests answered 502/503/504 without acting.",
        kind="float",
        low=0,
        high=1,
    )
    drop_after_create_rate: float = option(
        0.0,
        "--drop-after-create-rate",
        "Share of successful user creations whose connection is dropped unanswered.",
        kind="float",
        low=0,
        high=1,
    )
    revoke_tokens_after: int | None = option(
        None,
        "--revoke-tokens-after",
        "After N API requests, invalidate every token issued so far (once).",
        kind="int",
        low=1,
        metavar="N",
        show_default=False,
    )
    seed: int | None = option(
        0, "--seed", "Seed for faults and latency (reproducible runs).", kind="int"
    )
    existing_users: list[dict[str, Any]] = option(
        [],
        "--existing-users",
        "CSV (name,email[,title,department]) or JSON list of users that exist before the job.",
        kind="path",
        exists=True,
        load=_load_users,
        show_default=False,
    )
    divisions: dict[str, str] = option(
        {},
        "--division",
        "An extra division (repeatable).",
        metavar="NAME=UUID",
        multiple=True,
        parse=parse_divisions,
    )
    state_file: str | Path | None = option(
        None,
        "--state-file",
        "Load users and their roles, skills and queues from this JSON file at start, save "
        "them to it (atomically) while running and on exit.",
        kind="path",
        show_default=False,
    )
    host: str = option(
        "127.0.0.1", "--host", "Interface to listen on. Keep it loopback unless you mean it."
    )
    port: int = option(
        0,
        "--port",
        "0 picks a free port (printed on start).",
        kind="int",
        low=0,
        high=65535,
        cli_default=8089,
    )
    clock: Callable[[], float] = time.monotonic
    search_index_delay_s: float = option(
        0.0,
        "--search-index-delay",
        "New users appear in /api/v2/users/search only after this long.",
        kind="float",
        low=0,
        metavar="SECONDS",
    )
    home_division_id: str | None = None
    save_interval_s: float = 2.0
    # Divisions, roles, queues, skills, locations and users, as in an org file (org.py).
    org: dict[str, Any] | None = option(
        None,
        "--org-file",
        "JSON org: divisions, roles, queues, skills, locations and users (see examples/org.json).",
        kind="path",
        exists=True,
        load=_load_org,
        show_default=False,
    )
    # For this long after a user's creation the onboarding endpoints (bulkadd, subjects,
    # routingskills, queue members, a user's queues) answer 404 for it.
    fresh_user_404_s: float = option(
        0.0,
        "--fresh-user-delay",
        "For this long after its creation a user is a 404 to the onboarding endpoints "
        "(roles, skills, queues).",
        kind="float",
        low=0,
        metavar="SECONDS",
    )
    # Permissions the caller lacks ("routing:queue:edit"), or lacks in one division only
    # ("authorization:grant:add@<division id>"): the endpoints needing them answer 403.
    refused_permissions: Collection[str] = option(
        set(),
        "--refuse-permission",
        "Answer 403 missing.permissions where this permission is needed, or only in that "
        "division (repeatable).",
        metavar="PERM[@DIVISION_ID]",
        multiple=True,
        parse=set,
    )
    # Users with these emails exist before the job (after `existing_users`).
    existing_emails: list[str] = option(
        [],
        "--existing-email",
        "A user with this email exists before the job (repeatable).",
        metavar="EMAIL",
        multiple=True,
        parse=list,
    )

    # The org the caller belongs to (GET /api/v2/organizations/me, /api/v2/tokens/me). Two
    # emulators with different ids are two orgs. The id defaults to one derived from the seed
    # and the name.
    org_id: str | None = option(
        None,
        "--org-id",
        "The org's id (default: derived from --seed and --org-name).",
        kind="uuid",
        metavar="UUID",
        show_default=False,
    )
    org_name: str = option("Emulated Org", "--org-name", "The org's name.")
    # POST /api/v2/authorization/roles/{roleId} (one role for many subjects). Genesys documents
    # neither a cap on subjectIds nor what an unknown subject does to the batch.
    role_batch_unknown_subject: str = option(
        "404-batch",
        "--role-batch-unknown-subject",
        "What granting one role to many people answers when one of them is unknown (or too "
        "new): 404-batch and 400-batch refuse the whole batch, skip grants the others.",
        kind="choice",
        choices=("404-batch", "400-batch", "skip"),
    )
    role_batch_max_subjects: int | None = option(
        None,
        "--role-batch-max-subjects",
        "Refuse (400) a grant of one role to more people than this (default: no cap, as "
        "documented).",
        kind="int",
        low=1,
        metavar="N",
        show_default=False,
    )

    # ---- the real API's dialect: how Genesys answers where a naive API would not ----------
    # The default is Genesys' way wherever Genesys always answers so (the timing options are
    # off by default: they are drills, and the demo turns the lags on).
    phone_shapes: bool = option(
        True,
        "--phone-shapes",
        "Read phone contacts back as Genesys does: a number with an extension only in "
        "display, an extension alone as display (and as extension when in a pool).",
        kind="bool",
    )
    extension_pools: list[str] = option(
        [],
        "--extension-pool",
        "Extensions from START to END are in a pool (repeatable; an org file may list "
        "extensionPools too).",
        metavar="START-END",
        multiple=True,
        parse=lambda values: [str(v) for v in values if _pool(v)],
    )
    employee_role: bool = option(
        True,
        "--employee-role",
        "Every user holds the Employee role (in Home) from creation, as in Genesys; the org "
        "gets a role named Employee if it has none.",
        kind="bool",
    )
    version_conflict_status: str = option(
        "either",
        "--version-conflict-status",
        "A stale version on PATCH (or a DELETE racing a version move) answers 409 "
        "general.conflict, 400 'does not match the current version', or either (seeded).",
        kind="choice",
        choices=("409", "400", "either"),
    )
    patch_state_with_others: str = option(
        "400",
        "--patch-state-with-others",
        "A PATCH /api/v2/users/{id} carrying state and other fields: apply them all, answer "
        "400 naming the other field, or ignore the others (state is documented as the only "
        "field such a PATCH may change).",
        kind="choice",
        choices=("apply", "400", "ignore"),
    )
    queue_member_invalid_id: bool = option(
        True,
        "--queue-member-invalid-id",
        "A non-UUID queue member id is Genesys' 400 invalid.id (--no-...: an unknown user).",
        kind="bool",
    )
    queue_unknown_member: str = option(
        "404-batch",
        "--queue-unknown-member",
        "What adding an unknown (or too new) user to a queue does to the batch: 404-batch and "
        "400-batch refuse it all, skip adds the others (undocumented).",
        kind="choice",
        choices=("404-batch", "400-batch", "skip"),
    )
    search_index_lags_changes: bool = option(
        False,
        "--search-index-lags-changes",
        "With --search-index-delay, every change of a user (delete, restore, state, fields) "
        "reaches the search that late, not only its creation.",
        kind="bool",
    )
    new_user_version_churn_s: float = option(
        0.0,
        "--new-user-version-churn",
        "For this long after a create, other services move the new user's version a few "
        "times, so a PATCH with the create's version may conflict.",
        kind="float",
        low=0,
        metavar="SECONDS",
    )
    expand_drop_rate: float = option(
        0.0,
        "--expand-drop-rate",
        "Share of GET /api/v2/users/{id}?expand=... answers that leave an asked expansion "
        "out (expand is best effort).",
        kind="float",
        low=0,
        high=1,
    )

    def __post_init__(self) -> None:
        if self.org_id is None:
            self.org_id = _stable_uuid(self.seed, self.org_name)
        for name, opt, _ in options():
            opt.check(name, getattr(self, name))
        if isinstance(self.refused_permissions, str) or not all(
            isinstance(p, str) and p for p in self.refused_permissions
        ):
            raise ValueError("refused_permissions must be a collection of permission names")
