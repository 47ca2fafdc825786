"""``roost pubsub``: XEP-0060 items, nodes and subscriptions through the daemon.

SERVICE is a pubsub service's JID or an account's (its PEP service); ``-`` is the
profile's own PEP service.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from roost.cli.exit_codes import ExitCode
from roost.cli.items import json_item, pretty_xml, service_argument
from roost.cli.options import json_option, profile_option
from roost.cli.output import console, print_json, print_table
from roost.cli.session import CliOptions, fail, run_with_client

if TYPE_CHECKING:
    from roost.bridge.client import RoostClient

SERVICE_HELP = "SERVICE is a pubsub service or account JID; '-' is your own PEP service."


def service_and_node(function: Any) -> Any:
    """The SERVICE NODE arguments every pubsub command takes."""
    function = click.argument("node")(function)
    return click.argument("service")(function)


def field_values(pairs: Sequence[str], what: str) -> dict[str, str | list[str]]:
    """``FIELD=VALUE`` options as a form: a field given more than once is multi-valued."""
    form: dict[str, str | list[str]] = {}
    for pair in pairs:
        field, sep, value = pair.partition("=")
        if not sep or not field:
            raise click.BadParameter(f"{pair!r} is not FIELD=VALUE", param_hint=what)
        if field in form:
            previous = form[field]
            form[field] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            form[field] = value
    return form


def read_payload(path: str | None) -> str:
    """The payload XML from ``path`` (``-``: stdin), or from stdin when no path is given."""
    if path is None or path == "-":
        if path is None and sys.stdin.isatty():
            raise click.UsageError("give the payload with --file PATH, or on stdin")
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as payload:  # noqa: PTH123 (a plain read)
            return payload.read()
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {path}: {exc}", ExitCode.FAILURE)


@click.group()
def pubsub() -> None:
    """Publish-subscribe (XEP-0060): items, nodes and subscriptions.

    SERVICE is a pubsub service's JID (pubsub.example.org) or an account's bare JID (its
    PEP service); '-' is the profile's own PEP service.
    """


# -- items --------------------------------------------------------------------------------


@pubsub.command()
@service_and_node
@profile_option
@click.option("--max", "max_items", type=click.IntRange(1, 10_000), help="At most N items.")
@click.option("--id", "item_ids", multiple=True, metavar="ID", help="Only this item (repeatable).")
@click.option("--before", metavar="TOKEN", help="The page before this token ('' for the last).")
@click.option("--after", metavar="TOKEN", help="The page after this token ('' for the first).")
@click.option("--no-cache", is_flag=True, help="Ask the server, never the cache.")
@json_option
@click.pass_obj
def get(
    options: CliOptions,
    service: str,
    node: str,
    profile: str,
    max_items: int | None,
    item_ids: tuple[str, ...],
    before: str | None,
    after: str | None,
    no_cache: bool,
    as_json: bool,
) -> None:
    """Show a node's items, oldest first, and how to page on.

    Without --max, --before or --after: every item (up to the daemon's bound). With
    --max N: the newest N. Tokens come from a previous answer's metadata.
    """
    if before is not None and after is not None:
        raise click.UsageError("give --before or --after, not both")
    request: dict[str, Any] = {}
    if max_items is not None:
        request["max_items"] = max_items
    if item_ids:
        request["item_ids"] = list(item_ids)
    if before is not None:
        request["before"] = before
    if after is not None:
        request["after"] = after
    if no_cache:
        request["use_cache"] = False

    async def body(client: RoostClient) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        return await client.get_items(profile, service_argument(service), node, **request)

    items, metadata = run_with_client(options, body)
    if as_json:
        print_json({"items": [json_item(item) for item in items], "metadata": metadata})
        return
    show_items(items, metadata, forward=after is not None)


def show_items(items: list[dict[str, Any]], metadata: dict[str, Any], *, forward: bool) -> None:
    """Each item's id and publisher, its XML highlighted, then where the page stands."""
    from rich.syntax import Syntax
    from rich.text import Text

    out = console()
    for item in items:
        header = Text(str(item.get("id", "")), style="bold")
        if item.get("publisher"):
            header.append(f"  publisher {item['publisher']}", style="dim")
        out.print(header)
        if item.get("omitted"):
            out.print(Text(f"({item.get('size', '?')} bytes of XML, too large for the bus)"))
        else:
            xml = pretty_xml(str(item.get("xml", "")))
            out.print(Syntax(xml, "xml", theme="ansi_dark", word_wrap=True))
        out.print()
    count = metadata.get("rsm_count")
    where = "the cache" if metadata.get("from_cache") else "the server"
    line = Text(f"{len(items)} item(s)", style="dim")
    if count is not None:
        line.append(f" of {count}", style="dim")
    line.append(f", from {where}", style="dim")
    if "cache_age" in metadata:
        line.append(f" (as of {float(metadata['cache_age']):.0f} s ago)", style="dim")
    out.print(line)
    if not metadata.get("complete", True):
        if forward and metadata.get("rsm_last"):
            out.print(Text(f"next page: --after {metadata['rsm_last']}", style="dim"))
        elif metadata.get("rsm_first"):
            out.print(Text(f"older items: --before {metadata['rsm_first']}", style="dim"))


@pubsub.command()
@service_and_node
@profile_option
@click.option(
    "--id",
    "item_id",
    default="",
    metavar="ID",
    help="The item's id (default: the server's choice).",
)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read the payload from PATH ('-': stdin; default: stdin).",
)
@click.option(
    "-o",
    "--option",
    "publish_options",
    multiple=True,
    metavar="FIELD=VALUE",
    help="A publish option (pubsub#access_model=open); repeatable.",
)
@json_option
@click.pass_obj
def publish(
    options: CliOptions,
    service: str,
    node: str,
    profile: str,
    item_id: str,
    path: str | None,
    publish_options: tuple[str, ...],
    as_json: bool,
) -> None:
    """Publish one item: its payload is one XML element, from --file or stdin.

    Prints the item's id.
    """
    form = field_values(publish_options, "--option")
    payload = read_payload(path)

    async def body(client: RoostClient) -> str:
        return await client.publish(
            profile, service_argument(service), node, item_id, payload.strip(), form
        )

    published = run_with_client(options, body)
    if as_json:
        print_json({"id": published})
    else:
        click.echo(published)


@pubsub.command()
@service_and_node
@click.argument("item_ids", nargs=-1, required=True, metavar="ITEM_ID...")
@profile_option
@click.option("--no-notify", is_flag=True, help="Do not ask the server to notify subscribers.")
@click.pass_obj
def retract(
    options: CliOptions,
    service: str,
    node: str,
    item_ids: tuple[str, ...],
    profile: str,
    no_notify: bool,
) -> None:
    """Retract items from a node."""
    extra = {"notify": False} if no_notify else {}

    async def body(client: RoostClient) -> None:
        await client.retract(profile, service_argument(service), node, list(item_ids), extra)

    run_with_client(options, body)
    click.echo(f"Retracted {len(item_ids)} item(s) from {node}", err=True)


# -- subscriptions ------------------------------------------------------------------------


@pubsub.command()
@service_and_node
@profile_option
@click.option(
    "-o",
    "--option",
    "subscribe_options",
    multiple=True,
    metavar="FIELD=VALUE",
    help="A subscription option (pubsub#deliver=1); repeatable.",
)
@json_option
@click.pass_obj
def subscribe(
    options: CliOptions,
    service: str,
    node: str,
    profile: str,
    subscribe_options: tuple[str, ...],
    as_json: bool,
) -> None:
    """Subscribe to a node; prints the subscription id when the server gives one."""
    form = field_values(subscribe_options, "--option")

    async def body(client: RoostClient) -> str:
        return await client.subscribe_node(profile, service_argument(service), node, form)

    subid = run_with_client(options, body)
    if as_json:
        print_json({"subid": subid})
    else:
        if subid:
            click.echo(subid)
        click.echo(f"Subscribed to {node}", err=True)


@pubsub.command()
@service_and_node
@profile_option
@click.option("--subid", metavar="SUBID", help="The subscription to end, among several.")
@click.pass_obj
def unsubscribe(
    options: CliOptions, service: str, node: str, profile: str, subid: str | None
) -> None:
    """Unsubscribe from a node."""
    extra = {"subid": subid} if subid else {}

    async def body(client: RoostClient) -> None:
        await client.unsubscribe_node(profile, service_argument(service), node, extra)

    run_with_client(options, body)
    click.echo(f"Unsubscribed from {node}", err=True)


@pubsub.command()
@click.argument("service")
@click.argument("node", required=False, default="")
@profile_option
@json_option
@click.pass_obj
def subscriptions(
    options: CliOptions, service: str, node: str, profile: str, as_json: bool
) -> None:
    """List your subscriptions at SERVICE (to NODE only, when given)."""

    async def body(client: RoostClient) -> list[dict[str, Any]]:
        return await client.get_subscriptions(profile, service_argument(service), node)

    # Stable keys: a server that names the node once for the whole answer (ejabberd, when
    # asked about one node) leaves it out of each subscription.
    found = [
        {
            "node": s.get("node") or node,
            "jid": s.get("jid", ""),
            "subscription": s.get("subscription", ""),
            "subid": s.get("subid", ""),
        }
        for s in run_with_client(options, body)
    ]
    if as_json:
        print_json({"subscriptions": found})
        return
    print_table(
        ["node", "jid", "subscription", "subid"],
        ([s["node"], s["jid"], s["subscription"], s["subid"]] for s in found),
        title="subscriptions",
    )


# -- nodes --------------------------------------------------------------------------------


@pubsub.group()
def node() -> None:
    """Create, delete, purge and configure nodes."""


SET_HELP = "Set a configuration field (pubsub#max_items=max); repeatable, twice for a list."


@node.command("create")
@service_and_node
@profile_option
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE", help=SET_HELP)
@json_option
@click.pass_obj
def create_node(
    options: CliOptions,
    service: str,
    node: str,
    profile: str,
    settings: tuple[str, ...],
    as_json: bool,
) -> None:
    """Create a node (NODE '' asks the server for an instant node); prints its name."""
    config = field_values(settings, "--set")

    async def body(client: RoostClient) -> str:
        return await client.create_node(profile, service_argument(service), node, config)

    created = run_with_client(options, body)
    if as_json:
        print_json({"node": created})
    else:
        click.echo(created)


@node.command("delete")
@service_and_node
@profile_option
@click.pass_obj
def delete_node(options: CliOptions, service: str, node: str, profile: str) -> None:
    """Delete a node and its items."""

    async def body(client: RoostClient) -> None:
        await client.delete_node(profile, service_argument(service), node)

    run_with_client(options, body)
    click.echo(f"Node {node} deleted", err=True)


@node.command("purge")
@service_and_node
@profile_option
@click.pass_obj
def purge_node(options: CliOptions, service: str, node: str, profile: str) -> None:
    """Remove every item of a node, keeping the node."""

    async def body(client: RoostClient) -> None:
        await client.purge_node(profile, service_argument(service), node)

    run_with_client(options, body)
    click.echo(f"Node {node} purged", err=True)


@node.command("config")
@service_and_node
@profile_option
@click.option("--set", "settings", multiple=True, metavar="FIELD=VALUE", help=SET_HELP)
@json_option
@click.pass_obj
def node_config(
    options: CliOptions,
    service: str,
    node: str,
    profile: str,
    settings: tuple[str, ...],
    as_json: bool,
) -> None:
    """Show a node's configuration; with --set, change those fields first."""
    changes = field_values(settings, "--set")

    async def body(client: RoostClient) -> dict[str, Any]:
        target = service_argument(service)
        if changes:
            await client.set_node_config(profile, target, node, changes)
        return await client.get_node_config(profile, target, node)

    config = run_with_client(options, body)
    if as_json:
        print_json({"config": config})
        return
    print_table(
        ["field", "value"],
        (
            [field, ", ".join(value) if isinstance(value, list) else value]
            for field, value in sorted(config.items())
        ),
        title=f"configuration of {node}",
    )
