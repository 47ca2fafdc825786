"""A node past the cache's item limit is resynchronised incrementally.

The cache keeps the newest ``max_items_per_node`` items of such a node, so after a
reconnection it compares the server's listing within that window only: what is new in it
is fetched by id, what the server no longer has is dropped, and what newer items pushed
out of the window is trimmed. A full download of the newest N is for when that cannot
give a correct copy.
"""

from __future__ import annotations

import uuid

import pytest

from roost.service.events import SyncStateChanged
from roost.service.pubsub.model import ItemsRequest
from tests.cache.test_cache_sync import (
    ATOM,
    CountingSource,
    Roost,
    both,
    entry,
    roost,
    wait_state,
)
from tests.fixtures.node_fill import fill_node
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.xmpp, pytest.mark.slow]
__all__ = ["roost"]

# Items in the node, and the cache's limit, per server: the limit takes the first sync
# two pages back from the newest where the server pages (ejabberd). Both nodes are
# filled by writing the server's store, as other clients' publishing over time would
# have left it (publishing would take minutes).
SIZES = {"ejabberd": (4_000, 1_000), "prosody": (1_000, 200)}
NEW = 5


def item_id(n: int) -> str:
    return f"p{n:05d}"


async def large_node(roost: Roost, server: XmppServer, count: int) -> str:
    """A new node of the pubsub component with ``count`` items, published by alice."""
    node = f"blog-{uuid.uuid4().hex[:8]}"
    svc = server.pubsub_service
    await roost.pubsub.create_node("alice", svc, node, {"pubsub#max_items": "max"})
    entries = (
        (item_id(n), ATOM, [("id", f"urn:uuid:{n}"), ("title", f"Post {n}")]) for n in range(count)
    )
    await fill_node(server, node, server.jid("alice"), entries)
    return node


async def test_a_node_past_the_limit_resyncs_only_what_changed_among_its_newest(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    svc = xmpp_server.pubsub_service
    size, limit = SIZES[xmpp_server.kind]
    retracted = item_id(size - limit // 4)  # among the newest: cached
    node = await large_node(roost, xmpp_server, size)
    source = CountingSource(roost.server, roost.sessions)
    async with roost.restarted_cache(source, max_items_per_node=limit) as cache:
        await roost.pubsub.get_items("bob", svc, node, ItemsRequest(max_items=1))
        await wait_state(recorder, node, "completed")
        # The first sync fetches the newest N.
        assert source.fetched_whole[node] == limit
        assert (await cache.get_node_state("bob", svc, node))["item_count"] == limit

        await roost.sessions.disconnect("bob")
        # Meanwhile another client publishes and retracts an item among the newest.
        for n in range(size, size + NEW):
            await roost.pubsub.publish("alice", svc, node, item_id(n), entry(n))
        await roost.pubsub.retract("alice", svc, node, [retracted], {})
        mark = len([e for e in recorder.of(SyncStateChanged) if e.node == node])
        await roost.sessions.connect("bob")
        await wait_state(recorder, node, "completed", after=mark)

        # Only the new items were fetched, by id; nothing was downloaded whole again.
        assert source.fetched_whole[node] == limit
        assert source.fetched_by_id.get(node) == [item_id(n) for n in range(size, size + NEW)]
        # The cache holds the server's newest N, and knows the node holds more.
        fresh = await roost.pubsub.get_items(
            "bob", svc, node, ItemsRequest(max_items=limit, use_cache=False)
        )
        newest_ids = [i.id for i in fresh.items]
        assert len(newest_ids) == limit and retracted not in newest_ids
        assert fresh.rsm_count == size + NEW - 1
        record = await roost.db.nodes.get_node("bob", svc, node)
        assert record is not None
        assert record.extra["truncated"] and record.extra["total"] == fresh.rsm_count
        stored = [i for i, _updated in await roost.db.items.list_item_ids(record.id)]
        assert stored == newest_ids
        # The cache answers the newest N as the server does.
        for n in (1, 10, limit):
            newest = await both(roost, xmpp_server, node, max_items=n)
            assert [i.id for i in newest.items] == newest_ids[-n:]

        # Retractions alone bring older items back among the newest: only those are
        # fetched, and go before the cached ones.
        await roost.sessions.disconnect("bob")
        await roost.pubsub.retract("alice", svc, node, newest_ids[-3:-1], {})
        mark = len([e for e in recorder.of(SyncStateChanged) if e.node == node])
        await roost.sessions.connect("bob")
        await wait_state(recorder, node, "completed", after=mark)
        fresh = await roost.pubsub.get_items(
            "bob", svc, node, ItemsRequest(max_items=limit, use_cache=False)
        )
        back = [i.id for i in fresh.items if i.id not in newest_ids]
        assert len(back) == 2 and [i.id for i in fresh.items][:2] == back
        assert source.fetched_by_id[node][NEW:] == back
        assert source.fetched_whole[node] == limit
        stored = [i for i, _updated in await roost.db.items.list_item_ids(record.id)]
        assert stored == [i.id for i in fresh.items]
        for n in (1, limit):
            await both(roost, xmpp_server, node, max_items=n)
