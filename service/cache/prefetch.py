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
from typing import Protocol

log = logging.getLogger(__name__)

# Prefetch syncs run at once, at most; and none starts while this many syncs run already.
PREFETCH_CONCURRENCY = 4
BUSY_SYNCS = 6


class SyncRunner(Protocol):
    """What the prefetcher needs of the sync scheduler."""

    async def sync_and_wait(self, node_id: int) -> None:
        """Start the node's sync (unless one runs) and return when it has ended."""
        ...

    async def wait_for_fewer(self, count: int) -> None:
        """Return once fewer than ``count`` syncs run."""
        ...


class Prefetcher:
    """A queue of nodes to synchronise in the background, bounded per profile.

    Args:
        syncs: runs the syncs (and says when few enough run for a prefetch to start).
        enabled: prefetch at all (``[cache] prefetch``).
        max_nodes: the most nodes prefetched per profile in one run of the daemon.
    """

    def __init__(
        self,
        syncs: SyncRunner,
        *,
        enabled: bool = True,
        max_nodes: int = 200,
        concurrency: int = PREFETCH_CONCURRENCY,
    ) -> None:
        self._syncs = syncs
        self.enabled = enabled
        self._max_nodes = max_nodes
        self._concurrency = concurrency
        self._queue: deque[int] = deque()
        self._offered: dict[str, set[int]] = {}
        self._workers: set[asyncio.Task[None]] = set()
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

    def forget_profile(self, profile: str) -> None:
        """A deleted profile's budget goes with it (its nodes are gone)."""
        self._offered.pop(profile, None)
        self._warned.discard(profile)

    async def _work(self) -> None:
        while self._queue:
            # Behind the syncs a frontend (or a connection) started: wait for a lull.
            await self._syncs.wait_for_fewer(BUSY_SYNCS)
            if not self._queue:
                break
            node_id = self._queue.popleft()
            try:
                await self._syncs.sync_and_wait(node_id)
            except Exception:
                log.exception("prefetching node %d failed", node_id)

    async def close(self) -> None:
        """Stop prefetching."""
        self._queue.clear()
        for task in self._workers:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._workers, return_exceptions=True)
