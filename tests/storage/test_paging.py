"""Paging of a node's items: the SQL paging, and the window function it and the service
layer's paging of a server answer share, equal a plain-Python reference on any input.

The reference below is the shared paging contract written as list slicing; the service
layer's own paging of a server answer must give the same answers (tests/xmpp/test_rsm.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.storage.errors import RowNotFound
from roost.storage.item_records import ItemInput, ItemPage
from roost.storage.paging import bounded_length, page_window
from tests.storage.test_items import Stores, open_stores

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@dataclass
class Expected:
    """What a page must hold."""

    ids: list[str]
    first_index: int
    count: int
    complete: bool


def reference_page(
    node: list[str],
    *,
    item_ids: list[str] | None = None,
    max_items: int | None = None,
    before: str | None = None,
    after: str | None = None,
    index: int | None = None,
    page_size: int = 100,
    anchor_place: int | None = None,  # a hint of the store's: the answer is the same
) -> Expected:
    """The paging contract on a list of ids, oldest first."""
    lst = node if item_ids is None else [i for i in node if i in item_ids]
    count, size = len(lst), page_size if max_items is None else max_items
    if after is not None:
        if after and after not in lst:
            raise RowNotFound(after)
        start = lst.index(after) + 1 if after else 0
        page = lst[start : start + size]
        return Expected(page, start, count, start + len(page) >= count)
    if before is not None:
        if before and before not in lst:
            raise RowNotFound(before)
        end = lst.index(before) if before else count
        start = max(0, end - size)
        return Expected(lst[start:end], start, count, start == 0)
    if index is not None:
        page = lst[index : index + size]
        return Expected(page, min(index, count), count, min(index, count) + len(page) >= count)
    if max_items is not None:
        start = max(0, count - max_items)
        return Expected(lst[start:], start, count, max_items >= count)
    return Expected(lst, 0, count, True)


class Harness:
    """One database for a whole property test, and an event loop to drive it."""

    def __init__(self, url: str) -> None:
        self.runner = asyncio.Runner()
        self.db: Stores = self.runner.run(open_stores(url))
        self._node_numbers = itertools.count(100)

    def run(self, coro: Any) -> Any:
        """Run a coroutine to its end."""
        return self.runner.run(coro)

    def new_node(self, item_ids: list[str]) -> int:
        """A fresh node holding ``item_ids`` in that order, each in its own write."""
        number = next(self._node_numbers)

        async def create() -> int:
            node = await self.db.database.nodes.get_or_create_node("alice", "s", f"n{number}")
            if item_ids:
                await self.db.items.upsert_items(node.id, [_input(i) for i in item_ids])
            return node.id

        node_id: int = self.run(create())
        return node_id

    def page(self, node_id: int, **kwargs: Any) -> ItemPage:
        """get_items on the node."""
        page: ItemPage = self.run(self.db.items.get_items(node_id, **kwargs))
        return page

    def close(self) -> None:
        """Close the database, then the loop."""
        self.run(self.db.database.close())
        self.runner.close()


def _input(item_id: str) -> ItemInput:
    return ItemInput(item_id, "", f"<item id='{item_id}'/>", None, item_id)


@pytest.fixture
def harness(database_url: str) -> Iterator[Harness]:
    h = Harness(database_url)
    yield h
    h.close()


def check(page: ItemPage, expected: Expected) -> None:
    got = [r.item_id for r in page.items]
    assert got == expected.ids
    assert (page.first, page.last) == ((got[0], got[-1]) if got else (None, None))
    assert (page.first_index, page.count, page.complete) == (
        expected.first_index,
        expected.count,
        expected.complete,
    )


node_sizes = st.integers(min_value=0, max_value=40)
page_sizes = st.integers(min_value=1, max_value=15)


@SETTINGS
@given(size=node_sizes, page_size=page_sizes, forward=st.booleans(), by_max=st.booleans())
def test_walking_visits_every_item_once_in_order(
    harness: Harness, size: int, page_size: int, forward: bool, by_max: bool
) -> None:
    ids = [f"i{n}" for n in range(size)]
    node = harness.new_node(ids)
    # The page size comes from max_items or, without it, from page_size.
    sizing = {"max_items": page_size} if by_max else {"page_size": page_size}
    seen: list[str] = []
    token = ""
    for _ in range(size + 2):
        key = "after" if forward else "before"
        page = harness.page(node, **{key: token}, **sizing)
        check(page, reference_page(ids, **{key: token}, **sizing))  # type: ignore[arg-type]
        got = [r.item_id for r in page.items]
        seen = seen + got if forward else got + seen
        if page.complete:
            break
        token = (page.last if forward else page.first) or ""
    assert seen == ids


@SETTINGS
@given(size=node_sizes, max_items=st.integers(min_value=0, max_value=50))
def test_max_items_gives_the_newest_oldest_first(
    harness: Harness, size: int, max_items: int
) -> None:
    ids = [f"i{n}" for n in range(size)]
    node = harness.new_node(ids)
    page = harness.page(node, max_items=max_items)
    check(page, reference_page(ids, max_items=max_items))
    assert [r.item_id for r in page.items] == ids[max(0, size - max_items) :]


@st.composite
def paging_requests(draw: st.DrawFn) -> tuple[list[str], list[str], dict[str, Any]]:
    """A node, the ids it was written with (republishes included), and a request."""
    written = draw(st.lists(st.sampled_from([f"i{n}" for n in range(25)]), max_size=40))
    order = list(dict.fromkeys(reversed(written)))[::-1]  # a republish moves to the end
    known = [*order, "missing"]
    kwargs: dict[str, Any] = {}
    if draw(st.booleans()):
        kwargs["item_ids"] = draw(st.lists(st.sampled_from(known), max_size=12))
    if draw(st.booleans()):
        kwargs["max_items"] = draw(st.integers(min_value=0, max_value=30))
    else:
        kwargs["page_size"] = draw(st.integers(min_value=1, max_value=30))
    mode = draw(st.sampled_from(["none", "before", "after", "index"]))
    if mode in ("before", "after"):
        kwargs[mode] = draw(st.sampled_from(["", *known]))
        # Where the anchor was when last seen: a hint, right or wrong, that only picks
        # the end its place is counted from.
        kwargs["anchor_place"] = draw(st.none() | st.integers(min_value=0, max_value=45))
    elif mode == "index":
        kwargs["index"] = draw(st.integers(min_value=0, max_value=45))
    return written, order, kwargs


@SETTINGS
@given(request=paging_requests())
def test_any_request_equals_the_reference(
    harness: Harness, request: tuple[list[str], list[str], dict[str, Any]]
) -> None:
    written, order, kwargs = request
    node = harness.new_node(written)
    assert [i for i, _ in harness.run(harness.db.items.list_item_ids(node))] == order
    try:
        expected = reference_page(order, **kwargs)
    except RowNotFound:
        with pytest.raises(RowNotFound):
            harness.page(node, **kwargs)
        return
    check(harness.page(node, **kwargs), expected)


# -- the window function itself --------------------------------------------------------


@given(
    count=st.integers(min_value=0, max_value=40),
    size=st.none() | st.integers(min_value=0, max_value=50),
    data=st.data(),
)
def test_the_window_equals_the_reference(count: int, size: int | None, data: st.DataObject) -> None:
    ids = [f"i{n}" for n in range(count)]
    mode = data.draw(st.sampled_from(["none", "before", "after"]))
    if mode == "none":
        window = page_window(count, size)
        expected = reference_page(ids, max_items=size)
    else:
        anchor = data.draw(st.sampled_from(["", *ids]))
        if mode == "after":
            boundary = ids.index(anchor) + 1 if anchor else 0
        else:
            boundary = ids.index(anchor) if anchor else count
        window = page_window(count, 100 if size is None else size, **{mode: boundary})
        expected = reference_page(ids, **{mode: anchor}, page_size=100, max_items=size)
    assert ids[window.start : window.end] == expected.ids
    assert (window.complete, window.length) == (expected.complete, len(expected.ids))
    if expected.ids:
        assert window.first_index == expected.first_index


def test_a_window_refuses_what_is_not_a_request() -> None:
    for bad in (
        lambda: page_window(-1),
        lambda: page_window(3, -1),
        lambda: page_window(3, 1, after=0, before=3),
        lambda: page_window(3, 1, after=4),
        lambda: page_window(3, 1, before=-1),
    ):
        with pytest.raises(ValueError):
            bad()


def test_the_reply_bound_counts_items_and_bytes_and_always_holds_one() -> None:
    assert bounded_length([10] * 5, max_items=3, max_bytes=1000) == 3
    assert bounded_length([10] * 5, max_items=10, max_bytes=35) == 3
    assert bounded_length([10] * 5, max_items=10, max_bytes=50) == 5
    assert bounded_length([500, 1], max_items=10, max_bytes=100) == 1
    assert bounded_length([], max_items=10, max_bytes=100) == 0
    # A stream is read no further than the first item that does not fit.
    read: list[int] = []

    def sizes() -> Iterator[int]:
        for n in range(100):
            read.append(n)
            yield 10

    assert bounded_length(sizes(), max_items=100, max_bytes=45) == 4
    assert read == [0, 1, 2, 3, 4]


def test_a_bounded_read_of_the_store_stops_where_the_reply_is_full(harness: Harness) -> None:
    ids = [f"i{n:02d}" for n in range(30)]
    node = harness.new_node(ids)
    size = len(_input("i00").data.encode())
    by_items = harness.page(node, max_reply_items=12, max_reply_bytes=10**6)
    check(by_items, Expected(ids[:12], 0, 30, False))
    by_bytes = harness.page(node, max_reply_items=100, max_reply_bytes=size * 7 + size // 2)
    check(by_bytes, Expected(ids[:7], 0, 30, False))
    whole = harness.page(node, max_reply_items=30, max_reply_bytes=size * 30)
    check(whole, Expected(ids, 0, 30, True))
    # The bound applies to a read of all of L only.
    newest = harness.page(node, max_items=20, max_reply_items=5, max_reply_bytes=1)
    check(newest, Expected(ids[10:], 10, 30, False))
    # So does it to an id list's items, counted by the rows read (not by a count).
    named = [ids[n] for n in (25, 3, 17, 9, 11, 28)] + ["missing"]
    in_order = [ids[n] for n in (3, 9, 11, 17, 25, 28)]
    by_ids = harness.page(node, item_ids=named, max_reply_items=4, max_reply_bytes=10**6)
    check(by_ids, Expected(in_order[:4], 0, 6, False))
    every_named = harness.page(node, item_ids=named, max_reply_items=6, max_reply_bytes=10**6)
    check(every_named, Expected(in_order, 0, 6, True))
