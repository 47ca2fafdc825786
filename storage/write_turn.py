"""One write at a time on a single-writer database, first come, first served.

SQLite lets one transaction write at a time. A writer that finds the file's write lock
taken waits in SQLite's busy handler, which polls: after a few tries it sleeps 25 to
100 ms between looks, while a writer that has just arrived looks after 1 ms. Under a
steady mix of writes the one that has waited longest is the likeliest to lose again, so a
stored value waited half a second at the 99th percentile and a contact change, several
writes in turn, two seconds, where each write holds the lock for a few milliseconds.

So every store of a daemon takes its turn in one queue (an :class:`asyncio.Lock`, which
wakes its waiters in order) before its write transaction, and SQLite's busy handler only
ever meets another process. A write made inside another's turn (a store call a write
transaction makes, run in its own task) is already in turn: it does not queue behind the
turn it is part of.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from weakref import WeakKeyDictionary

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from roost.storage.engines import engine_for

# The turns the running task (and the tasks it started) holds.
_held: ContextVar[frozenset[WriteTurn]] = ContextVar("roost_write_turns", default=frozenset())


class WriteTurn:
    """The queue of one database's write transactions in this process."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    @property
    def busy(self) -> bool:
        """Whether a write holds the turn now."""
        return self._lock.locked()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Wait for the turn, and keep it for the block (at once when already held)."""
        held = _held.get()
        if self in held:
            yield
            return
        async with self._lock:
            token = _held.set(held | {self})
            try:
                yield
            finally:
                _held.reset(token)


_turns: WeakKeyDictionary[Engine, WriteTurn] = WeakKeyDictionary()


def write_turn_for(engine: AsyncEngine) -> WriteTurn | None:
    """The write turn every store on ``engine`` shares, or None when the database lets
    several transactions write at once (PostgreSQL)."""
    if not engine_for(engine).single_writer:
        return None
    return _turns.setdefault(engine.sync_engine, WriteTurn())
