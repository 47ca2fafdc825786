"""Parsing XML that comes from outside (frontends, the network, the database) safely.

No DTD, no entity expansion, no external access, a size limit and a depth limit: a
payload is data, and an entity bomb or an external entity must fail cleanly, not hang or
read files; an element nested thousands deep must not reach code that walks a tree by
recursion (ElementTree's own serialiser and many a parser do) and fail there.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from roost.service.errors import InvalidArgument

# Well under what a pubsub service accepts (Prosody and ejabberd default to 64-256 KiB
# stanzas), so a refusal here is clearer than the server's.
MAX_PAYLOAD_BYTES = 256 * 1024

# How deep elements may nest in a payload (the payload element itself is depth 1). Real
# payloads stay far from it (an Atom entry with XHTML content is about ten levels); it
# keeps any recursive walk over a payload well inside the interpreter's recursion limit.
MAX_XML_DEPTH = 256

# What XML 1.0 forbids in text and attributes, of what a D-Bus string can carry (no NUL,
# no surrogate): control characters but tab, newline and carriage return, and U+FFFE,
# U+FFFF. A server closes the stream on a stanza holding one, ending the profile's session.
_NOT_XML_CHAR = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def check_xml_text(text: str, what: str) -> str:
    """``text``, to be sent in a stanza as text or an attribute.

    Raises:
        InvalidArgument: ``text`` holds a character XML does not allow; ``what`` names it.
    """
    bad = _NOT_XML_CHAR.search(text)
    if bad is not None:
        raise InvalidArgument(
            f"{what} holds the character U+{ord(bad.group()):04X}, which XML does not allow"
        )
    return text


def xml_depth(element: ET.Element, stop_after: int | None = None) -> int:
    """How deep elements nest in ``element`` (1 when it has no children).

    Counted with a loop, not a recursion. With ``stop_after``, counting stops as soon as
    the depth passes it (the result is then ``stop_after + 1``).
    """
    deepest = 0
    stack = [(element, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > deepest:
            deepest = depth
            if stop_after is not None and depth > stop_after:
                return depth
        if len(node):
            for child in node:
                push((child, depth + 1))
    return deepest


def nests_deeper(text: str, element: ET.Element, max_depth: int) -> bool:
    """Whether ``element``, parsed from ``text``, nests more than ``max_depth`` deep.

    Cheap for the usual case: text with no more ``<`` than ``max_depth`` has no more
    elements than that, so its tree is not walked at all.
    """
    if text.count("<") <= max_depth:
        return False
    return xml_depth(element, max_depth) > max_depth


def parse_xml(
    text: str,
    *,
    what: str = "payload",
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_depth: int | None = MAX_XML_DEPTH,
) -> ET.Element:
    """Parse one XML element from ``text``.

    ``max_depth`` None: no depth limit.

    Raises:
        InvalidArgument: the text is too large, nests too deep, is not well-formed, or has
            a DTD or entities.
    """
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise InvalidArgument(f"the {what} is {size} bytes; the limit is {max_bytes} bytes")
    try:
        element: ET.Element = fromstring(
            text, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except DefusedXmlException as exc:
        raise InvalidArgument(
            f"the {what} must not contain a DTD or entity declarations ({exc})"
        ) from None
    except ET.ParseError as exc:
        raise InvalidArgument(f"the {what} is not well-formed XML: {exc}") from None
    if max_depth is not None and nests_deeper(text, element, max_depth):
        raise InvalidArgument(
            f"the {what}'s elements nest more than {max_depth} levels deep; "
            f"the limit is {max_depth} levels"
        )
    return element
