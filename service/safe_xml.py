"""Parsing XML that comes from outside (frontends, the network, the database) safely.

No DTD, no entity expansion, no external access, and a size limit: a payload is data, and
an entity bomb or an external entity must fail cleanly, not hang or read files.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from roost.service.errors import InvalidArgument

# Well under what a pubsub service accepts (Prosody and ejabberd default to 64-256 KiB
# stanzas), so a refusal here is clearer than the server's.
MAX_PAYLOAD_BYTES = 256 * 1024


def parse_xml(
    text: str, *, what: str = "payload", max_bytes: int = MAX_PAYLOAD_BYTES
) -> ET.Element:
    """Parse one XML element from ``text``.

    Raises:
        InvalidArgument: the text is too large, not well-formed, or has a DTD or entities.
    """
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise InvalidArgument(f"the {what} is {size} bytes; the limit is {max_bytes} bytes")
    try:
        return fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise InvalidArgument(
            f"the {what} must not contain a DTD or entity declarations ({exc})"
        ) from None
    except ET.ParseError as exc:
        raise InvalidArgument(f"the {what} is not well-formed XML: {exc}") from None
