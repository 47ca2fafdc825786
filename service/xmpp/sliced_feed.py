"""The server's data parsed a slice at a time, with turns of the event loop between.

asyncio hands a protocol up to 256 KiB a read, and a server sends a page of pubsub items
as fast as the network takes it. Parsing that much at once (expat building the elements,
then slixmpp and the item stream reading every parsing event) held the event loop's
thread 10-16 ms on an idle machine and several times that while other threads wanted the
CPU too, and every D-Bus call that arrived meanwhile waited for all of it. So a large
read is parsed :data:`PARSE_SLICE` bytes at a time, each slice in a turn of the event loop
of its own. Reads arriving meanwhile wait behind the slices, so the stream's order is
kept, and past :data:`HOLD_ABOVE` bytes waiting the connection stops reading until the
slices have caught up.

A read no larger than a slice, with nothing left waiting, is parsed at once as before:
the stanzas of an ordinary session are never delayed.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

#: Bytes of the stream parsed in one turn of the event loop: about 50 pubsub items of a
#: short comment, 1-3 ms of the loop's thread.
PARSE_SLICE = 16 * 1024
#: Bytes waiting to be parsed above which the connection stops reading, and at or below
#: which it reads again: the connection goes on reading while a few reads wait (the
#: server's data keeps flowing), and what waits stays bounded however fast it comes.
HOLD_ABOVE = 1024 * 1024
READ_AGAIN_AT = HOLD_ABOVE // 4


class SlicedFeed:
    """Feeds the data a connection receives to ``parse`` in slices, one a loop turn.

    Args:
        parse: parses the next piece of the stream; must not raise (it ends the
            connection itself on a stream it cannot read, and :meth:`clear` then).
        hold, release: stop and restart reading the connection, called in pairs while
            more than ``hold_above`` bytes wait.
        slice_size: bytes parsed in one turn.
        hold_above, read_again_at: bytes waiting when reading stops, and when it starts
            again.
    """

    def __init__(
        self,
        parse: Callable[[bytes], None],
        hold: Callable[[], None],
        release: Callable[[], None],
        slice_size: int = PARSE_SLICE,
        hold_above: int = HOLD_ABOVE,
        read_again_at: int = READ_AGAIN_AT,
    ) -> None:
        self._parse = parse
        self._hold = hold
        self._release = release
        self._slice = slice_size
        self._waiting: deque[bytes] = deque()
        self._hold_above = hold_above
        self._read_again_at = read_again_at
        self._waiting_bytes = 0
        # How much of the first waiting read has been parsed already.
        self._offset = 0
        self._turn: asyncio.Handle | None = None
        self._holding = False

    @property
    def waiting(self) -> int:
        """Bytes received and not yet parsed."""
        return self._waiting_bytes

    def receive(self, data: bytes) -> None:
        """A read from the connection: parse it, its first slice now."""
        if not data:
            return
        if not self._waiting and len(data) <= self._slice:
            self._parse(data)
            return
        self._waiting.append(data)
        self._waiting_bytes += len(data)
        if self._turn is None:
            self._parse_next()
        elif not self._holding and self._waiting_bytes > self._hold_above:
            self._holding = True
            self._hold()

    def flush(self) -> None:
        """Parse everything waiting now (the connection is ending: what the server sent
        last, its stream error or end included, is still read)."""
        self._cancel_turn()
        while self._waiting:
            self._parse(self._take())
        self._let_go()

    def clear(self) -> None:
        """Drop what waits unparsed (the stream was refused, or a new one starts)."""
        self._cancel_turn()
        self._waiting.clear()
        self._waiting_bytes = 0
        self._offset = 0
        self._let_go()

    def _parse_next(self) -> None:
        self._turn = None
        self._parse(self._take())
        if not self._waiting:
            # Parsed to the end, or ``parse`` cleared the rest away.
            self._let_go()
            return
        if not self._holding and self._waiting_bytes > self._hold_above:
            self._holding = True
            self._hold()
        elif self._holding and self._waiting_bytes <= self._read_again_at:
            self._let_go()
        self._turn = asyncio.get_running_loop().call_soon(self._parse_next)

    def _take(self) -> bytes:
        data = self._waiting[0]
        start = self._offset
        end = start + self._slice
        if end >= len(data):
            self._waiting.popleft()
            self._offset = 0
            self._waiting_bytes -= len(data) - start
            return data[start:] if start else data
        self._offset = end
        self._waiting_bytes -= self._slice
        return data[start:end]

    def _cancel_turn(self) -> None:
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None

    def _let_go(self) -> None:
        if self._holding:
            self._holding = False
            self._release()
