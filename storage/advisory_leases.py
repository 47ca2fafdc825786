"""Profile leases on PostgreSQL: advisory locks on a connection of their own.

See :mod:`roost.storage.leases` for what a lease is; this is its PostgreSQL kind, which
:meth:`PostgresEngine.open_leases <roost.storage.engines.postgres.PostgresEngine.open_leases>`
opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from sqlalchemy import text as sql_text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from roost.storage.cancel_safety import stores_complete_on_cancel
from roost.storage.leases import LeaseHeld, ProfileLeases, holder_identity

log = logging.getLogger(__name__)

#: The first key of every lease's advisory lock ("roos" in ASCII; the second key is the
#: profile's id), apart from the migration lock's single 64-bit key.
LEASE_LOCK_CLASS = 0x726F6F73
#: The longest application name PostgreSQL keeps (NAMEDATALEN - 1 bytes).
MAX_APPLICATION_NAME = 63
#: How long the leases wait between two attempts to reach the server again, at most.
RECONNECT_MAX_SECONDS = 5.0


@stores_complete_on_cancel
class AdvisoryLeases(ProfileLeases):
    """PostgreSQL advisory locks on a connection of their own (see
    :mod:`roost.storage.leases`).

    Each lease is ``pg_try_advisory_lock(LEASE_LOCK_CLASS, profile_id)`` on one
    connection opened at the first lease, outside the engine's pool (a pooled connection
    would carry the locks to whoever uses it next, and the pool may close it). Its
    ``application_name`` is :func:`holder_identity`, so that a refused daemon can name
    the holder from ``pg_stat_activity``. A call whose caller is cancelled still
    finishes (a lock granted but not recorded would be held until the daemon exits).

    Args:
        engine: the daemon's engine, for looking up who holds a lease.
        url: the database's URL, for the leases' own connection.
    """

    def __init__(self, engine: AsyncEngine, url: URL) -> None:
        super().__init__()
        self._pool = engine
        self._url = url
        self._lock = asyncio.Lock()
        self._engine: AsyncEngine | None = None
        self._conn: AsyncConnection | None = None
        self._driver: Any = None
        self._broken = False
        self._closed = False
        self._retaking: asyncio.Task[None] | None = None

    async def acquire(self, profile_id: int, profile_name: str) -> None:
        """See :meth:`ProfileLeases.acquire`."""
        async with self._lock:
            if profile_id in self.held:
                return
            try:
                taken = await self._try_lock(await self._connection(), profile_id)
            except DBAPIError:
                if not self._connection_died():
                    raise
                # It died unnoticed: a second try, on a new connection.
                taken = await self._try_lock(await self._connection(), profile_id)
            if not taken:
                raise LeaseHeld(profile_name, await self._describe_holder(profile_id))
            self._granted(profile_id, profile_name)

    async def release(self, profile_id: int) -> None:
        """See :meth:`ProfileLeases.release`."""
        async with self._lock:
            if profile_id not in self.held:
                return
            self._dropped(profile_id)
            if self._conn is None or self._broken:
                return  # gone with the connection
            try:
                await self._conn.execute(
                    sql_text("SELECT pg_advisory_unlock(:cls, :id)"),
                    {"cls": LEASE_LOCK_CLASS, "id": profile_id},
                )
            except DBAPIError:
                if not self._connection_died():
                    raise

    async def close(self) -> None:
        """See :meth:`ProfileLeases.close`: closing the connection ends every lock."""
        self._closed = True
        if self._retaking is not None:
            self._retaking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retaking
        async with self._lock:
            await self._disconnect()
            self.held.clear()
            self._names.clear()
            if self._engine is not None:
                await self._engine.dispose()
                self._engine = None

    # -- the connection -----------------------------------------------------------------

    async def _connection(self) -> AsyncConnection:
        """The leases' connection, opened (and every lease held taken again) if needed.

        The lock must be held.
        """
        if self._conn is not None and not self._broken:
            return self._conn
        await self._disconnect()
        if self._engine is None:
            identity = holder_identity().encode()[:MAX_APPLICATION_NAME].decode(errors="ignore")
            self._engine = create_async_engine(
                self._url,
                poolclass=NullPool,
                hide_parameters=True,
                connect_args={"server_settings": {"application_name": identity}},
            )
        conn = await self._engine.connect()
        try:
            # No transaction left open: the locks are the session's, not a transaction's.
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection  # asyncpg's connection
            driver.add_termination_listener(self._terminated)
        except BaseException:
            await conn.close()
            raise
        self._conn, self._driver, self._broken = conn, driver, False
        again = sorted(self.held)
        for profile_id in again:
            name = self._names.get(profile_id, str(profile_id))
            if await self._try_lock(conn, profile_id):
                log.warning("lease of profile %r taken again", name)
                for callback in self.on_taken_again:
                    callback(profile_id, name)
            else:
                log.error(
                    "lease of profile %r lost: %s took it while the database connection was"
                    " down; this daemon no longer serves it",
                    name,
                    await self._describe_holder(profile_id),
                )
                self._lost(profile_id)
        return conn

    async def _try_lock(self, conn: AsyncConnection, profile_id: int) -> bool:
        result = await conn.execute(
            sql_text("SELECT pg_try_advisory_lock(:cls, :id)"),
            {"cls": LEASE_LOCK_CLASS, "id": profile_id},
        )
        return bool(result.scalar())

    async def _disconnect(self) -> None:
        conn, driver = self._conn, self._driver
        self._conn = self._driver = None
        if driver is not None:
            driver.remove_termination_listener(self._terminated)
        if conn is not None:
            with contextlib.suppress(SQLAlchemyError, OSError):
                if self._broken:
                    await conn.invalidate()
                await conn.close()

    def _connection_died(self) -> bool:
        """After a failed statement: whether the connection is gone (then marked so)."""
        if self._driver is not None and self._driver.is_closed():
            self._broken_connection()
            return True
        return False

    def _terminated(self, _connection: object) -> None:
        """The leases' connection died: every lease went with it. Take them again."""
        if self._closed or self._broken:
            return
        self._broken_connection()
        if self._retaking is None or self._retaking.done():
            self._retaking = asyncio.get_running_loop().create_task(self._retake())

    def _broken_connection(self) -> None:
        self._broken = True
        if self.held:
            log.error(
                "the database connection holding the profile leases was lost (server"
                " restart, or its session ended): the leases of %s are gone until it is"
                " back, and another daemon could take them meanwhile",
                ", ".join(repr(self._names.get(i)) for i in sorted(self.held)),
            )

    async def _retake(self) -> None:
        delay = 0.2
        while not self._closed:
            try:
                async with self._lock:
                    if not self.held and not self._closed:
                        await self._disconnect()
                        return
                    if not self._closed:
                        await self._connection()
                return
            except (SQLAlchemyError, OSError) as exc:
                log.warning("the database is still out of reach (%s); trying again", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    # -- who holds a lease --------------------------------------------------------------

    async def _describe_holder(self, profile_id: int) -> str:
        """The holder of a lease, for a person; a plain phrase when it cannot be seen."""
        query = sql_text(
            "SELECT a.application_name, a.pid, host(a.client_addr), a.client_hostname"
            " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND l.classid::bigint = :cls AND l.objid::bigint = :id"
        )
        try:
            async with self._pool.connect() as conn:
                row = (
                    await conn.execute(query, {"cls": LEASE_LOCK_CLASS, "id": profile_id})
                ).first()
        except SQLAlchemyError:
            log.debug("looking up the holder of lease %d failed", profile_id, exc_info=True)
            row = None
        if row is None:
            # Released since, or not visible to this database user.
            return "another Roost daemon"
        application, pid, address, hostname = row
        where = hostname or address
        origin = f"from {where}" if where else "over a local socket"
        return f"{application or 'another Roost daemon'} (database session {pid}, {origin})"
