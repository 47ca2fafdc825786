"""Node currency: which cached nodes may answer now, and the answers recently given.

A node is served from the database only while it is *current*: synchronised
(``completed``) during this run of the daemon with its profile connected since, and not
being changed by Roost itself (*held*, until the change's notification is applied:
read-your-writes). :class:`NodeCurrency` is the one place that says so; everything that
makes a node current or not (a sync ending, a disconnection, a contact lost, a change
Roost makes) goes through it.

Recent answers are kept with the node record they were read against: every change to a
served node replaces its record here (or removes it), so an answer is reused only while
nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable

from roost.service.events import ItemsEvent
from roost.service.pubsub.model import ItemsReply, ItemsRequest
from roost.storage import NodeRecord

log = logging.getLogger(__name__)

NodeKey = tuple[str, str, str]
# A notification a held node waits for: its kind (items, retract, purge) and item id
# (None: any item, for a publication whose id the server picks, or a purge).
Awaited = tuple[str, str | None]

# How long a node Roost changed waits for the change's notification before a resync.
HOLD_SECONDS = 10.0
# Hot answers kept in memory: at most this many answers, holding at most this many items
# in all (200 pages of 20; about 14 MB of items the size of a blog post's). Every kept
# item is an object the garbage collector walks in its young passes, which a sync makes
# frequent: 20,000 items made those passes 25-60 ms and the reads' p99 during a sync a
# fifth longer (docs/performance.md, "Responsiveness during a sync").
HOT_REPLIES = 1_024
HOT_ITEMS = 4_000


def node_key(record: NodeRecord) -> NodeKey:
    """The (profile, service, node) key of a node record."""
    return (record.profile, record.service, record.name)


class NodeCurrency:
    """What is current, what is held, and the recent answers.

    Args:
        resync: called with a node id when a held node's notification never came: the
            node must be synchronised again.
        load: reads a node's record afresh (after the notification a hold waited for).
    """

    def __init__(
        self,
        resync: Callable[[int], None],
        load: Callable[[int], Awaitable[NodeRecord]],
        *,
        hold_seconds: float = HOLD_SECONDS,
    ) -> None:
        self._resync = resync
        self._load = load
        self._hold_seconds = hold_seconds
        self._current: dict[NodeKey, NodeRecord] = {}
        # Served nodes Roost itself is changing: their record, the notifications awaited
        # (counted: each change needs its own), and the timer that gives up waiting.
        self._held: dict[NodeKey, tuple[NodeRecord, Counter[Awaited], asyncio.TimerHandle]] = {}
        self._replies: OrderedDict[tuple[NodeKey, ItemsRequest], tuple[NodeRecord, ItemsReply]]
        self._replies = OrderedDict()
        self._hot_items = 0

    # -- what is current ------------------------------------------------------------------

    def record(self, key: NodeKey) -> NodeRecord | None:
        """The record a current node is served with, None when it is not current."""
        return self._current.get(key)

    def is_current(self, key: NodeKey) -> bool:
        """Whether the node answers from the cache now."""
        return key in self._current

    def serve(self, record: NodeRecord) -> None:
        """The node is current from now on, served with ``record``."""
        self._current[node_key(record)] = record

    def refresh(self, record: NodeRecord) -> None:
        """The node's rows or record changed: serve the fresh record (and so no answer
        read against the old one), unless the node is not served now."""
        key = node_key(record)
        if key in self._current and record.sync_state == "completed":
            self._current[key] = record

    def drop(self, key: NodeKey) -> NodeRecord | None:
        """The node is not current any more; returns the record it was served with."""
        self.forget_replies(key)
        return self._current.pop(key, None)

    def drop_profile(self, profile: str) -> list[NodeRecord]:
        """No node of the profile is current (nor held) any more; returns the records of
        those that were current."""
        for key in [k for k in self._held if k[0] == profile]:
            self._held.pop(key)[2].cancel()
        return [self._current.pop(k) for k in list(self._current) if k[0] == profile]

    def current_records(self) -> list[NodeRecord]:
        """The records of every current node."""
        return list(self._current.values())

    def clear(self) -> None:
        """Nothing is current or held any more."""
        for _record, _ids, timer in self._held.values():
            timer.cancel()
        self._held.clear()
        self._current.clear()
        self._replies.clear()
        self._hot_items = 0

    # -- recent answers -------------------------------------------------------------------

    def recent_answer(self, key: NodeKey, request: ItemsRequest) -> ItemsReply | None:
        """The answer given to ``request`` while the node's record was the current one."""
        record = self._current.get(key)
        hot = self._replies.get((key, request))
        if record is None or hot is None or hot[0] is not record:
            return None
        self._replies.move_to_end((key, request))
        return hot[1]

    def remember_answer(
        self, key: NodeKey, request: ItemsRequest, record: NodeRecord, reply: ItemsReply
    ) -> None:
        """Keep ``reply`` for ``request``, read against ``record`` (bounded, LRU)."""
        if len(reply.items) > HOT_ITEMS:
            return
        stale = self._replies.pop((key, request), None)
        if stale is not None:
            self._hot_items -= len(stale[1].items)
        self._replies[(key, request)] = (record, reply)
        self._hot_items += len(reply.items)
        while self._hot_items > HOT_ITEMS or len(self._replies) > HOT_REPLIES:
            _old_key, (_record, dropped) = self._replies.popitem(last=False)
            self._hot_items -= len(dropped.items)

    def forget_replies(self, key: NodeKey) -> None:
        """Drop the recent answers of one node."""
        for reply_key in [k for k in self._replies if k[0] == key]:
            _record, dropped = self._replies.pop(reply_key)
            self._hot_items -= len(dropped.items)

    # -- holds: read-your-writes ----------------------------------------------------------

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
                timer = loop.call_later(self._hold_seconds, self._hold_expired, key)
                self._held[key] = (record, waiting, timer)
        for key in [k for k in self._current if k[1:] == (service, node)]:
            record = self._current.pop(key)
            if key in self._held:
                continue  # counted above; one timer per held node
            timer = loop.call_later(self._hold_seconds, self._hold_expired, key)
            self._held[key] = (record, Counter(awaited), timer)

    def unhold(self, service: str, node: str) -> None:
        """The change failed: serve the cached copies again."""
        for key in [k for k in self._held if k[1:] == (service, node)]:
            record, _ids, timer = self._held.pop(key)
            timer.cancel()
            self._current[key] = record

    def release_hold(self, key: NodeKey) -> None:
        """The node is held no more (it left the cache)."""
        held = self._held.pop(key, None)
        if held is not None:
            held[2].cancel()

    def _hold_expired(self, key: NodeKey) -> None:
        held = self._held.pop(key, None)
        if held is not None:
            log.info("%s/%s: no notification of Roost's own change; resync", key[1], key[2])
            self._resync(held[0].id)

    async def notification_applied(self, key: NodeKey, event: ItemsEvent) -> None:
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
        fresh = await self._load(held[0].id)
        # While the record was read, Roost may have made another change (hold() adds to
        # ``waiting``), or the hold may have ended (expiry, disconnection): check again.
        held = self._held.get(key)
        if held is None or held[1] is not waiting or any(n > 0 for n in waiting.values()):
            return
        held[2].cancel()
        del self._held[key]
        if fresh.sync_state == "completed":
            self._current[key] = fresh
