"""Checking a node kept current by events against the server's own listing.

Events say what was published, not what the server dropped: a server trims a node to its
``pubsub#max_items`` on publish and tells nobody, and it shows that limit to the node's
owner only. A lying or broken server may also announce items it does not hold. So, a
moment after a burst of publications has been applied to a node whose limit Roost does not
know, the node's item ids are listed (one disco#items query) and compared with the cache:

- cached items the server no longer lists are dropped (items cached after the listing was
  asked for are left alone: their notification may have overtaken it);
- when what went is the oldest of the cache, the server trims: its limit is learnt from
  the listing's size, and later publications follow it without asking again;
- items the server lists that the cache lacks mean the events missed something: the node
  is resynchronised, and the log says so. Not at once: a server lists an item as soon as
  it is published, and its notification may still be on the way or waiting its turn to
  be applied (publications keep coming while the node is checked). Only the items still
  missing after ``ANNOUNCE_GRACE`` seconds count; a resync for an item merely late would
  take the node out of the cache's answers while it runs, and under a steady stream of
  publications would run again after each check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from roost.service.cache.source import SyncSource
from roost.storage import Database, NodeRecord

log = logging.getLogger(__name__)

# Seconds after the last publication applied to a node before it is checked: a burst of
# publications costs one listing.
RECONCILE_DELAY = 2.0
# Seconds a listed item's notification may take to be applied before the item counts as
# never announced.
ANNOUNCE_GRACE = 10.0


class NodeReconciler:
    """Checks nodes against the server after publications, one listing per burst.

    Args:
        db: the database.
        source: the server side (lists a node's item ids).
        changed: called with the node's fresh record after cached items were dropped or
            its limit learnt (the cache's served copy must be replaced).
        diverged: called with the node's record when the server holds items the cache
            lacks (the cache resynchronises it).
    """

    def __init__(
        self,
        db: Database,
        source: SyncSource,
        changed: Callable[[NodeRecord], Awaitable[None]],
        diverged: Callable[[NodeRecord], None],
        *,
        delay: float = RECONCILE_DELAY,
        grace: float = ANNOUNCE_GRACE,
    ) -> None:
        self._db = db
        self._source = source
        self._changed = changed
        self._diverged = diverged
        self._delay = delay
        self._grace = grace
        # Set by each publication applied to a node a check waits on.
        self._applied: dict[int, asyncio.Event] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def publication_applied(self, record: NodeRecord) -> None:
        """A publication was applied to the node: check it once the burst is over, unless
        its limit is known (then the cache trims by itself)."""
        waiting = self._applied.get(record.id)
        if waiting is not None:
            waiting.set()
        if isinstance(record.extra.get("server_max_items"), int):
            return
        timer = self._timers.pop(record.id, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[record.id] = loop.call_later(self._delay, self._start, record.id)

    def _start(self, node_id: int) -> None:
        self._timers.pop(node_id, None)
        task = asyncio.get_running_loop().create_task(self._check_logged(node_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check_logged(self, node_id: int) -> None:
        try:
            await self.check(node_id)
        except Exception as exc:
            log.info("checking node %d against the server failed: %s", node_id, exc)

    async def check(self, node_id: int) -> None:
        """Compare the node with the server's listing now (see the module's text)."""
        record = await self._db.nodes.get_node_by_id(node_id)
        where = f"{record.service}/{record.name}"
        if record.sync_state != "completed" or not self._source.is_connected(record.profile):
            return
        before = [i for i, _updated in await self._db.items.list_item_ids(record.id)]
        listed = await self._source.list_item_ids(record.profile, record.service, record.name)
        if listed is None:
            return
        on_server = set(listed)
        gone = [item_id for item_id in before if item_id not in on_server]
        # Read again: a publication applied while the listing was asked for is not missing.
        after = {i for i, _updated in await self._db.items.list_item_ids(record.id)}
        missing = on_server - after
        if gone:
            await self._db.items.delete_items(record.id, gone)
            log.info("%s: %d cached items are no longer on the server; dropped", where, len(gone))
            if before[: len(gone)] == gone and not record.extra.get("truncated"):
                # The oldest went: the server trims to a limit, which is what it lists.
                await self._db.nodes.update_extra(record.id, {"server_max_items": len(listed)})
                log.info("%s: the server keeps %d items; followed from now on", where, len(listed))
            await self._changed(await self._db.nodes.get_node_by_id(record.id))
        if missing and not record.extra.get("truncated"):
            missing = await self._still_missing(record.id, missing)
            if missing:
                log.warning(
                    "%s: the server holds %d items its notifications never announced; resync",
                    where,
                    len(missing),
                )
                self._diverged(record)

    async def _still_missing(self, node_id: int, missing: set[str]) -> set[str]:
        """Those of ``missing`` the cache still lacks after the grace, read again after
        each publication applied to the node meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        applied = self._applied.setdefault(node_id, asyncio.Event())
        try:
            while missing and loop.time() < deadline:
                applied.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(applied.wait(), deadline - loop.time())
                cached = {i for i, _updated in await self._db.items.list_item_ids(node_id)}
                missing = missing - cached
        finally:
            self._applied.pop(node_id, None)
        return missing

    async def close(self) -> None:
        """Stop every planned and running check."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
