"""A store call whose caller is cancelled still ends its transaction.

Without that, aiosqlite goes on running the statement while SQLAlchemy drops the
connection with the transaction open: the next writer waits out the busy timeout and
fails with "database is locked".
"""

from __future__ import annotations

import asyncio

import pytest

from roost.storage.database import Database
from roost.storage.item_records import ItemInput


def rows(count: int, start: int = 0) -> list[ItemInput]:
    """Items large enough that writing them takes tens of milliseconds."""
    return [
        ItemInput(
            f"i{n}", "alice@example.org", f"<item id='i{n}'/>", {"t": "x" * 50}, "some words " * 5
        )
        for n in range(start, start + count)
    ]


async def test_a_cancelled_write_leaves_the_database_writable(sqlite_url: str) -> None:
    db = await Database.open(sqlite_url)
    try:
        await db.profiles.create_profile("alice", "alice@example.org", "", {})
        node = await db.nodes.get_or_create_node("alice", "pubsub.example.org", "n")
        big = rows(20_000)
        # The cancellation lands in a different phase of the write each time: before it
        # starts, between statements, in the middle of the batch.
        for delay in (0.0, 0.005, 0.02, 0.05, 0.1, 0.2):
            before = await db.items.count_items(node.id)
            write = asyncio.create_task(db.items.upsert_items(node.id, big))
            await asyncio.sleep(delay)
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            # All or nothing: the cancelled call committed or rolled back as a whole...
            assert await db.items.count_items(node.id) in (before, before + len(big))
            # ...and released the write lock: this would wait and fail with "database
            # is locked".
            await asyncio.wait_for(db.items.upsert_items(node.id, rows(5, start=50_000)), 5)
            await db.nodes.set_sync_state(node.id, "completed", extra={"delay": delay})
            assert (await db.nodes.get_node_by_id(node.id)).sync_state == "completed"
            await db.items.delete_items(node.id, [item.item_id for item in big])
    finally:
        await db.close()


async def test_a_failing_call_whose_caller_was_cancelled_is_not_reported_unretrieved(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = await Database.open(sqlite_url)
    try:
        # Unknown node id: the write fails on its foreign key after the caller is gone.
        write = asyncio.create_task(db.items.upsert_items(987_654, rows(2_000)))
        await asyncio.sleep(0.005)
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        await asyncio.sleep(0.05)
        assert not any("never retrieved" in r.getMessage() for r in caplog.records)
    finally:
        await db.close()
