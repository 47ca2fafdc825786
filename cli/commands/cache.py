"""``roost cache``: search the daemon's pubsub cache and drive node synchronisation."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from roost.cli.exit_codes import ExitCode
from roost.cli.items import json_item, local_time, service_argument, summary
from roost.cli.options import json_option, profile_option
from roost.cli.output import console, error_console, print_json, print_table
from roost.cli.session import CliOptions, fail, run_with_client
from roost.cli.sync_progress import follow_sync

if TYPE_CHECKING:
    from roost.bridge.client import RoostClient

# The cache's own times, which --order names with an @ (anything else is a parsed path).
ORDER_FIELDS = ("created", "updated")
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@click.group()
def cache() -> None:
    """The local pubsub cache: search it, look at and drive node synchronisation."""


# -- search -------------------------------------------------------------------------------


def filter_value(text: str) -> Any:
    """A -F VALUE: JSON when it parses as JSON, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def order_key(spec: str) -> dict[str, str]:
    """An --order KEY[:asc|:desc] as an order_by entry."""
    key, sep, direction = spec.rpartition(":")
    if not sep or direction not in ("asc", "desc"):
        key, direction = spec, "asc"
    if not key:
        raise click.BadParameter(f"{spec!r} names no key", param_hint="--order")
    if key.startswith("@"):
        field = key[1:]
        if field not in ORDER_FIELDS:
            raise click.BadParameter(
                f"{key!r}: the cache's own fields are @created and @updated",
                param_hint="--order",
            )
        return {"field": field, "direction": direction}
    return {"path": key, "direction": direction}


def _check_sendable(value: Any, path: str) -> None:
    """Values the bus cannot carry are refused here as the daemon refuses bad operands."""
    if value is None or isinstance(value, dict):
        kind = "null" if value is None else "an object"
        fail(
            f"filter on {path!r}: {kind} is not a search operand (give a string, number, "
            "boolean or array)",
            ExitCode.INVALID_ARGUMENT,
        )
    if isinstance(value, list):
        for element in value:
            _check_sendable(element, path)


F = TypeVar("F", bound=Callable[..., Any])


def node_selection(function: F) -> F:
    """The options that pick nodes, shared by ``search`` and ``purge`` (each repeatable)."""
    options = (
        click.option(
            "-p",
            "--profile",
            "profiles",
            multiple=True,
            metavar="NAME",
            help="Items of this profile (repeatable).",
        ),
        click.option(
            "-s",
            "--service",
            "services",
            multiple=True,
            metavar="JID",
            help="Items of this service (repeatable).",
        ),
        click.option(
            "-n",
            "--node",
            "nodes",
            multiple=True,
            metavar="NODE",
            help="Items of this node (repeatable).",
        ),
        click.option(
            "-t",
            "--type",
            "types",
            multiple=True,
            metavar="TYPE",
            help="Items of nodes of this type, e.g. blog (repeatable).",
        ),
    )
    for option in reversed(options):
        function = option(function)
    return function


@cache.command()
@node_selection
@click.option(
    "--subtype",
    "subtypes",
    multiple=True,
    metavar="SUBTYPE",
    help="Items of nodes of this subtype, e.g. comment (repeatable).",
)
@click.option(
    "-i",
    "--item-id",
    "item_ids",
    multiple=True,
    metavar="ID",
    help="Items of this id (repeatable).",
)
@click.option(
    "--fts", metavar="WORDS", help='Full text: every word and "quoted phrase" must occur.'
)
@click.option(
    "-F",
    "--filter",
    "filters",
    nargs=3,
    multiple=True,
    metavar="PATH OP VALUE",
    help="A filter on the parsed data (title eq 'Post 7'; published_ts ge 1795169400); "
    "VALUE is read as JSON when it parses, else as a string. Repeatable: all must hold.",
)
@click.option(
    "-o",
    "--order",
    "orders",
    multiple=True,
    metavar="KEY[:asc|:desc]",
    help="Sort by a parsed path (published_ts:desc) or by @created / @updated; repeatable.",
)
@click.option(
    "--limit", type=click.IntRange(0), help="At most N items (default 100, at most 1000)."
)
@click.option("--offset", type=click.IntRange(0), help="Skip the first N items.")
@json_option
@click.pass_obj
def search(
    options: CliOptions,
    profiles: tuple[str, ...],
    services: tuple[str, ...],
    nodes: tuple[str, ...],
    types: tuple[str, ...],
    subtypes: tuple[str, ...],
    item_ids: tuple[str, ...],
    fts: str | None,
    filters: tuple[tuple[str, str, str], ...],
    orders: tuple[str, ...],
    limit: int | None,
    offset: int | None,
    as_json: bool,
) -> None:
    """Search every cached item: newest first unless --order says otherwise.

    Needs no connection: the daemon reads its database.
    """
    query: dict[str, Any] = {}
    for key, values in (
        ("profiles", profiles),
        ("services", services),
        ("nodes", nodes),
        ("types", types),
        ("subtypes", subtypes),
        ("item_ids", item_ids),
    ):
        if values:
            query[key] = list(values)
    if fts is not None:
        query["fts"] = fts
    if filters:
        parsed = []
        for path, op, text in filters:
            value = filter_value(text)
            _check_sendable(value, path)
            parsed.append({"path": path, "op": op, "value": value})
        query["parsed"] = parsed
    if orders:
        query["order_by"] = [order_key(spec) for spec in orders]
    if limit is not None:
        query["limit"] = limit
    if offset is not None:
        query["offset"] = offset

    async def body(client: RoostClient) -> list[dict[str, Any]]:
        return await client.search(**query)

    hits = run_with_client(options, body)
    if as_json:
        print_json({"items": [json_item(hit) for hit in hits]})
        return
    print_table(
        ["profile", "service", "node", "id", "what", "stored"],
        (
            [
                hit.get("profile", ""),
                hit.get("service", ""),
                hit.get("node", ""),
                hit.get("id", ""),
                summary(hit),
                local_time(hit.get("created")),
            ]
            for hit in hits
        ),
        title="search results",
    )


# -- node state and sync ------------------------------------------------------------------


def show_state(state: dict[str, Any], node: str) -> None:
    """A node's cache state for a person."""
    synced = local_time(state.get("synced_at")) or "never"
    rows = [
        ["state", state.get("state", "")],
        ["current", "yes" if state.get("current") else "no"],
        ["items cached", state.get("item_count", 0)],
        ["last synchronised", synced],
        ["analyser", state.get("analyser", "")],
        ["type", state.get("type", "")],
        ["subtype", state.get("subtype", "")],
        ["reason", state.get("reason", "")],
    ]
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(str(label), str(value))
    out = console()
    out.print(f"cache state of {node}", markup=False, highlight=False)
    out.print(table)


@cache.command()
@click.argument("service")
@click.argument("node")
@profile_option
@json_option
@click.pass_obj
def state(options: CliOptions, service: str, node: str, profile: str, as_json: bool) -> None:
    """Show a node's cache state ('-' as SERVICE: your own PEP service)."""

    async def body(client: RoostClient) -> dict[str, Any]:
        return await client.get_node_state(profile, service_argument(service), node)

    found = run_with_client(options, body)
    if as_json:
        print_json(found)
    else:
        show_state(found, node)


@cache.command()
@click.argument("service")
@click.argument("node")
@profile_option
@click.option("--no-wait", is_flag=True, help="Start the sync and return at once.")
@json_option
@click.pass_obj
def sync(
    options: CliOptions, service: str, node: str, profile: str, no_wait: bool, as_json: bool
) -> None:
    """Synchronise a node now and keep it synchronised; shows its progress until it ends.

    Exits 0 when the sync completed, 1 when it failed (state error) or the node cannot be
    kept current (no_sync); --no-wait returns once the sync has started.
    """
    target = service_argument(service)

    async def body(client: RoostClient) -> dict[str, Any] | None:
        if no_wait:
            await client.sync_node(profile, target, node)
            return None
        show = not as_json and error_console().is_terminal
        return await follow_sync(client, profile, target, node, show)

    found = run_with_client(options, body)
    if found is None:
        if as_json:
            print_json({"started": True})
        else:
            click.echo(f"Sync of {node} started", err=True)
        return
    if as_json:
        print_json(found)
    else:
        show_state(found, node)
    if found.get("state") != "completed":
        reason = found.get("reason") or "no reason given"
        fail(f"the sync of {node} ended {found.get('state')}: {reason}", ExitCode.FAILURE)


# -- purge, reset, analysers --------------------------------------------------------------


def parse_when(text: str) -> float:
    """--older-than: epoch seconds, an ISO 8601 date or time, or an age (30d, 12h, 1.5w)."""
    age = _AGE.fullmatch(text.strip())
    if age:
        return time.time() - float(age.group(1)) * _AGE_SECONDS[age.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is no time: give epoch seconds, an ISO date (2026-01-31) or an age "
            "(30d, 12h, 45m)",
            param_hint="--older-than",
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()


@cache.command()
@node_selection
@click.option(
    "--older-than",
    metavar="WHEN",
    help="Only items last stored before WHEN: epoch seconds, an ISO date, or an age (30d).",
)
@click.option("-y", "--yes", is_flag=True, help="Purge everything without asking.")
@json_option
@click.pass_obj
def purge(
    options: CliOptions,
    profiles: tuple[str, ...],
    services: tuple[str, ...],
    nodes: tuple[str, ...],
    types: tuple[str, ...],
    older_than: str | None,
    yes: bool,
    as_json: bool,
) -> None:
    """Remove cached items matching every filter given; prints how many went.

    Without --older-than the matched nodes leave the cache; with it they stay, and are
    served again once synchronised. No filter at all purges everything (asks first).
    """
    filters: dict[str, Any] = {}
    for key, values in (
        ("profiles", profiles),
        ("services", services),
        ("nodes", nodes),
        ("types", types),
    ):
        if values:
            filters[key] = list(values)
    if older_than is not None:
        filters["older_than"] = parse_when(older_than)
    if not filters and not yes:
        confirm("Purge every cached item of every profile?")

    async def body(client: RoostClient) -> int:
        return await client.purge_cache(**filters)

    removed = run_with_client(options, body)
    if as_json:
        print_json({"removed": removed})
    else:
        click.echo(f"removed {removed} item(s)")


def confirm(question: str) -> None:
    """Ask; anything but yes stops the command (exit 1)."""
    try:
        agreed = click.confirm(question, default=False, err=True)
    except click.Abort:
        agreed = False
    if not agreed:
        fail("nothing done", ExitCode.FAILURE)


@cache.command()
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def reset(options: CliOptions, yes: bool) -> None:
    """Empty the cache: every sync stops, every node and item is forgotten."""
    if not yes:
        confirm("Forget every cached node and item of every profile?")

    async def body(client: RoostClient) -> None:
        await client.reset_cache()

    run_with_client(options, body)
    click.echo("The cache is empty", err=True)


@cache.command()
@json_option
@click.pass_obj
def analysers(options: CliOptions, as_json: bool) -> None:
    """List the analysers in the order they are consulted (the first match wins)."""

    async def body(client: RoostClient) -> list[dict[str, Any]]:
        return await client.list_analysers()

    found = run_with_client(options, body)
    if as_json:
        print_json({"analysers": found})
        return
    print_table(
        ["name", "matches", "type", "subtype", "sync", "parser", "source"],
        (
            [
                a.get("name", ""),
                a.get("node")
                or (f"{a['node_prefix']}…" if a.get("node_prefix") else "")
                or a.get("namespace", ""),
                a.get("type", ""),
                a.get("subtype", ""),
                "yes" if a.get("to_sync") else "no",
                a.get("parser_version") or ("yes" if a.get("has_parser") else ""),
                a.get("source", ""),
            ]
            for a in found
        ),
        title="analysers",
    )
