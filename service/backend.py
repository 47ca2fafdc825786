"""The backend facade: the one object a bridge talks to.

A bridge (the D-Bus one, or any other) receives a :class:`Backend` and reaches every
service through it; it never touches the database. Argument validation happens in the
services, so that every bridge gets the same checks and the same error messages.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Protocol

from roost.service.config import Config
from roost.service.errors import NotConnected
from roost.service.events import EventHub
from roost.service.profiles import ProfileService
from roost.service.settings import SettingsService
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
        sessions: the XMPP session manager, None until one is attached.
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
        self.sessions = sessions

    @classmethod
    async def open(cls, config: Config, database_url: str | None = None) -> Backend:
        """Open (and migrate) the database named by ``database_url`` or the config."""
        db = await Database.open(database_url or config.database_url)
        backend = cls(db, config)
        try:
            await backend.start()
        except BaseException:
            await db.close()
            raise
        return backend

    async def start(self) -> None:
        """Load the state services keep in memory."""
        await self.profiles.load()

    async def close(self) -> None:
        """Close every session, then the database."""
        if self.sessions is not None:
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
        """Disconnect the profile (``""``: default)."""
        name = await self.profiles.resolve(name)
        await self._sessions().disconnect(name)

    async def is_connected(self, name: str) -> bool:
        """True when the profile (``""``: default) has its session up."""
        name = await self.profiles.resolve(name)
        return self._sessions().is_connected(name)

    async def delete_profile(self, name: str) -> None:
        """Close the profile's session if up, then delete it and all it owns."""
        name = await self.profiles.require(name)
        if self.sessions is not None and self.sessions.is_connected(name):
            await self.sessions.disconnect(name)
        await self.profiles.delete(name)
