"""Giving memory back to the system after a large piece of work.

CPython frees its objects into glibc's malloc, which keeps the freed pages for reuse:
after a sync of 10,000 items the daemon's resident set stayed 35 MiB above what it was
before, for good. :class:`HeapTrimmer` runs a full garbage collection (the slixmpp
stanzas and parsed trees of a sync hold reference cycles) and then glibc's
``malloc_trim(0)``, which returns the free pages of every arena, once the work is over:
when no sync is running any more, :data:`QUIET_DELAY` after the last one ended (a sync of
many nodes ends one node at a time), and at most once per :data:`MIN_INTERVAL`.

A full collection walks every object made since start-up (up to about 90 ms of the loop
after a large sync), which is why it waits for the syncs to end: a frontend reading
while a sync runs would feel it. On a C library without ``malloc_trim`` (musl, macOS)
only the collection runs.

Between syncs nothing is trimmed: under a steady load of bus calls the free heap grows
too (16 to 24 MiB in an hour's soak), but as holes among blocks in use, in pages that
``malloc_trim`` cannot give back. A trim once a minute while no sync ran, tried in two
soaks, gave back nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import time
from collections.abc import Callable

from roost.service.events import Event, EventHub, SyncStateChanged
from roost.service.launch import glibc_function

log = logging.getLogger(__name__)

# A node's sync ended in one of these states: its pages, stanzas and rows are garbage.
_FINAL_STATES = frozenset({"completed", "error", "no_sync", "none"})
#: Seconds after the last sync ended before trimming.
QUIET_DELAY = 2.0
#: The least time between two trims (seconds).
MIN_INTERVAL = 10.0


class HeapTrimmer:
    """Collects garbage and returns free heap pages to the system after syncs end.

    Args:
        events: the hub whose :class:`SyncStateChanged` events say when a sync ended.
        quiet_delay: seconds to wait after the last sync ended.
        min_interval: the least time between two trims.
    """

    def __init__(
        self,
        events: EventHub,
        *,
        quiet_delay: float = QUIET_DELAY,
        min_interval: float = MIN_INTERVAL,
    ) -> None:
        self._events = events
        self._quiet_delay = quiet_delay
        self._min_interval = min_interval
        self._malloc_trim = glibc_function("malloc_trim", [ctypes.c_size_t])
        self._timer: asyncio.TimerHandle | None = None
        self._last = -float("inf")
        self._unsubscribe: Callable[[], None] | None = None
        # The nodes whose sync runs now (profile, service, node).
        self._syncing: set[tuple[str, str, str]] = set()
        #: Trims run so far.
        self.trims = 0

    def start(self) -> None:
        """Listen for the end of syncs."""
        self._unsubscribe = self._events.subscribe(self._on_event)

    def close(self) -> None:
        """Stop listening; a trim waiting to run is dropped."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_event(self, event: Event) -> None:
        if not isinstance(event, SyncStateChanged):
            return
        key = (event.profile, event.service, event.node)
        if event.state == "in_progress":
            self._syncing.add(key)
            if self._timer is not None:
                # Another sync began: the trim waits for it too.
                self._timer.cancel()
                self._timer = None
        elif event.state in _FINAL_STATES:
            self._syncing.discard(key)
            if not self._syncing:
                self.schedule()

    def schedule(self) -> None:
        """Trim once the loop has been quiet for the delay (a later call moves it on)."""
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        wait = max(self._quiet_delay, self._last + self._min_interval - time.monotonic())
        self._timer = loop.call_later(wait, self.trim)

    def trim(self) -> None:
        """Collect garbage and give the free heap pages back, now."""
        self._timer = None
        began = time.perf_counter()
        collected = gc.collect()
        released = self._malloc_trim(0) if self._malloc_trim is not None else 0
        self._last = time.monotonic()
        self.trims += 1
        log.debug(
            "heap trimmed in %.1f ms (%d objects collected, pages %sreleased)",
            (time.perf_counter() - began) * 1000,
            collected,
            "" if released else "not ",
        )
