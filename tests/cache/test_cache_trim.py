"""A node the server trims to its max_items is trimmed the same way in the cache.

The servers show the limit to the node's owner only: the owner's copy follows it.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from roost.service.pubsub.model import ItemsRequest
from tests.cache.test_cache_sync import Roost, entry, roost, wait_state
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp
__all__ = ["roost"]


async def test_publications_past_the_node_limit_drop_the_oldest(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    svc = xmpp_server.pubsub_service
    node = f"blog-{uuid.uuid4().hex[:8]}"
    await roost.pubsub.create_node("alice", svc, node, {"pubsub#max_items": "5"})
    for n in range(5):
        await roost.pubsub.publish("alice", svc, node, f"p{n}", entry(n))
    await roost.pubsub.get_items("alice", svc, node, ItemsRequest())
    await wait_state(recorder, node, "completed")
    await roost.pubsub.subscribe("alice", svc, node, {})
    for n in range(5, 8):
        await roost.pubsub.publish("alice", svc, node, f"p{n}", entry(n))
    record = await roost.db.nodes.get_node("alice", svc, node)
    assert record is not None
    for _ in range(100):
        if await roost.db.items.get_item(record.id, "p7") is not None:
            break
        await asyncio.sleep(0.05)
    for _ in range(100):
        cached = await roost.pubsub.get_items("alice", svc, node, ItemsRequest())
        if cached.from_cache:
            break
        await asyncio.sleep(0.05)
    fresh = await roost.pubsub.get_items("alice", svc, node, ItemsRequest(use_cache=False))
    assert cached.from_cache
    assert [i.id for i in cached.items] == [i.id for i in fresh.items]
    assert [i.id for i in cached.items] == ["p3", "p4", "p5", "p6", "p7"]
    assert cached.rsm_count == fresh.rsm_count == 5
