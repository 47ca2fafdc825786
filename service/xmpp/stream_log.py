"""Keeping secrets out of slixmpp's stream log.

slixmpp logs every piece of the stream it sends or receives (``SEND: …``, ``RECV: …``)
at debug level, and a few of them again at other levels (a parse error quotes the data
read, a stanza that cannot be built is quoted with its error). Authentication goes
through that stream too: with SASL PLAIN the ``<auth/>`` element holds the password in
base64, and SCRAM's ``<auth/>``, ``<challenge/>``, ``<response/>`` and ``<success/>``
carry the nonces, salt, iteration count and proofs an attacker could test passwords
against offline. None of it may reach a log, whatever the level: debug logs get pasted
into bug reports.

:func:`install` puts a :class:`StreamLogFilter` on slixmpp's stream logger. It replaces
the content of those SASL elements (and of SASL 2's ``<initial-response/>`` and
``<additional-data/>``) with ``[redacted: N bytes]``; their names and attributes (the
mechanism) stay, so a log still shows how a login went. It also keeps a stanza nested
too deeply for slixmpp's recursive serialiser from turning a debug log line into a
logging error: such a stanza is shown by its name and depth only. And it bounds what one
record quotes to :data:`MAX_QUOTED_CHARS`: a node's whole answer is one stanza of up to
tens of megabytes, which at debug level would be written to the log whole, taking as
long as the read itself and splitting into thousands of journal entries (journald cuts
lines at 48 KiB). The start of it shows, then how much was left out.

Records are changed in place, lazily where a stanza is involved: a stanza is serialised
only when a handler formats the record, as before.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from typing import Any

from slixmpp.xmlstream import ElementBase

# The loggers that quote stream data: SEND/RECV and parse errors.
STREAM_LOGGERS = ("slixmpp.xmlstream.xmlstream",)

SASL_NAMESPACES = ("urn:ietf:params:xml:ns:xmpp-sasl", "urn:xmpp:sasl:2")
# A record that names neither namespace quotes no SASL element: an element outside the
# stream's default namespace declares its own, and a SASL 2 child sits in its parent.
_MARKERS = ("xmpp-sasl", "urn:xmpp:sasl:")
_BYTE_MARKERS = tuple(marker.encode() for marker in _MARKERS)

# The start tag of an element whose content is secret (with or without a prefix; not an
# empty element), then its content up to the next tag or the end of what was logged: a
# read cut in the middle of an element is redacted too. Content redacted already is left
# as it is.
_SECRET = re.compile(
    r"(<(?:[\w.-]+:)?(?:auth|response|challenge|success|initial-response|additional-data)"
    r"(?:\s[^>]*)?(?<!/)>)(?!\[redacted: )([^<]+)"
)


# Room for a stanza of a few dozen items; a whole node's answer is left out past that.
MAX_QUOTED_CHARS = 32 * 1024


def _redaction(match: re.Match[str]) -> str:
    size = len(match.group(2).encode("utf-8", "replace"))
    return f"{match.group(1)}[redacted: {size} bytes]"


def redact(text: str) -> str:
    """``text`` with the content of any SASL element it quotes replaced by its size."""
    if not any(marker in text for marker in _MARKERS):
        return text
    return _SECRET.sub(_redaction, text)


def bounded(text: str) -> str:
    """``text`` cut to :data:`MAX_QUOTED_CHARS`, saying how much was left out."""
    if len(text) <= MAX_QUOTED_CHARS:
        return text
    left_out = len(text) - MAX_QUOTED_CHARS
    return f"{text[:MAX_QUOTED_CHARS]}… [{left_out:,} more characters not logged]"


def shown(text: str) -> str:
    """``text`` as a log record may quote it: redacted (whole, so that no cut can split a
    secret from its element), then bounded."""
    return bounded(redact(text))


def _element_of(value: Any) -> ET.Element | None:
    if isinstance(value, ElementBase):
        element: ET.Element = value.xml
        return element
    if isinstance(value, ET.Element):
        return value
    return None


def _depth(element: ET.Element) -> int:
    deepest = 0
    stack = [(element, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in node)
    return deepest


class _Shown:
    """A stanza or element in a log record's arguments, redacted when it is formatted."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def _render(self, render: Any) -> str:
        try:
            text: str = render(self._value)
        except RecursionError:
            element = _element_of(self._value)
            tag = element.tag if element is not None else type(self._value).__name__
            depth = _depth(element) if element is not None else 0
            return f"[{tag}: {depth} elements deep, not shown]"
        return shown(text)

    def __str__(self) -> str:
        return self._render(str)

    def __repr__(self) -> str:
        return self._render(repr)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, bytes | bytearray):
        if any(marker in value for marker in _BYTE_MARKERS) or len(value) > MAX_QUOTED_CHARS:
            # Quoted as %r (bytes) or %s (which also shows the repr): the repr it is.
            return _Quoted(shown(repr(value)))
        return value
    if _element_of(value) is not None:
        return _Shown(value)
    if isinstance(value, tuple):
        return tuple(_scrub(item) for item in value)
    return value


class _Quoted(str):
    """Text shown as it is by both ``%s`` and ``%r``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


class StreamLogFilter(logging.Filter):
    """Redacts SASL payloads, bounds what is quoted and guards deep stanzas in stream log
    records; drops none."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record``'s message and arguments in place; always keep it."""
        if isinstance(record.msg, str):
            record.msg = shown(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(_scrub(arg) for arg in args)
        elif args:
            # A single mapping argument (``log.debug("%(x)s", {...})``).
            record.args = {key: _scrub(value) for key, value in args.items()}
        return True


_FILTER = StreamLogFilter()


def install() -> None:
    """Put the filter on slixmpp's stream loggers (once; later calls do nothing)."""
    for name in STREAM_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
