"""Writes run whole in one call: every statement of a write transaction, at once.

On an SQLite file one transaction writes at a time, so each write holds the database's
write turn (:mod:`roost.storage.write_turn`) from its first statement to its commit.
Through the async engine each statement is a trip to aiosqlite's thread and back, and
each trip waits for the event loop: under 32 busy bus clients a stored value's write
held the turn for 9 ms (p50) where SQLite's own work is a fraction of one, the turn was
held all the time, and the writes behind it waited 100-200 ms.

So a write is a plain (synchronous) function given a SQLAlchemy :class:`Session`, and a
:class:`WriteRunner` runs it in one transaction:

- :class:`ThreadWrites`, for an SQLite file: on a writer thread of its own, with a
  connection of its own to the file (the same settings as the engine's), in one trip;
  it takes the write turn for that trip only. Even so a small write held the turn for
  about 10 ms under that load (the thread waits for the interpreter lock, and the
  answer for the event loop), so the writes that wait meanwhile go together: one
  transaction, one trip and one commit for up to :data:`MAX_GROUPED_WRITES`.
- :class:`SessionWrites`, for any other database (and an in-memory SQLite one, which a
  second connection would not see): through an async session
  (:meth:`AsyncSession.run_sync`), in the write turn where the database has one.

A write on the thread ends with its transaction whatever happens to its caller; the
stores still call it from their shielded tasks (:mod:`roost.storage.cancel_safety`), so
that the turn is held until it ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from roost.storage.write_turn import WriteTurn, write_turn_for

_T = TypeVar("_T")

#: The most writes one transaction of :class:`ThreadWrites` runs together.
MAX_GROUPED_WRITES = 64

logger = logging.getLogger(__name__)


class WriteRunner(ABC):
    """Runs a write: a plain function given a :class:`Session`, in one transaction."""

    async def run(
        self, name: str, write: Callable[[Session], _T], *, again_on_conflict: bool = False
    ) -> _T:
        """``write(session)`` in one transaction, committed when it returns; its result.

        The name says in the debug log which store call a slow or failed write was.
        ``again_on_conflict``: run it once more when a unique key conflicted, for a write
        that reads a row, then inserts it when it is missing (a concurrent write, of
        this daemon or another on the same database, may insert the same key between
        the two: the second run finds that row).
        """
        started = time.perf_counter()
        for attempt in range(2):
            try:
                result = await self._run(write)
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
    async def _run(self, write: Callable[[Session], _T]) -> _T:
        """One run of ``write`` in one transaction."""

    @abstractmethod
    async def close(self) -> None:
        """Let a write under way finish, then close what the runner opened."""


class ThreadWrites(WriteRunner):
    """Writes to an SQLite file on a thread of their own, together.

    The writes that wait while one runs are run next in one transaction (each in a
    savepoint of its own, so that one failing leaves the others), at most
    :data:`MAX_GROUPED_WRITES` at a time: one trip to the thread and one commit for all
    of them. Each caller is answered once the transaction holding its write commits.

    Args:
        sync_engine: a synchronous engine on the file, its connections set up as the
            async engine's are; the runner disposes of it.
        turn: the database's write turn, shared with the async engine's writers.
    """

    def __init__(self, sync_engine: Engine, turn: WriteTurn) -> None:
        self._engine = sync_engine
        self._sessions = sessionmaker(sync_engine, expire_on_commit=False)
        self._turn = turn
        # One thread: the turn lets one write run at a time anyway, and the thread's
        # connection is then always the same, opened once.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="roost-writer")
        self._waiting: list[tuple[Callable[[Session], Any], asyncio.Future[Any]]] = []
        self._runner: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """How many writes wait for the next group."""
        return len(self._waiting)

    async def _run(self, write: Callable[[Session], _T]) -> _T:
        if self._turn.held:
            # Called within the turn (it is already this caller's): waiting for the
            # group, which waits for the turn, would wait for ever.
            (outcome,) = await self._on_thread([write])
            result: _T = _unwrap(outcome)
            return result
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._waiting.append((write, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_waiting())
        return await future

    async def _run_waiting(self) -> None:
        while self._waiting:
            async with self._turn.hold():
                group = self._waiting[:MAX_GROUPED_WRITES]
                del self._waiting[:MAX_GROUPED_WRITES]
                try:
                    outcomes = await self._on_thread([write for write, _ in group])
                except Exception as exc:  # the commit failed: none of them was stored
                    outcomes = [exc] * len(group)
            for (_, future), outcome in zip(group, outcomes, strict=True):
                if future.done():
                    continue  # its caller was cancelled; its write went on all the same
                if isinstance(outcome, _Failed):
                    future.set_exception(outcome.error)
                elif isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome.value)

    async def _on_thread(self, writes: list[Callable[[Session], Any]]) -> list[Any]:
        future = asyncio.get_running_loop().run_in_executor(
            self._thread, self._in_transaction, writes
        )
        # Cancelled, still wait for the transaction to end: the turn is held until then,
        # and no other writer meets the file's lock.
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    def _in_transaction(self, writes: list[Callable[[Session], Any]]) -> list[Any]:
        outcomes: list[_Done | _Failed] = []
        with self._sessions() as session:
            if len(writes) == 1:
                try:
                    with session.begin():
                        return [_Done(writes[0](session))]
                except Exception as exc:
                    return [_Failed(exc)]
            with session.begin():
                for write in writes:
                    try:
                        with session.begin_nested():
                            outcomes.append(_Done(write(session)))
                    except Exception as exc:
                        outcomes.append(_Failed(exc))
        return outcomes

    async def close(self) -> None:
        """See :meth:`WriteRunner.close`."""
        if self._runner is not None:
            await asyncio.wait([self._runner])
        # On the thread that opened the connection, the only one SQLite lets close it.
        await asyncio.get_running_loop().run_in_executor(self._thread, self._engine.dispose)
        self._thread.shutdown()


@dataclass(frozen=True, slots=True)
class _Done:
    value: Any


@dataclass(frozen=True, slots=True)
class _Failed:
    error: Exception


def _unwrap(outcome: Any) -> Any:
    if isinstance(outcome, _Failed):
        raise outcome.error
    return outcome.value


class SessionWrites(WriteRunner):
    """Writes through the async engine: a session's :meth:`AsyncSession.run_sync`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._turn = write_turn_for(engine)

    async def _run(self, write: Callable[[Session], _T]) -> _T:
        turn = self._turn.hold() if self._turn else nullcontext()
        async with turn, self._sessions() as session, session.begin():
            return await session.run_sync(write)

    async def close(self) -> None:
        """Nothing of its own: the engine is the database's."""


def sqlite_thread_writes(engine: AsyncEngine, url: URL, configure: Any) -> ThreadWrites:
    """:class:`ThreadWrites` on the SQLite file at ``url``, each of its connections set
    up by ``configure`` (the ``connect`` event handler the async engine has)."""
    from sqlalchemy import create_engine

    sync_engine = create_engine(url.set(drivername="sqlite+pysqlite"), pool_size=1, max_overflow=0)
    event.listen(sync_engine, "connect", configure)
    turn = write_turn_for(engine)
    assert turn is not None  # SQLite has a single writer
    return ThreadWrites(sync_engine, turn)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
