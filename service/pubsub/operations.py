"""PubsubService: the pubsub operations a frontend can ask of a connected profile."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from slixmpp import JID

from roost.service.errors import InvalidArgument, NotConnected
from roost.service.events import EventHub, ItemsEvent
from roost.service.pubsub import protocol as p
from roost.service.pubsub.cache_seam import PubsubCache
from roost.service.pubsub.events import EventRouter
from roost.service.pubsub.model import ItemsReply, ItemsRequest, PubsubItem
from roost.service.pubsub.query import FETCH_PAGE_SIZE, ItemsQuery
from roost.service.safe_xml import parse_xml
from roost.service.xmpp.client import RoostClient
from roost.service.xmpp.sessions import SessionManager

NS_SUBSCRIPTIONS = p.NS_PUBSUB
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"

# The JID of a profile's account, known without a session (from where profiles are kept).
AccountLookup = Callable[[str], Awaitable[str]]


class PubsubService:
    """Pubsub operations on behalf of profiles, over their XMPP sessions.

    ``service`` arguments are JIDs; an empty one means the profile's own PEP service.
    Errors: NotConnected (profile offline), XmppError (the server refused),
    InvalidArgument (bad payload or options). Offline, GetItems alone may still answer,
    from the cache's complete copy of a node.

    ``accounts`` gives a profile's account JID without a session: offline reads of the
    profile's own PEP service (empty ``service``) need it.
    """

    def __init__(
        self,
        sessions: SessionManager,
        hub: EventHub,
        cache: PubsubCache | None = None,
        *,
        accounts: AccountLookup | None = None,
    ) -> None:
        self._sessions = sessions
        self._hub = hub
        self.cache = cache
        self.accounts = accounts
        self._query = ItemsQuery()
        self._events = EventRouter(self._fetch_ids, self._deliver, self._accepts)
        sessions.on_client(self._events.attach)

    def _client(self, profile: str) -> RoostClient:
        return self._sessions.client(profile)

    @staticmethod
    def _service(client: RoostClient, service: str) -> str:
        return service or str(client.boundjid.bare)

    # -- items ----------------------------------------------------------------------------

    async def get_items(
        self, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply:
        """The node's items as ``request`` asks, from the cache when it can answer.

        The profile offline, only the cache answers: from a node's complete copy, with
        ``cache_age``; NotConnected when it has none that answers ``request``.
        """
        offline = not self._sessions.is_connected(profile)
        if offline and self.cache is not None and request.use_cache:
            return await self._offline_items(self.cache, profile, service, node, request)
        client = self._client(profile)
        service = self._service(client, service)
        if self.cache is not None and request.use_cache:
            cached = await self.cache.answer(profile, service, node, request)
            if cached is not None:
                return cached
        reply = await self._query.get_items(client, service, node, request)
        if self.cache is not None:
            await self.cache.server_answered(profile, service, node, request, reply)
        return reply

    async def _offline_items(
        self, cache: PubsubCache, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply:
        if not service:
            if self.accounts is None:
                raise NotConnected(f"profile {profile!r} is not connected; connect it first")
            # The name the session would give (its bound bare JID), so the cache's key matches.
            service = str(JID(await self.accounts(profile)).bare)
        reply = await cache.answer_offline(profile, service, node, request)
        if reply is None:
            raise NotConnected(
                f"profile {profile!r} is offline and node {node!r} of {service} is not cached "
                "completely (or not as far as this request goes); connect the profile to ask "
                "the server"
            )
        return reply

    async def newest_items(
        self, profile: str, service: str, node: str, count: int
    ) -> list[PubsubItem]:
        """The node's newest ``count`` items from the server, for the cache's own use: the
        cache is neither asked nor told (no analysis follows)."""
        client = self._client(profile)
        request = ItemsRequest(max_items=count, use_cache=False)
        reply = await self._query.get_items(client, self._service(client, service), node, request)
        return reply.items

    async def fetch_all_items(
        self,
        profile: str,
        service: str,
        node: str,
        page_size: int = FETCH_PAGE_SIZE,
        *,
        newest: int | None = None,
    ) -> AsyncIterator[list[PubsubItem]]:
        """Every item of the node from the server, oldest first, in pages (RSM where the
        server has it; one whole answer where it does not)."""
        client = self._client(profile)
        async for page in self._query.fetch_all(
            client, self._service(client, service), node, page_size, newest=newest
        ):
            yield page

    def walked_total(self, profile: str, service: str, node: str) -> int | None:
        """The node's item count learnt by the last :meth:`fetch_all_items` of it."""
        client = self._client(profile)
        return self._query.walked_total(self._service(client, service), node)

    async def list_item_ids(self, profile: str, service: str, node: str) -> list[str]:
        """The node's item ids, as the server's disco#items lists them."""
        client = self._client(profile)
        return await self._query.list_item_ids(client, self._service(client, service), node)

    async def server_supports_rsm(self, profile: str, service: str, node: str) -> bool:
        """Whether ``service`` implements RSM on pubsub queries (learnt once per service)."""
        client = self._client(profile)
        return await self._query.server_supports_rsm(client, self._service(client, service), node)

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
        payload = parse_xml(payload_xml)
        client = self._client(profile)
        body = p.pubsub()
        publish = ET.SubElement(body, f"{{{p.NS_PUBSUB}}}publish", node=node)
        item = ET.SubElement(publish, f"{{{p.NS_PUBSUB}}}item")
        if item_id:
            item.set("id", item_id)
        item.append(payload)
        if options:
            publish_options = ET.SubElement(body, f"{{{p.NS_PUBSUB}}}publish-options")
            publish_options.append(
                p.submit_form("http://jabber.org/protocol/pubsub#publish-options", options)
            )
        target = self._service(client, service)
        async with self._writing(target, node, [item_id] if item_id else None, "items"):
            reply = await p.send_iq(client, "set", target, body)
        answered = reply.find(
            f"{{{p.NS_PUBSUB}}}pubsub/{{{p.NS_PUBSUB}}}publish/{{{p.NS_PUBSUB}}}item"
        )
        return (answered.get("id") if answered is not None else None) or item_id

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
        client = self._client(profile)
        notify = (options or {}).get("notify", True)
        # One request per item: XEP-0060 puts one <item/> in a <retract/>, and Prosody
        # acts on the first one only.
        target = self._service(client, service)
        for item_id in item_ids:
            body = p.pubsub()
            retract = ET.SubElement(
                body, f"{{{p.NS_PUBSUB}}}retract", node=node, notify="true" if notify else "false"
            )
            ET.SubElement(retract, f"{{{p.NS_PUBSUB}}}item", id=item_id)
            async with self._writing(target, node, [item_id], "retract"):
                await p.send_iq(client, "set", target, body)

    # -- nodes -----------------------------------------------------------------------------

    async def create_node(
        self, profile: str, service: str, node: str, config: Mapping[str, Any] | None = None
    ) -> str:
        """Create ``node`` (empty: an instant node) with ``config``; returns its name."""
        client = self._client(profile)
        body = p.pubsub()
        ET.SubElement(body, f"{{{p.NS_PUBSUB}}}create", node=node)
        if config:
            configure = ET.SubElement(body, f"{{{p.NS_PUBSUB}}}configure")
            configure.append(p.submit_form(p.NODE_CONFIG_FORM, config))
        reply = await p.send_iq(client, "set", self._service(client, service), body)
        created = reply.find(f"{{{p.NS_PUBSUB}}}pubsub/{{{p.NS_PUBSUB}}}create")
        return (created.get("node") if created is not None else None) or node

    async def _owner(self, profile: str, service: str, tag: str, node: str) -> ET.Element:
        client = self._client(profile)
        body = p.pubsub(p.NS_OWNER)
        ET.SubElement(body, f"{{{p.NS_OWNER}}}{tag}", node=node)
        target = self._service(client, service)
        async with self._writing(target, node, None, tag):
            return await p.send_iq(client, "set", target, body)

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

    async def delete_node(self, profile: str, service: str, node: str) -> None:
        """Delete ``node`` and its items."""
        await self._owner(profile, service, "delete", node)

    async def purge_node(self, profile: str, service: str, node: str) -> None:
        """Remove every item of ``node``."""
        await self._owner(profile, service, "purge", node)

    async def get_node_metadata(
        self, profile: str, service: str, node: str
    ) -> dict[str, str | list[str]]:
        """The node's meta-data form from disco#info (any entity may ask; fields vary)."""
        client = self._client(profile)
        query = p.element("query", NS_DISCO_INFO, node=node)
        reply = await p.send_iq(client, "get", self._service(client, service), query)
        for form in reply.iter(f"{{{p.NS_DATA}}}x"):
            kinds = [
                value.text
                for field in form.findall(f"{{{p.NS_DATA}}}field")
                if field.get("var") == "FORM_TYPE"
                for value in field.findall(f"{{{p.NS_DATA}}}value")
            ]
            if "http://jabber.org/protocol/pubsub#meta-data" in kinds:
                return p.read_form(form)
        return {}

    async def get_node_config(
        self, profile: str, service: str, node: str
    ) -> dict[str, str | list[str]]:
        """The node's configuration form: field name → value (a list when multi-valued)."""
        client = self._client(profile)
        body = p.pubsub(p.NS_OWNER)
        ET.SubElement(body, f"{{{p.NS_OWNER}}}configure", node=node)
        reply = await p.send_iq(client, "get", self._service(client, service), body)
        return p.read_form(
            reply.find(f"{{{p.NS_OWNER}}}pubsub/{{{p.NS_OWNER}}}configure/{{{p.NS_DATA}}}x")
        )

    async def set_node_config(
        self, profile: str, service: str, node: str, config: Mapping[str, Any]
    ) -> None:
        """Change the given fields of the node's configuration."""
        if not config:
            raise InvalidArgument("give at least one configuration field to change")
        client = self._client(profile)
        body = p.pubsub(p.NS_OWNER)
        configure = ET.SubElement(body, f"{{{p.NS_OWNER}}}configure", node=node)
        configure.append(p.submit_form(p.NODE_CONFIG_FORM, config))
        await p.send_iq(client, "set", self._service(client, service), body)

    # -- subscriptions -------------------------------------------------------------------

    async def subscribe(
        self, profile: str, service: str, node: str, options: Mapping[str, Any] | None = None
    ) -> str:
        """Subscribe the profile's bare JID to ``node``; returns the subscription id
        (empty when the server gives none). ``options`` become subscribe options."""
        subid, _state = await self.subscribe_with_state(profile, service, node, options)
        if self.cache is not None:
            # The person's subscription: its events are heard, and the cache never
            # removes it.
            await self.cache.user_subscribed(
                profile, self._service(self._client(profile), service), node
            )
        return subid

    async def subscribe_with_state(
        self, profile: str, service: str, node: str, options: Mapping[str, Any] | None = None
    ) -> tuple[str, str]:
        """Subscribe as :meth:`subscribe` does; returns the subscription id and its state
        (``subscribed``, ``pending`` awaiting the owner, ``unconfigured``)."""
        client = self._client(profile)
        body = p.pubsub()
        jid = str(client.boundjid.bare)
        ET.SubElement(body, f"{{{p.NS_PUBSUB}}}subscribe", node=node, jid=jid)
        if options:
            holder = ET.SubElement(body, f"{{{p.NS_PUBSUB}}}options", node=node, jid=jid)
            holder.append(p.submit_form(p.SUBSCRIBE_OPTIONS_FORM, options))
        reply = await p.send_iq(client, "set", self._service(client, service), body)
        sub = reply.find(f"{{{p.NS_PUBSUB}}}pubsub/{{{p.NS_PUBSUB}}}subscription")
        if sub is None:
            # XEP-0060 allows an empty result: the subscription is then active.
            return "", "subscribed"
        return sub.get("subid") or "", sub.get("subscription") or "subscribed"

    async def unsubscribe(
        self,
        profile: str,
        service: str,
        node: str,
        options: Mapping[str, Any] | None = None,
        *,
        for_cache: bool = False,
    ) -> None:
        """Unsubscribe; ``options["subid"]`` names one subscription among several.
        ``for_cache``: the cache removes a subscription of its own (it is not told)."""
        client = self._client(profile)
        body = p.pubsub()
        unsubscribe = ET.SubElement(
            body, f"{{{p.NS_PUBSUB}}}unsubscribe", node=node, jid=str(client.boundjid.bare)
        )
        subid = (options or {}).get("subid")
        if subid:
            unsubscribe.set("subid", str(subid))
        await p.send_iq(client, "set", self._service(client, service), body)
        if self.cache is not None and not for_cache:
            await self.cache.user_unsubscribed(profile, self._service(client, service), node)

    async def get_subscriptions(
        self, profile: str, service: str, node: str
    ) -> list[dict[str, str]]:
        """The profile's subscriptions at ``service`` (to ``node`` only, when given):
        each ``node``, ``jid``, ``subscription`` and ``subid`` when there is one."""
        client = self._client(profile)
        body = p.pubsub()
        # No node attribute at all asks for every subscription at the service.
        subscriptions = ET.SubElement(body, f"{{{p.NS_PUBSUB}}}subscriptions")
        if node:
            subscriptions.set("node", node)
        reply = await p.send_iq(client, "get", self._service(client, service), body)
        found = reply.find(f"{{{p.NS_PUBSUB}}}pubsub/{{{p.NS_PUBSUB}}}subscriptions")
        if found is None:
            return []
        return [
            {k: v for k, v in sub.attrib.items() if k in ("node", "jid", "subscription", "subid")}
            for sub in found.findall(f"{{{p.NS_PUBSUB}}}subscription")
        ]

    # -- events --------------------------------------------------------------------------

    async def _fetch_ids(
        self, client: RoostClient, service: str, node: str, item_ids: tuple[str, ...]
    ) -> list[PubsubItem]:
        reply = await self._query.get_items(client, service, node, ItemsRequest(item_ids=item_ids))
        return reply.items

    def _accepts(self, event: ItemsEvent) -> bool:
        """Whether the event comes from a service the profile chose to hear (the cache
        knows which: without one, every event is taken)."""
        return self.cache is None or self.cache.accepts(event)

    async def _deliver(self, event: ItemsEvent) -> None:
        if self.cache is not None:
            event = await self.cache.apply_event(event) or event
        self._hub.publish(event)
