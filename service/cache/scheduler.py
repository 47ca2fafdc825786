"""The sync scheduler: when each node is synchronised, and what happens around a sync.

One sync per node at a time, started now or after a delay (a retry with backoff after a
failure, a periodic refresh). While a node syncs it is not current; notifications that
arrive meanwhile are buffered and applied, in order, once the sync has stored the
server's items. The sync procedure itself is :class:`NodeSynchroniser`'s.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from roost.service.cache.analysers import AnalyserRegistry
from roost.service.cache.applier import EventApplier
from roost.service.cache.currency import NodeCurrency, NodeKey, node_key
from roost.service.cache.offline import COPY_INTACT, is_complete
from roost.service.cache.source import SyncSource
from roost.service.cache.sync import NodeSynchroniser, SyncResult
from roost.service.events import EventHub, ItemsEvent, SyncProgress, SyncStateChanged
from roost.storage import Database, NodeRecord

log = logging.getLogger(__name__)

# Waits before retrying a node whose sync failed, by attempt; the last one repeats.
RETRY_DELAYS = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)


class SyncScheduler:
    """Runs, times and retries the nodes' syncs.

    Args:
        db: the database.
        source: the server side (whether a profile is connected).
        events: where sync states and progress are announced.
        registry: the analysers (a node's analyser gives its parser and refresh interval).
        synchroniser: the sync procedure.
        currency: what is current; a completed sync makes its node current.
        applier: applies the notifications buffered during a sync.
        kept_by_subscription: called with a node's key when a sync found a subscription
            keeping it current (its events are to be heard from now on).
    """

    def __init__(
        self,
        db: Database,
        source: SyncSource,
        events: EventHub,
        registry: AnalyserRegistry,
        synchroniser: NodeSynchroniser,
        currency: NodeCurrency,
        applier: EventApplier,
        kept_by_subscription: Callable[[NodeKey], None],
    ) -> None:
        self._db = db
        self._source = source
        self._events = events
        self._registry = registry
        self._sync = synchroniser
        self._currency = currency
        self._applier = applier
        self._kept_by_subscription = kept_by_subscription
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # When each node's last sync started (monotonic clock).
        self._started: dict[int, float] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._buffered: dict[int, list[ItemsEvent]] = {}
        # Nodes being synchronised, by key: the sync may have just subscribed to them.
        self._syncing: dict[int, NodeKey] = {}
        self._syncing_keys: set[NodeKey] = set()
        # Nodes to synchronise again as soon as their running sync ends.
        self._again: set[int] = set()
        self._ended = asyncio.Event()

    # -- questions ------------------------------------------------------------------------

    def is_syncing(self, node_id: int) -> bool:
        """Whether the node's sync runs now."""
        return node_id in self._tasks

    def started_since(self, node_id: int, moment: float) -> bool:
        """Whether a sync of the node started at or after ``moment`` (``time.monotonic``)."""
        return self._started.get(node_id, -1.0) >= moment

    def is_syncing_key(self, key: NodeKey) -> bool:
        """Whether the node named by ``key`` is being synchronised now."""
        return key in self._syncing_keys

    @property
    def running(self) -> int:
        """How many syncs run now."""
        return len(self._tasks)

    async def wait_for_fewer(self, count: int) -> None:
        """Return once fewer than ``count`` syncs run."""
        while len(self._tasks) >= count:
            self._ended.clear()
            await self._ended.wait()

    # -- starting syncs -------------------------------------------------------------------

    def schedule(self, node_id: int, delay: float = 0.0) -> None:
        """Start the node's sync after ``delay`` seconds, unless one runs already."""
        if node_id in self._tasks:
            return
        self._later(node_id, delay)

    def resync(self, record: NodeRecord) -> None:
        """Stop serving the node and synchronise it again now (or right after the sync
        running now)."""
        self._currency.drop(node_key(record))
        self._later(record.id, 0.0)

    async def sync_and_wait(self, node_id: int) -> None:
        """Start the node's sync (unless one runs) and return when it has ended."""
        self.schedule(node_id)
        task = self._tasks.get(node_id)
        if task is not None:
            # wait(), not await: the caller being cancelled must not cancel the sync
            # itself (close() does that).
            await asyncio.wait({task})

    def buffer(self, node_id: int, event: ItemsEvent) -> None:
        """Keep a notification for a node being synchronised, to apply after the sync."""
        self._buffered.setdefault(node_id, []).append(event)

    def _later(self, node_id: int, delay: float) -> None:
        """Plan the node's next sync in ``delay`` seconds, replacing any plan.

        Also called by a running sync for its own retry or refresh; a plan that falls
        due while the node's sync still runs starts right after that sync ends.
        """
        timer = self._timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        if delay <= 0:
            self._start(node_id)
        else:
            loop = asyncio.get_running_loop()
            self._timers[node_id] = loop.call_later(delay, self._start, node_id)

    def _start(self, node_id: int) -> None:
        self._timers.pop(node_id, None)
        if node_id in self._tasks:
            self._again.add(node_id)
            return
        task = asyncio.create_task(self._run(node_id), name=f"sync node {node_id}")
        self._tasks[node_id] = task
        self._started[node_id] = time.monotonic()
        task.add_done_callback(lambda _t: self._ended_sync(node_id))

    def _ended_sync(self, node_id: int) -> None:
        self._tasks.pop(node_id, None)
        key = self._syncing.pop(node_id, None)
        if key is not None:
            self._syncing_keys.discard(key)
        self._ended.set()
        if node_id in self._again:
            self._again.discard(node_id)
            self._start(node_id)

    # -- stopping -------------------------------------------------------------------------

    async def cancel(self, node_id: int) -> None:
        """Stop the node's sync, if one runs, and its planned ones."""
        timer = self._timers.pop(node_id, None)
        if timer is not None:
            timer.cancel()
        self._again.discard(node_id)
        task = self._tasks.get(node_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def cancel_all(self) -> None:
        """Stop every sync and timer."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._again.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._buffered.clear()

    # -- one sync -------------------------------------------------------------------------

    async def _run(self, node_id: int) -> None:
        record = await self._db.nodes.get_node_by_id(node_id)
        where = f"{record.service}/{record.name}"
        if not self._source.is_connected(record.profile):
            return
        analyser = self._registry.get(record.analyser) if record.analyser else None
        refresh = analyser.refresh_interval if analyser else None
        self._currency.drop(node_key(record))
        self._buffered[node_id] = []
        self._syncing[node_id] = node_key(record)
        self._syncing_keys.add(node_key(record))
        # A complete copy stays one (for offline reads) if this sync fails before writing.
        was_complete = is_complete(record)

        def progress(done: int, total: int) -> None:
            self._events.publish(
                SyncProgress(record.profile, record.service, record.name, done, total)
            )

        started = time.monotonic()
        try:
            record = await self.set_state(record, "in_progress", reason="")
            result = await self._sync.run(
                record, analyser, progress, allow_without_events=bool(refresh)
            )
            if not result.currency.current and not refresh:
                self._buffered.pop(node_id, None)
                await self.set_state(record, "no_sync", reason=result.currency.reason)
                log.info("%s: not cached: %s", where, result.currency.reason)
                return
            if result.currency.via == "subscription":
                self._kept_by_subscription(node_key(record))
            buffered = self._buffered.pop(node_id, [])
            if buffered:
                # The sync wrote what it learnt into the node's extra (the server's item
                # limit among it): replay with that, or a replayed publication would not
                # drop what the server dropped.
                record = await self._db.nodes.get_node_by_id(node_id)
            for event in buffered:
                if await self._applier.apply(record, event):
                    # The copy cannot follow: not served; synchronised again right after.
                    await self.set_state(record, "none", reason="resync pending")
                    self._later(node_id, 0.0)
                    return
            record = await self._complete(record, result)
            log.info(
                "%s: synchronised in %.2f s (%s: %d fetched, %d removed, %d on the server)",
                where,
                time.monotonic() - started,
                "incremental" if result.incremental else "full",
                result.fetched,
                result.removed,
                result.total,
            )
            if not result.currency.current and refresh:
                self._later(node_id, refresh)
        except asyncio.CancelledError:
            self._buffered.pop(node_id, None)
            # Not shielded: a shielded write would go on after close() returned and the
            # database was closed under it. Cancellation is delivered once, so this runs.
            await self.set_state(record, "none", reason="sync interrupted")
            raise
        except Exception as exc:
            self._buffered.pop(node_id, None)
            attempts = int(record.extra.get("attempts", 0)) + 1
            delay = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
            delay *= random.uniform(0.9, 1.1)  # spread retries of many nodes
            log.warning("%s: sync failed (%s); retry %d in %.0f s", where, exc, attempts, delay)
            intact = was_complete and not self._sync.touched(node_id)
            try:
                await self.set_state(
                    record,
                    "error",
                    reason=str(exc) or type(exc).__name__,
                    attempts=attempts,
                    **{COPY_INTACT: intact},
                )
            except Exception as again:
                # The database that failed the sync (a lock held too long) may fail this
                # too: the retry is planned and the failure announced all the same.
                log.warning("%s: the failed sync cannot be recorded (%s)", where, again)
                self._events.publish(
                    SyncStateChanged(record.profile, record.service, record.name, "error")
                )
            if self._source.is_connected(record.profile):
                self._later(node_id, delay)

    async def _complete(self, record: NodeRecord, result: SyncResult) -> NodeRecord:
        record = await self.set_state(
            record,
            "completed",
            reason="" if result.currency.current else result.currency.reason,
            attempts=0,
            synced_once=True,
            synced_at=time.time(),
            truncated=result.truncated,
            total=result.total,
        )
        self._currency.serve(record)
        return record

    async def set_state(self, record: NodeRecord, state: str, **extra: Any) -> NodeRecord:
        """Store the node's sync state (and ``extra``) and announce it."""
        updated = await self._db.nodes.set_sync_state(record.id, state, extra=extra)
        self._events.publish(SyncStateChanged(record.profile, record.service, record.name, state))
        return updated
