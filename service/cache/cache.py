"""PubsubCache: the transparent pubsub cache of DESIGN.md, composed of named parts.

======================  =================================================================
part                    job
======================  =================================================================
:class:`NodeCurrency`   what is current (served from the database), holds while Roost
                        changes a node, the recent answers
:class:`SyncScheduler`  when each node syncs: tasks, timers, retries with backoff, the
                        notifications buffered during a sync
:class:`EventApplier`   a synchronised node's notifications applied to its stored copy
:class:`NodeAnalysis`   which analyser a node has; nodes to sync handed to the scheduler
:class:`Reanalysis`     known nodes analysed again (and re-parsed) when the analysers
                        changed since they were analysed
:class:`NodeSynchroniser`  the sync procedure itself (subscribe, then fetch)
======================  =================================================================

This class wires them, hears connections and roster changes, decides which notifications
are heard at all, and serves the Cache interface (search, node state, sync, purge, reset).

A node is served from the database only while it is *current*: synchronised
(``completed``) during this run of the daemon with its profile connected since. A
disconnection, a restart or a crash (a node left ``in_progress``) makes it not current
until a resync, which starts by itself when the profile is connected. While its profile
is offline, a node whose copy is complete is served with its age (``offline.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Mapping
from dataclasses import replace
from typing import Any

from roost.service.cache.analysers import Analyser, AnalyserRegistry
from roost.service.cache.analysis import NodeAnalysis
from roost.service.cache.applier import EventApplier
from roost.service.cache.currency import NodeCurrency, NodeKey, node_key
from roost.service.cache.offline import answer_offline, is_complete, record_current_until
from roost.service.cache.parsers import ParserContext
from roost.service.cache.prefetch import Prefetcher
from roost.service.cache.reads import answer_from_store, item_from_record
from roost.service.cache.reanalysis import Reanalysis
from roost.service.cache.reconcile import NodeReconciler
from roost.service.cache.scheduler import SyncScheduler
from roost.service.cache.source import SyncSource, is_pep_service
from roost.service.cache.stored_form import stored_forms
from roost.service.cache.subscriptions import CacheSubscriptions
from roost.service.cache.sync import DEFAULT_MIN_FREE_BYTES, NodeSynchroniser
from roost.service.concurrently import both
from roost.service.errors import InvalidArgument, NotConnected
from roost.service.events import (
    ContactChanged,
    Event,
    EventHub,
    ItemsEvent,
    ProfileConnected,
    ProfileDisconnected,
    SyncStateChanged,
)
from roost.service.pubsub.model import ItemsReply, ItemsRequest
from roost.service.records import NodeState, SearchHit
from roost.storage import Database, NodeRecord
from roost.storage.errors import InvalidQuery
from roost.storage.item_records import parsed_text

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS_PER_NODE = 5_000
# Dropped notifications are logged at most this often per profile (seconds).
DROP_LOG_INTERVAL = 60.0
_PURGE_KEYS = frozenset({"profiles", "services", "nodes", "types", "older_than"})


class PubsubCache:
    """The pubsub cache: analysis, synchronisation, transparent reads, search.

    Args:
        db: the database.
        source: the server side of syncs (subscriptions, fetches).
        events: the hub on which sync states and progress are announced, and from which
            connections and disconnections are heard.
        registry: the analysers (built-ins, plugins and config rules loaded by the caller).
        max_items_per_node: how many items a node keeps; a request that needs older ones
            goes to the server.
        prefetch: synchronise contacts' nodes learnt from login notifications (those
            whose analyser says ``prefetch``) before anyone reads them.
        prefetch_max_nodes: the most nodes prefetched per profile in one run.
        min_free_bytes: syncs pause while the database's disk has less free space.
    """

    def __init__(
        self,
        db: Database,
        source: SyncSource,
        events: EventHub,
        registry: AnalyserRegistry | None = None,
        *,
        max_items_per_node: int = DEFAULT_MAX_ITEMS_PER_NODE,
        prefetch: bool = True,
        prefetch_max_nodes: int = 200,
        min_free_bytes: int = DEFAULT_MIN_FREE_BYTES,
    ) -> None:
        if max_items_per_node < 1:
            raise InvalidArgument("max_items_per_node must be at least 1")
        self._db = db
        self._source = source
        self._events = events
        self.registry = registry or AnalyserRegistry()
        self.subscriptions = CacheSubscriptions(db, source)
        self.currency = NodeCurrency(
            lambda node_id: self.scheduler.schedule(node_id), db.nodes.get_node_by_id
        )
        self._reconciler = NodeReconciler(
            db,
            source,
            self._record_changed,
            lambda record: self.scheduler.resync(record),
        )
        self.applier = EventApplier(
            db,
            source,
            self.registry,
            self.currency,
            self._reconciler,
            max_items_per_node=max_items_per_node,
        )
        self.scheduler = SyncScheduler(
            db,
            source,
            events,
            self.registry,
            NodeSynchroniser(
                db, source, max_items_per_node=max_items_per_node, min_free_bytes=min_free_bytes
            ),
            self.currency,
            self.applier,
            self._subscribed_add,
        )
        self._prefetcher = Prefetcher(
            self.scheduler, enabled=prefetch, max_nodes=prefetch_max_nodes
        )
        self.analysis = NodeAnalysis(
            db, events, self.registry, source, self._prefetcher, self.scheduler.schedule
        )
        self.reanalysis = Reanalysis(
            db, events, self.analysis, source, self.scheduler, self.currency, self._leave_cache
        )
        self._background: set[asyncio.Task[Any]] = set()
        # Writes of when nodes were last current: awaited by close(), not cancelled.
        self._recording: set[asyncio.Task[None]] = set()
        # Nodes whose events the profile chose to hear beyond its own account and its
        # contacts: those it (or the cache) is subscribed to.
        self._subscribed: set[NodeKey] = set()
        self._dropped: dict[str, int] = {}
        self._dropped_logged: dict[str, float] = {}
        # Answers of current nodes, by where they came from: read from the database, or
        # reused from the recent answers (logged at close; the benchmarks check them).
        self.answers_read = 0
        self.answers_reused = 0
        self._unsubscribe = events.subscribe(self._on_event)

    def _subscribed_add(self, key: NodeKey) -> None:
        self._subscribed.add(key)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the previous run: a node left ``in_progress`` was interrupted.
        Learn which nodes the profiles are subscribed to (whose events are heard).
        Known nodes analysed by other analysers than this run's are analysed again in
        the background (:mod:`roost.service.cache.reanalysis`), not before returning.

        On a database other daemons share, a node ``in_progress`` may be another
        daemon's sync under way: interrupted syncs are recovered profile by profile,
        when this daemon takes the profile's lease (:meth:`take_profile`)."""
        await self._learn_subscriptions(None)
        if not self._db.shares_database:
            await self._recover_interrupted(None)
        self.reanalysis.start()

    async def take_profile(self, profile: str) -> None:
        """This daemon now serves ``profile`` (it took its lease): learn again which of
        its nodes are subscribed to and recover its interrupted syncs, since the daemon
        that served it before may have changed both since :meth:`start`."""
        self._subscribed -= {key for key in self._subscribed if key[0] == profile}
        await self._learn_subscriptions(profile)
        await self._recover_interrupted(profile)

    async def _learn_subscriptions(self, profile: str | None) -> None:
        for record in await self._db.nodes.list_nodes(profile=profile):
            if record.extra.get("user_subscribed") or record.extra.get("kept_by") == "subscription":
                self._subscribed.add(node_key(record))
        for sub in await self._db.cache_subscriptions.list_subscriptions(profile=profile):
            self._subscribed.add((sub.profile, sub.service, sub.node))

    async def _recover_interrupted(self, profile: str | None) -> None:
        for node in await self._db.nodes.list_nodes(profile=profile, states=["in_progress"]):
            if self.scheduler.is_syncing(node.id):
                continue  # this run's own sync
            log.warning(
                "%s/%s: its sync was interrupted (crash or kill); it will be resynchronised",
                node.service,
                node.name,
            )
            await self._db.nodes.set_sync_state(
                node.id, "none", extra={"reason": "sync interrupted; resync pending"}
            )

    async def close(self) -> None:
        """Stop every sync and timer; nodes being synchronised are left to the next start.

        The nodes current now are recorded as current until now, for offline reads.
        """
        self._unsubscribe()
        log.info(
            "GetItems answered from the cache: %d read from the database, %d reused from memory",
            self.answers_read,
            self.answers_reused,
        )
        # The moment is taken before the syncs are cancelled: what is current now was
        # current until now, whatever the cancellations then do to the node states.
        self._remember_current(self.currency.current_records(), time.time())
        self.currency.clear()
        await self.reanalysis.close()
        await self._prefetcher.close()
        await self._reconciler.close()
        await self.analysis.close()
        await asyncio.gather(*self._recording, return_exceptions=True)
        await self.scheduler.cancel_all()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- analysers ----------------------------------------------------------------------

    def register_analyser(self, analyser: Analyser, *, position: int | None = None) -> None:
        """Add an analyser (see :meth:`AnalyserRegistry.register_analyser`)."""
        self.registry.register_analyser(analyser, position=position)

    def list_analysers(self) -> list[dict[str, Any]]:
        """The analysers in the order they are consulted (ListAnalysers)."""
        return self.registry.describe()

    # -- the seam PubsubService calls ---------------------------------------------------

    async def answer(
        self, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply | None:
        """The cached answer to ``request``, or None when the server must answer."""
        if not request.use_cache:
            return None
        key = (profile, service, node)
        record = self.currency.record(key)
        if record is None:
            return None
        reply = self.currency.recent_answer(key, request)
        if reply is None:
            self.answers_read += 1
            reply = await answer_from_store(self._db.items, record, request)
            if reply is not None:
                self.currency.remember_answer(key, request, record, reply)
        else:
            self.answers_reused += 1
        if reply is not None and not record.subscribed:
            # Kept by periodic refresh, not by events: say how old the copy is.
            synced_at = float(record.extra.get("synced_at", record.sync_state_updated))
            reply = replace(reply, cache_age=max(0.0, time.time() - synced_at))
        return reply

    async def answer_offline(
        self, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply | None:
        """The answer for a profile that is offline: from the node's complete copy, with
        ``cache_age``; None when there is no such copy or it cannot answer ``request``."""
        if not request.use_cache:
            return None
        record = await self._db.nodes.get_node(profile, service, node)
        if record is None or self.scheduler.is_syncing(record.id):
            return None
        reply = await answer_offline(self._db.items, record, request)
        # The profile may have connected during the read and a resync begun changing rows.
        return None if self.scheduler.is_syncing(record.id) else reply

    async def server_answered(
        self,
        profile: str,
        service: str,
        node: str,
        request: ItemsRequest,
        answer: Awaitable[ItemsReply],
    ) -> ItemsReply:
        """The server's ``answer``, given the ``parsed`` data a cached answer would
        carry; the node is analysed beside the reply the first time the server path
        meets it."""
        key = (profile, service, node)
        # What the cache knows of the node is read while the server answers, not after.
        reply, record = await both(answer, self._db.nodes.get_node(*key))
        # The parser is known before the analysis starts: started first, the analysis's
        # own database work went ahead of the reply.
        parser = await self.analysis.parser_for(key, reply.items, record)
        self.analysis.server_answered(key, reply.items)
        if parser is None or not reply.items:
            return reply
        rows = await stored_forms(reply.items, parser, ParserContext(profile, service, node))
        # The text the store would give: the two paths' parsed are equal to the byte.
        items = [
            replace(item, parsed=row.parsed_json)
            for item, row in zip(reply.items, rows, strict=True)
        ]
        return replace(reply, items=items)

    def accepts(self, event: ItemsEvent) -> bool:
        """Whether an event comes from a service the profile chose: its own account, a
        contact whose presence it receives, or a node it (or the cache) is subscribed to.

        Anything else (a stranger's notifications) is dropped before analysis, with no
        stanza sent and no node record made; drops are counted, and logged at most once
        a minute per profile rather than once per stanza.
        """
        key = (event.profile, event.service, event.node)
        if (
            key in self._subscribed
            or self.scheduler.is_syncing_key(key)
            or (
                is_pep_service(event.service) and self._source.follows(event.profile, event.service)
            )
        ):
            return True
        count = self._dropped[event.profile] = self._dropped.get(event.profile, 0) + 1
        now = time.monotonic()
        if now - self._dropped_logged.get(event.profile, -DROP_LOG_INTERVAL) >= DROP_LOG_INTERVAL:
            self._dropped_logged[event.profile] = now
            log.info(
                "%s: %d pubsub notifications dropped so far from services this account did "
                "not choose to hear (the latest from %s)",
                event.profile,
                count,
                event.service,
            )
        return False

    async def apply_event(self, event: ItemsEvent) -> ItemsEvent | None:
        """Bring a cached node up to date with ``event`` before frontends hear of it.

        Returns the event with ``parsed`` added to its items when the node's analyser
        has a parser, so that frontends get the same records as from GetItems.
        """
        received = time.monotonic()
        record = await self._db.nodes.get_node(event.profile, event.service, event.node)
        if record is None or not record.extra.get("analysed"):
            await self.analysis.notification(event)
            return None
        if event.kind == "delete":
            await self._forget_node(record)
            # A deleted node takes its subscriptions with it.
            await self.subscriptions.forget(record.profile, record.service, record.name)
            return None
        if not event.complete:
            # The items it names as the notification gave them are not the node's: the
            # copy would miss them. Frontends still hear of it.
            self.completion_failed(record, "items it named could not be fetched")
            return None
        rows = await self.applier.stored_rows(record, event)
        if self.scheduler.is_syncing(record.id):
            # A sync is storing the node in server order; apply after it, in order.
            self.scheduler.buffer(record.id, event)
        elif record.sync_state == "completed":
            must_resync = await self.applier.apply(record, event, rows)
            # A sync that started while this was applied reads the server after the
            # notification and bounds the node itself: another, right after it, would
            # only take the node from frontends again.
            if must_resync and not self.scheduler.started_since(record.id, received):
                self.scheduler.resync(record)
            else:
                await self.currency.notification_applied(node_key(record), event)
        analyser = self.analysis.analyser_of(record)
        if not rows or analyser is None or analyser.parser is None:
            return None
        records = [
            item_from_record_parts(raw, row.parsed)
            for raw, row in zip(event.items, rows, strict=True)
        ]
        return replace(event, items=records)

    def completion_failed(self, record: NodeRecord, reason: str) -> None:
        """A notification of the node could not be completed: the stored copy would miss
        what it named, so the node is not current until it is resynchronised (after the
        sync running now, if one is)."""
        if record.sync_state != "completed" and not self.scheduler.is_syncing(record.id):
            return  # not served, and no sync to redo
        where = f"{record.service}/{record.name}"
        log.warning("%s: a notification was lost (%s); resync", where, reason)
        self.scheduler.resync(record)

    def hold(self, service: str, node: str, item_ids: list[str] | None, *, kind: str) -> None:
        """See :meth:`NodeCurrency.hold`."""
        self.currency.hold(service, node, item_ids, kind=kind)

    def unhold(self, service: str, node: str) -> None:
        """See :meth:`NodeCurrency.unhold`."""
        self.currency.unhold(service, node)

    # -- Cache interface ----------------------------------------------------------------

    async def search(self, query: Mapping[str, Any]) -> list[SearchHit]:
        """Items across the cache matching ``query`` (DESIGN.md's Search keys).

        Raises:
            InvalidArgument: an unknown key or operator, a malformed path or value.
        """
        try:
            hits = await self._db.search.search(query)
        except InvalidQuery as exc:
            raise InvalidArgument(str(exc)) from None
        results: list[SearchHit] = []
        for hit in hits:
            item = item_from_record(hit.record())
            found: SearchHit = {
                "id": item.id,
                "publisher": item.publisher,
                "xml": item.xml,
                "profile": hit.profile,
                "service": hit.service,
                "node": hit.node,
                "created": hit.created,
                "updated": hit.updated,
            }
            if item.parsed is not None:
                found["parsed"] = item.parsed
            results.append(found)
        return results

    async def get_node_state(self, profile: str, service: str, node: str) -> NodeState:
        """The node's cache state (GetNodeState); ``none`` for a node never seen."""
        record = await self._db.nodes.get_node(profile, service, node)
        if record is None:
            return {
                "state": "none",
                "analyser": "",
                "type": "",
                "subtype": "",
                "item_count": 0,
                "synced_at": 0.0,
                "current": False,
                "reason": "",
            }
        synced_at = float(record.extra.get("synced_at", 0.0))
        return {
            "state": record.sync_state,
            "analyser": record.analyser or "",
            "type": record.type or "",
            "subtype": record.subtype or "",
            "item_count": await self._db.items.count_items(record.id),
            "synced_at": synced_at,
            "current": self.currency.is_current((profile, service, node)),
            "reason": str(record.extra.get("reason", "")),
        }

    async def sync(self, profile: str, service: str, node: str) -> None:
        """(Re)synchronise a node now, whatever its analysis says; returns once started.

        A node never analysed is analysed first (from its newest items, asked of the
        server), so that it gets its analyser's type and parser; then it is marked to be
        kept synchronised (also through later analyses) and its sync starts.

        Raises:
            NotConnected: the profile is not connected.

        .. versionchanged:: a node never analysed is analysed first, instead of being
           marked analysed without an analyser.
        """
        if not self._source.is_connected(profile):
            raise NotConnected(f"profile {profile!r} is not connected")
        record = await self.analysis.analyse_for_sync(profile, service, node)
        self.scheduler.schedule(record.id)

    async def purge(self, filters: Mapping[str, Any]) -> int:
        """Remove cached items matching ``filters``; returns how many went.

        A node that lost items is no longer complete: it is not served until resynchronised.

        Raises:
            InvalidArgument: an unknown filter or a value of the wrong type.
        """
        unknown = sorted(set(filters) - _PURGE_KEYS)
        if unknown:
            raise InvalidArgument(
                f"unknown Purge filter(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_PURGE_KEYS))}"
            )
        lists: dict[str, list[str] | None] = {}
        for key in ("profiles", "services", "nodes", "types"):
            value = filters.get(key)
            if value is not None and (
                not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value)
            ):
                raise InvalidArgument(f"Purge filter {key} must be a list of strings")
            lists[key] = None if value is None else list(value)
        older_than = filters.get("older_than")
        if older_than is not None and (
            isinstance(older_than, bool) or not isinstance(older_than, int | float)
        ):
            raise InvalidArgument("Purge filter older_than must be a timestamp (a number)")
        # Read before the purge, which sets the nodes losing items to "none" itself.
        records = await self._db.nodes.list_nodes()
        removed = await self._db.items.purge_items(
            profiles=lists["profiles"],
            services=lists["services"],
            nodes=lists["nodes"],
            types=lists["types"],
            older_than=None if older_than is None else float(older_than),
        )
        for record in records:
            if not _purge_covers(record, lists):
                continue
            if older_than is None:
                # Every item went: the node leaves the cache, and the subscription Roost
                # made for it leaves the server. Read again, it is analysed anew.
                await self._forget_node(record)
                released = await self.subscriptions.release(
                    record.profile, record.service, record.name
                )
                if record.extra.get("user_subscribed") and not released:
                    # The person's own subscription stays: so do its events.
                    await self._remember_user_subscription(node_key(record))
            elif removed and (record.sync_state == "completed" or is_complete(record)):
                # A failed sync's intact copy (served offline) is no longer whole either.
                self.currency.drop(node_key(record))
                await self.scheduler.set_state(record, "none", reason="items purged from the cache")
        return removed

    async def reset(self) -> None:
        """Empty the cache: every node and item is forgotten, and the subscriptions Roost
        made for the cache are removed from the servers (a profile offline now: at its
        next connection)."""
        await self.scheduler.cancel_all()
        self.currency.clear()
        self.analysis.clear()
        # The person's own subscriptions are not the cache's: they stay, and so does
        # hearing them; the cache's own go from the servers, and are heard no more.
        persons = [
            node_key(record)
            for record in await self._db.nodes.list_nodes()
            if record.extra.get("user_subscribed")
        ]
        await self._db.nodes.reset_all_nodes()
        await self.subscriptions.release_all()
        self._subscribed.clear()
        for key in persons:
            await self._remember_user_subscription(key)

    def forget_profile(self, profile: str) -> None:
        """Drop what is kept in memory of a deleted profile's nodes."""
        self._prefetcher.forget_profile(profile)
        self.analysis.forget_profile(profile)
        self.currency.drop_profile(profile)

    async def _forget_node(self, record: NodeRecord) -> None:
        key = node_key(record)
        self.currency.release_hold(key)
        await self.scheduler.cancel(record.id)
        self.currency.drop(key)
        self.analysis.forget_node(key)
        self._subscribed.discard(key)
        await self._db.nodes.delete_node(record.id)
        self._events.publish(SyncStateChanged(record.profile, record.service, record.name, "none"))

    async def _leave_cache(self, record: NodeRecord, reason: str) -> None:
        """The node's new analysis does not keep it: its copy goes, and the subscription
        the cache made for it goes from the server (now, or at the profile's next
        connection); the record stays, with its analysis, in state ``none``."""
        key = node_key(record)
        await self.scheduler.cancel(record.id)
        self.currency.release_hold(key)
        self.currency.drop(key)
        removed = await self._db.items.clear_node(record.id)
        if not record.extra.get("user_subscribed"):
            # The person's own subscription stays, and so do its events.
            self._subscribed.discard(key)
            await self._db.nodes.set_subscribed(record.id, False)
        await self.scheduler.set_state(record, "none", reason=reason)
        await self.subscriptions.release(record.profile, record.service, record.name)
        log.info("%s/%s: left the cache (%s); %d items dropped", key[1], key[2], reason, removed)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ProfileConnected):
            self._spawn(self._resync_profile(event.profile, time.monotonic()))
        elif isinstance(event, ContactChanged):
            self._spawn(self._contact_changed(event.profile, event.contact))
        elif isinstance(event, ProfileDisconnected):
            moment = time.time()
            # A held node still waits for the notification of Roost's own change: it is
            # not recorded, so offline reads count its age from its sync (an upper bound).
            self._remember_current(self.currency.drop_profile(event.profile), moment)

    def _remember_current(self, records: list[NodeRecord], moment: float) -> None:
        """Record that these nodes' copies were current at ``moment`` (for offline reads).

        Only nodes kept current by events: a periodically refreshed copy is as old as its
        last refresh, which ``synced_at`` says already.
        """
        node_ids = [record.id for record in records if record.subscribed]
        if not node_ids:
            return
        task = asyncio.get_running_loop().create_task(self._record_logged(node_ids, moment))
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    async def _record_logged(self, node_ids: list[int], moment: float) -> None:
        # Checked as each write comes: a node whose resync began meanwhile (a quick
        # reconnection) is the sync's to write.
        idle = (node_id for node_id in node_ids if not self.scheduler.is_syncing(node_id))
        try:
            await record_current_until(self._db.nodes, idle, moment)
        except Exception:
            log.exception("recording when cached nodes were last current failed")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resync_profile(self, profile: str, connected_at: float) -> None:
        """After a connection (at ``connected_at``, ``time.monotonic``): resynchronise
        every node of the profile that is cached, and remove the subscriptions of nodes
        that left the cache while it was offline.

        A node whose sync started since the connection is synchronised under it already
        (a ``Cache.Sync`` or a read right after ``Connect``, which can end before this
        runs on a busy machine): it is not synchronised a second time."""
        wanted: set[tuple[str, str]] = set()
        for record in await self._db.nodes.list_nodes(profile=profile):
            if record.extra.get("to_sync"):
                wanted.add((record.service, record.name))
                if not self.scheduler.started_since(record.id, connected_at):
                    self.scheduler.schedule(record.id)
        await self.subscriptions.release_unused(profile, lambda s, n: (s, n) in wanted)
        await self.analysis.probe_contacts(profile)

    async def _contact_changed(self, profile: str, contact: Mapping[str, Any]) -> None:
        """Currency follows the roster: a contact whose presence the profile now receives
        brings its PEP nodes' notifications (a node held back for lack of them is
        synchronised); a contact lost takes them away (its nodes are no longer current
        and are resynchronised, which finds another way to keep them current or marks
        them ``no_sync``)."""
        if not self._source.is_connected(profile):
            return  # the resync at connection decides with the roster as it then is
        jid = str(contact.get("jid", ""))
        receives = not contact.get("removed") and contact.get("subscription") in ("to", "both")
        for record in await self._db.nodes.list_nodes(profile=profile):
            if record.service != jid or not record.extra.get("to_sync"):
                continue
            if receives and record.sync_state in ("no_sync", "error", "none"):
                self.scheduler.schedule(record.id)
            elif not receives and record.extra.get("kept_by") == "presence":
                self.currency.drop(node_key(record))
                log.info("%s/%s: %s no longer shares its presence; resync", jid, record.name, jid)
                await self.scheduler.set_state(
                    record,
                    "none",
                    reason=f"{jid} no longer shares its presence with this account; resync pending",
                )
                self.scheduler.schedule(record.id)

    async def _record_changed(self, record: NodeRecord) -> None:
        """The node's rows or record changed outside a sync: serve the fresh record (and
        so no answer read against the old one), unless the node is not served now."""
        self.currency.refresh(record)

    # -- subscriptions the person makes -------------------------------------------------

    async def user_subscribed(self, profile: str, service: str, node: str) -> None:
        """The person subscribed to the node: its events are heard from now on (also after
        a restart), and a subscription the cache had made for it is theirs from now on:
        the cache will never remove it."""
        await self.subscriptions.adopt(profile, service, node)
        await self._remember_user_subscription((profile, service, node))

    async def _remember_user_subscription(self, key: NodeKey) -> None:
        """Hear the node's events, also after a restart (kept with the node's record)."""
        self._subscribed.add(key)
        record = await self._db.nodes.get_or_create_node(*key)
        await self._db.nodes.set_subscribed(record.id, True)
        await self._db.nodes.update_extra(record.id, {"user_subscribed": True})

    async def user_unsubscribed(self, profile: str, service: str, node: str) -> None:
        """The person removed the account's subscription to the node: if it kept a cached
        node current, that node is current no more and is resynchronised (which asks for
        a subscription of the cache's own, or marks it ``no_sync``)."""
        await self.subscriptions.forget(profile, service, node)
        self._subscribed.discard((profile, service, node))
        record = await self._db.nodes.get_node(profile, service, node)
        if record is not None:
            await self._db.nodes.set_subscribed(record.id, False)
            await self._db.nodes.update_extra(record.id, {"user_subscribed": False})
        if record is None or record.extra.get("kept_by") != "subscription":
            return
        self.currency.drop(node_key(record))
        await self.scheduler.set_state(
            record, "none", reason="unsubscribed on request; resync pending"
        )
        if record.extra.get("to_sync"):
            self.scheduler.schedule(record.id)

    async def release_profile(self, profile: str) -> None:
        """The profile is about to be deleted: remove the subscriptions Roost made for the
        cache from the servers while its session is still up."""
        await self.subscriptions.release_all(profile)


def item_from_record_parts(raw: Mapping[str, Any], parsed: Any) -> dict[str, Any]:
    """An event item record with ``parsed`` (JSON text, as GetItems gives it) added when
    there is parsed data."""
    record = dict(raw)
    if parsed is not None:
        record["parsed"] = parsed_text(parsed)
    return record


def _purge_covers(record: NodeRecord, lists: Mapping[str, list[str] | None]) -> bool:
    checks = (
        ("profiles", record.profile),
        ("services", record.service),
        ("nodes", record.name),
        ("types", record.type),
    )
    return all(
        (allowed := lists[key]) is None or (value is not None and value in allowed)
        for key, value in checks
    )
