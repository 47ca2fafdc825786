"""Pubsub notifications: from a session's messages to ItemsEvent on the hub.

Only events sent by the entity hosting the node count (the pubsub service, or the PEP
owner's bare JID); anything else could be forged by any contact. Event items are
rewritten in the form a query returns (pubsub namespace). Whether a service's event
items match its query items is checked on the first event with a payload, by fetching
the item; where they differ (or the event has no payload), every item is fetched.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from roost.service.errors import RoostError
from roost.service.events import ItemsEvent
from roost.service.pubsub import protocol as p
from roost.service.pubsub.model import PubsubItem
from roost.service.xmpp.client import RoostClient

log = logging.getLogger(__name__)

# (client, service, node, item ids) -> the items as a query returns them
ItemFetcher = Callable[[RoostClient, str, str, tuple[str, ...]], Awaitable[list[PubsubItem]]]
EventSink = Callable[[ItemsEvent], Awaitable[None]]
EventFilter = Callable[[ItemsEvent], bool]

HANDLER_NAME = "Roost pubsub events"


def rewrite_item(event_item: ET.Element) -> PubsubItem:
    """An event ``<item>`` as the query form: same attributes and payload, pubsub ns."""
    item = p.element("item", p.NS_PUBSUB, **dict(event_item.attrib))
    for child in event_item:
        item.append(child)
    return PubsubItem(
        id=item.get("id", ""), publisher=item.get("publisher", ""), xml=p.item_text(item)
    )


class EventRouter:
    """Turns the pubsub notifications a client receives into ItemsEvents."""

    def __init__(
        self, fetch: ItemFetcher, sink: EventSink, accepts: EventFilter | None = None
    ) -> None:
        self._fetch = fetch
        self._sink = sink
        # Consulted before anything else is done with an event (completing it would send
        # a stanza to whoever sent it): an event nobody chose to hear is dropped here.
        self._accepts = accepts
        # The clients listened to, to stop listening (see detach_all).
        self._clients: list[RoostClient] = []
        # service JID -> whether its event items equal its query items
        self._matches: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Per profile, notifications waiting to be handled: they are handled one after
        # the other, in arrival order, even when one needs a fetch to complete, so that
        # the cache sees a node's publications in the order the server made them.
        self._pending: dict[str, deque[tuple[RoostClient, ET.Element]]] = {}

    def attach(self, profile: str, client: RoostClient) -> None:
        """Listen to ``client``'s pubsub notifications for ``profile``."""
        client.register_handler(
            Callback(
                HANDLER_NAME,
                MatchXPath(f"{{jabber:client}}message/{{{p.NS_EVENT}}}event"),
                lambda msg: self._enqueue(profile, client, msg.xml),
            )
        )
        self._clients = [c for c in self._clients if c.transport is not None or c is client]
        self._clients.append(client)

    def detach_all(self) -> None:
        """Stop listening to every client attached so far."""
        for client in self._clients:
            client.remove_handler(HANDLER_NAME)
        self._clients.clear()

    def _enqueue(self, profile: str, client: RoostClient, message: ET.Element) -> None:
        pending = self._pending.get(profile)
        if pending is not None:
            pending.append((client, message))
            return
        self._pending[profile] = deque([(client, message)])
        self._spawn(self._drain(profile))

    async def _drain(self, profile: str) -> None:
        pending = self._pending[profile]
        try:
            while pending:
                client, message = pending.popleft()
                await self._handle(profile, client, message)
        finally:
            del self._pending[profile]

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, profile: str, client: RoostClient, message: ET.Element) -> None:
        try:
            for event in self.events_of(profile, message):
                if self._accepts is not None and not self._accepts(event):
                    continue
                event = await self._complete(client, event)
                await self._sink(event)
        except RoostError as exc:
            log.warning("pubsub event for %s dropped: %s", profile, exc.message)
        except Exception:
            log.exception("pubsub event for %s failed", profile)

    @staticmethod
    def is_host(sender: str) -> bool:
        """Whether ``sender`` can be the entity hosting a node: a service or a PEP owner's
        bare JID. A notification names its node relative to its sender, so an event from
        a full JID (any client) is never taken for the node's host."""
        return bool(sender) and "/" not in sender

    def events_of(self, profile: str, message: ET.Element) -> list[ItemsEvent]:
        """The ItemsEvents one notification message carries (before completion)."""
        sender = message.get("from", "")
        event = message.find(f"{{{p.NS_EVENT}}}event")
        if event is None or not self.is_host(sender):
            return []
        out: list[ItemsEvent] = []
        for child in event:
            kind = child.tag.rpartition("}")[2]
            node = child.get("node", "")
            if kind == "items":
                published = [rewrite_item(i) for i in child.findall(f"{{{p.NS_EVENT}}}item")]
                retracted = [r.get("id", "") for r in child.findall(f"{{{p.NS_EVENT}}}retract")]
                if published:
                    records: list[dict[str, Any]] = [dict(i.to_record()) for i in published]
                    # An item without payload has only its id: mark it for completion.
                    for record, raw in zip(
                        records, child.findall(f"{{{p.NS_EVENT}}}item"), strict=True
                    ):
                        record["_payload"] = len(raw) > 0
                    out.append(ItemsEvent(profile, sender, node, "items", records))
                if retracted:
                    out.append(
                        ItemsEvent(profile, sender, node, "retract", [{"id": i} for i in retracted])
                    )
            elif kind in ("purge", "delete"):
                out.append(ItemsEvent(profile, sender, node, kind, []))
        return out

    async def _complete(self, client: RoostClient, event: ItemsEvent) -> ItemsEvent:
        if event.kind != "items":
            return event
        matches = self._matches.get(event.service)
        records = event.items
        with_payload = {r["id"] for r in records if r.pop("_payload")}
        missing = [r["id"] for r in records if r["id"] not in with_payload or matches is not True]
        if not missing:
            return event
        try:
            answered = await self._fetch(client, event.service, event.node, tuple(missing))
        except RoostError as exc:
            # Not readable (forbidden, a timeout): what the event said is handed on, but
            # it is not the items as a query gives them.
            log.warning(
                "%s/%s: the items a notification named could not be fetched (%s)",
                event.service,
                event.node,
                exc.message,
            )
            return ItemsEvent(
                event.profile, event.service, event.node, event.kind, records, complete=False
            )
        fetched = {item.id: item for item in answered}
        items: list[dict[str, Any]] = []
        complete = True
        for record in records:
            item = fetched.get(record["id"])
            if item is None:
                # Retracted or trimmed meanwhile: hand on what the event said. An item
                # that came without its payload is then incomplete.
                complete = complete and record["id"] in with_payload
                items.append(record)
                continue
            if matches is None and record["id"] in with_payload:
                matches = self._matches[event.service] = record["xml"] == item.xml
            items.append(dict(item.to_record()))
        return ItemsEvent(
            event.profile, event.service, event.node, event.kind, items, complete=complete
        )
