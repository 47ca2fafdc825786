"""Every reply and signal stays under its byte bound, over a real bus, with paging to go on.

A comments node (XEP-0277: the built-in analyser parses each entry, so every item carries
``parsed`` about as large as its ``xml``) is filled by another account on Prosody or
ejabberd with more than a reply may carry, and synchronised by roostd. GetItems, asked
every way a page can pass the bound (no options, ``max_items`` 10,000, a first and a last
page of 10,000), answers under :data:`MAX_REPLY_BYTES` on the cache path and on the server
path alike, ``complete`` false, and paging on from its token reaches the end with every
item seen once (the split of a large notification into several signals is shown in
test_large_items_over_dbus.py). A search over the cache is cut likewise, its last hit naming
the ``offset`` to go on with. A namespace of values and a category of parameters are
refused past what fits a reply, and what they hold comes back under the bound.

Sizes are measured on the marshalled reply (its body, as dbus-daemon carries it).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant

from roost.bridge.client import InvalidArgumentError, RoostClient
from roost.bridge.constants import CACHE_INTERFACE, OBJECT_PATH, PUBSUB_INTERFACE, STORAGE_INTERFACE
from roost.bridge.variants import plain
from roost.service.events import EventHub
from roost.service.pubsub.operations import PubsubService
from roost.service.pubsub.rsm import MAX_REPLY_BYTES
from roost.service.settings import MAX_NAMESPACE_BYTES, MAX_VALUE_BYTES
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.dbus import RoostdLauncher
from tests.fixtures.node_fill import Entry, fill_node
from tests.fixtures.sessions import make_lookup
from tests.fixtures.xmpp import XmppServer

pytestmark = [pytest.mark.xmpp, pytest.mark.dbus, pytest.mark.slow]

ATOM = "http://www.w3.org/2005/Atom"
MICROBLOG = "urn:xmpp:microblog:0"
# Items of about 200 KB on the bus (100 KB of XML, as much parsed): 60 of them pass the
# reply bound half again. Written into the server's store (publishing them took Prosody
# half a minute).
ITEMS = 60
CONTENT = 100_000
# What a reply carries besides its items: the metadata and the message's header.
SLACK = 4096
WAIT = 120.0


def entry(n: int) -> Entry:
    """Item ``i<n>``: an Atom entry of about :data:`CONTENT` characters of text."""
    text = f"post {n} " + "lorem ipsum dolor " * (CONTENT // 18)
    children = [("id", f"urn:uuid:bound-{n}"), ("title", f"Post {n}"), ("content", text)]
    return f"i{n:03d}", ATOM, [*children, ("published", "2026-01-01T00:00:00Z")]


@pytest.fixture
async def publisher(xmpp_server: XmppServer) -> AsyncIterator[PubsubService]:
    """A service-level client for alice, who writes the node."""
    sessions = SessionManager(make_lookup(xmpp_server), EventHub())
    service = PubsubService(sessions, EventHub())
    await sessions.connect("alice")
    yield service
    await sessions.close()


async def raw_call(
    client: RoostClient, interface: str, member: str, signature: str, body: list[Any]
) -> tuple[list[Any], int]:
    """A call's reply body and the size of the reply's marshalled body in bytes."""
    reply = await client.bus.call(
        Message(
            destination=client.destination,
            path=OBJECT_PATH,
            interface=interface,
            member=member,
            signature=signature,
            body=body,
        )
    )
    assert reply is not None
    assert reply.message_type == MessageType.METHOD_RETURN, (reply.error_name, reply.body)
    # The message as the bus carries it, less its header (a few hundred bytes).
    return list(reply.body), len(reply._marshall(False))


async def get_items(
    client: RoostClient, service: str, node: str, **options: Any
) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
    wrapped = {
        key: Variant("u" if key == "max_items" else "b" if key == "use_cache" else "s", value)
        for key, value in options.items()
    }
    body, size = await raw_call(
        client, PUBSUB_INTERFACE, "GetItems", "sssa{sv}", ["bob", service, node, wrapped]
    )
    items, meta = plain(body[0]), plain(body[1])
    return items, meta, size


async def wait_completed(client: RoostClient, service: str, node: str) -> None:
    done = asyncio.Event()

    def changed(_profile: str, svc: str, name: str, state: str) -> None:
        if svc == service and name == node and state == "completed":
            done.set()

    stop = await client.on_sync_state_changed(changed)
    try:
        if (await client.get_node_state("bob", service, node))["state"] != "completed":
            await asyncio.wait_for(done.wait(), WAIT)
    finally:
        stop()


async def walk(
    client: RoostClient, service: str, node: str, use_cache: bool, **first: Any
) -> tuple[list[str], list[int]]:
    """Page the node from ``first`` to its end: the ids in node order, each page's size."""
    backward = "before" in first or ("max_items" in first and "after" not in first)
    items, meta, size = await get_items(client, service, node, use_cache=use_cache, **first)
    assert meta["from_cache"] is use_cache
    ids, sizes = [i["id"] for i in items], [size]
    assert all("parsed" in i for i in items), "the node's items are parsed"
    while not meta["complete"]:
        assert len(sizes) <= ITEMS, f"no end after {len(sizes)} pages"
        page = {"max_items": first.get("max_items", 10_000)}
        if backward:
            page["before"] = meta["rsm_first"]
        else:
            page["after"] = meta["rsm_last"]
        items, meta, size = await get_items(client, service, node, use_cache=use_cache, **page)
        got = [i["id"] for i in items]
        assert got, f"an empty page that is not complete: {meta}"
        ids = got + ids if backward else ids + got
        sizes.append(size)
    return ids, sizes


async def test_get_items_replies_stay_under_the_bound_and_page_on(
    roostd_launcher: RoostdLauncher, xmpp_server: XmppServer, publisher: PubsubService
) -> None:
    service = xmpp_server.pubsub_service
    node = f"{MICROBLOG}:comments/{uuid.uuid4().hex[:8]}"
    await publisher.create_node("alice", service, node, {"pubsub#max_items": "max"})
    order = [f"i{n:03d}" for n in range(ITEMS)]
    await fill_node(xmpp_server, node, xmpp_server.jid("alice"), map(entry, range(ITEMS)))
    daemon = roostd_launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    try:
        jid, password, options = xmpp_server.credentials("bob")
        await client.create_profile("bob", jid, password, options)
        await client.connect_profile("bob")
        # The first read meets the node: analysed, then synchronised.
        await get_items(client, service, node, max_items=1, use_cache=False)
        await client.sync_node("bob", service, node)
        await wait_completed(client, service, node)

        for use_cache in (True, False):
            shapes: list[dict[str, Any]] = [
                {},
                {"max_items": 10_000},
                {"after": "", "max_items": 10_000},
                {"before": "", "max_items": 10_000},
            ]
            for first in shapes:
                what = f"{first} from {'the cache' if use_cache else 'the server'}"
                ids, sizes = await walk(client, service, node, use_cache, **first)
                assert ids == order, f"{what}: the pages do not make up the node"
                assert len(sizes) >= 2, f"{what}: {sizes} was not cut"
                assert max(sizes) <= MAX_REPLY_BYTES + SLACK, f"{what}: {sizes}"
        # The two paths cut at the same item.
        cached = await get_items(client, service, node, use_cache=True)
        server = await get_items(client, service, node, use_cache=False)
        assert [i["id"] for i in cached[0]] == [i["id"] for i in server[0]]
        assert cached[1]["complete"] is server[1]["complete"] is False

        # A search over those items is cut at the bound too; next_offset goes on.
        seen: list[str] = []
        offset = 0
        while True:
            query = {
                "nodes": Variant("as", [node]),
                "limit": Variant("u", 1000),
                "offset": Variant("u", offset),
            }
            body, size = await raw_call(client, CACHE_INTERFACE, "Search", "a{sv}", [query])
            hits = plain(body[0])
            assert size <= MAX_REPLY_BYTES + SLACK, size
            seen += [hit["id"] for hit in hits]
            if "next_offset" not in hits[-1]:
                break
            assert all("next_offset" not in hit for hit in hits[:-1])
            offset = hits[-1]["next_offset"]
            assert offset == len(seen)
        assert sorted(seen) == order, "the search's pages do not make up the node"
        assert offset > 0, "the search was not cut"
    finally:
        client.close()
    assert daemon.terminate() == 0


async def test_values_and_params_are_refused_past_what_fits_a_reply(
    roostd_launcher: RoostdLauncher,
) -> None:
    daemon = roostd_launcher.start()
    client = await RoostClient.connect(daemon.bus_address)
    try:
        # The densest values D-Bus has: arrays of 64-bit zeros, 8 bytes for each "0, "
        # of the stored JSON, each as large as a value may be.
        zeros = [0] * (MAX_VALUE_BYTES // 3)
        stored = 0
        while True:
            try:
                await client.set_value("@global@", "bounds", f"k{stored}", Variant("ax", zeros))
            except InvalidArgumentError as err:
                assert "MiB of values" in err.message and "delete some" in err.message
                break
            stored += 1
            assert stored <= MAX_NAMESPACE_BYTES // len(str(zeros)) + 1, "never refused"
        assert stored == MAX_NAMESPACE_BYTES // len(str(zeros))
        body, size = await raw_call(
            client, STORAGE_INTERFACE, "GetValues", "ssas", ["@global@", "bounds", []]
        )
        assert len(body[0]) == stored
        assert size <= MAX_REPLY_BYTES + SLACK, size

        value = "v" * 65536
        count = 0
        while True:
            try:
                await client.set_param("@global@", "bounds", f"p{count}", value)
            except InvalidArgumentError as err:
                assert "MiB of parameters" in err.message
                break
            count += 1
            assert count <= 100, "never refused"
        body, size = await raw_call(
            client, STORAGE_INTERFACE, "ListParams", "ss", ["@global@", "bounds"]
        )
        assert len(body[0]) == count == 63
        assert size <= MAX_REPLY_BYTES + SLACK, size
    finally:
        client.close()
    assert daemon.terminate() == 0
