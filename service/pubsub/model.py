"""The records of pubsub queries: what a caller asks for and what it gets back."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from roost.service.errors import InvalidArgument
from roost.service.records import ItemRecord, ItemsMetadata

# Larger pages than this are refused: a page must fit a bus message with room to spare.
MAX_PAGE_ITEMS = 10_000

_KNOWN_OPTIONS = frozenset({"max_items", "item_ids", "before", "after", "use_cache"})


@dataclass(frozen=True)
class ItemsRequest:
    """A GetItems request.

    ``before`` / ``after`` are Roost RSM tokens (empty string: the last / first page);
    with either, ``max_items`` is the page size. ``item_ids`` restricts the node's items
    to those ids. ``use_cache`` false always asks the server.
    """

    max_items: int | None = None
    item_ids: tuple[str, ...] = ()
    before: str | None = None
    after: str | None = None
    use_cache: bool = True

    @property
    def is_paging(self) -> bool:
        """Whether the request pages with ``before`` or ``after``."""
        return self.before is not None or self.after is not None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ItemsRequest:
        """Validate GetItems options (plain Python values, variants already unpacked).

        Raises:
            InvalidArgument: an unknown option, a wrong type or value, or both
                ``before`` and ``after``.
        """
        unknown = sorted(set(options) - _KNOWN_OPTIONS)
        if unknown:
            raise InvalidArgument(
                f"unknown GetItems option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(_KNOWN_OPTIONS))}"
            )
        max_items = options.get("max_items")
        if max_items is not None and (
            isinstance(max_items, bool)
            or not isinstance(max_items, int)
            or not 1 <= max_items <= MAX_PAGE_ITEMS
        ):
            raise InvalidArgument(
                f"max_items must be a number from 1 to {MAX_PAGE_ITEMS}, not {max_items!r}"
            )
        raw_ids = options.get("item_ids", ())
        if isinstance(raw_ids, str) or not all(isinstance(i, str) and i for i in raw_ids):
            raise InvalidArgument("item_ids must be a list of non-empty strings")
        before, after = options.get("before"), options.get("after")
        for name, value in (("before", before), ("after", after)):
            if value is not None and not isinstance(value, str):
                raise InvalidArgument(f"{name} must be a string (an RSM token), not {value!r}")
        if before is not None and after is not None:
            raise InvalidArgument("give before or after, not both")
        use_cache = options.get("use_cache", True)
        if not isinstance(use_cache, bool):
            raise InvalidArgument(f"use_cache must be a boolean, not {use_cache!r}")
        return cls(
            max_items=max_items,
            item_ids=tuple(dict.fromkeys(raw_ids)),
            before=before,
            after=after,
            use_cache=use_cache,
        )


@dataclass(frozen=True)
class PubsubItem:
    """One item: ``xml`` is the ``<item>`` element as a query returns it, in the pubsub
    namespace; ``parsed`` is JSON text when the node has a parser."""

    id: str
    publisher: str
    xml: str
    parsed: str | None = None
    # The ``<item>`` element ``xml`` was written from, when the item comes from a server
    # answer: the cache parses its payload without reading the text again.
    element: ET.Element | None = field(default=None, compare=False, repr=False)

    def to_record(self) -> ItemRecord:
        """The item as GetItems and ItemsEvent records carry it."""
        record: ItemRecord = {"id": self.id, "publisher": self.publisher, "xml": self.xml}
        if self.parsed is not None:
            record["parsed"] = self.parsed
        return record


@dataclass(frozen=True)
class ItemsReply:
    """A GetItems answer: the items, oldest first, and the paging metadata.

    ``rsm_first`` / ``rsm_last`` are Roost tokens (None for an empty page);
    ``rsm_count`` is the number of items the request ranges over; ``complete`` says
    whether this page reaches the end the request walks towards. ``cache_age`` (seconds)
    is set on answers from a node the cache refreshes periodically instead of following
    its events, and on every answer to a profile that is offline: how old the answer may
    be.
    """

    items: list[PubsubItem] = field(default_factory=list)
    from_cache: bool = False
    rsm_first: str | None = None
    rsm_last: str | None = None
    rsm_count: int | None = None
    complete: bool = True
    first_index: int | None = None
    cache_age: float | None = None

    def metadata(self) -> ItemsMetadata:
        """The metadata dictionary of a GetItems answer."""
        meta: ItemsMetadata = {"from_cache": self.from_cache, "complete": self.complete}
        if self.rsm_first is not None:
            meta["rsm_first"] = self.rsm_first
        if self.rsm_last is not None:
            meta["rsm_last"] = self.rsm_last
        if self.rsm_count is not None:
            meta["rsm_count"] = self.rsm_count
        if self.cache_age is not None:
            meta["cache_age"] = self.cache_age
        return meta
