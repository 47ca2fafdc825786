"""Profile leases: which daemon serves which profile of a database shared by several.

A daemon keeps copies of a profile's rows in memory (recent answers, values, the
roster, which nodes are current), which stay right only while no other daemon writes
that profile's rows. So a daemon serves a profile only under its *lease*: it takes the
lease the first time it acts for the profile and keeps it until the profile is deleted
or the daemon stops; a second daemon asking for the same lease is refused with
:class:`LeaseHeld`, which says who holds it.

Each database engine picks its kind (:meth:`DatabaseEngine.open_leases
<roost.storage.engines.base.DatabaseEngine.open_leases>`):

- :class:`AdvisoryLeases` (PostgreSQL): a session-level advisory lock per profile, on
  one connection of its own kept open for the daemon's life. The lock lives with that
  connection: if the connection dies (a server restart, an administrator ending the
  session), every lease is gone at once. That is logged as an error, and the leases are
  taken again on a new connection as soon as the server lets one in; a lease another
  daemon took in between is lost for good, logged, and reported to :attr:`on_lost`.
- :class:`FileLeases` (an SQLite file): a byte-range lock per profile on a lock file
  beside the database (``<database>.leases``, mode 0600). Open-file-description locks
  (``F_OFD_SETLK``) are used where the system has them, so that two daemons in one
  process exclude each other too; the kernel drops them when the daemon exits, however
  it exits.
- :class:`LocalLeases` (an in-memory SQLite database): nothing else can open the
  database, so every lease is granted.

Leases are advisory: they bind daemons that take them, which every Roost daemon does.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text as sql_text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from roost.storage.cancel_safety import stores_complete_on_cancel
from roost.storage.errors import StorageError

log = logging.getLogger(__name__)

#: The first key of every lease's advisory lock ("roos" in ASCII; the second key is the
#: profile's id), apart from the migration lock's single 64-bit key.
LEASE_LOCK_CLASS = 0x726F6F73
#: The longest application name PostgreSQL keeps (NAMEDATALEN - 1 bytes).
MAX_APPLICATION_NAME = 63
#: How long the leases wait between two attempts to reach the server again, at most.
RECONNECT_MAX_SECONDS = 5.0
#: Bytes of the lock file per profile: the lock is on the first, the holder's name fills
#: the rest.
SLOT_BYTES = 128
#: ``struct flock`` as the C library lays it out (``off_t`` 64 bits wide); ``0q``
#: pads the end to the structure's alignment.
_FLOCK = "hhqqi0q"


def holder_identity() -> str:
    """How this process names itself to other daemons: ``roostd pid N on HOST``."""
    return f"roostd pid {os.getpid()} on {socket.gethostname()}"


class LeaseHeld(StorageError):
    """Another daemon holds the lease of a profile.

    Attributes:
        profile: the profile's name.
        holder: who holds the lease, for a person (``roostd pid 1234 on host``, and
            where the database knows it, its session and address).
    """

    def __init__(self, profile: str, holder: str) -> None:
        self.profile = profile
        self.holder = holder
        super().__init__(f"the lease of profile {profile!r} is held by {holder}")


class ProfileLeases(ABC):
    """The leases one daemon holds on one database.

    Attributes:
        held: the ids of the profiles whose lease this daemon holds.
        on_lost: called with a profile's id and name when its lease was lost for good
            (the connection holding it died and another daemon took it meanwhile).
        on_taken_again: called with a profile's id and name when its lease was taken
            again after the connection holding it died.
    """

    def __init__(self) -> None:
        self.held: set[int] = set()
        self.on_lost: list[Callable[[int, str], None]] = []
        self.on_taken_again: list[Callable[[int, str], None]] = []
        self._names: dict[int, str] = {}

    @abstractmethod
    async def acquire(self, profile_id: int, profile_name: str) -> None:
        """Take the lease of a profile (nothing happens when it is held already).

        Raises:
            LeaseHeld: another daemon holds it.
        """

    @abstractmethod
    async def release(self, profile_id: int) -> None:
        """Give the lease of a profile back (nothing happens when it is not held)."""

    @abstractmethod
    async def close(self) -> None:
        """Give every lease back and let go of what holds them."""

    def _granted(self, profile_id: int, profile_name: str) -> None:
        self.held.add(profile_id)
        self._names[profile_id] = profile_name

    def _dropped(self, profile_id: int) -> None:
        self.held.discard(profile_id)
        self._names.pop(profile_id, None)

    def _lost(self, profile_id: int) -> None:
        name = self._names.get(profile_id, str(profile_id))
        self._dropped(profile_id)
        for callback in self.on_lost:
            callback(profile_id, name)


class LocalLeases(ProfileLeases):
    """Leases of a database no other daemon can open (in memory): always granted."""

    async def acquire(self, profile_id: int, profile_name: str) -> None:
        """See :meth:`ProfileLeases.acquire`."""
        self._granted(profile_id, profile_name)

    async def release(self, profile_id: int) -> None:
        """See :meth:`ProfileLeases.release`."""
        self._dropped(profile_id)

    async def close(self) -> None:
        """See :meth:`ProfileLeases.close`."""
        self.held.clear()
        self._names.clear()


class FileLeases(ProfileLeases):
    """Byte-range locks on a lock file beside an SQLite database (see the module).

    The lock file holds, for each profile, a slot of :data:`SLOT_BYTES` at
    ``profile_id * SLOT_BYTES``: the lease is a write lock on its first byte, and its
    holder writes its name into it, for the refusal another daemon gets. The file is
    opened at the first lease and closed by :meth:`close`, which drops every lock.
    Without open-file-description locks (not Linux), POSIX record locks are used: they
    belong to the process, so two daemons in one process would not exclude each other.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._fd: int | None = None

    def _file(self) -> int:
        if self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            os.fchmod(fd, 0o600)
            self._fd = fd
        return self._fd

    @staticmethod
    def _lock(fd: int, offset: int, lock_type: int) -> bool:
        """Set (or clear) the lock on the byte at ``offset``; False when another holds it."""
        try:
            if hasattr(fcntl, "F_OFD_SETLK"):
                # l_pid must be 0 for an open-file-description lock.
                flock = struct.pack(_FLOCK, lock_type, os.SEEK_SET, offset, 1, 0)
                fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock)
            else:
                mode = fcntl.LOCK_UN if lock_type == fcntl.F_UNLCK else fcntl.LOCK_EX
                fcntl.lockf(fd, mode | fcntl.LOCK_NB, 1, offset, os.SEEK_SET)
        except BlockingIOError:
            return False
        except PermissionError:  # EACCES: some systems' word for a lock held elsewhere
            return False
        return True

    async def acquire(self, profile_id: int, profile_name: str) -> None:
        """See :meth:`ProfileLeases.acquire`."""
        if profile_id in self.held:
            return
        fd = self._file()
        offset = profile_id * SLOT_BYTES
        if not self._lock(fd, offset, fcntl.F_WRLCK):
            raise LeaseHeld(profile_name, self._holder(fd, offset))
        name = holder_identity().encode()[: SLOT_BYTES - 1]
        os.pwrite(fd, name.ljust(SLOT_BYTES, b"\0"), offset)
        self._granted(profile_id, profile_name)

    @staticmethod
    def _holder(fd: int, offset: int) -> str:
        written = os.pread(fd, SLOT_BYTES, offset).split(b"\0", 1)[0]
        # Empty while the holder has locked the slot but not yet written its name.
        return written.decode(errors="replace") or "another Roost daemon"

    async def release(self, profile_id: int) -> None:
        """See :meth:`ProfileLeases.release`."""
        if profile_id not in self.held or self._fd is None:
            return
        offset = profile_id * SLOT_BYTES
        os.pwrite(self._fd, bytes(SLOT_BYTES), offset)
        self._lock(self._fd, offset, fcntl.F_UNLCK)
        self._dropped(profile_id)

    async def close(self) -> None:
        """See :meth:`ProfileLeases.close`: closing the file drops every lock."""
        fd, self._fd = self._fd, None
        if fd is not None:
            for profile_id in self.held:
                os.pwrite(fd, bytes(SLOT_BYTES), profile_id * SLOT_BYTES)
            os.close(fd)
        self.held.clear()
        self._names.clear()


@stores_complete_on_cancel
class AdvisoryLeases(ProfileLeases):
    """PostgreSQL advisory locks on a connection of their own (see the module).

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
