"""The cache on PEP nodes that events cannot keep current: not cached, or refreshed
periodically when a config rule says so."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from roost.service.cache.analysers import AnalyserRegistry
from roost.service.cache.source import Currency, XmppSyncSource
from roost.service.events import SyncStateChanged
from roost.service.pubsub.model import ItemsRequest
from tests.cache.test_cache_sync import Roost, entry, roost
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

MICROBLOG = "urn:xmpp:microblog:0"
__all__ = ["roost"]


async def open_blog(roost: Roost, server: XmppServer, count: int) -> str:
    """alice's PEP microblog, open to anyone, with ``count`` new posts; returns the tag."""
    tag = uuid.uuid4().hex[:6]
    for n in range(count):
        await roost.pubsub.publish(
            "alice", "", MICROBLOG, f"{tag}-{n}", entry(n), {"pubsub#access_model": "open"}
        )
    return tag


async def wait_profile_state(recorder: Recorder, profile: str, node: str, state: str) -> None:
    """Wait until the profile's node has been in ``state``."""
    for _ in range(600):
        if any(
            (e.profile, e.node, e.state) == (profile, node, state)
            for e in recorder.of(SyncStateChanged)
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{profile}'s {node} never reached {state}")


class RefusingSource(XmppSyncSource):
    """The real source, on a server that refuses every subscription: neither test server
    refuses one to an open node, which a non-contact may read."""

    async def keep_current(self, profile: str, service: str, node: str) -> Currency:
        return Currency(current=False, subscribed=False, reason="the subscription was refused")


async def test_a_node_that_cannot_be_kept_current_is_not_cached(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    async with roost.restarted_cache(source=RefusingSource(roost.server, roost.sessions)) as cache:
        await open_blog(roost, xmpp_server, 3)
        alice = xmpp_server.jid("alice")
        reply = await roost.pubsub.get_items("bob", alice, MICROBLOG, ItemsRequest())
        assert not reply.from_cache and reply.items
        # bob's node, not alice's own: her publications make the cache prefetch it, and it
        # may reach no_sync first.
        await wait_profile_state(recorder, "bob", MICROBLOG, "no_sync")
        state = await cache.get_node_state("bob", alice, MICROBLOG)
        assert state["state"] == "no_sync" and not state["current"]
        assert "refused" in state["reason"]
        assert state["analyser"] == "microblog"
        again = await roost.pubsub.get_items("bob", alice, MICROBLOG, ItemsRequest())
        assert not again.from_cache


async def test_a_config_rule_opts_such_a_node_into_periodic_refresh(
    xmpp_server: XmppServer,
    recorder: Recorder,
    roost: Roost,
) -> None:
    registry = AnalyserRegistry()
    registry.load_config_rules(
        [
            {
                "name": "contacts-blogs",
                "node": MICROBLOG,
                "type": "blog",
                "to_sync": True,
                "refresh_interval": 0.5,
            }
        ]
    )
    refusing = RefusingSource(roost.server, roost.sessions)
    async with roost.restarted_cache(source=refusing, registry=registry) as cache:
        tag = await open_blog(roost, xmpp_server, 2)
        alice = xmpp_server.jid("alice")
        await roost.pubsub.get_items("bob", alice, MICROBLOG, ItemsRequest())
        # alice's own session syncs her node too: wait for bob's copy.
        for _ in range(100):
            if (await cache.get_node_state("bob", alice, MICROBLOG))["current"]:
                break
            await asyncio.sleep(0.05)
        # A refresh in progress is not served (its rows are changing): it goes to the
        # server, so ask again until one lands between refreshes.
        for _ in range(100):
            reply = await roost.pubsub.get_items("bob", alice, MICROBLOG, ItemsRequest(max_items=1))
            if reply.from_cache:
                break
            assert reply.cache_age is None
            await asyncio.sleep(0.02)
        assert reply.from_cache and reply.cache_age is not None and reply.cache_age >= 0
        assert "cache_age" in reply.metadata()
        assert reply.items[-1].id == f"{tag}-1"
        # No event reaches bob; the next refresh brings the new post.
        await roost.pubsub.publish(
            "alice", "", MICROBLOG, f"{tag}-new", entry(9), {"pubsub#access_model": "open"}
        )
        for _ in range(100):
            reply = await roost.pubsub.get_items("bob", alice, MICROBLOG, ItemsRequest(max_items=1))
            if reply.from_cache and reply.items and reply.items[-1].id == f"{tag}-new":
                break
            await asyncio.sleep(0.1)
        assert reply.from_cache and reply.items[-1].id == f"{tag}-new"
