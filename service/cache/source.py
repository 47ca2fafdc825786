"""What a sync needs from the XMPP side, in one place.

The synchroniser talks to this narrow interface, not to slixmpp or the pubsub service
directly: the sync logic reads as the procedure it is, and its tests can give it a
server of their own.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Protocol

from slixmpp import JID
from slixmpp.jid import InvalidJID

from roost.service.errors import RoostError, XmppError
from roost.service.pubsub.model import ItemsRequest, PubsubItem
from roost.service.pubsub.server import PubsubServer
from roost.service.xmpp.client import NOTIFY_BARRIER_TIMEOUT, RoostClient
from roost.service.xmpp.sessions import SessionManager

log = logging.getLogger(__name__)

# How many item ids one by-id fetch asks for: servers accept long lists, but a reply of
# a few hundred items stays well within stanza size limits.
FETCH_BY_ID_BATCH = 100
# Items read to analyse a node found by probing a contact (as a login notification would).
PEEK_ITEMS = 1
# The one subscription state (XEP-0060) in which a node's notifications are delivered.
ACTIVE = "subscribed"


@dataclass(frozen=True)
class Currency:
    """Whether Roost will hear of every change to a node, and if not, why.

    Attributes:
        current: every change will reach Roost.
        subscribed: a subscription or PEP notifications bring the node's events.
        reason: why the node is not current, for a person.
        via: what keeps it current: ``own`` (the account's own PEP node), ``presence``
            (a contact's PEP node, through the presence subscription), ``subscription``
            (a pubsub subscription), empty when nothing does.
        created_subid: set when Roost made a new subscription for the cache (the
            subscription id, maybe empty): the cache owns it and removes it when the node
            leaves the cache, even when the server left it pending.
    """

    current: bool
    subscribed: bool
    reason: str = ""
    via: str = ""
    created_subid: str | None = None


class RosterView(Protocol):
    """What the cache needs of the roster."""

    def presence_subscription(self, profile: str, jid: str) -> str:
        """``none``, ``to``, ``from`` or ``both``: the profile's subscription to ``jid``."""
        ...

    def contacts_with_presence(self, profile: str) -> set[str]:
        """The bare JIDs whose presence the profile receives (``to`` or ``both``)."""
        ...


class SyncSource(Protocol):
    """The server side of a node's synchronisation."""

    def fetch_all_items(
        self, profile: str, service: str, node: str, page_size: int, *, newest: int | None = None
    ) -> AsyncIterator[list[PubsubItem]]:
        """Every item of the node (its ``newest`` only, when given), oldest first, a page
        at a time; bounded while it runs, whatever the server says."""
        ...

    def walked_total(self, profile: str, service: str, node: str) -> int | None:
        """How many items the node held by its last :meth:`fetch_all_items` (also when
        only the newest were fetched); None when unknown."""
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

    async def peek_items(self, profile: str, service: str, node: str) -> list[PubsubItem] | None:
        """The node's newest few items, enough to analyse it; None when the node cannot be
        read (absent, forbidden)."""
        ...

    def followed_contacts(self, profile: str) -> list[str]:
        """The bare JIDs of the contacts whose presence (and PEP notifications) the
        profile receives."""
        ...

    async def release_subscription(self, profile: str, service: str, node: str, subid: str) -> None:
        """Remove a subscription Roost made for the cache (gone already: no error)."""
        ...

    def is_connected(self, profile: str) -> bool:
        """Whether the profile's session is up."""
        ...

    def follows(self, profile: str, service: str) -> bool:
        """Whether the profile chose to hear from ``service``: its own account, or a
        contact whose presence (and so PEP notifications) it receives."""
        ...

    async def node_type(self, profile: str, service: str, node: str) -> str | None:
        """The node's ``pubsub#type`` from its disco#info meta-data form: empty when the
        server gives none, None when the node could not be asked about (absent,
        forbidden, the profile offline)."""
        ...


def _names(subscription: dict[str, str], node: str, mine: set[str]) -> bool:
    """Whether a listed subscription is to ``node`` (an entry without a node is, since
    the listing was asked for that node) and of one of the JIDs in ``mine``."""
    if (subscription.get("node") or node) != node:
        return False
    try:
        return JID(subscription.get("jid", "")).full in mine
    except InvalidJID:
        return False


def is_pep_service(service: str) -> bool:
    """A PEP service is an account's bare JID; a pubsub component has no local part.
    An address that is no valid JID is neither (a server may pass on what a client
    library rejects)."""
    try:
        jid = JID(service)
    except InvalidJID:
        return False
    return bool(jid.user) and not jid.resource


class XmppSyncSource:
    """:class:`SyncSource` over the pubsub server side (never the frontends' read path)
    and the XMPP sessions."""

    def __init__(
        self,
        pubsub: PubsubServer,
        sessions: SessionManager,
        roster: RosterView | None = None,
        *,
        notify_timeout: float = NOTIFY_BARRIER_TIMEOUT,
    ) -> None:
        self._pubsub = pubsub
        self._sessions = sessions
        self._roster = roster
        self._notify_timeout = notify_timeout

    def fetch_all_items(
        self, profile: str, service: str, node: str, page_size: int, *, newest: int | None = None
    ) -> AsyncIterator[list[PubsubItem]]:
        """See :meth:`SyncSource.fetch_all_items`."""
        return self._pubsub.fetch_all_items(profile, service, node, page_size, newest=newest)

    def walked_total(self, profile: str, service: str, node: str) -> int | None:
        """See :meth:`SyncSource.walked_total`."""
        return self._pubsub.walked_total(profile, service, node)

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

        Own PEP node: ``+notify`` for it is enough, once the server has taken it in (a
        namespace new to this session waits for that, at most ``notify_timeout``
        seconds). A contact's PEP node: notifications come with a presence subscription
        to the contact (``to`` or ``both`` in the roster), and ``+notify`` as for an own
        node. Anything else (a pubsub component, a non-contact's PEP node): an
        existing subscription of the account, else a new one; a subscription left
        ``pending`` (or refused) does not keep the node current.
        """
        client = self._sessions.client(profile)
        own = client.boundjid.bare
        if is_pep_service(service):
            client.add_notify(node)
            bare = JID(service).bare
            if bare == own:
                return await self._notified(client, node, "own")
            if self._presence_subscription(profile, bare) in ("to", "both"):
                return await self._notified(client, node, "presence")
            currency = await self._pubsub_subscription(profile, service, node, own)
            if not currency.current:
                # Both ways are closed: say what would open one.
                reason = (
                    f"no presence subscription to {bare} (its PEP notifications cannot "
                    f"reach this account) and {currency.reason}"
                )
                return replace(currency, reason=reason)
            return currency
        return await self._pubsub_subscription(profile, service, node, own)

    async def _notified(self, client: RoostClient, node: str, via: str) -> Currency:
        """Current once the account's server has taken in ``+notify`` for the node.

        The server sends PEP events by the capabilities of each resource, which
        :meth:`RoostClient.add_notify` changes at once but the server learns a moment
        later: until then a publication would not reach Roost. (For a contact on another
        server, that server learns them from the presence it receives; the account's own
        server is as far as Roost can check.)
        """
        if await client.notify_known(node, self._notify_timeout):
            return Currency(current=True, subscribed=True, via=via)
        return Currency(
            current=False,
            subscribed=False,
            reason=(
                f"the server did not confirm within {self._notify_timeout:g} s that it sends "
                "this node's notifications to Roost (+notify)"
            ),
        )

    def _presence_subscription(self, profile: str, jid: str) -> str:
        if self._roster is not None:
            return self._roster.presence_subscription(profile, jid)
        item = self._sessions.client(profile).client_roster[jid]
        return str(item["subscription"])

    async def _pubsub_subscription(
        self, profile: str, service: str, node: str, own: str
    ) -> Currency:
        """An active subscription of the account to the node, made when there is none.

        Only a subscription in state ``subscribed`` brings notifications: one ``pending``
        (awaiting the owner's approval) or ``unconfigured`` (awaiting its options) brings
        none, and neither does one whose state the server leaves out. Of the listed
        subscriptions, only those of this node and of the account's bare JID count (one
        of another resource's full JID delivers to that resource alone); any of them
        active is enough, whatever its subid.
        """
        mine = {own, self._sessions.client(profile).boundjid.full}
        try:
            listed = await self._pubsub.get_subscriptions(profile, service, node)
        except RoostError as exc:
            log.debug("%s/%s: subscriptions not listed (%s)", service, node, exc)
            listed = []
        states = {sub.get("subscription", "") for sub in listed if _names(sub, node, mine)}
        if ACTIVE in states:
            return Currency(current=True, subscribed=True, via="subscription")
        if "pending" in states:
            # Asking again would only send the owner another request.
            return Currency(
                current=False,
                subscribed=False,
                reason="the subscription to the node awaits its owner's approval",
            )
        try:
            subid, state = await self._pubsub.subscribe_with_state(profile, service, node)
        except XmppError as exc:
            return Currency(
                current=False,
                subscribed=False,
                reason=f"the subscription to the node was refused ({exc.condition})",
            )
        if state != ACTIVE:
            said = f"is {state}" if state else "has a state the server did not give"
            return Currency(
                current=False,
                subscribed=False,
                reason=f"the subscription to the node {said}, not active",
                created_subid=subid,
            )
        return Currency(current=True, subscribed=True, via="subscription", created_subid=subid)

    async def release_subscription(self, profile: str, service: str, node: str, subid: str) -> None:
        """See :meth:`SyncSource.release_subscription`."""
        options = {"subid": subid} if subid else {}
        try:
            await self._pubsub.unsubscribe(profile, service, node, options)
        except XmppError as exc:
            # Already gone (the node deleted, the subscription removed by its owner).
            if exc.condition not in ("item-not-found", "unexpected-request", "not-acceptable"):
                raise
            log.debug("%s/%s: the subscription was gone already (%s)", service, node, exc)

    async def newest_item_id(self, profile: str, service: str, node: str) -> str | None:
        """See :meth:`SyncSource.newest_item_id`."""
        request = ItemsRequest(max_items=1, use_cache=False)
        reply = await self._pubsub.get_items(profile, service, node, request)
        return reply.items[-1].id if reply.items else None

    async def peek_items(self, profile: str, service: str, node: str) -> list[PubsubItem] | None:
        """See :meth:`SyncSource.peek_items`."""
        try:
            return await self._pubsub.newest_items(profile, service, node, PEEK_ITEMS)
        except XmppError as exc:
            log.debug("%s/%s: not readable (%s)", service, node, exc.condition)
            return None

    def followed_contacts(self, profile: str) -> list[str]:
        """See :meth:`SyncSource.followed_contacts`."""
        if self._roster is None:
            return []
        return sorted(self._roster.contacts_with_presence(profile))

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

    def follows(self, profile: str, service: str) -> bool:
        """See :meth:`SyncSource.follows`."""
        if not self._sessions.is_connected(profile):
            return False
        bare = JID(service).bare
        if bare == self._sessions.client(profile).boundjid.bare:
            return True
        return self._presence_subscription(profile, bare) in ("to", "both")

    async def node_type(self, profile: str, service: str, node: str) -> str | None:
        """See :meth:`SyncSource.node_type`.

        Prosody 0.12 and ejabberd 23.01 both put ``pubsub#type`` in a pubsub component
        node's meta-data form; for a PEP node, Prosody answers its owner with it and
        ejabberd gives no meta-data form (answered empty, as for a node without a type).
        """
        try:
            form = await self._pubsub.get_node_metadata(profile, service, node)
        except RoostError as exc:
            log.debug("%s/%s: no meta-data (%s)", service, node, exc)
            return None
        value = form.get("pubsub#type")
        if isinstance(value, list):
            value = value[0] if value else None
        return value or ""
