"""The one read path of GetItems: cache, server or offline copy, decided once per request.

Both answers follow one contract (``roost.service.pubsub.rsm`` and the store's paging
share one window function), and a server answer is given the ``parsed`` data the cache
would give, so that a frontend cannot tell where an answer came from except by
``from_cache`` and ``cache_age``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum

from slixmpp import JID

from roost.service.errors import NotConnected
from roost.service.pubsub.cache_seam import PubsubCache
from roost.service.pubsub.model import ItemsReply, ItemsRequest
from roost.service.pubsub.rsm import bounded_reply
from roost.service.pubsub.server import PubsubServer
from roost.service.xmpp.sessions import SessionManager

# The JID of a profile's account, known without a session (from where profiles are kept).
AccountLookup = Callable[[str], Awaitable[str]]


class ReadSource(Enum):
    """Where a GetItems request is answered from."""

    CACHE = "cache"  # the cache when the node is current, else the server
    SERVER = "server"
    OFFLINE_COPY = "offline copy"


class ItemsReader:
    """Answers GetItems requests.

    Args:
        server: the server side.
        sessions: which profiles are connected.
        cache: the cache, None for a daemon without one.
        accounts: a profile's account JID without a session (offline reads of the
            profile's own PEP service, given as an empty ``service``).
    """

    def __init__(
        self,
        server: PubsubServer,
        sessions: SessionManager,
        cache: PubsubCache | None = None,
        accounts: AccountLookup | None = None,
    ) -> None:
        self._server = server
        self._sessions = sessions
        self._cache = cache
        self._accounts = accounts

    def source_for(self, profile: str, request: ItemsRequest) -> ReadSource:
        """Where ``request`` for ``profile`` is answered from."""
        if self._cache is None or not request.use_cache:
            return ReadSource.SERVER
        if not self._sessions.is_connected(profile):
            return ReadSource.OFFLINE_COPY
        return ReadSource.CACHE

    async def read(
        self, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply:
        """The node's items as ``request`` asks.

        Raises:
            NotConnected: the profile is offline and the cache holds no complete copy of
                the node that answers the request.
            XmppError: the server refused.
        """
        # Every answer is cut to the reply bound here, once its items carry ``parsed``:
        # the bound counts everything a reply holds, alike on every path.
        return bounded_reply(await self._answer(profile, service, node, request), request)

    async def _answer(
        self, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply:
        source = self.source_for(profile, request)
        cache = self._cache
        if source is ReadSource.OFFLINE_COPY and cache is not None:
            return await self._offline(cache, profile, service, node, request)
        service = self._server.resolve(profile, service)
        if source is ReadSource.CACHE and cache is not None:
            cached = await cache.answer(profile, service, node, request)
            if cached is not None:
                return cached
        answer = self._server.get_items(profile, service, node, request)
        if cache is None:
            return await answer
        return await cache.server_answered(profile, service, node, request, answer)

    async def _offline(
        self, cache: PubsubCache, profile: str, service: str, node: str, request: ItemsRequest
    ) -> ItemsReply:
        if not service:
            if self._accounts is None:
                raise NotConnected(f"profile {profile!r} is not connected; connect it first")
            # The name the session would give (its bound bare JID), so the cache's key matches.
            service = str(JID(await self._accounts(profile)).bare)
        reply = await cache.answer_offline(profile, service, node, request)
        if reply is None:
            raise NotConnected(
                f"profile {profile!r} is offline and node {node!r} of {service} is not cached "
                "completely (or not as far as this request goes); connect the profile to ask "
                "the server"
            )
        return reply
