"""Which slice of a list one page is: the paging rules, written once.

L is a list in its order (a node's items oldest first, or those of them a request names).
A request asks for one of:

- the newest N (the last N of L; all of L without N), complete when no older item is left
  out;
- N forward from a boundary (the first page from 0; after an item, from just past it),
  complete when the page reaches the end of L;
- N backward to a boundary (the last page to ``len(L)``; before an item, to just before
  it), complete when the page reaches the start of L.

A *boundary* is a place between items: boundary k has the first k items of L before it.
:func:`page_window` turns a request, with its anchor already found as a boundary, into the
window ``[start, end)`` of L; the item store pages SQL rows with it and the service layer
pages a server's whole answer with it, so that both answer alike.

A reply that could hold everything is bounded by a number of items and of bytes
(:class:`ReplyBudget`, :func:`bounded_length`): it is then the first page of that length,
``page_window(count, length, after=0)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    """One page of a list of ``count`` items.

    Attributes:
        start: the index in L of the page's first item; for an empty page, where it
            would have started.
        end: one past the index of its last item (``end - start`` items).
        complete: the page reaches the end the request walks towards (the start of L
            for a backward page, its end otherwise; for the newest N, all of L).
    """

    start: int
    end: int
    complete: bool

    @property
    def length(self) -> int:
        """How many items the page holds."""
        return self.end - self.start

    @property
    def first_index(self) -> int:
        """Where the page starts in L (RSM's first index)."""
        return self.start


def page_window(
    count: int, size: int | None = None, *, after: int | None = None, before: int | None = None
) -> Window:
    """The window of L (``count`` items) a request answers.

    Args:
        count: how many items L holds.
        size: N, the page size; None for no bound (every item the direction reaches).
        after: a page forward from this boundary (0: the first page; for an anchor
            item at index i, i + 1).
        before: a page backward to this boundary (``count``: the last page; for an
            anchor item at index i, i).

    With neither ``after`` nor ``before``: the newest ``size`` items, every item when
    ``size`` is None.

    Raises:
        ValueError: a negative count or size, both directions, or a boundary outside L.
    """
    if count < 0 or (size is not None and size < 0):
        raise ValueError(f"a count and a size are not negative ({count}, {size})")
    if after is not None and before is not None:
        raise ValueError("a page goes after a boundary or before one, not both")
    boundary = after if after is not None else before
    if boundary is not None and not 0 <= boundary <= count:
        raise ValueError(f"boundary {boundary} is outside a list of {count}")
    if after is not None:
        end = count if size is None else min(after + size, count)
        return Window(after, end, end >= count)
    end = count if before is None else before
    start = 0 if size is None else max(end - size, 0)
    return Window(start, end, start == 0)


class ReplyBudget:
    """What is left of a reply's bound, ``max_items`` items and ``max_bytes`` bytes, as
    items are taken in order (for a reply read as a stream).

    The first item always fits, so that a reply can always go on, whatever one item's size.
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self._items_left = max_items
        self._bytes_left = max_bytes
        self._taken = 0

    @property
    def items_left(self) -> int:
        """How many more items may fit (none once one did not)."""
        return self._items_left

    @property
    def taken(self) -> int:
        """How many items fitted so far."""
        return self._taken

    def take(self, size: int) -> bool:
        """Whether the next item, of ``size`` bytes, fits; it is counted when it does."""
        if self._items_left <= 0 or (size > self._bytes_left and self._taken > 0):
            self._items_left = 0
            return False
        self._items_left -= 1
        self._bytes_left -= size
        self._taken += 1
        return True


def bounded_length(sizes: Iterable[int], max_items: int, max_bytes: int) -> int:
    """How many leading items of a reply fit ``max_items`` items and ``max_bytes`` bytes
    (see :class:`ReplyBudget`); ``sizes`` are the items' sizes in bytes, in order, read no
    further than the first item that does not fit."""
    budget = ReplyBudget(max_items, max_bytes)
    for size in sizes:
        if not budget.take(size):
            break
    return budget.taken
