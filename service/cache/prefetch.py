"""Prefetch: synchronise what the person will read before they ask.

At login the server sends, for each contact, the newest item of each PEP node the client
asked notifications for (``+notify``). The cache learns contacts' nodes from these; those
whose analyser says ``prefetch`` are synchronised in the background, so that the first
read of a contact's blog is answered from the cache. Prefetching must not compete with
what a frontend asked for: a few nodes at a time, and only while few other syncs run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# Prefetch syncs run at once, at most; and none starts while this many syncs run already.
PREFETCH_CONCURRENCY = 4
BUSY_SYNCS = 6


class Prefetcher:
    """A queue of nodes to synchronise in the background, bounded per profile.

    Args:
        run_sync: starts the sync of a node (by id) and returns once it has ended.
        running: how many syncs run now (prefetch ones included).
        enabled: prefetch at all (``[cache] prefetch``).
        max_nodes: the most nodes prefetched per profile in one run of the daemon.
    """

    def __init__(
        self,
        run_sync: Callable[[int], Awaitable[None]],
        running: Callable[[], int],
        *,
        enabled: bool = True,
        max_nodes: int = 200,
        concurrency: int = PREFETCH_CONCURRENCY,
    ) -> None:
        self._run_sync = run_sync
        self._running = running
        self.enabled = enabled
        self._max_nodes = max_nodes
        self._concurrency = concurrency
        self._queue: deque[int] = deque()
        self._offered: dict[str, set[int]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._warned: set[str] = set()

    def allows(self, profile: str) -> bool:
        """Whether a node of ``profile`` may still be prefetched."""
        if not self.enabled:
            return False
        if len(self._offered.get(profile, ())) < self._max_nodes:
            return True
        if profile not in self._warned:
            self._warned.add(profile)
            log.info(
                "%s: %d nodes prefetched, the most allowed; others wait to be read",
                profile,
                self._max_nodes,
            )
        return False

    def offer(self, profile: str, node_id: int) -> bool:
        """Queue the node for a background sync; False when the budget is spent."""
        offered = self._offered.setdefault(profile, set())
        if node_id in offered:
            return True
        if not self.allows(profile):
            return False
        offered.add(node_id)
        self._queue.append(node_id)
        while len(self._workers) < self._concurrency and len(self._workers) < len(self._queue):
            task = asyncio.get_running_loop().create_task(self._work(), name="prefetch")
            self._workers.add(task)
            task.add_done_callback(self._workers.discard)
        return True

    def sync_ended(self) -> None:
        """A sync ended: a prefetch waiting for a quieter moment may go."""
        self._idle.set()

    def forget_profile(self, profile: str) -> None:
        """A deleted profile's budget goes with it (its nodes are gone)."""
        self._offered.pop(profile, None)
        self._warned.discard(profile)

    async def _work(self) -> None:
        while self._queue:
            # Behind the syncs a frontend (or a connection) started: wait for a lull.
            while self._running() >= BUSY_SYNCS:
                self._idle.clear()
                await self._idle.wait()
            node_id = self._queue.popleft()
            try:
                await self._run_sync(node_id)
            except Exception:
                log.exception("prefetching node %d failed", node_id)

    async def close(self) -> None:
        """Stop prefetching."""
        self._queue.clear()
        for task in self._workers:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._workers, return_exceptions=True)
