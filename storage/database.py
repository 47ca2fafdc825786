"""The storage facade: one object that opens the database and carries every store.

The service layer holds one :class:`Database` and reaches each concern through it
(``db.profiles``, ``db.nodes``, ``db.items``, ``db.roster``…); nothing above this
package sees an engine, a session or SQL.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from roost.storage.engine import create_engine, database_file, resolve_database_url
from roost.storage.engines import engine_for
from roost.storage.items import ItemStore
from roost.storage.migrate import MigrationOutcome, prepare_database, repair_fulltext
from roost.storage.nodes import NodeStore
from roost.storage.params import ParamStore
from roost.storage.profiles import ProfileStore
from roost.storage.reads import ReadRunner
from roost.storage.roster import CacheSubscriptionStore, RosterStore
from roost.storage.search import SearchStore
from roost.storage.values import ValueStore

logger = logging.getLogger(__name__)


class Database:
    """An open database, brought to the current schema, with its stores.

    Build it with :meth:`open`; close it with :meth:`close` (or ``async with``).

    Attributes:
        engine: the async engine.
        reads: what runs the item store's reads (for an SQLite file, connections of its own).
        writes: what runs the write transactions given to :meth:`Store.write` (for an
            SQLite file, at once, on a connection of its own).
        url: the database URL.
        migration: what :func:`~roost.storage.migrate.prepare_database` did at open.
        profiles, params, values, nodes, items: the stores of those concerns.
        search: searches across the cached items.
        roster: each profile's roster and pending presence subscription requests.
        cache_subscriptions: the pubsub subscriptions the cache made for itself.
        leases: the profile leases this daemon holds (see :mod:`roost.storage.leases`).
        shares_database: other daemons may use the database at once, each serving its
            own profiles: rows that belong to no profile may change under this one.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        url: URL,
        migration: MigrationOutcome,
        reads: ReadRunner | None = None,
    ) -> None:
        self.engine = engine
        self.url = url
        self.migration = migration
        self.reads = reads or engine_for(url).read_runner(engine, url)
        self.writes = engine_for(url).write_runner(engine, url)
        sessions = async_sessionmaker[AsyncSession](engine, expire_on_commit=False)
        self.profiles = ProfileStore(sessions, self.writes)
        self.params = ParamStore(sessions, self.writes)
        self.values = ValueStore(sessions, self.writes)
        self.nodes = NodeStore(sessions, self.writes)
        self.items = ItemStore(engine, self.reads)
        self.search = SearchStore(engine)
        self.roster = RosterStore(sessions, self.writes)
        self.cache_subscriptions = CacheSubscriptionStore(sessions, self.writes)
        self.leases = engine_for(url).open_leases(engine, url)
        self.shares_database = engine_for(url).shares_database

    def client_memory(self) -> int | None:
        """Bytes the database's client library holds in this process outside Python's
        objects; None where it does not say (see
        :meth:`~roost.storage.engines.base.DatabaseEngine.client_memory`)."""
        return engine_for(self.url).client_memory()

    def is_transient(self, exc: BaseException) -> bool:
        """Whether a store call failed on a lock another writer held too long, or a
        conflict the database failed it for: the same call a little later may well
        succeed (:meth:`~roost.storage.engines.base.DatabaseEngine.is_transient`)."""
        return engine_for(self.url).is_transient(exc)

    @classmethod
    async def open(
        cls,
        url: str | URL | None = None,
        *,
        from_config: str | None = None,
        check_fulltext: bool = True,
    ) -> Database:
        """Open the database at ``url``, creating or migrating it as needed.

        Args:
            url: the database URL; None for ``ROOST_DATABASE_URL``, else ``from_config``,
                else the default SQLite file under the XDG data directory.
            from_config: the configuration file's URL, which the environment overrides.
            check_fulltext: check the full-text index (and rebuild it if it drifted)
                before returning; False leaves that to :meth:`repair_fulltext`, for a
                caller that would rather do it after start with a large cache (the
                check reads every item: about 3 s at a million items). Full-text
                searches wait until it has run.

        Returns:
            The open database.

        Raises:
            DatabaseTooNew: the database was written by a newer Roost.
            UnmanagedDatabase: the database has tables but no schema revision.
        """
        if isinstance(url, URL):
            url = url.render_as_string(hide_password=False)
        resolved = resolve_database_url(url, from_config=from_config)
        engine = create_engine(resolved)
        try:
            outcome = await prepare_database(engine, resolved, check_fulltext=False)
            database = cls(engine, resolved, outcome)
            if not await database._stopped_cleanly():
                if check_fulltext:
                    rebuilt = await repair_fulltext(engine)
                    database.migration = replace(outcome, fts_rebuilt=rebuilt)
                else:
                    database.search.fulltext_checked.clear()
        except BaseException:
            await engine.dispose()
            raise
        logger.info(
            "database %s: %s at %s",
            resolved.render_as_string(hide_password=True),
            outcome.action,
            outcome.to_revision,
        )
        return database

    async def repair_fulltext(self) -> bool:
        """Check the full-text index against the items and rebuild it if it drifted.

        Full-text searches wait while it runs (other searches and every other read go
        on): they never answer from an index that may have drifted.

        Returns:
            True when it was rebuilt.
        """
        self.search.fulltext_checked.clear()
        try:
            return await repair_fulltext(self.engine)
        finally:
            self.search.fulltext_checked.set()

    def free_bytes(self) -> int | None:
        """Free space on the file system that holds the database file; None when the
        database is not a local file (a database server watches its own disk)."""
        path = database_file(self.url)
        if path is None:
            return None
        try:
            return shutil.disk_usage(path.parent).free
        except OSError:
            return None

    async def _stopped_cleanly(self) -> bool:
        """Whether the database was last closed by :meth:`close` with its full-text
        index known to be in step, and at the schema it has now; forgotten as it is
        read, so that a crash of this run leaves the index to be checked again."""
        database = engine_for(self.url)
        if not database.fulltext_can_drift:
            return False
        async with self.engine.begin() as conn:
            clean = await database.take_clean_stop(conn)
        return clean and self.migration.action == "current"

    async def close(self) -> None:
        """Let reads under way finish, then give the leases back and close every
        connection.

        .. versionchanged:: the last write says whether the full-text index was in step
           (checked, or found so at open): the next :meth:`open` then skips its check,
           which reads every cached item. The index is written by triggers in the items'
           own transactions, so only a change made outside Roost can make it drift, and a
           crash leaves no such mark behind.
        """
        await self.reads.close()
        await self.writes.close()
        database = engine_for(self.url)
        if self.search.fulltext_checked.is_set() and database.fulltext_can_drift:
            try:
                async with self.engine.begin() as conn:
                    await database.mark_clean_stop(conn)
            except Exception as exc:  # the next start checks the index: nothing is lost
                logger.warning("cannot mark the database as closed cleanly: %s", exc)
        await self.leases.close()
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
