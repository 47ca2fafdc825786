"""'roost contacts': a profile's roster and the presence subscription requests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from roost.cli.options import json_option, profile_option
from roost.cli.output import print_json, print_table
from roost.cli.session import CliOptions, run_with_client

if TYPE_CHECKING:
    from roost.bridge.client import RoostClient


@click.group("contacts")
def contacts_group() -> None:
    """Contacts: a profile's roster and who asks to see its presence."""


def _subscription(contact: dict[str, Any]) -> str:
    text = str(contact.get("subscription", ""))
    notes = []
    if contact.get("pending_out"):
        notes.append("asked")
    if contact.get("pending_in"):
        notes.append("asks us")
    return f"{text} ({', '.join(notes)})" if notes else text


@contacts_group.command("list")
@profile_option
@json_option
@click.pass_obj
def list_contacts(options: CliOptions, profile: str, as_json: bool) -> None:
    """List the profile's contacts, sorted by JID (works offline: the roster as last read).

    JSON: '{"contacts": [{"jid", "name", "groups", "subscription",
    "pending_out", "pending_in"}]}', each record as the daemon gives it.
    """

    async def body(client: RoostClient) -> list[dict[str, Any]]:
        return await client.list_contacts(profile)

    contacts = run_with_client(options, body)
    if as_json:
        print_json({"contacts": contacts})
        return
    print_table(
        ["JID", "Name", "Groups", "Subscription"],
        (
            [c["jid"], c.get("name", ""), ", ".join(c.get("groups", [])), _subscription(c)]
            for c in contacts
        ),
        title="Contacts",
    )


@contacts_group.command("requests")
@profile_option
@json_option
@click.pass_obj
def list_requests(options: CliOptions, profile: str, as_json: bool) -> None:
    """List the presence subscription requests waiting for an answer, oldest first.

    JSON: '{"requests": [{"jid", "message", "received"}]}'
    ('received': seconds since the epoch). Answer one with 'roost contacts authorize'.
    """

    async def body(client: RoostClient) -> list[dict[str, Any]]:
        return await client.list_subscription_requests(profile)

    requests = run_with_client(options, body)
    if as_json:
        print_json({"requests": requests})
        return
    print_table(
        ["JID", "Received", "Message"],
        (
            [
                r["jid"],
                time.strftime("%Y-%m-%d %H:%M", time.localtime(float(r.get("received", 0)))),
                r.get("message", ""),
            ]
            for r in requests
        ),
        title="Subscription requests",
    )


@contacts_group.command("add")
@click.argument("jid")
@click.option("--name", metavar="NAME", help="The name to give the contact.")
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="GROUP",
    help="A roster group to put the contact in (repeat for several).",
)
@click.option(
    "--no-subscribe",
    is_flag=True,
    help="Do not ask to see the contact's presence (only add it to the roster).",
)
@profile_option
@click.pass_obj
def add(
    options: CliOptions,
    jid: str,
    name: str | None,
    groups: tuple[str, ...],
    no_subscribe: bool,
    profile: str,
) -> None:
    """Add JID to the roster (or set its name and groups), and ask to see its presence.

    The roster item is replaced as a whole: a name or groups not given are removed.
    Needs the profile connected.
    """

    async def body(client: RoostClient) -> None:
        await client.add_contact(
            profile, jid, name=name, groups=list(groups), subscribe=not no_subscribe
        )

    run_with_client(options, body)
    click.echo(f"{jid} added.", err=True)


@contacts_group.command("remove")
@click.argument("jid")
@profile_option
@click.pass_obj
def remove(options: CliOptions, jid: str, profile: str) -> None:
    """Remove JID from the roster (the presence subscriptions both ways end too)."""

    async def body(client: RoostClient) -> None:
        await client.remove_contact(profile, jid)

    run_with_client(options, body)
    click.echo(f"{jid} removed.", err=True)


@contacts_group.command("authorize")
@click.argument("jid")
@click.option(
    "--deny",
    is_flag=True,
    help="Refuse the request (also revokes a subscription granted before).",
)
@profile_option
@click.pass_obj
def authorize(options: CliOptions, jid: str, deny: bool, profile: str) -> None:
    """Approve JID's request to see the profile's presence (--deny: refuse it).

    Approving lets JID see the account's presence and its presence-restricted PEP nodes
    (a microblog, an avatar…). Needs the profile connected.
    """

    async def body(client: RoostClient) -> None:
        await client.authorize(profile, jid, not deny)

    run_with_client(options, body)
    click.echo(f"{jid} {'refused' if deny else 'approved'}.", err=True)
