"""Turning a pubsub item into the form the cache stores: raw XML, parsed data, search text.

A parser that fails on an item never stops anything: the item is stored raw, without
parsed data, and the log says which item and why.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from roost.service.cache.analysers import Parser
from roost.service.cache.search_text import search_text_for
from roost.service.errors import InvalidArgument
from roost.service.pubsub.model import PubsubItem
from roost.service.safe_xml import parse_xml
from roost.storage.item_records import ItemInput

log = logging.getLogger(__name__)

# Items come from the server, which already bounds stanza sizes; this only guards the
# parser against a pathological item.
MAX_STORED_ITEM_BYTES = 16 * 1024 * 1024


def payload_of(item_xml: str) -> ET.Element | None:
    """The payload element of an ``<item>`` (its first child), None when it has none."""
    element = parse_xml(item_xml, what="item", max_bytes=MAX_STORED_ITEM_BYTES)
    return next(iter(element), None)


def stored_form(item: PubsubItem, parser: Parser | None, where: str) -> ItemInput:
    """The :class:`ItemInput` for ``item``.

    Args:
        item: the item as GetItems returns it (``xml`` is the ``<item>`` element).
        parser: the node's analyser's parser, if it has one.
        where: the node, for log messages (``service/node``).
    """
    try:
        if item.element is not None:
            # Already parsed from the stream (no entities there either): not parsed twice.
            payload = next(iter(item.element), None)
        else:
            payload = payload_of(item.xml)
    except InvalidArgument as exc:
        log.warning("%s: item %r is not well-formed XML, stored raw: %s", where, item.id, exc)
        return ItemInput(item.id, item.publisher, item.xml, None, "")
    parsed = None
    if parser is not None and payload is not None:
        try:
            parsed = parser(payload)
        except Exception as exc:  # a plugin's parser may raise anything
            log.warning(
                "%s: the parser failed on item %r, stored without parsed data: %s",
                where,
                item.id,
                exc,
            )
    return ItemInput(item.id, item.publisher, item.xml, parsed, search_text_for(parsed, payload))


def payload_namespaces(items: list[PubsubItem]) -> frozenset[str]:
    """The namespaces of the payloads of ``items`` (for analysis)."""
    found: set[str] = set()
    for item in items:
        try:
            payload = payload_of(item.xml)
        except InvalidArgument:
            continue
        if payload is not None and payload.tag.startswith("{"):
            found.add(payload.tag[1:].split("}", 1)[0])
    return frozenset(found)
