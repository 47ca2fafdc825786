"""The XEP-0277 microblog parser: an Atom ``<entry>`` as JSON-able data.

The result is what the cache stores as an item's parsed data, so every key here is a key
a Search filter can name (``title``, ``published_ts``, ``tags``, ``author_jid``…). It reads
``xml.etree`` elements, as slixmpp and defusedxml give them, and never raises on odd but
well-formed input: a missing element is a missing value, not an error. Only input that is
not an Atom entry at all raises ``ValueError``, so that the sync can store that item raw
and log why.

Dates are kept as the entry gives them (``published``, ``updated``) and, when they can be
read, also as epoch seconds (``published_ts``, ``updated_ts``) for range filters and
ordering. Accepted forms: RFC 3339 / ISO 8601 date-times (``2026-11-25T12:58:44Z``,
fractional seconds, ``+01:00`` or ``+0100`` offsets, a space or lowercase ``t``/``z``, and a
date alone meaning midnight UTC); a date-time without an offset is taken as UTC; RFC 2822
dates (``Wed, 25 Nov 2026 12:58:44 +0000``) as old feed converters write them. Anything
else leaves the ``_ts`` key ``None``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import email.utils
import html
import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urljoin

ATOM_NS = "http://www.w3.org/2005/Atom"
THREAD_NS = "http://purl.org/syndication/thread/1.0"
XHTML_NS = "http://www.w3.org/1999/xhtml"
GEOLOC_NS = "http://jabber.org/protocol/geoloc"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"

_A = f"{{{ATOM_NS}}}"
# XEP-0080 fields that are numbers; the rest are kept as text.
_GEOLOC_NUMBERS = frozenset(
    {"accuracy", "alt", "altaccuracy", "bearing", "error", "lat", "lon", "speed"}
)


def parse_microblog_entry(entry: ET.Element, *, base: str | None = None) -> dict[str, Any]:
    """Parse one Atom entry (a XEP-0277 item payload) into JSON-able data.

    Args:
        entry: the ``{http://www.w3.org/2005/Atom}entry`` element.
        base: the base URI the entry inherits (the ``xml:base`` in scope where it came
            from), against which relative references are resolved together with the
            entry's own ``xml:base`` attributes. A pubsub payload usually has none.

    Returns:
        A dict with the keys ``id``, ``title``, ``title_type``, ``summary``,
        ``summary_type``, ``content``, ``content_type``, ``content_src``, ``published``,
        ``published_ts``, ``updated``, ``updated_ts``, ``authors``, ``author``,
        ``author_jid``, ``contributors``, ``categories``, ``tags``, ``links``,
        ``comments``, ``replies``, ``in_reply_to`` and, when present, ``geoloc``. Text
        keys are ``None`` where the entry has no such element.

    Raises:
        ValueError: ``entry`` is not an Atom ``<entry>`` element.
    """
    if not isinstance(entry, ET.Element) or not isinstance(entry.tag, str):
        raise ValueError("the payload is not an XML element")
    if entry.tag == "entry":
        entry = _into_atom_namespace(entry)
    if entry.tag != f"{_A}entry":
        raise ValueError(f"the payload is {entry.tag!r}, not an Atom entry ({{{ATOM_NS}}}entry)")
    entry_base = _join_base(base, entry)
    result: dict[str, Any] = {"id": _plain_text(entry.find(f"{_A}id"))}
    for key in ("title", "summary"):
        value, kind = _text_construct(entry.find(f"{_A}{key}"))
        result[key] = value
        result[f"{key}_type"] = kind
    result.update(_content(entry.find(f"{_A}content"), entry_base))
    for key in ("published", "updated"):
        stamp = _plain_text(entry.find(f"{_A}{key}"))
        result[key] = stamp
        result[f"{key}_ts"] = parse_timestamp(stamp) if stamp else None
    authors = [_person(el, entry_base) for el in entry.findall(f"{_A}author")]
    result["authors"] = authors
    result["author"] = authors[0]["name"] if authors else None
    result["author_jid"] = authors[0]["jid"] if authors else None
    result["contributors"] = [_person(el, entry_base) for el in entry.findall(f"{_A}contributor")]
    categories = [
        {"term": el.get("term"), "scheme": el.get("scheme"), "label": el.get("label")}
        for el in entry.findall(f"{_A}category")
    ]
    result["categories"] = categories
    result["tags"] = [c["term"] for c in categories if c["term"]]
    links = [_link(el, entry_base) for el in entry.findall(f"{_A}link")]
    result["links"] = links
    result["comments"], result["replies"] = _reply_links(links, entry.findall(f"{_A}link"))
    result["in_reply_to"] = [
        _in_reply_to(el, entry_base) for el in entry.findall(f"{{{THREAD_NS}}}in-reply-to")
    ]
    geoloc = entry.find(f"{{{GEOLOC_NS}}}geoloc")
    if geoloc is not None:
        result["geoloc"] = _geoloc(geoloc)
    return result


def parse_timestamp(value: str) -> float | None:
    """Read an Atom date as epoch seconds, or ``None`` when it is in no form accepted.

    See the module docstring for the forms; a value without an offset is UTC.
    """
    text = value.strip()
    if not text:
        return None
    iso = text.upper().replace(" ", "T", 1) if len(text) > 10 else text
    if iso.endswith("Z"):
        iso = iso[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def parse_xmpp_uri(uri: str | None) -> dict[str, str | None] | None:
    """Split an RFC 5122 ``xmpp:`` URI into its JID and XEP-0060 query keys.

    ``xmpp:pubsub.example.org?;node=urn%3Axmpp%3Amicroblog%3A0%3Acomments%2F1;item=a``
    gives ``{"jid": "pubsub.example.org", "action": "", "node": "urn:…", "item": "a"}``.
    Returns ``None`` for anything that is not an ``xmpp:`` URI or has no JID.
    """
    if not uri or uri[:5].lower() != "xmpp:":
        return None
    rest = uri[5:].split("#", 1)[0]
    if rest.startswith("//"):
        # An authority names the account to act as; the target JID follows it.
        rest = rest[2:].partition("/")[2]
    target, _, query = rest.partition("?")
    jid = unquote(target)
    if not jid:
        return None
    parsed: dict[str, str | None] = {"jid": jid, "action": None, "node": None, "item": None}
    if query:
        action, *pairs = query.split(";")
        parsed["action"] = unquote(action)
        for pair in pairs:
            key, _, val = pair.partition("=")
            if key in ("node", "item"):
                parsed[key] = unquote(val)
    return parsed


def _into_atom_namespace(entry: ET.Element) -> ET.Element:
    """A copy of an ``<entry>`` written without a namespace, its bare elements put in Atom's.

    Not Atom, but some feed converters write it so, and the meaning is not in doubt.
    """
    converted = copy.deepcopy(entry)
    for node in converted.iter():
        if isinstance(node.tag, str) and not node.tag.startswith("{"):
            node.tag = f"{_A}{node.tag}"
    return converted


def _join_base(base: str | None, element: ET.Element) -> str | None:
    own = element.get(XML_BASE)
    if own is None:
        return base
    return _resolve(base, own)


def _resolve(base: str | None, href: str | None) -> str | None:
    if href is None:
        return None
    href = href.strip()
    if not base:
        return href
    try:
        return urljoin(base, href)
    except ValueError:  # a malformed IPv6 host and the like: keep what was given
        return href


def _plain_text(element: ET.Element | None) -> str | None:
    if element is None:
        return None
    if len(element) == 0:
        # The common case, and itertext's generator costs more than the text itself.
        return (element.text or "").strip()
    return "".join(element.itertext()).strip()


def _text_construct(element: ET.Element | None) -> tuple[str | None, str | None]:
    """An Atom text construct's value and type (``text``, ``html``, ``xhtml`` or a MIME type).

    ``html`` is the markup as text (the XML escaping undone); ``xhtml`` is the markup of
    the wrapping ``div``'s children, serialised; a non-text, non-XML MIME type is base64
    and is decoded when it decodes to UTF-8 text.
    """
    if element is None:
        return None, None
    kind = (element.get("type") or "text").strip().lower() or "text"
    if kind == "xhtml":
        div = element.find(f"{{{XHTML_NS}}}div")
        return _serialise_children(div if div is not None else element), kind
    if kind in ("text", "html") or kind.startswith("text/"):
        return _plain_text(element), kind
    if kind.endswith(("+xml", "/xml")):
        return _serialise_children(element), kind
    raw = _plain_text(element) or ""
    try:
        decoded = base64.b64decode("".join(raw.split()), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return raw, kind
    return decoded, kind


def _content(element: ET.Element | None, base: str | None) -> dict[str, Any]:
    if element is None:
        return {"content": None, "content_type": None, "content_src": None}
    src = element.get("src")
    if src is not None:
        # Out-of-line content: the element is empty by definition, the type is advisory.
        return {
            "content": None,
            "content_type": element.get("type"),
            "content_src": _resolve(_join_base(base, element), src),
        }
    value, kind = _text_construct(element)
    return {"content": value, "content_type": kind, "content_src": None}


def _serialise_children(element: ET.Element) -> str:
    """The markup inside ``element``: its text, then each child with its tail.

    XHTML elements are written without a prefix (``<b>`` rather than ``<html:b>``), which
    is how the markup reads in a document whose default namespace is XHTML.
    """
    holder = copy.deepcopy(element)
    for node in holder.iter():
        if isinstance(node.tag, str) and node.tag.startswith(f"{{{XHTML_NS}}}"):
            node.tag = node.tag[len(XHTML_NS) + 2 :]
    parts = [html.escape(holder.text or "", quote=False)]
    parts.extend(ET.tostring(child, encoding="unicode") for child in holder)
    return "".join(parts).strip()


def _person(element: ET.Element, base: str | None) -> dict[str, str | None]:
    own_base = _join_base(base, element)
    uri_el = element.find(f"{_A}uri")
    if uri_el is None:
        # Atom 0.3 called it url; converted feeds still carry it.
        uri_el = element.find(f"{_A}url")
    uri = _resolve(own_base, _plain_text(uri_el))
    xmpp = parse_xmpp_uri(uri)
    return {
        "name": _plain_text(element.find(f"{_A}name")),
        "email": _plain_text(element.find(f"{_A}email")),
        "uri": uri,
        "jid": xmpp["jid"] if xmpp else None,
    }


def _link(element: ET.Element, base: str | None) -> dict[str, str | None]:
    href = element.get("href")
    if href is None:
        # Not Atom, but some converters put the URI in the element's text.
        href = _plain_text(element) or None
    return {
        "rel": (element.get("rel") or "alternate").strip(),
        "href": _resolve(_join_base(base, element), href),
        "type": element.get("type"),
        "title": element.get("title"),
        "hreflang": element.get("hreflang"),
        "length": element.get("length"),
    }


def _reply_links(
    links: list[dict[str, str | None]], elements: list[ET.Element]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """XEP-0277 comment nodes (``rel="replies" title="comments"``) and other replies links."""
    comments: list[dict[str, Any]] = []
    replies: list[dict[str, Any]] = []
    for link, element in zip(links, elements, strict=True):
        if link["rel"] != "replies":
            continue
        xmpp = parse_xmpp_uri(link["href"])
        if link["title"] == "comments":
            comments.append(
                {
                    "uri": link["href"],
                    "service": xmpp["jid"] if xmpp else None,
                    "node": xmpp["node"] if xmpp else None,
                }
            )
        else:
            replies.append(
                {
                    "href": link["href"],
                    "type": link["type"],
                    "count": _count(element.get(f"{{{THREAD_NS}}}count")),
                }
            )
    return comments, replies


def _count(value: str | None) -> int | None:
    try:
        count = int(value.strip()) if value else None
    except ValueError:
        return None
    return count if count is not None and count >= 0 else None


def _in_reply_to(element: ET.Element, base: str | None) -> dict[str, str | None]:
    href = _resolve(_join_base(base, element), element.get("href"))
    xmpp = parse_xmpp_uri(href)
    return {
        "ref": element.get("ref"),
        "href": href,
        "type": element.get("type"),
        "service": xmpp["jid"] if xmpp else None,
        "node": xmpp["node"] if xmpp else None,
        "item": xmpp["item"] if xmpp else None,
    }


def _geoloc(element: ET.Element) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for child in element:
        # Comments and processing instructions have a function as their tag.
        tag: object = child.tag
        if not isinstance(tag, str):
            continue
        name = tag.rpartition("}")[2]
        text = "".join(child.itertext()).strip()
        if name in _GEOLOC_NUMBERS:
            try:
                number = float(text)
            except ValueError:
                number = math.nan
            # NaN and infinities are not JSON: such a field stays text.
            if math.isfinite(number):
                fields[name] = number
                continue
        fields[name] = text
    return fields
