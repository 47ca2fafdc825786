"""The backend facade: the one object a bridge talks to.

A bridge (the D-Bus one, or any other) receives a :class:`Backend` and reaches every
service through it; it never touches the database. Argument validation happens in the
services, so that every bridge gets the same checks and the same error messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from importlib import metadata
from typing import Any, Protocol

from roost.service.cache.analysers import AnalyserRegistry
from roost.service.config import Config
from roost.service.contacts import ContactsService
from roost.service.database_copy import DatabaseCopies
from roost.service.errors import NotConnected
from roost.service.events import EventHub
from roost.service.heap_trim import HeapTrimmer
from roost.service.profiles import ProfileService
from roost.service.pubsub_access import PubsubAccess
from roost.service.pubsub_stack import CacheOptions, build_pubsub_stack
from roost.service.settings import SettingsService
from roost.service.xmpp.sessions import SessionManager
from roost.storage.database import Database

log = logging.getLogger(__name__)


class SessionControl(Protocol):
    """What the backend needs of the XMPP session manager."""

    async def connect(self, name: str) -> str:
        """Open the profile's session; return the bound full JID once it is up."""
        ...

    async def disconnect(self, name: str) -> None:
        """Close the profile's session (nothing happens when it is not up)."""
        ...

    def is_connected(self, name: str) -> bool:
        """True when the profile's session is up."""
        ...


def roost_version() -> str:
    """The installed Roost's version, ``0+unknown`` when run from a tree never installed."""
    try:
        return metadata.version("roost")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class Backend:
    """Holds the database, the event hub and the services built on them.

    Attributes:
        version: Roost's version string.
        config: the daemon's configuration.
        events: where services announce what happened; bridges subscribe here.
        profiles: accounts and the default profile.
        settings: parameters and the key/value store.
        database_copies: copies of the whole database to another one.
        sessions: the XMPP session manager (None only for a backend built without XMPP).
        pubsub: pubsub operations and the cache, as frontends call them.
        contacts: each profile's roster and presence subscription requests.
    """

    def __init__(
        self,
        db: Database,
        config: Config | None = None,
        events: EventHub | None = None,
        sessions: SessionControl | None = None,
    ) -> None:
        self.db = db
        self.config = config or Config()
        self.version = roost_version()
        self.events = events or EventHub()
        self.profiles = ProfileService(db, self.events)
        self.settings = SettingsService(db, self.events, self.profiles)
        self.database_copies = DatabaseCopies(db)
        manager = SessionManager(
            self._credentials, self.events, request_timeout=self.config.request_timeout
        )
        self.sessions = sessions if sessions is not None else manager
        self.contacts = ContactsService(db, self.events, self.profiles, manager)
        registry = AnalyserRegistry()
        registry.load_entry_points()
        registry.load_config_rules(self.config.cache_rules)
        self.stack = build_pubsub_stack(
            db,
            manager,
            self.events,
            registry,
            options=CacheOptions(
                max_items_per_node=self.config.max_items_per_node,
                prefetch=self.config.prefetch,
                prefetch_max_nodes=self.config.prefetch_max_nodes,
                min_free_bytes=self.config.min_free_disk_mb * 1024 * 1024,
            ),
            roster=self.contacts,
            accounts=self._account_jid,
        )
        self.cache = self.stack.cache
        self.profiles.on_deleted.append(self.cache.forget_profile)
        self.profiles.on_deleted.append(self.contacts.forget_profile)
        self.profiles.on_leased.append(self.contacts.reload_profile)
        self.profiles.on_leased.append(self.cache.take_profile)
        self.profiles.on_lease_lost.append(self._lease_lost)
        self.pubsub = PubsubAccess(self.profiles, self.stack.service, self.cache)
        self._background: set[asyncio.Task[Any]] = set()
        self._autoconnect: list[str] = []
        self.heap = HeapTrimmer(self.events)

    async def _credentials(self, name: str) -> tuple[str, str, dict[str, Any]]:
        record = await self.db.profiles.get_profile(name)
        return record.jid, record.password, dict(record.options)

    async def _account_jid(self, name: str) -> str:
        return (await self.profiles.get(name)).jid

    @classmethod
    async def open(
        cls, config: Config, database_url: str | None = None, *, defer_background: bool = False
    ) -> Backend:
        """Open (and migrate) the database named by ``database_url``, else
        ``ROOST_DATABASE_URL``, else the config's, and :meth:`start` the backend.

        Args:
            config: the daemon's configuration.
            database_url: the database (``roostd --database``); None for the
                environment's, else the config's.
            defer_background: leave :meth:`start_background` to the caller (the daemon
                calls it once its bridges serve), else it is called at once.

        .. versionchanged:: ``ROOST_DATABASE_URL`` overrides the config's URL.

        .. versionchanged:: the background work (the full-text check, autoconnections)
           can be left until the caller serves (``defer_background``).
        """
        # The full-text check reads every cached item: it runs in the background
        # (start_background()), so that the daemon owns its name at once whatever the
        # cache's size.
        db = await Database.open(
            database_url, from_config=config.database_url, check_fulltext=False
        )
        backend = cls(db, config)
        try:
            await backend.start()
        except BaseException:
            await db.close()
            raise
        if not defer_background:
            backend.start_background()
        return backend

    async def start(self) -> None:
        """Load the state services keep in memory, recover the cache, and note the
        profiles marked ``autoconnect``."""
        await self.profiles.load()
        await self.contacts.load()
        await self.stack.start()
        self.heap.start()
        self._autoconnect = [
            record.name
            for record in await self.db.profiles.list_profiles()
            if record.options.get("autoconnect")
        ]

    def start_background(self) -> None:
        """Start what runs beside the daemon's service: the full-text check (full-text
        searches wait for it) and the connection of the profiles marked
        ``autoconnect``. Neither holds up the daemon's start: the check reads every
        cached item (about 20 s at a million items), a slow server may take long to
        answer, and either would compete for the CPU with the start itself."""
        if not self.db.search.fulltext_checked.is_set():
            self._spawn(self._check_fulltext())
        for name in self._autoconnect:
            self._spawn(self._autoconnect_profile(name))
        self._autoconnect = []

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _check_fulltext(self) -> None:
        try:
            await self.db.repair_fulltext()
        except Exception:  # logged: nobody awaits this, and searches must not hang
            log.exception("checking the full-text index failed")
            self.db.search.fulltext_checked.set()

    async def _autoconnect_profile(self, name: str) -> None:
        try:
            await self._sessions().connect(await self.profiles.resolve(name))
        except Exception as exc:  # logged: nobody awaits this
            log.warning("autoconnect of profile %r failed: %s", name, exc)

    def _lease_lost(self, name: str) -> None:
        """Another daemon took the profile's lease (this one's database connection was
        down): it serves the profile now, so this one lets go of its session."""
        self.cache.forget_profile(name)
        self.contacts.forget_profile(name)
        if self.sessions is not None and self.sessions.is_connected(name):
            self._spawn(self._disconnect_lost(name))

    async def _disconnect_lost(self, name: str) -> None:
        try:
            await self._sessions().disconnect(name)
        except Exception:  # logged: nobody awaits this
            log.exception("closing the session of %r, whose lease was lost, failed", name)

    async def close(self) -> None:
        """Stop the cache's syncs, close every session, then the database."""
        for task in self._background:
            task.cancel()
        # Awaited before the database closes under them (a cancelled check rolls back).
        await asyncio.gather(*self._background, return_exceptions=True)
        self.heap.close()
        await self.stack.close()
        await self.contacts.close()
        if isinstance(self.sessions, SessionManager):
            await self.sessions.close()
        elif self.sessions is not None:
            for name in await self.profiles.list():
                if self.sessions.is_connected(name):
                    try:
                        await self.sessions.disconnect(name)
                    except Exception:
                        log.exception("closing the session of %r failed", name)
        await self.db.close()

    def _sessions(self) -> SessionControl:
        if self.sessions is None:
            raise NotConnected("XMPP sessions are not available")
        return self.sessions

    async def connect(self, name: str) -> str:
        """Connect the profile (``""``: default); return its full JID once the session is up."""
        name = await self.profiles.resolve(name)
        return await self._sessions().connect(name)

    async def disconnect(self, name: str) -> None:
        """Disconnect the profile (``""``: default); nothing happens for a profile this
        daemon does not serve."""
        name = await self.profiles.find(name)
        await self._sessions().disconnect(name)

    async def is_connected(self, name: str) -> bool:
        """True when the profile (``""``: default) has its session up in this daemon
        (false for a profile another daemon serves)."""
        name = await self.profiles.find(name)
        return self._sessions().is_connected(name)

    async def delete_profile(self, name: str) -> None:
        """Close the profile's session if up, then delete it and all it owns."""
        name = await self.profiles.require(name)
        if self.sessions is not None and self.sessions.is_connected(name):
            # While the session is up: what Roost subscribed to for the cache goes too.
            try:
                await self.cache.release_profile(name)
            except Exception:
                log.exception("removing the cache's subscriptions of %r failed", name)
            await self.sessions.disconnect(name)
        await self.profiles.delete(name)
