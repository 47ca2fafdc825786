"""A node the server trims to its max_items is trimmed the same way in the cache.

The servers show the limit to the node's owner only: the owner's copy follows it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from roost.service.cache.source import XmppSyncSource
from roost.service.events import EventHub, ItemsEvent
from roost.service.pubsub.model import ItemsRequest, PubsubItem
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager
from tests.cache.test_cache_sync import Roost, cached_reply, entry, roost, wait_state
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
    cached = await cached_reply(roost, "alice", svc, node)
    fresh = await roost.pubsub.get_items("alice", svc, node, ItemsRequest(use_cache=False))
    assert [i.id for i in cached.items] == [i.id for i in fresh.items]
    assert [i.id for i in cached.items] == ["p3", "p4", "p5", "p6", "p7"]
    assert cached.rsm_count == fresh.rsm_count == 5


def announced(hub: EventHub, node: str, ids: set[str]) -> asyncio.Event:
    """An event set once the hub has announced every one of the node's items ``ids``."""
    heard: set[str] = set()
    done = asyncio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, ItemsEvent) and event.node == node and event.kind == "items":
            heard.update(item["id"] for item in event.items)
            if ids <= heard:
                done.set()

    hub.subscribe(on_event)
    return done


class PausingSource(XmppSyncSource):
    """The real source, holding a full fetch after its last page until told to go on,
    so that a test can publish while the sync is storing."""

    def __init__(self, pubsub: PubsubService, sessions: SessionManager) -> None:
        super().__init__(pubsub, sessions)
        self.fetched = asyncio.Event()
        self.go_on = asyncio.Event()

    async def fetch_all_items(  # type: ignore[override]
        self, profile: str, service: str, node: str, page_size: int, *, newest: int | None = None
    ) -> AsyncIterator[list[PubsubItem]]:
        async for page in super().fetch_all_items(profile, service, node, page_size, newest=newest):
            yield page
        self.fetched.set()
        await self.go_on.wait()


async def test_publications_during_a_sync_follow_the_node_limit_too(
    roost: Roost, sessions: SessionManager, hub: EventHub, xmpp_server: XmppServer
) -> None:
    recorder = Recorder(hub)
    source = PausingSource(roost.server, sessions)
    async with roost.restarted_cache(source):
        svc = xmpp_server.pubsub_service
        node = f"blog-{uuid.uuid4().hex[:8]}"
        await roost.pubsub.create_node("alice", svc, node, {"pubsub#max_items": "5"})
        for n in range(5):
            await roost.pubsub.publish("alice", svc, node, f"p{n}", entry(n))
        await roost.pubsub.get_items("alice", svc, node, ItemsRequest())
        await asyncio.wait_for(source.fetched.wait(), 10)
        both = announced(hub, node, {"p5", "p6"})
        # Published while the sync stores: the notifications wait for the sync, and the
        # server drops p0 and p1 meanwhile.
        for n in (5, 6):
            await roost.pubsub.publish("alice", svc, node, f"p{n}", entry(n))
        # Frontends hear of a notification once the cache has taken it (buffered here).
        await asyncio.wait_for(both.wait(), 30)
        source.go_on.set()
        await wait_state(recorder, node, "completed")
        cached = await cached_reply(roost, "alice", svc, node)
        fresh = await roost.pubsub.get_items("alice", svc, node, ItemsRequest(use_cache=False))
        assert [i.id for i in fresh.items] == ["p2", "p3", "p4", "p5", "p6"]
        assert [i.id for i in cached.items] == [i.id for i in fresh.items]
