"""The store of cached pubsub items: writes in batches, paged reads, purges.

A node's items are kept in the order the server gives (oldest first) by ``position``,
which grows with every write: a republished item moves to the end, as on the servers.
Paging is done in SQL with keyset conditions on ``position`` (never an OFFSET scan for
``before``/``after``), reading no more rows than the page holds, in the window that
:func:`roost.storage.paging.page_window` gives (the rules the service layer also pages a
server's answer by), as described in :meth:`ItemStore.get_items`; the page reads
themselves are :mod:`roost.storage.item_pages`.

Reads are plain functions of a connection, each run whole by the database's
:class:`~roost.storage.reads.ReadRunner` (one trip, one snapshot); writes are async
transactions, each completed even when its caller is cancelled. Parsed data is written
as :func:`~roost.storage.item_records.parsed_text` and read back as that text.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from roost.storage.cancel_safety import completes_by_itself, stores_complete_on_cancel
from roost.storage.engines import DatabaseEngine, engine_for
from roost.storage.errors import InvalidQuery
from roost.storage.item_pages import (
    NODE,
    RECORD_COLUMNS,
    ItemPages,
    PageQuery,
    item_record,
)
from roost.storage.item_records import (
    DEFAULT_PAGE_SIZE,
    ItemBatch,
    ItemInput,
    ItemPage,
    ItemRecord,
)
from roost.storage.models import Profile, PubsubItem, PubsubNode
from roost.storage.reads import SHORT_READ_ROWS, EngineReads, ReadConnection, ReadRunner
from roost.storage.search import parse_path
from roost.storage.write_turn import write_turn_for

log = logging.getLogger(__name__)

_items: Table = PubsubItem.__table__  # type: ignore[assignment]
_nodes: Table = PubsubNode.__table__  # type: ignore[assignment]
_profiles: Table = Profile.__table__  # type: ignore[assignment]

# Rows per executemany call: large enough to amortise the round trip through the async
# driver's thread, small enough to keep the parameter list's memory modest.
_WRITE_CHUNK = 1000
# Large nodes remembered (see ItemStore._large_nodes); past this, they are learnt again.
_LARGE_NODES = 10_000
_UPDATED_ON_CONFLICT = ("publisher", "position", "data", "parsed", "search_text", "updated")
_T = TypeVar("_T")


def _check_count(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or value < 0):
        raise InvalidQuery(f"{name} must be a non-negative integer, not {value!r}")


# -- reads: plain functions of a connection, run by the store's ReadRunner -------------------

_COUNT_ITEMS = select(_nodes.c.item_count).where(_nodes.c.id == bindparam("node", type_=Integer()))
_LIST_ITEM_IDS = select(_items.c.item_id, _items.c.updated).where(NODE).order_by(_items.c.position)
_GET_ITEM = select(*RECORD_COLUMNS).where(
    NODE, _items.c.item_id == bindparam("item_id", type_=String())
)
_ITEM_BATCH = (
    select(_items.c.id, *RECORD_COLUMNS)
    .where(NODE, _items.c.id > bindparam("after_row", type_=Integer()))
    .order_by(_items.c.id)
    .limit(bindparam("n", type_=BigInteger()))
)


def _count_items(conn: ReadConnection, node_id: int) -> int:
    found = conn.row(_COUNT_ITEMS, {"node": node_id})
    return int(found[0]) if found else 0


def _list_item_ids(conn: ReadConnection, node_id: int) -> list[tuple[str, float]]:
    return [(row[0], row[1]) for row in conn.rows(_LIST_ITEM_IDS, {"node": node_id})]


def _get_item(conn: ReadConnection, node_id: int, item_id: str) -> ItemRecord | None:
    row = conn.row(_GET_ITEM, {"node": node_id, "item_id": item_id})
    return None if row is None else item_record(row)


def _item_batch(conn: ReadConnection, node_id: int, after_row: int, limit: int) -> ItemBatch:
    rows = conn.rows(_ITEM_BATCH, {"node": node_id, "after_row": after_row, "n": limit})
    items = [item_record(row[1:]) for row in rows]
    return ItemBatch(items, int(rows[-1][0]) if len(rows) == limit else None)


def parsed_key_index_name(path: str) -> str:
    """The name of the expression index :meth:`ItemStore.ensure_parsed_key_index` creates.

    ``ix_parsed_`` and the path with dots doubled; a path holding ``-`` or ``_`` also
    gets a short hash, so that two different paths never share a name.
    """
    name = "ix_parsed_" + path.replace(".", "__").replace("-", "_")
    if "-" in path or "_" in path:
        name += "_" + hashlib.sha1(path.encode()).hexdigest()[:8]
    return name


@stores_complete_on_cancel
class ItemStore:
    """Cached pubsub items of the nodes in ``pubsub_nodes``.

    Every method runs in one transaction, named after the method in the debug log.
    """

    def __init__(self, engine: AsyncEngine, reads: ReadRunner | None = None) -> None:
        """Bind the store to ``engine`` (its database engine gives the dialect's SQL);
        ``reads`` runs its reads (default: through ``engine``).

        .. versionchanged:: ``reads``: the database gives an SQLite file a runner of its
           own (:class:`~roost.storage.reads.SqliteReads`): a page is read at once, in one
           statement, and a long read on a reader thread, in one trip.
        """
        self._engine = engine
        self._reads = reads or EngineReads(engine)
        self._dialect = engine_for(engine)
        # Twenty syncs writing pages of thousands of items at once left some waiting
        # past SQLite's busy timeout ("database is locked"); in the database's write
        # turn they wait without a bound and without holding a pooled connection.
        self._write_turn = write_turn_for(engine)
        self._pages = ItemPages(self._dialect)
        # Nodes whose pages, though short, took SQLite longer than a short read may
        # (counting a very large node): their pages go straight to a reader thread.
        self._large_nodes: set[int] = set()
        self._upsert = self._dialect.upsert(
            _items,
            self._upsert_values(self._dialect),
            conflict=("node_id", "item_id"),
            update=_UPDATED_ON_CONFLICT,
        )
        self._upsert_in_place = self._dialect.upsert(
            _items,
            self._upsert_values(self._dialect),
            conflict=("node_id", "item_id"),
            update=tuple(c for c in _UPDATED_ON_CONFLICT if c != "position"),
        )

    @staticmethod
    def _upsert_values(dialect: DatabaseEngine) -> dict[str, Any]:
        return {
            "node_id": bindparam("node_id"),
            "item_id": bindparam("item_id", type_=String()),
            "publisher": bindparam("publisher", type_=String()),
            "position": bindparam("position"),
            "data": bindparam("data", type_=Text()),
            # Serialised here, so that None is stored as SQL NULL, not JSON null.
            "parsed": dialect.json_param(bindparam("parsed", type_=Text())),
            "search_text": bindparam("search_text", type_=Text()),
            "created": bindparam("created", type_=Float()),
            "updated": bindparam("updated", type_=Float()),
        }

    @asynccontextmanager
    async def _transaction(self, name: str, *, write: bool) -> AsyncIterator[AsyncConnection]:
        start = time.perf_counter()
        if write:
            turn = self._write_turn.hold() if self._write_turn else nullcontext()
            async with turn, self._engine.begin() as conn:
                yield conn
        else:
            async with self._engine.connect() as conn:
                yield conn
        log.debug("transaction %s: %.1f ms", name, (time.perf_counter() - start) * 1000)

    async def _read(
        self,
        name: str,
        read: Callable[..., _T],
        *args: Any,
        short: bool = False,
        overran: Callable[[], None] | None = None,
    ) -> _T:
        start = time.perf_counter()
        result = await self._reads.run(read, *args, short=short, overran=overran)
        log.debug("read %s: %.1f ms", name, (time.perf_counter() - start) * 1000)
        return result

    async def upsert_items(
        self,
        node_id: int,
        items: Sequence[ItemInput],
        *,
        keep_position: bool = False,
        at_start: bool = False,
    ) -> int:
        """Store items in a node, replacing those with the same id.

        Each item gets a position after every other item of the node, in the order given,
        so a republished item moves to the end (as on Prosody); with ``keep_position``
        an item already stored keeps its place instead (as on ejabberd) and only new items
        go to the end. An existing item keeps its ``created``.

        Args:
            node_id: the node's row id.
            items: the items, oldest first.
            keep_position: leave items already stored where they are.
            at_start: place the items before every item of the node instead, in the order
                given (older items of a node kept in part, back among its newest).

        Returns:
            How many items were written.
        """
        if not items:
            return 0
        now = time.time()
        async with self._transaction("upsert_items", write=True) as conn:
            if at_start:
                bottom = await conn.scalar(
                    select(func.min(_items.c.position)).where(_items.c.node_id == node_id)
                )
                # Positions may go below zero: only their order matters.
                base = int(bottom or 0) - len(items) - 1
            else:
                top = await conn.scalar(
                    select(func.max(_items.c.position)).where(_items.c.node_id == node_id)
                )
                base = int(top or 0)
            rows = [
                {
                    "node_id": node_id,
                    "item_id": it.item_id,
                    "publisher": it.publisher,
                    "position": base + n,
                    "data": it.data,
                    "parsed": it.parsed_json,
                    "search_text": self._dialect.indexed_text(it.search_text),
                    "created": now if it.created is None else it.created,
                    "updated": now,
                }
                for n, it in enumerate(items, start=1)
            ]
            for start in range(0, len(rows), _WRITE_CHUNK):
                await conn.execute(
                    self._upsert_in_place if keep_position else self._upsert,
                    rows[start : start + _WRITE_CHUNK],
                )
        return len(items)

    async def delete_items(self, node_id: int, item_ids: Sequence[str]) -> int:
        """Delete items of a node by id.

        Args:
            node_id: the node's row id.
            item_ids: ids to delete; ids not in the node are ignored.

        Returns:
            How many items were deleted.
        """
        if not item_ids:
            return 0
        async with self._transaction("delete_items", write=True) as conn:
            result = await conn.execute(
                delete(_items).where(
                    _items.c.node_id == node_id, self._dialect.in_values(_items.c.item_id, item_ids)
                )
            )
        return int(result.rowcount)

    async def delete_items_not_in(self, node_id: int, keep_ids: Sequence[str]) -> int:
        """Delete every item of a node whose id is not in ``keep_ids``.

        Args:
            node_id: the node's row id.
            keep_ids: the ids to keep (those the server still has).

        Returns:
            How many items were deleted.
        """
        async with self._transaction("delete_items_not_in", write=True) as conn:
            result = await conn.execute(
                delete(_items).where(
                    _items.c.node_id == node_id,
                    ~self._dialect.in_values(_items.c.item_id, keep_ids),
                )
            )
        return int(result.rowcount)

    async def clear_node(self, node_id: int) -> int:
        """Delete every item of a node.

        Args:
            node_id: the node's row id.

        Returns:
            How many items were deleted.
        """
        async with self._transaction("clear_node", write=True) as conn:
            result = await conn.execute(delete(_items).where(_items.c.node_id == node_id))
        return int(result.rowcount)

    async def trim_node(self, node_id: int, keep: int) -> int:
        """Delete a node's oldest items beyond the newest ``keep``.

        Args:
            node_id: the node's row id.
            keep: how many of the newest items stay.

        Returns:
            How many items were deleted.

        Raises:
            InvalidQuery: ``keep`` is negative.
        """
        _check_count("keep", keep)
        async with self._transaction("trim_node", write=True) as conn:
            beyond = (
                select(_items.c.id)
                .where(_items.c.node_id == node_id)
                .order_by(_items.c.position.desc())
                .offset(keep)
            )
            result = await conn.execute(delete(_items).where(_items.c.id.in_(beyond)))
        return int(result.rowcount)

    @completes_by_itself
    async def count_items(self, node_id: int) -> int:
        """How many items a node holds.

        Args:
            node_id: the node's row id.

        Returns:
            The number of items.
        """
        return await self._read("count_items", _count_items, node_id)

    @completes_by_itself
    async def list_item_ids(self, node_id: int) -> list[tuple[str, float]]:
        """The ids of a node's items with when each was last written, in node order.

        Args:
            node_id: the node's row id.

        Returns:
            ``(item_id, updated)`` pairs, oldest first.
        """
        return await self._read("list_item_ids", _list_item_ids, node_id)

    @completes_by_itself
    async def get_item(self, node_id: int, item_id: str) -> ItemRecord | None:
        """One item of a node.

        Args:
            node_id: the node's row id.
            item_id: the item's id.

        Returns:
            The item, or None when the node does not hold it.
        """
        return await self._read("get_item", _get_item, node_id, item_id, short=True)

    @completes_by_itself
    async def get_items(
        self,
        node_id: int,
        *,
        item_ids: Sequence[str] | None = None,
        max_items: int | None = None,
        before: str | None = None,
        after: str | None = None,
        index: int | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        max_reply_items: int | None = None,
        max_reply_bytes: int | None = None,
        anchor_place: int | None = None,
    ) -> ItemPage:
        """Read a page of a node's items, as a pubsub service with RSM answers.

        L is the node's items oldest first, only those in ``item_ids`` when given.
        Without ``before``/``after``/``index``: the newest ``max_items`` of L (oldest
        first), complete when that is all of L; without ``max_items`` all of L, unless
        ``max_reply_items`` / ``max_reply_bytes`` bound the reply: then its first items
        up to the bound (at least one), complete when that is all of L. With ``after``:
        the first N items strictly after that item (``""``: from the start), complete
        when the page reaches the end of L. With ``before``: the last N items strictly
        before it (``""``: from the end), complete when the page reaches the start. With
        ``index``: ``L[index:index + N]``, complete when it reaches the end. N is
        ``max_items``, else ``page_size``. The window is
        :func:`~roost.storage.paging.page_window`'s; no more rows than the page holds
        are read.

        Args:
            node_id: the node's row id.
            item_ids: restrict L to these ids.
            max_items: the page size, or the newest N when no other paging is given.
            before: an item id of L, or ``""`` for the last page.
            after: an item id of L, or ``""`` for the first page.
            index: a position in L.
            page_size: N when ``max_items`` is None and paging is given.
            max_reply_items: for a read of all of L, the most items the page holds.
            max_reply_bytes: for a read of all of L, the most bytes of item XML (UTF-8)
                the page holds past its first item.
            anchor_place: where the ``before``/``after`` item was in L when last seen
                (a hint, right or not: it picks the end of L the anchor's place is
                counted from, so a page near the end of a large L counts few items).

        Returns:
            The page, with first/last ids, first_index, count and complete.

        Raises:
            RowNotFound: ``before``/``after`` names an item not in L.
            InvalidQuery: conflicting or negative paging arguments.
        """
        for name, value in (
            ("max_items", max_items),
            ("index", index),
            ("page_size", page_size),
            ("max_reply_items", max_reply_items),
            ("max_reply_bytes", max_reply_bytes),
        ):
            _check_count(name, value)
        if before is not None and after is not None:
            raise InvalidQuery("give either before or after, not both")
        if index is not None and (before is not None or after is not None):
            raise InvalidQuery("index cannot be combined with before or after")
        size = page_size if max_items is None else max_items
        # At most this many rows: a page, or the items an id list names.
        rows = size if before is not None or after is not None or index is not None else None
        if max_items is not None:
            rows = max_items
        if item_ids is not None:
            rows = len(item_ids) if rows is None else min(rows, len(item_ids))
        query = PageQuery(
            node_id,
            item_ids,
            size,
            max_items,
            before,
            after,
            index,
            max_reply_items,
            max_reply_bytes,
            anchor_place,
        )
        return await self._read(
            "get_items",
            self._pages.read,
            query,
            short=rows is not None and rows <= SHORT_READ_ROWS and node_id not in self._large_nodes,
            overran=lambda: self._large(node_id),
        )

    def _large(self, node_id: int) -> None:
        if len(self._large_nodes) >= _LARGE_NODES:
            self._large_nodes.clear()
        self._large_nodes.add(node_id)

    async def purge_items(
        self,
        *,
        profiles: Sequence[str] | None = None,
        services: Sequence[str] | None = None,
        nodes: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        older_than: float | None = None,
    ) -> int:
        """Delete cached items matching every filter given (no filter: every item).

        A node that loses items and was ``completed`` (or ``error``) is set to ``none``
        in the same transaction: its stored copy is no longer whole.

        Args:
            profiles: profile names.
            services: pubsub service JIDs.
            nodes: node names.
            types: node types (from their analysers).
            older_than: a timestamp; only items last written before it go.

        Returns:
            How many items were deleted.
        """
        node_filter = []
        for column, values in (
            (_profiles.c.name, profiles),
            (_nodes.c.service, services),
            (_nodes.c.name, nodes),
            (_nodes.c.type, types),
        ):
            if values is not None:
                node_filter.append(self._dialect.in_values(column, values))
        item_filter: list[ColumnElement[bool]] = []
        if node_filter:
            matching_nodes = (
                select(_nodes.c.id)
                .join(_profiles, _profiles.c.id == _nodes.c.profile_id)
                .where(*node_filter)
            )
            item_filter.append(_items.c.node_id.in_(matching_nodes))
        if older_than is not None:
            item_filter.append(_items.c.updated < older_than)
        losing = select(_items.c.node_id).where(*item_filter).distinct()
        # A node that loses items is no longer a whole copy: it says so in the same
        # transaction, or a crash before the caller marks it would leave it "completed"
        # with items missing, and served as complete after the restart.
        unmark = (
            update(_nodes)
            .where(_nodes.c.id.in_(losing), _nodes.c.sync_state.in_(("completed", "error")))
            .values(sync_state="none", sync_state_updated=time.time())
        )
        async with self._transaction("purge_items", write=True) as conn:
            await conn.execute(unmark)
            result = await conn.execute(delete(_items).where(*item_filter))
        return int(result.rowcount)

    async def ensure_parsed_key_index(self, path: str) -> None:
        """Index the parsed data's value at ``path``, for equality filters in searches.

        The index is on exactly the expression a search writes for that path (an
        expression index serves only an identical expression), named by
        :func:`parsed_key_index_name`; it is created only when missing.

        Args:
            path: a dotted key path, as in search filters.

        Raises:
            InvalidQuery: the path is not a plain key path.
        """
        segments = parse_path(path)
        ddl = self._dialect.expression_index_ddl(
            parsed_key_index_name(path), _items.name, _items.c.parsed.name, segments
        )
        async with self._transaction("ensure_parsed_key_index", write=True) as conn:
            for statement in ddl:
                await conn.exec_driver_sql(statement)

    @completes_by_itself
    async def get_item_batch(
        self, node_id: int, *, after_row: int = 0, limit: int = 500
    ) -> ItemBatch:
        """A batch of the node's stored items, for work that goes over all of them (the
        items re-parsed after their analyser changed).

        The batches follow the items' row ids, not their node order: an item written
        meanwhile (a notification) may be met again or not at all, so a caller makes
        each step idempotent. Each batch is one short read; nothing is held between
        batches.

        Args:
            node_id: the node's row id.
            after_row: where to start: 0 for the first batch, then the previous batch's
                ``next_row``.
            limit: the most items in the batch.

        Returns:
            The items and where the next batch starts.

        Raises:
            InvalidQuery: ``limit`` is not positive.
        """
        if isinstance(limit, bool) or limit < 1:
            raise InvalidQuery(f"limit must be a positive integer, not {limit!r}")
        return await self._read("get_item_batch", _item_batch, node_id, after_row, limit)

    async def set_parsed(
        self, node_id: int, items: Sequence[ItemInput], written: Sequence[float]
    ) -> int:
        """Replace the parsed data and search text of stored items, in place.

        Everything else of an item stays: its XML, its place in the node, ``created``
        and ``updated`` (the item did not change on the server). An item no longer
        stored, or written again since it was read (its ``updated`` is not the one
        given), is left as it is: what wrote it parsed it. The full-text index follows
        the new search text.

        Args:
            node_id: the node's row id.
            items: the items by ``item_id``, with their new ``parsed`` and
                ``search_text`` (the other fields are not read).
            written: each item's ``updated`` when it was read, in the same order.

        Returns:
            How many stored items were changed.
        """
        if len(items) != len(written):
            raise InvalidQuery("give one updated time per item")
        if not items:
            return 0
        stmt = (
            update(_items)
            .where(
                _items.c.node_id == node_id,
                _items.c.item_id == bindparam("b_item_id"),
                _items.c.updated == bindparam("b_updated", type_=Float()),
            )
            .values(
                parsed=self._dialect.json_param(bindparam("b_parsed", type_=Text())),
                search_text=bindparam("b_search_text", type_=Text()),
            )
        )
        rows = [
            {
                "b_item_id": it.item_id,
                "b_updated": when,
                "b_parsed": it.parsed_json,
                "b_search_text": self._dialect.indexed_text(it.search_text),
            }
            for it, when in zip(items, written, strict=True)
        ]
        changed = 0
        async with self._transaction("set_parsed", write=True) as conn:
            if not conn.dialect.supports_sane_multi_rowcount:
                # The driver cannot tell how many rows a batch changed (asyncpg): one
                # statement a row, so that each row's count is known.
                for row in rows:
                    changed += max(int((await conn.execute(stmt, row)).rowcount), 0)
                return changed
            for start in range(0, len(rows), _WRITE_CHUNK):
                result = await conn.execute(stmt, rows[start : start + _WRITE_CHUNK])
                changed += max(int(result.rowcount), 0)
        return changed
