"""Short reads on PostgreSQL, on asyncpg connections of their own.

A page of a node (a cached ``GetItems``) is one statement. Through SQLAlchemy's async
engine that statement cost roostd about 0.6 ms of CPU on top of what asyncpg itself
spends: the pool's checkout and return, the connection's characteristics set and reset
(autocommit), the execution context, the result's row processing, and the greenlet
switches of an async driver adapted to a synchronous API. On SQLite the same page is one
statement on a plain ``sqlite3`` connection (:class:`~roost.storage.reads.SqliteReads`);
here it is one ``fetch`` on a plain asyncpg connection: a fourth of the CPU, measured on
the item store's pages (0.15-0.2 ms against 0.6 ms a read).

:class:`PostgresReads` keeps up to :data:`READ_CONNECTIONS` connections for short reads
(opened when first needed, then kept) and runs each short read on one of them, outside
a transaction (as :class:`~roost.storage.reads.EngineReads` does: at ``READ COMMITTED``
each statement sees its own snapshot anyway). The read is still a plain function of a
:class:`~roost.storage.reads.ReadConnection`: it runs in a greenlet, as SQLAlchemy's
``run_sync`` does, and each statement awaits the driver from there. Statements are
compiled once, by the engine's own dialect, so the SQL is exactly what the engine sends.
Rows come as the driver gives them (no SQLAlchemy result processing): reads select text
and numbers, as the SQLite runner's rows are plain ``sqlite3`` values.

Long reads (a whole node, streamed through a server-side cursor in a transaction) go
through the engine. So does a short read whose connection failed (the server restarted,
or refused a new connection), or which the server failed: it is run again through the
engine, which replaces dead connections and raises SQLAlchemy's errors, the ones every
caller knows. A read is never left half done by a cancelled caller: it runs in a task of
its own, shielded (:func:`~roost.storage.cancel_safety.completes_on_cancel`), so that a
connection is never given back with a statement under way.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, TypeVar

# asyncpg ships neither type hints nor a py.typed marker.
import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only, greenlet_spawn

from roost.storage.cancel_safety import completes_on_cancel
from roost.storage.reads import (
    CompiledStatements,
    EngineReads,
    ReadConnection,
    ReadRunner,
    Row,
    Statement,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Connections kept for short reads, beside the engine's pool: a daemon's two or four
#: cores keep a handful of server processes busy; more would only queue there.
READ_CONNECTIONS = 8

#: What the driver raises when a connection or the server failed a read: the read is run
#: again through the engine.
# InternalClientError among them: a connection whose server session ended while it sat
# idle can meet the next statement half-way through reading the server's farewell
# ("another operation is in progress"), before it knows it is closed.
_DRIVER_FAILURES = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def _failed_statement_only(exc: BaseException) -> bool:
    """Whether the server refused a statement and the connection is fit for the next
    (an error of the statement, not of the connection or the protocol)."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(
        exc, asyncpg.PostgresConnectionError
    )


class _DriverConnection(ReadConnection):
    """A plain asyncpg connection, from inside the read's greenlet."""

    def __init__(self, conn: Any, statements: CompiledStatements) -> None:
        self._conn = conn
        self._statements = statements

    def rows(self, stmt: Statement, params: Mapping[str, Any]) -> list[Row]:
        compiled = self._statements[stmt]
        found = await_only(self._conn.fetch(compiled.sql, *compiled.values(params)))
        return [tuple(row) for row in found]

    def row(self, stmt: Statement, params: Mapping[str, Any]) -> Row | None:
        compiled = self._statements[stmt]
        found = await_only(self._conn.fetchrow(compiled.sql, *compiled.values(params)))
        return None if found is None else tuple(found)

    def stream(self, stmt: Statement, params: Mapping[str, Any]) -> Generator[Row, None, None]:
        # A short read returns few rows: read them at once.
        yield from self.rows(stmt, params)


class PostgresReads(ReadRunner):
    """Short reads on connections of their own, the rest through the engine (see the
    module documentation).

    Args:
        engine: the database's engine: long reads, and short ones whose connection failed.
        connect: opens a new asyncpg connection to the database.
        connections: the most connections kept for short reads.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        connect: Callable[[], Awaitable[Any]],
        connections: int = READ_CONNECTIONS,
    ) -> None:
        self._through_engine = EngineReads(engine, short_autocommit=True)
        self._connect = connect
        self._slots = asyncio.Semaphore(connections)
        self._idle: list[Any] = []
        self._under_way = 0
        self._none_under_way = asyncio.Event()
        self._none_under_way.set()
        self._statements = CompiledStatements(engine.dialect)
        self._stopped = False
        self._shielded = completes_on_cancel(self._short)

    async def run(
        self,
        read: Callable[..., _T],
        *args: Any,
        short: bool = False,
        overran: Callable[[], None] | None = None,
    ) -> _T:
        if self._stopped:
            raise RuntimeError("the database is closed")
        if not short:
            return await self._through_engine.run(read, *args)
        self._under_way += 1
        self._none_under_way.clear()
        try:
            result: _T = await self._shielded(read, args)
        finally:
            self._under_way -= 1
            if not self._under_way:
                self._none_under_way.set()
        return result

    async def _short(self, read: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        async with self._slots:
            conn = await self._taken()
            if conn is not None:
                try:
                    result: _T = await greenlet_spawn(
                        read, _DriverConnection(conn, self._statements), *args
                    )
                    return result
                except _DRIVER_FAILURES as exc:
                    log.info(
                        "a short read failed on its own connection (%r): through the engine", exc
                    )
                    if not _failed_statement_only(exc):
                        # The connection itself failed, or is in a state no one knows:
                        # closed here, it is not given back.
                        conn.terminate()
                finally:
                    self._give_back(conn)
        return await self._through_engine.run(read, *args, short=True)

    async def _taken(self) -> Any:
        """An open connection: an idle one, else a new one; None when none could be
        opened."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
        try:
            return await self._connect()
        except _DRIVER_FAILURES as exc:
            log.info("no connection for short reads (%r): through the engine", exc)
            return None

    def _give_back(self, conn: Any) -> None:
        """Keep ``conn`` for the next read, unless it is closed."""
        if not conn.is_closed():
            self._idle.append(conn)

    async def close(self) -> None:
        """Wait for the short reads under way (those asked for before), then close their
        connections."""
        self._stopped = True
        await self._none_under_way.wait()
        idle, self._idle = self._idle, []
        await asyncio.gather(*(conn.close() for conn in idle), return_exceptions=True)
