"""Synchronising one node: the procedure of DESIGN.md's "pubsub cache" section.

Subscribe first (or rely on PEP notifications), so that nothing published meanwhile is
missed; then either an incremental resync (list the item ids, fetch only what is new,
drop what is gone, within the newest ``max_items_per_node`` the cache keeps) or a full
fetch, storing while the next page is fetched.
Bookkeeping of states, events that arrive meanwhile and retries belongs to the caller
(:class:`roost.service.cache.cache.PubsubCache`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from roost.service.cache.analysers import Analyser
from roost.service.cache.parsers import ParserContext
from roost.service.cache.source import Currency, SyncSource
from roost.service.cache.stored_form import stored_forms
from roost.service.errors import RoostError
from roost.service.pubsub.model import PubsubItem
from roost.service.pubsub.query import FETCH_PAGE_SIZE
from roost.storage import Database, NodeRecord

log = logging.getLogger(__name__)

# Pages fetched ahead of the store: one overlaps the server with the parsing and the
# database; more only cost memory, as a page of 5,000 items holds about 16 MB.
PAGES_AHEAD = 1
STORE_BATCH = 500
DEFAULT_MIN_FREE_BYTES = 200 * 1024 * 1024


def _batches(page: list[PubsubItem]) -> deque[list[PubsubItem]]:
    """The page in batches of :data:`STORE_BATCH`, to be taken off the front."""
    return deque(page[start : start + STORE_BATCH] for start in range(0, len(page), STORE_BATCH))


def _with_ids(page: list[PubsubItem], where: str) -> list[PubsubItem]:
    """The page's items that have an id: an item without one cannot be stored, asked for
    again or retracted (a server's fault, logged), and is left out of the copy."""
    kept = [item for item in page if item.id]
    if len(kept) < len(page):
        log.warning(
            "%s: the server sent %d item(s) with no id; not stored", where, len(page) - len(kept)
        )
    return kept


class DiskSpaceLow(RoostError):
    """The database's disk is nearly full: syncs pause."""

    name = "Internal"


Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class SyncResult:
    """What a sync did.

    Attributes:
        currency: whether the node will be kept current (and why not).
        stored: items written to the database.
        fetched: items fetched from the server.
        removed: cached items dropped because the server no longer has them.
        trimmed: cached items dropped because newer ones pushed them out of the newest
            ``max_items_per_node`` (the server still has them).
        incremental: whether only changes were fetched.
        total: items the server holds.
        truncated: whether only the newest ``max_items_per_node`` are kept.
    """

    currency: Currency
    stored: int = 0
    fetched: int = 0
    removed: int = 0
    trimmed: int = 0
    incremental: bool = False
    total: int = 0
    truncated: bool = False


class NodeSynchroniser:
    """Runs the sync procedure for one node at a time (the caller serialises per node)."""

    def __init__(
        self,
        db: Database,
        source: SyncSource,
        *,
        max_items_per_node: int,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    ) -> None:
        self._db = db
        self._source = source
        self._limit = max_items_per_node
        self._min_free = min_free_bytes
        # Nodes whose stored items the running (or last) sync has begun to change.
        self._touched: set[int] = set()

    def touched(self, node_id: int) -> bool:
        """Whether the node's last sync (running or ended) wrote to its stored items: a
        sync that failed before that left the previous copy as it was."""
        return node_id in self._touched

    def _writing(self, node: NodeRecord) -> None:
        self._touched.add(node.id)

    def check_disk(self) -> None:
        """Refuse to write when the database's disk is nearly full.

        Raises:
            DiskSpaceLow: free space is below the floor; the sync pauses (fails, and is
                retried with backoff) rather than fill the disk.
        """
        free = self._db.free_bytes()
        if free is not None and free < self._min_free:
            raise DiskSpaceLow(
                f"free disk space for the database is {free // (1024 * 1024)} MiB, below "
                f"[cache] min_free_disk_mb ({self._min_free // (1024 * 1024)} MiB): syncs "
                "pause until there is more"
            )

    async def run(
        self,
        node: NodeRecord,
        analyser: Analyser | None,
        progress: Progress,
        *,
        allow_without_events: bool = False,
    ) -> SyncResult:
        """Synchronise ``node``.

        Args:
            node: the node's record.
            analyser: its analyser (gives the parser), None for a node synced on request
                without one.
            progress: called with (items stored, total or 0) as the sync goes.
            allow_without_events: go on even when the node cannot be kept current (the
                node is refreshed periodically instead).

        Returns:
            The result; when the node cannot be kept current and that is not allowed,
            nothing is fetched.
        """
        self._touched.discard(node.id)
        currency = await self._source.keep_current(node.profile, node.service, node.name)
        if currency.created_subid is not None:
            # Recorded even when left pending: Roost asked for it, Roost removes it.
            await self._db.cache_subscriptions.record_subscription(
                node.profile, node.service, node.name, currency.created_subid
            )
        await self._db.nodes.update_extra(node.id, {"kept_by": currency.via})
        if not currency.current and not allow_without_events:
            return SyncResult(currency=currency)
        await self._db.nodes.set_subscribed(node.id, currency.subscribed)
        # Servers drop a node's oldest items past its limit on publish, and tell nobody:
        # the cache must do the same when it applies a publication.
        server_max = await self._source.node_max_items(node.profile, node.service, node.name)
        await self._db.nodes.update_extra(node.id, {"server_max_items": server_max})
        parser = analyser.parser if analyser else None
        if node.extra.get("synced_once"):
            result = await self._incremental(node, parser, currency, progress)
            if result is not None:
                return await self._bound(node, result)
        return await self._bound(node, await self._full(node, parser, currency, progress))

    async def _full(
        self,
        node: NodeRecord,
        parser: Callable[..., dict[str, object]] | None,
        currency: Currency,
        progress: Progress,
    ) -> SyncResult:
        where = f"{node.service}/{node.name}"
        queue: asyncio.Queue[list[PubsubItem] | None] = asyncio.Queue(maxsize=PAGES_AHEAD)

        async def fetch() -> None:
            try:
                # Bounded while it runs: never more than the node limit is fetched, but
                # from a whole answer (no RSM) whose newest are known at its end only,
                # and too many to hold: its pages all come, and _bound trims after.
                async for page in self._source.fetch_all_items(
                    node.profile, node.service, node.name, FETCH_PAGE_SIZE, newest=self._limit
                ):
                    await queue.put(page)
                    del page  # not held while the next page is asked for
            finally:
                await queue.put(None)

        fetcher = asyncio.create_task(fetch(), name=f"fetch {where}")
        seen: list[str] = []
        stored = 0
        # One batch is written while the next is parsed: the database works in its own
        # thread, so parsing and writing overlap. Batches are still written in order.
        writing: asyncio.Task[int] | None = None
        try:
            while (page := await queue.get()) is not None:
                # A server without RSM answers with the whole node at once: store it in
                # batches all the same, so each transaction stays short and progress shows.
                # The page is taken apart as its batches go: an item keeps its element
                # tree until its stored form is made, and a page of 4,000 trees is about
                # 20 MB of objects that each young collection would walk again.
                batches = _batches(_with_ids(page, where))
                del page
                while batches:
                    batch = batches.popleft()
                    rows = await stored_forms(
                        batch, parser, ParserContext(node.profile, node.service, node.name)
                    )
                    self.check_disk()
                    if writing is not None:
                        stored += await writing
                        progress(stored, 0)
                    self._writing(node)
                    writing = asyncio.create_task(self._db.items.upsert_items(node.id, rows))
                    seen.extend(item.id for item in batch)
            if writing is not None:
                stored += await writing
                writing = None
                progress(stored, 0)
            await fetcher  # re-raises a fetch failure
        finally:
            if not fetcher.done():
                fetcher.cancel()
            if writing is not None and not writing.done():
                # Cancelled or failed meanwhile: no write may outlive the sync.
                writing.cancel()
                await asyncio.gather(writing, return_exceptions=True)
        self._writing(node)
        removed = await self._db.items.delete_items_not_in(node.id, seen)
        total = self._source.walked_total(node.profile, node.service, node.name)
        total = len(seen) if total is None else max(total, len(seen))
        return SyncResult(
            currency=currency,
            stored=stored,
            fetched=len(seen),
            removed=removed,
            total=total,
            # Only the newest were fetched: the server holds older items the cache does not.
            truncated=total > len(seen),
        )

    async def _incremental(
        self,
        node: NodeRecord,
        parser: Callable[..., dict[str, object]] | None,
        currency: Currency,
        progress: Progress,
    ) -> SyncResult | None:
        """Fetch only what changed; None when that cannot give a correct copy.

        The cache keeps a node's newest ``max_items_per_node`` items, so the server's
        listing is compared within that window: the window's items the cache lacks are
        fetched (newer ones, and, for a node kept in part, older ones back in the window
        after a retraction), cached items the server no longer lists are dropped, and
        cached items pushed out of the window by newer ones are trimmed.
        """
        where = f"{node.service}/{node.name}"
        server_ids = await self._source.list_item_ids(node.profile, node.service, node.name)
        if server_ids is None:
            return None
        if len(set(server_ids)) != len(server_ids):
            log.info("%s: the server lists an item twice; full resync", where)
            return None
        cached_ids = [item_id for item_id, _updated in await self._db.items.list_item_ids(node.id)]
        server_set, cached_set = set(server_ids), set(cached_ids)
        gone = [i for i in cached_ids if i not in server_set]
        kept_in_cache_order = [i for i in cached_ids if i in server_set]
        kept_in_server_order = [i for i in server_ids if i in cached_set]
        # disco#items lists a node oldest first on some servers (ejabberd) and newest
        # first on others (Prosody): the kept items' order tells which.
        if kept_in_server_order == kept_in_cache_order and len(kept_in_cache_order) > 1:
            ordered = server_ids
        elif kept_in_server_order[::-1] == kept_in_cache_order and len(kept_in_cache_order) > 1:
            ordered = server_ids[::-1]
        else:
            # Items were republished (they moved), or too few are kept to tell the
            # listing's direction: appending cannot give the server's order. (With
            # nothing kept, a full fetch costs the same.)
            log.info("%s: cannot tell where new items go; full resync", where)
            return None
        # Only the newest items are kept: those are the part of the node to compare.
        window = ordered[max(len(ordered) - self._limit, 0) :]
        in_window = set(window)
        trimmed = [i for i in kept_in_cache_order if i not in in_window]
        kept_places = [n for n, i in enumerate(window) if i in cached_set]
        if not kept_places:
            log.info("%s: no cached item is among the server's newest; full resync", where)
            return None
        # Fetched from the first item after the oldest kept one that the cache lacks:
        # usually the new items, but a cached item after that one is fetched again and
        # moved after it. A notification can bring a node's newest item before its
        # resync (ejabberd sends each subscribed node's last item at every connection):
        # the cache then holds it, and not the items published before it meanwhile.
        older = window[: kept_places[0]]
        gap = next(
            (n for n in range(kept_places[0], len(window)) if window[n] not in cached_set),
            len(window),
        )
        new = window[gap:]
        if older and not node.extra.get("truncated"):
            # The cache held the whole node: an item older than the cached ones was
            # never published after them.
            log.info("%s: items older than the cached ones appeared; full resync", where)
            return None
        wanted = older + new
        fetched = await self._source.fetch_items_by_id(
            node.profile, node.service, node.name, wanted
        )
        if sorted(item.id for item in fetched) != sorted(wanted):
            log.info("%s: the server did not return the listed items; full resync", where)
            return None
        # Stored in the listing's order, whatever order the server answered in.
        place = {item_id: n for n, item_id in enumerate(wanted)}
        fetched = sorted(fetched, key=lambda item: place[item.id])
        self._writing(node)
        removed = await self._db.items.delete_items(node.id, gone)
        dropped = await self._db.items.delete_items(node.id, trimmed)
        rows = await stored_forms(
            fetched, parser, ParserContext(node.profile, node.service, node.name)
        )
        self.check_disk()
        before_kept = set(older)
        stored = await self._db.items.upsert_items(
            node.id, [row for row in rows if row.item_id in before_kept], at_start=True
        )
        stored += await self._db.items.upsert_items(
            node.id, [row for row in rows if row.item_id not in before_kept]
        )
        progress(stored, len(wanted))
        log.info(
            "%s: incremental resync: %d new (%d of them cached already), %d older back "
            "among the newest, %d gone, %d trimmed, %d unchanged",
            where,
            len(new),
            len(set(new) & cached_set),
            len(older),
            len(gone),
            len(trimmed),
            len(kept_places) - len(set(new) & cached_set),
        )
        return SyncResult(
            currency=currency,
            stored=stored,
            fetched=len(fetched),
            removed=removed,
            trimmed=dropped,
            incremental=True,
            total=len(server_ids),
            truncated=len(server_ids) > len(window),
        )

    async def _bound(self, node: NodeRecord, result: SyncResult) -> SyncResult:
        """Keep only the newest ``max_items_per_node`` items."""
        if result.total <= self._limit:
            return result
        self._writing(node)
        trimmed = await self._db.items.trim_node(node.id, self._limit)
        return replace(result, trimmed=result.trimmed + trimmed, truncated=True)
