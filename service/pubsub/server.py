"""PubsubServer: every pubsub operation, asked of the server over a profile's session.

Nothing here knows of the cache: it is the server side that both the frontends' reads
(through :class:`roost.service.pubsub.operations.PubsubService`) and the cache's syncs
(through :class:`roost.service.cache.source.XmppSyncSource`) use, so a sync never
re-enters the frontends' path.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from typing import Any

from roost.service.errors import InvalidArgument
from roost.service.pubsub import protocol as p
from roost.service.pubsub.model import ItemsReply, ItemsRequest, PubsubItem
from roost.service.pubsub.query import FETCH_PAGE_SIZE, ItemsQuery
from roost.service.safe_xml import parse_xml
from roost.service.xmpp.client import RoostClient
from roost.service.xmpp.sessions import SessionManager

NS_SUBSCRIPTIONS = p.NS_PUBSUB
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


class PubsubServer:
    """Pubsub operations on behalf of profiles, asked of the server.

    ``service`` arguments are JIDs; an empty one means the profile's own PEP service.
    Errors: NotConnected (profile offline), XmppError (the server refused),
    InvalidArgument (bad payload or options).
    """

    def __init__(self, sessions: SessionManager) -> None:
        self._sessions = sessions
        self._query = ItemsQuery()

    def resolve(self, profile: str, service: str) -> str:
        """The service JID a request goes to (empty: the profile's own bare JID).

        Raises:
            NotConnected: the profile is not connected.
        """
        return self._service(self._client(profile), service)

    def _client(self, profile: str) -> RoostClient:
        return self._sessions.client(profile)

    @staticmethod
    def _service(client: RoostClient, service: str) -> str:
        return service or str(client.boundjid.bare)

    # -- items ----------------------------------------------------------------------------

    async def get_items(
        self, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply:
        """The node's items as ``request`` asks, from the server."""
        client = self._client(profile)
        return await self._query.get_items(client, self._service(client, service), node, request)

    async def newest_items(
        self, profile: str, service: str, node: str, count: int
    ) -> list[PubsubItem]:
        """The node's newest ``count`` items."""
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
            del page  # the caller has it: not held while the next one is asked for

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
        reply = await p.send_iq(client, "set", self._service(client, service), body)
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
        return await p.send_iq(client, "set", self._service(client, service), body)

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

    async def subscribe_with_state(
        self, profile: str, service: str, node: str, options: Mapping[str, Any] | None = None
    ) -> tuple[str, str]:
        """Subscribe the profile's bare JID to ``node``; returns the subscription id
        (empty when the server gives none) and its state (``subscribed``, ``pending``
        awaiting the owner, ``unconfigured``; empty when the server's answer names the
        subscription without its state). ``options`` become subscribe options."""
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
        # A state left out is not taken for active: the caller decides what it means.
        return sub.get("subid") or "", sub.get("subscription") or ""

    async def unsubscribe(
        self,
        profile: str,
        service: str,
        node: str,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        """Unsubscribe; ``options["subid"]`` names one subscription among several."""
        client = self._client(profile)
        body = p.pubsub()
        unsubscribe = ET.SubElement(
            body, f"{{{p.NS_PUBSUB}}}unsubscribe", node=node, jid=str(client.boundjid.bare)
        )
        subid = (options or {}).get("subid")
        if subid:
            unsubscribe.set("subid", str(subid))
        await p.send_iq(client, "set", self._service(client, service), body)

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

    async def fetch_ids(
        self, client: RoostClient, service: str, node: str, item_ids: tuple[str, ...]
    ) -> list[PubsubItem]:
        """The named items, as a query returns them (to complete notifications)."""
        reply = await self._query.get_items(client, service, node, ItemsRequest(item_ids=item_ids))
        return reply.items
