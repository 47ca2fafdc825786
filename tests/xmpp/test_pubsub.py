"""Pubsub operations through the service layer, against Prosody and ejabberd."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from roost.service.errors import InvalidArgument, NotConnected, XmppError
from roost.service.events import EventHub, ItemsEvent
from roost.service.pubsub.model import ItemsRequest
from roost.service.pubsub.operations import PubsubService
from roost.service.pubsub.rsm import decode_token, encode_token
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.sessions import Recorder
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

NS = "urn:example:roost"


def payload(n: int) -> str:
    return f"<entry xmlns='{NS}'><n>{n}</n></entry>"


@pytest.fixture
async def pubsub(sessions: SessionManager, hub: EventHub) -> AsyncIterator[PubsubService]:
    """A PubsubService with alice and bob connected."""
    service = PubsubService(sessions, hub)
    await sessions.connect("alice")
    await sessions.connect("bob")
    yield service


@pytest.fixture
async def node(pubsub: PubsubService, xmpp_server: XmppServer) -> AsyncIterator[str]:
    """A fresh node on the pubsub component with 50 items i00..i49, owned by alice."""
    name = f"node-{uuid.uuid4().hex[:8]}"
    created = await pubsub.create_node(
        "alice", xmpp_server.pubsub_service, name, {"pubsub#max_items": "1000"}
    )
    assert created == name
    for n in range(50):
        assert (
            await pubsub.publish("alice", xmpp_server.pubsub_service, name, f"i{n:02d}", payload(n))
            == f"i{n:02d}"
        )
    yield name
    with contextlib.suppress(XmppError, NotConnected):
        await pubsub.delete_node("alice", xmpp_server.pubsub_service, name)


async def ids(pubsub: PubsubService, server: XmppServer, node: str, **options: Any) -> Any:
    reply = await pubsub.get_items(
        "alice", server.pubsub_service, node, ItemsRequest.from_options(options)
    )
    return [item.id for item in reply.items], reply


ALL = [f"i{n:02d}" for n in range(50)]


async def test_items_in_server_order(
    pubsub: PubsubService, xmpp_server: XmppServer, node: str
) -> None:
    got, reply = await ids(pubsub, xmpp_server, node)
    assert got == ALL
    assert reply.complete and reply.rsm_count == 50
    assert "<n>7</n>" in reply.items[7].xml
    assert reply.items[7].xml.startswith('<item xmlns="http://jabber.org/protocol/pubsub"')


async def test_max_items_and_item_ids(
    pubsub: PubsubService, xmpp_server: XmppServer, node: str
) -> None:
    got, reply = await ids(pubsub, xmpp_server, node, max_items=5)
    assert got == ALL[-5:]
    assert not reply.complete and reply.rsm_count == 50
    got, reply = await ids(pubsub, xmpp_server, node, item_ids=["i30", "i02", "i17"])
    assert got == ["i02", "i17", "i30"]


async def test_rsm_paging_forward_and_backward(
    pubsub: PubsubService, xmpp_server: XmppServer, node: str
) -> None:
    assert await pubsub.server.server_supports_rsm("alice", xmpp_server.pubsub_service, node) == (
        xmpp_server.has_rsm
    )
    seen: list[str] = []
    after = ""
    while True:
        got, reply = await ids(pubsub, xmpp_server, node, max_items=15, after=after)
        seen += got
        assert reply.rsm_count == 50
        if reply.complete:
            break
        after = reply.rsm_last
    assert seen == ALL
    got, reply = await ids(pubsub, xmpp_server, node, max_items=15, before="")
    assert got == ALL[-15:] and not reply.complete
    got, reply = await ids(pubsub, xmpp_server, node, max_items=15, before=reply.rsm_first)
    assert got == ALL[20:35]
    got, reply = await ids(pubsub, xmpp_server, node, max_items=30, before=reply.rsm_first)
    assert got == ALL[:20] and reply.complete
    # A token with no server token (as the cache gives out) works on the server path.
    got, reply = await ids(pubsub, xmpp_server, node, max_items=3, after=encode_token("i10"))
    assert got == ["i11", "i12", "i13"] and not reply.complete
    assert decode_token(reply.rsm_last)[0] == "i13"


async def test_retract_and_events(
    pubsub: PubsubService, xmpp_server: XmppServer, node: str, recorder: Recorder
) -> None:
    service = xmpp_server.pubsub_service
    subid = await pubsub.subscribe("bob", service, node)
    subs = await pubsub.get_subscriptions("bob", service, node)
    assert subs and subs[0]["subscription"] == "subscribed"
    assert subs[0].get("subid", "") == subid

    async def wait_kind(kind: str, item_id: str | None = None) -> ItemsEvent:
        for _ in range(200):
            found = [
                e
                for e in recorder.of(ItemsEvent)
                if e.kind == kind
                and e.node == node
                and e.profile == "bob"
                and (item_id is None or [i["id"] for i in e.items] == [item_id])
            ]
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {kind} event")

    await pubsub.publish("alice", service, node, "fresh", payload(99))
    # ejabberd also sends the last item on subscription: look for this one.
    event = await wait_kind("items", "fresh")
    assert event.service == service
    assert [i["id"] for i in event.items] == ["fresh"]
    query = await pubsub.get_items("alice", service, node, ItemsRequest(item_ids=("fresh",)))
    assert event.items[0]["xml"] == query.items[0].xml

    await pubsub.retract("alice", service, node, ["i03"])
    assert (await wait_kind("retract")).items == [{"id": "i03"}]
    got, _ = await ids(pubsub, xmpp_server, node)
    assert "i03" not in got and len(got) == 50

    await pubsub.purge_node("alice", service, node)
    await wait_kind("purge")
    assert (await ids(pubsub, xmpp_server, node))[0] == []
    await pubsub.delete_node("alice", service, node)
    await wait_kind("delete")


async def test_node_config(pubsub: PubsubService, xmpp_server: XmppServer, node: str) -> None:
    service = xmpp_server.pubsub_service
    config = await pubsub.get_node_config("alice", service, node)
    assert config["pubsub#max_items"] == "1000"
    assert "pubsub#access_model" in config
    await pubsub.set_node_config("alice", service, node, {"pubsub#max_items": "2000"})
    assert (await pubsub.get_node_config("alice", service, node))["pubsub#max_items"] == "2000"


async def test_pep_microblog(pubsub: PubsubService, xmpp_server: XmppServer) -> None:
    entry = (
        "<entry xmlns='http://www.w3.org/2005/Atom'><title>Hello</title>"
        "<id>urn:uuid:1</id><published>2026-01-01T00:00:00Z</published></entry>"
    )
    mb = "urn:xmpp:microblog:0"
    item_id = await pubsub.publish(
        "alice", "", mb, "post-1", entry, {"pubsub#access_model": "open"}
    )
    assert item_id == "post-1"
    reply = await pubsub.get_items("alice", "", mb, ItemsRequest(item_ids=("post-1",)))
    assert [i.id for i in reply.items] == ["post-1"]
    assert "<title>Hello</title>" in reply.items[0].xml
    other = await pubsub.get_items("bob", xmpp_server.jid("alice"), mb, ItemsRequest())
    assert "post-1" in [i.id for i in other.items]


async def test_failures(
    pubsub: PubsubService, xmpp_server: XmppServer, node: str, sessions: SessionManager
) -> None:
    service = xmpp_server.pubsub_service
    with pytest.raises(XmppError) as caught:
        await pubsub.get_items("alice", service, "no-such-node", ItemsRequest())
    assert caught.value.name == "Xmpp.ItemNotFound"
    with pytest.raises(XmppError) as caught:
        await pubsub.delete_node("bob", service, node)
    assert caught.value.name == "Xmpp.Forbidden"
    with pytest.raises(InvalidArgument, match="not well-formed"):
        await pubsub.publish("alice", service, node, "x", "<entry><unclosed></entry>")
    with pytest.raises(InvalidArgument, match="DTD or entity"):
        await pubsub.publish(
            "alice", service, node, "x", '<!DOCTYPE e [<!ENTITY a "b">]><e>&a;</e>'
        )
    with pytest.raises(InvalidArgument, match="limit"):
        await pubsub.publish("alice", service, node, "x", f"<e>{'a' * 300_000}</e>")
    with pytest.raises(NotConnected):
        await pubsub.get_items("carol", service, node, ItemsRequest())
    with pytest.raises(XmppError) as caught:
        await ids(pubsub, xmpp_server, node, max_items=2, after=encode_token("gone"))
    # A token without a server token is checked against the node on every server.
    assert caught.value.name == "Xmpp.ItemNotFound"


def test_request_validation() -> None:
    with pytest.raises(InvalidArgument, match="max_items"):
        ItemsRequest.from_options({"max_items": 0})
    with pytest.raises(InvalidArgument, match="not both"):
        ItemsRequest.from_options({"before": "", "after": ""})
    with pytest.raises(InvalidArgument, match="unknown"):
        ItemsRequest.from_options({"limit": 3})
    with pytest.raises(InvalidArgument, match="RSM token"):
        decode_token("garbage")


async def test_sync_helpers(pubsub: PubsubService, xmpp_server: XmppServer, node: str) -> None:
    service = xmpp_server.pubsub_service
    pages = [
        [i.id for i in page]
        async for page in pubsub.server.fetch_all_items("alice", service, node, page_size=20)
    ]
    assert [i for page in pages for i in page] == ALL
    # Paged by RSM where the server has it (pages after the first hold half the node),
    # one whole answer where it does not.
    assert [len(p) for p in pages] == ([20, 25, 5] if xmpp_server.has_rsm else [50])
    assert sorted(await pubsub.server.list_item_ids("alice", service, node)) == ALL
