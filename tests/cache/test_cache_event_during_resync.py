"""A notification whose application a resync's start overtakes asks for no second resync.

ejabberd sends each subscribed node's last item as a session starts, while the cache
begins resynchronising the profile's nodes: a notification can be applied (the cache's
copy, found not syncing, written to directly) while the node's resync starts. When the
copy then runs past the cache's limit, the resync under way already bounds it; a second
one right after it kept the node from frontends for its whole length.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from roost.service.cache.source import Currency, XmppSyncSource
from roost.service.events import EventHub, SyncStateChanged
from roost.service.pubsub.model import ItemsRequest
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager
from tests.cache.test_cache_sync import Roost, cached_reply, entry, roost, wait_state
from tests.cache.test_cache_trim import announced
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp
__all__ = ["roost"]

LIMIT = 5


class GatedSource(XmppSyncSource):
    """The real source; once armed, a sync waits at its start until told to go on."""

    def __init__(self, pubsub: PubsubService, sessions: SessionManager) -> None:
        super().__init__(pubsub, sessions)
        self.armed = False
        self.started = asyncio.Event()
        self.go_on = asyncio.Event()

    async def keep_current(self, profile: str, service: str, node: str) -> Currency:
        if self.armed:
            self.started.set()
            await self.go_on.wait()
        return await super().keep_current(profile, service, node)


async def test_a_notification_applied_as_a_resync_starts_asks_for_no_second_one(
    roost: Roost, sessions: SessionManager, hub: EventHub, xmpp_server: XmppServer
) -> None:
    recorder = Recorder(hub)
    source = GatedSource(roost.server, sessions)
    async with roost.restarted_cache(source, max_items_per_node=LIMIT) as cache:
        svc = xmpp_server.pubsub_service
        node = f"blog-{uuid.uuid4().hex[:8]}"
        await roost.pubsub.create_node("alice", svc, node, {"pubsub#max_items": "max"})
        for n in range(LIMIT):
            await roost.pubsub.publish("alice", svc, node, f"p{n}", entry(n))
        await roost.pubsub.get_items("bob", svc, node, ItemsRequest())
        await wait_state(recorder, node, "completed")
        record = await roost.db.nodes.get_node("bob", svc, node)
        assert record is not None

        # The notification's application waits, as if slow, until the resync has begun.
        applying = asyncio.Event()
        apply_now = asyncio.Event()
        real_apply = cache.applier.apply

        async def slow_apply(*args: Any, **kwargs: Any) -> bool:
            applying.set()
            await apply_now.wait()
            return await real_apply(*args, **kwargs)

        cache.applier.apply = slow_apply  # type: ignore[method-assign]
        heard = announced(hub, node, {f"p{LIMIT}"})
        await roost.pubsub.publish("alice", svc, node, f"p{LIMIT}", entry(LIMIT))
        await asyncio.wait_for(applying.wait(), 30)

        source.armed = True
        mark = len([e for e in recorder.of(SyncStateChanged) if e.node == node])
        cache.scheduler.schedule(record.id)
        await asyncio.wait_for(source.started.wait(), 30)
        resync = cache.scheduler._tasks[record.id]
        # The copy goes past the limit while the resync runs.
        apply_now.set()
        await asyncio.wait_for(heard.wait(), 30)
        source.armed = False
        source.go_on.set()
        await wait_state(recorder, node, "completed", after=mark)
        await asyncio.wait({resync})

        # No second resync follows: the node is served from the cache, bounded.
        assert not cache.scheduler.is_syncing(record.id)
        states = [e.state for e in recorder.of(SyncStateChanged) if e.node == node][mark:]
        assert states == ["in_progress", "completed"], states
        # (The newest N: the cache keeps no more of the node.)
        reply = await cached_reply(roost, "bob", svc, node, ItemsRequest(max_items=LIMIT))
        fresh = await roost.pubsub.get_items(
            "bob", svc, node, ItemsRequest(max_items=LIMIT, use_cache=False)
        )
        assert [i.id for i in reply.items] == [i.id for i in fresh.items]
        assert [i.id for i in reply.items] == [f"p{n}" for n in range(1, LIMIT + 1)]
