"""Independent XMPP peers build the world a test starts from: fresh accounts, rosters in
each subscription state, PEP items and node subscriptions, on both test servers."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.world import (
    XmppPeer,
    absent,
    befriend,
    follow,
    request_only,
    subscription_is,
    unique_names,
)
from tests.fixtures.xmpp import XmppServer, register_in_band

pytestmark = pytest.mark.xmpp

NODE = "urn:xmpp:roost:test:world"
OPEN = {"pubsub#access_model": "open"}
OPEN_NODE = {"pubsub#access_model": "open", "pubsub#max_items": "1000"}


def entry(n: int) -> str:
    return f"<entry xmlns='http://www.w3.org/2005/Atom'><title>Item {n}</title></entry>"


def test_unique_names() -> None:
    names = unique_names("reader", 50)
    assert len(set(names)) == 50
    assert all(name.startswith("reader-") and name == name.lower() for name in names)
    assert set(names).isdisjoint(unique_names("reader", 50))
    with pytest.raises(ValueError, match="prefix"):
        unique_names("Reader", 1)


async def test_register_many(xmpp_server: XmppServer) -> None:
    names = unique_names("reg", 21)
    await xmpp_server.register_many(names)
    assert all(xmpp_server.users[name] == f"{name}-secret" for name in names)
    # Every account logs in, all at once.
    async with asyncio.TaskGroup() as group:
        for name in names:
            group.create_task(_log_in(xmpp_server, name))
    with pytest.raises(ValueError, match="already known"):
        await xmpp_server.register_many(names[:1])
    # The server itself refuses an account that exists.
    with pytest.raises(AssertionError, match="registration refused"):
        await register_in_band(xmpp_server, names[0], "another-secret")


async def _log_in(server: XmppServer, name: str) -> None:
    async with XmppPeer(server, name) as peer:
        assert await peer.roster() == {}


async def test_control_tool_registration_still_works(xmpp_server: XmppServer) -> None:
    (name,) = unique_names("ctl", 1)
    await asyncio.to_thread(xmpp_server.register, name, "ctl-secret")
    xmpp_server.users[name] = "ctl-secret"
    async with XmppPeer(xmpp_server, name) as peer:
        assert peer.client.boundjid.bare == xmpp_server.jid(name)


async def test_befriend(xmpp_server: XmppServer) -> None:
    a, b = unique_names("friend", 2)
    await xmpp_server.register_many([a, b])
    await befriend(xmpp_server, a, b)
    # Seen afresh by new sessions: the state is the server's, not a client's memory.
    async with XmppPeer(xmpp_server, a) as pa, XmppPeer(xmpp_server, b) as pb:
        roster_a, roster_b = await pa.roster(), await pb.roster()
    assert set(roster_a) == {xmpp_server.jid(b)}
    assert set(roster_b) == {xmpp_server.jid(a)}
    for item in (roster_a[xmpp_server.jid(b)], roster_b[xmpp_server.jid(a)]):
        assert item["subscription"] == "both"
        assert item["ask"] is False


async def test_follow(xmpp_server: XmppServer) -> None:
    a, b = unique_names("follow", 2)
    await xmpp_server.register_many([a, b])
    await follow(xmpp_server, a, b)
    async with XmppPeer(xmpp_server, a) as pa, XmppPeer(xmpp_server, b) as pb:
        item_a = (await pa.roster())[xmpp_server.jid(b)]
        item_b = (await pb.roster())[xmpp_server.jid(a)]
        assert (item_a["subscription"], item_a["ask"]) == ("to", False)
        assert (item_b["subscription"], item_b["ask"]) == ("from", False)
        # b never asked back: a has no request waiting.
        assert pa.subscription_requests == []


async def test_request_only(xmpp_server: XmppServer) -> None:
    a, b = unique_names("ask", 2)
    await xmpp_server.register_many([a, b])
    await request_only(xmpp_server, a, b)
    async with XmppPeer(xmpp_server, a) as pa:
        item = (await pa.roster())[xmpp_server.jid(b)]
        assert (item["subscription"], item["ask"]) == ("none", True)
    # The request is still pending: b gets it again at its next initial presence, and
    # has no roster item for a (a pending request is not one).
    async with XmppPeer(xmpp_server, b) as pb:
        await pb.wait_subscription_request(xmpp_server.jid(a))
        assert await pb.roster() == {}


async def test_deny_and_cancel(xmpp_server: XmppServer) -> None:
    a, b, c = unique_names("deny", 3)
    await xmpp_server.register_many([a, b, c])
    await request_only(xmpp_server, a, b)
    await follow(xmpp_server, c, b)
    async with (
        XmppPeer(xmpp_server, a) as pa,
        XmppPeer(xmpp_server, b) as pb,
        XmppPeer(xmpp_server, c) as pc,
    ):
        await pb.wait_subscription_request(pa.jid)
        await pb.deny(pa.jid)
        await pa.wait_roster(pb.jid, subscription_is("none"))
        await pc.cancel(pb.jid)
        await pc.wait_roster(pb.jid, subscription_is("none"))
        await pb.wait_roster(pc.jid, subscription_is("none"))


async def test_contacts_names_and_groups(xmpp_server: XmppServer) -> None:
    a, b = unique_names("contact", 2)
    await xmpp_server.register_many([a, b])
    async with XmppPeer(xmpp_server, a) as pa:
        await pa.set_contact(xmpp_server.jid(b), name="Bee", groups=["work", "friends"])
        item = await pa.wait_roster(xmpp_server.jid(b), subscription_is("none"))
        assert item == {
            "subscription": "none",
            "ask": False,
            "name": "Bee",
            "groups": ["friends", "work"],
        }
        await pa.remove_contact(xmpp_server.jid(b))
        assert await pa.wait_roster(xmpp_server.jid(b), absent) is None
        with pytest.raises(AssertionError, match="still"):
            await pa.wait_roster(xmpp_server.jid(b), subscription_is("both"), timeout=0.5)


async def test_publish_pep_items(xmpp_server: XmppServer) -> None:
    owner, reader = unique_names("pep", 2)
    await xmpp_server.register_many([owner, reader])
    items = [(f"item-{n:03}", entry(n)) for n in range(60)]
    async with XmppPeer(xmpp_server, owner) as peer:
        await peer.create_node(NODE, OPEN_NODE)
        await peer.publish_many(NODE, items, OPEN)
        assert await peer.publish(NODE, "extra", entry(60), OPEN) == "extra"
        own = await peer.items(NODE)
    expected = {item_id for item_id, _ in items} | {"extra"}
    assert len(own) == len(expected)
    assert {item_id for item_id, _ in own} == expected
    assert "Item 7</title>" in dict(own)["item-007"]
    # Another account reads the open node the same.
    async with XmppPeer(xmpp_server, reader) as peer:
        seen = await peer.items(NODE, xmpp_server.jid(owner))
    assert {item_id for item_id, _ in seen} == expected


async def test_many_peers_create_their_nodes_at_once(xmpp_server: XmppServer) -> None:
    # Concurrent node creations deadlock inside ejabberd 23.01 and fail there; the peers
    # must still all end up with their nodes and items.
    owners = unique_names("busy", 10)
    await xmpp_server.register_many(owners)

    async def blog(owner: str, n: int) -> list[str]:
        async with XmppPeer(xmpp_server, owner) as peer:
            if n % 2:
                await peer.create_node(NODE, OPEN_NODE)
                await peer.publish_many(NODE, [(f"i{k}", entry(k)) for k in range(20)], OPEN)
            else:  # created by its first publication
                await peer.publish(NODE, "only", entry(0), OPEN)
            return sorted(item_id for item_id, _ in await peer.items(NODE))

    found = await asyncio.gather(*(blog(owner, n) for n, owner in enumerate(owners)))
    for n, ids in enumerate(found):
        assert ids == (sorted(f"i{k}" for k in range(20)) if n % 2 else ["only"])


async def test_publish_creates_pep_node_with_defaults(xmpp_server: XmppServer) -> None:
    (owner,) = unique_names("pepdefault", 1)
    await xmpp_server.register_many([owner])
    async with XmppPeer(xmpp_server, owner) as peer:
        await peer.publish_many(NODE, [("one", entry(1)), ("two", entry(2))], OPEN)
        # Both servers keep one item in a PEP node publishing created.
        assert [item_id for item_id, _ in await peer.items(NODE)] == ["two"]
        await peer.configure_node(NODE, {"pubsub#max_items": "10"})
        await peer.publish(NODE, "three", entry(3), OPEN)
        assert sorted(item_id for item_id, _ in await peer.items(NODE)) == ["three", "two"]


@pytest.mark.parametrize("where", ["pep", "component"])
async def test_owner_subscriptions(xmpp_server: XmppServer, where: str) -> None:
    owner, *readers = unique_names("sub", 3)
    await xmpp_server.register_many([owner, *readers])
    if where == "pep":
        service, node = xmpp_server.jid(owner), NODE
    else:
        service, node = xmpp_server.pubsub_service, unique_names("world", 1)[0]
        if xmpp_server.kind == "prosody":
            owner = "alice"  # only admins create nodes on Prosody's pubsub component
    async with XmppPeer(xmpp_server, owner) as peer:
        await peer.create_node(node, OPEN_NODE, service=service)
        await peer.publish(node, "first", entry(0), service=service)
        if where == "pep" and xmpp_server.kind == "ejabberd":
            # ejabberd's PEP has no manage-subscriptions: the listing is refused.
            with pytest.raises(AssertionError, match="feature-not-implemented"):
                await peer.node_subscriptions(service, node)
            return
        assert await peer.node_subscriptions(service, node) == []
    for reader in readers:
        async with XmppPeer(xmpp_server, reader) as peer:
            got = await peer.subscribe(service, node)
            assert got["jid"] == xmpp_server.jid(reader)
            assert got["subscription"] == "subscribed"
    async with XmppPeer(xmpp_server, owner) as peer:
        subscriptions = await peer.node_subscriptions(service, node)
    assert sorted(s["jid"].split("/")[0] for s in subscriptions) == sorted(
        xmpp_server.jid(r) for r in readers
    )
    assert all(s["subscription"] == "subscribed" for s in subscriptions)
