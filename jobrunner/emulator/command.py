"""`jobrunner emulator`: serve a local Genesys Cloud API (users, divisions, roles, queues,
skills, locations and onboarding) until Ctrl-C or SIGTERM.

Only click is imported here; the server loads when the command runs, so `jobrunner --help`
stays fast.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import click

DEMO_CLIENT_ID = "jobrunner-demo"
DEMO_CLIENT_SECRET = "jobrunner-demo-secret"


def _parse_divisions(
    _ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    divisions: dict[str, str] = {}
    for value in values:
        name, sep, division_id = value.partition("=")
        name, division_id = name.strip(), division_id.strip()
        if not sep or not name or not division_id:
            raise click.BadParameter(f"{value!r} is not NAME=UUID")
        try:
            uuid.UUID(division_id)
        except ValueError:
            raise click.BadParameter(f"{division_id!r} is not a UUID") from None
        if name in divisions or name == "Home":
            raise click.BadParameter(f"division {name!r} given twice (or named Home)")
        divisions[name] = division_id
    return divisions


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on. Keep it loopback unless you mean it.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8089,
    show_default=True,
    help="0 picks a free port (printed on start).",
)
@click.option(
    "--client-id",
    envvar="GENESYS_CLOUD_CLIENT_ID",
    default=DEMO_CLIENT_ID,
    show_default=True,
    help="OAuth client id to accept. Env: GENESYS_CLOUD_CLIENT_ID.",
)
@click.option(
    "--client-secret",
    envvar="GENESYS_CLOUD_CLIENT_SECRET",
    default=DEMO_CLIENT_SECRET,
    show_default=False,
    help="OAuth client secret to accept. Env: GENESYS_CLOUD_CLIENT_SECRET.",
)
@click.option(
    "--rate-per-minute",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="API requests per token per window; beyond it 429.",
)
@click.option(
    "--rate-window-seconds",
    "rate_window_s",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="Length of the rate-limit window (the API's is 60 s).",
)
@click.option(
    "--rate-window",
    "rate_window_mode",
    type=click.Choice(["sliding", "fixed"]),
    default="sliding",
    show_default=True,
    help="sliding: any window of that length; fixed: windows that reset on its multiples.",
)
@click.option(
    "--token-lifetime",
    "token_lifetime",
    type=click.IntRange(min=1),
    default=86400,
    show_default=True,
    metavar="SECONDS",
    help="Access token lifetime.",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Base latency added to every /api/v2 request.",
)
@click.option(
    "--latency-jitter-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Uniform jitter: latency is base +/- this.",
)
@click.option(
    "--fault-5xx-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of /api/v2 requests answered 502/503/504 without acting.",
)
@click.option(
    "--drop-after-create-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of successful user creations whose connection is dropped unanswered.",
)
@click.option(
    "--revoke-tokens-after",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="After N API requests, invalidate every token issued so far (once).",
)
@click.option(
    "--search-index-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="New users appear in /api/v2/users/search only after this long.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed for faults and latency (reproducible runs).",
)
@click.option(
    "--existing-users",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="CSV (name,email[,title,department]) or JSON list of users that exist before the job.",
)
@click.option(
    "--existing-email",
    multiple=True,
    metavar="EMAIL",
    help="A user with this email exists before the job (repeatable).",
)
@click.option(
    "--division",
    "divisions",
    multiple=True,
    metavar="NAME=UUID",
    callback=_parse_divisions,
    help="An extra division (repeatable).",
)
@click.option(
    "--org-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON org: divisions, roles, queues, skills, locations and users (see examples/org.json).",
)
@click.option(
    "--fresh-user-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="SECONDS",
    help="For this long after its creation a user is a 404 to the onboarding endpoints "
    "(roles, skills, queues).",
)
@click.option(
    "--refuse-permission",
    "refused_permissions",
    multiple=True,
    metavar="PERM[@DIVISION_ID]",
    help="Answer 403 missing.permissions where this permission is needed, or only in that "
    "division (repeatable).",
)
@click.option(
    "--state-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Load users and their roles, skills and queues from this JSON file at start, save "
    "them to it (atomically) while running and on exit.",
)
def emulator(
    host: str,
    port: int,
    client_id: str,
    client_secret: str,
    rate_per_minute: int,
    rate_window_s: float,
    rate_window_mode: str,
    token_lifetime: int,
    latency_ms: float,
    latency_jitter_ms: float,
    fault_5xx_rate: float,
    drop_after_create_rate: float,
    revoke_tokens_after: int | None,
    search_index_delay: float,
    seed: int,
    existing_users: Path | None,
    existing_email: tuple[str, ...],
    divisions: dict[str, str],
    org_file: Path | None,
    fresh_user_delay: float,
    refused_permissions: tuple[str, ...],
    state_file: Path | None,
) -> None:
    """Serve a local stand-in for the Genesys Cloud users API.

    One port answers both the login host (/oauth/token) and the API host (/api/v2/...), as
    the SDK's ApiClient.set_gateway() expects. Inspect it at /emulator/stats and
    /emulator/users; POST /emulator/revoke-tokens revokes every token. Stops on Ctrl-C.
    """
    import signal
    import threading

    from jobrunner.emulator.directory import read_existing_users
    from jobrunner.emulator.org import read_org_file
    from jobrunner.emulator.server import Emulator, EmulatorConfig
    from jobrunner.log import get_logger

    seeds: list[dict[str, Any]] = []
    try:
        if existing_users is not None:
            seeds.extend(read_existing_users(existing_users))
        seeds.extend({"email": email} for email in existing_email)
        org = read_org_file(org_file) if org_file is not None else None
        config = EmulatorConfig(
            client_id=client_id,
            client_secret=client_secret,
            rate_per_minute=rate_per_minute,
            rate_window_s=rate_window_s,
            rate_window_mode=rate_window_mode,
            token_lifetime_s=token_lifetime,
            latency_ms=latency_ms,
            latency_jitter_ms=latency_jitter_ms,
            fault_5xx_rate=fault_5xx_rate,
            drop_after_create_rate=drop_after_create_rate,
            revoke_tokens_after=revoke_tokens_after,
            search_index_delay_s=search_index_delay,
            seed=seed,
            existing_users=seeds,
            divisions=divisions,
            org=org,
            fresh_user_404_s=fresh_user_delay,
            refused_permissions=set(refused_permissions),
            state_file=state_file,
            host=host,
            port=port,
        )
        emu = Emulator(config)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    try:
        emu.start()
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {error.strerror or error}"
        ) from None

    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(f"GENESYS_CLOUD_ENVIRONMENT={emu.url}")
        click.echo(f"GENESYS_CLOUD_CLIENT_ID={client_id}")
        if client_secret == DEMO_CLIENT_SECRET:
            # The built-in demo secret is public anyway; a secret you supplied is never echoed.
            click.echo(f"GENESYS_CLOUD_CLIENT_SECRET={client_secret}")
        get_logger("jobrunner.emulator").info(
            "emulator.ready",
            url=emu.url,
            users=len(emu.directory),
            home_division_id=emu.home_division_id,
        )
        while not stop.wait(1.0):
            pass
    finally:
        emu.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
