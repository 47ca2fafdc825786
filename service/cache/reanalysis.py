"""Re-analysis: known nodes analysed again when the analysers changed, their parsed data
following.

A node keeps the analysis made when Roost first met it, with the fingerprint of the
analysers that made it (``analysed_with``, see :meth:`AnalyserRegistry.fingerprint`). A
daemon started with other analysers (a plugin installed or removed, a config rule added
or edited, a parser whose version changed) finds known nodes analysed with another
fingerprint, and analyses them again, in the background, after start:

1. The analysis is made again from what the node kept: the payload namespaces it was
   first analysed from, the namespaces of its stored items, its ``pubsub#type`` when it
   was asked. Only what is missing is asked of the server, and only while the profile is
   connected: the newest items of a node that kept nothing (analysed before Roost kept
   it), the ``pubsub#type`` when it could now change the match. A node that needs the
   server while its profile is offline waits for the profile's connection.
2. What changed is applied. A node no longer to synchronise leaves the cache: its items
   go, and the subscription the cache made for it goes from the server (its record stays,
   with the new analysis, in state ``none``). A node newly to synchronise is synchronised
   now if its profile is connected, else at its connection, with every node to
   synchronise. A node marked by ``Cache.Sync`` stays synchronised.
3. A node whose stored parsed data came from another parser than its analyser's
   (``parsed_with`` against :attr:`Analyser.parser_identity`) has its stored items
   parsed again from their stored XML, without asking the server: parsed data and search
   text, in batches. This also finishes a re-parse a stop interrupted.

Bounds: at most :data:`REANALYSE_CONCURRENCY` nodes at a time, re-parsed
:data:`REPARSE_BATCH` items at a time (a short read, the parser off the event loop as
for a sync, a short write), and a batch waits while :data:`BUSY_SYNCS` or more syncs run,
so what a person or a connection asked for goes first. Nothing of it holds up the
daemon's start or its name on the bus.

While a node's items are parsed again, a read of it may see some items parsed the old
way and some the new; the node's answers are renewed when the re-parse ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from roost.service.cache.analysers import AnalysisContext
from roost.service.cache.analysis import ANALYSED_ITEMS, NodeAnalysis
from roost.service.cache.currency import NodeCurrency
from roost.service.cache.parsers import ParserContext
from roost.service.cache.scheduler import SyncScheduler
from roost.service.cache.source import SyncSource
from roost.service.cache.stored_form import payload_namespaces, stored_forms
from roost.service.events import Event, EventHub, ProfileConnected
from roost.service.pubsub.model import PubsubItem
from roost.storage import Database, NodeRecord, RowNotFound

log = logging.getLogger(__name__)

# Nodes analysed again (or re-parsed) at once.
REANALYSE_CONCURRENCY = 2
# Items re-parsed per batch: one read, one run of the parser, one write.
REPARSE_BATCH = 200
# A re-parse batch waits while this many syncs run.
BUSY_SYNCS = 4
# ``parsed_with`` of a node whose parsed data came from a parser no longer known.
UNKNOWN_PARSER = "?"

Leave = Callable[[NodeRecord, str], Awaitable[None]]


class Reanalysis:
    """Analyses known nodes again when the analysers changed, and re-parses their items.

    Args:
        db: the database.
        events: the hub; a profile's connection resumes what waited for the server.
        analysis: makes and stores analyses.
        source: the server side (whether a profile is connected, peeks, ``pubsub#type``).
        scheduler: syncs: one running with an old parser is stopped, a node newly to
            synchronise is started.
        currency: a served node is served with its new record.
        leave: makes a node leave the cache (its items, state and the cache's
            subscription), given the node and why.
    """

    def __init__(
        self,
        db: Database,
        events: EventHub,
        analysis: NodeAnalysis,
        source: SyncSource,
        scheduler: SyncScheduler,
        currency: NodeCurrency,
        leave: Leave,
    ) -> None:
        self._db = db
        self._analysis = analysis
        self._source = source
        self._scheduler = scheduler
        self._currency = currency
        self._leave = leave
        self._limit = asyncio.Semaphore(REANALYSE_CONCURRENCY)
        self._busy: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._unsubscribe = events.subscribe(self._on_event)

    def start(self, profile: str | None = None) -> None:
        """Go over the known nodes (of one profile) in the background, analysing again
        those analysed with other analysers and re-parsing those parsed with another
        parser."""
        task = asyncio.get_running_loop().create_task(
            self._run_logged(profile), name=f"re-analysis of {profile or 'every profile'}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Return when no pass runs (one started meanwhile is waited for too)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def close(self) -> None:
        """Stop every pass; what was not done is done after the next start."""
        self._unsubscribe()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ProfileConnected):
            self.start(event.profile)

    # -- a pass -----------------------------------------------------------------------------

    def _needs_work(self, record: NodeRecord) -> bool:
        if not record.extra.get("analysed"):
            return False
        return self._analysis.is_stale(record) or self._parsed_with(record) != self._identity(
            record
        )

    def _identity(self, record: NodeRecord) -> str:
        """The parser identity the node's parsed data should come from now."""
        analyser = self._analysis.analyser_of(record)
        return analyser.parser_identity if analyser else ""

    def _parsed_with(self, record: NodeRecord) -> str:
        """The parser identity the node's stored parsed data came from.

        A node analysed before Roost kept it is taken as parsed by its analyser as it is
        now, when that analyser is still registered (its parsed data was written by it);
        otherwise as parsed by an unknown parser.
        """
        kept = record.extra.get("parsed_with")
        if isinstance(kept, str):
            return kept
        if record.analyser is None:
            return ""
        analyser = self._analysis.analyser_of(record)
        return analyser.parser_identity if analyser else UNKNOWN_PARSER

    async def _run_logged(self, profile: str | None) -> None:
        try:
            await self._run(profile)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("re-analysis of known nodes failed")

    async def _run(self, profile: str | None) -> None:
        try:
            records = await self._db.nodes.list_nodes(profile=profile)
        except RowNotFound:
            return  # the profile was deleted meanwhile
        todo = [record for record in records if self._needs_work(record)]
        if not todo:
            return
        log.info(
            "%d known node(s)%s to analyse again or re-parse: the analysers changed",
            len(todo),
            f" of {profile}" if profile else "",
        )
        await asyncio.gather(*(self._node(record.id) for record in todo))

    async def _node(self, node_id: int) -> None:
        if node_id in self._busy:
            return  # another pass is on it
        self._busy.add(node_id)
        try:
            async with self._limit:
                record = await self._db.nodes.get_node_by_id(node_id)
                if not self._needs_work(record):
                    return
                if self._analysis.is_stale(record):
                    analysed = await self._reanalyse(record)
                    if analysed is None:
                        return
                    record = analysed
                await self._reparse(record)
        except RowNotFound:
            pass  # the node left the cache meanwhile (Purge, Reset, a deleted profile)
        except Exception:
            log.exception("node %d: re-analysis failed", node_id)
        finally:
            self._busy.discard(node_id)

    # -- one node ---------------------------------------------------------------------------

    async def _context(self, record: NodeRecord) -> AnalysisContext | None:
        """What the node's analysis is made from, asking the server only for what the
        node did not keep; None when that needs the server and the profile is offline."""
        connected = self._source.is_connected(record.profile)
        kept = record.extra.get("seen_namespaces")
        namespaces = set(kept) if isinstance(kept, list) else set()
        batch = await self._db.items.get_item_batch(record.id, limit=ANALYSED_ITEMS)
        stored = [PubsubItem(id=i.item_id, publisher=i.publisher, xml=i.data) for i in batch.items]
        namespaces |= payload_namespaces(stored)
        named = AnalysisContext(profile=record.profile, service=record.service, node=record.name)
        if kept is None and not stored and self._analysis.registry.needs_payloads(named):
            if not connected:
                return None
            peeked = await self._source.peek_items(record.profile, record.service, record.name)
            namespaces |= payload_namespaces(peeked or [])
        node_type = record.extra.get("pubsub_type")
        context = await self._analysis.context_for(
            record.profile,
            record.service,
            record.name,
            frozenset(namespaces),
            node_type if isinstance(node_type, str) else None,
        )
        if not connected and self._analysis.registry.needs_node_type(context):
            return None
        return context

    async def _reanalyse(self, record: NodeRecord) -> NodeRecord | None:
        """Analyse the node again and apply what changed; returns the node as it is now,
        None when it waits for its profile's connection or left the cache."""
        context = await self._context(record)
        if context is None:
            log.debug("%s/%s: re-analysis waits for a connection", record.service, record.name)
            return None
        analyser = self._analysis.registry.match(context)
        identity = analyser.parser_identity if analyser else ""
        parsed_with = self._parsed_with(record)
        restart = False
        if identity != parsed_with and self._scheduler.is_syncing(record.id):
            # Its next batches would be parsed the old way: stopped, and started again
            # once the analysis is stored.
            await self._scheduler.cancel(record.id)
            restart = True
        was_synced = bool(record.extra.get("to_sync"))
        updated = await self._analysis.store(record.id, analyser, context, parsed_with=parsed_with)
        if analyser is not None:
            await self._analysis.ensure_indexes(analyser)
        self._currency.refresh(updated)
        to_sync = bool(updated.extra.get("to_sync"))
        log.info(
            "%s/%s: analysed again by %r, was %r (to_sync %s, was %s)",
            record.service,
            record.name,
            analyser.name if analyser else None,
            record.analyser,
            to_sync,
            was_synced,
        )
        if was_synced and not to_sync:
            await self._leave(updated, "no analyser synchronises it any more")
            await self._db.nodes.update_extra(record.id, {"parsed_with": identity})
            return None
        if to_sync and (restart or not was_synced) and self._source.is_connected(record.profile):
            self._scheduler.schedule(record.id)
        return updated

    async def _reparse(self, record: NodeRecord) -> None:
        """Parse the node's stored items again with its analyser's parser, if their parsed
        data came from another."""
        identity = self._identity(record)
        if self._parsed_with(record) == identity:
            return
        analyser = self._analysis.analyser_of(record)
        parser = analyser.parser if analyser else None
        context = ParserContext(record.profile, record.service, record.name)
        changed = 0
        after = 0
        while True:
            await self._scheduler.wait_for_fewer(BUSY_SYNCS)
            batch = await self._db.items.get_item_batch(
                record.id, after_row=after, limit=REPARSE_BATCH
            )
            items = [
                PubsubItem(id=i.item_id, publisher=i.publisher, xml=i.data) for i in batch.items
            ]
            forms = await stored_forms(items, parser, context)
            changed += await self._db.items.set_parsed(
                record.id, forms, [i.updated for i in batch.items]
            )
            if batch.next_row is None:
                break
            after = batch.next_row
        done = await self._db.nodes.update_extra(record.id, {"parsed_with": identity})
        self._currency.refresh(done)
        log.log(
            logging.INFO if changed else logging.DEBUG,
            "%s/%s: %d stored item(s) parsed again (%s)",
            record.service,
            record.name,
            changed,
            identity or "no parser",
        )
