"""PubsubCache: the transparent pubsub cache of DESIGN.md.

It sits behind :class:`roost.service.pubsub.operations.PubsubService` through the cache
seam: it answers GetItems when a node is synchronised and current, analyses nodes the
server path met, keeps synchronised nodes current from events (before frontends hear of
them), and runs syncs — one per node at a time, retried with backoff after a failure,
resumed incrementally after a reconnection or a restart.

A node is served from the database only while it is *current*: synchronised
(``completed``) during this run of the daemon with its profile connected since. A
disconnection, a restart or a crash (a node left ``in_progress``) makes it not current
until a resync, which starts by itself when the profile is connected. While its profile
is offline, a node whose copy is complete is served with its age (``offline.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from roost.service.cache.analysers import Analyser, AnalyserRegistry, AnalysisContext
from roost.service.cache.offline import answer_offline, record_current_until
from roost.service.cache.prefetch import Prefetcher
from roost.service.cache.reads import answer_from_store, item_from_record
from roost.service.cache.reconcile import NodeReconciler
from roost.service.cache.source import SyncSource, is_pep_service
from roost.service.cache.stored_form import payload_namespaces, stored_form
from roost.service.cache.subscriptions import CacheSubscriptions
from roost.service.cache.sync import DEFAULT_MIN_FREE_BYTES, NodeSynchroniser, SyncResult
from roost.service.errors import InvalidArgument, NotConnected
from roost.service.events import (
    ContactChanged,
    Event,
    EventHub,
    ItemsEvent,
    ProfileConnected,
    ProfileDisconnected,
    SyncProgress,
    SyncStateChanged,
)
from roost.service.pubsub.model import ItemsReply, ItemsRequest, PubsubItem
from roost.storage import Database, NodeRecord
from roost.storage.errors import InvalidQuery
from roost.storage.item_records import ItemInput

log = logging.getLogger(__name__)

DEFAULT_MAX_ITEMS_PER_NODE = 5_000
# Contacts asked at once for the nodes to prefetch, after a connection.
PROBE_CONCURRENCY = 4
# Dropped notifications are logged at most this often per profile (seconds).
DROP_LOG_INTERVAL = 60.0
# How long a node Roost changed waits for the change's notification before a resync.
HOLD_SECONDS = 10.0
# Hot answers kept in memory: at most this many answers, holding at most this many items
# in all (a few tens of MB of item XML at most).
HOT_REPLIES = 1_024
HOT_ITEMS = 20_000
# Analysis looks at the payload namespaces of this many items of a first answer.
ANALYSED_ITEMS = 10
# Waits before retrying a node whose sync failed, by attempt; the last one repeats.
RETRY_DELAYS = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0)
_PURGE_KEYS = frozenset({"profiles", "services", "nodes", "types", "older_than"})
NodeKey = tuple[str, str, str]
# A notification a held node waits for: its kind (items, retract, purge) and item id
# (None: any item, for a publication whose id the server picks, or a purge).
Awaited = tuple[str, str | None]


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
        self._sync = NodeSynchroniser(
            db, source, max_items_per_node=max_items_per_node, min_free_bytes=min_free_bytes
        )
        self.subscriptions = CacheSubscriptions(db, source)
        self._limit = max_items_per_node
        self._reconciler = NodeReconciler(
            db, source, self._record_changed, lambda record: self._resync_now(record)
        )
        self._prefetcher = Prefetcher(
            self._sync_and_wait,
            lambda: len(self._tasks),
            enabled=prefetch,
            max_nodes=prefetch_max_nodes,
        )
        self._current: dict[NodeKey, NodeRecord] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._buffered: dict[int, list[ItemsEvent]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._background: set[asyncio.Task[Any]] = set()
        # Writes of when nodes were last current: awaited by close(), not cancelled.
        self._recording: set[asyncio.Task[None]] = set()
        self._indexed: set[str] = set()
        self._moves: dict[str, bool] = {}
        self._analysing: set[tuple[str, str, str, bool]] = set()
        # Nodes learnt from notifications that no analyser prefetches: not analysed again
        # at each notification (a read still analyses them).
        self._not_prefetched: set[NodeKey] = set()
        # Contacts' nodes a probe found absent or unreadable in this run.
        self._absent: set[NodeKey] = set()
        self._analysed: set[NodeKey] = set()
        # Served nodes Roost itself is changing: their record, the notifications awaited
        # (counted: each change needs its own), and the timer that gives up waiting.
        self._held: dict[NodeKey, tuple[NodeRecord, Counter[Awaited], asyncio.TimerHandle]] = {}
        # Recent answers, each with the node record it was read against: every change
        # to a served node replaces its record in ``_current`` (or removes it), so an
        # answer is reused only while nothing changed.
        self._replies: OrderedDict[tuple[NodeKey, ItemsRequest], tuple[NodeRecord, ItemsReply]]
        self._replies = OrderedDict()
        self._hot_items = 0
        # Nodes whose events the profile chose to hear beyond its own account and its
        # contacts: those it (or the cache) is subscribed to.
        self._subscribed: set[NodeKey] = set()
        # Nodes being synchronised: the sync may have just subscribed to them.
        self._syncing: dict[int, NodeKey] = {}
        self._syncing_keys: set[NodeKey] = set()
        self._dropped: dict[str, int] = {}
        self._dropped_logged: dict[str, float] = {}
        self._unsubscribe = events.subscribe(self._on_event)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Recover from the previous run: a node left ``in_progress`` was interrupted.
        Learn which nodes the profiles are subscribed to (whose events are heard)."""
        for record in await self._db.nodes.list_nodes():
            if record.extra.get("user_subscribed") or record.extra.get("kept_by") == "subscription":
                self._subscribed.add(_key(record))
        for sub in await self._db.cache_subscriptions.list_subscriptions():
            self._subscribed.add((sub.profile, sub.service, sub.node))
        for node in await self._db.nodes.list_nodes(states=["in_progress"]):
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
        for _record, _ids, timer in self._held.values():
            timer.cancel()
        for handle in self._timers.values():
            handle.cancel()
        # The moment is taken before the syncs are cancelled: what is current now was
        # current until now, whatever the cancellations then do to the node states.
        self._remember_current(list(self._current.values()), time.time())
        self._current.clear()
        await self._prefetcher.close()
        await self._reconciler.close()
        await asyncio.gather(*self._recording, return_exceptions=True)
        tasks = [*self._tasks.values(), *self._background]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
        record = self._current.get(key)
        if record is None:
            return None
        hot = self._replies.get((key, request))
        if hot is not None and hot[0] is record:
            self._replies.move_to_end((key, request))
            reply: ItemsReply | None = hot[1]
        else:
            reply = await answer_from_store(self._db.items, record, request)
            if reply is not None and len(reply.items) <= HOT_ITEMS:
                stale = self._replies.pop((key, request), None)
                if stale is not None:
                    self._hot_items -= len(stale[1].items)
                self._replies[(key, request)] = (record, reply)
                self._hot_items += len(reply.items)
                while self._hot_items > HOT_ITEMS or len(self._replies) > HOT_REPLIES:
                    _old_key, (_record, dropped) = self._replies.popitem(last=False)
                    self._hot_items -= len(dropped.items)
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
        if record is None or record.id in self._tasks:
            return None
        reply = await answer_offline(self._db.items, record, request)
        # The profile may have connected during the read and a resync begun changing rows.
        return None if record.id in self._tasks else reply

    async def server_answered(
        self, profile: str, service: str, node: str, request: ItemsRequest, reply: ItemsReply
    ) -> None:
        """Analyse a node the first time the server path meets it.

        The analysis runs beside the reply, not before it: the frontend's answer does not
        wait for it. Nodes analysed already cost one set lookup.
        """
        key = (profile, service, node)
        if key in self._analysed:
            return
        self._spawn(self._analyse_logged(profile, service, node, reply.items[:ANALYSED_ITEMS]))

    async def _analyse_logged(
        self, profile: str, service: str, node: str, items: list[PubsubItem]
    ) -> None:
        try:
            await self._analyse(profile, service, node, items)
        except Exception:
            log.exception("%s/%s: analysis failed", service, node)

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
            or key in self._syncing_keys
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
        record = await self._db.nodes.get_node(event.profile, event.service, event.node)
        if record is None or not record.extra.get("analysed"):
            if event.kind == "items" and event.items and self._may_prefetch(event):
                items = [_item(raw) for raw in event.items]
                await self._analyse(event.profile, event.service, event.node, items, event=True)
            return None
        if event.kind == "delete":
            await self._forget_node(record)
            # A deleted node takes its subscriptions with it.
            await self.subscriptions.forget(record.profile, record.service, record.name)
            return None
        rows = self._stored_rows(record, event)
        if record.id in self._tasks:
            # A sync is storing the node in server order; apply after it, in order.
            self._buffered.setdefault(record.id, []).append(event)
        elif record.sync_state == "completed":
            await self._apply(record, event, rows)
            await self._release(_key(record), event)
        analyser = self._analyser_of(record)
        if not rows or analyser is None or analyser.parser is None:
            return None
        records = [
            item_from_record_parts(raw, row.parsed)
            for raw, row in zip(event.items, rows, strict=True)
        ]
        return replace(event, items=records)

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

    def _stored_rows(self, record: NodeRecord, event: ItemsEvent) -> list[ItemInput]:
        """The stored form of a publication's items (parsed once for cache and event)."""
        if event.kind != "items":
            return []
        analyser = self._analyser_of(record)
        parser = analyser.parser if analyser else None
        where = f"{record.service}/{record.name}"
        return [stored_form(_item(raw), parser, where) for raw in event.items]

    def hold(self, service: str, node: str, item_ids: list[str] | None, *, kind: str) -> None:
        """Roost is changing the node: stop serving cached copies of it until the
        notification of this change (``kind``: items, retract, purge or delete; of
        ``item_ids``, None: of any item) has been applied to them.

        Changes add up while a node is held: each waits for its own notification, so a
        publication and then the retraction of the same item wait for both.
        """
        loop = asyncio.get_running_loop()
        awaited: Counter[Awaited] = Counter(
            [(kind, None)] if item_ids is None else [(kind, i) for i in item_ids]
        )
        for key, (record, waiting, timer) in list(self._held.items()):
            if key[1:] == (service, node):
                # Already waiting for an earlier change: wait for this one too.
                timer.cancel()
                waiting.update(awaited)
                timer = loop.call_later(HOLD_SECONDS, self._hold_expired, key)
                self._held[key] = (record, waiting, timer)
        for key in [k for k in self._current if k[1:] == (service, node)]:
            record = self._current.pop(key)
            if key in self._held:
                continue  # counted above; one timer per held node
            timer = loop.call_later(HOLD_SECONDS, self._hold_expired, key)
            self._held[key] = (record, Counter(awaited), timer)

    def unhold(self, service: str, node: str) -> None:
        """The change failed: serve the cached copies again."""
        for key in [k for k in self._held if k[1:] == (service, node)]:
            record, _ids, timer = self._held.pop(key)
            timer.cancel()
            self._current[key] = record

    def _hold_expired(self, key: NodeKey) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            log.info("%s/%s: no notification of Roost's own change; resync", key[1], key[2])
            self._schedule(held[0].id, delay=0.0)

    async def _release(self, key: NodeKey, event: ItemsEvent) -> None:
        """An applied notification may be (the last of) those a held node waits for."""
        held = self._held.get(key)
        if held is None:
            return
        waiting = held[1]
        # One awaited change per item the notification names (a purge names none).
        named: list[str | None] = [str(raw["id"]) for raw in event.items]
        for item_id in named or [None]:
            for awaited in ((event.kind, item_id), (event.kind, None)):
                if waiting[awaited] > 0:
                    waiting[awaited] -= 1
                    break
        if any(count > 0 for count in waiting.values()):
            return
        fresh = await self._db.nodes.get_node_by_id(held[0].id)
        # While the record was read, Roost may have made another change (hold() adds to
        # ``waiting``), or the hold may have ended (expiry, disconnection): check again.
        held = self._held.get(key)
        if held is None or held[1] is not waiting or any(n > 0 for n in waiting.values()):
            return
        held[2].cancel()
        del self._held[key]
        if fresh.sync_state == "completed":
            self._current[key] = fresh

    # -- Cache interface ----------------------------------------------------------------

    async def search(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Items across the cache matching ``query`` (DESIGN.md's Search keys).

        Raises:
            InvalidArgument: an unknown key or operator, a malformed path or value.
        """
        try:
            hits = await self._db.search.search(query)
        except InvalidQuery as exc:
            raise InvalidArgument(str(exc)) from None
        results = []
        for hit in hits:
            record = item_from_record(hit.record()).to_record()
            record.update(
                profile=hit.profile,
                service=hit.service,
                node=hit.node,
                created=hit.created,
                updated=hit.updated,
            )
            results.append(record)
        return results

    async def get_node_state(self, profile: str, service: str, node: str) -> dict[str, Any]:
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
            "current": (profile, service, node) in self._current,
            "reason": str(record.extra.get("reason", "")),
        }

    async def sync(self, profile: str, service: str, node: str) -> None:
        """(Re)synchronise a node now, whatever its analysis says; returns once started.

        Raises:
            NotConnected: the profile is not connected.
        """
        if not self._source.is_connected(profile):
            raise NotConnected(f"profile {profile!r} is not connected")
        record = await self._db.nodes.get_or_create_node(profile, service, node)
        await self._db.nodes.update_extra(record.id, {"analysed": True, "to_sync": True})
        self._schedule(record.id, delay=0.0)

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
        removed = await self._db.items.purge_items(
            profiles=lists["profiles"],
            services=lists["services"],
            nodes=lists["nodes"],
            types=lists["types"],
            older_than=None if older_than is None else float(older_than),
        )
        for record in await self._db.nodes.list_nodes():
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
                    await self._remember_user_subscription(_key(record))
            elif removed and record.sync_state == "completed":
                self._current.pop(_key(record), None)
                await self._set_state(record, "none", reason="items purged from the cache")
        return removed

    async def reset(self) -> None:
        """Empty the cache: every node and item is forgotten, and the subscriptions Roost
        made for the cache are removed from the servers (a profile offline now: at its
        next connection)."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._current.clear()
        self._buffered.clear()
        for _record, _ids, timer in self._held.values():
            timer.cancel()
        self._held.clear()
        self._analysed.clear()
        self._not_prefetched.clear()
        # The person's own subscriptions are not the cache's: they stay, and so does
        # hearing them; the cache's own go from the servers, and are heard no more.
        persons = [
            _key(record)
            for record in await self._db.nodes.list_nodes()
            if record.extra.get("user_subscribed")
        ]
        await self._db.nodes.reset_all_nodes()
        await self.subscriptions.release_all()
        self._subscribed.clear()
        for key in persons:
            await self._remember_user_subscription(key)

    # -- analysis -----------------------------------------------------------------------

    async def _analyse(
        self, profile: str, service: str, node: str, items: list[PubsubItem], *, event: bool = False
    ) -> None:
        # A read's analysis and a notification's are told apart: the latter keeps a node
        # only if it is to be prefetched, and must not make a read's analysis give up.
        key = (profile, service, node, event)
        if key in self._analysing:
            return
        self._analysing.add(key)
        try:
            await self._analyse_once(profile, service, node, items, event)
        finally:
            self._analysing.discard(key)

    async def _analyse_once(
        self, profile: str, service: str, node: str, items: list[PubsubItem], event: bool
    ) -> None:
        """Analyse the node; ``event``: it was learnt from a notification, not a read,
        and is kept only when its analyser prefetches (nothing is stored otherwise)."""
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
        for key in analyser.indexed_keys:
            if key not in self._indexed:
                await self._db.items.ensure_parsed_key_index(key)
                self._indexed.add(key)
        if to_sync and self._source.is_connected(profile):
            if event:
                self._prefetcher.offer(profile, record.id)
            else:
                self._schedule(record.id, delay=0.0)

    def _analyser_of(self, record: NodeRecord) -> Analyser | None:
        return self.registry.get(record.analyser) if record.analyser else None

    # -- syncs --------------------------------------------------------------------------

    def _schedule(self, node_id: int, delay: float) -> None:
        """Start the node's sync after ``delay`` seconds, unless one runs already."""
        if node_id in self._tasks:
            return
        self._later(node_id, delay)

    def _later(self, node_id: int, delay: float) -> None:
        """Plan the node's next sync in ``delay`` seconds, replacing any plan.

        Also called by a running sync for its own retry or refresh: the timer fires after
        that sync's task has ended.
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
            return
        task = asyncio.create_task(self._run_sync(node_id), name=f"sync node {node_id}")
        self._tasks[node_id] = task
        task.add_done_callback(lambda _t: self._sync_ended(node_id))

    def _sync_ended(self, node_id: int) -> None:
        self._tasks.pop(node_id, None)
        key = self._syncing.pop(node_id, None)
        if key is not None:
            self._syncing_keys.discard(key)
        self._prefetcher.sync_ended()

    async def _sync_and_wait(self, node_id: int) -> None:
        """Start the node's sync (unless one runs) and return when it has ended."""
        self._schedule(node_id, delay=0.0)
        task = self._tasks.get(node_id)
        if task is not None:
            # wait(), not await: the prefetch worker being cancelled must not cancel the
            # sync itself (close() does that).
            await asyncio.wait({task})

    async def _run_sync(self, node_id: int) -> None:
        record = await self._db.nodes.get_node_by_id(node_id)
        where = f"{record.service}/{record.name}"
        if not self._source.is_connected(record.profile):
            return
        analyser = self._analyser_of(record)
        self._current.pop(_key(record), None)
        self._buffered[node_id] = []
        self._syncing[node_id] = _key(record)
        self._syncing_keys.add(_key(record))
        record = await self._set_state(record, "in_progress", reason="")

        def progress(done: int, total: int) -> None:
            self._events.publish(
                SyncProgress(record.profile, record.service, record.name, done, total)
            )

        started = time.monotonic()
        try:
            result = await self._sync.run(
                record,
                analyser,
                progress,
                allow_without_events=bool(analyser and analyser.refresh_interval),
            )
            if not result.currency.current and not (analyser and analyser.refresh_interval):
                self._buffered.pop(node_id, None)
                await self._set_state(record, "no_sync", reason=result.currency.reason)
                log.info("%s: not cached: %s", where, result.currency.reason)
                return
            if result.currency.via == "subscription":
                self._subscribed.add(_key(record))
            buffered = self._buffered.pop(node_id, [])
            if buffered:
                # The sync wrote what it learnt into the node's extra (the server's item
                # limit among it): replay with that, or a replayed publication would not
                # drop what the server dropped.
                record = await self._db.nodes.get_node_by_id(node_id)
            for event in buffered:
                await self._apply(record, event)
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
            if not result.currency.current and analyser and analyser.refresh_interval:
                self._later(node_id, analyser.refresh_interval)
        except asyncio.CancelledError:
            self._buffered.pop(node_id, None)
            # Not shielded: a shielded write would go on after close() returned and the
            # database was closed under it. Cancellation is delivered once, so this runs.
            await self._set_state(record, "none", reason="sync interrupted")
            raise
        except Exception as exc:
            self._buffered.pop(node_id, None)
            attempts = int(record.extra.get("attempts", 0)) + 1
            delay = RETRY_DELAYS[min(attempts, len(RETRY_DELAYS)) - 1]
            delay *= random.uniform(0.9, 1.1)  # spread retries of many nodes
            log.warning("%s: sync failed (%s); retry %d in %.0f s", where, exc, attempts, delay)
            await self._set_state(
                record, "error", reason=str(exc) or type(exc).__name__, attempts=attempts
            )
            if self._source.is_connected(record.profile):
                self._later(node_id, delay)

    async def _complete(self, record: NodeRecord, result: SyncResult) -> NodeRecord:
        record = await self._set_state(
            record,
            "completed",
            reason="" if result.currency.current else result.currency.reason,
            attempts=0,
            synced_once=True,
            synced_at=time.time(),
            truncated=result.truncated,
            total=result.total,
        )
        self._current[_key(record)] = record
        return record

    async def _set_state(self, record: NodeRecord, state: str, **extra: Any) -> NodeRecord:
        updated = await self._db.nodes.set_sync_state(record.id, state, extra=extra)
        self._events.publish(SyncStateChanged(record.profile, record.service, record.name, state))
        return updated

    # -- events -------------------------------------------------------------------------

    async def _apply(
        self, record: NodeRecord, event: ItemsEvent, rows: list[ItemInput] | None = None
    ) -> None:
        items = self._db.items
        if event.kind == "items":
            if rows is None:
                rows = self._stored_rows(record, event)
            keep = False
            before = await items.get_items(record.id, max_items=1)
            newest = before.last
            added = 0
            for row in rows:
                if row.item_id == newest:
                    keep = True  # the newest item stays the newest either way
                elif await items.get_item(record.id, row.item_id) is None:
                    added += 1
                elif not keep:
                    moves = await self._republish_moves(record, row.item_id, newest)
                    if moves is None:
                        self._current.pop(_key(record), None)
                        self._schedule(record.id, delay=0.0)
                        return
                    keep = not moves
            await items.upsert_items(record.id, rows, keep_position=keep)
            if added:
                await self._follow_server_limit(record)
                server_limit = record.extra.get("server_max_items")
                bounded = isinstance(server_limit, int) and server_limit <= self._limit
                # A node the server trims within the cache's limit stays within it; any
                # other is counted.
                if not bounded and await items.count_items(record.id) > self._limit:
                    # Past the cache's own limit: a bounded resync keeps the newest and
                    # learns the node's count again (no node grows without bound).
                    self._resync_now(record)
                    return
                self._reconciler.publication_applied(record)
        elif event.kind == "retract":
            await items.delete_items(record.id, [str(raw["id"]) for raw in event.items])
        elif event.kind == "purge":
            await items.clear_node(record.id)
        key = _key(record)
        if key in self._current:
            # The reads use the record's extra (truncation, totals): keep it fresh. Not
            # when the node was held or dropped during the read: it stays out.
            fresh = await self._db.nodes.get_node_by_id(record.id)
            if key in self._current:
                self._current[key] = fresh

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

    def forget_profile(self, profile: str) -> None:
        """Drop what is kept in memory of a deleted profile's nodes."""
        self._prefetcher.forget_profile(profile)
        self._analysed = {key for key in self._analysed if key[0] != profile}
        self._not_prefetched = {key for key in self._not_prefetched if key[0] != profile}
        self._absent = {key for key in self._absent if key[0] != profile}
        for key in [key for key in self._current if key[0] == profile]:
            del self._current[key]

    async def _forget_node(self, record: NodeRecord) -> None:
        held = self._held.pop(_key(record), None)
        if held is not None:
            held[2].cancel()
        task = self._tasks.get(record.id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._current.pop(_key(record), None)
        self._replies_forget(_key(record))
        self._analysed.discard(_key(record))
        self._subscribed.discard(_key(record))
        await self._db.nodes.delete_node(record.id)
        self._events.publish(SyncStateChanged(record.profile, record.service, record.name, "none"))

    def _on_event(self, event: Event) -> None:
        if isinstance(event, ProfileConnected):
            self._spawn(self._resync_profile(event.profile))
        elif isinstance(event, ContactChanged):
            self._spawn(self._contact_changed(event.profile, event.contact))
        elif isinstance(event, ProfileDisconnected):
            moment = time.time()
            current = [self._current.pop(k) for k in list(self._current) if k[0] == event.profile]
            # A held node still waits for the notification of Roost's own change: it is
            # not recorded, so offline reads count its age from its sync (an upper bound).
            for key in [k for k in self._held if k[0] == event.profile]:
                self._held.pop(key)[2].cancel()
            self._remember_current(current, moment)

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
        idle = (node_id for node_id in node_ids if node_id not in self._tasks)
        try:
            await record_current_until(self._db.nodes, idle, moment)
        except Exception:
            log.exception("recording when cached nodes were last current failed")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _resync_profile(self, profile: str) -> None:
        """After a connection: resynchronise every node of the profile that is cached, and
        remove the subscriptions of nodes that left the cache while it was offline."""
        wanted: set[tuple[str, str]] = set()
        for record in await self._db.nodes.list_nodes(profile=profile):
            if record.extra.get("to_sync"):
                wanted.add((record.service, record.name))
                self._schedule(record.id, delay=0.0)
        await self.subscriptions.release_unused(profile, lambda s, n: (s, n) in wanted)
        await self._probe_contacts(profile)

    async def _probe_contacts(self, profile: str) -> None:
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
                    await self._analyse(profile, contact, node, items, event=True)
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
                self._schedule(record.id, delay=0.0)
            elif not receives and record.extra.get("kept_by") == "presence":
                self._current.pop(_key(record), None)
                self._replies_forget(_key(record))
                log.info("%s/%s: %s no longer shares its presence; resync", jid, record.name, jid)
                await self._set_state(
                    record,
                    "none",
                    reason=f"{jid} no longer shares its presence with this account; resync pending",
                )
                self._schedule(record.id, delay=0.0)

    def _resync_now(self, record: NodeRecord) -> None:
        """Stop serving the node and synchronise it again now."""
        self._current.pop(_key(record), None)
        self._replies_forget(_key(record))
        self._schedule(record.id, delay=0.0)

    async def _record_changed(self, record: NodeRecord) -> None:
        """The node's rows or record changed outside a sync: serve the fresh record (and
        so no answer read against the old one), unless the node is not served now."""
        key = _key(record)
        if key in self._current and record.sync_state == "completed":
            self._current[key] = record

    def _replies_forget(self, key: NodeKey) -> None:
        for reply_key in [k for k in self._replies if k[0] == key]:
            _record, dropped = self._replies.pop(reply_key)
            self._hot_items -= len(dropped.items)

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
        self._current.pop(_key(record), None)
        self._replies_forget(_key(record))
        await self._set_state(record, "none", reason="unsubscribed on request; resync pending")
        if record.extra.get("to_sync"):
            self._schedule(record.id, delay=0.0)

    async def release_profile(self, profile: str) -> None:
        """The profile is about to be deleted: remove the subscriptions Roost made for the
        cache from the servers while its session is still up."""
        await self.subscriptions.release_all(profile)


def item_from_record_parts(raw: Mapping[str, Any], parsed: Any) -> dict[str, Any]:
    """An event item record with ``parsed`` (JSON text) added when there is parsed data."""
    record = dict(raw)
    if parsed is not None:
        record["parsed"] = json.dumps(parsed, ensure_ascii=False)
    return record


def _key(record: NodeRecord) -> NodeKey:
    return (record.profile, record.service, record.name)


def _item(raw: Mapping[str, Any]) -> PubsubItem:
    return PubsubItem(
        id=str(raw["id"]), publisher=str(raw.get("publisher", "")), xml=str(raw.get("xml", ""))
    )


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
