"""How much work one cache search may ask for, and the time and connections it may use.

A search is bounded three ways, so that no query, however it is written, can hold the
daemon or the database for long:

- **Its size**, checked by :meth:`roost.storage.search.SearchQuery.from_mapping` before
  any SQL is written: the constants below. A query over one of them is refused with
  :class:`~roost.storage.errors.InvalidQuery` naming the limit. They are far above what a
  person or a frontend writes, and small enough that building and planning the SQL takes
  milliseconds and stays within the database's own limits (expression depth, ORDER BY
  terms, bound parameters).
- **Its time**: each search's SQL runs under a budget (:data:`SEARCH_TIME_BUDGET`).
  On SQLite a progress handler stops the statement once the budget is spent; on
  PostgreSQL ``SET LOCAL statement_timeout`` does. Either way the search ends with
  :class:`SearchTimeout`.
- **Its share of the connections**: at most :data:`MAX_CONCURRENT_SEARCHES` searches run
  at once (:class:`SearchGate`); others wait their turn for at most
  :data:`SEARCH_WAIT`, then fail with :class:`SearchBusy`. The engine's pool keeps its
  other connections for every other store.

docs/security.md gives the reasoning behind each figure.
"""

from __future__ import annotations

import asyncio
import reprlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from roost.storage.engines import engine_for
from roost.storage.engines.base import StatementLimit
from roost.storage.errors import InvalidQuery

#: Filters in ``parsed``. Each one is a condition of the WHERE clause; SQLite refuses an
#: expression deeper than 1,000 and building thousands of them blocks the event loop.
MAX_PARSED_FILTERS = 32
#: Keys in ``order_by`` (SQLite refuses more than 1,000 ORDER BY terms; each key past
#: the first few only breaks ties).
MAX_ORDER_KEYS = 8
#: Characters in ``fts``, checked before the text is read.
MAX_FTS_CHARS = 1_000
#: Words in ``fts``; a quoted phrase counts each of its words. Every word is one more
#: term for the full-text index to look up and intersect.
MAX_FTS_TERMS = 32
#: Characters in a ``like``/``ilike`` pattern.
MAX_PATTERN_CHARS = 256
#: Wildcards (``%`` and ``_``, backslash-escaped ones excepted) in a pattern: each ``%``
#: multiplies the ways a pattern can be tried against a value.
MAX_PATTERN_WILDCARDS = 16
#: Values in an ``in``, ``not_in`` or ``overlap`` array.
MAX_ARRAY_VALUES = 1_000
#: Entries in each list key (``profiles``, ``services``, ``nodes``, ``types``,
#: ``subtypes``, ``item_ids``).
MAX_LIST_ENTRIES = 1_000
#: Segments of a path (``author.name`` has two).
MAX_PATH_SEGMENTS = 16
#: Characters of a path.
MAX_PATH_CHARS = 256
#: Characters of any other string a query holds: a filter's operand, an array element,
#: a list key's entry. Above the longest JID (3,071 bytes).
MAX_STRING_CHARS = 4_096

#: Seconds of database work one search may take.
SEARCH_TIME_BUDGET = 5.0
#: Searches running at once; the engine's pool has more connections than this. A search
#: holds its slot mostly waiting its turns on a busy event loop: with 2, searches queued
#: for the slots (p99 707 ms under the soak on SQLite; 161 ms with 4).
MAX_CONCURRENT_SEARCHES = 4
#: Seconds a search waits for its turn before it is refused.
SEARCH_WAIT = 10.0


class SearchTimeout(InvalidQuery):
    """The search's SQL ran past its time budget and was stopped."""

    def __init__(self, budget: float) -> None:
        self.budget = budget
        super().__init__(
            f"the search took longer than {budget:g} s and was stopped; narrow it: fewer "
            "or more selective fts words, patterns with fewer wildcards, or profiles, "
            "services, nodes or types to search within"
        )


class SearchBusy(InvalidQuery):
    """Too many searches are running: this one waited for its turn and gave up."""

    def __init__(self, running: int, waited: float) -> None:
        self.running = running
        self.waited = waited
        super().__init__(
            f"{running} searches are running already (the most at once) and this one "
            f"waited {waited:g} s for its turn; try again shortly"
        )


def cut(text_: str, size: int = 60) -> str:
    """``text_``, cut to about ``size`` characters: messages never echo a huge input."""
    return text_ if len(text_) <= size else text_[:size] + "…"


_SHORT_REPR = reprlib.Repr()
_SHORT_REPR.maxlevel = 3
_SHORT_REPR.maxstring = _SHORT_REPR.maxother = 60
_SHORT_REPR.maxlist = _SHORT_REPR.maxtuple = _SHORT_REPR.maxdict = 8


def shown(value: Any, size: int = 60) -> str:
    """``repr(value)``, cut to about ``size`` characters (see :func:`cut`), without ever
    writing out the whole of a large value."""
    return cut(_SHORT_REPR.repr(value), size)


def at_most(count: int, maximum: int, subject: str, unit: str, advice: str = "") -> None:
    """Refuse a ``subject`` holding ``count`` ``unit`` when that is above ``maximum``.

    Raises:
        InvalidQuery: "<subject> holds <count> <unit>; at most <maximum> are allowed",
            then the advice.
    """
    if count > maximum:
        raise InvalidQuery(
            f"{subject} holds {count} {unit}; at most {maximum} are allowed"
            + (f": {advice}" if advice else "")
        )


class SearchGate:
    """At most ``slots`` searches at once; a search waits at most ``wait`` seconds."""

    def __init__(self, slots: int = MAX_CONCURRENT_SEARCHES, wait: float = SEARCH_WAIT) -> None:
        """Allow ``slots`` searches at once, each waiting ``wait`` seconds at most."""
        self.slots = slots
        self.wait = wait
        self._semaphore = asyncio.Semaphore(slots)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the slots for the duration of the block.

        Raises:
            SearchBusy: no slot came free within ``wait`` seconds.
        """
        try:
            async with asyncio.timeout(self.wait):
                await self._semaphore.acquire()
        except TimeoutError:
            raise SearchBusy(self.slots, self.wait) from None
        try:
            yield
        finally:
            self._semaphore.release()


class TimeBudget:
    """Runs a search's statements on one connection within one time budget.

    Build it with :func:`time_budget`, which installs and removes the database's limit.
    """

    def __init__(self, conn: AsyncConnection, seconds: float, limit: StatementLimit) -> None:
        self._conn = conn
        self._limit = limit
        self.seconds = seconds

    async def execute(self, statement: Any) -> Any:
        """Run ``statement``, its rows fetched, within what is left of the budget.

        Raises:
            SearchTimeout: the budget ran out.
        """
        await self._limit.before_statement()
        try:
            return await self._conn.execute(statement)
        except DBAPIError as exc:
            if engine_for(self._conn).was_stopped(exc, self._limit):
                raise SearchTimeout(self.seconds) from None
            raise


@asynccontextmanager
async def time_budget(conn: AsyncConnection, seconds: float) -> AsyncIterator[TimeBudget]:
    """A :class:`TimeBudget` of ``seconds`` on ``conn``, from now (see
    :meth:`~roost.storage.engines.base.DatabaseEngine.statement_time_limit`)."""
    deadline = time.monotonic() + seconds
    async with engine_for(conn).statement_time_limit(conn, deadline) as limit:
        yield TimeBudget(conn, seconds, limit)
