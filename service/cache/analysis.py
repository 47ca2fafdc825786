"""Node analysis: which analyser a node has, and so whether and how it is cached.

A node is analysed the first time Roost meets it: a read answered by the server, a
notification from the account or a contact (login notifications: prefetch), a contact
probed for the nodes prefetch analysers name, or ``Cache.Sync``. The analysis is stored
with the node (analyser, type, subtype, ``to_sync``), and a node to synchronise is handed
to the scheduler (or, learnt from a notification, to the prefetcher).

Beside the analysis, the node's extra keeps what it was made from and with, so that it
can be made again without the server when the analysers change
(:mod:`roost.service.cache.reanalysis`):

``analysed_with``
    the registry's fingerprint (:meth:`AnalyserRegistry.fingerprint`);
``parsed_with``
    the parser identity the node's stored parsed data comes from
    (:attr:`Analyser.parser_identity`, empty for none);
``seen_namespaces``
    the payload namespaces of the items it was analysed from;
``pubsub_type``
    its ``pubsub#type`` (empty for none), present only when it was asked, which is
    only when it could change the match (:meth:`AnalyserRegistry.needs_node_type`);
``sync_requested``
    ``Cache.Sync`` asked for it: it stays synchronised whatever its analysis says.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from roost.service.cache.analysers import Analyser, AnalyserRegistry, AnalysisContext
from roost.service.cache.currency import NodeKey
from roost.service.cache.parsers import Parser
from roost.service.cache.prefetch import Prefetcher
from roost.service.cache.source import SyncSource, is_pep_service
from roost.service.cache.stored_form import payload_namespaces
from roost.service.events import EventHub, ItemsEvent, SyncStateChanged
from roost.service.pubsub.model import PubsubItem
from roost.storage import Database, NodeRecord

log = logging.getLogger(__name__)

# Contacts asked at once for the nodes to prefetch, after a connection.
PROBE_CONCURRENCY = 4
# Analysis looks at the payload namespaces of this many items of a first answer.
ANALYSED_ITEMS = 10
# Seconds before an analysis that met a busy database (a lock held past the database's
# own wait: SQLite's busy timeout, with a hundred syncs writing at once) is tried again,
# by attempt; after the last, it fails as any other error does.
BUSY_RETRY_DELAYS = (1.0, 4.0, 15.0)


class NodeAnalysis:
    """Analyses nodes and hands those to synchronise on.

    Args:
        db: the database.
        events: where a failed analysis is announced (as a sync's failure is).
        registry: the analysers.
        source: the server side (contacts, peeks at a node's newest items).
        prefetcher: takes the nodes learnt from notifications.
        sync_now: starts a node's sync (by id).
    """

    def __init__(
        self,
        db: Database,
        events: EventHub,
        registry: AnalyserRegistry,
        source: SyncSource,
        prefetcher: Prefetcher,
        sync_now: Callable[[int], None],
    ) -> None:
        self._db = db
        self._events = events
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

    def is_stale(self, record: NodeRecord) -> bool:
        """Whether the node was analysed by other analysers than those running now."""
        return bool(record.extra.get("analysed")) and (
            record.extra.get("analysed_with") != self.registry.fingerprint()
        )

    async def context_for(
        self,
        profile: str,
        service: str,
        node: str,
        namespaces: frozenset[str],
        node_type: str | None = None,
        *,
        prefetch_only: bool = False,
    ) -> AnalysisContext:
        """What is known of the node, with its ``pubsub#type`` asked of the server when
        it could change the match (and is not known yet).

        ``prefetch_only``: the node was learnt from a notification, and is kept only if a
        prefetch analyser matches; the type is asked only when such an analyser names a
        namespace (a notification's delivery waits for its analysis).
        """
        context = AnalysisContext(
            profile=profile,
            service=service,
            node=node,
            node_type=node_type,
            payload_namespaces=namespaces,
            is_pep=is_pep_service(service),
        )
        if prefetch_only and not any(
            a.prefetch and a.to_sync and a.namespace is not None for a in self.registry.analysers()
        ):
            return context
        if self.registry.needs_node_type(context) and self._source.is_connected(profile):
            found = await self._source.node_type(profile, service, node)
            if found is not None:
                context = replace(context, node_type=found)
        return context

    async def store(
        self,
        node_id: int,
        analyser: Analyser | None,
        context: AnalysisContext,
        *,
        requested: bool = False,
        parsed_with: str | None = None,
    ) -> NodeRecord:
        """Record the node's analysis, and what it was made from and with.

        Args:
            node_id: the node.
            analyser: the analyser that matched, None for none.
            context: what the analysis was made from.
            requested: ``Cache.Sync`` asked for the node: it is synchronised whatever
                the analyser says (and stays so through later analyses).
            parsed_with: the parser identity of the node's stored parsed data; by
                default the analyser's (the node has no items yet, or they follow it).

        Returns:
            The node as it is now.
        """
        record = await self._db.nodes.set_analysis(
            node_id,
            analyser.name if analyser else None,
            analyser.type if analyser else None,
            analyser.subtype if analyser else None,
        )
        requested = requested or bool(record.extra.get("sync_requested"))
        extra: dict[str, Any] = {
            "analysed": True,
            "to_sync": bool(analyser and analyser.to_sync) or requested,
            "analysed_with": self.registry.fingerprint(),
            "parsed_with": analyser.parser_identity if analyser else "",
            "seen_namespaces": sorted(context.payload_namespaces),
        }
        if parsed_with is not None:
            extra["parsed_with"] = parsed_with
        if context.node_type is not None:
            extra["pubsub_type"] = context.node_type
        if requested:
            extra["sync_requested"] = True
        return await self._db.nodes.update_extra(node_id, extra)

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
        """Analyse beside a reply; a busy database is waited out (:data:`BUSY_RETRY_DELAYS`),
        and a failure is logged and announced as a sync's is."""
        for delay in (*BUSY_RETRY_DELAYS, None):
            try:
                await self.analyse(profile, service, node, items)
                return
            except Exception as exc:
                if delay is None or not self._db.is_transient(exc):
                    log.exception("%s/%s: analysis failed", service, node)
                    await self._failed(profile, service, node, exc)
                    return
                # Spread, so that the analyses a busy moment failed do not meet again.
                delay *= random.uniform(0.8, 1.2)
                log.warning(
                    "%s/%s: analysis met a busy database (%s); again in %.1f s",
                    service,
                    node,
                    _first_line(exc),
                    delay,
                )
                await asyncio.sleep(delay)

    async def _failed(self, profile: str, service: str, node: str, exc: Exception) -> None:
        """Record the node's failed analysis (state ``error`` and the reason, where the node
        is stored) and announce it, so that a frontend waiting for the node's sync to end
        is told; the node is analysed again when it is next read."""
        reason = f"analysis failed: {_first_line(exc)}"
        try:
            record = await self._db.nodes.get_node(profile, service, node)
            if record is not None:
                await self._db.nodes.set_sync_state(record.id, "error", extra={"reason": reason})
        except Exception as again:
            log.warning("%s/%s: the failed analysis cannot be recorded (%s)", service, node, again)
        self._events.publish(SyncStateChanged(profile, service, node, "error"))

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
            # Analysed by other analysers: the re-analysis after start sees to it.
            self._analysed.add((profile, service, node))
            return
        context = await self.context_for(
            profile, service, node, payload_namespaces(items), prefetch_only=event
        )
        analyser = self.registry.match(context)
        if event and not (analyser and analyser.to_sync and analyser.prefetch):
            self._not_prefetched.add((profile, service, node))
            return
        if record is None:
            record = await self._db.nodes.get_or_create_node(profile, service, node)
        record = await self.store(record.id, analyser, context)
        to_sync = bool(record.extra.get("to_sync"))
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

    async def analyse_for_sync(self, profile: str, service: str, node: str) -> NodeRecord:
        """``Cache.Sync``: the node marked to be synchronised, analysed first when it
        never was (from its newest items, peeked at through the source when an analyser
        could tell by them), so that it gets its analyser's type and parser; a node
        analysed already keeps its analysis.

        Returns:
            The node as it is now.
        """
        record = await self._db.nodes.get_or_create_node(profile, service, node)
        if record.extra.get("analysed"):
            record = await self._db.nodes.update_extra(
                record.id, {"to_sync": True, "sync_requested": True}
            )
        else:
            named = AnalysisContext(profile=profile, service=service, node=node)
            items: list[PubsubItem] = []
            if self.registry.needs_payloads(named):
                items = await self._source.peek_items(profile, service, node) or []
            context = await self.context_for(profile, service, node, payload_namespaces(items))
            analyser = self.registry.match(context)
            record = await self.store(record.id, analyser, context, requested=True)
            log.info(
                "%s/%s: analysed for a requested sync by %r",
                service,
                node,
                analyser.name if analyser else None,
            )
            if analyser is not None:
                await self.ensure_indexes(analyser)
        self._analysed.add((profile, service, node))
        return record

    async def ensure_indexes(self, analyser: Analyser) -> None:
        """Create the database indexes the analyser's ``indexed_keys`` ask for (once)."""
        for key in analyser.indexed_keys:
            if key not in self._indexed:
                await self._db.items.ensure_parsed_key_index(key)
                self._indexed.add(key)

    async def parser_for(
        self, key: NodeKey, items: list[PubsubItem], record: NodeRecord | None
    ) -> Parser | None:
        """The parser the node's items are parsed with: its stored analysis's (``record``,
        the node as the cache knows it, None when it does not), or, for a node not
        analysed yet, that of the analyser ``items`` make it match (so a first server
        answer carries the ``parsed`` later ones will)."""
        if record is not None and record.extra.get("analysed"):
            analyser = self.analyser_of(record)
        else:
            # As the analysis will see it, ``pubsub#type`` included when it could matter.
            context = await self.context_for(*key, payload_namespaces(items[:ANALYSED_ITEMS]))
            analyser = self.registry.match(context)
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


def _first_line(exc: Exception) -> str:
    """What went wrong, without what a database error adds below it (the statement)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
