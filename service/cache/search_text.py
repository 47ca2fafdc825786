"""The text the full-text index covers for one cached item.

With parsed data, the index covers its string values, found recursively through dicts
and lists, never their keys. Left out: values that are whole URIs (``http:``, ``xmpp:``,
``tag:``… — identifiers, not words anyone searches for, and their fragments would match
nearly everything), ISO 8601 dates (Search filters on them by path; as words they are
noise), values that describe other values (under a key ``type``, ``rel``, ``scheme``,
``hreflang``, ``length`` or one ending in ``_type``: ``html``, ``alternate``…), numbers
and booleans. A string is taken as markup, and only its
text is indexed, when the dict holding it under ``K`` also says ``K_type`` is ``html``,
``xhtml`` or their MIME types (the convention of the microblog parser:
``content``/``content_type``); tag and attribute names never reach the index. Repeated
strings are indexed once (the first author's name is also ``author``; terms are also
``tags``), so that ranking is not skewed by the parser's conveniences.

Without parsed data, the index covers the payload XML's text content: element text and
tails, never tag names, attribute names or attribute values.

Whitespace is collapsed to single spaces; pieces are joined by a newline.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from typing import Any

_MARKUP_TYPES = frozenset({"html", "xhtml", "text/html", "application/xhtml+xml"})
# Whole values that are not words: a URI and nothing else (a scheme, a colon, no
# whitespace; schemes are listed so that words such as "note:" or times such as "12:30"
# are kept), or an ISO 8601 date. One pattern, so each string is matched once.
_NOT_WORDS = re.compile(
    r"\s*(?:(?:https?|ftp|xmpp|mailto|tag|urn|geo|data|file|sip|tel|magnet):\S*"
    r"|\d{4}-\d{2}-\d{2}(?:[Tt ][\d:.]+(?:[Zz]|[+-]\d{2}:?\d{2})?)?)?\s*",
    re.IGNORECASE,
)
_DESCRIPTOR_KEYS = frozenset({"type", "rel", "scheme", "hreflang", "length"})
_SPACE = re.compile(r"\s+")
_SCALARS = (bool, int, float)
_SEQUENCES = (list, tuple)
# Elements that separate words ("a<br/>b" is two words, "a<b>b</b>" is one).
# fmt: off
_BREAKING_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "img", "li",
    "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
})
# fmt: on


def search_text_for(parsed: Any | None, payload: ET.Element | None) -> str:
    """The full-text index's text for an item.

    Args:
        parsed: the item's parsed data (JSON-able), or ``None`` when it has none.
        payload: the item's payload element (or the ``<item>`` itself), used when there
            is no parsed data.

    Returns:
        The text to index; empty when there is nothing to index.
    """
    if parsed is not None:
        pieces: list[str] = []
        _collect_strings(parsed, pieces)
    elif payload is not None:
        pieces = list(payload.itertext())
    else:
        return ""
    seen: set[str] = set()
    kept: list[str] = []
    for piece in pieces:
        text = _SPACE.sub(" ", piece).strip()
        if text and text not in seen:
            seen.add(text)
            kept.append(text)
    return "\n".join(kept)


def _collect_strings(value: Any, out: list[str]) -> None:
    # This runs for every item a sync stores: strings are handled in place rather than
    # by a call each, empty containers are skipped, and nothing is a generator.
    if isinstance(value, dict):
        for key, item in value.items():
            if not item or isinstance(item, _SCALARS):
                continue
            if isinstance(key, str) and (key in _DESCRIPTOR_KEYS or key.endswith("_type")):
                continue
            if isinstance(item, str):
                kind = value.get(key + "_type") if isinstance(key, str) else None
                if kind is not None and kind in _MARKUP_TYPES:
                    out.append(_markup_text(item))
                elif not _NOT_WORDS.fullmatch(item):
                    out.append(item)
            else:
                _collect_strings(item, out)
    elif isinstance(value, _SEQUENCES):
        for item in value:
            if isinstance(item, str):
                if not _NOT_WORDS.fullmatch(item):
                    out.append(item)
            elif item and not isinstance(item, _SCALARS):
                _collect_strings(item, out)
    elif isinstance(value, str) and not _NOT_WORDS.fullmatch(value):
        out.append(value)


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BREAKING_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BREAKING_TAGS:
            self.parts.append(" ")


def _markup_text(markup: str) -> str:
    """The text of HTML or XHTML markup; tags and attributes dropped, entities resolved."""
    collector = _TextCollector()
    collector.feed(markup)
    collector.close()
    return "".join(collector.parts)
