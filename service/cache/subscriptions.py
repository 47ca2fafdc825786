"""The pubsub subscriptions Roost made for the cache's own purposes.

To keep a node current Roost may subscribe the account to it (a pubsub component's node,
a non-contact's open PEP node). Such a subscription is the cache's: it is recorded in the
database when made, and removed from the server when its node leaves the cache (Purge,
Reset, the profile deleted, the node no longer wanted), so that Roost leaves nothing
behind on servers. One the person made (``Pubsub.Subscribe``) is theirs and is never
removed by the cache, even on a node the cache had subscribed to first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from roost.service.cache.source import SyncSource
from roost.service.errors import RoostError
from roost.storage import Database

log = logging.getLogger(__name__)


class CacheSubscriptions:
    """Records the cache's subscriptions and removes them when they are no longer needed.

    A subscription whose profile is offline when it should go stays recorded, and goes at
    the profile's next connection (:meth:`release_unused`).
    """

    def __init__(self, db: Database, source: SyncSource) -> None:
        self._db = db
        self._source = source

    async def record(self, profile: str, service: str, node: str, subid: str) -> None:
        """Roost subscribed ``profile`` to the node for the cache."""
        await self._db.cache_subscriptions.record_subscription(profile, service, node, subid)

    async def adopt(self, profile: str, service: str, node: str) -> None:
        """The person subscribed to the node: from now on the subscription is theirs."""
        if await self._db.cache_subscriptions.forget_subscription(profile, service, node):
            log.info("%s/%s: the cache's subscription is now the user's", service, node)

    async def forget(self, profile: str, service: str, node: str) -> None:
        """The subscription is gone from the server already (the node was deleted, or the
        person unsubscribed): stop tracking it."""
        await self._db.cache_subscriptions.forget_subscription(profile, service, node)

    async def release(self, profile: str, service: str, node: str) -> bool:
        """Remove the cache's subscription to the node from the server, if it holds one.

        Returns:
            True when a subscription of the cache's was removed.
        """
        found = await self._db.cache_subscriptions.list_subscriptions(profile, service, node)
        if not found or not self._source.is_connected(profile):
            return False
        try:
            await self._source.release_subscription(profile, service, node, found[0].subid)
        except RoostError as exc:
            log.warning("%s/%s: the cache's subscription was not removed: %s", service, node, exc)
            return False
        await self._db.cache_subscriptions.forget_subscription(profile, service, node)
        log.info("%s/%s: the cache's subscription removed", service, node)
        return True

    async def release_all(self, profile: str | None = None) -> int:
        """Remove every subscription of the cache's (of one profile) whose profile is
        connected; returns how many went."""
        released = 0
        for sub in await self._db.cache_subscriptions.list_subscriptions(profile):
            released += await self.release(sub.profile, sub.service, sub.node)
        return released

    async def release_unused(self, profile: str, wanted: Callable[[str, str], bool]) -> int:
        """Remove the profile's cache subscriptions to nodes for which ``wanted(service,
        node)`` is false (left over from a Reset or Purge while offline)."""
        released = 0
        for sub in await self._db.cache_subscriptions.list_subscriptions(profile):
            if not wanted(sub.service, sub.node):
                released += await self.release(profile, sub.service, sub.node)
        return released
