"""By-id answers in node order on every server, whatever order the ids were asked in.

XEP-0060 gives an answer by ids no order (Prosody answers in the order asked); the node's
item listing (disco#items) gives it, once the listing's direction on the service is known
(ejabberd lists oldest first, Prosody newest first), which is learnt once per service.
"""

from __future__ import annotations

import random
import uuid

import pytest

from roost.service.pubsub.model import ItemsRequest
from roost.service.pubsub.query import ItemsQuery
from roost.service.xmpp.sessions import SessionManager
from tests.fixtures.world import XmppPeer
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp

ROUNDS = 30


async def test_by_id_answers_follow_the_node_order_learnt_from_the_listing(
    xmpp_server: XmppServer, sessions: SessionManager
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
    whole = await query.get_items(client, service, node, ItemsRequest(after="", max_items=1000))
    order = [item.id for item in whole.items]
    assert sorted(order) == sorted(i for i, _ in items) and whole.complete
    assert query.known_listing_order(service) is None
    chooser = random.Random()
    for round_ in range(ROUNDS):
        asked = [*chooser.sample(order, chooser.randint(2, 15)), "not-there"]
        chooser.shuffle(asked)
        reply = await query.get_items(client, service, node, ItemsRequest(item_ids=tuple(asked)))
        got = [item.id for item in reply.items]
        assert got == [i for i in order if i in asked], f"round {round_}: asked {asked}"
        assert reply.rsm_count == len(asked) - 1 and reply.complete
    assert query.known_listing_order(service) is (xmpp_server.kind == "ejabberd")
