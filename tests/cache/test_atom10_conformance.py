"""The microblog parser against a peer: feedparser's Atom 1.0 conformance cases.

tests/data/atom10/ holds feedparser's tests/wellformed/atom10 files (their licence is
beside them). For every file with an ``<entry>``, each entry is wrapped as a pubsub
``<item>``, serialised and parsed back as the cache reads stored items, run through
:func:`parse_microblog_entry`, and compared with what feedparser extracts from the same
file: id, title, summary, content (value, type, src), published, updated (as given and as
epoch seconds), authors, categories and links.

Naming, not a difference: Roost keeps Atom's own type names (``text``, ``html``,
``xhtml``) where feedparser gives MIME types (``text/plain``, ``text/html``,
``application/xhtml+xml``); the comparison maps Roost's names to feedparser's. Roost
calls an author's ``<uri>`` ``uri`` where feedparser says ``href``.

A pubsub payload is an entry alone, not a feed: an ``xml:base`` in scope on the feed is
copied onto the entry when it is wrapped, as a gateway publishing the entry should (no
case here needs it, but the comparison must not depend on it).

Each deliberate difference is a named rule in ``DIFFERENCES``, applied to feedparser's
answer for the files listed against it; a rule that no longer changes anything fails
the test, so the list stays true.
"""

from __future__ import annotations

import calendar
import copy
import html
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import feedparser
import pytest

from roost.service.cache.microblog import ATOM_NS, XML_BASE, parse_microblog_entry
from roost.service.safe_xml import parse_xml

DATA = Path(__file__).resolve().parent.parent / "data" / "atom10"
PUBSUB_NS = "http://jabber.org/protocol/pubsub"
TYPE_NAMES = {"text": "text/plain", "html": "text/html", "xhtml": "application/xhtml+xml"}
LINK_KEYS = ("rel", "href", "type", "title", "hreflang", "length")

View = dict[str, Any]


def entries_of(root: ET.Element) -> list[ET.Element]:
    """The feed's entries; in one case the feed forgot the Atom namespace."""
    return [el for el in root if el.tag in (f"{{{ATOM_NS}}}entry", "entry")]


CASES = sorted(p.name for p in DATA.glob("*.xml") if entries_of(ET.parse(p).getroot()))


def as_pubsub_item(entry: ET.Element, feed_base: str | None, item_id: str) -> ET.Element:
    """The entry as a service returns it in an ``<item>``, then its payload as parsed back."""
    payload = copy.deepcopy(entry)
    if feed_base:
        own = payload.get(XML_BASE)
        payload.set(XML_BASE, urljoin(feed_base, own) if own else feed_base)
    item = ET.Element(f"{{{PUBSUB_NS}}}item", id=item_id)
    item.append(payload)
    reparsed = parse_xml(ET.tostring(item, encoding="unicode"), what="item")
    return reparsed[0]


def epoch(parsed_time: Any) -> float | None:
    return float(calendar.timegm(parsed_time)) if parsed_time else None


def roost_view(parsed: dict[str, Any]) -> View:
    def text(key: str) -> tuple[Any, Any] | None:
        if parsed[key] is None:
            return None
        kind = parsed[f"{key}_type"]
        return parsed[key], TYPE_NAMES.get(kind, kind)

    content = None
    if parsed["content"] is not None or parsed["content_src"] is not None:
        kind = parsed["content_type"]
        content = (parsed["content"], TYPE_NAMES.get(kind, kind), parsed["content_src"])
    return {
        "id": parsed["id"],
        "title": text("title"),
        "summary": text("summary"),
        "content": content,
        "published": (parsed["published"], parsed["published_ts"]),
        "updated": (parsed["updated"], parsed["updated_ts"]),
        "authors": [{k: a[k] for k in ("name", "email", "uri")} for a in parsed["authors"]],
        "categories": parsed["categories"],
        "links": [{k: link[k] for k in LINK_KEYS} for link in parsed["links"]],
    }


def feedparser_view(entry: Any) -> View:
    def text(key: str) -> tuple[Any, Any] | None:
        # The plain key is what a feedparser user reads; the detail may be missing.
        if key not in entry:
            return None
        detail = entry.get(f"{key}_detail")
        return entry[key], detail["type"] if detail is not None else None

    content = None
    if entry.get("content"):
        first = entry["content"][0]
        content = (first["value"], first["type"], first.get("src"))
    authors = [
        {"name": a.get("name"), "email": a.get("email"), "uri": a.get("href")}
        for a in entry.get("authors", [])
        if a  # feedparser lists an empty dict for an entry with no author
    ]
    return {
        "id": entry.get("id"),
        "title": text("title"),
        "summary": text("summary"),
        "content": content,
        "published": (entry.get("published"), epoch(entry.get("published_parsed"))),
        "updated": (entry.get("updated"), epoch(entry.get("updated_parsed"))),
        "authors": authors,
        "categories": [
            {"term": t.get("term"), "scheme": t.get("scheme"), "label": t.get("label")}
            for t in entry.get("tags", [])
        ],
        "links": [{k: link.get(k) for k in LINK_KEYS} for link in entry.get("links", [])],
    }


# Each rule turns feedparser's answer into Roost's where they differ on purpose.
Rule = Callable[[View, ET.Element], View]


def summary_from_content(view: View, entry: ET.Element) -> View:
    """feedparser reports an entry's content as its summary too when it has no
    ``<summary>``; Roost keeps the two apart (a frontend shows a summary only if there is
    one, and search filters on ``summary`` must not match the content)."""
    return {**view, "summary": None}


def untyped_links(view: View, entry: ET.Element) -> View:
    """feedparser gives a link without a ``type`` the type text/html; Roost keeps the
    absence (RFC 4287 makes the type advisory and optional, and a guess would be wrong
    for a licence or an image)."""
    links = entry.findall(f"{{{ATOM_NS}}}link")
    fixed = [
        {**fp, "type": None} if element.get("type") is None else fp
        for fp, element in zip(view["links"], links, strict=True)
    ]
    return {**view, "links": fixed}


def html_reescaped(view: View, entry: ET.Element) -> View:
    """feedparser passes html through its sanitiser, which writes a bare ``&`` as
    ``&amp;``; Roost keeps the markup exactly as the entry carries it (sanitising is the
    renderer's job, and the text must stay searchable as written)."""
    value, kind = view["title"]
    return {**view, "title": (html.unescape(value), kind)}


def empty_type_is_text(view: View, entry: ET.Element) -> View:
    """For ``type=""`` feedparser reports an empty type; Roost reads it as the default,
    text (RFC 4287 3.1.1: no type means text), so a filter on ``title_type`` finds it."""
    value, _ = view["title"]
    return {**view, "title": (value, "text/plain")}


def out_of_line_content(view: View, entry: ET.Element) -> View:
    """For ``<content src=…>`` with no ``type`` feedparser reports an empty text/plain
    value; Roost reports no value and no type, only ``content_src`` (the content is
    elsewhere and its type unknown)."""
    _, _, src = view["content"]
    return {**view, "content": (None, None, src)}


CONTENT_WITHOUT_SUMMARY = [
    # Not the base64 cases: feedparser copies only text, html and xhtml content.
    "entry_content_application_xml.xml", "entry_content_div_escaped_markup.xml",
    "entry_content_escaped_markup.xml", "entry_content_inline_markup.xml",
    "entry_content_inline_markup_2.xml", "entry_content_src.xml",
    "entry_content_text_plain.xml", "entry_content_text_plain_brackets.xml",
    "entry_content_type.xml", "entry_content_type_text.xml", "entry_content_value.xml",
]  # fmt: skip

DIFFERENCES: dict[str, list[Rule]] = {
    **{name: [summary_from_content] for name in CONTENT_WITHOUT_SUMMARY},
    "entry_content_src.xml": [summary_from_content, out_of_line_content],
    "entry_link_alternate_map_link_3.xml": [untyped_links],
    "entry_link_rel_license.xml": [untyped_links],
    "entry_title_type_empty-no-crash.xml": [empty_type_is_text],
    "qna.xml": [html_reescaped],
}


def test_every_case_with_an_entry_is_here() -> None:
    # The data's README counts 166 files with an entry; losing some would hide failures.
    assert len(CASES) == 166
    assert set(DIFFERENCES) <= set(CASES)
    assert (DATA / "LICENSE").is_file()


@pytest.mark.parametrize("name", CASES)
def test_entry_agrees_with_feedparser(name: str) -> None:
    path = DATA / name
    root = ET.parse(path).getroot()
    entries = entries_of(root)
    peer = feedparser.parse(str(path))
    assert len(peer.entries) == len(entries)
    for index, entry in enumerate(entries):
        payload = as_pubsub_item(entry, root.get(XML_BASE), f"{name}-{index}")
        ours = roost_view(parse_microblog_entry(payload))
        theirs = feedparser_view(peer.entries[index])
        for rule in DIFFERENCES.get(name, []):
            adjusted = rule(theirs, payload)
            assert adjusted != theirs, f"{rule.__name__} no longer applies to {name}"
            theirs = adjusted
        assert ours == theirs
