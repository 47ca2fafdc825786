"""Every store of a daemon takes its write transactions in one queue on SQLite.

The item store's large pages, the values, the roster and the nodes all write to the one
file: SQLite's busy handler would otherwise decide who writes next, by polling, and a
writer unlucky long enough fails "database is locked".
"""

from __future__ import annotations

import asyncio

import pytest

from roost.storage import Database, TypedValue
from roost.storage.engines import sqlite_connections
from roost.storage.item_records import ItemInput
from roost.storage.records import RosterEntry
from roost.storage.write_turn import write_turn_for


def _item(item_id: str) -> ItemInput:
    return ItemInput(
        item_id=item_id,
        publisher="p@example.org",
        data=f"<item xmlns='http://jabber.org/protocol/pubsub' id='{item_id}'/>",
        parsed=None,
        search_text="words " * 20,
        created=None,
    )


async def test_one_turn_per_single_writer_database(database_url: str) -> None:
    """SQLite's stores share one queue; PostgreSQL, where transactions write at once,
    has none."""
    async with await Database.open(database_url) as db:
        turn = write_turn_for(db.engine)
        if db.url.drivername.startswith("sqlite"):
            assert turn is not None
            assert write_turn_for(db.engine) is turn
        else:
            assert turn is None


async def test_writes_of_every_store_land_beside_large_item_pages(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item pages of thousands hold the write lock far longer than SQLite's busy timeout
    here; the values, contacts and nodes written meanwhile still all land, in their turn
    rather than through the busy handler's retries."""
    monkeypatch.setattr(sqlite_connections, "SQLITE_BUSY_TIMEOUT_MS", 20)
    database = await Database.open(sqlite_url)
    try:
        await database.profiles.create_profile("p", "p@example.org", "x", {})
        nodes = [
            (await database.nodes.get_or_create_node("p", "s.example.org", f"n{n}")).id
            for n in range(6)
        ]
        pages = [[_item(f"{node}-{i}") for i in range(2000)] for node in nodes]
        await asyncio.gather(
            *(
                database.items.upsert_items(node, page)
                for node, page in zip(nodes, pages, strict=True)
            ),
            *(database.values.set_value("p", "ns", f"k{n}", "i", n) for n in range(30)),
            *(
                database.roster.upsert_contact("p", RosterEntry(f"c{n}@example.org"), f"v{n}")
                for n in range(30)
            ),
            *(database.nodes.get_or_create_node("p", "s.example.org", f"m{n}") for n in range(30)),
        )
        assert [await database.items.count_items(node) for node in nodes] == [2000] * 6
        values = await database.values.get_values("p", "ns", [])
        assert values == {f"k{n}": TypedValue("i", n) for n in range(30)}
        _, contacts = await database.roster.get_roster("p")
        assert {c.jid for c in contacts} == {f"c{n}@example.org" for n in range(30)}
        assert len(await database.nodes.list_nodes("p")) == 36
    finally:
        await database.close()


async def test_a_write_waits_for_the_turn_and_reads_do_not(sqlite_url: str) -> None:
    """While one write holds the turn, another task's write waits and reads go on; a
    store write made within the held turn does not queue behind the turn it is part of."""
    database = await Database.open(sqlite_url)
    try:
        await database.profiles.create_profile("p", "p@example.org", "x", {})
        turn = write_turn_for(database.engine)
        assert turn is not None
        held, inner_done, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def hold_the_turn() -> None:
            async with turn.hold():
                held.set()
                # Within the turn: would wait for ever if it queued.
                await database.values.set_value("p", "ns", "inner", "i", 2)
                inner_done.set()
                await release.wait()

        holder = asyncio.create_task(hold_the_turn())
        await held.wait()
        waiting = asyncio.create_task(database.values.set_value("p", "ns", "late", "i", 1))
        await asyncio.wait_for(inner_done.wait(), 60)
        assert await database.values.get_values("p", "ns", []) == {"inner": TypedValue("i", 2)}
        assert await database.profiles.get_profile("p")
        assert turn.busy
        assert not waiting.done()
        release.set()
        await asyncio.wait_for(asyncio.gather(holder, waiting), 60)
        assert not turn.busy
        assert await database.values.get_values("p", "ns", ["late"]) == {"late": TypedValue("i", 1)}
    finally:
        await database.close()
