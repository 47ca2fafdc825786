"""The Pubsub interface through the bus, on Prosody and on ejabberd, roostd as a process."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from roost.bridge.client import (
    InvalidArgumentError,
    NotConnectedError,
    RoostClient,
    XmppError,
)
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus]

NS = "urn:example:roost"


@pytest.fixture
async def client(
    roostd_launcher: RoostdLauncher, xmpp_server: XmppServer
) -> AsyncIterator[RoostClient]:
    """A daemon with alice and bob connected, and a client of it."""
    daemon = roostd_launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    for user in ("alice", "bob"):
        jid, password, options = xmpp_server.credentials(user)
        await client.create_profile(user, jid, password, options)
        await client.connect_profile(user)
    yield client
    client.close()


async def test_pubsub_through_the_bus(client: RoostClient, xmpp_server: XmppServer) -> None:
    svc = xmpp_server.pubsub_service
    node = await client.create_node(
        "alice", svc, f"bus-{uuid.uuid4().hex[:8]}", {"pubsub#max_items": "1000"}
    )
    await client.subscribe_node("bob", svc, node)
    events: list[tuple[str, list[str]]] = []
    await client.on_items_event(
        lambda profile, _s, n, kind, items: (
            events.append((kind, [i["id"] for i in items]))
            if profile == "bob" and n == node
            else None
        )
    )
    for n in range(50):
        item_id = await client.publish(
            "alice", svc, node, f"i{n:02d}", f"<e xmlns='{NS}'><n>{n}</n></e>"
        )
        assert item_id == f"i{n:02d}"
    everything = [f"i{n:02d}" for n in range(50)]

    async def ids(**options: Any) -> tuple[list[str], dict[str, Any]]:
        items, meta = await client.get_items("bob", svc, node, **options)
        return [i["id"] for i in items], meta

    got, meta = await ids()
    assert got == everything and meta["rsm_count"] == 50 and meta["complete"]
    got, meta = await ids(max_items=5)
    assert got == everything[-5:] and not meta["complete"]
    got, _meta = await ids(item_ids=["i30", "i02"])
    assert got == ["i02", "i30"]
    # RSM forward and backward: the server's own on ejabberd, Roost's on Prosody.
    seen, after = [], ""
    while True:
        got, meta = await ids(max_items=15, after=after)
        seen += got
        if meta["complete"]:
            break
        after = meta["rsm_last"]
    assert seen == everything
    seen, before = [], ""
    while True:
        got, meta = await ids(max_items=15, before=before)
        seen = got + seen
        if meta["complete"]:
            break
        before = meta["rsm_first"]
    assert seen == everything
    # Retract, then the events bob received.
    await client.retract("alice", svc, node, ["i07"])
    got, _meta = await ids()
    assert "i07" not in got and len(got) == 49
    for _ in range(100):
        if ("retract", ["i07"]) in events:
            break
        await asyncio.sleep(0.05)
    published = [ids_ for kind, ids_ in events if kind == "items"]
    assert [i for batch in published for i in batch][-50:] == everything
    assert ("retract", ["i07"]) in events
    # Node configuration read and changed.
    config = await client.get_node_config("alice", svc, node)
    assert config["pubsub#max_items"] == "1000"
    await client.set_node_config("alice", svc, node, {"pubsub#title": "Bus test"})
    assert (await client.get_node_config("alice", svc, node))["pubsub#title"] == "Bus test"
    # Purge and delete reach bob as events.
    await client.purge_node("alice", svc, node)
    await client.delete_node("alice", svc, node)
    for _ in range(100):
        kinds = [kind for kind, _ids in events]
        if "purge" in kinds and "delete" in kinds:
            break
        await asyncio.sleep(0.05)
    assert "purge" in kinds and "delete" in kinds


async def test_pep_microblog_and_errors(client: RoostClient, xmpp_server: XmppServer) -> None:
    entry = (
        "<entry xmlns='http://www.w3.org/2005/Atom'><title>Hello</title>"
        "<id>urn:uuid:1</id><published>2026-11-25T10:00:00Z</published></entry>"
    )
    # The same publish options as every test that uses alice's microblog: the node is
    # shared by the test session, and a server refuses options that disagree with it.
    item_id = await client.publish(
        "alice", "", "urn:xmpp:microblog:0", "", entry, {"pubsub#access_model": "open"}
    )
    assert item_id
    items, _meta = await client.get_items("alice", "", "urn:xmpp:microblog:0", max_items=1)
    assert items[-1]["id"] == item_id and "Hello" in items[-1]["xml"]
    svc = xmpp_server.pubsub_service
    with pytest.raises(XmppError) as missing:
        await client.get_items("bob", svc, f"nothing-{uuid.uuid4().hex[:6]}")
    assert missing.value.name == "org.roost.Backend1.Error.Xmpp.ItemNotFound"
    node = await client.create_node("alice", svc, f"bus-{uuid.uuid4().hex[:8]}")
    with pytest.raises(XmppError) as forbidden:
        await client.delete_node("bob", svc, node)
    assert forbidden.value.name == "org.roost.Backend1.Error.Xmpp.Forbidden"
    with pytest.raises(InvalidArgumentError, match="not well-formed"):
        await client.publish("alice", svc, node, "x", "<unclosed>")
    with pytest.raises(InvalidArgumentError, match="DTD"):
        await client.publish("alice", svc, node, "x", '<!DOCTYPE a [<!ENTITY e "boom">]><a>&e;</a>')
    await client.disconnect_profile("bob")
    with pytest.raises(NotConnectedError):
        await client.get_items("bob", svc, node)
    await client.delete_node("alice", svc, node)
