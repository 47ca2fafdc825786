"""Deep and large items: serialised at any depth, stored raw past the limits, logged by id."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from roost.service.cache import stored_form as sf
from roost.service.cache.parsers import ParserContext
from roost.service.errors import InvalidArgument
from roost.service.pubsub.events import rewrite_item
from roost.service.pubsub.model import PubsubItem
from roost.service.pubsub.protocol import item_text
from roost.service.safe_xml import MAX_XML_DEPTH, parse_xml, xml_depth

PUBSUB = "http://jabber.org/protocol/pubsub"
EVENT = "http://jabber.org/protocol/pubsub#event"
NS = "urn:example:deep"
SECRET = "private words"
CONTEXT = ParserContext("p", "svc", "node")


def payload(depth: int) -> str:
    """A payload ``depth`` elements deep, as ``item_text`` writes it."""
    return f'<a xmlns="{NS}">' + "<a>" * (depth - 1) + SECRET + "</a>" * depth


def item_xml(depth: int, item_id: str = "deep", namespace: str = PUBSUB) -> str:
    return f'<item xmlns="{namespace}" id="{item_id}">{payload(depth)}</item>'


def from_stream(depth: int) -> PubsubItem:
    """The item as a query answer gives it: parsed from the stream, then serialised."""
    element = ET.fromstring(item_xml(depth))
    return PubsubItem(id="deep", publisher="", xml=item_text(element), element=element)


class Parser:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, element: ET.Element) -> dict[str, Any]:
        self.calls += 1
        return {"text": "".join(element.itertext())}


@pytest.mark.parametrize("depth", [990, 5000, 100_000])
def test_serialised_at_any_depth(depth: int) -> None:
    element = ET.fromstring(item_xml(depth))
    assert item_text(element) == item_xml(depth)
    # An event's item, rewritten in the query form.
    event_item = ET.fromstring(item_xml(depth, namespace=EVENT))
    assert rewrite_item(event_item).xml == item_xml(depth)


def test_serialised_tails_and_attributes_in_order() -> None:
    text = (
        f'<item xmlns="{PUBSUB}" id="x"><e xmlns="urn:x" k="1">a<f>b<g/>c</f>d<h>e</h>f</e></item>'
    )
    assert item_text(ET.fromstring(text)) == text


def test_depth_counted_without_recursion() -> None:
    assert xml_depth(ET.fromstring("<a/>")) == 1
    assert xml_depth(ET.fromstring("<a><b/><c><d/></c></a>")) == 3
    deep = ET.fromstring(payload(100_000))
    assert xml_depth(deep) == 100_000
    assert xml_depth(deep, stop_after=256) == 257


def test_parse_limits_depth() -> None:
    assert xml_depth(parse_xml(payload(MAX_XML_DEPTH))) == MAX_XML_DEPTH
    with pytest.raises(InvalidArgument, match="more than 256 levels deep"):
        parse_xml(payload(MAX_XML_DEPTH + 1))
    # A wide payload is not a deep one.
    parse_xml(f"<a xmlns='{NS}'>" + "<b/>" * 5000 + "</a>")
    assert xml_depth(parse_xml(payload(5000), max_depth=None)) == 5000


@pytest.mark.parametrize("depth", [990, 5000])
@pytest.mark.parametrize("parsed_already", [True, False])
async def test_deep_item_stored_raw(
    depth: int, parsed_already: bool, caplog: pytest.LogCaptureFixture
) -> None:
    item = from_stream(depth)
    if not parsed_already:
        item = PubsubItem(id=item.id, publisher="", xml=item.xml)
    parser = Parser()
    [stored] = await sf.stored_forms([item], parser, CONTEXT)
    assert stored.data == item_xml(depth)
    assert stored.parsed is None and stored.search_text == ""
    assert parser.calls == 0
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = record.getMessage()
    assert "'deep'" in message and "stored raw" in message and "256 levels" in message
    assert SECRET not in message


async def test_item_at_the_depth_limit_is_parsed() -> None:
    parser = Parser()
    [stored] = await sf.stored_forms([from_stream(MAX_XML_DEPTH)], parser, CONTEXT)
    assert parser.calls == 1 and stored.parsed == {"text": SECRET}
    assert stored.search_text == SECRET


async def test_large_item_stored_raw(caplog: pytest.LogCaptureFixture) -> None:
    words = (SECRET + " ") * (sf.MAX_STORED_ITEM_BYTES // len(SECRET))
    xml = f'<item xmlns="{PUBSUB}" id="big"><a xmlns="{NS}">{words}</a></item>'
    parser = Parser()
    [stored] = await sf.stored_forms([PubsubItem(id="big", publisher="", xml=xml)], parser, CONTEXT)
    assert stored.data == xml and stored.parsed is None and stored.search_text == ""
    assert parser.calls == 0
    message = caplog.records[-1].getMessage()
    assert "'big'" in message and str(len(xml)) in message and SECRET not in message


async def test_long_item_id_cut_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    long_id = "i" * 10_000
    item = PubsubItem(id=long_id, publisher="", xml=item_xml(300, item_id=long_id))
    [stored] = await sf.stored_forms([item], None, CONTEXT)
    assert stored.parsed is None
    message = caplog.records[-1].getMessage()
    assert len(message) < 500 and "10000 characters" in message


def test_namespaces_of_deep_items() -> None:
    # Analysis reads the payload's name only, at any depth.
    shallow = from_stream(2)
    deep = PubsubItem(id="d", publisher="", xml=item_xml(5000).replace(NS, "urn:other"))
    assert sf.payload_namespaces([shallow, deep]) == frozenset({NS, "urn:other"})
