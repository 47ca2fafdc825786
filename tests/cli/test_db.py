"""``roost db copy``: a running daemon copies its database; a daemon on the copy serves
the same answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dbus_fast import Variant

from roost.bridge.client import InvalidArgumentError, RoostClient
from roost.bridge.constants import STORAGE_INTERFACE
from roost.storage import Database
from roost.storage.copy import TABLES
from tests.cli.conftest import RoostCli, cli_env
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.xmpp import LOOPBACK, free_port
from tests.storage.test_copy import BLOG, populate

pytestmark = pytest.mark.dbus

ITEMS = 2_000
SEARCHES: list[dict[str, Any]] = [
    {"fts": "creme", "limit": 1000},
    {"parsed": [{"path": "tags", "op": "contains", "value": "t3"}], "limit": 1000},
    {"nodes": [BLOG], "order_by": [{"field": "created", "direction": "asc"}], "limit": 50},
]


async def fill(path: Path) -> None:
    """The database a daemon will serve: profiles, values, a roster, a cached blog."""
    db = await Database.open(f"sqlite:///{path}")
    try:
        await populate(db, items=ITEMS)
    finally:
        await db.close()


async def answers(bus_address: str) -> dict[str, Any]:
    """What a frontend reads from the daemon: values, params, profiles, contacts, searches
    (parsed data compared as JSON: each database spells it its own way)."""
    client = await RoostClient.connect(bus_address)
    try:
        values = {
            owner: {
                key: (variant.signature, variant.value)
                for key, variant in (await client.get_values(owner, "app")).items()
            }
            for owner in ("@global@", "alice")
        }
        searches = []
        for query in SEARCHES:
            hits = await client.search(**query)
            for hit in hits:
                if "parsed" in hit:
                    hit["parsed"] = json.loads(hit["parsed"])
            searches.append(hits)
        return {
            "values": values,
            "params": [
                await client.list_params("@global@", "ui"),
                await client.list_params("alice", "ui"),
            ],
            "profiles": sorted(await client.list_profiles()),
            "contacts": await client.list_contacts("alice"),
            "requests": await client.list_subscription_requests("alice"),
            "searches": searches,
        }
    finally:
        client.close()


async def test_a_daemon_on_the_copy_serves_what_the_original_served(
    roostd_launcher: RoostdLauncher, postgresql_url: str, tmp_path: Path
) -> None:
    database = tmp_path / "original.sqlite"
    await fill(database)
    original = roostd_launcher.start(database=database)
    before = await answers(original.bus_address)
    assert len(before["searches"][0]) == ITEMS // 10
    assert before["values"]["alice"]["huge"] == ("d", 1e300)

    roost = RoostCli(original.bus_address, cli_env(tmp_path))
    copied = roost("db", "copy", "--to", postgresql_url, "--json").json()
    rows = {table["table"]: table["rows"] for table in copied["tables"]}
    assert rows["pubsub_items"] == ITEMS + 1
    assert rows["kv_store"] == 20
    assert all(len(table["checksum"]) == 64 for table in copied["tables"])
    assert original.terminate() == 0

    on_copy = roostd_launcher.start("--database", postgresql_url)
    assert await answers(on_copy.bus_address) == before
    assert "postgresql" in on_copy.log_text()


async def test_refusals_exit_with_their_family_code(
    roostd_launcher: RoostdLauncher, postgresql_url: str, tmp_path: Path
) -> None:
    database = tmp_path / "original.sqlite"
    await fill(database)
    daemon = roostd_launcher.start(database=database)
    roost = RoostCli(daemon.bus_address, cli_env(tmp_path))

    first = roost("db", "copy", "--to", postgresql_url)
    assert first.code == 0, first.stderr
    assert "pubsub_items" in first.stdout and f"{ITEMS + 1:,}" in first.stdout

    again = roost("db", "copy", "--to", postgresql_url)
    assert again.code == 6, again.stderr
    assert "already holds data" in again.stderr and "[Conflict]" in again.stderr
    replaced = roost("db", "copy", "--to", postgresql_url, "--replace", "--json")
    assert {t["table"]: t["rows"] for t in replaced.json()["tables"]}["profiles"] == 2

    itself = roost("db", "copy", "--to", f"sqlite:///{database}", "--replace")
    assert itself.code == 3, itself.stderr
    assert "the database being copied" in itself.stderr

    unreachable = roost(
        "db", "copy", "--to", f"postgresql://roost:hunter2@{LOOPBACK}:{free_port()}/roost"
    )
    assert unreachable.code == 5, unreachable.stderr
    assert "cannot reach" in unreachable.stderr and "hunter2" not in unreachable.stderr

    assert roost("db", "copy", "--to", "mysql://localhost/roost").code == 3
    assert roost("db", "copy").code == 2
    assert "hunter2" not in daemon.log_text()


async def test_the_options_are_checked_on_the_bus(
    roostd_launcher: RoostdLauncher, tmp_path: Path
) -> None:
    daemon = roostd_launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    target = f"sqlite:///{tmp_path / 'copy.sqlite'}"
    try:
        for options, message in [
            ({"force": Variant("b", True)}, "unknown option force"),
            ({"replace": Variant("s", "yes")}, "replace option is a boolean"),
        ]:
            with pytest.raises(InvalidArgumentError, match=message):
                await client.call(STORAGE_INTERFACE, "CopyDatabase", "sa{sv}", [target, options])
        tables = await client.copy_database(target)
    finally:
        client.close()
    assert [table["table"] for table in tables] == [table.name for table in TABLES]
    assert {table["rows"] for table in tables} == {0}
