"""What frontends may ask of pubsub and of the cache, checked and resolved.

Every bridge calls these methods: they resolve a profile argument (empty: the default
profile), check service JIDs, node names and item ids, and hand the call to the pubsub
service or the cache. Nothing here knows how a bridge marshals its calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from slixmpp import JID
from slixmpp.jid import InvalidJID

from roost.service.cache.cache import PubsubCache
from roost.service.errors import Conflict, InvalidArgument
from roost.service.profiles import ProfileService
from roost.service.pubsub.model import ItemsReply, ItemsRequest
from roost.service.pubsub.operations import PubsubService
from roost.service.pubsub.rsm import MAX_REPLY_BYTES, RECORD_OVERHEAD
from roost.service.records import NodeState, SearchHit
from roost.service.safe_xml import check_xml_text
from roost.storage.paging import bounded_length

MAX_NODE_NAME = 1024
MAX_ITEM_ID = 1024
MAX_ITEMS_PER_CALL = 1000


def check_service(service: str) -> str:
    """A pubsub service JID (empty: the profile's own PEP service)."""
    if not service:
        return ""
    try:
        jid = JID(service)
    except InvalidJID as exc:
        raise InvalidArgument(f"service {service!r} is not a valid JID: {exc}") from None
    if jid.resource:
        raise InvalidArgument(f"service {service!r} must be a bare JID (no resource)")
    return str(jid.bare)


def check_node(node: str, *, allow_empty: bool = False) -> str:
    """A node name: non-empty (unless asked for an instant node), printable, bounded."""
    if not node and not allow_empty:
        raise InvalidArgument("the node name must not be empty")
    if len(node) > MAX_NODE_NAME or not node.isprintable():
        raise InvalidArgument(
            f"the node name must be printable and at most {MAX_NODE_NAME} characters"
        )
    return node


def check_item_ids(item_ids: Sequence[str], *, allow_empty_list: bool = False) -> list[str]:
    """Item ids: non-empty printable strings, at most MAX_ITEMS_PER_CALL of them."""
    if not item_ids and not allow_empty_list:
        raise InvalidArgument("give at least one item id")
    if len(item_ids) > MAX_ITEMS_PER_CALL:
        raise InvalidArgument(f"at most {MAX_ITEMS_PER_CALL} item ids per call")
    for item_id in item_ids:
        if not item_id or len(item_id) > MAX_ITEM_ID or not item_id.isprintable():
            raise InvalidArgument(
                f"item id {item_id!r} must be printable, 1 to {MAX_ITEM_ID} characters"
            )
    return list(item_ids)


class PubsubAccess:
    """Pubsub operations and the Cache interface, as frontends call them."""

    def __init__(self, profiles: ProfileService, pubsub: PubsubService, cache: PubsubCache) -> None:
        self._profiles = profiles
        self.pubsub = pubsub
        self.cache = cache

    async def _target(self, profile: str, service: str, node: str) -> tuple[str, str, str]:
        return (
            await self._profiles.resolve(profile),
            check_service(service),
            check_node(node),
        )

    # -- Pubsub ---------------------------------------------------------------------------

    async def get_items(
        self, profile: str, service: str, node: str, options: Mapping[str, Any]
    ) -> ItemsReply:
        """GetItems: from the cache when it can answer exactly, else from the server."""
        request = ItemsRequest.from_options(options)
        check_item_ids(request.item_ids, allow_empty_list=True)
        name, service, node = await self._target(profile, service, node)
        return await self.pubsub.get_items(name, service, node, request)

    async def publish(
        self,
        profile: str,
        service: str,
        node: str,
        item_id: str,
        payload_xml: str,
        options: Mapping[str, Any],
    ) -> str:
        """Publish; returns the item id (the server's when ``item_id`` is empty)."""
        if item_id:
            check_item_ids([item_id])
        for key, value in options.items():
            # Booleans and integers are allowed too (sent as digits): only text is checked.
            for text in [key, *(value if isinstance(value, list | tuple) else [value])]:
                if isinstance(text, str):
                    check_xml_text(text, f"publish option {key!r}")
        name, service, node = await self._target(profile, service, node)
        return await self.pubsub.publish(name, service, node, item_id, payload_xml, options)

    async def retract(
        self,
        profile: str,
        service: str,
        node: str,
        item_ids: Sequence[str],
        options: Mapping[str, Any],
    ) -> None:
        """Retract items."""
        ids = check_item_ids(item_ids)
        unknown = sorted(set(options) - {"notify"})
        if unknown:
            raise InvalidArgument(f"unknown Retract option(s) {', '.join(unknown)}; known: notify")
        if not isinstance(options.get("notify", True), bool):
            raise InvalidArgument("the notify option must be a boolean")
        name, service, node = await self._target(profile, service, node)
        await self.pubsub.retract(name, service, node, ids, options)

    async def create_node(
        self, profile: str, service: str, node: str, config: Mapping[str, Any]
    ) -> str:
        """Create a node (empty name: an instant node); returns its name."""
        name = await self._profiles.resolve(profile)
        return await self.pubsub.create_node(
            name, check_service(service), check_node(node, allow_empty=True), _form(config)
        )

    async def delete_node(self, profile: str, service: str, node: str) -> None:
        """Delete a node."""
        await self.pubsub.delete_node(*await self._target(profile, service, node))

    async def purge_node(self, profile: str, service: str, node: str) -> None:
        """Remove every item of a node."""
        await self.pubsub.purge_node(*await self._target(profile, service, node))

    async def get_node_config(
        self, profile: str, service: str, node: str
    ) -> dict[str, str | list[str]]:
        """The node's configuration form values."""
        return await self.pubsub.get_node_config(*await self._target(profile, service, node))

    async def set_node_config(
        self, profile: str, service: str, node: str, config: Mapping[str, Any]
    ) -> None:
        """Change fields of the node's configuration."""
        target = await self._target(profile, service, node)
        await self.pubsub.set_node_config(*target, _form(config))

    async def subscribe(
        self, profile: str, service: str, node: str, options: Mapping[str, Any]
    ) -> str:
        """Subscribe the profile's bare JID; returns the subscription id.

        The subscription is the person's: should the cache have subscribed to the node
        for its own purposes, it will no longer remove that subscription.
        """
        target = await self._target(profile, service, node)
        return await self.pubsub.subscribe(*target, _form(options))

    async def unsubscribe(
        self, profile: str, service: str, node: str, options: Mapping[str, Any]
    ) -> None:
        """Unsubscribe (``subid`` picks one subscription among several)."""
        unknown = sorted(set(options) - {"subid"})
        if unknown:
            raise InvalidArgument(
                f"unknown Unsubscribe option(s) {', '.join(unknown)}; known: subid"
            )
        if not isinstance(options.get("subid", ""), str):
            raise InvalidArgument("the subid option must be a string")
        check_xml_text(options.get("subid", ""), "the subid option")
        target = await self._target(profile, service, node)
        await self.pubsub.unsubscribe(*target, options)

    async def get_subscriptions(
        self, profile: str, service: str, node: str
    ) -> list[dict[str, str]]:
        """The profile's subscriptions at the service (to ``node`` when not empty)."""
        name = await self._profiles.resolve(profile)
        return await self.pubsub.get_subscriptions(
            name, check_service(service), check_node(node, allow_empty=True)
        )

    # -- Cache ----------------------------------------------------------------------------

    async def search(self, query: Mapping[str, Any]) -> list[SearchHit]:
        """Search the cache (profile names in ``profiles`` are taken as given); an
        answer is cut at the reply bound (see :func:`bounded_hits`)."""
        hits = await self.cache.search(query)
        # The query is valid by now (the search checked it): its offset is a count.
        return bounded_hits(hits, int(query.get("offset", 0)))

    async def get_node_state(self, profile: str, service: str, node: str) -> NodeState:
        """A node's cache state."""
        name, service, node = await self._target(profile, service, node)
        if not service:
            service = await self._own_service(name)
        return await self.cache.get_node_state(name, service, node)

    async def sync(self, profile: str, service: str, node: str) -> None:
        """Start a node's (re)synchronisation."""
        name, service, node = await self._target(profile, service, node)
        if not service:
            service = await self._own_service(name)
        await self.cache.sync(name, service, node)

    async def purge_cache(self, filters: Mapping[str, Any]) -> int:
        """Remove cached items matching ``filters``; returns how many went.

        On a database other daemons share, only from the profiles this daemon serves:
        the others' copies are theirs (a profile named in ``profiles`` is served here
        first, or refused with Conflict).
        """
        if self._profiles.shares_database:
            named = filters.get("profiles")
            if named is None:
                filters = {**filters, "profiles": sorted(self._profiles.leased)}
            elif isinstance(named, list | tuple) and all(isinstance(p, str) for p in named):
                filters = {**filters, "profiles": [await self._profiles.resolve(p) for p in named]}
        return await self.cache.purge(filters)

    async def reset_cache(self) -> None:
        """Empty the cache.

        Raises:
            Conflict: the database is shared with other daemons, whose caches it would
                empty under them.
        """
        if self._profiles.shares_database:
            raise Conflict(
                "Reset would empty the cache of every Roost daemon on this shared database;"
                " use Purge, which acts on this daemon's profiles"
            )
        await self.cache.reset()

    def list_analysers(self) -> list[dict[str, Any]]:
        """The analysers in the order they are consulted."""
        return self.cache.list_analysers()

    async def _own_service(self, profile: str) -> str:
        """The profile's own PEP service: its bare JID."""
        jid, _password = await self._profiles.credentials(profile)
        return str(JID(jid).bare)


def hit_bytes(hit: SearchHit) -> int:
    """What a search hit's record takes on the bus: its strings in UTF-8 bytes, its two
    timestamps, and the overhead of its keys and variants."""
    strings = (hit["id"], hit["publisher"], hit["xml"], hit.get("parsed") or "")
    where = (hit["profile"], hit["service"], hit["node"])
    return 2 * RECORD_OVERHEAD + sum(len(text.encode()) for text in (*strings, *where))


def bounded_hits(hits: list[SearchHit], offset: int) -> list[SearchHit]:
    """``hits`` (those of a query at ``offset``) cut to the reply bound,
    :data:`~roost.service.pubsub.rsm.MAX_REPLY_BYTES`, as a GetItems page is.

    Search answers ``aa{sv}``, with no room for paging metadata: a cut answer keeps at
    least one hit, and its last hit carries ``next_offset``, the ``offset`` that asks the
    same query for the hits after it. An answer that is not cut has no ``next_offset``.
    """
    fit = bounded_length(map(hit_bytes, hits), len(hits), MAX_REPLY_BYTES)
    if fit == len(hits):
        return hits
    kept = hits[:fit]
    kept[-1] = {**kept[-1], "next_offset": offset + fit}
    return kept


def _form(values: Mapping[str, Any]) -> dict[str, str | list[str]]:
    """Data form values: a string each, or a list of strings for a multi-valued field."""
    form: dict[str, str | list[str]] = {}
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument("form field names must be non-empty strings")
        check_xml_text(key, "a form field name")
        if isinstance(value, str):
            form[key] = check_xml_text(value, f"form field {key!r}")
        elif isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            form[key] = [check_xml_text(v, f"form field {key!r}") for v in value]
        else:
            raise InvalidArgument(
                f"form field {key!r} must be a string or a list of strings, "
                f"as the data form writes it ('1', 'max', 'true'), not {value!r}"
            )
    return form
