"""Pubsub notifications read into ItemsEvents: host check and the query form of items."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from roost.service.events import ItemsEvent
from roost.service.pubsub.events import EventRouter, rewrite_item
from roost.service.pubsub.model import PubsubItem
from roost.service.pubsub.protocol import item_text

EVENT = "http://jabber.org/protocol/pubsub#event"


async def _no_fetch(*_args: object) -> list[PubsubItem]:
    raise AssertionError("no fetch expected")


async def _sink(_event: ItemsEvent) -> None:
    return None


def message(sender: str, body: str) -> ET.Element:
    return ET.fromstring(
        f"<message xmlns='jabber:client' from='{sender}'>"
        f"<event xmlns='{EVENT}'>{body}</event></message>"
    )


def test_only_the_host_entity_counts() -> None:
    router = EventRouter(_no_fetch, _sink)
    body = "<items node='n'><item id='a'><x xmlns='urn:x'/></item><retract id='b'/></items>"
    assert router.events_of("alice", message("bob@localhost/phone", body)) == []
    events = router.events_of("alice", message("pubsub.localhost", body))
    assert [(e.service, e.node, e.kind) for e in events] == [
        ("pubsub.localhost", "n", "items"),
        ("pubsub.localhost", "n", "retract"),
    ]
    assert events[1].items == [{"id": "b"}]
    purge = router.events_of("alice", message("bob@localhost", "<purge node='m'/>"))
    assert [(e.service, e.kind) for e in purge] == [("bob@localhost", "purge")]


def test_event_item_in_query_form() -> None:
    raw = ET.fromstring(
        f"<item xmlns='{EVENT}' id='a' publisher='x@y'><x xmlns='urn:x'>1</x></item>"
    )
    item = rewrite_item(raw)
    assert item.id == "a" and item.publisher == "x@y"
    assert item.xml.startswith('<item xmlns="http://jabber.org/protocol/pubsub"')
    assert '<x xmlns="urn:x">1</x>' in item.xml


def test_item_text_escapes_and_namespaces() -> None:
    raw = ET.fromstring(
        "<item xmlns='http://jabber.org/protocol/pubsub' id='a&amp;\"b'>"
        "<e xmlns='urn:x' xmlns:o='urn:o' o:k='v' xml:lang='fr'>1 &lt; 2 &amp; 3<f/>tail</e>"
        "</item>"
    )
    text = item_text(raw)
    assert text == (
        '<item xmlns="http://jabber.org/protocol/pubsub" id="a&amp;&quot;b">'
        '<e xmlns="urn:x" xmlns:a0="urn:o" a0:k="v" xml:lang="fr">1 &lt; 2 &amp; 3<f/>tail</e>'
        "</item>"
    )
    assert ET.tostring(ET.fromstring(text)) == ET.tostring(raw)
