"""A node checked against the server's listing is resynchronised only for items whose
notification never came, not for those whose notification is still on its way.

A server lists an item as soon as it is published; its notification reaches the cache a
moment later, and under load waits its turn to be applied. The server here is a stand-in
(a listing, and a notification applied when the test says): no real server can be made to
answer a listing before the notification it sent earlier is applied, on command. The
database is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from roost.service.cache.reconcile import NodeReconciler
from roost.storage import Database, NodeRecord
from roost.storage.item_records import ItemInput

SERVICE, NODE = "pubsub.example.org", "blog-reconcile"
# Far more than the test needs: a notification applied within it is in time.
GRACE = 30.0


def item(item_id: str) -> ItemInput:
    """A stored item, as a notification or a sync leaves it."""
    return ItemInput(item_id, "alice@example.org", f"<item id='{item_id}'/>", {}, item_id)


class ListingServer:
    """The server side of a check: lists ``listed`` for the node."""

    def __init__(self, listed: list[str]) -> None:
        self.listed = listed
        self.asked = asyncio.Event()

    async def list_item_ids(self, profile: str, service: str, node: str) -> list[str] | None:
        """The node's ids, as the server lists them."""
        self.asked.set()
        return list(self.listed)

    def is_connected(self, profile: str) -> bool:
        """The profile's session is up."""
        return True


class Reconciler(NodeReconciler):
    """The reconciler, telling the test when it waits for late notifications."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.waiting = asyncio.Event()

    async def _still_missing(self, node_id: int, missing: set[str]) -> set[str]:
        self.waiting.set()
        return await super()._still_missing(node_id, missing)


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    """A database holding a node the cache has whole: items ``a`` and ``b``."""
    database = await Database.open(sqlite_url)
    await database.profiles.create_profile("alice", "alice@example.org", "", {})
    node = await database.nodes.get_or_create_node("alice", SERVICE, NODE)
    await database.items.upsert_items(node.id, [item("a"), item("b")])
    await database.nodes.set_sync_state(node.id, "completed")
    yield database
    await database.close()


@dataclass
class Check:
    """A check under way, the server listing ``c`` beside the cached ``a`` and ``b``,
    waiting for c's notification."""

    db: Database
    reconciler: Reconciler
    record: NodeRecord
    task: asyncio.Task[None]
    diverged: list[NodeRecord] = field(default_factory=list)

    async def applied(self, item_id: str) -> None:
        """A notification of ``item_id`` applied, as the cache's applier does."""
        await self.db.items.upsert_items(self.record.id, [item(item_id)])
        self.reconciler.publication_applied(self.record)


async def waiting_check(db: Database, grace: float) -> Check:
    """A check started, once it waits for the missing item's notification."""
    record = await db.nodes.get_node("alice", SERVICE, NODE)
    assert record is not None
    diverged: list[NodeRecord] = []

    async def changed(_record: NodeRecord) -> None:
        pass

    server = ListingServer(["a", "b", "c"])
    reconciler = Reconciler(db, server, changed, diverged.append, grace=grace)
    task = asyncio.create_task(reconciler.check(record.id))
    await asyncio.wait_for(reconciler.waiting.wait(), 30)
    return Check(db, reconciler, record, task, diverged)


async def test_an_item_whose_notification_comes_after_the_listing_needs_no_resync(
    db: Database,
) -> None:
    check = await waiting_check(db, GRACE)
    await check.applied("c")
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(check.task, 30)
    assert check.diverged == []
    # It went on as soon as c was applied, not at the end of the grace.
    assert asyncio.get_running_loop().time() - started < GRACE / 2
    await check.reconciler.close()


async def test_an_item_never_announced_resyncs_the_node_after_the_grace(db: Database) -> None:
    check = await waiting_check(db, 0.5)
    # Another item's notification does not end the wait for c.
    await check.applied("d")
    await asyncio.wait_for(check.task, 30)
    assert [r.id for r in check.diverged] == [check.record.id]
    await check.reconciler.close()
