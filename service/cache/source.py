"""What a sync needs from the XMPP side, in one place.

The synchroniser talks to this narrow interface, not to slixmpp or the pubsub service
directly: the sync logic reads as the procedure it is, and its tests can give it a
server of their own.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from slixmpp import JID

from roost.service.errors import RoostError, XmppError
from roost.service.pubsub.model import ItemsRequest, PubsubItem
from roost.service.pubsub.operations import PubsubService
from roost.service.xmpp.sessions import SessionManager

log = logging.getLogger(__name__)

# How many item ids one by-id fetch asks for: servers accept long lists, but a reply of
# a few hundred items stays well within stanza size limits.
FETCH_BY_ID_BATCH = 100


@dataclass(frozen=True)
class Currency:
    """Whether Roost will hear of every change to a node, and if not, why."""

    current: bool
    subscribed: bool
    reason: str = ""


class SyncSource(Protocol):
    """The server side of a node's synchronisation."""

    def fetch_all_items(
        self, profile: str, service: str, node: str, page_size: int
    ) -> AsyncIterator[list[PubsubItem]]:
        """Every item of the node, oldest first, a page at a time."""
        ...

    async def list_item_ids(self, profile: str, service: str, node: str) -> list[str] | None:
        """The node's item ids in server order, or None when the server will not list them."""
        ...

    async def fetch_items_by_id(
        self, profile: str, service: str, node: str, item_ids: list[str]
    ) -> list[PubsubItem]:
        """The named items, in server order."""
        ...

    async def keep_current(self, profile: str, service: str, node: str) -> Currency:
        """Subscribe (or rely on PEP notifications) so that no change is missed."""
        ...

    async def newest_item_id(self, profile: str, service: str, node: str) -> str | None:
        """The id of the node's newest item in server order (None when empty)."""
        ...

    async def node_max_items(self, profile: str, service: str, node: str) -> int | None:
        """How many items the server keeps in the node, None when unbounded or unknown."""
        ...

    def is_connected(self, profile: str) -> bool:
        """Whether the profile's session is up."""
        ...


def is_pep_service(service: str) -> bool:
    """A PEP service is an account's bare JID; a pubsub component has no local part."""
    jid = JID(service)
    return bool(jid.user) and not jid.resource


class XmppSyncSource:
    """:class:`SyncSource` over Roost's pubsub service and XMPP sessions."""

    def __init__(self, pubsub: PubsubService, sessions: SessionManager) -> None:
        self._pubsub = pubsub
        self._sessions = sessions

    def fetch_all_items(
        self, profile: str, service: str, node: str, page_size: int
    ) -> AsyncIterator[list[PubsubItem]]:
        """See :meth:`SyncSource.fetch_all_items`."""
        return self._pubsub.fetch_all_items(profile, service, node, page_size)

    async def list_item_ids(self, profile: str, service: str, node: str) -> list[str] | None:
        """See :meth:`SyncSource.list_item_ids`."""
        try:
            return await self._pubsub.list_item_ids(profile, service, node)
        except XmppError as exc:
            log.info("%s/%s: the server will not list item ids (%s)", service, node, exc)
            return None

    async def fetch_items_by_id(
        self, profile: str, service: str, node: str, item_ids: list[str]
    ) -> list[PubsubItem]:
        """See :meth:`SyncSource.fetch_items_by_id`."""
        found: list[PubsubItem] = []
        for start in range(0, len(item_ids), FETCH_BY_ID_BATCH):
            batch = tuple(item_ids[start : start + FETCH_BY_ID_BATCH])
            request = ItemsRequest(item_ids=batch, use_cache=False)
            reply = await self._pubsub.get_items(profile, service, node, request)
            found.extend(reply.items)
        return found

    async def keep_current(self, profile: str, service: str, node: str) -> Currency:
        """See :meth:`SyncSource.keep_current`.

        Own PEP node: ``+notify`` for it is enough. A contact's PEP node: notifications
        come only with a presence subscription to the contact. A pubsub component: an
        existing subscription of the account, else a new one.
        """
        client = self._sessions.client(profile)
        own = client.boundjid.bare
        if is_pep_service(service):
            client.add_notify(node)
            if JID(service).bare == own:
                return Currency(current=True, subscribed=True)
            roster_item = client.client_roster[JID(service).bare]
            if roster_item["subscription"] in ("to", "both"):
                return Currency(current=True, subscribed=True)
            return Currency(
                current=False,
                subscribed=False,
                reason=(
                    f"no presence subscription to {service}: its PEP notifications "
                    "cannot reach this account"
                ),
            )
        try:
            for sub in await self._pubsub.get_subscriptions(profile, service, node):
                if JID(str(sub.get("jid", ""))).bare == own and sub.get(
                    "subscription", "subscribed"
                ) in ("subscribed", ""):
                    return Currency(current=True, subscribed=True)
        except RoostError as exc:
            log.debug("%s/%s: subscriptions not listed (%s)", service, node, exc)
        try:
            await self._pubsub.subscribe(profile, service, node, {})
        except XmppError as exc:
            return Currency(
                current=False, subscribed=False, reason=f"the subscription was refused: {exc}"
            )
        return Currency(current=True, subscribed=True)

    async def newest_item_id(self, profile: str, service: str, node: str) -> str | None:
        """See :meth:`SyncSource.newest_item_id`."""
        request = ItemsRequest(max_items=1, use_cache=False)
        reply = await self._pubsub.get_items(profile, service, node, request)
        return reply.items[-1].id if reply.items else None

    async def node_max_items(self, profile: str, service: str, node: str) -> int | None:
        """See :meth:`SyncSource.node_max_items`.

        The owner reads the node configuration; anyone else, the meta-data form of
        disco#info, when the server puts the limit there.
        """
        for read in (self._pubsub.get_node_config, self._pubsub.get_node_metadata):
            try:
                form = await read(profile, service, node)
            except RoostError:
                continue
            value = form.get("pubsub#max_items")
            if isinstance(value, str) and value.isdigit():
                return int(value)
            if value is not None:
                return None  # "max", or no limit
        return None

    def is_connected(self, profile: str) -> bool:
        """See :meth:`SyncSource.is_connected`."""
        return self._sessions.is_connected(profile)
