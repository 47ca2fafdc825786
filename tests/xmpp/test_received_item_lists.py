"""Received item lists stay plain XML: slixmpp makes no stanza object per item, and
nothing of the XML Roost reads is lost or reordered."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from roost.service.pubsub.protocol import parse_items, parse_items_off_loop
from roost.service.xmpp.client import ConnectionOptions, RoostClient

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


def pubsub_result(count: int) -> ET.Element:
    """An iq result carrying ``count`` pubsub items, ids item-0…"""
    items = "".join(
        f"<item id='item-{n}'><entry xmlns='http://www.w3.org/2005/Atom'>"
        f"<title>Post {n}</title></entry></item>"
        for n in range(count)
    )
    return ET.fromstring(
        f"<iq xmlns='jabber:client' type='result' id='q1' from='pubsub.example.org'>"
        f"<pubsub xmlns='{NS_PUBSUB}'><items node='blog'>{items}</items>"
        "<set xmlns='http://jabber.org/protocol/rsm'><count>9</count></set></pubsub></iq>"
    )


def client() -> RoostClient:
    """A client that never connects: only its stanza building is used."""
    return RoostClient("a@example.org", "pw", ConnectionOptions(tls="none"))


async def test_pubsub_items_stay_xml_whole_and_in_order() -> None:
    xml = pubsub_result(50)
    stanza = client()._build_stanza(xml)
    # No item stanza objects were made…
    assert list(stanza["pubsub"]["items"]) == []
    # …but the XML is whole, in order, with what follows the items.
    items = stanza.xml.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}items")
    assert items is not None
    assert [item.get("id") for item in items] == [f"item-{n}" for n in range(50)]
    assert [item.id for item in parse_items(stanza.xml)] == [f"item-{n}" for n in range(50)]
    pubsub = stanza.xml.find(f"{{{NS_PUBSUB}}}pubsub")
    assert pubsub is not None
    assert [child.tag.rpartition("}")[2] for child in pubsub] == ["items", "set"]


async def test_disco_items_stay_xml() -> None:
    xml = ET.fromstring(
        "<iq xmlns='jabber:client' type='result' id='d1' from='pubsub.example.org'>"
        f"<query xmlns='{NS_DISCO_ITEMS}' node='blog'>"
        + "".join(f"<item jid='pubsub.example.org' name='i{n}'/>" for n in range(5))
        + "</query></iq>"
    )
    stanza = client()._build_stanza(xml)
    query = stanza.xml.find(f"{{{NS_DISCO_ITEMS}}}query")
    assert query is not None and [item.get("name") for item in query] == [f"i{n}" for n in range(5)]


async def test_other_stanzas_are_built_as_slixmpp_builds_them() -> None:
    # An error or a pubsub request (not a result) keeps its item objects.
    xml = pubsub_result(3)
    xml.set("type", "set")
    stanza = client()._build_stanza(xml)
    assert [item["id"] for item in stanza["pubsub"]["items"]] == ["item-0", "item-1", "item-2"]


async def test_parsing_off_the_loop_gives_what_parsing_on_it_gives() -> None:
    # More than one trip to the worker thread.
    xml = pubsub_result(1203)
    on_loop = parse_items(xml)
    off_loop = await parse_items_off_loop(xml)
    assert off_loop == on_loop
    assert [item.id for item in off_loop][-1] == "item-1202"
    # The items left the reply (the stream parser keeps its last stanza): each is in
    # its PubsubItem, whole.
    container = xml.find(f"{{{NS_PUBSUB}}}pubsub/{{{NS_PUBSUB}}}items")
    assert container is not None and len(container) == 0
    assert all(item.element is not None and len(item.element) == 1 for item in off_loop)
