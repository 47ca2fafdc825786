"""The page sizes of a whole-node walk (a sync's full fetch)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from roost.service.pubsub.query import (
    MAX_FETCH_PAGE_BYTES,
    MAX_FETCH_PAGE_ITEMS,
    next_fetch_page_size,
)


def test_the_first_page_keeps_its_size_until_the_count_is_known() -> None:
    assert next_fetch_page_size(500, 0, None, 0) == 500
    assert next_fetch_page_size(500, 500, None, 200_000) == 500


def test_pages_grow_to_half_the_node() -> None:
    # 6,000 small items: 500, then pages of 3,000 (the last one holds what is left).
    assert next_fetch_page_size(500, 500, 6_000, 500 * 400) == 3000
    assert next_fetch_page_size(500, 3500, 6_000, 3500 * 400) == 3000
    assert next_fetch_page_size(500, 500, 3_000, 500 * 400) == 1500
    # 10,000: half the node is past the bound.
    assert next_fetch_page_size(500, 500, 10_000, 500 * 400) == MAX_FETCH_PAGE_ITEMS


def test_pages_are_bounded_by_items_and_bytes() -> None:
    assert next_fetch_page_size(500, 500, 1_000_000, 500 * 400) == MAX_FETCH_PAGE_ITEMS
    # Items of 8 kB: 512 of them fill the byte bound.
    assert next_fetch_page_size(100, 500, 100_000, 500 * 8192) == MAX_FETCH_PAGE_BYTES // 8192


def test_a_small_node_is_not_asked_in_pages_smaller_than_the_first() -> None:
    assert next_fetch_page_size(500, 500, 600, 500 * 400) == 500


@given(
    first=st.integers(1, 1000),
    fetched=st.integers(1, 10**6),
    extra=st.integers(0, 10**6),
    item_bytes=st.integers(1, 10**6),
)
def test_the_size_is_always_within_bounds(
    first: int, fetched: int, extra: int, item_bytes: int
) -> None:
    size = next_fetch_page_size(first, fetched, fetched + extra, fetched * item_bytes)
    assert size >= first
    assert size <= max(first, MAX_FETCH_PAGE_ITEMS)
    assert size == first or size * item_bytes <= MAX_FETCH_PAGE_BYTES
