"""Node analysis: which analyser a node has, and so whether and how it is cached.

A node is analysed the first time Roost meets it: a read answered by the server, a
notification from the account or a contact (login notifications: prefetch), a contact
probed for the nodes prefetch analysers name, or ``Cache.Sync``. The analysis is stored
with the node (analyser, type, subtype, ``to_sync``), and a node to synchronise is handed
to the scheduler (or, learnt from a notification, to the prefetcher).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from roost.service.cache.analysers import Analyser, AnalyserRegistry, AnalysisContext, Parser
from roost.service.cache.currency import NodeKey
from roost.service.cache.prefetch import Prefetcher
from roost.service.cache.source import SyncSource, is_pep_service
from roost.service.cache.stored_form import payload_namespaces
from roost.service.events import ItemsEvent
from roost.service.pubsub.model import PubsubItem
from roost.storage import Database, NodeRecord

log = logging.getLogger(__name__)

# Contacts asked at once for the nodes to prefetch, after a connection.
PROBE_CONCURRENCY = 4
# Analysis looks at the payload namespaces of this many items of a first answer.
ANALYSED_ITEMS = 10


class NodeAnalysis:
    """Analyses nodes and hands those to synchronise on.

    Args:
        db: the database.
        registry: the analysers.
        source: the server side (contacts, peeks at a node's newest items).
        prefetcher: takes the nodes learnt from notifications.
        sync_now: starts a node's sync (by id).
    """

    def __init__(
        self,
        db: Database,
        registry: AnalyserRegistry,
        source: SyncSource,
        prefetcher: Prefetcher,
        sync_now: Callable[[int], None],
    ) -> None:
        self._db = db
        self.registry = registry
        self._source = source
        self._prefetcher = prefetcher
        self._sync_now = sync_now
        self._indexed: set[str] = set()
        self._analysing: set[tuple[str, str, str, bool]] = set()
        self._analysed: set[NodeKey] = set()
        # Nodes learnt from notifications that no analyser prefetches: not analysed again
        # at each notification (a read still analyses them).
        self._not_prefetched: set[NodeKey] = set()
        # Contacts' nodes a probe found absent or unreadable in this run.
        self._absent: set[NodeKey] = set()
        self._background: set[asyncio.Task[Any]] = set()

    def analyser_of(self, record: NodeRecord) -> Analyser | None:
        """The node's analyser (None: none, or one no longer registered)."""
        return self.registry.get(record.analyser) if record.analyser else None

    # -- entry points ---------------------------------------------------------------------

    def server_answered(self, key: NodeKey, items: list[PubsubItem]) -> None:
        """The server answered a read of the node: analyse it, beside the reply (the
        frontend's answer does not wait). Nodes analysed already cost one set lookup."""
        if key in self._analysed:
            return
        task = asyncio.get_running_loop().create_task(
            self._analyse_logged(*key, items[:ANALYSED_ITEMS])
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def notification(self, event: ItemsEvent) -> None:
        """A notification for a node the cache does not know: analyse it when it may be
        prefetched."""
        if event.kind == "items" and event.items and self._may_prefetch(event):
            items = [
                PubsubItem(
                    id=str(raw["id"]),
                    publisher=str(raw.get("publisher", "")),
                    xml=str(raw.get("xml", "")),
                )
                for raw in event.items
            ]
            await self.analyse(event.profile, event.service, event.node, items, event=True)

    async def analyse(
        self, profile: str, service: str, node: str, items: list[PubsubItem], *, event: bool = False
    ) -> None:
        """Analyse the node from ``items`` (its first or newest items); ``event``: it was
        learnt from a notification, and is kept only when its analyser prefetches."""
        # A read's analysis and a notification's are told apart: the latter must not make
        # a read's analysis give up.
        running = (profile, service, node, event)
        if running in self._analysing:
            return
        self._analysing.add(running)
        try:
            await self._analyse_once(profile, service, node, items, event)
        finally:
            self._analysing.discard(running)

    async def _analyse_logged(
        self, profile: str, service: str, node: str, items: list[PubsubItem]
    ) -> None:
        try:
            await self.analyse(profile, service, node, items)
        except Exception:
            log.exception("%s/%s: analysis failed", service, node)

    def _may_prefetch(self, event: ItemsEvent) -> bool:
        """Whether an event may make the cache learn (and then sync) an unknown node: only
        from the account itself or a contact whose presence it receives, as the
        notifications sent at login are, and while the prefetch budget lasts."""
        return (
            (event.profile, event.service, event.node) not in self._not_prefetched
            and self._prefetcher.allows(event.profile)
            and is_pep_service(event.service)
            and self._source.follows(event.profile, event.service)
        )

    async def _analyse_once(
        self, profile: str, service: str, node: str, items: list[PubsubItem], event: bool
    ) -> None:
        record = await self._db.nodes.get_node(profile, service, node)
        if record is not None and record.extra.get("analysed"):
            self._analysed.add((profile, service, node))
            return
        context = AnalysisContext(
            profile=profile,
            service=service,
            node=node,
            payload_namespaces=payload_namespaces(items),
            is_pep=is_pep_service(service),
        )
        analyser = self.registry.match(context)
        if event and not (analyser and analyser.to_sync and analyser.prefetch):
            self._not_prefetched.add((profile, service, node))
            return
        if record is None:
            record = await self._db.nodes.get_or_create_node(profile, service, node)
        await self._db.nodes.set_analysis(
            record.id,
            analyser.name if analyser else None,
            analyser.type if analyser else None,
            analyser.subtype if analyser else None,
        )
        to_sync = bool(analyser and analyser.to_sync)
        await self._db.nodes.update_extra(record.id, {"analysed": True, "to_sync": to_sync})
        self._analysed.add((profile, service, node))
        if analyser is None:
            return
        log.info("%s/%s: analysed by %r (to_sync %s)", service, node, analyser.name, to_sync)
        await self.ensure_indexes(analyser)
        if to_sync and self._source.is_connected(profile):
            if event:
                self._prefetcher.offer(profile, record.id)
            else:
                self._sync_now(record.id)

    async def ensure_indexes(self, analyser: Analyser) -> None:
        """Create the database indexes the analyser's ``indexed_keys`` ask for (once)."""
        for key in analyser.indexed_keys:
            if key not in self._indexed:
                await self._db.items.ensure_parsed_key_index(key)
                self._indexed.add(key)

    async def parser_for(self, key: NodeKey, items: list[PubsubItem]) -> Parser | None:
        """The parser the node's items are parsed with: its stored analysis's, or, for a
        node not analysed yet, that of the analyser ``items`` make it match (so a first
        server answer carries the ``parsed`` later ones will)."""
        record = await self._db.nodes.get_node(*key)
        if record is not None and record.extra.get("analysed"):
            analyser = self.analyser_of(record)
        else:
            analyser = self.registry.match(
                AnalysisContext(
                    profile=key[0],
                    service=key[1],
                    node=key[2],
                    payload_namespaces=payload_namespaces(items[:ANALYSED_ITEMS]),
                    is_pep=is_pep_service(key[1]),
                )
            )
        return analyser.parser if analyser else None

    # -- contacts -------------------------------------------------------------------------

    async def probe_contacts(self, profile: str) -> None:
        """Find the contacts' nodes to prefetch that no login notification announced.

        Servers send the newest item of contacts' nodes at login only when they know
        the client's capabilities by then: ejabberd learns them from a disco query after
        the first presence, and sends nothing to local contacts (so a new Roost version
        would prefetch nothing). Each contact whose presence the profile receives is
        asked for the nodes prefetch analysers name, unless the node is known already.
        """
        names = [
            a.node
            for a in self.registry.analysers()
            if a.prefetch and a.to_sync and a.node is not None
        ]
        if not names or not self._prefetcher.allows(profile):
            return
        known = {(r.service, r.name) for r in await self._db.nodes.list_nodes(profile=profile)}
        limit = asyncio.Semaphore(PROBE_CONCURRENCY)

        async def probe(contact: str, node: str) -> None:
            async with limit:
                if not self._prefetcher.allows(profile) or not self._source.is_connected(profile):
                    return
                key = (profile, contact, node)
                if key in self._analysed or key in self._not_prefetched or key in self._absent:
                    return  # a login notification was quicker, or nothing to prefetch
                items = await self._source.peek_items(profile, contact, node)
                if items:
                    await self.analyse(profile, contact, node, items, event=True)
                else:
                    # Absent or unreadable: not asked again at each reconnection of this
                    # run (a blog the contact starts later announces itself).
                    self._absent.add(key)

        await asyncio.gather(
            *(
                probe(contact, node)
                for contact in self._source.followed_contacts(profile)
                for node in names
                if (contact, node) not in known
            )
        )

    # -- forgetting -----------------------------------------------------------------------

    def forget_node(self, key: NodeKey) -> None:
        """The node left the cache: analysed anew when met again."""
        self._analysed.discard(key)

    def forget_profile(self, profile: str) -> None:
        """Drop what is kept in memory of a deleted profile's nodes."""
        self._analysed = {key for key in self._analysed if key[0] != profile}
        self._not_prefetched = {key for key in self._not_prefetched if key[0] != profile}
        self._absent = {key for key in self._absent if key[0] != profile}

    def clear(self) -> None:
        """The cache was reset: every node is analysed anew."""
        self._analysed.clear()
        self._not_prefetched.clear()

    async def close(self) -> None:
        """Stop the analyses running beside replies."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
