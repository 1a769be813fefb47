"""`jobrunner emulator`: serve a local Genesys Cloud API (users, divisions, roles, queues,
skills, locations and onboarding) until Ctrl-C or SIGTERM.

Its options are EmulatorConfig's (config.py): each field with an Option becomes one click
option here, with the field's name as the parameter's.

Only click and config.py are imported here; the server loads when the command runs, so
`jobrunner --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from jobrunner.emulator.config import (
    DEMO_CLIENT_ID,
    DEMO_CLIENT_SECRET,
    UNSET,
    Option,
    options,
)

__all__ = ["DEMO_CLIENT_ID", "DEMO_CLIENT_SECRET", "emulator"]


def _click_type(opt: Option) -> Any:
    if opt.kind in ("int", "float") and opt.low is None and opt.high is None:
        return click.INT if opt.kind == "int" else click.FLOAT
    if opt.kind == "int":
        return click.IntRange(
            None if opt.low is None else int(opt.low),
            None if opt.high is None else int(opt.high),
            min_open=opt.low_open,
        )
    if opt.kind == "float":
        return click.FloatRange(opt.low, opt.high, min_open=opt.low_open)
    if opt.kind == "choice":
        return click.Choice(list(opt.choices))
    if opt.kind == "path":
        return click.Path(exists=opt.exists, dir_okay=False, path_type=Path)
    return None


def _callback(name: str, opt: Option) -> Callable[[click.Context, click.Parameter, Any], Any]:
    """A click callback that runs opt.parse on the given value(s) and checks the result as
    EmulatorConfig will; a ValueError is a usage error (exit 2)."""

    def callback(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        try:
            if opt.parse is not None:
                value = opt.parse(value)
            if opt.load is None:
                opt.check(name, value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
        return value

    return callback


def _config_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate `command` with one click option per configurable EmulatorConfig field."""
    for name, opt, default in reversed(options()):
        if opt.cli_default is not UNSET:
            default = opt.cli_default
        if opt.multiple or opt.load is not None:
            default = None  # nothing given: the field's own default
        flag = opt.flag
        if opt.kind == "bool":
            flag = f"{flag}/--no-{flag[2:]}"
        command = click.option(
            flag,
            name,
            type=_click_type(opt),
            default=default,
            multiple=opt.multiple,
            envvar=opt.envvar,
            metavar=opt.metavar,
            show_default=opt.show_default and default is not None,
            callback=_callback(name, opt),
            help=opt.help,
        )(command)
    return command


@click.command()
@_config_options
def emulator(**given: Any) -> None:
    """Serve a local stand-in for the Genesys Cloud users API.

    One port answers both the login host (/oauth/token) and the API host (/api/v2/...), as
    the SDK's ApiClient.set_gateway() expects. Inspect it at /emulator/stats and
    /emulator/users; POST /emulator/revoke-tokens revokes every token. Stops on Ctrl-C.
    """
    import signal
    import threading

    from jobrunner.emulator.server import Emulator, EmulatorConfig
    from jobrunner.log import get_logger

    loaders = {name: opt.load for name, opt, _ in options() if opt.load is not None}
    try:
        settings = {
            name: loaders[name](value) if name in loaders else value
            for name, value in given.items()
            if value is not None
        }
        config = EmulatorConfig(**settings)
        emu = Emulator(config)
    except (OSError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    try:
        emu.start()
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {config.host}:{config.port}: {error.strerror or error}"
        ) from None

    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(f"GENESYS_CLOUD_ENVIRONMENT={emu.url}")
        click.echo(f"GENESYS_CLOUD_CLIENT_ID={config.client_id}")
        if config.client_secret == DEMO_CLIENT_SECRET:
            # The built-in demo secret is public anyway; a secret you supplied is never echoed.
            click.echo(f"GENESYS_CLOUD_CLIENT_SECRET={config.client_secret}")
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
