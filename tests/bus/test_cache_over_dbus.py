"""The cache through the bus, roostd as a real process: transparency, crash, signals."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from roost.bridge.client import NotConnectedError, RoostClient
from roost.service.events import EventHub
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.dbus import Roostd, RoostdLauncher
from tests.fixtures.sessions import make_lookup
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus, pytest.mark.slow]

ATOM = "http://www.w3.org/2005/Atom"
MICROBLOG = "urn:xmpp:microblog:0"


def entry(n: int) -> str:
    return (
        f"<entry xmlns='{ATOM}'><id>urn:uuid:{n}</id><title>Post {n}</title>"
        f"<content type='text'>Body {n}</content>"
        f"<published>2026-01-01T00:00:00Z</published></entry>"
    )


@pytest.fixture
async def publisher(xmpp_server: XmppServer) -> AsyncIterator[PubsubService]:
    """A service-level client for alice, to fill nodes fast (many requests in flight)."""
    sessions = SessionManager(make_lookup(xmpp_server), EventHub())
    service = PubsubService(sessions, EventHub())
    await sessions.connect("alice")
    yield service
    await sessions.close()


async def fill_blog(pubsub: PubsubService, server: XmppServer, count: int) -> str:
    node = f"{MICROBLOG}:comments/{uuid.uuid4().hex[:8]}"
    await pubsub.create_node("alice", server.pubsub_service, node, {"pubsub#max_items": "max"})
    for start in range(0, count, 100):
        await asyncio.gather(
            *(
                pubsub.publish("alice", server.pubsub_service, node, f"i{n:05d}", entry(n))
                for n in range(start, min(start + 100, count))
            )
        )
    return node


async def client_for(daemon: Roostd, server: XmppServer, user: str = "bob") -> RoostClient:
    client = await RoostClient.connect(daemon.bus_address)
    if user not in await client.list_profiles():
        jid, password, options = server.credentials(user)
        await client.create_profile(user, jid, password, options)
    await client.connect_profile(user)
    return client


async def wait_state(client: RoostClient, service: str, node: str, state: str) -> None:
    for _ in range(1200):
        current = await client.get_node_state("bob", service, node)
        if current["state"] == state:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{node} stayed {current}")


def check_database(path: Any) -> None:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.execute(
            "INSERT INTO pubsub_items_fts(pubsub_items_fts, rank) VALUES ('integrity-check', 1)"
        )


# Prosody 0.12 takes time linear in a node's size for each publish (filling 5,000 items
# takes many minutes), so the large node lives on ejabberd.
@pytest.mark.parametrize("xmpp_server", ["ejabberd"], indirect=True)
async def test_kill_during_sync_then_resync(
    roostd_launcher: RoostdLauncher, xmpp_server: XmppServer, publisher: PubsubService
) -> None:
    service = xmpp_server.pubsub_service
    node = await fill_blog(publisher, xmpp_server, 5000)
    daemon = roostd_launcher.start()
    client = await client_for(daemon, xmpp_server)
    progressed = asyncio.Event()

    def on_progress(_p: str, _s: str, n: str, done: int, _total: int) -> None:
        if n == node and 0 < done < 5000:
            progressed.set()

    await client.on_sync_progress(on_progress)
    items, meta = await client.get_items("bob", service, node, max_items=1)
    assert not meta["from_cache"] and [i["id"] for i in items] == ["i04999"]
    await asyncio.wait_for(progressed.wait(), 60)
    daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait()
    client.close()
    check_database(daemon.database)

    # Restarted, the node is not served from the cache until a new sync completes.
    again = roostd_launcher.start(database=daemon.database)
    client = await RoostClient.connect(again.bus_address)
    state = await client.get_node_state("bob", service, node)
    assert state["state"] == "none" and not state["current"]
    assert "interrupted" in state["reason"]
    # Nor offline: the half-synced copy is not served.
    with pytest.raises(NotConnectedError, match="not cached completely"):
        await client.get_items("bob", service, node, max_items=1)
    states: list[str] = []
    await client.on_sync_state_changed(lambda _p, _s, n, s: states.append(s) if n == node else None)
    await client.connect_profile("bob")
    await wait_state(client, service, node, "completed")
    assert states[0] == "in_progress"
    state = await client.get_node_state("bob", service, node)
    assert state["item_count"] == 5000 and state["current"]
    cached, meta = await client.get_items("bob", service, node, max_items=300, after="")
    fresh, fresh_meta = await client.get_items(
        "bob", service, node, max_items=300, after="", use_cache=False
    )
    assert meta["from_cache"] and not fresh_meta["from_cache"]
    assert [i["id"] for i in cached] == [i["id"] for i in fresh]
    assert meta["rsm_count"] == fresh_meta["rsm_count"] == 5000
    client.close()
    assert again.terminate() == 0
    check_database(again.database)


async def test_events_and_search_over_the_bus(
    roostd_launcher: RoostdLauncher, xmpp_server: XmppServer, publisher: PubsubService
) -> None:
    service = xmpp_server.pubsub_service
    node = await fill_blog(publisher, xmpp_server, 20)
    daemon = roostd_launcher.start()
    client = await client_for(daemon, xmpp_server)
    await client.get_items("bob", service, node)
    await wait_state(client, service, node, "completed")
    events: list[tuple[str, str, str]] = []

    def on_event(_p: str, _s: str, n: str, kind: str, items: list[dict[str, Any]]) -> None:
        if n == node:
            events.extend((kind, i["id"], i.get("parsed", "")) for i in items)

    await client.on_items_event(on_event)
    await publisher.publish("alice", service, node, "fresh", entry(777))
    # Wait for this very publication: ejabberd also sends the node's last item when bob
    # subscribes, and under load that notice can come after the sync has completed.
    for _ in range(100):
        if any(item_id == "fresh" for _kind, item_id, _parsed in events):
            break
        await asyncio.sleep(0.05)
    fresh = [(kind, parsed) for kind, item_id, parsed in events if item_id == "fresh"]
    assert [kind for kind, _parsed in fresh] == ["items"]
    # The event's item is the record GetItems gives, parsed data included (the same text).
    assert json.loads(fresh[0][1])["title"] == "Post 777"
    items, meta = await client.get_items("bob", service, node, max_items=1)
    assert meta["from_cache"] and items[0]["id"] == "fresh"
    assert items[0]["parsed"] == fresh[0][1]
    hits = await client.search(
        nodes=[node], parsed=[{"path": "title", "op": "eq", "value": "Post 777"}]
    )
    assert [h["id"] for h in hits] == ["fresh"]
    assert hits[0]["node"] == node and hits[0]["profile"] == "bob"
    analysers = await client.list_analysers()
    assert any(a["name"] for a in analysers)
    assert await client.purge_cache(nodes=[node]) == 21
    state = await client.get_node_state("bob", service, node)
    assert state["state"] == "none" and state["item_count"] == 0
    _items, meta = await client.get_items("bob", service, node)
    assert not meta["from_cache"]
    client.close()
