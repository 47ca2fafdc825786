"""A whole node from a server without RSM, read as its one answer arrives.

Prosody 0.12 answers a whole node in one stanza. Roost takes the items out of that
stanza as they are parsed and hands them on in pages (``ItemsQuery.fetch_all``), and
stops reading the connection while the reader is behind, so that what it holds of the
answer is bounded, not the node's size. The node is written into Prosody's store before
it is read (tests/fixtures/prosody_store.py), as a node filled by other clients would be.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import pytest

from roost.service.events import EventHub
from roost.service.pubsub import protocol as p
from roost.service.pubsub import query as query_module
from roost.service.pubsub.model import ItemsRequest
from roost.service.pubsub.operations import PubsubService
from roost.service.pubsub.query import STREAMED_PAGE_ITEMS, ItemsQuery
from roost.service.xmpp.client import RoostClient
from roost.service.xmpp.item_stream import (
    DISCO_ITEMS_PATH,
    HIGH_WATER,
    ItemStream,
)
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.item_streams import held_at_most, plain_whole, until, watch_streams
from tests.fixtures.prosody_store import write_prosody_node
from tests.fixtures.sessions import connected
from tests.fixtures.xmpp import ProsodyServer

ATOM = "http://www.w3.org/2005/Atom"
ITEMS = 9000


def entries(count: int) -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [
        (f"i{n:05d}", ATOM, [("title", f"Entry {n}"), ("content", "words " * 60)])
        for n in range(count)
    ]


@pytest.fixture
async def sessions(prosody_server: ProsodyServer) -> AsyncIterator[SessionManager]:
    async with connected(prosody_server, "alice", "bob") as manager:
        yield manager


@pytest.fixture
async def node(prosody_server: ProsodyServer, sessions: SessionManager) -> str:
    """A node of :data:`ITEMS` items on the pubsub component, written by alice."""
    name = f"large{id(sessions)}"
    pubsub = PubsubService(sessions, EventHub())
    service = prosody_server.pubsub_service
    await pubsub.create_node("alice", service, name, {"pubsub#max_items": "max"})
    write_prosody_node(prosody_server, name, prosody_server.jid("alice"), entries(ITEMS))
    return name


async def learnt(
    server: ProsodyServer, sessions: SessionManager, node: str
) -> tuple[RoostClient, str, ItemsQuery]:
    """bob's client, the pubsub service, and a query that knows the service has no RSM
    (its first read learns it)."""
    client = sessions.client("bob")
    query = ItemsQuery()
    await query.get_items(client, server.pubsub_service, node, ItemsRequest(max_items=1))
    assert query.known_rsm(server.pubsub_service) is False
    return client, server.pubsub_service, query


async def test_whole_node_read_in_bounded_pages(
    prosody_server: ProsodyServer, sessions: SessionManager, node: str
) -> None:
    client, service, query = await learnt(prosody_server, sessions, node)
    expected = await plain_whole(client, service, node)
    assert len(expected) == ITEMS

    streams = watch_streams(client)
    got: list[tuple[str, str]] = []
    pages = 0
    async for page in query.fetch_all(client, service, node):
        if pages == 0:
            # The reader stays behind: the connection must stop reading, not fill memory.
            stream = streams[0]
            await until(lambda: client.transport is not None and not client.transport.is_reading())
            assert stream.held <= held_at_most(min(len(xml) for _, xml in expected))
            assert stream.held < ITEMS
        pages += 1
        assert len(page) <= STREAMED_PAGE_ITEMS
        got += [(i.id, i.xml) for i in page]
    assert got == expected
    assert pages >= ITEMS // STREAMED_PAGE_ITEMS
    assert query.walked_total(service, node) == ITEMS
    assert client.transport is not None and client.transport.is_reading()


async def test_a_first_read_streams_the_node_too(
    prosody_server: ProsodyServer, sessions: SessionManager, node: str
) -> None:
    """A query that has not met the service yet learns it has no RSM from a probe of one
    item, not from a read by RSM that Prosody answers with the whole node in one stanza
    built whole: the first walk of a node is streamed like any later one."""
    client = sessions.client("bob")
    service = prosody_server.pubsub_service
    query = ItemsQuery()
    assert query.known_rsm(service) is None
    sizes = [len(page) async for page in query.fetch_all(client, service, node)]
    assert query.known_rsm(service) is False
    assert sum(sizes) == ITEMS and max(sizes) <= STREAMED_PAGE_ITEMS


async def test_a_first_newest_read_does_not_read_the_node_whole(
    prosody_server: ProsodyServer, sessions: SessionManager, node: str
) -> None:
    client = sessions.client("bob")
    service = prosody_server.pubsub_service
    query = ItemsQuery()
    answered: list[int] = []
    ask = query._ask

    async def counting(*args: Any, **kwargs: Any) -> ET.Element:
        reply = await ask(*args, **kwargs)
        answered.append(len(p.parse_items(reply)))
        return reply

    query._ask = counting  # type: ignore[method-assign]
    streams = watch_streams(client)
    reply = await query.get_items(client, service, node, ItemsRequest(max_items=3))
    assert [i.id for i in reply.items] == [f"i{n:05d}" for n in range(ITEMS - 3, ITEMS)]
    assert reply.rsm_count == ITEMS and not reply.complete
    # The probe's one item, then the newest three beside the listing: no whole answer,
    # neither built whole nor streamed. The listing, as long as the node, is streamed.
    assert answered and max(answered) <= 3
    assert [(s.path, s.received) for s in streams] == [(DISCO_ITEMS_PATH, ITEMS)]


async def test_the_item_listing_is_read_as_it_arrives(
    prosody_server: ProsodyServer, sessions: SessionManager, node: str
) -> None:
    """A node's disco#items listing has an entry for each of its items: it is taken in
    as it arrives like the items, and lists what the listing built whole lists."""
    client = sessions.client("bob")
    service = prosody_server.pubsub_service
    query = p.element("query", p.NS_DISCO_ITEMS, node=node)
    whole = await p.send_iq(client, "get", service, query)
    expected = [i.get("name") for i in whole.iter(f"{{{p.NS_DISCO_ITEMS}}}item")]
    assert len(expected) == ITEMS
    streams = watch_streams(client)
    assert await ItemsQuery().list_item_ids(client, service, node) == expected
    assert [(s.path, s.received, s.held) for s in streams] == [(DISCO_ITEMS_PATH, ITEMS, 0)]
    assert client.transport is not None and client.transport.is_reading()


async def test_only_the_newest_are_held_back_up_to_a_bound(
    prosody_server: ProsodyServer,
    sessions: SessionManager,
    node: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Which items are a node's newest is known at the answer's end only. Up to
    STREAMED_HOLD_ITEMS, the newest are held back (as text) and given at the end; a
    caller wanting more gets every page as it comes, never the node held at once."""
    client, service, query = await learnt(prosody_server, sessions, node)
    newest = 3000
    pages = [page async for page in query.fetch_all(client, service, node, newest=newest)]
    assert [i.id for page in pages for i in page] == [f"i{n:05d}" for n in range(6000, ITEMS)]
    assert max(len(page) for page in pages) <= STREAMED_PAGE_ITEMS
    assert all(i.element is None for page in pages for i in page)
    assert query.walked_total(service, node) == ITEMS

    monkeypatch.setattr(query_module, "STREAMED_HOLD_ITEMS", newest - 1)
    streams = watch_streams(client)
    first = True
    ids: list[str] = []
    async for page in query.fetch_all(client, service, node, newest=newest):
        if first:
            # Given while the answer is still arriving: nothing waits for its end.
            assert streams[0].received < ITEMS
            first = False
        ids += [i.id for i in page]
    assert ids == [f"i{n:05d}" for n in range(ITEMS)]


async def test_published_during_the_read_is_not_in_it(
    prosody_server: ProsodyServer, sessions: SessionManager, node: str
) -> None:
    """The answer is the node as the server read it: an item published while the answer
    is still arriving is not half in it, and the connection serves again afterwards (the
    cache's sync takes such an item from its notification)."""
    client = sessions.client("bob")
    service = prosody_server.pubsub_service
    pubsub = PubsubService(sessions, EventHub())
    query = ItemsQuery()
    await query.get_items(client, service, node, ItemsRequest(max_items=1))
    ids: list[str] = []
    async for page in query.fetch_all(client, service, node):
        if not ids:
            await pubsub.publish("alice", service, node, "late", f"<entry xmlns='{ATOM}'/>")
        ids += [i.id for i in page]
    assert ids == [f"i{n:05d}" for n in range(ITEMS)] or ids == [
        f"i{n:05d}" for n in reversed(range(ITEMS))
    ]
    newest = await query.get_items(client, service, node, ItemsRequest(max_items=1))
    assert [i.id for i in newest.items] == ["late"]


async def test_reader_that_stops_early_lets_the_connection_read(
    prosody_server: ProsodyServer, sessions: SessionManager, node: str
) -> None:
    client, service, query = await learnt(prosody_server, sessions, node)
    walk = query.fetch_all(client, service, node)
    first = await anext(walk)
    assert first
    await walk.aclose()
    transport = client.transport
    assert transport is not None
    # Once what the connection had already read is parsed (a slice a loop turn).
    await until(transport.is_reading)
    again = await query.get_items(client, service, node, ItemsRequest(max_items=3))
    assert len(again.items) == 3


async def test_reader_wanting_more_than_is_held_reads_on() -> None:
    """Paused with more than low water left after a batch, a reader that waits for a
    whole batch must restart reading, or the answer never ends."""
    calls: list[str] = []
    stream = ItemStream(lambda: calls.append("pause"), lambda: calls.append("resume"))
    for n in range(HIGH_WATER + 600):
        stream.take(ET.Element("item", id=str(n)))
    assert calls == ["pause"]
    assert len(stream.batch(HIGH_WATER)) == HIGH_WATER
    assert calls == ["pause"]  # 600 still held: above low water
    waiting = asyncio.ensure_future(stream.wait(HIGH_WATER, 30))
    await until(lambda: calls == ["pause", "resume"])
    stream.end()
    assert await waiting
    assert [i.get("id") for i in stream.batch(HIGH_WATER)][:1] == [str(HIGH_WATER)]
