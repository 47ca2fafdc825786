"""The items of one large pubsub answer, taken out of the stanza while it is parsed.

A server without RSM on pubsub (Prosody 0.12) answers a whole node in one stanza: a
100,000-item node is one stanza of about 45 MB. slixmpp builds a stanza's whole element
tree before it hands the stanza on, about 5 KB of objects an item, so the daemon would
hold half a gigabyte for it. Reading such a node by ids in batches instead is no way out
on that server: a read by id loads the node's whole store once per id
(docs/performance.md, "Large nodes without RSM").

So the answer is read as it arrives: :class:`StreamingItemsParser` watches the stream's
parsing events and, for an iq result registered beforehand (:class:`ItemStream`), takes
each ``<item/>`` of its ``<pubsub><items/></pubsub>`` out of the tree as soon as it is
complete and hands it to the stream. A node's item listing (disco#items, one
``<item/>`` an item of the node) is as long as the node and is read the same way. The
stanza itself reaches slixmpp as usual, with an empty ``<items/>``, and answers the
request. The reader takes the items in batches; while it is behind by more than
``high_water`` items, the connection stops reading (``pause_reading``), so that what
the daemon holds of the answer stays bounded whatever the node's size: the rest waits
in the kernel's socket buffers and on the server.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from roost.service.xmpp.stream_parser import RestrictedStreamParser

NS_CLIENT = "jabber:client"
NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
_IQ = f"{{{NS_CLIENT}}}iq"

#: The elements taken out of an answer, by their path under the ``<iq/>``: a pubsub
#: items answer's items, and a disco#items listing's entries.
PUBSUB_ITEMS_PATH = (
    f"{{{NS_PUBSUB}}}pubsub",
    f"{{{NS_PUBSUB}}}items",
    f"{{{NS_PUBSUB}}}item",
)
DISCO_ITEMS_PATH = (f"{{{NS_DISCO_ITEMS}}}query", f"{{{NS_DISCO_ITEMS}}}item")
# The parser's depth of an iq: the stream's root is 1.
_IQ_DEPTH = 2

#: Items held before the connection stops reading, and the level it reads again at.
HIGH_WATER = 2000
LOW_WATER = 500


class ItemStream:
    """The items of one iq result, as the parser takes them out of it, in order.

    Made by the reader before the request leaves, registered with
    :meth:`StreamingItemsParser.expect` under the request's id; :meth:`take` is the
    parser's side, :meth:`batch` the reader's.

    Args:
        pause, resume: stop and restart reading the connection (the transport's
            ``pause_reading`` and ``resume_reading``).
        path: the tags from the iq's child down to the elements taken
            (:data:`PUBSUB_ITEMS_PATH`, :data:`DISCO_ITEMS_PATH`).
        high_water, low_water: the items held when reading stops, and when it starts
            again.
    """

    def __init__(
        self,
        pause: Callable[[], None],
        resume: Callable[[], None],
        path: tuple[str, ...] = PUBSUB_ITEMS_PATH,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
    ) -> None:
        #: The tags from the iq's child down to the elements taken.
        self.path = path
        self._pause = pause
        self._resume = resume
        self._high = high_water
        self._low = low_water
        self._held: deque[ET.Element] = deque()
        self._paused = False
        self._closed = False
        self._ended = False
        self._arrived = asyncio.Event()
        #: Items taken from the answer so far.
        self.received = 0

    @property
    def held(self) -> int:
        """Items taken from the answer and not yet given to the reader."""
        return len(self._held)

    def take(self, item: ET.Element) -> None:
        """The parser's side: one more item, in the answer's order."""
        if self._closed:
            return
        self._held.append(item)
        self.received += 1
        self._arrived.set()
        if not self._paused and len(self._held) >= self._high:
            self._paused = True
            self._pause()

    def batch(self, size: int) -> list[ET.Element]:
        """Up to ``size`` of the items held, oldest first (what the answer had first)."""
        count = min(size, len(self._held))
        taken = [self._held.popleft() for _ in range(count)]
        if self._paused and len(self._held) <= self._low:
            self._paused = False
            self._resume()
        if not self._held:
            self._arrived.clear()
        return taken

    async def wait(self, size: int, timeout: float) -> bool:  # noqa: ASYNC109
        """Wait until ``size`` items are held, the answer has ended (:meth:`end`), or
        ``timeout`` seconds pass without an item; False for the last (the server went
        quiet)."""
        if self._paused and len(self._held) < size:
            # Paused above low water, the reader now wants more than is held: read on.
            self._paused = False
            self._resume()
        while len(self._held) < size and not self._ended:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except TimeoutError:
                return False
        return True

    def end(self) -> None:
        """The answer came, or failed: no item follows."""
        self._ended = True
        self._arrived.set()

    def close(self) -> None:
        """The reader is done: items still coming are dropped, the connection reads
        again, and what was held is let go."""
        self._closed = True
        self._held.clear()
        if self._paused:
            self._paused = False
            self._resume()
        self._arrived.set()


class StreamingItemsParser(RestrictedStreamParser):
    """The stream's parser, handing the items of expected iq results to their
    :class:`ItemStream` as each item is parsed; every event still reaches slixmpp."""

    def __init__(self) -> None:
        super().__init__()
        self._streams: dict[str, ItemStream] = {}
        # The open elements under the stream's root, and the stream of the stanza being
        # parsed (None: not an expected answer).
        self._open: list[ET.Element] = []
        self._current: ItemStream | None = None
        self._depth = 0

    def expect(self, iq_id: str, stream: ItemStream) -> None:
        """Hand the items of the iq result with id ``iq_id`` to ``stream``."""
        self._streams[iq_id] = stream

    def forget(self, iq_id: str) -> None:
        """No longer expect the answer ``iq_id`` (it came, or its reader gave up)."""
        stream = self._streams.pop(iq_id, None)
        if stream is not None and stream is self._current:
            self._current = None

    def read_events(self) -> Iterator[tuple[Any, ...]]:
        """The parsing events, as :class:`RestrictedStreamParser` gives them."""
        for event in super().read_events():
            if self._streams or self._current is not None:
                self._watch(event[0], event[1])
            else:
                self._count(event[0])
            yield event

    def _count(self, kind: str) -> None:
        self._depth += 1 if kind == "start" else -1

    def _watch(self, kind: str, element: ET.Element) -> None:
        if kind == "start":
            self._depth += 1
            if self._depth == _IQ_DEPTH:
                self._current = None
                self._open = []
                if element.tag == _IQ and element.get("type") == "result":
                    self._current = self._streams.get(element.get("id", ""))
            if self._current is not None and self._depth >= _IQ_DEPTH:
                self._open.append(element)
            return
        depth = self._depth
        self._depth -= 1
        stream = self._current
        if stream is None:
            return
        self._open.pop()
        if depth == _IQ_DEPTH:
            self._current = None
            return
        path = stream.path
        # self._open is the iq, then the element's ancestors below it.
        if (
            depth == _IQ_DEPTH + len(path)
            and element.tag == path[-1]
            and all(self._open[n + 1].tag == tag for n, tag in enumerate(path[:-1]))
        ):
            self._open[-1].remove(element)
            stream.take(element)
