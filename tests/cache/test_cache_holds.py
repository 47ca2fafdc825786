"""Roost's own writes hold a node's cached copies until their notifications are applied,
also when the notifications lag behind the writes (as on a loaded machine): each write
waits for its own notification, of its own kind."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roost.service.events import ItemsEvent
from tests.cache.test_cache_sync import (
    Roost,
    cached_reply,
    entry,
    roost,
    synced_blog,
    write_and_read_back,
)
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp
__all__ = ["roost"]

# How late each notification is applied: a loaded two-core machine takes this long.
LAG = 0.05


def lagging(roost: Roost) -> None:
    """Apply every notification LAG seconds late."""
    apply = roost.cache.apply_event

    async def late(event: ItemsEvent) -> Any:
        await asyncio.sleep(LAG)
        return await apply(event)

    roost.cache.apply_event = late  # type: ignore[method-assign]


async def test_a_publication_and_its_retraction_each_hold_the_node(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    node = await synced_blog(roost, xmpp_server, recorder, 5)
    lagging(roost)
    await write_and_read_back(roost, xmpp_server, node)


async def test_a_purge_after_a_publication_holds_the_node_until_both_are_applied(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    node = await synced_blog(roost, xmpp_server, recorder, 5)
    lagging(roost)
    svc = xmpp_server.pubsub_service
    await roost.pubsub.publish("alice", svc, node, "p050", entry(50))
    await roost.pubsub.purge_node("alice", svc, node)
    reply = await cached_reply(roost, "bob", svc, node)
    assert [i.id for i in reply.items] == []
