"""An item nested ~1,000 elements deep, published by another client: read, notified and
cached like any other, stored raw."""

from __future__ import annotations

import asyncio
import logging
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatcherId

from roost.service.cache.analysers import Analyser, AnalyserRegistry
from roost.service.cache.microblog import parse_microblog_entry
from roost.service.errors import InvalidArgument
from roost.service.events import EventHub, ItemsEvent, SyncStateChanged
from roost.service.pubsub.model import ItemsRequest
from roost.service.pubsub.operations import PubsubService
from roost.service.pubsub_stack import build_pubsub_stack
from roost.service.xmpp.sessions import SessionManager
from roost.storage import Database
from tests.fixtures.sessions import Recorder
from tests.fixtures.world import XmppPeer
from tests.fixtures.xmpp import XmppServer

# ejabberd only: it stores such an item, while Prosody's storage refuses it (its
# serialiser has a table depth limit) and leaves the publish unanswered.
pytestmark = [
    pytest.mark.xmpp,
    pytest.mark.parametrize("xmpp_server", ["ejabberd"], indirect=True),
]

PUBSUB = "http://jabber.org/protocol/pubsub"
ATOM = "http://www.w3.org/2005/Atom"
XHTML = "http://www.w3.org/1999/xhtml"
DEPTH = 990
FRESH = ItemsRequest.from_options({"use_cache": False})
# Created by alice (only an admin may create nodes on the Prosody component); anyone
# publishes.
OPEN_NODE = {"pubsub#max_items": "10", "pubsub#publish_model": "open"}


def deep_entry(depth: int, title: str) -> str:
    """An Atom entry whose XHTML content nests ``depth`` elements deep in all, as Roost
    writes it in an item."""
    divs = depth - 2  # below <entry> and <content>
    return (
        f'<entry xmlns="{ATOM}"><title>{title}</title><content type="xhtml">'
        f'<div xmlns="{XHTML}">'
        + "<div>" * (divs - 1)
        + "bottom"
        + "</div>" * divs
        + "</content></entry>"
    )


async def publish_raw(peer: XmppPeer, service: str, node: str, item_id: str, payload: str) -> None:
    """Publish as written: slixmpp's serialiser recurses and would fail on such a payload."""
    iq_id = f"deep-{uuid.uuid4().hex}"
    answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    peer.client.register_handler(
        Callback(iq_id, MatcherId(iq_id), lambda iq: answer.done() or answer.set_result(iq))
    )
    peer.client.send_raw(
        f"<iq type='set' id='{iq_id}' to='{service}'><pubsub xmlns='{PUBSUB}'>"
        f"<publish node='{node}'><item id='{item_id}'>{payload}</item></publish></pubsub></iq>"
    )
    iq = await asyncio.wait_for(answer, 10)
    assert iq["type"] == "result", iq["error"]["condition"]


async def wait_for(check: Any, what: str) -> Any:
    for _ in range(200):
        found = check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


async def test_deep_item_read_and_notified(
    sessions: SessionManager,
    hub: EventHub,
    recorder: Recorder,
    xmpp_server: XmppServer,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pubsub = PubsubService(sessions, hub)
    await sessions.connect("alice")
    service, node = xmpp_server.pubsub_service, f"deep-{uuid.uuid4().hex[:8]}"
    payload = deep_entry(DEPTH, "Deep")
    # slixmpp at debug: its stream log must cope with the deep stanzas too.
    caplog.set_level(logging.DEBUG, logger="slixmpp")
    await pubsub.create_node("alice", service, node, OPEN_NODE)
    async with XmppPeer(xmpp_server, "bob") as bob:
        await pubsub.subscribe("alice", service, node)
        await publish_raw(bob, service, node, "deep", payload)
        reply = await pubsub.get_items("alice", service, node, FRESH)
        assert [item.id for item in reply.items] == ["deep"]
        assert payload in reply.items[0].xml
        assert reply.items[0].xml.startswith(f'<item xmlns="{PUBSUB}"')
        events = await wait_for(
            lambda: [e for e in recorder.of(ItemsEvent) if e.node == node], "the event"
        )
        assert events[0].kind == "items"
        assert [i["xml"] for i in events[0].items] == [reply.items[0].xml]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Logging error" not in capsys.readouterr().err
    # Roost itself publishes no payload past the depth limit: its own cache would not
    # parse it, and slixmpp's serialiser would fail on it in the send queue.
    with pytest.raises(InvalidArgument, match="more than 256 levels deep"):
        await pubsub.publish("alice", service, node, "too-deep", deep_entry(300, "Too deep"))


async def test_deep_item_in_a_cached_node(
    tmp_path: Path,
    sessions: SessionManager,
    hub: EventHub,
    recorder: Recorder,
    xmpp_server: XmppServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = await Database.open(f"sqlite:///{tmp_path / 'roost.sqlite'}")
    jid, password, options = xmpp_server.credentials("alice")
    await db.profiles.create_profile("alice", jid, password, dict(options))
    registry = AnalyserRegistry()
    registry.register_analyser(
        Analyser(
            name="test-blog",
            node_prefix="blog-",
            namespace=ATOM,
            type="blog",
            to_sync=True,
            parser=parse_microblog_entry,
        )
    )
    stack = build_pubsub_stack(db, sessions, hub, registry)
    pubsub, cache = stack.service, stack.cache
    await stack.start()
    service, node = xmpp_server.pubsub_service, f"blog-{uuid.uuid4().hex[:8]}"
    try:
        await sessions.connect("alice")
        await pubsub.create_node("alice", service, node, OPEN_NODE)
        async with XmppPeer(xmpp_server, "bob") as bob:
            plain = f"<entry xmlns='{ATOM}'><title>Plain</title></entry>"
            await bob.publish(node, "plain", plain, service=service)
            await publish_raw(bob, service, node, "deep-1", deep_entry(DEPTH, "Deep 1"))
            # The first read analyses the node and synchronises it: the deep item too.
            await pubsub.get_items("alice", service, node, ItemsRequest())
            await wait_for(
                lambda: any(
                    e.node == node and e.state == "completed" for e in recorder.of(SyncStateChanged)
                ),
                "the sync completed",
            )
            # Then one by event.
            await publish_raw(bob, service, node, "deep-2", deep_entry(DEPTH, "Deep 2"))
            fresh = await pubsub.get_items("alice", service, node, FRESH)
            assert [item.id for item in fresh.items] == ["plain", "deep-1", "deep-2"]

            async def cached() -> Any:
                reply = await pubsub.get_items("alice", service, node, ItemsRequest())
                ids = [item.id for item in reply.items]
                return reply if reply.from_cache and "deep-2" in ids else None

            for _ in range(200):
                reply = await cached()
                if reply:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the deep item never reached the cache")
        assert [canonical(i.xml) for i in reply.items] == [canonical(i.xml) for i in fresh.items]
        state = await cache.get_node_state("alice", service, node)
        assert state["state"] == "completed" and state["item_count"] == 3
        record = await db.nodes.get_node("alice", service, node)
        assert record is not None
        for item_id in ("deep-1", "deep-2"):
            stored = await db.items.get_item(record.id, item_id)
            assert stored is not None and stored.parsed is None
        plain_item = await db.items.get_item(record.id, "plain")
        assert plain_item is not None and plain_item.parsed is not None
        raw = [r.getMessage() for r in caplog.records if "stored raw" in r.getMessage()]
        assert any("'deep-1'" in m for m in raw) and any("'deep-2'" in m for m in raw)
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    finally:
        await stack.close()
        await sessions.close()
        await db.close()


def canonical(xml: str) -> str:
    # Python's canonicaliser: no depth limit (libxml2's stops at 256 levels).
    return ET.canonicalize(xml)
