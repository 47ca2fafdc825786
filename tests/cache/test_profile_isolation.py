"""One profile's cache never answers another profile.

Two profiles of one server, alice and bob. alice owns a node only she may read (access
model ``whitelist``) and her cache holds its complete copy; bob asking for it must get
the server's refusal, never alice's copy, whatever the request, and Search and
GetNodeState scoped to bob know nothing of it.
"""

from __future__ import annotations

import uuid

import pytest

from roost.service.errors import XmppError
from roost.service.pubsub.model import ItemsRequest
from tests.cache.test_cache_sync import Roost, cached_reply, entry, roost, wait_state
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp
__all__ = ["roost"]

REFUSALS = {"forbidden", "not-authorized", "not-allowed", "item-not-found"}


async def test_a_cached_private_node_is_never_served_to_another_profile(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    svc = xmpp_server.pubsub_service
    node = f"blog-{uuid.uuid4().hex[:8]}"
    await roost.pubsub.create_node(
        "alice", svc, node, {"pubsub#access_model": "whitelist", "pubsub#max_items": "100"}
    )
    for n in range(3):
        await roost.pubsub.publish("alice", svc, node, f"p{n}", entry(n, f"Private {n}"))
    await roost.pubsub.get_items("alice", svc, node, ItemsRequest())
    await wait_state(recorder, node, "completed")
    mine = await cached_reply(roost, "alice", svc, node)
    assert [item.id for item in mine.items] == ["p0", "p1", "p2"]

    requests = [
        ItemsRequest(),
        ItemsRequest(max_items=1),
        ItemsRequest(item_ids=["p1"]),
        ItemsRequest(max_items=2, after=mine.rsm_first or ""),
    ]
    for request in requests:
        with pytest.raises(XmppError) as refused:
            await roost.pubsub.get_items("bob", svc, node, request)
        assert refused.value.condition in REFUSALS, (request, refused.value.condition)

    state = await roost.cache.get_node_state("bob", svc, node)
    assert state["state"] == "none"
    assert await roost.cache.search({"profiles": ["bob"], "nodes": [node]}) == []
    assert await roost.cache.search({"profiles": ["bob"], "fts": "Private"}) == []
    hits = await roost.cache.search({"nodes": [node]})
    assert {hit["profile"] for hit in hits} == {"alice"}
    # Still alice's, and still served to her from her copy.
    again = await cached_reply(roost, "alice", svc, node)
    assert [item.id for item in again.items] == ["p0", "p1", "p2"]


async def test_each_profile_has_its_own_copy_of_a_shared_node(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    svc = xmpp_server.pubsub_service
    node = f"blog-{uuid.uuid4().hex[:8]}"
    await roost.pubsub.create_node("alice", svc, node, {"pubsub#max_items": "100"})
    for n in range(2):
        await roost.pubsub.publish("alice", svc, node, f"p{n}", entry(n))
    await roost.pubsub.get_items("alice", svc, node, ItemsRequest())
    await wait_state(recorder, node, "completed")
    await cached_reply(roost, "alice", svc, node)
    # bob has no copy yet: his first read goes to the server, not to alice's rows.
    first = await roost.pubsub.get_items("bob", svc, node, ItemsRequest())
    assert not first.from_cache
    assert [item.id for item in first.items] == ["p0", "p1"]
    # Purging bob's copy leaves alice's.
    await wait_state(recorder, node, "completed", after=1)
    await cached_reply(roost, "bob", svc, node)
    assert await roost.cache.purge({"profiles": ["bob"], "nodes": [node]}) == 2
    assert (await roost.cache.get_node_state("alice", svc, node))["item_count"] == 2
    kept = await cached_reply(roost, "alice", svc, node)
    assert [item.id for item in kept.items] == ["p0", "p1"]
