"""Turning a pubsub item into the form the cache stores: raw XML, parsed data, search text.

A parser that fails on an item never stops anything: the item is stored raw, without
parsed data, and the log says which item and why.

Limits: an item whose XML is over :data:`MAX_STORED_ITEM_BYTES`, or whose payload nests
elements more than :data:`~roost.service.safe_xml.MAX_XML_DEPTH` deep, is stored raw too:
its XML exactly as received (so the cache still answers what the server would), but no
parser runs on it and it has no search text. Parsers and the search text extraction may
walk a payload by recursion and spend time in proportion to its size; such an item is
almost certainly not what a parser expects anyway. One such item never stops a sync or
an event, and the node stays served.

Logs name the node, the item's id and sizes; never the payload, which may be private.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET

from roost.service.cache.analysers import Parser
from roost.service.cache.search_text import search_text_for
from roost.service.errors import InvalidArgument
from roost.service.pubsub.model import PubsubItem
from roost.service.safe_xml import MAX_XML_DEPTH, nests_deeper, parse_xml
from roost.storage.item_records import ItemInput

log = logging.getLogger(__name__)

# Past this size an item is stored without parsing. Servers bound stanza sizes (Prosody
# and ejabberd default to 64-256 KiB for clients); an honest item is far smaller.
MAX_STORED_ITEM_BYTES = 1024 * 1024
# How deep an <item> element nests: its payload's limit, plus the <item> itself.
_ITEM_DEPTH = MAX_XML_DEPTH + 1
# Item ids are logged; a hostile one may be long.
_LOGGED_ID_CHARS = 100


def payload_of(item_xml: str) -> ET.Element | None:
    """The payload element of an ``<item>`` (its first child), None when it has none.

    Raises:
        InvalidArgument: the item is too large or not well-formed.
    """
    return next(iter(_item_element(item_xml)), None)


def _item_element(item_xml: str) -> ET.Element:
    # No depth limit here: stored_form checks it, with a message about the payload.
    return parse_xml(item_xml, what="item", max_bytes=MAX_STORED_ITEM_BYTES, max_depth=None)


def stored_form(item: PubsubItem, parser: Parser | None, where: str) -> ItemInput:
    """The :class:`ItemInput` for ``item``.

    Args:
        item: the item as GetItems returns it (``xml`` is the ``<item>`` element).
        parser: the node's analyser's parser, if it has one.
        where: the node, for log messages (``service/node``).
    """
    raw = ItemInput(item.id, item.publisher, item.xml, None, "")
    size = _size(item.xml)
    if size > MAX_STORED_ITEM_BYTES:
        log.warning(
            "%s: item %s is %d bytes, over the %d bytes parsed and indexed; stored raw",
            where,
            _shown_id(item.id),
            size,
            MAX_STORED_ITEM_BYTES,
        )
        return raw
    try:
        # Already parsed from the stream (no entities there either): not parsed twice.
        element = item.element if item.element is not None else _item_element(item.xml)
        if nests_deeper(item.xml, element, _ITEM_DEPTH):
            raise InvalidArgument(
                f"its payload nests elements more than {MAX_XML_DEPTH} levels deep; "
                f"the limit is {MAX_XML_DEPTH} levels"
            )
    except InvalidArgument as exc:
        # The message names the limit broken or where the XML is not well-formed.
        log.warning(
            "%s: item %s (%d bytes) stored raw, not parsed or indexed: %s",
            where,
            _shown_id(item.id),
            size,
            exc.message,
        )
        return raw
    payload = next(iter(element), None)
    parsed = None
    if parser is not None and payload is not None:
        try:
            parsed = parser(payload)
        except Exception as exc:  # a plugin's parser may raise anything
            # Its type only: a parser's message may quote the payload.
            log.warning(
                "%s: the parser failed on item %s (%d bytes) with %s; stored without parsed data",
                where,
                _shown_id(item.id),
                size,
                type(exc).__name__,
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


def _size(text: str) -> int:
    """``text``'s size in UTF-8 bytes (without encoding it when it is ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _shown_id(item_id: str) -> str:
    """An item id as logs show it: quoted, and cut when it is long."""
    if len(item_id) > _LOGGED_ID_CHARS:
        return repr(item_id[:_LOGGED_ID_CHARS]) + f"… ({len(item_id)} characters)"
    return repr(item_id)
