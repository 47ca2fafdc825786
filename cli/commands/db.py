"""``roost db``: the daemon's database as a whole (``roost db copy --to URL``).

The daemon makes the copy itself, from the database it has open (``CopyDatabase``): the
command never opens a database, so it works the same whatever the daemon runs on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from roost.cli.options import json_option
from roost.cli.output import error_console, print_json, print_table
from roost.cli.session import CliOptions, run_with_client

if TYPE_CHECKING:
    from roost.bridge.client import RoostClient

#: How much of a checksum the table shows (``--json`` gives all of it).
SHOWN_CHECKSUM = 16


@click.group("db")
def db_group() -> None:
    """The daemon's database: copy it whole to another database (SQLite or PostgreSQL)."""


@db_group.command("copy")
@click.option(
    "--to",
    "target",
    required=True,
    metavar="URL",
    help="The database to copy to: sqlite:////absolute/path/roost.sqlite or "
    "postgresql://user@host[:port]/dbname (a password is better kept in ~/.pgpass "
    "than on the command line).",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Delete the rows the target holds before copying (without it, a target that "
    "holds rows is refused).",
)
@json_option
@click.pass_obj
def db_copy(options: CliOptions, target: str, replace: bool, as_json: bool) -> None:
    """Copy the whole database the daemon uses to the database at URL.

    The daemon reads its database in one snapshot, so it keeps serving meanwhile (what
    it writes after the copy began is not in the copy). The target is brought to the
    current schema, every table is copied with its ids, then read back: each table's
    row count and checksum must match the source's, or the command fails (exit 9).

    A target holding rows is refused (exit 6) unless --replace; a server that cannot be
    reached exits 5; a malformed URL, or the daemon's own database, 3. JSON:
    '{"tables": [{"table": "profiles", "rows": 2, "checksum": "…", "seconds": 0.01}, …]}'.
    """

    async def body(client: RoostClient) -> list[dict[str, Any]]:
        return await client.copy_database(target, replace=replace)

    if as_json or not error_console().is_terminal:
        tables = run_with_client(options, body)
    else:
        with error_console().status("Copying the database…"):
            tables = run_with_client(options, body)
    if as_json:
        print_json({"tables": tables})
        return
    print_table(
        ["Table", "Rows", "Checksum (SHA-256)", "Seconds"],
        (
            [
                table["table"],
                f"{table['rows']:,}",
                table["checksum"][:SHOWN_CHECKSUM] + "…",
                f"{table['seconds']:.2f}",
            ]
            for table in tables
        ),
        title="Copied and checked",
    )
    total = sum(int(table["rows"]) for table in tables)
    error_console().print(
        f"{total:,} rows in {len(tables)} tables copied; every table's row count and "
        "checksum match the source's."
    )
