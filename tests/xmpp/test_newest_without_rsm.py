"""The newest N from a service without RSM: ``max_items`` N and the node's item listing,
asked together, and what happens when the two disagree.

The service is ``evil.localhost`` (tests/fixtures/hostile.py), which answers ``max_items``
and lists a node's items as Prosody does (newest first) and records what it was asked; a
test can make its listing lie, refuse, or change the node as it is asked. Whatever it
does, the answer is the one a whole read of the node paged by Roost gives: the page is
never placed by a listing it does not match. Prosody only: the component lives there.
(The real servers' answers to every request shape are compared with the cache's in
tests/cache/test_read_paths.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from roost.service.errors import XmppError
from roost.service.pubsub.model import ItemsReply, ItemsRequest, PubsubItem
from roost.service.pubsub.query import ItemsQuery
from roost.service.pubsub.rsm import decode_token, page_items
from roost.service.xmpp.client import RoostClient
from tests.fixtures.hostile import HostileService, Node
from tests.fixtures.sessions import connected
from tests.fixtures.xmpp import ProsodyServer

NODE = "urn:example:newest"
HELD = 30


def payload(item_id: str) -> str:
    return f"<entry xmlns='urn:example:newest'>{item_id}</entry>"


@pytest.fixture
async def bob(prosody_server: ProsodyServer) -> AsyncIterator[RoostClient]:
    """bob's session on the test Prosody."""
    async with connected(prosody_server, "bob") as sessions:
        yield sessions.client("bob")


@pytest.fixture
async def evil(prosody_server: ProsodyServer) -> AsyncIterator[HostileService]:
    """The hostile service holding ``NODE`` with :data:`HELD` items, ``i00`` oldest."""
    async with HostileService(prosody_server) as service:
        service.put_items(NODE, [(f"i{n:02d}", payload(f"i{n:02d}")) for n in range(HELD)])
        yield service


async def learnt(query: ItemsQuery, client: RoostClient, evil: HostileService) -> Node:
    """A query that knows the service has no RSM and how it lists items (its first read
    learns both); the node with what it was asked so far forgotten."""
    await query.get_items(client, evil.jid, NODE, ItemsRequest(max_items=1))
    await query.get_items(client, evil.jid, NODE, ItemsRequest(max_items=2))
    assert query.known_rsm(evil.jid) is False
    assert query.known_listing_order(evil.jid) is False
    node = evil.node(NODE)
    node.asked.clear()
    return node


def said(reply: ItemsReply) -> tuple[list[str], int | None, int | None, bool, str, str]:
    """Everything a reply says, its tokens as the item ids they name."""
    first = decode_token(reply.rsm_first or "")[0] if reply.rsm_first else ""
    last = decode_token(reply.rsm_last or "")[0] if reply.rsm_last else ""
    ids = [item.id for item in reply.items]
    return ids, reply.rsm_count, reply.first_index, reply.complete, first, last


def as_whole_read(evil: HostileService, request: ItemsRequest) -> ItemsReply:
    """What a whole read of the node, paged by Roost, answers ``request`` with (ids and
    paging; the items' XML is not compared)."""
    held = evil.node(NODE).items
    return page_items([PubsubItem(id=i, publisher="", xml="") for i in held], request)


@pytest.mark.xmpp
async def test_the_newest_n_are_read_with_max_items_and_placed_by_the_listing(
    bob: RoostClient, evil: HostileService
) -> None:
    query = ItemsQuery()
    node = await learnt(query, bob, evil)
    for size, complete in ((5, False), (HELD - 1, False), (HELD, True), (HELD + 10, True)):
        reply = await query.get_items(bob, evil.jid, NODE, ItemsRequest(max_items=size))
        ids = [f"i{n:02d}" for n in range(max(HELD - size, 0), HELD)]
        assert said(reply) == (ids, HELD, max(HELD - size, 0), complete, ids[0], ids[-1])
        # Only the page's payloads and the listing were asked, never the whole node.
        assert sorted(node.asked) == ["listing", f"max_items {size}"], node.asked
        node.asked.clear()


@pytest.mark.xmpp
@pytest.mark.parametrize("rsm", [None, "honest"])
async def test_the_first_newest_n_of_a_service_learns_its_rsm_support_by_itself(
    bob: RoostClient, evil: HostileService, rsm: str | None
) -> None:
    # A new backend's first read: one request says both what the newest N are and
    # whether the service has RSM, no probe before it (on ejabberd a probe cost a second
    # read of the node).
    query = ItemsQuery()
    node = evil.node(NODE)
    node.rsm = rsm
    reply = await query.get_items(bob, evil.jid, NODE, ItemsRequest(max_items=5))
    ids = [f"i{n:02d}" for n in range(HELD - 5, HELD)]
    assert said(reply)[:4] == (ids, HELD, HELD - 5, False)
    assert query.known_rsm(evil.jid) is (rsm is not None)
    if rsm is None:
        # The service ignored the RSM set and answered max_items: the listing places it.
        assert node.asked == ["max_items 5", "listing"], node.asked
        assert said(reply)[4:] == (ids[0], ids[-1])
    else:
        assert node.asked == ["rsm"], node.asked
    # Learnt: the next read asks as for a known service.
    node.asked.clear()
    await query.get_items(bob, evil.jid, NODE, ItemsRequest(max_items=3))
    assert sorted(node.asked) == (["listing", "max_items 3"] if rsm is None else ["rsm"])


@pytest.mark.xmpp
async def test_an_empty_node_answers_an_empty_complete_page(
    bob: RoostClient, evil: HostileService
) -> None:
    query = ItemsQuery()
    await learnt(query, bob, evil)
    evil.node(NODE).items.clear()
    reply = await query.get_items(bob, evil.jid, NODE, ItemsRequest(max_items=5))
    assert said(reply) == ([], 0, None, True, "", "")


@pytest.mark.xmpp
@pytest.mark.parametrize(
    ("lie", "listing"),
    [
        # An item listed as the newest that no read returns.
        ("a ghost newest", lambda node: ["ghost", *reversed(node.items)]),
        # The newest item missing from the listing.
        ("the newest left out", lambda node: list(reversed(node.items))[1:]),
        # An item listed twice.
        ("an id twice", lambda node: [*reversed(node.items), "i03"]),
        # Oldest first, against what the service's listings said so far.
        ("turned around", lambda node: list(node.items)),
        # No listing at all.
        ("refused", lambda node: None),
    ],
)
async def test_a_listing_that_does_not_match_the_read_is_not_trusted(
    bob: RoostClient, evil: HostileService, lie: str, listing: object
) -> None:
    query = ItemsQuery()
    node = await learnt(query, bob, evil)
    node.item_listing = listing  # type: ignore[assignment]
    request = ItemsRequest(max_items=5)
    reply = await query.get_items(bob, evil.jid, NODE, request)
    assert said(reply) == said(as_whole_read(evil, request)), lie
    assert node.asked[-1] == "whole", (lie, node.asked)


@pytest.mark.xmpp
async def test_a_ghost_among_older_items_only_moves_the_count(
    bob: RoostClient, evil: HostileService
) -> None:
    """An id listed among older items is beyond what the read returns, so nothing tells
    it from an item the server holds: the page is the server's newest, its count and
    place the listing's."""
    query = ItemsQuery()
    node = await learnt(query, bob, evil)

    def with_a_ghost(held: Node) -> list[str]:
        newest_first = list(reversed(held.items))
        return [*newest_first[:10], "ghost", *newest_first[10:]]

    node.item_listing = with_a_ghost
    reply = await query.get_items(bob, evil.jid, NODE, ItemsRequest(max_items=5))
    ids = [f"i{n:02d}" for n in range(HELD - 5, HELD)]
    assert said(reply) == (ids, HELD + 1, HELD + 1 - 5, False, ids[0], ids[-1])


@pytest.mark.xmpp
async def test_a_node_that_changes_between_the_two_requests_is_read_whole(
    bob: RoostClient, evil: HostileService
) -> None:
    query = ItemsQuery()
    node = await learnt(query, bob, evil)

    def publish_then_list(held: Node) -> list[str]:
        # Published after the max_items read was answered, before the listing.
        held.items.setdefault("late", payload("late"))
        return list(reversed(held.items))

    node.item_listing = publish_then_list
    request = ItemsRequest(max_items=5)
    reply = await query.get_items(bob, evil.jid, NODE, request)
    assert node.asked == ["max_items 5", "listing", "whole"], node.asked
    ids = [*(f"i{n:02d}" for n in range(HELD - 4, HELD)), "late"]
    assert said(reply) == (ids, HELD + 1, HELD + 1 - 5, False, ids[0], "late")


@pytest.mark.xmpp
async def test_items_by_id_need_the_listing_only_to_order_two_or_more(
    bob: RoostClient, evil: HostileService
) -> None:
    query = ItemsQuery()
    node = await learnt(query, bob, evil)
    node.item_listing = lambda held: None
    one = await query.get_items(bob, evil.jid, NODE, ItemsRequest(item_ids=("i07", "gone")))
    assert [item.id for item in one.items] == ["i07"] and one.rsm_count == 1
    with pytest.raises(XmppError) as refused:
        await query.get_items(bob, evil.jid, NODE, ItemsRequest(item_ids=("i09", "i07")))
    assert refused.value.name == "Xmpp.FeatureNotImplemented"
    node.item_listing = None
    two = await query.get_items(bob, evil.jid, NODE, ItemsRequest(item_ids=("i09", "i07")))
    assert [item.id for item in two.items] == ["i07", "i09"]
