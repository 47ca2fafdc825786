"""Reads run whole in one call: every statement of a read, in one transaction, at once.

An async store call pays for each statement it runs: with aiosqlite a statement goes to
the connection's thread and back several times (the cursor, the execution, the rows), and
each trip waits for the event loop and for the other thread to be scheduled. Reading a
page of 20 items (the node's count, the anchor's place, the page) made about a dozen
trips and took 2-8 ms on a busy two-core machine, where SQLite's own work was 0.1 ms.
Even one trip to a thread and back costs two wake-ups, as much as the rest of a small
read.

So a read is a plain (synchronous) function given a :class:`ReadConnection`, with every
statement inside it, and a :class:`ReadRunner` runs it in one transaction (one snapshot):

- :class:`SqliteReads`, for an SQLite file, on connections of its own to the file
  (read-only; WAL lets them read beside the daemon's writer). A *short* read (the caller
  says so: a page of at most :data:`SHORT_READ_ROWS` rows) runs at once, on the event
  loop's thread, within a budget: SQLite stops it once one of its statements has taken
  :data:`SHORT_READ_STEPS` virtual machine steps (a node far larger than usual: counting
  30,000 items, about a millisecond), or when it would have to wait for a lock, and it is
  then run again on a reader thread. The budget is counted in steps, not in time, so
  that a read preempted by a busy machine is not taken for a long one. Every other read runs on
  one of :data:`READ_THREADS` reader threads, one trip. Statements are compiled once
  and executed on the driver directly.
- :class:`~roost.storage.postgres_reads.PostgresReads`, for PostgreSQL: a short read on
  a plain asyncpg connection of its own, the rest through :class:`EngineReads`.
- :class:`EngineReads`, for any other database (and an in-memory SQLite one, which a
  second connection would not see): the function runs through the async engine
  (:meth:`AsyncConnection.run_sync`), the call shielded from cancellation as the writes
  are. On PostgreSQL a short read runs without a transaction of its own (autocommit):
  at PostgreSQL's ``READ COMMITTED`` each statement sees its own snapshot even inside
  one, so a transaction adds nothing to a read but a ``BEGIN`` and a ``ROLLBACK``, two
  round trips to the server of the three a page took, each a turn of the event loop.
  Longer reads keep theirs: a streamed read's server-side cursor needs one.

A caller cancelled while its read runs on a thread leaves the read to finish there, where
its transaction ends with it: nothing can be left open, so no shielding task is needed
(see :mod:`roost.storage.cancel_safety` for why the writes need one).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Dialect, Select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from roost.storage.cancel_safety import completes_on_cancel
from roost.storage.engines.sqlite_connections import SQLITE_BUSY_TIMEOUT_MS

_T = TypeVar("_T")

#: Reader threads (and their connections): a long read (a whole node) does not hold up
#: another, and SQLite releases the GIL while it steps.
READ_THREADS = 2
#: The most rows a read may return and still be run at once, on the event loop's thread.
SHORT_READ_ROWS = 100
#: How many virtual machine steps SQLite may take on one statement of a short read on the
#: event loop's thread before the read is stopped and run again on a reader thread.
SHORT_READ_STEPS = 100_000
# SQLite virtual machine steps between two looks at the budget (a few microseconds).
_PROGRESS_STEPS = 500
# Compiled statements kept: a store builds its statements once, so a few dozen at most;
# past this (statements built per call by mistake) the cache starts again.
_MAX_COMPILED = 256

Row = tuple[Any, ...]
Statement = Select[Any]


class ReadConnection(ABC):
    """What a read function is given: statements (SQLAlchemy Core, with named bind
    parameters, built once: they are compiled once) and their parameters in, plain rows
    (tuples) out."""

    @abstractmethod
    def rows(self, stmt: Statement, params: Mapping[str, Any]) -> list[Row]:
        """Every row of ``stmt``."""

    @abstractmethod
    def row(self, stmt: Statement, params: Mapping[str, Any]) -> Row | None:
        """The first row of ``stmt``, None when there is none."""

    @abstractmethod
    def stream(self, stmt: Statement, params: Mapping[str, Any]) -> Generator[Row, None, None]:
        """The rows of ``stmt`` as they are read: no row past where the caller stops."""


class ReadRunner(ABC):
    """Runs a read: a plain function given a :class:`ReadConnection`."""

    @abstractmethod
    async def run(
        self,
        read: Callable[..., _T],
        *args: Any,
        short: bool = False,
        overran: Callable[[], None] | None = None,
    ) -> _T:
        """``read(connection, *args)`` in one transaction; its result.

        ``short``: the read returns few rows (at most :data:`SHORT_READ_ROWS`), so it
        may run at once. It may then run twice: it must only read. ``overran`` is called
        when a short read had to be run again on a thread because it took more than a
        short read's budget (its data is larger than usual): the caller may ask for such
        reads as long ones from then on.
        """

    @abstractmethod
    async def close(self) -> None:
        """Let reads under way finish, then close the connections."""


# -- statements compiled once, run on a driver directly --------------------------------------


class CompiledStatement:
    """A statement as a driver runs it: its SQL, its parameters' names in order, and the
    values of those the statement itself gives (literals)."""

    __slots__ = ("fixed", "names", "sql", "stmt")

    def __init__(self, stmt: Statement, dialect: Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.stmt = stmt  # kept, so that its id is not reused while cached
        self.sql = compiled.string
        if "POSTCOMPILE" in self.sql:
            # Values rendered into the SQL at each execution: not one SQL text.
            raise ValueError("a read's statement cannot have literal_execute parameters")
        self.names = tuple(compiled.positiontup or ())
        self.fixed = {
            name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
        }

    def values(self, params: Mapping[str, Any]) -> list[Any]:
        """The statement's parameters in order."""
        if self.fixed:
            params = {**self.fixed, **params}
        return [params[name] for name in self.names]


class CompiledStatements:
    """Statements compiled once for one dialect, shared by every connection of a runner
    (the GIL guards the dict). A store builds its statements once: a few dozen at most;
    past :data:`_MAX_COMPILED` (statements built per call by mistake) it starts again."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._compiled: dict[int, CompiledStatement] = {}

    def __getitem__(self, stmt: Statement) -> CompiledStatement:
        found = self._compiled.get(id(stmt))
        if found is None or found.stmt is not stmt:
            if len(self._compiled) >= _MAX_COMPILED:
                self._compiled.clear()
            found = self._compiled[id(stmt)] = CompiledStatement(stmt, self._dialect)
        return found


# -- SQLite files -------------------------------------------------------------------------


class _SqliteConnection(ReadConnection):
    """A connection of :class:`SqliteReads`. With a ``budget`` (virtual machine steps),
    SQLite stops each statement that takes more than that."""

    def __init__(
        self, conn: sqlite3.Connection, compiled: CompiledStatements, *, budgeted: bool = False
    ) -> None:
        self._conn = conn
        self._compiled = compiled
        self.budget: int | None = None
        self._looks_left = math.inf
        if budgeted:
            conn.set_progress_handler(self._spent, _PROGRESS_STEPS)

    def _spent(self) -> int:
        self._looks_left -= 1
        return 1 if self._looks_left < 0 else 0

    def _execute(self, stmt: Statement, params: Mapping[str, Any]) -> sqlite3.Cursor:
        found = self._compiled[stmt]
        if self.budget is not None:
            self._looks_left = self.budget // _PROGRESS_STEPS
        return self._conn.execute(found.sql, found.values(params))

    def begin(self) -> None:
        self._looks_left = math.inf
        self._conn.execute("BEGIN")

    def end(self) -> None:
        self._looks_left = math.inf
        self._conn.execute("ROLLBACK")

    def rows(self, stmt: Statement, params: Mapping[str, Any]) -> list[Row]:
        return self._execute(stmt, params).fetchall()

    def row(self, stmt: Statement, params: Mapping[str, Any]) -> Row | None:
        cursor = self._execute(stmt, params)
        try:
            found: Row | None = cursor.fetchone()
            return found
        finally:
            cursor.close()

    def stream(self, stmt: Statement, params: Mapping[str, Any]) -> Generator[Row, None, None]:
        cursor = self._execute(stmt, params)
        try:
            yield from cursor
        finally:
            cursor.close()


class _OverBudget(Exception):
    """A short read ran past its budget (``long``), or would have waited for a lock."""

    def __init__(self, *, long: bool) -> None:
        super().__init__()
        self.long = long


class SqliteReads(ReadRunner):
    """Reads of an SQLite file (already created and migrated) on connections of its own.

    Args:
        path: the database file.
        threads: reader threads.
    """

    def __init__(self, path: Path, threads: int = READ_THREADS) -> None:
        self._path = path
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="roost-read")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._compiled = CompiledStatements(sqlite.dialect())
        self._short: _SqliteConnection | None = None
        self._stopped = False

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        # isolation_level None: no transaction begun by the driver; each read begins its
        # own, for all of its statements (else each SELECT would see its own snapshot).
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        # A reader never writes, whatever a bug asks of it.
        conn.execute("PRAGMA query_only=ON")
        with self._lock:
            self._connections.append(conn)
        return conn

    def _threaded(self) -> _SqliteConnection:
        conn: _SqliteConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _SqliteConnection(
                self._connect(SQLITE_BUSY_TIMEOUT_MS), self._compiled
            )
        return conn

    def _short_connection(self) -> _SqliteConnection:
        if self._short is None:
            # Never waits for a lock: a read that would wait runs on a thread instead.
            self._short = _SqliteConnection(self._connect(0), self._compiled, budgeted=True)
        return self._short

    @staticmethod
    def _transaction(conn: _SqliteConnection, read: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        conn.begin()
        try:
            return read(conn, *args)
        finally:
            conn.end()

    def _on_thread(self, read: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        return self._transaction(self._threaded(), read, args)

    def _at_once(self, read: Callable[..., _T], args: tuple[Any, ...]) -> _T:
        conn = self._short_connection()
        conn.budget = SHORT_READ_STEPS
        try:
            return self._transaction(conn, read, args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode in (sqlite3.SQLITE_INTERRUPT, sqlite3.SQLITE_BUSY):
                raise _OverBudget(long=exc.sqlite_errorcode == sqlite3.SQLITE_INTERRUPT) from None
            raise

    async def run(
        self,
        read: Callable[..., _T],
        *args: Any,
        short: bool = False,
        overran: Callable[[], None] | None = None,
    ) -> _T:
        if self._stopped:
            raise RuntimeError("the database is closed")
        if short:
            try:
                return self._at_once(read, args)
            except _OverBudget as over:
                if over.long and overran is not None:
                    overran()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, self._on_thread, read, args
        )

    async def close(self) -> None:
        self._stopped = True
        await asyncio.get_running_loop().run_in_executor(None, self._shut_down)

    def _shut_down(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


# -- any database, through the async engine -----------------------------------------------


class _EngineConnection(ReadConnection):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def rows(self, stmt: Statement, params: Mapping[str, Any]) -> list[Row]:
        return [tuple(row) for row in self._conn.execute(stmt, dict(params))]

    def row(self, stmt: Statement, params: Mapping[str, Any]) -> Row | None:
        found = self._conn.execute(stmt, dict(params)).first()
        return None if found is None else tuple(found)

    def stream(self, stmt: Statement, params: Mapping[str, Any]) -> Generator[Row, None, None]:
        result = self._conn.execution_options(stream_results=True).execute(stmt, dict(params))
        try:
            for found in result:
                yield tuple(found)
        finally:
            result.close()


class EngineReads(ReadRunner):
    """Reads through the async engine, each call shielded from cancellation.

    Args:
        engine: the engine.
        short_autocommit: run short reads outside a transaction (see the module's
            documentation: for a database where a transaction gives a read no snapshot
            of its own).
    """

    def __init__(self, engine: AsyncEngine, *, short_autocommit: bool = False) -> None:
        self._engine = engine
        # Shares the engine's pool; the setting is the connection's while it is lent.
        self._short_engine = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if short_autocommit else engine
        )
        self._shielded = completes_on_cancel(self._run)

    async def run(
        self,
        read: Callable[..., _T],
        *args: Any,
        short: bool = False,
        overran: Callable[[], None] | None = None,
    ) -> _T:
        result: _T = await self._shielded(
            self._short_engine if short else self._engine, read, *args
        )
        return result

    async def _run(self, engine: AsyncEngine, read: Callable[..., _T], *args: Any) -> _T:
        try:
            return await self._once(engine, read, *args)
        except DBAPIError as exc:
            # The server ended the session after the connection left the pool (a
            # restart): the pool has let every older connection go, and a read can be
            # run again on a new one.
            if not exc.connection_invalidated:
                raise
            return await self._once(engine, read, *args)

    @staticmethod
    async def _once(engine: AsyncEngine, read: Callable[..., _T], *args: Any) -> _T:
        async with engine.connect() as conn:
            return await conn.run_sync(lambda sync: read(_EngineConnection(sync), *args))

    async def close(self) -> None:
        """Nothing of its own: the engine is the database's."""
