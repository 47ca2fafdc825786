"""'roost profile': create, delete and list profiles, the default one, connections."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from roost.cli.exit_codes import ExitCode
from roost.cli.options import json_option
from roost.cli.output import console, print_json, print_table
from roost.cli.session import CliOptions, CommandError, fail, run_with_client

if TYPE_CHECKING:
    from roost.bridge.client import RoostClient


@click.group("profile")
def profile_group() -> None:
    """Profiles: the XMPP accounts the daemon keeps, the default one, connections."""


def read_password(jid: str) -> str:
    """The password: asked twice, hidden, on a terminal; else the first line of stdin.

    A password is never taken from the command line, where other users could read it.
    """
    if sys.stdin.isatty():
        password = str(
            click.prompt(
                f"Password for {jid}",
                hide_input=True,
                confirmation_prompt=True,
                err=True,
            )
        )
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        fail(
            "no password given (type it at the prompt, or give it on the first line of stdin)",
            ExitCode.INVALID_ARGUMENT,
        )
    return password


@profile_group.command("create")
@click.argument("name")
@click.argument("jid")
@click.option("--host", metavar="HOST", help="Connect to this host instead of the JID's domain.")
@click.option("--port", type=click.IntRange(1, 65535), metavar="PORT", help="Connect to this port.")
@click.option(
    "--tls",
    type=click.Choice(["required", "starttls", "none"]),
    help="How the connection is encrypted (default: the daemon's).",
)
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False, resolve_path=True),
    metavar="PEM",
    help="Trust the certificate authorities in this PEM file instead of the system's.",
)
@click.option(
    "--no-verify-certificate",
    "no_verify",
    is_flag=True,
    help="Accept any server certificate (encrypted, but anyone on the path can read it).",
)
@click.option(
    "--autoconnect/--no-autoconnect",
    default=None,
    help="Connect the profile whenever the daemon starts.",
)
@click.pass_obj
def create(
    options: CliOptions,
    name: str,
    jid: str,
    host: str | None,
    port: int | None,
    tls: str | None,
    ca_file: str | None,
    no_verify: bool,
    autoconnect: bool | None,
) -> None:
    """Create the profile NAME for the account JID.

    The password is asked (hidden, twice) on a terminal; otherwise it is read from the
    first line of standard input ('roost profile create work me@example.org <
    password-file'). The first profile created becomes the default.

    The server's certificate is verified against the system's authorities; --ca-file
    trusts a file's instead (a server with a certificate of its own making), and
    --no-verify-certificate turns the check off (a test server).
    """
    settings: dict[str, Any] = {}
    if host is not None:
        settings["host"] = host
    if port is not None:
        settings["port"] = port
    if tls is not None:
        settings["tls"] = tls
    if ca_file is not None:
        # Absolute: the daemon reads it, from a working directory of its own.
        settings["ca_file"] = ca_file
    if no_verify:
        settings["verify_certificate"] = False
    if autoconnect is not None:
        settings["autoconnect"] = autoconnect
    password = read_password(jid)

    async def body(client: RoostClient) -> None:
        await client.create_profile(name, jid, password, settings)

    run_with_client(options, body)
    click.echo(f"Profile {name} created for {jid}.", err=True)


@profile_group.command("delete")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def delete(options: CliOptions, name: str, yes: bool) -> None:
    """Delete the profile NAME and everything stored for it (parameters, values, its
    cached pubsub data). Asks first on a terminal, unless --yes."""
    if not yes and sys.stdin.isatty():
        click.confirm(f"Delete profile {name} and everything stored for it?", abort=True, err=True)

    async def body(client: RoostClient) -> None:
        await client.delete_profile(name)

    run_with_client(options, body)
    click.echo(f"Profile {name} deleted.", err=True)


@profile_group.command("list")
@json_option
@click.pass_obj
def list_profiles(options: CliOptions, as_json: bool) -> None:
    """List the profiles, the default one marked.

    JSON: '{"default": "work", "profiles": [{"name": "work", "default": true}]}'
    ('default' is '""' when none is set).
    """

    async def body(client: RoostClient) -> tuple[list[str], str]:
        return await client.list_profiles(), await client.get_default_profile()

    names, default = run_with_client(options, body)
    if as_json:
        print_json(
            {
                "default": default,
                "profiles": [{"name": name, "default": name == default} for name in names],
            }
        )
        return
    print_table(
        ["Profile", "Default"],
        ([name, "yes" if name == default else ""] for name in names),
        title="Profiles",
    )


@profile_group.command("default")
@click.argument("name", required=False)
@click.option("--unset", is_flag=True, help="Clear the default profile.")
@json_option
@click.pass_obj
def default(options: CliOptions, name: str | None, unset: bool, as_json: bool) -> None:
    """Show the default profile, or make NAME the default one (--unset: none).

    The default profile is the one every command uses when -p/--profile is not given.
    Shown: its name on stdout, nothing when none is set (with --json: {"default": ""},
    as "roost profile list --json" has it).
    """
    if name is not None and unset:
        raise click.UsageError("give a NAME or --unset, not both")

    async def show(client: RoostClient) -> str:
        return await client.get_default_profile()

    async def change(client: RoostClient) -> None:
        await client.set_default_profile("" if unset else str(name))

    if name is None and not unset:
        current = run_with_client(options, show)
        if as_json:
            print_json({"default": current})
        elif current:
            click.echo(current)
        else:
            click.echo("No default profile is set.", err=True)
        return
    run_with_client(options, change)
    if unset:
        click.echo("No default profile now.", err=True)
    else:
        click.echo(f"Profile {name} is the default now.", err=True)


@profile_group.command("connect")
@click.argument("name", default="")
@click.pass_obj
def connect(options: CliOptions, name: str) -> None:
    """Connect the profile NAME (default: the default profile); returns once the XMPP
    session is up."""

    async def body(client: RoostClient) -> None:
        await client.connect_profile(name)

    run_with_client(options, body)
    click.echo(f"Profile {name or '(default)'} connected.", err=True)


@profile_group.command("disconnect")
@click.argument("name", default="")
@click.pass_obj
def disconnect(options: CliOptions, name: str) -> None:
    """Disconnect the profile NAME (default: the default profile)."""

    async def body(client: RoostClient) -> None:
        await client.disconnect_profile(name)

    run_with_client(options, body)
    click.echo(f"Profile {name or '(default)'} disconnected.", err=True)


@profile_group.command("status")
@click.argument("name", required=False)
@json_option
@click.pass_obj
def status(options: CliOptions, name: str | None, as_json: bool) -> None:
    """Whether the profile NAME (default: every profile) is connected.

    JSON: '{"profiles": [{"name": "work", "connected": true, "default": true}]}', one
    entry when NAME is given.
    """

    async def body(client: RoostClient) -> list[dict[str, Any]]:
        default_name = await client.get_default_profile()
        if name is None:
            names = await client.list_profiles()
        elif name == "":
            if not default_name:
                raise CommandError("no default profile is set", ExitCode.NOT_FOUND)
            names = [default_name]
        else:
            names = [name]
        return [
            {
                "name": each,
                "connected": await client.is_connected(each),
                "default": each == default_name,
            }
            for each in names
        ]

    rows = run_with_client(options, body)
    if as_json:
        print_json({"profiles": rows})
        return
    if name is not None and len(rows) == 1:
        row = rows[0]
        state = "[green]connected[/green]" if row["connected"] else "not connected"
        console().print(f"{row['name']}: {state}")
        return
    print_table(
        ["Profile", "Status", "Default"],
        (
            [
                row["name"],
                "connected" if row["connected"] else "not connected",
                "yes" if row["default"] else "",
            ]
            for row in rows
        ),
        title="Profiles",
    )
