"""Offline reads through the bus, roostd as a real process stopped and started again."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from roost.bridge.client import NotConnectedError, RoostClient
from roost.service.pubsub.operations import PubsubService
from tests.bus.test_cache_over_dbus import (
    MICROBLOG,
    client_for,
    entry,
    fill_blog,
    publisher,
    wait_state,
)
from tests.cache.test_cache_sync import canonical
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus]

__all__ = ["publisher"]


def same_items(cached: list[dict[str, Any]], fresh: list[dict[str, Any]]) -> None:
    assert [i["id"] for i in cached] == [i["id"] for i in fresh]
    assert [canonical(i["xml"]) for i in cached] == [canonical(i["xml"]) for i in fresh]


async def test_a_stopped_daemon_restarted_offline_answers_from_the_cache(
    roostd_launcher: RoostdLauncher, xmpp_server: XmppServer, publisher: PubsubService
) -> None:
    service = xmpp_server.pubsub_service
    node = await fill_blog(publisher, xmpp_server, 20)
    own = f"{MICROBLOG}:comments/{uuid.uuid4().hex[:8]}"
    daemon = roostd_launcher.start()
    client = await client_for(daemon, xmpp_server)
    # Room for every item: ejabberd's PEP nodes keep one by default.
    await client.create_node("bob", "", own, {"pubsub#max_items": "10"})
    for n in range(3):
        await client.publish("bob", "", own, f"own{n}", entry(n))
    for where, name in ((service, node), ("", own)):
        await client.get_items("bob", where, name)
        await wait_state(client, where, name, "completed")
    fresh, _meta = await client.get_items("bob", service, node, use_cache=False)
    page, page_meta = await client.get_items(
        "bob", service, node, max_items=5, before="", use_cache=False
    )
    own_fresh, _meta = await client.get_items("bob", "", own, use_cache=False)
    client.close()
    stopped = time.time()
    assert daemon.terminate() == 0

    # Started again with bob not connected: the complete copies answer, with their age.
    again = roostd_launcher.start(database=daemon.database)
    client = await RoostClient.connect(again.bus_address)
    assert not await client.is_connected("bob")
    items, meta = await client.get_items("bob", service, node)
    assert meta["from_cache"]
    same_items(items, fresh)
    # Counted from the stop (when the copy was last known current), not from the sync.
    assert 0 <= meta["cache_age"] <= time.time() - stopped
    cached_page, cached_meta = await client.get_items("bob", service, node, max_items=5, before="")
    same_items(cached_page, page)
    assert cached_meta["rsm_count"] == page_meta["rsm_count"] == 20
    assert not cached_meta["complete"] and "cache_age" in cached_meta
    own_items, own_meta = await client.get_items("bob", "", own)
    assert own_meta["from_cache"] and "cache_age" in own_meta
    same_items(own_items, own_fresh)

    with pytest.raises(NotConnectedError, match="is not connected"):
        await client.get_items("bob", service, node, use_cache=False)
    with pytest.raises(NotConnectedError):
        await client.publish("bob", service, node, "late", entry(99))
    client.close()
    assert again.terminate() == 0
