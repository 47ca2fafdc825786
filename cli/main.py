"""The ``roost`` command-line frontend: a D-Bus client of ``roostd`` only.

It never opens the database or speaks XMPP: every subcommand goes through
:class:`roost.bridge.client.RoostClient`. Each family of subcommands lives in its own
module and is added to the root group here; ``docs/cli.md`` documents them, their
``--json`` output and the exit codes (:class:`roost.cli.exit_codes.ExitCode`).
"""

from __future__ import annotations

import click

from roost.cli.exit_codes import ExitCode
from roost.cli.session import CliOptions

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--bus-address",
    metavar="ADDRESS",
    envvar="ROOST_BUS_ADDRESS",
    help="D-Bus address of the bus roostd is on (default: the session bus).",
)
@click.version_option(package_name="roost", prog_name="roost")
@click.pass_context
def cli(ctx: click.Context, bus_address: str | None) -> None:
    """Talk to the Roost daemon (roostd) on the D-Bus session bus: profiles, contacts,
    settings, publish-subscribe and the local cache.

    Read commands take --json for one JSON document on stdout. Exit codes: 0 success,
    2 usage, 3 invalid argument, 4 not found, 5 not connected, 6 conflict, 7 forbidden,
    8 XMPP error, 9 daemon internal error, 10 daemon not running, 1 anything else.
    """
    ctx.obj = CliOptions(bus_address=bus_address)


def _add_commands() -> None:
    # Each module adds its group to ``cli``; importing them costs only click.
    from roost.cli import commands

    for command in commands.all_commands():
        cli.add_command(command)


_add_commands()


def main() -> None:
    """Entry point of the ``roost`` command."""
    try:
        cli(prog_name="roost")
    except KeyboardInterrupt:
        raise SystemExit(int(ExitCode.INTERRUPTED)) from None
