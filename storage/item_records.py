"""The plain records the item store and the search store take and return.

They are frozen dataclasses: callers above the storage layer never see ORM objects, so
nothing they hold can lazily reach back into the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Page size used by :meth:`ItemStore.get_items` when ``before``, ``after`` or ``index`` is
#: given without ``max_items``.
DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True, slots=True)
class ItemInput:
    """An item to store in a node.

    Attributes:
        item_id: the pubsub item id.
        publisher: the publisher's JID, empty when the server gives none.
        data: the ``<item>`` element as a query returns it (raw XML).
        parsed: the analyser parser's output (JSON-able), or None.
        search_text: the text the full-text index covers, computed by the caller (the
            parsed data's strings, else the XML's text content, never tag names).
        created: when the item was first seen (seconds since the epoch); None for now.
            An item already stored keeps its own ``created``.
    """

    item_id: str
    publisher: str
    data: str
    parsed: Any
    search_text: str
    created: float | None = None


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """A stored item.

    Attributes:
        item_id: the pubsub item id.
        publisher: the publisher's JID, empty when unknown.
        data: the raw ``<item>`` XML.
        parsed: the parsed data, or None when the node has no parser or it failed.
        created: when the item was first stored (seconds since the epoch).
        updated: when it was last written.
    """

    item_id: str
    publisher: str
    data: str
    parsed: Any
    created: float
    updated: float


@dataclass(frozen=True, slots=True)
class ItemPage:
    """One page of a node's items, oldest first, with its paging metadata.

    Attributes:
        items: the page's items in node order (oldest first).
        first: id of the first item of the page, None when the page is empty.
        last: id of the last item of the page, None when the page is empty.
        first_index: where the page starts in the (filtered) node list; for an empty
            page, where it would have started.
        count: how many items the (filtered) node list holds.
        complete: True when the page reaches the end the request walks towards (the
            start for ``before``, the end otherwise; for ``max_items`` alone, when the
            page holds every item).
    """

    items: list[ItemRecord]
    first: str | None
    last: str | None
    first_index: int
    count: int
    complete: bool


@dataclass(frozen=True, slots=True)
class ItemBatch:
    """A batch of a node's stored items, in storage order, for work over a whole node.

    Attributes:
        items: the batch's items.
        next_row: where the next batch starts (give it as ``after_row``); None when this
            batch is the last.
    """

    items: list[ItemRecord]
    next_row: int | None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """An item found by a cache search, with where it lives.

    Attributes:
        item_id, publisher, data, parsed, created, updated: as in :class:`ItemRecord`.
        profile: the profile's name.
        service: the pubsub service JID.
        node: the node name.
        type: the node's type from its analyser, or None.
        subtype: the node's subtype, or None.
    """

    item_id: str
    publisher: str
    data: str
    parsed: Any
    created: float
    updated: float
    profile: str
    service: str
    node: str
    type: str | None
    subtype: str | None

    def record(self) -> ItemRecord:
        """The hit as a plain :class:`ItemRecord` (without its location)."""
        return ItemRecord(
            self.item_id, self.publisher, self.data, self.parsed, self.created, self.updated
        )
