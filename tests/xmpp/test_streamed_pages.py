"""A walk of a large node by RSM takes its later pages in as they arrive.

ejabberd pages a node by RSM; a sync walks it in pages that grow to thousands of items.
Past the first page (read whole: its count decides the walk), each page's items are
taken out of the answer as they are parsed and handed on a batch at a time, so that a
page never stands whole in memory, and the connection stops reading while the reader is
behind. The node is written into ejabberd's store before it is read
(tests/fixtures/node_fill.py), as years of other clients' publishing would leave it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from roost.service.events import EventHub
from roost.service.pubsub import protocol as p
from roost.service.pubsub.operations import PubsubService
from roost.service.pubsub.query import FETCH_PAGE_SIZE, ItemsQuery
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.item_streams import until, watch_streams
from tests.fixtures.node_fill import fill_node
from tests.fixtures.sessions import connected
from tests.fixtures.xmpp import XmppServer

ATOM = "http://www.w3.org/2005/Atom"
# Enough for a second page past what the stream holds before the connection stops
# reading (2,000 beside the reader's first batch of 500): 500 items, then a page of half
# the node, 3,000.
ITEMS = 6000


def item_id(n: int) -> str:
    return f"i{n:05d}"


@pytest.fixture
async def sessions(ejabberd_server: XmppServer) -> AsyncIterator[SessionManager]:
    async with connected(ejabberd_server, "alice", "bob") as manager:
        yield manager


@pytest.fixture
async def node(ejabberd_server: XmppServer, sessions: SessionManager) -> str:
    """A node of :data:`ITEMS` items on the pubsub service, written by alice."""
    name = f"walked-{uuid.uuid4().hex[:8]}"
    pubsub = PubsubService(sessions, EventHub())
    await pubsub.create_node(
        "alice", ejabberd_server.pubsub_service, name, {"pubsub#max_items": "max"}
    )
    entries = (
        (item_id(n), ATOM, [("title", f"Entry {n}"), ("content", "words " * 60)])
        for n in range(ITEMS)
    )
    await fill_node(ejabberd_server, name, ejabberd_server.jid("alice"), entries)
    return name


async def test_later_pages_are_taken_in_as_they_arrive(
    ejabberd_server: XmppServer, sessions: SessionManager, node: str
) -> None:
    client = sessions.client("bob")
    service = ejabberd_server.pubsub_service
    query = ItemsQuery()
    assert await query.server_supports_rsm(client, service, node)

    streams = watch_streams(client)
    got: list[str] = []
    sizes: list[int] = []
    async for batch in query.fetch_all(client, service, node):
        if len(sizes) == 1:
            # The first batch of the second page: while the reader stays behind, the
            # connection stops reading rather than take the page in whole.
            assert len(streams) == 1
            await until(lambda: client.transport is not None and not client.transport.is_reading())
        sizes.append(len(batch))
        got += [i.id for i in batch]
        assert all(i.xml.startswith("<item ") and "<entry" in i.xml for i in batch)
    assert got == [item_id(n) for n in range(ITEMS)]
    assert sizes[0] == FETCH_PAGE_SIZE
    assert max(sizes[1:]) <= p.ITEMS_PER_TRIP
    # Every page past the first was streamed, and each stream let go of the connection.
    assert len(streams) >= 2
    assert query.walked_total(service, node) == ITEMS
    assert client.transport is not None and client.transport.is_reading()
