"""The pubsub side of a daemon, built in one place: server, cache, frontends' service.

The graph is built in dependency order and nothing is patched in afterwards::

    SessionManager ──► PubsubServer ──► XmppSyncSource ──► PubsubCache
                            │                                   │
                            └──────────► PubsubService ◄────────┘
                                           (ItemsReader, EventRouter)

The daemon and the tests build it with :func:`build_pubsub_stack`; a test that restarts
the cache closes the stack and builds another on the same sessions and database.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.service.cache.analysers import AnalyserRegistry
from roost.service.cache.cache import DEFAULT_MAX_ITEMS_PER_NODE, PubsubCache
from roost.service.cache.source import RosterView, SyncSource, XmppSyncSource
from roost.service.cache.sync import DEFAULT_MIN_FREE_BYTES
from roost.service.events import EventHub
from roost.service.pubsub.operations import PubsubService
from roost.service.pubsub.reader import AccountLookup
from roost.service.pubsub.server import PubsubServer
from roost.service.xmpp.sessions import SessionManager
from roost.storage import Database


@dataclass(frozen=True)
class CacheOptions:
    """The cache's settings (``[cache]`` of the configuration)."""

    max_items_per_node: int = DEFAULT_MAX_ITEMS_PER_NODE
    prefetch: bool = True
    prefetch_max_nodes: int = 200
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES


@dataclass(frozen=True)
class PubsubStack:
    """The built graph: ``service`` is what frontends call."""

    server: PubsubServer
    source: SyncSource
    cache: PubsubCache
    service: PubsubService

    async def start(self) -> None:
        """Recover the cache's state from the previous run."""
        await self.cache.start()

    async def close(self) -> None:
        """Stop routing notifications, then stop the cache's syncs and timers."""
        self.service.close()
        await self.cache.close()


def build_pubsub_stack(
    db: Database,
    sessions: SessionManager,
    events: EventHub,
    registry: AnalyserRegistry | None = None,
    *,
    options: CacheOptions | None = None,
    roster: RosterView | None = None,
    accounts: AccountLookup | None = None,
    source: SyncSource | None = None,
) -> PubsubStack:
    """Build the pubsub graph of a daemon.

    Args:
        db: the database.
        sessions: the profiles' XMPP sessions.
        events: the hub notifications and cache states are published on.
        registry: the analysers (built-ins only when not given).
        options: the cache's settings.
        roster: the contacts (presence subscriptions decide which PEP nodes are kept
            current by notifications).
        accounts: a profile's account JID without a session (offline reads).
        source: the sync's server side, for tests that give the cache a server of
            their own (an :class:`XmppSyncSource` over the stack's server otherwise).
    """
    options = options or CacheOptions()
    server = PubsubServer(sessions)
    source = source or XmppSyncSource(server, sessions, roster)
    cache = PubsubCache(
        db,
        source,
        events,
        registry,
        max_items_per_node=options.max_items_per_node,
        prefetch=options.prefetch,
        prefetch_max_nodes=options.prefetch_max_nodes,
        min_free_bytes=options.min_free_bytes,
    )
    service = PubsubService(sessions, events, cache, server=server, accounts=accounts)
    return PubsubStack(server=server, source=source, cache=cache, service=service)
