"""The parser of the XML stream an XMPP server sends.

slixmpp parses the stream with a plain ``xml.etree.ElementTree.XMLPullParser``, and expat
expands the entities of a document type declaration's internal subset: one short
``<!DOCTYPE`` with nested entities (a "billion laughs") would have a hostile or broken
server make the daemon build gigabytes of text. RFC 6120 (section 11.1) forbids DTDs in
XMPP streams, so no honest server sends one and refusing it costs nothing. (Expat 2.4 and
later stop a bomb once it has expanded past 8 MiB and a hundred times its input: bounded,
but only with a recent enough expat, and still far more than a stream should cost.)

Why refusing ``<!DOCTYPE`` is enough:

* Entities can only be declared in a DTD. Without one, expat knows the five predefined
  entities and character references only, and stops at any other reference ("undefined
  entity"), which slixmpp already handles as a stream that is not well-formed. So
  ``<!ENTITY`` needs no check of its own.
* A DTD is only allowed in the prolog, before the root element: expat refuses one later
  as not well-formed. So only the data before ``<stream:stream>`` is searched, and a
  CDATA section in a stanza that happens to contain the marker cannot end a session.
* The search must see what expat sees. Expat picks its encoding from a byte order mark,
  from the first bytes (``<`` then a NUL reads as UTF-16, even when expat was told UTF-8)
  and from the XML declaration, so a stream in UTF-16 would hide ``<!DOCTYPE`` from a
  search of the bytes. XMPP streams are UTF-8 (RFC 6120, section 11.6): the prolog is
  decoded here, strictly, a NUL (never allowed in XML) is refused, and expat is given
  text, which makes it ignore the declared encoding for the rest of the stream.
* Comments and processing instructions are forbidden in streams too, but they expand
  nothing and reach no network; the tree builder drops them. Refusing them would mean
  telling them apart from CDATA and from the XML declaration, for no safety gained.
* External DTDs and entities are never fetched by ElementTree's parser; refusing the
  declaration settles those too.

The C parser is kept: defusedxml's parser is the pure-Python one and would slow every
stanza down, while a refused DOCTYPE leaves expat nothing dangerous to do.
"""

from __future__ import annotations

import codecs
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Buffer

    _PullParser = ET.XMLPullParser[ET.Element]
else:
    _PullParser = ET.XMLPullParser

DOCTYPE_MARKER = "<!DOCTYPE"
STREAMS_NS = "urn:ietf:params:xml:ns:xmpp-streams"


class RestrictedXmlError(ValueError):
    """The server's stream uses XML that XMPP forbids, and it is not parsed further.

    ``condition`` is the stream error (RFC 6120, section 4.9.3) to answer with:
    ``restricted-xml`` or ``unsupported-encoding``.
    """

    def __init__(self, message: str, condition: str = "restricted-xml") -> None:
        super().__init__(message)
        self.condition = condition


class RestrictedStreamParser(_PullParser):
    """An ``XMLPullParser`` for XMPP streams that refuses DTDs and bytes not in UTF-8.

    Use it as slixmpp uses its parser: ``feed`` the data as it arrives, then drain
    ``read_events``. Once it has refused a stream, every later ``feed`` raises again.
    """

    def __init__(self) -> None:
        # The events slixmpp reads: a stanza is an element ending at depth 1.
        super().__init__(("start", "end"))
        self._decoder: codecs.IncrementalDecoder | None = codecs.getincrementaldecoder("utf-8")(
            "strict"
        )
        # The end of the previous chunks, so that a marker split between two reads is
        # still found.
        self._tail = ""
        self._in_prolog = True
        self._refused: RestrictedXmlError | None = None
        #: The stream was found not well-formed: the error is among the events (or was
        #: read), and the parser reads nothing more of it.
        self.failed = False

    def feed(self, data: str | Buffer) -> None:
        """Parse the next piece of the stream, ``bytes`` (as slixmpp gives) or ``str``.

        Raises:
            RestrictedXmlError: the stream has a document type declaration, or is not
                UTF-8; nothing of this piece is parsed.
        """
        if self._refused is not None:
            raise RestrictedXmlError(str(self._refused), self._refused.condition)
        if self._decoder is None:
            self._parse(data)
            return
        if not self._in_prolog:
            # Past the prolog there is nothing left to search, and expat, having been
            # given text first, reads UTF-8 whatever the stream declared: the bytes can go
            # to it as they come, after any partial character the decoder kept.
            pending, _flags = self._decoder.getstate()
            self._decoder = None
            if pending:
                self._parse(pending)
            self._parse(data)
            return
        if isinstance(data, str):
            text = data
        else:
            try:
                text = self._decoder.decode(data)
            except UnicodeDecodeError as exc:
                self._refused = RestrictedXmlError(
                    "the server's XMPP stream is not UTF-8, the only encoding XMPP allows "
                    f"(RFC 6120, section 11.6): {exc.reason} at byte {exc.start} of a read; "
                    "check that the profile's host and port are those of an XMPP server",
                    condition="unsupported-encoding",
                )
                raise self._refused from None
        if text:
            self._check_prolog(text)
            self._parse(text)

    def _parse(self, data: str | Buffer) -> None:
        super().feed(data)
        # XMLPullParser keeps expat's error as the next event rather than raising it.
        queue = self._events_queue  # type: ignore[attr-defined]
        if queue and isinstance(queue[-1], SyntaxError):
            self.failed = True

    def read_events(self) -> Iterator[tuple[Any, ...]]:
        """The parsing events produced so far, as ``XMLPullParser.read_events``."""
        if not self._in_prolog:
            return super().read_events()
        return self._watch_prolog(super().read_events())

    def _watch_prolog(self, events: Iterator[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
        for event in events:
            # A DTD after the root element's start is not well-formed and expat refuses
            # it: from here on there is no prolog left to search.
            if event[0] == "start":
                self._in_prolog = False
            yield event

    def _check_prolog(self, text: str) -> None:
        if "\x00" in text:
            self._refused = RestrictedXmlError(
                "the server's XMPP stream is not UTF-8, the only encoding XMPP allows "
                "(RFC 6120, section 11.6): it has NUL characters, as UTF-16 would; check "
                "that the profile's host and port are those of an XMPP server",
                condition="unsupported-encoding",
            )
            raise self._refused
        window = self._tail + text
        if DOCTYPE_MARKER in window:
            self._refused = RestrictedXmlError(
                "the server sent a document type declaration (<!DOCTYPE) in its XMPP "
                "stream; XMPP forbids them (RFC 6120, section 11.1) and Roost refuses "
                "them, since their entities can make a parser expand a few bytes into "
                "gigabytes. The server is misconfigured or hostile: check the profile's "
                "host and port, or tell the server's administrator"
            )
            raise self._refused
        self._tail = window[-(len(DOCTYPE_MARKER) - 1) :]


def stream_error(condition: str) -> str:
    """The ``<stream:error/>`` and stream end that answer a refused stream."""
    return f"<stream:error><{condition} xmlns='{STREAMS_NS}'/></stream:error></stream:stream>"
