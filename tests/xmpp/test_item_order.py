"""By-id answers in node order on every server, whatever order the ids were asked in.

XEP-0060 gives an answer by ids no order (Prosody answers in the order asked); the node's
item listing (disco#items) gives it, once the listing's direction on the service is known
(ejabberd lists oldest first, Prosody newest first), which is learnt once per service.
A service whose answers come in node order (ejabberd) is asked for the listing only until
its answers have shown it; the order holds after the node changes.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest

from roost.service.pubsub.answer_order import AnswerOrder
from roost.service.pubsub.model import ItemsRequest
from roost.service.pubsub.query import ItemsQuery
from roost.service.xmpp.client import RoostClient
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.world import XmppPeer
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

ROUNDS = 30


async def test_by_id_answers_follow_the_node_order_learnt_from_the_listing(
    xmpp_server: XmppServer, sessions: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = xmpp_server.pubsub_service
    node = f"order-{uuid.uuid4().hex[:8]}"
    # alice may create nodes on both servers' components; another client of hers fills it.
    async with XmppPeer(xmpp_server, "alice") as peer:
        await peer.create_node(node, {"pubsub#max_items": "1000"}, service=service)
        items = [(f"o{n:02d}", f"<n xmlns='urn:example:order'>{n}</n>") for n in range(40)]
        await peer.publish_many(node, items, service=service)
    await sessions.connect("bob")
    client = sessions.client("bob")
    query = ItemsQuery()
    listings = _count_listings(query, monkeypatch)
    order = await _node_order(query, client, service, node)
    assert sorted(order) == sorted(i for i, _ in items)
    assert query.known_listing_order(service) is None
    chooser = random.Random()
    await _asked_in_random_orders(query, client, service, node, order, chooser)
    assert query.known_listing_order(service) is (xmpp_server.kind == "ejabberd")
    if xmpp_server.kind == "ejabberd":
        assert query.known_by_id_order(service) is AnswerOrder.OLDEST_FIRST
        # Learnt within the first few answers; the listing was not asked since.
        assert listings[0] < 10, listings
    else:
        assert query.known_by_id_order(service) is AnswerOrder.NOT_NODE_ORDER
        assert listings[0] == ROUNDS, listings
    # The node changes (an item published again, a new one): the answers follow it.
    async with XmppPeer(xmpp_server, "alice") as peer:
        await peer.publish(node, "o05", "<n xmlns='urn:example:order'>again</n>", service=service)
        await peer.publish(node, "o40", "<n xmlns='urn:example:order'>40</n>", service=service)
    order = await _node_order(query, client, service, node)
    assert sorted(order) == sorted([*(i for i, _ in items), "o40"])
    await _asked_in_random_orders(query, client, service, node, order, chooser)


def _count_listings(query: ItemsQuery, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many item listings ``query`` asks from now on (a one-item list, counting)."""
    asked = [0]
    listing = query.list_item_ids

    async def counted(*args: Any) -> list[str]:
        asked[0] += 1
        return await listing(*args)

    monkeypatch.setattr(query, "list_item_ids", counted)
    return asked


async def _node_order(query: ItemsQuery, client: RoostClient, service: str, node: str) -> list[str]:
    """The node's item ids as its pages from the first item give them."""
    whole = await query.get_items(client, service, node, ItemsRequest(after="", max_items=1000))
    assert whole.complete
    return [item.id for item in whole.items]


async def _asked_in_random_orders(
    query: ItemsQuery,
    client: RoostClient,
    service: str,
    node: str,
    order: list[str],
    chooser: random.Random,
) -> None:
    """Ask ROUNDS random sets of ids (and one id not there), shuffled; each answer must
    come in ``order``."""
    for round_ in range(ROUNDS):
        asked = [*chooser.sample(order, chooser.randint(2, 15)), "not-there"]
        chooser.shuffle(asked)
        reply = await query.get_items(client, service, node, ItemsRequest(item_ids=tuple(asked)))
        got = [item.id for item in reply.items]
        assert got == [i for i in order if i in asked], f"round {round_}: asked {asked}"
        assert reply.rsm_count == len(asked) - 1 and reply.complete
