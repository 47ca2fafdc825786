"""The plain records the item store and the search store take and return.

They are immutable (frozen dataclasses, and a named tuple for :class:`ItemRecord`, one of
which is made for every row read): callers above the storage layer never see ORM
objects, so nothing they hold can lazily reach back into the database.

An item's parsed data is stored as JSON text written by :func:`parsed_text`, and read
back as that text (``parsed_json``): what a frontend receives is that text, so a read
neither decodes nor encodes it. ``parsed`` decodes it for a caller that wants the value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NamedTuple

#: Page size used by :meth:`ItemStore.get_items` when ``before``, ``after`` or ``index`` is
#: given without ``max_items``.
DEFAULT_PAGE_SIZE = 100


def parsed_text(value: Any, *, strict: bool = False) -> str | None:
    """The JSON text of parsed data as the store writes it and every reader receives it
    (compact, non-ASCII characters as they are); None for no parsed data.

    An answer that did not come from the store (a server's) writes its parsed data with
    this too, so that both give the same text. With ``strict``, NaN and infinities raise
    ``ValueError`` (as they are not JSON) instead of being written as JavaScript names.
    """
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=not strict)


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
        parsed_json: ``parsed`` as the store writes it (:func:`parsed_text`). Computed
            when the item is made unless given: a caller that has the text already (its
            check of a parser's output made it) passes it, and the item is made where
            the caller's work runs (a worker thread for a sync), not where it is stored.
            A copy with other parsed data (``dataclasses.replace``) passes
            ``parsed_json=None`` too, or it keeps the old text.
    """

    item_id: str
    publisher: str
    data: str
    parsed: Any
    search_text: str
    created: float | None = None
    parsed_json: str | None = None

    def __post_init__(self) -> None:
        if self.parsed_json is None and self.parsed is not None:
            object.__setattr__(self, "parsed_json", parsed_text(self.parsed))


class ItemRecord(NamedTuple):
    """A stored item (a named tuple rather than a dataclass: a page makes one per row, on
    every read, and a tuple is made in a quarter of the time).

    Attributes:
        item_id: the pubsub item id.
        publisher: the publisher's JID, empty when unknown.
        data: the raw ``<item>`` XML.
        parsed_json: the parsed data as stored (:func:`parsed_text`), or None when the
            node has no parser or it failed.
        created: when the item was first stored (seconds since the epoch).
        updated: when it was last written.

    .. versionchanged:: the parsed data is kept as its stored text (``parsed_json``);
       ``parsed`` decodes it. A named tuple, no longer a dataclass.
    """

    item_id: str
    publisher: str
    data: str
    parsed_json: str | None
    created: float
    updated: float

    @property
    def parsed(self) -> Any:
        """The parsed data (decoded each time it is asked for), or None."""
        return None if self.parsed_json is None else json.loads(self.parsed_json)


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
        item_id, publisher, data, parsed_json, created, updated: as in :class:`ItemRecord`.
        profile: the profile's name.
        service: the pubsub service JID.
        node: the node name.
        type: the node's type from its analyser, or None.
        subtype: the node's subtype, or None.
    """

    item_id: str
    publisher: str
    data: str
    parsed_json: str | None
    created: float
    updated: float
    profile: str
    service: str
    node: str
    type: str | None
    subtype: str | None

    @property
    def parsed(self) -> Any:
        """The parsed data (decoded each time it is asked for), or None."""
        return None if self.parsed_json is None else json.loads(self.parsed_json)

    def record(self) -> ItemRecord:
        """The hit as a plain :class:`ItemRecord` (without its location)."""
        return ItemRecord(
            self.item_id, self.publisher, self.data, self.parsed_json, self.created, self.updated
        )
