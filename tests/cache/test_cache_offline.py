"""Offline reads against Prosody and ejabberd: a complete copy answers, with its age."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from roost.service.errors import NotConnected
from roost.service.events import Event, EventHub, SyncStateChanged
from roost.service.pubsub.model import ItemsReply, ItemsRequest
from tests.cache.test_cache_sync import (
    Roost,
    both,
    entry,
    make_blog,
    roost,
    same,
    synced_blog,
    wait_state,
)
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

__all__ = ["roost"]

# Each is compared between the server, before bob goes offline, and the cache after.
REQUESTS: list[dict[str, Any]] = [
    {},
    {"max_items": 1},
    {"max_items": 12},
    {"max_items": 100},
    {"item_ids": ["p003", "p020", "p011", "nope"]},
]


async def get(roost: Roost, service: str, node: str, **options: Any) -> ItemsReply:
    return await roost.pubsub.get_items("bob", service, node, ItemsRequest.from_options(options))


async def pages(
    roost: Roost, service: str, node: str, direction: str, *, use_cache: bool
) -> list[ItemsReply]:
    """Every page of the node, 7 items each, walking forward (after) or back (before)."""
    replies: list[ItemsReply] = []
    token = ""
    while True:
        reply = await get(
            roost, service, node, max_items=7, use_cache=use_cache, **{direction: token}
        )
        replies.append(reply)
        if reply.complete:
            return replies
        next_token = reply.rsm_last if direction == "after" else reply.rsm_first
        assert next_token is not None
        token = next_token


async def extra_of(roost: Roost, service: str, node: str) -> dict[str, Any]:
    record = await roost.db.nodes.get_node("bob", service, node)
    assert record is not None
    return dict(record.extra)


async def no_sync_running(recorder: Recorder) -> None:
    """Wait until every sync has ended, other tests' nodes included (ejabberd sends the
    last item of each node bob subscribed to when he connects, and they get synced).

    A sync cut off by a disconnection while it writes can leave the database locked for
    the busy timeout (a known fault of cancelled writes), which would delay the record
    of when the copy was current.
    """
    for _ in range(400):
        states = {(e.profile, e.service, e.node): e.state for e in recorder.of(SyncStateChanged)}
        if "in_progress" not in states.values():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"syncs still running: {states}")


async def test_offline_reads_answer_from_the_complete_copy(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    node = await synced_blog(roost, xmpp_server, recorder, 30)
    svc = xmpp_server.pubsub_service
    server = [await get(roost, svc, node, use_cache=False, **o) for o in REQUESTS]
    server_pages = {
        d: await pages(roost, svc, node, d, use_cache=False) for d in ("after", "before")
    }
    synced_at = (await extra_of(roost, svc, node))["synced_at"]
    await no_sync_running(recorder)
    offline_since = time.time()
    await roost.sessions.disconnect("bob")
    for _ in range(100):
        extra = await extra_of(roost, svc, node)
        if "current_until" in extra:
            break
        await asyncio.sleep(0.02)
    # The copy was current when the session went down, later than its sync.
    assert synced_at < offline_since <= extra["current_until"] <= time.time()

    ages: list[float] = []
    for options, fresh in zip(REQUESTS, server, strict=True):
        cached = await get(roost, svc, node, **options)
        same(cached, fresh)
        assert cached.cache_age is not None
        assert 0 <= cached.cache_age <= time.time() - offline_since
        ages.append(cached.cache_age)
    for direction, fresh_pages in server_pages.items():
        cached_pages = await pages(roost, svc, node, direction, use_cache=True)
        assert len(cached_pages) == len(fresh_pages) > 1
        for cached, fresh in zip(cached_pages, fresh_pages, strict=True):
            same(cached, fresh)
            assert cached.cache_age is not None
    # No waiting needed: the age is read from the clock (nanoseconds here) at each answer.
    later = await get(roost, svc, node)
    assert later.cache_age is not None and later.cache_age > max(ages)
    assert later.metadata()["cache_age"] == later.cache_age

    # Asking the server, or changing anything, needs the session.
    with pytest.raises(NotConnected, match="is not connected"):
        await get(roost, svc, node, use_cache=False)
    with pytest.raises(NotConnected):
        await roost.pubsub.publish("bob", svc, node, "p999", entry(999))


async def test_without_a_complete_copy_offline_is_not_connected(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    svc = xmpp_server.pubsub_service
    unread = await make_blog(roost, xmpp_server, 3)
    await roost.sessions.disconnect("bob")
    with pytest.raises(NotConnected, match=r"offline and node .* is not cached completely"):
        await get(roost, svc, unread)


async def test_an_interrupted_resync_is_not_served_offline(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder, hub: EventHub
) -> None:
    node = await synced_blog(roost, xmpp_server, recorder, 5)
    svc = xmpp_server.pubsub_service
    closing: list[asyncio.Future[None]] = []
    # A restarted cache, where nothing else is current: closing it stops the resync at once.
    async with roost.restarted_cache() as cache:

        def stop_when_resyncing(event: Event) -> None:
            # Roost stops while the resync runs: its rows may be half changed.
            if isinstance(event, SyncStateChanged) and event.node == node:
                resyncing = event.state == "in_progress"
                if resyncing and not closing:
                    closing.append(asyncio.ensure_future(cache.close()))

        hub.subscribe(stop_when_resyncing)
        await cache.sync("bob", svc, node)
        for _ in range(200):
            if closing:
                break
            await asyncio.sleep(0.01)
        await closing[0]
    extra = await extra_of(roost, svc, node)
    assert extra["synced_once"] and extra["reason"] == "sync interrupted"
    async with roost.restarted_cache():
        await roost.sessions.disconnect("bob")
        with pytest.raises(NotConnected, match="not cached completely"):
            await get(roost, svc, node)


async def test_a_request_past_the_item_limit_is_not_connected_offline(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder, hub: EventHub
) -> None:
    svc = xmpp_server.pubsub_service
    async with roost.restarted_cache(max_items_per_node=5):
        node = await synced_blog(roost, xmpp_server, recorder, 8)
        newest = await get(roost, svc, node, max_items=3, use_cache=False)
        await roost.sessions.disconnect("bob")
        cached = await get(roost, svc, node, max_items=3)
        same(cached, newest)
        assert cached.cache_age is not None
        # The oldest items are not kept: only the server knows them.
        for options in ({}, {"max_items": 6}, {"item_ids": ["p000"]}):
            with pytest.raises(NotConnected, match="not cached completely"):
                await get(roost, svc, node, **options)


async def test_after_reconnecting_the_cache_serves_once_resynchronised(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    node = await synced_blog(roost, xmpp_server, recorder, 5)
    svc = xmpp_server.pubsub_service
    await roost.sessions.disconnect("bob")
    await roost.pubsub.publish("alice", svc, node, "p900", entry(900))
    offline = await get(roost, svc, node)
    # The copy is as old as its age says: what came since is not in it.
    assert offline.from_cache and offline.cache_age is not None
    assert "p900" not in [i.id for i in offline.items]
    mark = len([e for e in recorder.of(SyncStateChanged) if e.node == node])
    await roost.sessions.connect("bob")
    first = await get(roost, svc, node)
    assert not first.from_cache and first.cache_age is None
    assert first.items[-1].id == "p900"
    await wait_state(recorder, node, "completed", after=mark)
    current = await both(roost, xmpp_server, node)
    assert current.cache_age is None and current.items[-1].id == "p900"


async def test_the_own_pep_service_offline(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    node = f"blog-{uuid.uuid4().hex[:8]}"
    # Room for every item: ejabberd's PEP nodes keep one by default.
    await roost.pubsub.create_node("bob", "", node, {"pubsub#max_items": "10"})
    for n in range(3):
        await roost.pubsub.publish("bob", "", node, f"p{n:03d}", entry(n))
    await roost.pubsub.get_items("bob", "", node, ItemsRequest())
    await wait_state(recorder, node, "completed")
    fresh = await get(roost, "", node, use_cache=False)
    assert fresh.items
    await roost.sessions.disconnect("bob")
    # Without a way to name the account offline, "" cannot be resolved.
    with pytest.raises(NotConnected, match="is not connected"):
        await get(roost, "", node)

    async def account_jid(profile: str) -> str:
        return (await roost.db.profiles.get_profile(profile)).jid

    async with roost.restarted_cache(accounts=account_jid):
        cached = await get(roost, "", node)
        same(cached, fresh)
        assert cached.cache_age is not None
