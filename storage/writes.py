"""Writes run whole in one call: every statement of a write transaction, at once.

On an SQLite file one transaction writes at a time, so each write holds the database's
write turn (:mod:`roost.storage.write_turn`) from its first statement to its commit.
Through the async engine each statement is a trip to aiosqlite's thread and back, and
each trip waits for the event loop: under 32 busy bus clients a stored value's write
held the turn for 9 ms (p50) where SQLite's own work is a fraction of one, the turn was
held all the time, and the writes behind it waited 100-200 ms. Run on a writer thread
instead, in one trip, a write still held it for 10 ms: the thread waits for the
interpreter lock, which the busy event loop holds, and the answer waits for the loop.

So a write is a plain (synchronous) function given a SQLAlchemy :class:`Session`, and a
:class:`WriteRunner` runs it in one transaction:

- :class:`SqliteFileWrites`, for an SQLite file: at once, on the event loop's thread,
  with a connection of its own to the file (the same settings as the engine's), in the
  write turn; a write its caller says is large (a whole roster) runs as below, off the
  loop. Its cost on the loop is the ORM work the async path does there anyway, plus
  SQLite's, which is small: in WAL mode with ``synchronous=NORMAL`` a commit does not
  wait for the disk. It does not wait for another process's lock on the loop: the
  connection does not wait (the write is then run through the async engine, which
  does). What the loop does wait for is SQLite's checkpoint, once the write-ahead log
  has grown by 1,000 pages (every few hundred small writes): 5 to 50 ms on a test
  machine. A checkpoint made elsewhere does not let the log start again from its
  beginning while this connection writes, and the log then grows without end.
- :class:`SessionWrites`, for any other database (and an in-memory SQLite one, which a
  second connection would not see): through an async session
  (:meth:`AsyncSession.run_sync`), in the write turn where the database has one.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from roost.storage.write_turn import write_turn_for

_T = TypeVar("_T")


logger = logging.getLogger(__name__)


class WriteRunner(ABC):
    """Runs a write: a plain function given a :class:`Session`, in one transaction."""

    async def run(
        self,
        name: str,
        write: Callable[[Session], _T],
        *,
        again_on_conflict: bool = False,
        large: bool = False,
    ) -> _T:
        """``write(session)`` in one transaction, committed when it returns; its result.

        The name says in the debug log which store call a slow or failed write was.
        ``again_on_conflict``: run it once more when a unique key conflicted, for a write
        that reads a row, then inserts it when it is missing (a concurrent write, of
        this daemon or another on the same database, may insert the same key between
        the two: the second run finds that row).
        ``large``: the write does much work (a whole roster); where writes run on the
        event loop's thread, it runs off it.
        """
        started = time.perf_counter()
        for attempt in range(2):
            try:
                result = await self._run(write, large)
            except IntegrityError:
                if attempt or not again_on_conflict:
                    logger.debug("transaction %s failed after %.1f ms", name, _ms_since(started))
                    raise
            except Exception:
                logger.debug("transaction %s failed after %.1f ms", name, _ms_since(started))
                raise
            else:
                logger.debug("transaction %s took %.1f ms", name, _ms_since(started))
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    @abstractmethod
    async def _run(self, write: Callable[[Session], _T], large: bool) -> _T:
        """One run of ``write`` in one transaction."""

    @abstractmethod
    async def close(self) -> None:
        """Let a write under way finish, then close what the runner opened."""


class SqliteFileWrites(WriteRunner):
    """Writes to an SQLite file at once, on the event loop's thread.

    Args:
        sync_engine: a synchronous engine on the file whose connections do not wait
            for a lock; the runner disposes of it.
        engine: the database's async engine: it runs a write that met another
            process's lock.
        is_busy: whether an error is the file's lock held by another connection.
    """

    def __init__(
        self, sync_engine: Engine, engine: AsyncEngine, is_busy: Callable[[BaseException], bool]
    ) -> None:
        self._engine = sync_engine
        self._sessions = sessionmaker(sync_engine, expire_on_commit=False)
        self._waiting_writes = SessionWrites(engine)
        self._is_busy = is_busy
        turn = write_turn_for(engine)
        assert turn is not None  # SQLite has a single writer
        self._turn = turn

    async def _run(self, write: Callable[[Session], _T], large: bool) -> _T:
        if large:
            return await self._waiting_writes._run(write, large)
        async with self._turn.hold():
            try:
                result = self._in_transaction(write)
            except Exception as exc:
                if not self._is_busy(exc):
                    raise
                busy = exc
            else:
                return result
        # Another process holds the file's write lock (met at the transaction's start,
        # which takes it; were it met later, nothing of the write was kept either). Wait
        # for the lock off the loop.
        logger.debug("the database file is busy (%s); the write waits for it", busy)
        return await self._waiting_writes._run(write, large)

    def _in_transaction(self, write: Callable[[Session], _T]) -> _T:
        with self._sessions() as session, session.begin():
            return write(session)

    async def close(self) -> None:
        """See :meth:`WriteRunner.close`."""
        self._engine.dispose()


class SessionWrites(WriteRunner):
    """Writes through the async engine: a session's :meth:`AsyncSession.run_sync`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._turn = write_turn_for(engine)

    async def _run(self, write: Callable[[Session], _T], large: bool) -> _T:
        turn = self._turn.hold() if self._turn else nullcontext()
        async with turn, self._sessions() as session, session.begin():
            return await session.run_sync(write)

    async def close(self) -> None:
        """Nothing of its own: the engine is the database's."""


def sqlite_file_writes(
    engine: AsyncEngine, url: URL, set_up: Callable[[Engine], None]
) -> SqliteFileWrites:
    """:class:`SqliteFileWrites` on the SQLite file at ``url``, its engine set up by
    ``set_up`` as the async engine's is, then its connections told not to wait for a
    lock."""
    from sqlalchemy import create_engine

    from roost.storage.engines import engine_for

    sync_engine = create_engine(url.set(drivername="sqlite+pysqlite"), pool_size=1, max_overflow=0)

    def connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=0")
        # The driver's own transaction handling begins late: SQLAlchemy begins each
        # transaction itself (below).
        dbapi_connection.isolation_level = None

    def begin(connection: Any) -> None:
        # Every transaction here writes: take the write lock first, so that a busy file
        # fails the write before it has done anything, and it can be run elsewhere.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    set_up(sync_engine)  # first: its connect handler runs before the one below
    event.listen(sync_engine, "connect", connect)
    event.listen(sync_engine, "begin", begin)
    return SqliteFileWrites(sync_engine, engine, engine_for(url).is_transient)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
