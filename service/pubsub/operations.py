"""PubsubService: the pubsub operations a frontend can ask of a profile.

It composes the server side (:class:`PubsubServer`), the read path
(:class:`ItemsReader`) and the cache, each given at construction: reads go through the
reader; a change Roost makes to a node holds the node's cached copies until the change's
notification is applied (read-your-writes); the person's own subscriptions are told to
the cache; notifications reach the cache before frontends hear of them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from roost.service.errors import InvalidArgument
from roost.service.events import EventHub, ItemsEvent
from roost.service.pubsub.cache_seam import PubsubCache
from roost.service.pubsub.events import EventRouter
from roost.service.pubsub.model import ItemsReply, ItemsRequest
from roost.service.pubsub.reader import AccountLookup, ItemsReader
from roost.service.pubsub.server import PubsubServer
from roost.service.xmpp.sessions import SessionManager


class PubsubService:
    """Pubsub operations on behalf of profiles, as frontends ask them.

    ``service`` arguments are JIDs; an empty one means the profile's own PEP service.
    Errors: NotConnected (profile offline), XmppError (the server refused),
    InvalidArgument (bad payload or options). Offline, GetItems alone may still answer,
    from the cache's complete copy of a node.

    Args:
        sessions: the profiles' XMPP sessions.
        hub: where notifications are published (after the cache applied them).
        cache: the cache, None for none.
        server: the server side (one is made when not given).
        accounts: a profile's account JID without a session (offline reads of the
            profile's own PEP service).
    """

    def __init__(
        self,
        sessions: SessionManager,
        hub: EventHub,
        cache: PubsubCache | None = None,
        *,
        server: PubsubServer | None = None,
        accounts: AccountLookup | None = None,
    ) -> None:
        self._sessions = sessions
        self._hub = hub
        self.cache = cache
        self.server = server or PubsubServer(sessions)
        self.reader = ItemsReader(self.server, sessions, cache, accounts)
        self._events = EventRouter(self.server.fetch_ids, self._deliver, self._accepts)
        self._detach = sessions.on_client(self._events.attach)

    def close(self) -> None:
        """Stop routing notifications (of clients made from now on, and of those up)."""
        self._detach()
        self._events.detach_all()

    # -- items ----------------------------------------------------------------------------

    async def get_items(
        self, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply:
        """The node's items as ``request`` asks (see :class:`ItemsReader`)."""
        return await self.reader.read(profile, service, node, request)

    async def publish(
        self,
        profile: str,
        service: str,
        node: str,
        item_id: str,
        payload_xml: str,
        options: Mapping[str, Any] | None = None,
    ) -> str:
        """Publish ``payload_xml`` as item ``item_id`` (empty: the server picks one);
        returns the item id. ``options`` become publish-options."""
        target = self.server.resolve(profile, service)
        async with self._writing(target, node, [item_id] if item_id else None, "items"):
            return await self.server.publish(profile, target, node, item_id, payload_xml, options)

    async def retract(
        self,
        profile: str,
        service: str,
        node: str,
        item_ids: list[str],
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Retract ``item_ids``; ``options["notify"]`` (default true) asks the server to
        notify subscribers."""
        if not item_ids:
            raise InvalidArgument("give at least one item id to retract")
        target = self.server.resolve(profile, service)
        for item_id in item_ids:
            async with self._writing(target, node, [item_id], "retract"):
                await self.server.retract(profile, target, node, [item_id], options)

    @asynccontextmanager
    async def _writing(
        self, service: str, node: str, item_ids: list[str] | None, kind: str
    ) -> AsyncIterator[None]:
        """Around a change Roost makes to a node: cached copies of the node are not
        served until the change's notification (of ``kind``: items, retract, purge,
        delete) reaches them (read-your-writes)."""
        if self.cache is None:
            yield
            return
        self.cache.hold(service, node, item_ids, kind=kind)
        try:
            yield
        except BaseException:
            self.cache.unhold(service, node)
            raise

    # -- nodes ----------------------------------------------------------------------------

    async def create_node(
        self, profile: str, service: str, node: str, config: Mapping[str, Any] | None = None
    ) -> str:
        """Create ``node`` (empty: an instant node) with ``config``; returns its name."""
        return await self.server.create_node(profile, service, node, config)

    async def delete_node(self, profile: str, service: str, node: str) -> None:
        """Delete ``node`` and its items."""
        target = self.server.resolve(profile, service)
        async with self._writing(target, node, None, "delete"):
            await self.server.delete_node(profile, target, node)

    async def purge_node(self, profile: str, service: str, node: str) -> None:
        """Remove every item of ``node``."""
        target = self.server.resolve(profile, service)
        async with self._writing(target, node, None, "purge"):
            await self.server.purge_node(profile, target, node)

    async def get_node_config(
        self, profile: str, service: str, node: str
    ) -> dict[str, str | list[str]]:
        """The node's configuration form: field name → value (a list when multi-valued)."""
        return await self.server.get_node_config(profile, service, node)

    async def set_node_config(
        self, profile: str, service: str, node: str, config: Mapping[str, Any]
    ) -> None:
        """Change the given fields of the node's configuration."""
        await self.server.set_node_config(profile, service, node, config)

    # -- subscriptions --------------------------------------------------------------------

    async def subscribe(
        self, profile: str, service: str, node: str, options: Mapping[str, Any] | None = None
    ) -> str:
        """Subscribe the profile's bare JID to ``node``; returns the subscription id
        (empty when the server gives none). ``options`` become subscribe options.

        The subscription is the person's: its events are heard, and the cache never
        removes it."""
        target = self.server.resolve(profile, service)
        subid, _state = await self.server.subscribe_with_state(profile, target, node, options)
        if self.cache is not None:
            await self.cache.user_subscribed(profile, target, node)
        return subid

    async def unsubscribe(
        self, profile: str, service: str, node: str, options: Mapping[str, Any] | None = None
    ) -> None:
        """Unsubscribe; ``options["subid"]`` names one subscription among several."""
        target = self.server.resolve(profile, service)
        await self.server.unsubscribe(profile, target, node, options)
        if self.cache is not None:
            await self.cache.user_unsubscribed(profile, target, node)

    async def get_subscriptions(
        self, profile: str, service: str, node: str
    ) -> list[dict[str, str]]:
        """The profile's subscriptions at ``service`` (to ``node`` only, when given)."""
        return await self.server.get_subscriptions(profile, service, node)

    # -- notifications --------------------------------------------------------------------

    def _accepts(self, event: ItemsEvent) -> bool:
        """Whether the event comes from a service the profile chose to hear (the cache
        knows which: without one, every event is taken)."""
        return self.cache is None or self.cache.accepts(event)

    async def _deliver(self, event: ItemsEvent) -> None:
        if self.cache is not None:
            event = await self.cache.apply_event(event) or event
        self._hub.publish(event)
