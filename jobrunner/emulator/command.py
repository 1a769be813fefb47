"""`jobrunner emulator` (placeholder until the emulator lands)."""

import click


@click.command()
def emulator() -> None:
    """Serve a local stand-in for the Genesys Cloud users API."""
    raise click.ClickException("the emulator is not built yet")
