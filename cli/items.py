"""Pubsub items as ``roost`` shows them: JSON records for scripts, text for people.

Shared by ``roost pubsub``, ``roost cache`` and ``roost blog``. Only the standard library
here, its XML and HTML parsers imported when first needed (``roost --help`` stays fast);
rich is imported by the commands that print.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Markup the daemon never hands out (it refuses DTDs), but a payload read from a server
# could hold: such XML is shown as it is, never given to a parser.
_UNSAFE_XML = re.compile(r"<!(DOCTYPE|ENTITY)", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")


def service_argument(service: str) -> str:
    """The bus's ``service`` for a SERVICE argument: ``-`` (or ``""``) is the account's
    own PEP service, which the API names ``""``."""
    return "" if service in ("", "-") else service


def parsed_of(item: dict[str, Any]) -> dict[str, Any] | None:
    """An item's parsed data as a dictionary (None when it has none or it is not JSON)."""
    text = item.get("parsed")
    if not isinstance(text, str) or not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def json_item(item: dict[str, Any]) -> dict[str, Any]:
    """An item record for ``--json``: the bus's keys, ``parsed`` decoded (null when the
    item has no parsed data), ``xml`` null and ``size`` set when it was too large to send,
    and ``omitted`` always there."""
    record = dict(item)
    record["publisher"] = item.get("publisher", "")
    record["xml"] = item.get("xml")
    record["parsed"] = parsed_of(item)
    record["omitted"] = bool(item.get("omitted", False))
    return record


def _strip_blank_text(node: Any) -> None:
    for child in list(node.childNodes):
        if child.nodeType == child.TEXT_NODE and not (child.data or "").strip():
            node.removeChild(child)
        elif child.hasChildNodes():
            _strip_blank_text(child)


def pretty_xml(xml: str) -> str:
    """``xml`` indented two spaces a level (namespaces as written); as given when it
    cannot be parsed safely."""
    if _UNSAFE_XML.search(xml):
        return xml
    from xml.dom import minidom

    try:
        document = minidom.parseString(xml)
    except Exception:  # expat raises ExpatError; anything odd: show it as it came
        return xml
    root: Any = document.documentElement
    if root is None:
        return xml
    _strip_blank_text(root)
    return str(root.toprettyxml(indent="  ")).rstrip()


def xml_text(xml: str) -> str:
    """The text content of an item's payload (no tag or attribute names), its blank runs
    folded: what a reader sees of an item nothing parsed."""
    from xml.etree import ElementTree as ET

    text = ""
    if not _UNSAFE_XML.search(xml):
        try:
            text = " ".join(ET.fromstring(xml).itertext())
        except ET.ParseError:
            text = ""
    if not text:
        text = _TAG.sub(" ", xml)
    return " ".join(text.split())


def markup_text(markup: str) -> str:
    """HTML or XHTML as plain text."""
    from roost.cli.html_text import TextExtractor

    extractor = TextExtractor()
    extractor.feed(markup)
    extractor.close()
    return extractor.text()


def as_text(value: Any, kind: Any) -> str:
    """A parsed Atom text construct (``title``, ``summary``, ``content``) as plain text."""
    if not isinstance(value, str):
        return ""
    if kind in ("html", "xhtml") or (isinstance(kind, str) and "html" in kind):
        return markup_text(value)
    return value.strip()


def local_time(timestamp: Any) -> str:
    """An epoch timestamp as local date and time (``""`` for none)."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not timestamp:
        return ""
    from datetime import datetime

    try:
        return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M %Z")
    except (OverflowError, OSError, ValueError):
        return ""


def summary(item: dict[str, Any], width: int = 60) -> str:
    """One line saying what an item holds: its title, else its text."""
    parsed = parsed_of(item)
    text = ""
    if parsed is not None:
        for key in ("title", "summary", "content"):
            text = as_text(parsed.get(key), parsed.get(f"{key}_type"))
            if text:
                break
        if not text:
            text = json.dumps(parsed, ensure_ascii=False)
    elif isinstance(item.get("xml"), str):
        text = xml_text(item["xml"])
    elif item.get("omitted"):
        text = f"({item.get('size', '?')} bytes, too large for the bus)"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
