"""Pages of a node's items, as a pubsub service with RSM answers, read in SQL.

:meth:`roost.storage.items.ItemStore.get_items` checks a request and hands it here, to
run as one read of the store's :class:`~roost.storage.reads.ReadRunner`: one statement
(the page's rows with the list's length and the anchor's place as extra columns), two
when the page is empty. A node's length is kept with the node
(``pubsub_nodes.item_count``, by triggers); an id list's is the rows' when the page holds
them all, else counted; an anchor's place is counted from the end nearer to where it was
last seen. The window is :func:`roost.storage.paging.page_window`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    case,
    cast,
    func,
    literal_column,
    select,
)

from roost.storage.engines import DatabaseEngine
from roost.storage.errors import RowNotFound
from roost.storage.item_records import ItemPage, ItemRecord
from roost.storage.models import PubsubItem, PubsubNode
from roost.storage.paging import ReplyBudget, Window, page_window
from roost.storage.reads import SHORT_READ_ROWS, ReadConnection

_items: Table = PubsubItem.__table__  # type: ignore[assignment]
_nodes: Table = PubsubNode.__table__  # type: ignore[assignment]

#: The columns of a stored item, as every read of items gives them.
RECORD_COLUMNS = (
    _items.c.item_id,
    _items.c.publisher,
    _items.c.data,
    # The stored text (on PostgreSQL, JSONB's text form): no decoding here, no encoding on
    # the way out.
    cast(_items.c.parsed, Text).label("parsed"),
    _items.c.created,
    _items.c.updated,
)
#: No byte bound: more than any reply holds.
UNBOUNDED = 2**62
#: A node's items: the condition on the ``node`` parameter.
NODE = _items.c.node_id == bindparam("node", type_=Integer())
_NODE_ITEM_COUNT = (
    select(_nodes.c.item_count)
    .where(_nodes.c.id == bindparam("node", type_=Integer()))
    .scalar_subquery()
)


def item_record(row: Any) -> ItemRecord:
    """The stored item a row of :data:`RECORD_COLUMNS` (and maybe more columns) holds."""
    return ItemRecord._make(row[:HEADER])


#: Where a page row's own columns end and the list's length (and the anchor's) begin.
HEADER = len(RECORD_COLUMNS)


class PageQuery(NamedTuple):
    """A page request, checked (see :meth:`~roost.storage.items.ItemStore.get_items`)."""

    node_id: int
    item_ids: Sequence[str] | None
    size: int
    max_items: int | None
    before: str | None
    after: str | None
    start_index: int | None
    max_reply_items: int | None
    max_reply_bytes: int | None
    anchor_place: int | None


class ItemPages:
    """The page reads of one database: its statements, built once.

    Args:
        dialect: the database's engine (its id-list form).
    """

    def __init__(self, dialect: DatabaseEngine) -> None:
        self._dialect = dialect
        self._node = _Statements(dialect, by_ids=False)
        self._ids = _Statements(dialect, by_ids=True)

    def read(self, conn: ReadConnection, query: PageQuery) -> ItemPage:
        """The page ``query`` asks for (its arguments checked, as
        :meth:`~roost.storage.items.ItemStore.get_items` describes it): one statement,
        two when the page is empty.

        Raises:
            RowNotFound: ``before``/``after`` names an item not in the list.
        """
        node_id, item_ids, size, max_items, before, after, index, *bounds, anchor_place = query
        max_reply_items, max_reply_bytes = bounds
        params: dict[str, Any] = {"node": node_id}
        sql = self._node if item_ids is None else self._ids
        if item_ids is not None:
            params["ids"] = self._dialect.values_param(item_ids)
            if _holds_every_named(item_ids, max_items, before, after, index):
                return _named_page(
                    conn.rows(sql.named, params), max_items, max_reply_items, max_reply_bytes
                )
        anchor = after if after is not None else before
        if anchor:
            params["anchor"] = anchor
            params["place"] = anchor_place
        rows: list[Any]
        header = sql.count_header
        if after is not None:
            if after:
                rows, header = conn.rows(sql.after, {**params, "n": size}), sql.after_header
            else:
                rows = conn.rows(sql.first, {**params, "n": size})
        elif before is not None:
            if before:
                rows, header = conn.rows(sql.before, {**params, "n": size}), sql.before_header
            else:
                rows = conn.rows(sql.last, {**params, "n": size})
            rows.reverse()
        elif index is not None:
            rows = conn.rows(sql.at_offset, {**params, "n": size, "o": index})
        elif max_items is not None:
            rows = conn.rows(sql.last, {**params, "n": max_items})
            rows.reverse()
        elif max_reply_items is None and max_reply_bytes is None:
            rows = conn.rows(sql.first, {**params, "n": UNBOUNDED})
        else:
            budget = ReplyBudget(
                UNBOUNDED if max_reply_items is None else max_reply_items,
                UNBOUNDED if max_reply_bytes is None else max_reply_bytes,
            )
            rows = _bounded_rows(conn, sql.first, params, budget)
        # The list's length (and the anchor's place) came with the rows, else read apart.
        found = rows[0][HEADER:] if rows else conn.row(header, params)
        assert found is not None
        total = found[0] or 0  # None: no such node (deleted meanwhile), so no items
        if anchor and found[1] is None:
            raise RowNotFound(f"item {anchor!r} is not in the node's item list")
        if after is not None:
            window = page_window(total, size, after=found[2] if after else 0)
        elif before is not None:
            window = page_window(total, size, before=found[2] if before else total)
        elif index is not None:
            window = page_window(total, size, after=min(index, total))
        elif max_items is not None:
            window = page_window(total, max_items)
        elif max_reply_items is None and max_reply_bytes is None:
            window = page_window(total)
        else:
            window = page_window(total, len(rows), after=0)
        return _item_page(rows, window, total)


class _Statements:
    """The page statements, built once (so compiled once), for a node's items or for
    those of them an id list names (``by_ids``).

    Each page statement reads the page's rows and, in the same statement, the list's
    length (and with an anchor, the anchor's position and how many items come before the
    page: up to it for ``after``, before it for ``before``) as columns after the item's
    own; a page with no rows gets them from the matching ``*_header`` statement.
    Parameters: ``node``, ``ids`` (``by_ids``), ``anchor`` (an item id), ``n`` (the most
    rows), ``o`` (an offset), ``place`` (the anchor's place when last seen, or NULL).
    """

    def __init__(self, dialect: DatabaseEngine, *, by_ids: bool) -> None:
        pos = _items.c.position
        where = [NODE]
        order: Any = pos
        if by_ids:
            ids = bindparam("ids", type_=Text())
            where.append(dialect.in_named_values(_items.c.item_id, ids))
            # Ordered by an expression rather than the column: SQLite then looks the ids
            # up by the (node, item id) index and sorts them, rather than walking the
            # node's position index through every item of the node.
            order = pos + literal_column("0")
        at = select(pos).where(*where, _items.c.item_id == bindparam("anchor", type_=String()))
        anchor = at.scalar_subquery()

        def count(*extra: Any) -> Any:
            return select(func.count()).select_from(_items).where(*where, *extra).scalar_subquery()

        # A node's length is kept with the node (by triggers, in the same transactions as
        # its items): read, not counted. An id list's is counted.
        total = count() if by_ids else _NODE_ITEM_COUNT
        # The anchor's place is counted from the nearer end, as its place when last seen
        # says (``place``, None when unknown: from the start). Only the branch taken is
        # counted (both databases run a scalar subquery when its value is first needed):
        # a walk back from the newest items of a large node counts the few after it.
        place = bindparam("place", type_=BigInteger())
        from_end = place * 2 > total
        up_to = case((from_end, total - count(pos > anchor)), else_=count(pos <= anchor))
        before = case((from_end, total - count(pos >= anchor)), else_=count(pos < anchor))
        size = bindparam("n", type_=BigInteger())
        plain = select(*RECORD_COLUMNS, total).where(*where)
        self.first = plain.order_by(order).limit(size)
        self.at_offset = self.first.offset(bindparam("o", type_=BigInteger()))
        # Newest first: read backwards, then put in node order.
        self.last = plain.order_by(order.desc()).limit(size)
        self.after = (
            select(*RECORD_COLUMNS, total, anchor, up_to)
            .where(*where, pos > anchor)
            .order_by(order)
            .limit(size)
        )
        self.before = (
            select(*RECORD_COLUMNS, total, anchor, before)
            .where(*where, pos < anchor)
            .order_by(order.desc())
            .limit(size)
        )
        # Every item an id list names, without the list's length: when the page holds
        # them all, the length is the rows' (SQLite would otherwise look every id up
        # twice, once to count).
        self.named = select(*RECORD_COLUMNS).where(*where).order_by(order)
        self.count_header = select(total)
        self.after_header = select(total, anchor, up_to)
        self.before_header = select(total, anchor, before)


def _holds_every_named(
    item_ids: Sequence[str],
    max_items: int | None,
    before: str | None,
    after: str | None,
    index: int | None,
) -> bool:
    """Whether a page of the items an id list names holds every one of them (a few at
    most: a short read), so that the rows themselves say how many there are."""
    return (
        len(item_ids) <= SHORT_READ_ROWS
        and before is None
        and after is None
        and index is None
        and (max_items is None or max_items >= len(item_ids))
    )


def _named_page(
    rows: list[Any],
    max_items: int | None,
    max_reply_items: int | None,
    max_reply_bytes: int | None,
) -> ItemPage:
    """The page of every item an id list names (``rows``, in node order), cut to the
    reply's bounds when they are given and no ``max_items`` is."""
    total = len(rows)
    if max_items is None and (max_reply_items is not None or max_reply_bytes is not None):
        budget = ReplyBudget(
            UNBOUNDED if max_reply_items is None else max_reply_items,
            UNBOUNDED if max_reply_bytes is None else max_reply_bytes,
        )
        rows = _fitting(rows, budget)
        window = page_window(total, len(rows), after=0)
    else:
        window = page_window(total, max_items)
    return _item_page(rows, window, total)


def _item_page(rows: list[Any], window: Window, total: int) -> ItemPage:
    records = [item_record(r) for r in rows]
    return ItemPage(
        items=records,
        first=records[0].item_id if records else None,
        last=records[-1].item_id if records else None,
        first_index=window.first_index,
        count=total,
        complete=window.complete,
    )


def _fitting(rows: list[Any], budget: ReplyBudget) -> list[Any]:
    """The leading ``rows`` that fit ``budget`` (by their item XML's UTF-8 size)."""
    for n, row in enumerate(rows):
        if not budget.take(len(row[2].encode())):
            return rows[:n]
    return rows


def _bounded_rows(
    conn: ReadConnection, stmt: Any, params: dict[str, Any], budget: ReplyBudget
) -> list[Any]:
    """The leading rows of ``stmt`` that fit ``budget`` (by their item XML's UTF-8 size),
    read as a stream: no row past the first that does not fit."""
    rows: list[Any] = []
    with closing(conn.stream(stmt, {**params, "n": budget.items_left})) as stream:
        for row in stream:
            if not budget.take(len(row[2].encode())):
                break
            rows.append(row)
    return rows
