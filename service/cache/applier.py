"""The event applier: a synchronised node's notifications, applied to its stored copy.

A publication, retraction or purge changes the stored items exactly as it changed the
server's node, including what servers do without telling anyone: trimming a node to its
``pubsub#max_items`` on publish, and moving (or not) a republished item to the end.
When the stored copy cannot follow (where a republished item goes is unknown, or the
node grew past the cache's own limit), the applier says so and the caller resynchronises.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from roost.service.cache.analysers import AnalyserRegistry
from roost.service.cache.currency import NodeCurrency, node_key
from roost.service.cache.parsers import ParserContext
from roost.service.cache.reconcile import NodeReconciler
from roost.service.cache.source import SyncSource
from roost.service.cache.stored_form import stored_forms
from roost.service.events import ItemsEvent
from roost.service.pubsub.model import PubsubItem
from roost.storage import Database, NodeRecord
from roost.storage.item_records import ItemInput

log = logging.getLogger(__name__)


def event_item(raw: Mapping[str, Any]) -> PubsubItem:
    """An event's item record as a :class:`PubsubItem`."""
    return PubsubItem(
        id=str(raw["id"]), publisher=str(raw.get("publisher", "")), xml=str(raw.get("xml", ""))
    )


class EventApplier:
    """Applies notifications to stored nodes.

    Args:
        db: the database.
        source: the server, asked where a republished item goes.
        registry: the analysers (the node's parser).
        currency: refreshed with the node's record after each change.
        reconciler: told of publications (it checks the node's count after a burst).
        max_items_per_node: the cache's own limit per node.
    """

    def __init__(
        self,
        db: Database,
        source: SyncSource,
        registry: AnalyserRegistry,
        currency: NodeCurrency,
        reconciler: NodeReconciler,
        *,
        max_items_per_node: int,
    ) -> None:
        self._db = db
        self._source = source
        self._registry = registry
        self._currency = currency
        self._reconciler = reconciler
        self._limit = max_items_per_node
        # Per service: whether a republished item moves to the end.
        self._moves: dict[str, bool] = {}

    async def stored_rows(self, record: NodeRecord, event: ItemsEvent) -> list[ItemInput]:
        """The stored form of a publication's items (parsed once for cache and event)."""
        if event.kind != "items":
            return []
        analyser = self._registry.get(record.analyser) if record.analyser else None
        return await stored_forms(
            [event_item(raw) for raw in event.items],
            analyser.parser if analyser else None,
            ParserContext(record.profile, record.service, record.name),
        )

    async def apply(
        self, record: NodeRecord, event: ItemsEvent, rows: list[ItemInput] | None = None
    ) -> bool:
        """Apply ``event`` to the node's stored items.

        Args:
            record: the node's record.
            event: a publication, retraction or purge of the node.
            rows: the publication's items in stored form, when computed already.

        Returns:
            True when the stored copy could not follow and the node must be
            resynchronised (it must not be served meanwhile).
        """
        items = self._db.items
        if event.kind == "items":
            if rows is None:
                rows = await self.stored_rows(record, event)
            keep = False
            newest = (await items.get_items(record.id, max_items=1)).last
            added = 0
            for row in rows:
                if row.item_id == newest:
                    keep = True  # the newest item stays the newest either way
                elif await items.get_item(record.id, row.item_id) is None:
                    added += 1
                elif not keep:
                    moves = await self._republish_moves(record, row.item_id, newest)
                    if moves is None:
                        return True
                    keep = not moves
            await items.upsert_items(record.id, rows, keep_position=keep)
            if added:
                await self._follow_server_limit(record)
                server_limit = record.extra.get("server_max_items")
                bounded = isinstance(server_limit, int) and server_limit <= self._limit
                # A node the server trims within the cache's limit stays within it; any
                # other is counted: past the cache's own limit, a bounded resync keeps
                # the newest and learns the node's count again (no node grows unbounded).
                if not bounded and await items.count_items(record.id) > self._limit:
                    return True
                self._reconciler.publication_applied(record)
        elif event.kind == "retract":
            await items.delete_items(record.id, [str(raw["id"]) for raw in event.items])
        elif event.kind == "purge":
            await items.clear_node(record.id)
        if self._currency.is_current(node_key(record)):
            # The reads use the record's extra (truncation, totals): keep it fresh. Not
            # when the node was held or dropped during the read: it stays out.
            self._currency.refresh(await self._db.nodes.get_node_by_id(record.id))
        return False

    async def _follow_server_limit(self, record: NodeRecord) -> None:
        """Drop what the server dropped when a publication pushed the node past its limit.

        Servers trim a node to its ``pubsub#max_items`` on publish and notify nobody; the
        limit is read at sync time where the server shows it (to the node's owner).
        """
        limit = record.extra.get("server_max_items")
        if isinstance(limit, int):
            await self._db.items.trim_node(record.id, limit)

    async def _republish_moves(
        self, record: NodeRecord, item_id: str, cached_newest: str | None
    ) -> bool | None:
        """Whether the node's service moves a republished item to the end.

        Servers differ (Prosody moves it, ejabberd keeps its place) and neither says so:
        the first republication of an item that was not the newest is checked against
        the server's newest item, and the answer kept for the service. None when the
        server's answer settles nothing (another item was published meanwhile).
        """
        known = self._moves.get(record.service)
        if known is None:
            newest = await self._source.newest_item_id(record.profile, record.service, record.name)
            if newest not in (item_id, cached_newest):
                return None
            known = self._moves[record.service] = newest == item_id
            log.info(
                "%s: a republished item %s",
                record.service,
                "moves to the end" if known else "keeps its place",
            )
        return known
