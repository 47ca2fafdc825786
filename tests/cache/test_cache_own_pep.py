"""The account's own PEP node is current only once its server knows Roost wants its events.

Advertising ``<node>+notify`` changes the client's capabilities at once, but the server
sends the node's notifications only after it has processed the presence carrying them
and, for capabilities it does not know, asked the client's disco#info and read the
answer. A sync must not call the node current before that: a publication made right after
would be lost. The client's answer is held back here until it asks its server anything
else, as a slow link would hold it.

Prosody shows the race; ejabberd delivers an own node's notifications to the account's
bare JID whatever the resources advertise, so there the test only guards the sync.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from slixmpp.xmlstream import StanzaBase

from roost.service.events import EventHub, ItemsEvent
from roost.service.pubsub.model import ItemsRequest
from roost.service.xmpp.client import RoostClient
from tests.cache.test_cache_sync import Roost, entry, roost, wait_state
from tests.fixtures.sessions import Recorder
from tests.fixtures.world import WAIT_TIMEOUT, XmppPeer
from tests.fixtures.xmpp import XmppServer

pytestmark = pytest.mark.xmpp
__all__ = ["roost"]

NS_CLIENT = "jabber:client"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


class CapsAnswerHold:
    """Holds back the client's answers to the server's disco#info queries about its
    capabilities (a slow link), until the client asks its server anything else (an IQ
    to the server's domain), or the test lets them go."""

    def __init__(self, client: RoostClient) -> None:
        self._client = client
        self._caps = f"{client.plugin['xep_0115'].caps_node}#"
        self._held: list[StanzaBase] = []
        self.released = False
        client.add_filter("out", self._filter)

    def _filter(self, stanza: StanzaBase) -> StanzaBase | None:
        xml = stanza.xml
        if self.released or xml.tag != f"{{{NS_CLIENT}}}iq":
            return stanza
        if xml.get("to") == self._client.boundjid.domain and xml.get("type") == "get":
            self.release()
            return stanza
        query = xml.find(f"{{{NS_DISCO_INFO}}}query")
        caps = query is not None and query.get("node", "").startswith(self._caps)
        if xml.get("type") == "result" and caps:
            self._held.append(stanza)
            return None
        return stanza

    def release(self) -> None:
        """Let the held answers go, and every later one."""
        if self.released:
            return
        self.released = True
        for stanza in self._held:
            self._client.send(stanza)
        self._held.clear()

    def remove(self) -> None:
        self.release()
        self._client.del_filter("out", self._filter)


async def items_heard(hub: EventHub, profile: str, node: str, item_ids: set[str]) -> None:
    """Wait until publications of all of ``item_ids`` in ``node`` have reached the cache
    (the hub's ItemsEvent comes once the cache has applied one)."""
    missing = set(item_ids)
    done = asyncio.Event()

    def heard(event: object) -> None:
        if not isinstance(event, ItemsEvent) or event.kind != "items":
            return
        if (event.profile, event.node) == (profile, node):
            missing.difference_update(str(item["id"]) for item in event.items)
            if not missing:
                done.set()

    unsubscribe = hub.subscribe(heard)
    try:
        await asyncio.wait_for(done.wait(), WAIT_TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"never heard of {sorted(missing)} in {node}") from None
    finally:
        unsubscribe()


async def test_an_own_node_new_to_the_session_hears_what_is_published_right_after_its_sync(
    roost: Roost, xmpp_server: XmppServer, recorder: Recorder
) -> None:
    # A node of a namespace this session has not advertised +notify for (the test's
    # analyser syncs blog-* nodes of Atom entries).
    node = f"blog-{uuid.uuid4().hex[:8]}"
    alice = xmpp_server.jid("alice")
    hold = CapsAnswerHold(roost.sessions.client("alice"))
    try:
        async with XmppPeer(xmpp_server, "alice") as phone:
            await phone.create_node(node, {"pubsub#max_items": "10"})
            await phone.publish(node, "p0", entry(0))
            await roost.pubsub.get_items("alice", "", node, ItemsRequest())
            await wait_state(recorder, node, "completed")
            # Right after, the account's other resource publishes twice: the server must
            # send both (once it knows, it would resend only its last item).
            heard = asyncio.ensure_future(items_heard(roost.hub, "alice", node, {"p1", "p2"}))
            await phone.publish(node, "p1", entry(1))
            await phone.publish(node, "p2", entry(2))
            hold.release()
            await heard
        record = await roost.db.nodes.get_node("alice", alice, node)
        assert record is not None
        stored = [i for i, _updated in await roost.db.items.list_item_ids(record.id)]
        assert stored == ["p0", "p1", "p2"]
    finally:
        hold.remove()
